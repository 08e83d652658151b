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
use observer_common::{direction, tls_source};

use crate::{
    probes::{ActiveCall, copy_wanted, emit_data, end_connection, hit},
    socket_io::{connecting, decided, fd_closed, plaintext_call, plaintext_connection},
    sound::{Lookup, read_user, registers},
};

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

/// `crypto/tls` calls in progress, by goroutine: a socket write or read the goroutine makes
/// meanwhile ties the session to its fd. Removed at the read's return, and by the first tie.
#[map]
static GO_TLS_CALLS: LruHashMap<GoroutineKey, ActiveCall> = LruHashMap::with_max_entries(16384, 0);

/// `internal/poll.(*FD).Read` calls in progress, by goroutine: the connection (or
/// `DECIDE_AT_RETURN`), where the bytes go, and the fd.
#[repr(C)]
#[derive(Clone, Copy)]
struct FdRead {
    conn: u64,
    buf: u64,
    fd: u32,
    _pad: u32,
}

#[map]
static GO_FD_READS: LruHashMap<GoroutineKey, FdRead> = LruHashMap::with_max_entries(16384, 0);

/// `internal/poll.FD.Sysfd`, after its 16-byte `fdMutex`.
const SYSFD_OFFSET: u64 = 16;

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
    let regs = registers(&ctx.regs);
    hit(pid_tgid);
    let _ = GO_TLS_CALLS.insert(
        &goroutine(regs, pid_tgid),
        &call(regs.rax, 0, direction::EGRESS),
        0,
    );
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
    let regs = registers(&ctx.regs);
    hit(pid_tgid);
    let key = goroutine(regs, pid_tgid);
    let read = call(regs.rax, regs.rbx, direction::INGRESS);
    let _ = GO_TLS_CALLS.insert(&key, &read, 0);
    if copy_wanted(pid_tgid, regs.rax, direction::INGRESS) {
        let _ = GO_READS.insert(&key, &read, 0);
    }
    0
}

/// A RET of `(*Conn).Read`: RAX holds n, the bytes read into the buffer saved at entry.
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx.regs);
    let key = goroutine(regs, pid_tgid);
    let _ = GO_TLS_CALLS.remove(&key);
    let Some(read) = GO_READS.copied(&key) else {
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
    end_connection(pid_tgid, registers(&ctx.regs).rax);
    0
}

/// The enclosing `crypto/tls` call of the goroutine, if any (a write's entry is taken once: the
/// first socket write ties the session).
fn enclosing_tls_call(key: &GoroutineKey, dir: u8) -> Option<ActiveCall> {
    let call = GO_TLS_CALLS.copied(key)?;
    if dir == direction::EGRESS {
        let _ = GO_TLS_CALLS.remove(key);
    }
    Some(call)
}

/// The fd behind a `*poll.FD` (RAX).
fn sysfd(regs: &pt_regs) -> Option<u32> {
    read_user::<i64>(regs.rax + SYSFD_OFFSET)
        .ok()
        .map(|fd| fd as u32)
}

/// `func (fd *FD) Write(p []byte) (int, error)`: Go's socket writes (it loops until all of p
/// is written, so the bytes at entry are the bytes sent).
#[uprobe]
pub fn go_fd_write(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx.regs);
    hit(pid_tgid);
    let Some(fd) = sysfd(regs) else {
        return 0;
    };
    let key = goroutine(regs, pid_tgid);
    let tls = enclosing_tls_call(&key, direction::EGRESS);
    let buf = regs.rbx;
    if let Some(conn) = plaintext_connection(pid_tgid, fd, direction::EGRESS, tls.as_ref(), || buf)
        && regs.rcx > 0
    {
        emit_data(
            pid_tgid,
            &plaintext_call(conn, buf, direction::EGRESS),
            regs.rcx,
        );
    }
    0
}

/// `func (fd *FD) Read(p []byte) (int, error)` at entry: remember where the bytes will go.
#[uprobe]
pub fn go_fd_read(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx.regs);
    hit(pid_tgid);
    let Some(fd) = sysfd(regs) else {
        return 0;
    };
    let key = goroutine(regs, pid_tgid);
    let tls = enclosing_tls_call(&key, direction::INGRESS);
    if let Some(conn) = plaintext_connection(pid_tgid, fd, direction::INGRESS, tls.as_ref(), || 0) {
        let read = FdRead {
            conn,
            buf: regs.rbx,
            fd,
            _pad: 0,
        };
        let _ = GO_FD_READS.insert(&key, &read, 0);
    }
    0
}

/// A RET of `(*FD).Read`: RAX holds n.
#[uprobe]
pub fn go_fd_read_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let regs = registers(&ctx.regs);
    let key = goroutine(regs, pid_tgid);
    let Some(read) = GO_FD_READS.copied(&key) else {
        return 0;
    };
    let _ = GO_FD_READS.remove(&key);
    let n = regs.rax as i64;
    if n > 0
        && let Some(conn) = decided(pid_tgid, read.conn, read.fd, || read.buf)
    {
        emit_data(
            pid_tgid,
            &plaintext_call(conn, read.buf, direction::INGRESS),
            n as u64,
        );
    }
    0
}

/// `func (fd *FD) Close() error`.
#[uprobe]
pub fn go_fd_close(ctx: ProbeContext) -> u32 {
    if let Some(fd) = sysfd(registers(&ctx.regs)) {
        fd_closed(bpf_get_current_pid_tgid(), fd);
    }
    0
}

/// `syscall.connect(s int, addr unsafe.Pointer, addrlen _Socklen)`: fd in RAX, the raw
/// sockaddr in RBX.
#[uprobe]
pub fn go_connect(ctx: ProbeContext) -> u32 {
    let regs = registers(&ctx.regs);
    connecting(bpf_get_current_pid_tgid(), regs.rax as u32, regs.rbx);
    0
}
