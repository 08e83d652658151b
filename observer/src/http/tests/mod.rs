//! Byte streams in, exchanges out: through `ConnectionStage`, as the pipeline drives it. The
//! helpers here drive one traced connection; the tests are by protocol.
use std::io::Write;

use bytes::Bytes;

use super::*;
use crate::capture::Chunk;

mod h1;
mod h2;

const CONN: ConnKey = ConnKey {
    pid: 42,
    conn: 0x5511,
};
const TID: u32 = 7;
const MS: u64 = 1_000_000;

/// One traced connection: writes and reads become capture events with consecutive offsets.
struct Wire {
    stage: ConnectionStage,
    out: Vec<Exchange>,
    offsets: [u64; 2],
    ts: u64,
}

impl Wire {
    fn new() -> Self {
        Self::with_limits(HttpLimits::default())
    }

    fn with_limits(http: HttpLimits) -> Self {
        Self::with_stage(|reassembly| ConnectionStage::new(reassembly, http))
    }

    /// Responses are read only for requests `follows` wants.
    fn following(follows: ResponseFilter) -> Self {
        Self::with_stage(|reassembly| {
            ConnectionStage::with_response_filter(reassembly, HttpLimits::default(), follows)
        })
    }

    fn with_stage(stage: impl FnOnce(ReassemblyLimits) -> ConnectionStage) -> Self {
        // No reorder wait: a jump in offsets is released at once as a gap.
        let reassembly = ReassemblyLimits {
            reorder_timeout_ns: 0,
            ..ReassemblyLimits::default()
        };
        Self {
            stage: stage(reassembly),
            out: Vec::new(),
            offsets: [0; 2],
            ts: 1_000 * MS,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> &mut Self {
        self.send(Direction::Egress, bytes, TID)
    }

    fn read(&mut self, bytes: &[u8]) -> &mut Self {
        self.send(Direction::Ingress, bytes, TID)
    }

    fn send(&mut self, dir: Direction, bytes: &[u8], tid: u32) -> &mut Self {
        self.ts += MS;
        let offset = &mut self.offsets[dir as usize];
        let chunk = Chunk {
            conn: CONN,
            tid,
            dir,
            ts: self.ts,
            offset: *offset,
            data: Bytes::copy_from_slice(bytes),
            truncated_after: false,
            library: TlsLibrary::OpenSsl,
        };
        *offset += bytes.len() as u64;
        self.stage.push(StreamInput::Chunk(chunk), &mut self.out);
        self
    }

    /// `n` bytes of `dir` never reach us.
    fn lose(&mut self, dir: Direction, n: u64) -> &mut Self {
        self.offsets[dir as usize] += n;
        self
    }

    fn end(&mut self) -> &mut Self {
        self.ts += MS;
        let end = StreamInput::ConnectionEnd {
            conn: CONN,
            ts: self.ts,
        };
        self.stage.push(end, &mut self.out);
        self
    }

    fn stop(&mut self) -> &mut Self {
        self.stage.flush_all(self.ts + MS, &mut self.out);
        self
    }

    fn stats(&self) -> HttpStats {
        self.stage.stats()
    }
}

fn body_text(body: &Body) -> &str {
    std::str::from_utf8(&body.data).unwrap_or("<not utf-8>")
}

fn response_of(ex: &Exchange) -> &Response {
    ex.response.as_ref().expect("exchange has a response")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)
        .and_then(|()| enc.finish())
        .expect("gzip in memory")
}

/// Exchanges with everything that depends on read boundaries (times, parts) removed.
fn timeless(mut exchanges: Vec<Exchange>) -> Vec<Exchange> {
    let strip = |body: &mut Body| body.parts.clear();
    for ex in &mut exchanges {
        ex.request.ts_start = 0;
        ex.request.ts_end = 0;
        strip(&mut ex.request.body);
        if let Some(response) = &mut ex.response {
            response.ts_start = 0;
            response.ts_end = 0;
            strip(&mut response.body);
        }
    }
    exchanges
}
