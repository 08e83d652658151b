//! The kernel/user event layout, defined once.
//!
//! The probes (`observer-ebpf`, a BPF binary) write these records into the ring buffer;
//! user space (`observer::capture`) reads them back. Every record starts with an
//! [`EventHeader`] whose `kind` says which struct follows.
#![no_std]

/// Plaintext bytes carried by one data event. A TLS call larger than this is split into
/// several events, each with its own stream offset.
pub const CHUNK_CAPACITY: usize = 16 * 1024;

/// How many chunks one TLS call may produce (2 MiB). Past that the rest of the call is skipped,
/// the last event carries [`flags::CALL_TRUNCATED`], and the stream offset still advances so
/// user space sees the gap.
pub const MAX_CHUNKS_PER_CALL: u32 = 128;

/// Executable paths longer than this are cut (the tail is kept: it holds the file name).
pub const EXEC_PATH_CAPACITY: usize = 256;

pub mod kind {
    pub const DATA: u32 = 1;
    pub const EXEC: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const CONN_END: u32 = 4;
    /// A connection was tied to its socket ([`SocketEvent`]).
    pub const SOCKET: u32 = 5;
    /// A followed process's dynamic loader changed its list of libraries (dlopen): the
    /// header alone.
    pub const LIBRARY_MAPPED: u32 = 6;
    /// A followed process forked ([`ForkEvent`]).
    pub const FORK: u32 = 7;
    /// A followed process used up its probe-hit budget for a window ([`COST_HITS_PER_WINDOW`]):
    /// the header alone.
    pub const COSTLY: u32 = 8;
    /// A process no longer followed connected to a peer it had not connected to before
    /// ([`ConnectEvent`]).
    pub const CONNECT: u32 = 9;
    /// A process in an agent's tree ran a program ([`CommandEvent`]).
    pub const COMMAND: u32 = 10;
    /// A process in an agent's tree that ran a program ended ([`CommandExitEvent`]).
    pub const COMMAND_EXIT: u32 = 11;
}

pub mod flags {
    /// The TLS call was larger than `MAX_CHUNKS_PER_CALL * CHUNK_CAPACITY`; bytes past that were not copied.
    pub const CALL_TRUNCATED: u16 = 1;
}

/// Which way the plaintext went, seen from the traced process.
pub mod direction {
    /// Written by the process (`SSL_write`): requests, for a client.
    pub const EGRESS: u8 = 0;
    /// Read by the process (`SSL_read`): responses, for a client.
    pub const INGRESS: u8 = 1;
}

/// Which TLS library the bytes came from: the uprobe's attach cookie.
pub mod tls_source {
    pub const OPENSSL: u8 = 1;
    pub const GNUTLS: u8 = 2;
    pub const BORINGSSL: u8 = 3;
    pub const GO: u8 = 4;
    pub const RUSTLS: u8 = 5;
    /// Not TLS: plaintext HTTP read from socket syscalls.
    pub const PLAINTEXT: u8 = 6;
    /// Not TLS: newline-delimited JSON-RPC on an agent's pipes (an MCP server on stdio).
    pub const PIPE: u8 = 7;
}

/// Connection ids of plaintext connections have this bit set; TLS connections are named by a
/// user-space pointer, which never does.
pub const PLAINTEXT_CONN_BIT: u64 = 1 << 63;
/// Plaintext connections that carry JSON-RPC on a pipe (with [`PLAINTEXT_CONN_BIT`]).
pub const PIPE_CONN_BIT: u64 = 1 << 62;

/// How the traced process got a socket.
pub mod socket_role {
    /// Opened before the observer saw it: its peer is unknown to the kernel side.
    pub const UNKNOWN: u8 = 0;
    /// `connect`: the process is the client.
    pub const CONNECTED: u8 = 1;
    /// `accept`/`accept4`: the process is the server.
    pub const ACCEPTED: u8 = 2;
}

/// Indexes of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Events that did not fit in the ring buffer.
    pub const EVENTS_LOST: u32 = 0;
    /// Plaintext bytes in those events.
    pub const BYTES_LOST: u32 = 1;
    /// TLS calls cut at `MAX_CHUNKS_PER_CALL * CHUNK_CAPACITY`.
    pub const CALLS_TRUNCATED: u32 = 2;
    /// Plaintext bytes past that cut.
    pub const BYTES_TRUNCATED: u32 = 3;
    /// Failed reads of a traced process's memory.
    pub const READ_FAULTS: u32 = 4;
    /// Probe hits in followed processes (entry probes: one per TLS or socket call).
    pub const PROBE_HITS: u32 = 5;
    /// Calls not copied because user space stopped following their connection.
    pub const SKIPPED_CONNECTION: u32 = 6;
    /// Reads not copied because they carried the response to a request that is not an LLM call.
    pub const SKIPPED_RESPONSE: u32 = 7;
    /// Socket writes not copied: the socket carries no HTTP request and no TLS session we follow.
    pub const SKIPPED_NOT_HTTP: u32 = 8;
    /// Processes (or threads) an agent's tree did not take: deeper than [`MAX_TREE_DEPTH`](super::MAX_TREE_DEPTH).
    pub const TREE_DEPTH_CUT: u32 = 9;
    /// Processes (or threads) an agent's tree did not take: the map was full.
    pub const TREE_FULL: u32 = 10;
    /// Application data rustls decrypted (located without symbols) and the probes lost: no
    /// send on its session had named its decrypter (a client whose server updated the keys,
    /// before it writes again).
    pub const RUSTLS_SESSION_UNKNOWN: u32 = 11;
    /// rustls calls (located without symbols) not copied: the server side of a connection.
    pub const RUSTLS_SERVER_SIDE: u32 = 12;
    pub const COUNT: u32 = 13;
}

/// A uprobe's attach cookie: the probed library's [`tls_source`] in the low byte; the programs
/// for rustls without symbols read, above it, what the locator found in that build
/// (`observer::capture::rustls`).
pub mod cookie {
    pub const SOURCE_MASK: u64 = 0xff;
    /// `rustls_send` at `CommonState::send_appdata_encrypt`: note which session the record
    /// layer's decrypter belongs to.
    pub const LEARNS_DECRYPTER: u64 = 1 << 8;
    /// `rustls_send` and `rustls_decrypt`: the decrypter's data pointer is at `CommonState +
    /// (cookie >> DECRYPTER_SHIFT)`.
    pub const DECRYPTER_SHIFT: u32 = 16;
    /// `rustls_decrypt`: the tag byte of `Ok` in `Result<_, rustls::Error>`, at
    /// `(cookie >> OK_TAG_SHIFT) & 0xff`.
    pub const OK_TAG_SHIFT: u32 = 8;
}

/// rustls 0.23's values as its record layer hands them to the ciphers, where the compiler
/// chose their layout (checked against each build's code by `observer::capture::rustls`, and
/// end to end by the tests).
pub mod rustls_layout {
    /// `ContentType::ApplicationData`'s tag (its declaration index; the enum also has
    /// `Unknown(u8)`, so the tag is a byte of its own).
    pub const APPLICATION_DATA: u8 = 3;
    /// `OutboundPlainMessage` (what `encrypt` takes): `payload` (`OutboundChunks`, four
    /// words) first, then `typ`.
    pub const OUTBOUND_TYP: i64 = 0x20;
    /// `InboundOpaqueMessage` (what `decrypt` takes): its payload slice (pointer, length) first.
    pub const INBOUND_PAYLOAD: u64 = 0;
    /// `Result<InboundPlainMessage, Error>` (what `decrypt` returns): the tag byte first, then
    /// the message's payload slice (pointer, length) and its `typ`.
    pub const DECRYPTED_PAYLOAD: u64 = 8;
    pub const DECRYPTED_TYP: u64 = 0x18;
}

/// Indexes of the `CONFIG` array.
pub mod config {
    /// 1: report every `execve` on the host; 0: only those of followed processes.
    pub const EXEC_EVENTS_ALL: u32 = 0;
    /// Byte offsets of kernel struct fields, read by user space from the kernel's BTF (0:
    /// unknown, the field is not read): `task_struct.mm`, `mm_struct.arg_start`,
    /// `mm_struct.arg_end`, `task_struct.exit_code`.
    pub const TASK_MM: u32 = 1;
    pub const MM_ARG_START: u32 = 2;
    pub const MM_ARG_END: u32 = 3;
    pub const TASK_EXIT_CODE: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// The probes are attached per process. Each followed process has a budget of probe hits per
/// window; past it the kernel reports the process once ([`kind::COSTLY`]) and user space decides
/// whether following it is worth its cost.
pub const COST_WINDOW_NS: u64 = 100_000_000;
/// ~10,000 probed calls a second: about 1 % of a CPU at the measured cost of a hit.
pub const COST_HITS_PER_WINDOW: u32 = 1_000;

/// A followed process (the `FOLLOWED` map, by pid): its hits in the current window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Followed {
    pub window_start_ns: u64,
    pub hits: u32,
    /// [`followed_flags`].
    pub flags: u32,
}

#[cfg(feature = "user")]
// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for Followed {}

pub mod followed_flags {
    /// The process makes LLM calls: never reported as costly.
    pub const KEEP: u32 = 1;
    /// Reported as costly; user space clears it to hear of the process again.
    pub const REPORTED: u32 = 2;
    /// It wrote TLS records outside a probed TLS read or write: handshakes, its TLS connections
    /// opening. Judged costly before any of its traffic was seen, it is given more time.
    pub const TLS_OPENING: u32 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
}

/// Plaintext copied from a connection: [`DataHead`] then `head.len` bytes of `data`. Records
/// in the ring buffer are only as long as their bytes, so user space reads the head alone first.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub head: DataHead,
    pub data: [u8; CHUNK_CAPACITY],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataHead {
    pub header: EventHeader,
    /// The TLS session handle (`SSL*`): with the pid, it names the connection.
    pub conn: u64,
    /// Position of `data[0]` in this connection's byte stream for `dir`.
    pub offset: u64,
    /// Valid bytes in `data`.
    pub len: u32,
    pub dir: u8,
    pub source: u8,
    pub flags: u16,
    pub comm: [u8; 16],
}

/// Bytes of a [`DataEvent`] before its payload; a record is this plus `len` bytes.
pub const DATA_EVENT_HEADER_LEN: usize = core::mem::offset_of!(DataEvent, data);
const _: () = assert!(DATA_EVENT_HEADER_LEN == size_of::<DataHead>());

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Bytes of `path` that are valid.
    pub path_len: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
    pub path: [u8; EXEC_PATH_CAPACITY],
}

/// A followed process forked: `header.pid` is the parent. Threads are reported too (the
/// tracepoint cannot tell them apart); user space skips them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child: u32,
    pub _pad: u32,
}

/// A process that is no longer followed connected to a new peer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    /// 4 bytes for IPv4, 16 for IPv6, network byte order.
    pub addr: [u8; 16],
    pub _pad: u32,
}

/// Bytes of a program's arguments (NUL-separated, as the kernel laid them out) a
/// [`CommandEvent`] carries; longer argument lists are cut.
pub const ARGS_CAPACITY: usize = 4096;

/// How deep below an agent process its tree of processes is followed (the agent is depth 0).
pub const MAX_TREE_DEPTH: u32 = 8;

/// A process in the tree of an agent (a process that makes LLM calls): the `AGENT_TREE` map, by
/// pid. User space adds agents (depth 0); forks add their children; exits remove them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The agent at the top of the tree.
    pub root: u32,
    /// The nearest ancestor that is the agent or ran a program of its own: the process a
    /// command's span hangs under (a shell's forked subshell is not a command).
    pub parent: u32,
    pub depth: u32,
    /// [`lineage_flags`].
    pub flags: u32,
}

#[cfg(feature = "user")]
// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for Lineage {}

pub mod lineage_flags {
    /// The process ran a program (`execve`) since it joined the tree: it is a command.
    pub const RAN: u32 = 1;
}

/// A process in an agent's tree ran a program: [`CommandHead`] then `head.args_len` bytes of
/// `args`, the program's arguments as the kernel copied them to its stack at `execve`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CommandEvent {
    pub head: CommandHead,
    pub args: [u8; ARGS_CAPACITY],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CommandHead {
    pub header: EventHeader,
    pub root: u32,
    pub parent: u32,
    pub depth: u32,
    /// Bytes of `args` that are valid.
    pub args_len: u32,
    /// The arguments were longer than [`ARGS_CAPACITY`].
    pub args_cut: u32,
    /// Bytes of `path` that are valid.
    pub path_len: u32,
    pub path: [u8; EXEC_PATH_CAPACITY],
}

/// Bytes of a [`CommandEvent`] before its arguments; a record is this plus `args_len` bytes.
pub const COMMAND_EVENT_HEADER_LEN: usize = core::mem::offset_of!(CommandEvent, args);
const _: () = assert!(COMMAND_EVENT_HEADER_LEN == size_of::<CommandHead>());

/// A command (a process of an agent's tree that ran a program) ended.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CommandExitEvent {
    pub header: EventHeader,
    /// The kernel's exit code: `status << 8` for an exit, the signal number (with 0x80 for a
    /// core dump) for a kill.
    pub exit_code: u32,
    /// 1 when `exit_code` was read (the kernel's layout was known).
    pub known: u32,
}

/// A TLS session was freed: its connection is over.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnEndEvent {
    pub header: EventHeader,
    pub conn: u64,
}

/// A connection of a process as the key of the kernel's map of copy verdicts:
/// `[conn, pid]` (a plain array, so user space uses it as a map key as it is).
pub type ConnId = [u64; 2];

/// What user space decided not to copy of one connection (the `COPY_VERDICTS` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyVerdict {
    /// One of [`copy_verdict`].
    pub mode: u64,
    /// [`copy_verdict::SKIP_RESPONSE`]: the egress stream offset at which the request ended.
    /// The verdict holds while the connection's egress offset is still there; the next write
    /// (the next request) lifts it.
    pub request_end: u64,
}

#[cfg(feature = "user")]
// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for CopyVerdict {}

pub mod copy_verdict {
    /// Nothing of the connection is copied any more (server side, not HTTP, upgraded).
    pub const SKIP: u64 = 1;
    /// The response being read is not copied (the request was not an LLM call).
    pub const SKIP_RESPONSE: u64 = 2;
}

/// A connection (TLS session, or plaintext HTTP socket) and the socket that carries it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SocketEvent {
    pub header: EventHeader,
    pub conn: u64,
    pub fd: u32,
    /// `AF_INET`, `AF_INET6`, or 0 when the peer is unknown.
    pub family: u16,
    /// Peer port, host byte order.
    pub port: u16,
    /// Peer address: 4 bytes for IPv4, 16 for IPv6, network byte order.
    pub addr: [u8; 16],
    pub source: u8,
    pub role: u8,
    pub _pad: [u8; 6],
}

/// Key of the kernel's per-connection stream offsets.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StreamKey {
    pub conn: u64,
    pub pid: u32,
    pub dir: u32,
}
