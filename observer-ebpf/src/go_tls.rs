//! Go's `crypto/tls` (Go ≥ 1.17 on amd64, register ABI), through the emission path of
//! `probes`.
//!
//! Arguments arrive in RAX, RBX, RCX, ... (not the C registers `ProbeContext::arg` reads), the
//! current goroutine is in R14, and results come back in RAX. Goroutines move between threads,
//! so a read in progress is keyed by goroutine. Nothing here uses a uretprobe: Go moves
//! goroutine stacks, and a return address rewritten by the kernel crashes the runtime. User
//! space attaches `go_tls_read_return` to every RET instruction of `(*Conn).Read` instead.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use observer_ebpf::{direction, tls_source};

use crate::probes::{ActiveCall, copy_wanted, emit_data, end_connection, hit};

/// A goroutine of a process. The `g` pointer is stable for the goroutine's life.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoroutineKey {
    g: u64,
    pid: u32,
    _pad: u32,
}

/// `(*Conn).Read` calls in progress. LRU: a goroutine that panics out of a read leaves its
/// entry behind.
#[map]
static GO_READS: LruHashMap<GoroutineKey, ActiveCall> = LruHashMap::with_max_entries(16384, 0);

fn registers(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: a uprobe's context is the traced thread's saved registers.
    unsafe { &*ctx.regs }
}

/// The calling goroutine.
fn goroutine(regs: &pt_regs, pid_tgid: u64) -> GoroutineKey {
    GoroutineKey {
        g: regs.r14,
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
    }
}

fn call(conn: u64, buf: u64, dir: u8) -> ActiveCall {
    ActiveCall {
        conn,
        buf,
        count_ptr: 0,
        dir,
        source: tls_source::GO,
        _pad: [0; 6],
    }
}

/// `func (c *Conn) Write(b []byte) (int, error)`: c in RAX, b's pointer and length in RBX and
/// RCX. The buffer is complete at entry.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx);
    hit(pid_tgid);
    if regs.rcx == 0 || !copy_wanted(pid_tgid, regs.rax, direction::EGRESS) {
        return 0;
    }
    emit_data(
        pid_tgid,
        &call(regs.rax, regs.rbx, direction::EGRESS),
        regs.rcx,
    );
    0
}

/// `func (c *Conn) Read(b []byte) (int, error)` at entry: remember where the bytes will go.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx);
    hit(pid_tgid);
    if copy_wanted(pid_tgid, regs.rax, direction::INGRESS) {
        let key = goroutine(regs, pid_tgid);
        let _ = GO_READS.insert(&key, &call(regs.rax, regs.rbx, direction::INGRESS), 0);
    }
    0
}

/// A RET of `(*Conn).Read`: RAX holds n, the bytes read into the buffer saved at entry.
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx);
    let key = goroutine(regs, pid_tgid);
    let Some(read) = (unsafe { GO_READS.get(&key) }).copied() else {
        return 0;
    };
    let _ = GO_READS.remove(&key);
    let n = regs.rax as i64;
    if n > 0 {
        emit_data(pid_tgid, &read, n as u64);
    }
    0
}

/// `func (c *Conn) Close() error`: c in RAX.
#[uprobe]
pub fn go_tls_close(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    end_connection(pid_tgid, registers(&ctx).rax);
    0
}
