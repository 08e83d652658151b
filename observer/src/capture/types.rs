//! What the capture stage hands to the rest of the pipeline.
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One connection as the kernel names it: the process and its TLS session handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnKey {
    pub pid: u32,
    /// `SSL*` for OpenSSL; unique within the process while the session lives.
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

/// The TLS library the plaintext was taken from. The discriminants are the kernel's
/// `observer_ebpf::tls_source` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum TlsLibrary {
    OpenSsl = observer_ebpf::tls_source::OPENSSL,
    GnuTls = observer_ebpf::tls_source::GNUTLS,
    BoringSsl = observer_ebpf::tls_source::BORINGSSL,
    Rustls = observer_ebpf::tls_source::RUSTLS,
}

impl TlsLibrary {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::GnuTls => "gnutls",
            TlsLibrary::BoringSsl => "boringssl",
            TlsLibrary::Rustls => "rustls",
        }
    }

    pub fn from_source(source: u8) -> Option<TlsLibrary> {
        [
            TlsLibrary::OpenSsl,
            TlsLibrary::GnuTls,
            TlsLibrary::BoringSsl,
            TlsLibrary::Rustls,
        ]
        .into_iter()
        .find(|l| *l as u8 == source)
    }
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
    pub data: Bytes,
    /// The TLS call was larger than the kernel's per-call cap: bytes after this chunk's end
    /// up to the next offset were not copied.
    pub truncated_after: bool,
    pub library: TlsLibrary,
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
}

impl CaptureEvent {
    pub fn ts(&self) -> u64 {
        match self {
            CaptureEvent::Data(chunk) => chunk.ts,
            CaptureEvent::ConnEnd { ts, .. }
            | CaptureEvent::Exec { ts, .. }
            | CaptureEvent::Exit { ts, .. } => *ts,
        }
    }
}
