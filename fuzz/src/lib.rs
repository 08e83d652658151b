//! Fuzz input driven through the observer's real pipeline (capture events in, spans out to the
//! sinks), and the seeds each target starts from, derived from the recorded fixtures; and
//! executables for the analysis of the files discovery reads (`executables`).
pub mod executables;
pub mod seeds;

mod bounded_heap;

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use observer::{
    capture::{CaptureEvent, Chunk, ConnKey, Direction, SocketRole, TlsLibrary},
    pipeline::Pipeline,
    sink::{JsonlSink, PrettySink, Sink, otlp},
    span::Span,
};

/// The client preface that opens every HTTP/2 connection.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const PID: u32 = 4242;
/// Two connections of one process, so that interleaving and linking across them are exercised.
const CONNECTIONS: [ConnKey; 2] = [
    ConnKey {
        pid: PID,
        conn: 0x1000,
    },
    ConnKey {
        pid: PID,
        conn: 0x2000,
    },
];

/// The flags byte in front of each TLS call of the input (see [`calls`]).
pub mod flag {
    /// Read by the process (a response, for a client); otherwise written.
    pub const INGRESS: u8 = 1;
    /// On the second connection.
    pub const SECOND_CONNECTION: u8 = 2;
    /// Lost in the ring buffer: its offsets pass, its bytes never arrive (a gap).
    pub const LOST: u8 = 4;
    /// The TLS call was larger than the kernel's copy: bytes after this chunk are missing.
    pub const TRUNCATED_AFTER: u8 = 8;
    /// Arrives after the next call's chunk (two threads, or two CPUs' buffers).
    pub const LATE: u8 = 16;
    /// The TLS session is freed after this call; a later call starts a new one.
    pub const END_CONNECTION: u8 = 32;
    /// Ten seconds pass before this call (reorder, idle and agent-run timeouts).
    pub const PAUSE_BEFORE: u8 = 64;
}

/// One TLS read or write of the fuzz input.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub flags: u8,
    pub data: &'a [u8],
}

/// Splits fuzz input into TLS calls: each is a flags byte ([`flag`]), a little-endian u16
/// length, then that many bytes (fewer at the input's end).
pub fn calls(mut input: &[u8]) -> Vec<Call<'_>> {
    let mut calls = Vec::new();
    while let [flags, len_lo, len_hi, rest @ ..] = input {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(rest.len());
        let (data, after) = rest.split_at(len);
        calls.push(Call {
            flags: *flags,
            data,
        });
        input = after;
    }
    calls
}

/// The inverse of [`calls`], for seeds.
pub fn encode_calls<'a>(calls: impl IntoIterator<Item = Call<'a>>) -> Vec<u8> {
    let mut out = Vec::new();
    for call in calls {
        for piece in call.data.chunks(usize::from(u16::MAX)) {
            out.push(call.flags);
            out.extend_from_slice(&(piece.len() as u16).to_le_bytes());
            out.extend_from_slice(piece);
        }
    }
    out
}

/// The capture events the kernel would report for `calls` of one process: its exec, each
/// connection's socket, the chunks (with their losses, truncations and reorderings), the
/// connections' ends and the process's exit. Each connection's egress stream starts with
/// `preface`, if given.
pub fn capture_events(calls: &[Call], preface: Option<&[u8]>) -> Vec<CaptureEvent> {
    let mut ts = 1_700_000_000_000_000_000u64;
    let mut events = vec![CaptureEvent::Exec {
        pid: PID,
        ts,
        path: "/usr/bin/python3".into(),
        comm: "python3".into(),
    }];
    // Per connection: whether it is open, and the next offset each way.
    let mut open = [false; 2];
    let mut offsets = [[0u64; 2]; 2];
    let mut late: Option<CaptureEvent> = None;
    for call in calls {
        ts += if call.flags & flag::PAUSE_BEFORE != 0 {
            10_000_000_000
        } else {
            1_000_000
        };
        let which = usize::from(call.flags & flag::SECOND_CONNECTION != 0);
        let conn = CONNECTIONS[which];
        let chunk = |dir, offset, data: &[u8], truncated_after| {
            CaptureEvent::Data(Chunk {
                conn,
                tid: PID + which as u32,
                dir,
                ts,
                offset,
                data: Bytes::copy_from_slice(data),
                truncated_after,
                library: TlsLibrary::OpenSsl,
            })
        };
        if !open[which] {
            open[which] = true;
            offsets[which] = [0, 0];
            events.push(CaptureEvent::Socket {
                conn,
                ts,
                fd: 3 + which as u32,
                role: SocketRole::Connected,
                peer: Some(SocketAddr::from(([127, 0, 0, 1], 443))),
                local: Some(SocketAddr::from(([127, 0, 0, 1], 40_000 + which as u16))),
            });
            if let Some(preface) = preface {
                events.push(chunk(Direction::Egress, 0, preface, false));
                offsets[which][Direction::Egress as usize] = preface.len() as u64;
            }
        }
        let dir = if call.flags & flag::INGRESS != 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let offset = &mut offsets[which][dir as usize];
        let this = chunk(
            dir,
            *offset,
            call.data,
            call.flags & flag::TRUNCATED_AFTER != 0,
        );
        *offset += call.data.len() as u64;
        if call.flags & flag::LOST == 0 {
            if call.flags & flag::LATE != 0 {
                events.extend(late.replace(this));
            } else {
                events.push(this);
                events.extend(late.take());
            }
        }
        if call.flags & flag::END_CONNECTION != 0 {
            events.extend(late.take());
            open[which] = false;
            events.push(CaptureEvent::ConnEnd { conn, ts });
        }
    }
    events.extend(late);
    events.push(CaptureEvent::Exit {
        pid: PID,
        ts: ts + 1,
    });
    events
}

/// Runs `events` through the pipeline into every sink that needs no outside service (JSON
/// lines, the terminal view, the OTLP encoding), and returns what the first two wrote. Whatever
/// the events, this must return, with bounded memory, and no sink may fail on a built span.
pub fn run_pipeline(events: Vec<CaptureEvent>) -> Vec<u8> {
    let last_ts = events.last().map_or(0, CaptureEvent::ts);
    let written = SharedBuffer::default();
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(JsonlSink::new(Box::new(written.clone()))),
        Box::new(PrettySink::new(Box::new(written.clone()), false)),
        Box::new(OtlpEncoding::default()),
    ];
    let mut pipeline = Pipeline::new(Default::default(), sinks);
    for event in events {
        pipeline.on_event(event);
    }
    pipeline.finish(last_ts + 1);
    let report = pipeline.into_report();
    assert_eq!(report.stats.sink_errors, 0, "a sink failed on a built span");
    let bytes = std::mem::take(&mut *written.0.lock().expect("sink buffer"));
    bytes
}

#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("sink buffer").extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encodes the spans as the OTLP exporter would, without sending them.
#[derive(Default)]
struct OtlpEncoding {
    spans: Vec<Span>,
}

impl Sink for OtlpEncoding {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        self.spans.push(span.clone());
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let _ = otlp::encode_request(&self.spans, &BTreeMap::new());
        Ok(())
    }
}
