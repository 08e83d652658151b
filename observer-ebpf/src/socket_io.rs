//! Socket I/O of followed processes, seen at their C library's wrappers (uprobes attached for
//! each followed process alone: the rest of the host pays nothing).
//!
//! - A write or read made while a TLS call is on the thread ties that TLS session to its fd
//!   (the "nested call"), once per session and fd.
//! - On an fd with no TLS session, a write whose first four bytes start an HTTP request makes the
//!   fd a plaintext HTTP connection: from then on its reads and writes are copied like TLS
//!   plaintext. Other writes are not copied (files, pipes, other protocols); user space checks
//!   that an fd taken for HTTP is a TCP socket and stops the copy otherwise.
//! - In an agent (a process that makes LLM calls, or that wrote JSON-RPC), an fd with nothing
//!   known whose first bytes written or read begin a JSON object (`{"`) is taken for JSON-RPC on
//!   a pipe (an MCP server on stdio) and copied the same way; user space checks that it is a
//!   pipe and stops the copy otherwise. In other followed processes only a write beginning
//!   `{"jsonrpc"` or `{"method":` does that (and makes the process an agent: an MCP client
//!   starts its session before its first LLM call); their reads cost nothing more.
//! - `close` ends the connection the fd carried.
//! - For processes no longer followed, `connect` to a new peer is reported (re-admission), and
//!   the dynamic loader's `_dl_debug_state` tells user space of libraries loaded late.
//!
//! One entry program per calling shape (buffer, iovec array, msghdr) serves every wrapper of that
//! shape (`write`/`send`/`sendto`, `read`/`recv`/`recvfrom`, ...); one return program serves all.
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::{
    ConnectEvent, EventHeader, PIPE_CONN_BIT, PLAINTEXT_CONN_BIT, SocketEvent, counter, direction,
    kind, socket_role, tls_source,
};

use crate::{
    probes::{
        ACTIVE_CALLS, ActiveCall, bump, copy_wanted, emit_data, end_connection, followed, header,
        hit, mark_tls_opening, ring_flags, send, skip_bytes,
    },
    sound::{Lookup, now_ns, read_user, registers},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// Scatter/gather buffers copied per call; later ones are counted as truncated.
const MAX_IOVECS: u64 = 8;

/// How a wrapper passes its buffers.
mod shape {
    /// `(fd, buf, len, ...)`: write, send, sendto, read, recv, recvfrom.
    pub const BUFFER: u8 = 0;
    /// `(fd, iov, iovcnt)`: writev, readv.
    pub const IOVEC: u8 = 1;
    /// `(fd, msghdr, flags)`: sendmsg, recvmsg.
    pub const MSGHDR: u8 = 2;
}

/// What an fd carries, once it is known to carry something worth a map entry.
mod carries {
    /// Plaintext HTTP: copied.
    pub const HTTP: u8 = 1;
    /// A TLS session, whose plaintext the TLS probes see: the socket's own bytes are not copied.
    pub const TLS: u8 = 2;
    /// JSON-RPC (an agent's pipe to an MCP server): copied.
    pub const JSON_RPC: u8 = 3;
}

/// Whether an fd carrying `carries` has its bytes copied.
fn copied(carries: u8) -> bool {
    carries == carries::HTTP || carries == carries::JSON_RPC
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SocketKey {
    pid: u32,
    fd: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Socket {
    /// The connection the fd carries: a TLS session, or a plaintext connection's own id.
    conn: u64,
    carries: u8,
    _pad: [u8; 7],
}

/// Sockets of followed processes that carry HTTP or a TLS session, by process and fd. LRU: an
/// fd closed other than through `close` (or a process gone) leaves its entry behind.
#[map]
static SOCKETS: LruHashMap<SocketKey, Socket> = LruHashMap::with_max_entries(65536, 0);

/// A plaintext read or write between its entry and return probes, by thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    /// The buffer, iovec array or msghdr.
    ptr: u64,
    conn: u64,
    /// The stack pointer at entry: tells a nested wrapper (musl's `send` calls `sendto`) from an
    /// entry left behind by a call whose return was never seen.
    sp: u64,
    fd: u32,
    shape: u8,
    dir: u8,
    _pad: [u8; 2],
}

/// A read of an fd that carried nothing known at its entry: whether its bytes are a plaintext
/// HTTP response is decided at its return (a reader may block on a socket before the request
/// it will answer to is written: Go's read loop, reader threads).
pub(crate) const DECIDE_AT_RETURN: u64 = 0;

#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Peers each process no longer followed has connected to, so each is reported once.
#[repr(C)]
#[derive(Clone, Copy)]
struct PeerKey {
    pid: u32,
    family: u16,
    port: u16,
    addr: [u8; 16],
}

#[map]
static KNOWN_PEERS: LruHashMap<PeerKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// The peer each socket of a followed process connected to, by process and fd: the connection
/// it carries is announced with it (a short-lived process is gone before user space could ask).
#[repr(C)]
#[derive(Clone, Copy)]
struct Peer {
    family: u16,
    port: u16,
    addr: [u8; 16],
}

#[map]
static PEERS: LruHashMap<SocketKey, Peer> = LruHashMap::with_max_entries(65536, 0);

#[uprobe]
pub fn socket_send(ctx: ProbeContext) -> u32 {
    on_enter(&ctx, shape::BUFFER, direction::EGRESS)
}

#[uprobe]
pub fn socket_sendv(ctx: ProbeContext) -> u32 {
    on_enter(&ctx, shape::IOVEC, direction::EGRESS)
}

#[uprobe]
pub fn socket_sendmsg(ctx: ProbeContext) -> u32 {
    on_enter(&ctx, shape::MSGHDR, direction::EGRESS)
}

#[uprobe]
pub fn socket_recv(ctx: ProbeContext) -> u32 {
    on_enter(&ctx, shape::BUFFER, direction::INGRESS)
}

#[uprobe]
pub fn socket_recvv(ctx: ProbeContext) -> u32 {
    on_enter(&ctx, shape::IOVEC, direction::INGRESS)
}

#[uprobe]
pub fn socket_recvmsg(ctx: ProbeContext) -> u32 {
    on_enter(&ctx, shape::MSGHDR, direction::INGRESS)
}

/// Shared by every read and write wrapper: the entry probe saved what the call was.
#[uretprobe]
pub fn socket_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING.copied(&pid_tgid) else {
        return 0;
    };
    // The return address has been popped: the stack pointer is one word above its entry value.
    let sp = registers(&ctx.regs).rsp;
    if sp != pending.sp + 8 {
        return 0;
    }
    let _ = PENDING.remove(&pid_tgid);
    let ret: i64 = ctx.ret::<i64>();
    if ret <= 0 {
        return 0;
    }
    let first = || {
        if pending.shape == shape::BUFFER {
            pending.ptr
        } else {
            first_iovec(pending.shape, pending.ptr).map_or(0, |iov| iov.base)
        }
    };
    let Some(conn) = decided(pid_tgid, pending.conn, pending.fd, first) else {
        return 0;
    };
    if pending.shape == shape::BUFFER {
        emit_data(
            pid_tgid,
            &plaintext_call(conn, pending.ptr, pending.dir),
            ret as u64,
        );
    } else {
        emit_vectored(pid_tgid, &pending, conn, ret as u64);
    }
    0
}

/// The connection a read's bytes belong to, once they are in: `conn` as decided at entry, or,
/// for [`DECIDE_AT_RETURN`], the plaintext connection `fd` carries now (if copied). An agent's
/// fd that carried nothing known and whose bytes read (at `first()`) begin a JSON object is
/// taken for JSON-RPC now.
pub(crate) fn decided(pid_tgid: u64, conn: u64, fd: u32, first: impl Fn() -> u64) -> Option<u64> {
    if conn != DECIDE_AT_RETURN {
        return Some(conn);
    }
    let key = SocketKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let conn = match SOCKETS.copied(&key) {
        Some(socket) if copied(socket.carries) => socket.conn,
        Some(_) => return None,
        None => {
            if !crate::agent_tree::is_agent(key.pid) || read_user::<[u8; 2]>(first()) != Ok(*b"{\"")
            {
                return None;
            }
            start_connection(pid_tgid, key, carries::JSON_RPC)
        }
    };
    copy_wanted(pid_tgid, conn, direction::INGRESS).then_some(conn)
}

/// Whether a process writing a JSON object at `buf` on an fd with nothing known is an MCP client:
/// an agent, or a process whose message is JSON-RPC (an MCP client starts its session before
/// its first LLM call); the latter becomes an agent, so that the responses it reads are taken
/// for JSON-RPC too.
fn json_rpc_client(pid: u32, buf: u64) -> bool {
    if crate::agent_tree::is_agent(pid) {
        return true;
    }
    // The key JSON-RPC clients write first: `jsonrpc` (Python's SDK), `method` (TypeScript's).
    if !matches!(read_user::<[u8; 10]>(buf), Ok(start) if start == *b"{\"jsonrpc\"" || start == *b"{\"method\":")
    {
        return false;
    }
    crate::agent_tree::add_agent(pid);
    true
}

/// `fd` carries a plaintext connection from now on (HTTP, or JSON-RPC on a pipe): its id,
/// announced to user space.
fn start_connection(pid_tgid: u64, key: SocketKey, carries: u8) -> u64 {
    let (bits, source) = match carries {
        carries::JSON_RPC => (PLAINTEXT_CONN_BIT | PIPE_CONN_BIT, tls_source::PIPE),
        _ => (PLAINTEXT_CONN_BIT, tls_source::PLAINTEXT),
    };
    let socket = Socket {
        // Unique enough: the clock, with the kind of connection in the top bits.
        conn: bits | (now_ns() & !(PLAINTEXT_CONN_BIT | PIPE_CONN_BIT)),
        carries,
        _pad: [0; 7],
    };
    let _ = SOCKETS.insert(&key, &socket, 0);
    announce(pid_tgid, socket.conn, key.fd, source);
    socket.conn
}

#[uprobe]
pub fn socket_close(ctx: ProbeContext) -> u32 {
    if let Some(fd) = ctx.arg::<u64>(0) {
        fd_closed(bpf_get_current_pid_tgid(), fd as u32);
    }
    0
}

/// `fd` was closed: the connection it carried (if any) is over.
pub(crate) fn fd_closed(pid_tgid: u64, fd: u32) {
    let key = SocketKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let Some(socket) = SOCKETS.copied(&key) else {
        return;
    };
    let _ = SOCKETS.remove(&key);
    let _ = PEERS.remove(&key);
    end_connection(pid_tgid, socket.conn);
}

/// `connect(fd, sockaddr, len)`. In a followed process: the socket's peer, for its announce.
/// In a process no longer followed: a new peer may mean new work (an LLM call) for it; user
/// space decides whether to follow it again.
#[uprobe]
pub fn socket_connect(ctx: ProbeContext) -> u32 {
    if let (Some(fd), Some(sockaddr)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        connecting(bpf_get_current_pid_tgid(), fd as u32, sockaddr);
    }
    0
}

/// A process connects `fd` to the peer at `sockaddr` (see [`socket_connect`]).
pub(crate) fn connecting(pid_tgid: u64, fd: u32, sockaddr: u64) {
    let Ok([family, port]) = read_user::<[u16; 2]>(sockaddr) else {
        return;
    };
    let mut key = PeerKey {
        pid: (pid_tgid >> 32) as u32,
        family,
        port: u16::from_be(port),
        addr: [0; 16],
    };
    // sockaddr_in: family, port, 4-byte address; sockaddr_in6: family, port, flowinfo, 16 bytes.
    match family {
        AF_INET => match read_user::<[u8; 4]>(sockaddr + 4) {
            Ok(addr) => key.addr[..4].copy_from_slice(&addr),
            Err(_) => return,
        },
        AF_INET6 => match read_user::<[u8; 16]>(sockaddr + 8) {
            Ok(addr) => key.addr = addr,
            Err(_) => return,
        },
        // Unix, netlink, …: not a network peer.
        _ => return,
    }
    if followed(key.pid) {
        let socket = SocketKey { pid: key.pid, fd };
        let peer = Peer {
            family: key.family,
            port: key.port,
            addr: key.addr,
        };
        let _ = PEERS.insert(&socket, &peer, 0);
        return;
    }
    if KNOWN_PEERS.copied(&key).is_some() {
        return;
    }
    let _ = KNOWN_PEERS.insert(&key, &1, 0);
    let event = ConnectEvent {
        header: header(kind::CONNECT, pid_tgid),
        family: key.family,
        port: key.port,
        addr: key.addr,
        _pad: 0,
    };
    // At once: a TLS handshake is all that stands between the connect and the first request.
    send::<ConnectEvent>(&event, BPF_RB_FORCE_WAKEUP as u64);
}

/// The dynamic loader's `_dl_debug_state`, called as it adds (and again once it has mapped)
/// libraries: a TLS library loaded late may be about to be used.
#[uprobe]
pub fn library_loaded(_ctx: ProbeContext) -> u32 {
    let event = header(kind::LIBRARY_MAPPED, bpf_get_current_pid_tgid());
    send::<EventHeader>(&event, BPF_RB_FORCE_WAKEUP as u64);
    0
}

/// A thread of a followed process ended (called from `process_exit`).
pub(crate) fn thread_exited(pid_tgid: u64) {
    let _ = PENDING.remove(&pid_tgid);
}

fn on_enter(ctx: &ProbeContext, shape: u8, dir: u8) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (Some(fd), Some(ptr)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let sp = registers(&ctx.regs).rsp;
    if let Some(outer) = PENDING.copied(&pid_tgid)
        && outer.sp > sp
    {
        // A wrapper called by a wrapper already seen: the outer call carries the bytes.
        return 0;
    }
    hit(pid_tgid);
    let tls = ACTIVE_CALLS.copied(&pid_tgid);
    let first = || {
        if shape == shape::BUFFER {
            ptr
        } else {
            first_iovec(shape, ptr).map_or(0, |iov| iov.base)
        }
    };
    if let Some(conn) = plaintext_connection(pid_tgid, fd as u32, dir, tls.as_ref(), first) {
        let pending = Pending {
            ptr,
            conn,
            sp,
            fd: fd as u32,
            shape,
            dir,
            _pad: [0; 2],
        };
        let _ = PENDING.insert(&pid_tgid, &pending, 0);
    }
    0
}

/// The plaintext HTTP connection whose bytes a read or write of `fd` moves, if they are to be
/// copied. Inside a TLS call (`tls`) the fd is tied to the session instead; a write on an fd
/// carrying nothing known yet starts an HTTP connection if its first bytes (at `first()`) begin
/// a request.
pub(crate) fn plaintext_connection(
    pid_tgid: u64,
    fd: u32,
    dir: u8,
    tls: Option<&ActiveCall>,
    first: impl Fn() -> u64,
) -> Option<u64> {
    let key = SocketKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    if let Some(call) = tls {
        tie_tls_session(pid_tgid, key, call);
        return None;
    }
    let conn = match SOCKETS.copied(&key) {
        Some(socket) if copied(socket.carries) => socket.conn,
        Some(_) => return None,
        None => {
            if dir == direction::INGRESS {
                return Some(DECIDE_AT_RETURN);
            }
            let Ok(bytes) = read_user::<[u8; 4]>(first()) else {
                return None;
            };
            if is_http_request_start(&bytes) {
                start_connection(pid_tgid, key, carries::HTTP)
            } else if bytes.starts_with(b"{\"") && json_rpc_client(key.pid, first()) {
                start_connection(pid_tgid, key, carries::JSON_RPC)
            } else {
                bump(counter::SKIPPED_NOT_HTTP, 1);
                if is_tls_record_start(&bytes) {
                    mark_tls_opening(key.pid);
                }
                return None;
            }
        }
    };
    copy_wanted(pid_tgid, conn, dir).then_some(conn)
}

/// A TLS record's header: content type (change cipher spec, alert, handshake, application
/// data), then major version 3 (a TLS library writing through a memory BIO, as asyncio does).
fn is_tls_record_start(bytes: &[u8; 4]) -> bool {
    (0x14..=0x17).contains(&bytes[0]) && bytes[1] == 0x03
}

/// A read or write inside a TLS call: the session travels over this fd.
fn tie_tls_session(pid_tgid: u64, key: SocketKey, call: &ActiveCall) {
    if SOCKETS
        .copied(&key)
        .is_some_and(|socket| socket.conn == call.conn)
    {
        return;
    }
    let socket = Socket {
        conn: call.conn,
        carries: carries::TLS,
        _pad: [0; 7],
    };
    let _ = SOCKETS.insert(&key, &socket, 0);
    announce(pid_tgid, call.conn, key.fd, call.source);
}

/// Tells user space which fd carries a connection; it finds the peer and checks the fd is a
/// TCP socket.
fn announce(pid_tgid: u64, conn: u64, fd: u32, source: u8) {
    let key = SocketKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let (peer, role) = match PEERS.copied(&key) {
        Some(peer) => (peer, socket_role::CONNECTED),
        None => (
            Peer {
                family: 0,
                port: 0,
                addr: [0; 16],
            },
            socket_role::UNKNOWN,
        ),
    };
    let event = SocketEvent {
        header: header(kind::SOCKET, pid_tgid),
        conn,
        fd,
        family: peer.family,
        port: peer.port,
        addr: peer.addr,
        source,
        role,
        _pad: [0; 6],
    };
    send::<SocketEvent>(&event, ring_flags());
}

/// `GET `, `POST`, `PUT `, `HEAD`, `DELE`(TE), `PATC`(H), `OPTI`(ONS), and `PRI ` (HTTP/2 prior knowledge).
pub(crate) fn is_http_request_start(bytes: &[u8; 4]) -> bool {
    matches!(
        bytes,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI" | b"PRI "
    )
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

/// Where the iovec array is: given directly (readv/writev) or inside a msghdr (sendmsg/recvmsg).
fn iovec_array(shape: u8, ptr: u64) -> Option<u64> {
    if shape == shape::MSGHDR {
        // struct msghdr: name, namelen, iov @16, iovlen @24.
        read_user::<u64>(ptr + 16).ok()
    } else {
        Some(ptr)
    }
}

fn first_iovec(shape: u8, ptr: u64) -> Option<IoVec> {
    let array = iovec_array(shape, ptr)?;
    read_user::<IoVec>(array).ok()
}

/// Copies the `total` bytes a vectored call moved. They fill the iovecs in order, so the
/// array is walked until they are accounted for (never past the caller's real entries).
fn emit_vectored(pid_tgid: u64, pending: &Pending, conn: u64, total: u64) {
    let mut left = total;
    if let Some(array) = iovec_array(pending.shape, pending.ptr) {
        for index in 0..MAX_IOVECS {
            if left == 0 {
                return;
            }
            let Ok(iov) = read_user::<IoVec>(array + index * 16) else {
                bump(counter::READ_FAULTS, 1);
                break;
            };
            let n = if iov.len < left { iov.len } else { left };
            if n > 0 {
                emit_data(pid_tgid, &plaintext_call(conn, iov.base, pending.dir), n);
            }
            left -= n;
        }
    }
    if left > 0 {
        // Past MAX_IOVECS, or unreadable: the stream offset still moves, so user space sees the gap.
        bump(counter::CALLS_TRUNCATED, 1);
        bump(counter::BYTES_TRUNCATED, left);
        skip_bytes(pid_tgid, conn, pending.dir, left);
    }
}

pub(crate) fn plaintext_call(conn: u64, buf: u64, dir: u8) -> ActiveCall {
    ActiveCall {
        conn,
        buf,
        count_ptr: 0,
        dir,
        source: if conn & PIPE_CONN_BIT != 0 {
            tls_source::PIPE
        } else {
            tls_source::PLAINTEXT
        },
        _pad: [0; 6],
    }
}
