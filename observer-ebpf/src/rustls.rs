//! rustls: plaintext enters and leaves at two non-generic `CommonState` methods, both with the
//! session's `&mut CommonState` as `self` (rdi), which names the connection for both directions.
//!
//! - `CommonState::buffer_plaintext(&mut self, payload: OutboundChunks, sendable: &mut
//!   ChunkVecBuffer) -> usize`: `payload` is passed by reference (rsi), laid out as
//!   `Single(&[u8])` = {0, ptr, len} or `Multiple { chunks: &[&[u8]], start, end }` =
//!   {chunks ptr (never 0), chunks len, start, end}; rax returns how many bytes were taken.
//! - `CommonState::take_received_plaintext(&mut self, bytes: Payload)`: `bytes` by reference
//!   (rsi), `Owned(Vec<u8>)` or `Borrowed(&[u8])`, data pointer at +8 and length at +16 either way.
//!
//! These layouts are rustc's choices, not a stable ABI: user space only attaches by symbol name
//! (with symbols) and the tests check the bytes end to end.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::{counter, direction};

use crate::{
    probes::{ActiveCall, bump, copy_wanted, emit_data, hit},
    sound::{Lookup, attach_cookie, read_user},
};

/// Vectored writes: chunks looked at per call (hyper writes headers and body as two or three).
const MAX_CHUNKS: u32 = 16;

/// A `buffer_plaintext` call in progress, by thread: its `OutboundChunks`, read at entry.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingSend {
    conn: u64,
    payload: [u64; 4],
    source: u64,
}

#[map]
static RUSTLS_SENDS: LruHashMap<u64, PendingSend> = LruHashMap::with_max_entries(16384, 0);

/// At entry of either method: the thread, the session (`self`) and the argument by reference,
/// of a call whose bytes are to be copied in `dir`.
fn session_and_payload(ctx: &ProbeContext, dir: u8) -> Option<(u64, u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    hit(pid_tgid);
    let conn = ctx.arg::<u64>(0)?;
    copy_wanted(pid_tgid, conn, dir).then_some((pid_tgid, conn, ctx.arg::<u64>(1)?))
}

#[uprobe]
pub fn rustls_send(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, conn, payload)) = session_and_payload(&ctx, direction::EGRESS) else {
        return 0;
    };
    let Ok(payload) = read_user::<[u64; 4]>(payload) else {
        bump(counter::READ_FAULTS, 1);
        return 0;
    };
    let pending = PendingSend {
        conn,
        payload,
        source: attach_cookie(&ctx),
    };
    let _ = RUSTLS_SENDS.insert(&pid_tgid, &pending, 0);
    0
}

#[uretprobe]
pub fn rustls_send_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = RUSTLS_SENDS.copied(&pid_tgid) else {
        return 0;
    };
    let _ = RUSTLS_SENDS.remove(&pid_tgid);
    let taken: u64 = ctx.ret::<u64>();
    let mut call = ActiveCall {
        conn: pending.conn,
        buf: 0,
        count_ptr: 0,
        dir: direction::EGRESS,
        source: pending.source as u8,
        _pad: [0; 6],
    };
    let [first, second, third, fourth] = pending.payload;
    if first == 0 {
        // Single(&[u8]): the first `taken` bytes.
        call.buf = second;
        emit_data(pid_tgid, &call, taken.min(third));
        return 0;
    }
    // Multiple: bytes [start, start + taken) of the chunks laid end to end.
    let (chunks, count, start) = (first, second, third);
    let end = (start + taken).min(fourth);
    let mut position = 0u64;
    for index in 0..MAX_CHUNKS {
        if u64::from(index) >= count || position >= end {
            break;
        }
        let Ok([ptr, len]) = read_user::<[u64; 2]>(chunks + u64::from(index) * 16) else {
            bump(counter::READ_FAULTS, 1);
            return 0;
        };
        let (from, to) = (position.max(start), (position + len).min(end));
        if from < to {
            call.buf = ptr + (from - position);
            emit_data(pid_tgid, &call, to - from);
        }
        position += len;
    }
    0
}

#[uprobe]
pub fn rustls_receive(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, conn, payload)) = session_and_payload(&ctx, direction::INGRESS) else {
        return 0;
    };
    let Ok([_, ptr, len]) = read_user::<[u64; 3]>(payload) else {
        bump(counter::READ_FAULTS, 1);
        return 0;
    };
    let call = ActiveCall {
        conn,
        buf: ptr,
        count_ptr: 0,
        dir: direction::INGRESS,
        source: attach_cookie(&ctx) as u8,
        _pad: [0; 6],
    };
    emit_data(pid_tgid, &call, len);
    0
}
