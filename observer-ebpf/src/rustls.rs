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
//!
//! Without symbols, in builds where those two are inlined (`observer::capture::rustls`):
//!
//! - `CommonState::send_appdata_encrypt(&mut self, payload: OutboundChunks, …) -> usize` takes
//!   the same first two arguments and returns the same count: `rustls_send` serves it. Its
//!   cookie also says where the record layer's decrypter is in `CommonState`: each send notes
//!   which session that decrypter (its data pointer) belongs to.
//! - The decrypters (`MessageDecrypter::decrypt(&mut self, msg: InboundOpaqueMessage, seq) ->
//!   Result<InboundPlainMessage, Error>`: result in rdi, `self` in rsi, `msg` by reference in
//!   rdx) are probed at entry and return: application data is in the result, decrypted in
//!   place inside `msg`'s payload. `self` gives the session, as noted by the sends (and still
//!   holding that decrypter: the cookie says where, as for the sends). A session
//!   whose first application data arrives before it sent any, and begins an HTTP request, is a
//!   server's: neither way is copied from then on (the pipeline reports clients), once its
//!   first send (within 30 s) names it; a mark no send claimed in time is taken for a session
//!   gone, whose decrypter's address another session may hold. Other data
//!   from a decrypter no send has named (a client's after its server updated the keys) is
//!   counted as lost; a result whose plaintext would lie outside the record it was decrypted
//!   from is not read (a read fault).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::{
    cookie::{DECRYPTER_SHIFT, LEARNS_DECRYPTER, OK_TAG_SHIFT},
    counter, direction,
    rustls_layout::{APPLICATION_DATA, DECRYPTED_PAYLOAD, DECRYPTED_TYP, INBOUND_PAYLOAD},
};

use crate::{
    probes::{ActiveCall, bump, copy_wanted, emit_data, hit},
    socket_io::is_http_request_start,
    sound::{Lookup, attach_cookie, now_ns, read_user},
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

/// Sessions by their record layer's decrypter: `[decrypter data pointer, pid]` → the
/// session's `CommonState`, noted at each send (rustls without symbols).
#[map]
static RUSTLS_DECRYPTERS: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(16384, 0);

/// Decrypters (`[data pointer, pid]`) of server sessions: a session whose first application
/// data, read before it wrote any, began an HTTP request. Neither way is copied (the pipeline
/// reports clients; a server's reads before it writes cannot be given to a session anyway).
#[map]
static RUSTLS_SERVER_SIDE: LruHashMap<[u64; 2], ServerSide> =
    LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct ServerSide {
    /// The session, once it sent (0 before).
    conn: u64,
    /// When its first request was read.
    marked_ns: u64,
}

/// A session marked as a server's that has not sent within this long is taken for gone: its
/// decrypter's address may now be another session's (no probe sees sessions end).
const SERVER_FIRST_SEND_NS: u64 = 30_000_000_000;

/// A decryption in progress, by thread: what its entry knew.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingDecrypt {
    /// The session, 0 if no send named the decrypter yet.
    conn: u64,
    decrypter: u64,
    /// Where the result goes.
    result: u64,
    /// The record being decrypted: its payload.
    record: u64,
    record_len: u64,
    source: u8,
    ok_tag: u8,
    _pad: [u8; 6],
}

#[map]
static RUSTLS_DECRYPTS: LruHashMap<u64, PendingDecrypt> = LruHashMap::with_max_entries(16384, 0);

/// Where a decrypt result's fields are, in 8-byte words.
const PAYLOAD_WORD: usize = (DECRYPTED_PAYLOAD / 8) as usize;
const TYP_WORD: usize = (DECRYPTED_TYP / 8) as usize;

#[uprobe]
pub fn rustls_send(ctx: ProbeContext) -> u32 {
    let cookie = attach_cookie(&ctx);
    if cookie & LEARNS_DECRYPTER != 0
        && let Some(conn) = ctx.arg::<u64>(0)
        && !note_decrypter(conn, conn + (cookie >> DECRYPTER_SHIFT))
    {
        return 0;
    }
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
        source: cookie,
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

/// The session `conn`'s record layer holds its decrypter's data pointer at `field`: notes
/// it, unless the session is a server's (whose sends are not copied either): whether to copy.
fn note_decrypter(conn: u64, field: u64) -> bool {
    let Ok(decrypter) = read_user::<u64>(field) else {
        bump(counter::READ_FAULTS, 1);
        return true;
    };
    let key = [decrypter, bpf_get_current_pid_tgid() >> 32];
    if let Some(server) = RUSTLS_SERVER_SIDE.copied(&key) {
        let first_send =
            server.conn == 0 && now_ns().wrapping_sub(server.marked_ns) < SERVER_FIRST_SEND_NS;
        if server.conn == conn || first_send {
            if first_send {
                let server = ServerSide { conn, ..server };
                let _ = RUSTLS_SERVER_SIDE.insert(&key, &server, 0);
            }
            bump(counter::RUSTLS_SERVER_SIDE, 1);
            return false;
        }
        // Another session now holds that address.
        let _ = RUSTLS_SERVER_SIDE.remove(&key);
    }
    // Keys change rarely (at the handshake's end, on a key update): a lookup costs less than
    // an LRU update.
    if RUSTLS_DECRYPTERS.copied(&key) != Some(conn) {
        let _ = RUSTLS_DECRYPTERS.insert(&key, &conn, 0);
    }
    true
}

#[uprobe]
pub fn rustls_decrypt(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    hit(pid_tgid);
    let (Some(result), Some(decrypter), Some(message)) =
        (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2))
    else {
        return 0;
    };
    let key = [decrypter, pid_tgid >> 32];
    let cookie = attach_cookie(&ctx);
    // The session noted, if its record layer still holds this decrypter (else the address is
    // another's now).
    let conn = RUSTLS_DECRYPTERS
        .copied(&key)
        .filter(|&conn| read_user::<u64>(conn + (cookie >> DECRYPTER_SHIFT)) == Ok(decrypter))
        .unwrap_or(0);
    if conn == 0 && RUSTLS_SERVER_SIDE.copied(&key).is_some() {
        bump(counter::RUSTLS_SERVER_SIDE, 1);
        return 0;
    }
    if conn != 0 && !copy_wanted(pid_tgid, conn, direction::INGRESS) {
        return 0;
    }
    let Ok([record, record_len]) = read_user::<[u64; 2]>(message + INBOUND_PAYLOAD) else {
        bump(counter::READ_FAULTS, 1);
        return 0;
    };
    let pending = PendingDecrypt {
        conn,
        decrypter,
        result,
        record,
        record_len,
        source: cookie as u8,
        ok_tag: (cookie >> OK_TAG_SHIFT) as u8,
        _pad: [0; 6],
    };
    let _ = RUSTLS_DECRYPTS.insert(&pid_tgid, &pending, 0);
    0
}

#[uretprobe]
pub fn rustls_decrypt_return(_ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = RUSTLS_DECRYPTS.copied(&pid_tgid) else {
        return 0;
    };
    let _ = RUSTLS_DECRYPTS.remove(&pid_tgid);
    // The tag byte, the payload's pointer and length, the content type's tag byte.
    let Ok(result) = read_user::<[u64; 4]>(pending.result) else {
        bump(counter::READ_FAULTS, 1);
        return 0;
    };
    let (tag, ptr, len) = (
        result[0] as u8,
        result[PAYLOAD_WORD],
        result[PAYLOAD_WORD + 1],
    );
    let typ = (result[TYP_WORD] >> (8 * (DECRYPTED_TYP % 8))) as u8;
    if tag != pending.ok_tag || typ != APPLICATION_DATA {
        // Failed, or a handshake message, an alert, a ticket: nothing for the application.
        return 0;
    }
    let within_record = ptr >= pending.record
        && len <= pending.record_len
        && ptr - pending.record <= pending.record_len - len;
    if !within_record {
        // Not the layout the locator checked: nothing is read from such a result.
        bump(counter::READ_FAULTS, 1);
        return 0;
    }
    if pending.conn == 0 {
        let key = [pending.decrypter, pid_tgid >> 32];
        if read_user::<[u8; 4]>(ptr).is_ok_and(|start| is_http_request_start(&start)) {
            let server = ServerSide {
                conn: 0,
                marked_ns: now_ns(),
            };
            let _ = RUSTLS_SERVER_SIDE.insert(&key, &server, 0);
            bump(counter::RUSTLS_SERVER_SIDE, 1);
        } else {
            // A client's, whose keys changed since it last wrote (a key update), or another
            // protocol's: lost.
            bump(counter::RUSTLS_SESSION_UNKNOWN, 1);
        }
        return 0;
    }
    let call = ActiveCall {
        conn: pending.conn,
        buf: ptr,
        count_ptr: 0,
        dir: direction::INGRESS,
        source: pending.source,
        _pad: [0; 6],
    };
    emit_data(pid_tgid, &call, len);
    0
}
