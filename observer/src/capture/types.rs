//! What the capture stage hands to the rest of the pipeline.
use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One connection as the kernel names it: the process and its TLS session handle (or, for
/// plaintext HTTP, an id the kernel gave the socket).
/// The hasher for maps keyed by connection, looked up for every chunk: seeded, and much
/// faster than SipHash on small keys.
pub type ConnHash = foldhash::fast::RandomState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnKey {
    pub pid: u32,
    /// `SSL*` for OpenSSL, `*tls.Conn` for Go: unique in the process while the session lives.
    pub conn: u64,
}

/// Which way bytes went, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    /// Written by the process (requests, for a client).
    Egress,
    /// Read by the process (responses, for a client).
    Ingress,
}

/// The TLS library the plaintext was taken from (or none, for plaintext HTTP). The
/// discriminants are the kernel's `observer_common::tls_source` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum TlsLibrary {
    OpenSsl = observer_common::tls_source::OPENSSL,
    GnuTls = observer_common::tls_source::GNUTLS,
    BoringSsl = observer_common::tls_source::BORINGSSL,
    Go = observer_common::tls_source::GO,
    Rustls = observer_common::tls_source::RUSTLS,
    Plaintext = observer_common::tls_source::PLAINTEXT,
    /// Not HTTP: newline-delimited JSON-RPC on an agent's pipe (an MCP server on stdio).
    Pipe = observer_common::tls_source::PIPE,
}

impl TlsLibrary {
    const ALL: [TlsLibrary; 7] = [
        TlsLibrary::OpenSsl,
        TlsLibrary::GnuTls,
        TlsLibrary::BoringSsl,
        TlsLibrary::Go,
        TlsLibrary::Rustls,
        TlsLibrary::Plaintext,
        TlsLibrary::Pipe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::GnuTls => "gnutls",
            TlsLibrary::BoringSsl => "boringssl",
            TlsLibrary::Go => "go",
            TlsLibrary::Rustls => "rustls",
            TlsLibrary::Plaintext => "plaintext",
            TlsLibrary::Pipe => "pipe",
        }
    }

    pub fn from_source(source: u8) -> Option<TlsLibrary> {
        Self::ALL.into_iter().find(|l| *l as u8 == source)
    }
}

/// How the traced process came by a connection's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SocketRole {
    /// It connected: it is the client.
    Connected,
    /// It accepted: it is the server.
    Accepted,
    /// The socket existed before the observer saw it.
    Unknown,
}

/// Plaintext from one TLS read or write (or one piece of a large one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub conn: ConnKey,
    pub tid: u32,
    pub dir: Direction,
    /// Wall-clock time of the call's return, Unix nanoseconds.
    pub ts: u64,
    /// Position of `data[0]` in this connection's stream for `dir`. A jump means lost bytes.
    pub offset: u64,
    #[serde(deserialize_with = "super::record::chunk_data")]
    pub data: Bytes,
    /// The TLS call was larger than the kernel's per-call cap: bytes after this chunk's end
    /// up to the next offset were not copied.
    pub truncated_after: bool,
    pub library: TlsLibrary,
}

/// What a later stage no longer follows: the capture may stop copying it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfollowed {
    /// Nothing more of the connection (server side, not HTTP, upgraded).
    Connection(ConnKey),
    /// The response to the request that ended at egress stream offset `request_end` (HTTP/1);
    /// the connection's next request is followed again.
    Response { conn: ConnKey, request_end: u64 },
}

/// What the pipeline tells the capture stage about what it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// Bytes the pipeline no longer needs: the probes may stop copying them.
    Unfollowed(Unfollowed),
    /// The process makes LLM (or MCP) calls, told as its first request goes out (at `since`,
    /// Unix ns): follow it whatever it costs, and the commands it started since.
    LlmClient { pid: u32, since: u64 },
    /// The answer to [`CaptureEvent::Costly`]: whether the process has LLM calls under way.
    Judged { pid: u32, judgement: Judgement },
}

/// What the pipeline knows of a process the kernel found costly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// It has LLM calls under way, or made some: it is worth what it costs.
    Calls,
    /// None of its traffic has reached the pipeline yet: its connections may still be opening
    /// (TLS handshakes before any request).
    NothingSeen,
    /// Its traffic was seen, and none of it is an LLM call.
    NoCalls,
}

/// Everything the capture stage reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptureEvent {
    Data(Chunk),
    /// The TLS session was freed: the connection is over.
    ConnEnd {
        conn: ConnKey,
        ts: u64,
    },
    /// A process started a new program.
    Exec {
        pid: u32,
        ts: u64,
        path: String,
        comm: String,
    },
    /// A process ended: all its connections are over.
    Exit {
        pid: u32,
        ts: u64,
    },
    /// A connection was tied to the socket that carries it.
    Socket {
        conn: ConnKey,
        ts: u64,
        fd: u32,
        role: SocketRole,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    },
    /// A process runs inside a container.
    Container {
        pid: u32,
        ts: u64,
        id: String,
    },
    /// A followed process used up its probe budget (non-LLM traffic costs it): the capture
    /// stops following it unless the pipeline answers that it has LLM calls under way
    /// ([`Feedback::Judged`]).
    Costly {
        pid: u32,
        ts: u64,
    },
    /// What the capture could not see so far: sent when the totals change, and recorded so a
    /// replay reports the same losses.
    Losses {
        ts: u64,
        totals: CaptureLosses,
    },
    // Recordings name variants by position: new ones go last.
    /// A process below an agent (a process that makes LLM calls) ran a program: a command.
    Command(Command),
    /// A command ended.
    CommandExit {
        pid: u32,
        ts: u64,
        ending: Ending,
    },
    /// An agent's connection carries JSON-RPC on a pipe (its chunks' library is
    /// [`TlsLibrary::Pipe`]): the process at the pipe's other end, when found (the MCP server).
    Pipe {
        conn: ConnKey,
        ts: u64,
        fd: u32,
        peer: Option<u32>,
    },
}

/// A program that a process in an agent's tree ran (its `execve`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub pid: u32,
    pub ts: u64,
    /// The agent at the top of the tree.
    pub agent: u32,
    /// The nearest ancestor that is the agent or a command.
    pub parent: u32,
    /// How far below the agent (its children: 1).
    pub depth: u32,
    /// The program's path, as given to `execve`.
    pub path: String,
    /// Its arguments, secrets redacted (`crate::redact::arguments`).
    pub args: Vec<String>,
    /// The arguments were longer than the kernel copies: the last ones are missing.
    pub args_cut: bool,
    /// Its working directory, when the process was still there to ask.
    pub cwd: Option<String>,
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// `exit(code)`.
    Exited(u8),
    /// Killed by a signal.
    Killed { signal: u8, core_dumped: bool },
    /// The kernel's layout was not known: how it ended is not.
    Unknown,
}

impl Ending {
    /// Reads the kernel's `task_struct.exit_code`.
    pub fn from_exit_code(code: u32) -> Ending {
        match code & 0x7f {
            0 => Ending::Exited((code >> 8) as u8),
            signal => Ending::Killed {
                signal: signal as u8,
                core_dumped: code & 0x80 != 0,
            },
        }
    }
}

/// What the capture stage could not see, as totals since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureLosses {
    /// Events the ring buffer had no room for, and their bytes.
    pub events_lost: u64,
    pub bytes_lost: u64,
    /// TLS calls whose bytes past the per-call copy limit were not copied.
    pub calls_truncated: u64,
    /// Buffers the probes could not read from the process's memory.
    pub read_faults: u64,
    /// Processes whose probes came on while they had TCP connections open: what those
    /// connections carried before was not seen.
    pub attached_late: u64,
}

impl CaptureEvent {
    pub fn ts(&self) -> u64 {
        match self {
            CaptureEvent::Data(chunk) => chunk.ts,
            CaptureEvent::Command(command) => command.ts,
            CaptureEvent::ConnEnd { ts, .. }
            | CaptureEvent::Exec { ts, .. }
            | CaptureEvent::Exit { ts, .. }
            | CaptureEvent::Socket { ts, .. }
            | CaptureEvent::Container { ts, .. }
            | CaptureEvent::Costly { ts, .. }
            | CaptureEvent::CommandExit { ts, .. }
            | CaptureEvent::Pipe { ts, .. }
            | CaptureEvent::Losses { ts, .. } => *ts,
        }
    }
}
