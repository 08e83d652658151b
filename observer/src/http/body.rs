//! Message bodies: content decoding (gzip, deflate, br, zstd) applied incrementally as bytes
//! arrive, with a cap on the decoded size and an arrival time for every decoded part.
use std::io::{self, Write};

use bytes::BytesMut;
use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use super::types::{Body, BodyPart, Headers};

/// Content codings we decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn from_headers(headers: &Headers) -> Result<Self, String> {
        let Some(value) = headers.get("content-encoding") else {
            return Ok(Coding::Identity);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Coding::Identity),
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "br" => Ok(Coding::Brotli),
            "zstd" => Ok(Coding::Zstd),
            other => Err(format!("decode: unsupported content-encoding {other:?}")),
        }
    }

    /// Builds the decoder once the first body byte is known (deflate comes in two framings).
    fn decoder(self, first_byte: u8, sink: CappedSink) -> io::Result<Box<dyn StreamDecoder>> {
        const BROTLI_BUFFER: usize = 4096;
        Ok(match self {
            Coding::Identity => Box::new(sink),
            Coding::Gzip => Box::new(MultiGzDecoder::new(sink)),
            Coding::Deflate if looks_like_zlib(first_byte) => Box::new(ZlibDecoder::new(sink)),
            Coding::Deflate => Box::new(DeflateDecoder::new(sink)),
            Coding::Brotli => Box::new(brotli::DecompressorWriter::new(sink, BROTLI_BUFFER)),
            Coding::Zstd => Box::new(zstd::stream::write::Decoder::new(sink)?),
        })
    }
}

/// "deflate" is meant to be zlib-wrapped, but some servers send raw deflate. A zlib header's
/// first byte says "deflate, window ≤ 32K" (low nibble 8, high nibble ≤ 7); a raw stream's first
/// byte would then be a stored block with non-zero padding bits, which encoders never write.
fn looks_like_zlib(first_byte: u8) -> bool {
    first_byte & 0x0f == 8 && first_byte >> 4 <= 7
}

/// Where decoders write: collects output until drained, refusing anything past its budget so a
/// compression bomb stops the decoder instead of filling memory.
struct CappedSink {
    buf: Vec<u8>,
    budget: usize,
    overflowed: bool,
}

impl Write for CappedSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.budget == 0 && !data.is_empty() {
            self.overflowed = true;
            return Err(io::Error::other("body cap reached"));
        }
        let n = data.len().min(self.budget);
        self.budget -= n;
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A streaming decoder writing into a `CappedSink`.
trait StreamDecoder: Write + Send {
    fn sink(&mut self) -> &mut CappedSink;
    /// Ends the compressed stream, writing any output still held.
    fn finish_stream(&mut self) -> io::Result<()>;
}

impl StreamDecoder for CappedSink {
    fn sink(&mut self) -> &mut CappedSink {
        self
    }
    fn finish_stream(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! flate2_stream_decoder {
    ($($decoder:ident),*) => {$(
        impl StreamDecoder for $decoder<CappedSink> {
            fn sink(&mut self) -> &mut CappedSink {
                self.get_mut()
            }
            fn finish_stream(&mut self) -> io::Result<()> {
                self.try_finish()
            }
        }
    )*};
}
flate2_stream_decoder!(MultiGzDecoder, ZlibDecoder, DeflateDecoder);

impl StreamDecoder for brotli::DecompressorWriter<CappedSink> {
    fn sink(&mut self) -> &mut CappedSink {
        self.get_mut()
    }
    fn finish_stream(&mut self) -> io::Result<()> {
        self.close()
    }
}

impl StreamDecoder for zstd::stream::write::Decoder<'static, CappedSink> {
    fn sink(&mut self) -> &mut CappedSink {
        self.get_mut()
    }
    fn finish_stream(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// What became of a body, for the stage's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct BodyOutcome {
    pub truncated: bool,
    pub decode_failed: bool,
}

/// Builds a `Body` from transfer-decoded bytes as they arrive.
pub(super) struct BodyBuilder {
    coding: Coding,
    /// Created at the first byte; `None` before it and after decoding stopped.
    decoder: Option<Box<dyn StreamDecoder>>,
    /// No more bytes are decoded (cap reached or decode error).
    stopped: bool,
    cap: usize,
    data: BytesMut,
    parts: Vec<BodyPart>,
    outcome: BodyOutcome,
    problem: Option<String>,
}

impl BodyBuilder {
    pub fn new(headers: &Headers, cap: usize) -> Self {
        let (coding, problem) = match Coding::from_headers(headers) {
            Ok(coding) => (coding, None),
            // Keep the raw bytes: still more useful than nothing.
            Err(problem) => (Coding::Identity, Some(problem)),
        };
        Self {
            coding,
            decoder: None,
            stopped: false,
            cap,
            data: BytesMut::new(),
            parts: Vec::new(),
            outcome: BodyOutcome {
                truncated: false,
                decode_failed: problem.is_some(),
            },
            problem,
        }
    }

    /// Decodes `raw` (transfer coding already removed) that arrived at `ts`.
    pub fn push(&mut self, raw: &[u8], ts: u64) {
        let Some(&first_byte) = raw.first() else {
            return;
        };
        if self.stopped {
            return;
        }
        if self.decoder.is_none() {
            let sink = CappedSink {
                buf: Vec::new(),
                budget: self.cap,
                overflowed: false,
            };
            match self.coding.decoder(first_byte, sink) {
                Ok(decoder) => self.decoder = Some(decoder),
                Err(err) => return self.stop_on_error(&err, false),
            }
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let result = write_all_and_flush(decoder.as_mut(), raw);
        self.collect_output(ts);
        if let Err(err) = result {
            let overflowed = self.decoder.as_mut().is_some_and(|d| d.sink().overflowed);
            self.stop_on_error(&err, overflowed);
        }
    }

    /// Ends the body. `problem` says why it is not whole, if it is not.
    pub fn finish(mut self, problem: Option<&str>, ts: u64) -> (Body, BodyOutcome) {
        if let Some(mut decoder) = self.decoder.take() {
            let result = decoder.finish_stream();
            let overflowed = decoder.sink().overflowed;
            self.decoder = Some(decoder);
            self.collect_output(ts);
            // A cut-off body cannot end its compressed stream; that is not a decode failure.
            if let (Err(err), None) = (result, problem) {
                self.stop_on_error(&err, overflowed);
            }
        }
        if let Some(problem) = problem {
            self.problem.get_or_insert_with(|| problem.to_owned());
        }
        let body = Body {
            data: self.data.freeze(),
            parts: self.parts,
            truncated: self.outcome.truncated,
            problem: self.problem,
        };
        (body, self.outcome)
    }

    /// Moves decoded output into the body, recording when it arrived.
    fn collect_output(&mut self, ts: u64) {
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let sink = decoder.sink();
        if sink.buf.is_empty() {
            return;
        }
        self.data.extend_from_slice(&sink.buf);
        sink.buf.clear();
        let end = self.data.len();
        match self.parts.last_mut() {
            Some(last) if last.ts == ts => last.end = end,
            _ => self.parts.push(BodyPart { ts, end }),
        }
    }

    fn stop_on_error(&mut self, err: &io::Error, overflowed: bool) {
        self.stopped = true;
        self.decoder = None;
        if overflowed {
            self.outcome.truncated = true;
            self.problem.get_or_insert_with(|| {
                format!("truncated: decoded body exceeds {} bytes", self.cap)
            });
        } else {
            self.outcome.decode_failed = true;
            self.problem.get_or_insert_with(|| format!("decode: {err}"));
        }
    }
}

/// Feeds all of `raw` to the decoder and pushes its output to the sink, so a streamed body's
/// parts are seen when they arrive rather than when the decoder's buffer fills.
fn write_all_and_flush(decoder: &mut dyn StreamDecoder, mut raw: &[u8]) -> io::Result<()> {
    while !raw.is_empty() {
        match decoder.write(raw) {
            // The compressed stream has ended; what follows is not part of it.
            Ok(0) => break,
            Ok(n) => raw = &raw[n..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    decoder.flush()
}
