//! Syscall tracepoints: which socket carries each connection, and plaintext HTTP.
//!
//! This kernel has no kprobes, so sockets are followed from the `syscalls/sys_enter_*` and
//! `sys_exit_*` tracepoints. Two programs serve them all and dispatch on the syscall number
//! (x86_64 numbering, like the uprobes' register ABI):
//! - `connect`/`accept` remember each TCP socket and its peer;
//! - a read or write made while a TLS call is on the thread ties that TLS session to its fd
//!   (the "nested syscall"), once per session and fd;
//! - on a connected socket the process's first write decides, from its first four bytes,
//!   whether the connection is plaintext HTTP: if so its reads and writes are copied like TLS
//!   plaintext, otherwise nothing of it is ever copied;
//! - `close` ends the connection the fd carried;
//! - an executable file mapping tells user space to look for TLS libraries loaded late.
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use observer_ebpf::{
    CopyVerdict, EventHeader, PLAINTEXT_CONN_BIT, SocketEvent, copy_verdict, counter, direction,
    kind, socket_role, tls_source,
};

use crate::probes::{
    ACTIVE_CALLS, ActiveCall, COPY_VERDICTS, EVENTS, bump, copy_wanted, emit_data, end_connection,
    header, ring_flags, skip_bytes, traced,
};

/// x86_64 syscall numbers.
mod nr {
    pub const READ: i32 = 0;
    pub const WRITE: i32 = 1;
    pub const CLOSE: i32 = 3;
    pub const MMAP: i32 = 9;
    pub const READV: i32 = 19;
    pub const WRITEV: i32 = 20;
    pub const CONNECT: i32 = 42;
    pub const ACCEPT: i32 = 43;
    pub const SENDTO: i32 = 44;
    pub const RECVFROM: i32 = 45;
    pub const SENDMSG: i32 = 46;
    pub const RECVMSG: i32 = 47;
    pub const ACCEPT4: i32 = 288;
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;
const PROT_EXEC: u64 = 4;
/// Scatter/gather buffers copied per call; later ones are counted as truncated.
const MAX_IOVECS: u64 = 8;

/// What the first bytes written on a socket said.
mod verdict {
    pub const UNDECIDED: u8 = 0;
    /// Plaintext HTTP: copied.
    pub const HTTP: u8 = 1;
    /// Anything else (including TLS records, whose plaintext the uprobes see): never copied.
    pub const OTHER: u8 = 2;
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
    /// The connection the fd carries: a TLS session, or a plaintext connection's own id; 0 if none yet.
    conn: u64,
    addr: [u8; 16],
    family: u16,
    port: u16,
    role: u8,
    verdict: u8,
    _pad: [u8; 2],
}

/// Sockets of traced processes, by process and fd. LRU: a process that dies leaves entries.
#[map]
static SOCKETS: LruHashMap<SocketKey, Socket> = LruHashMap::with_max_entries(65536, 0);

/// A syscall between its enter and exit tracepoints, by thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    /// The buffer, iovec array, msghdr or sockaddr the syscall was given.
    ptr: u64,
    /// The plaintext connection being copied (data syscalls only).
    conn: u64,
    nr: i32,
    fd: u32,
}

#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

fn arg(ctx: &TracePointContext, index: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * index) }.unwrap_or(0)
}

#[tracepoint]
pub fn syscall_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Ok(number) = (unsafe { ctx.read_at::<i32>(8) }) else {
        return 0;
    };
    let fd = arg(&ctx, 0) as u32;
    match number {
        nr::CONNECT | nr::ACCEPT | nr::ACCEPT4 => save(pid_tgid, number, fd, arg(&ctx, 1), 0),
        nr::CLOSE => on_close(pid_tgid, fd),
        nr::MMAP => {
            // mmap(addr, len, prot, flags, fd, off): a file mapped executable.
            if arg(&ctx, 2) & PROT_EXEC != 0 && (arg(&ctx, 4) as i64) >= 0 {
                save(pid_tgid, number, 0, 0, 0);
            }
        }
        nr::READ | nr::READV | nr::RECVFROM | nr::RECVMSG => {
            on_data_enter(pid_tgid, number, fd, arg(&ctx, 1), direction::INGRESS)
        }
        nr::WRITE | nr::WRITEV | nr::SENDTO | nr::SENDMSG => {
            on_data_enter(pid_tgid, number, fd, arg(&ctx, 1), direction::EGRESS)
        }
        _ => {}
    }
    0
}

#[tracepoint]
pub fn syscall_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = PENDING.remove(&pid_tgid);
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1);
    match pending.nr {
        nr::CONNECT if ret == 0 || ret == -EINPROGRESS => {
            remember_socket(pid_tgid, pending.fd, pending.ptr, socket_role::CONNECTED)
        }
        nr::ACCEPT | nr::ACCEPT4 if ret >= 0 => {
            remember_socket(pid_tgid, ret as u32, pending.ptr, socket_role::ACCEPTED)
        }
        nr::MMAP if !(-4096..0).contains(&ret) => {
            // Rare, and urgent: the library's first TLS call may be milliseconds away.
            let event = header(kind::LIBRARY_MAPPED, pid_tgid);
            if EVENTS
                .output::<EventHeader>(&event, BPF_RB_FORCE_WAKEUP as u64)
                .is_err()
            {
                bump(counter::EVENTS_LOST, 1);
            }
        }
        nr::READ | nr::WRITE | nr::SENDTO | nr::RECVFROM if ret > 0 => {
            let dir = if matches!(pending.nr, nr::WRITE | nr::SENDTO) {
                direction::EGRESS
            } else {
                direction::INGRESS
            };
            emit_data(
                pid_tgid,
                &plaintext_call(pending.conn, pending.ptr, dir),
                ret as u64,
            );
        }
        nr::READV | nr::RECVMSG if ret > 0 => {
            emit_vectored(pid_tgid, &pending, direction::INGRESS, ret as u64)
        }
        nr::WRITEV | nr::SENDMSG if ret > 0 => {
            emit_vectored(pid_tgid, &pending, direction::EGRESS, ret as u64)
        }
        _ => {}
    }
    0
}

fn save(pid_tgid: u64, number: i32, fd: u32, ptr: u64, conn: u64) {
    let pending = Pending {
        ptr,
        conn,
        nr: number,
        fd,
    };
    let _ = PENDING.insert(&pid_tgid, &pending, 0);
}

fn output<T>(event: &T) {
    if EVENTS.output::<T>(event, ring_flags()).is_err() {
        bump(counter::EVENTS_LOST, 1);
    }
}

/// After a successful connect or accept: the socket and, for TCP over IP, its peer.
fn remember_socket(pid_tgid: u64, fd: u32, sockaddr: u64, role: u8) {
    let mut socket = Socket {
        conn: 0,
        addr: [0; 16],
        family: 0,
        port: 0,
        role,
        // A server's sockets carry requests in, not out: never copied as plaintext.
        verdict: if role == socket_role::ACCEPTED {
            verdict::OTHER
        } else {
            verdict::UNDECIDED
        },
        _pad: [0; 2],
    };
    if sockaddr != 0 {
        // sockaddr_in: family, port, 4-byte address; sockaddr_in6: family, port, flowinfo, 16 bytes.
        let family = unsafe { bpf_probe_read_user(sockaddr as *const u16) }.unwrap_or(0);
        let port = unsafe { bpf_probe_read_user((sockaddr + 2) as *const u16) }.unwrap_or(0);
        match family {
            AF_INET => {
                if let Ok(addr) = unsafe { bpf_probe_read_user((sockaddr + 4) as *const [u8; 4]) } {
                    socket.addr[..4].copy_from_slice(&addr);
                    socket.family = AF_INET;
                }
            }
            AF_INET6 => {
                if let Ok(addr) = unsafe { bpf_probe_read_user((sockaddr + 8) as *const [u8; 16]) }
                {
                    socket.addr = addr;
                    socket.family = AF_INET6;
                }
            }
            // Unix, netlink, …: not a network connection.
            _ => return,
        }
        socket.port = u16::from_be(port);
    } else if role == socket_role::CONNECTED {
        return;
    }
    let key = SocketKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let _ = SOCKETS.insert(&key, &socket, 0);
}

fn on_close(pid_tgid: u64, fd: u32) {
    let key = SocketKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let Some(socket) = (unsafe { SOCKETS.get(&key) }).copied() else {
        return;
    };
    let _ = SOCKETS.remove(&key);
    if socket.conn != 0 {
        end_connection(pid_tgid, socket.conn);
    }
}

fn on_data_enter(pid_tgid: u64, number: i32, fd: u32, ptr: u64, dir: u8) {
    let key = SocketKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    if let Some(call) = unsafe { ACTIVE_CALLS.get(&pid_tgid) } {
        // read/write also serve files and pipes: an fd not seen connecting is tied only by a
        // socket-only syscall.
        let socket_only = matches!(
            number,
            nr::SENDTO | nr::RECVFROM | nr::SENDMSG | nr::RECVMSG
        );
        if socket_only || unsafe { SOCKETS.get(&key) }.is_some() {
            tie_tls_session(pid_tgid, key, call);
        }
        return;
    }
    let Some(socket) = SOCKETS.get_ptr_mut(&key) else {
        return;
    };
    let socket = unsafe { &mut *socket };
    if socket.verdict == verdict::UNDECIDED {
        if dir == direction::INGRESS {
            return;
        }
        let first = if matches!(number, nr::WRITEV | nr::SENDMSG) {
            first_iovec(number, ptr).map_or(0, |iov| iov.base)
        } else {
            ptr
        };
        let starts_http = unsafe { bpf_probe_read_user(first as *const [u8; 4]) }
            .is_ok_and(|bytes| is_http_request_start(&bytes));
        if !starts_http {
            socket.verdict = verdict::OTHER;
            return;
        }
        socket.verdict = verdict::HTTP;
        socket.conn = PLAINTEXT_CONN_BIT | unsafe { bpf_ktime_get_ns() };
        announce(pid_tgid, socket.conn, fd, socket, tls_source::PLAINTEXT);
    }
    if socket.verdict == verdict::HTTP && copy_wanted(pid_tgid, socket.conn, dir) {
        save(pid_tgid, number, fd, ptr, socket.conn);
    }
}

/// A read or write inside a TLS call: the session travels over this fd.
fn tie_tls_session(pid_tgid: u64, key: SocketKey, call: &ActiveCall) {
    match SOCKETS.get_ptr_mut(&key) {
        Some(socket) => {
            let socket = unsafe { &mut *socket };
            if socket.conn == call.conn {
                return;
            }
            socket.conn = call.conn;
            socket.verdict = verdict::OTHER;
            announce(pid_tgid, call.conn, key.fd, socket, call.source);
            if socket.role == socket_role::ACCEPTED {
                skip_server_side(pid_tgid, call.conn);
            }
        }
        None => {
            // Opened before the observer started: the peer is left to user space.
            let socket = Socket {
                conn: call.conn,
                addr: [0; 16],
                family: 0,
                port: 0,
                role: socket_role::UNKNOWN,
                verdict: verdict::OTHER,
                _pad: [0; 2],
            };
            let _ = SOCKETS.insert(&key, &socket, 0);
            announce(pid_tgid, call.conn, key.fd, &socket, call.source);
        }
    }
}

/// The process serves this TLS session: user space keeps client spans only, so nothing of it is
/// copied, from the call in progress on.
fn skip_server_side(pid_tgid: u64, conn: u64) {
    let verdict = CopyVerdict {
        mode: copy_verdict::SKIP,
        request_end: 0,
    };
    let _ = COPY_VERDICTS.insert(&[conn, pid_tgid >> 32], &verdict, 0);
    let _ = ACTIVE_CALLS.remove(&pid_tgid);
}

fn announce(pid_tgid: u64, conn: u64, fd: u32, socket: &Socket, source: u8) {
    let event = SocketEvent {
        header: header(kind::SOCKET, pid_tgid),
        conn,
        fd,
        family: socket.family,
        port: socket.port,
        addr: socket.addr,
        source,
        role: socket.role,
        _pad: [0; 6],
    };
    output(&event);
}

/// `GET `, `POST`, `PUT `, `HEAD`, `DELE`(TE), `PATC`(H), `OPTI`(ONS), and `PRI ` (HTTP/2 prior knowledge).
fn is_http_request_start(bytes: &[u8; 4]) -> bool {
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
fn iovec_array(number: i32, ptr: u64) -> Option<u64> {
    if matches!(number, nr::SENDMSG | nr::RECVMSG) {
        // struct user_msghdr: name, namelen, iov @16, iovlen @24.
        unsafe { bpf_probe_read_user((ptr + 16) as *const u64) }.ok()
    } else {
        Some(ptr)
    }
}

fn first_iovec(number: i32, ptr: u64) -> Option<IoVec> {
    let array = iovec_array(number, ptr)?;
    unsafe { bpf_probe_read_user(array as *const IoVec) }.ok()
}

/// Copies the `total` bytes a vectored call moved. They fill the iovecs in order, so the
/// array is walked until they are accounted for (never past the caller's real entries).
fn emit_vectored(pid_tgid: u64, pending: &Pending, dir: u8, total: u64) {
    let mut left = total;
    if let Some(array) = iovec_array(pending.nr, pending.ptr) {
        for index in 0..MAX_IOVECS {
            if left == 0 {
                return;
            }
            let Ok(iov) = (unsafe { bpf_probe_read_user((array + index * 16) as *const IoVec) })
            else {
                bump(counter::READ_FAULTS, 1);
                break;
            };
            let n = if iov.len < left { iov.len } else { left };
            if n > 0 {
                emit_data(pid_tgid, &plaintext_call(pending.conn, iov.base, dir), n);
            }
            left -= n;
        }
    }
    if left > 0 {
        // Past MAX_IOVECS, or unreadable: the stream offset still moves, so user space sees the gap.
        bump(counter::CALLS_TRUNCATED, 1);
        bump(counter::BYTES_TRUNCATED, left);
        skip_bytes(pid_tgid, pending.conn, dir, left);
    }
}

fn plaintext_call(conn: u64, buf: u64, dir: u8) -> ActiveCall {
    ActiveCall {
        conn,
        buf,
        count_ptr: 0,
        dir,
        source: tls_source::PLAINTEXT,
        _pad: [0; 6],
    }
}
