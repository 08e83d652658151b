//! Recordings: the capture stage's events written to a file (`observer capture --record`) and
//! read back (`observer replay`), so the rest of the pipeline runs without root or a kernel.
//!
//! Secrets are masked before a byte reaches the file: header values of secret headers and
//! secret query parameters are overwritten with `*` of the same length, so stream offsets
//! and message lengths stay true.
use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::Path,
};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use super::{CaptureEvent, ConnKey, Direction};

const MAGIC: &[u8] = b"OBSERVER-RECORDING 1\n";
/// A record larger than this is corrupt (the kernel's chunks are 16 KiB).
const MAX_RECORD_LEN: usize = 1 << 20;

pub struct RecordWriter {
    out: BufWriter<File>,
    scrubbers: HashMap<(ConnKey, Direction), Scrubber>,
}

impl RecordWriter {
    pub fn create(path: &Path) -> Result<RecordWriter> {
        let file =
            File::create(path).with_context(|| format!("creating recording {}", path.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(MAGIC)?;
        Ok(RecordWriter {
            out,
            scrubbers: HashMap::new(),
        })
    }

    pub fn write(&mut self, event: &CaptureEvent) -> Result<()> {
        let encoded = match event {
            CaptureEvent::Data(chunk) => {
                let scrubber = self.scrubbers.entry((chunk.conn, chunk.dir)).or_default();
                let mut data = chunk.data.to_vec();
                scrubber.scrub(&mut data);
                let mut chunk = chunk.clone();
                chunk.data = Bytes::from(data);
                postcard::to_stdvec(&CaptureEvent::Data(chunk))?
            }
            CaptureEvent::ConnEnd { conn, .. } => {
                self.scrubbers.retain(|(c, _), _| c != conn);
                postcard::to_stdvec(event)?
            }
            CaptureEvent::Exit { pid, .. } => {
                self.scrubbers.retain(|(c, _), _| c.pid != *pid);
                postcard::to_stdvec(event)?
            }
            CaptureEvent::Exec { .. }
            | CaptureEvent::Socket { .. }
            | CaptureEvent::Container { .. } => postcard::to_stdvec(event)?,
        };
        self.out.write_all(&(encoded.len() as u32).to_le_bytes())?;
        self.out.write_all(&encoded)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Reads a recording back, event by event.
pub struct RecordReader {
    input: BufReader<File>,
    /// The current record, its allocation reused from record to record.
    record: Vec<u8>,
}

impl RecordReader {
    pub fn open(path: &Path) -> Result<RecordReader> {
        let file =
            File::open(path).with_context(|| format!("opening recording {}", path.display()))?;
        let mut input = BufReader::new(file);
        let mut magic = [0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .context("reading the recording's header")?;
        if magic != MAGIC {
            bail!(
                "{} is not an observer recording (made by `observer capture --record`)",
                path.display()
            );
        }
        Ok(RecordReader {
            input,
            record: Vec::new(),
        })
    }
}

impl Iterator for RecordReader {
    type Item = Result<CaptureEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(e.into())),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD_LEN {
            return Some(Err(anyhow::anyhow!(
                "corrupt recording: a record claims {len} bytes"
            )));
        }
        self.record.resize(len, 0);
        if let Err(e) = self.input.read_exact(&mut self.record) {
            // A recording cut short (the observer was killed): what came before stands.
            log::warn!("recording ends inside a record: {e}");
            return None;
        }
        Some(postcard::from_bytes(&self.record).context("corrupt recording: undecodable record"))
    }
}

/// Masks secret values in one direction of one connection, across chunk boundaries.
#[derive(Default)]
struct Scrubber {
    /// The current line's first bytes, lowercased: enough to hold any header name.
    line_start: Vec<u8>,
    /// The last bytes seen, lowercased: enough to hold a query parameter name.
    recent: Vec<u8>,
    mask: Mask,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Mask {
    #[default]
    Off,
    /// Until the end of the line.
    HeaderValue,
    /// Until the end of the parameter.
    QueryValue,
}

const NAME_WINDOW: usize = 64;

impl Scrubber {
    fn scrub(&mut self, data: &mut [u8]) {
        for byte in data.iter_mut() {
            let b = *byte;
            if b == b'\n' || b == b'\r' {
                self.line_start.clear();
                self.recent.clear();
                self.mask = Mask::Off;
                continue;
            }
            match self.mask {
                Mask::HeaderValue => {
                    *byte = b'*';
                    continue;
                }
                Mask::QueryValue if !matches!(b, b'&' | b' ' | b'#') => {
                    *byte = b'*';
                    continue;
                }
                _ => self.mask = Mask::Off,
            }
            let lower = b.to_ascii_lowercase();
            // Only a header line (a token, then ':') is masked: body lines such as a chunk
            // that starts with `ptTokenCount": 12` must stay intact.
            if b == b':' && self.line_start.len() < NAME_WINDOW && is_header_name(&self.line_start)
            {
                let name = String::from_utf8_lossy(&self.line_start);
                if crate::redact::is_secret_header(name.trim()) {
                    self.mask = Mask::HeaderValue;
                }
            }
            if b == b'=' && self.ends_with_secret_query_key() {
                self.mask = Mask::QueryValue;
            }
            if self.line_start.len() < NAME_WINDOW + 1 {
                self.line_start.push(lower);
            }
            if self.recent.len() == NAME_WINDOW {
                self.recent.remove(0);
            }
            self.recent.push(lower);
        }
    }

    fn ends_with_secret_query_key(&self) -> bool {
        crate::redact::SECRET_QUERY_PARAMS.iter().any(|key| {
            let key = key.as_bytes();
            self.recent.len() > key.len()
                && self.recent.ends_with(key)
                && matches!(self.recent[self.recent.len() - key.len() - 1], b'?' | b'&')
        })
    }
}

/// Whether `name` can be an HTTP header name (an RFC 9110 token).
fn is_header_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub_in_pieces(input: &str, piece: usize) -> String {
        let mut scrubber = Scrubber::default();
        let mut bytes = input.as_bytes().to_vec();
        for part in bytes.chunks_mut(piece) {
            scrubber.scrub(part);
        }
        String::from_utf8(bytes).expect("ascii")
    }

    #[test]
    fn masks_secret_headers_and_query_keys_across_chunk_boundaries() {
        let request = "POST /v1beta/models/g:generateContent?alt=sse&key=AIzaSECRET HTTP/1.1\r\n\
            Host: api\r\nAuthorization: Bearer sk-canary-4f1d9a7e\r\nx-api-key: sk-ant-SECRET\r\n\
            Content-Type: application/json\r\n\r\n{\"model\":\"m\"}";
        for piece in 1..=request.len() {
            let scrubbed = scrub_in_pieces(request, piece);
            assert_eq!(scrubbed.len(), request.len());
            for secret in ["AIzaSECRET", "sk-canary-4f1d9a7e", "sk-ant-SECRET"] {
                assert!(!scrubbed.contains(secret), "piece {piece}: {scrubbed}");
            }
            assert!(scrubbed.contains("alt=sse&key=**********"));
            assert!(scrubbed.contains("Content-Type: application/json"));
            assert!(scrubbed.ends_with("{\"model\":\"m\"}"));
        }
    }

    /// A streamed body cut into HTTP/1.1 chunks: a chunk's first line can start inside a JSON
    /// string that names a token count; it is body, not a header, and must stay as it was.
    #[test]
    fn leaves_body_lines_that_look_like_headers_alone() {
        let response = "HTTP/1.1 200 OK\r\nx-goog-api-key: AIzaSECRET\r\n\r\n\
            2a\r\ndata: {\"usageMetadata\": {\"promp\r\n\
            1c\r\ntTokenCount\": 12, \"secret\": 1}}\r\n";
        let scrubbed = scrub_in_pieces(response, response.len());
        assert!(!scrubbed.contains("AIzaSECRET"));
        assert!(
            scrubbed.contains("tTokenCount\": 12, \"secret\": 1}}"),
            "{scrubbed}"
        );
    }
}
