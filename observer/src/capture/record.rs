//! Recordings: the capture stage's events written to a file (`observer capture --record`) and
//! read back (`observer replay`), so the rest of the pipeline runs without root or a kernel.
//!
//! Secrets are masked before a byte reaches the file: header values of secret headers and
//! secret query parameters are overwritten with `*` of the same length, so stream offsets
//! and message lengths stay true.
use std::{
    cell::RefCell,
    collections::HashMap,
    fs::File,
    io::{BufWriter, Read, Write},
    path::Path,
};

use anyhow::{Context, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use serde::{
    Deserializer,
    de::{SeqAccess, Visitor},
};

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
        let file = crate::private_file::create(path)
            .with_context(|| format!("creating recording {}", path.display()))?;
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
            | CaptureEvent::Container { .. }
            | CaptureEvent::Losses { .. }
            | CaptureEvent::Command(_)
            | CaptureEvent::CommandExit { .. }
            | CaptureEvent::Pipe { .. } => postcard::to_stdvec(event)?,
            // A question to the live pipeline about following a process: nothing to replay.
            CaptureEvent::Costly { .. } => return Ok(()),
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
    input: File,
    /// Bytes read from the file and not decoded yet. Chunk data is sliced out of it (no copy
    /// per chunk); a block is freed when no chunk refers to it any more.
    block: Bytes,
}

/// How much of the file one read takes: many records per read, little memory held per block.
const BLOCK_LEN: usize = 256 << 10;

impl RecordReader {
    pub fn open(path: &Path) -> Result<RecordReader> {
        let input =
            File::open(path).with_context(|| format!("opening recording {}", path.display()))?;
        let mut reader = RecordReader {
            input,
            block: Bytes::new(),
        };
        let whole = reader
            .fill(MAGIC.len())
            .context("reading the recording's header")?;
        if !whole || &reader.block[..MAGIC.len()] != MAGIC {
            bail!(
                "{} is not an observer recording (made by `observer capture --record`)",
                path.display()
            );
        }
        reader.block.advance(MAGIC.len());
        Ok(reader)
    }

    /// Reads until at least `need` bytes are pending; false if the file ends first.
    fn fill(&mut self, need: usize) -> std::io::Result<bool> {
        let have = self.block.len();
        if have >= need {
            return Ok(true);
        }
        let mut next = BytesMut::zeroed(need.max(BLOCK_LEN));
        next[..have].copy_from_slice(&self.block);
        let mut filled = have;
        while filled < need {
            match self.input.read(&mut next[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        next.truncate(filled);
        self.block = next.freeze();
        Ok(filled >= need)
    }
}

impl Iterator for RecordReader {
    type Item = Result<CaptureEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.fill(4) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Err(e.into())),
        }
        let len = u32::from_le_bytes([self.block[0], self.block[1], self.block[2], self.block[3]])
            as usize;
        if len > MAX_RECORD_LEN {
            return Some(Err(anyhow::anyhow!(
                "corrupt recording: a record claims {len} bytes"
            )));
        }
        match self.fill(4 + len) {
            Ok(true) => {}
            Ok(false) => {
                // A recording cut short (the observer was killed): what came before stands.
                log::warn!("recording ends inside a record");
                return None;
            }
            Err(e) => return Some(Err(e.into())),
        }
        let record = self.block.slice(4..4 + len);
        self.block.advance(4 + len);
        let event = DECODING.with(|source| {
            *source.borrow_mut() = record.clone();
            let event = postcard::from_bytes(&record);
            *source.borrow_mut() = Bytes::new();
            event
        });
        Some(event.context("corrupt recording: undecodable record"))
    }
}

thread_local! {
    /// The record being decoded, for `chunk_data` to slice from.
    static DECODING: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
}

/// Deserialises a chunk's data: a slice of the record being decoded when it lies inside it
/// (no copy), a copy otherwise (other formats, other callers).
pub(super) fn chunk_data<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    struct DataVisitor;
    impl<'de> Visitor<'de> for DataVisitor {
        type Value = Bytes;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("chunk bytes")
        }
        fn visit_borrowed_bytes<E>(self, data: &'de [u8]) -> Result<Bytes, E> {
            Ok(DECODING.with(|source| {
                let source = source.borrow();
                let inside = source.as_ptr_range();
                let range = data.as_ptr_range();
                if !data.is_empty() && inside.start <= range.start && range.end <= inside.end {
                    source.slice_ref(data)
                } else {
                    Bytes::copy_from_slice(data)
                }
            }))
        }
        fn visit_bytes<E>(self, data: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(data))
        }
        fn visit_byte_buf<E>(self, data: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(data))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut data = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_RECORD_LEN));
            while let Some(byte) = seq.next_element()? {
                data.push(byte);
            }
            Ok(Bytes::from(data))
        }
    }
    deserializer.deserialize_bytes(DataVisitor)
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

    fn chunk(offset: u64, data: &[u8]) -> CaptureEvent {
        CaptureEvent::Data(super::super::Chunk {
            conn: ConnKey { pid: 7, conn: 1 },
            tid: 7,
            dir: Direction::Ingress,
            ts: offset,
            offset,
            data: Bytes::copy_from_slice(data),
            truncated_after: false,
            library: super::super::TlsLibrary::OpenSsl,
        })
    }

    /// Records that span block boundaries read back whole; a recording cut inside a record
    /// keeps the records before the cut.
    #[test]
    fn reads_back_across_blocks_and_stops_at_a_cut() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("r.rec");
        let mut events: Vec<CaptureEvent> = (0..200u64)
            .map(|i| chunk(i * 3000, &vec![b'a' + (i % 26) as u8; 3000]))
            .collect();
        // What the capture could not see is kept too, so a replay reports it.
        events.insert(
            100,
            CaptureEvent::Losses {
                ts: 1,
                totals: super::super::CaptureLosses {
                    events_lost: 3,
                    attached_late: 1,
                    ..Default::default()
                },
            },
        );
        let mut writer = RecordWriter::create(&path).expect("create");
        for event in &events {
            writer.write(event).expect("write");
        }
        writer.finish().expect("finish");
        let read: Vec<CaptureEvent> = RecordReader::open(&path)
            .expect("open")
            .collect::<Result<_>>()
            .expect("read");
        assert_eq!(read, events);

        let len = std::fs::metadata(&path).expect("size").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(len - 100).expect("cut");
        let read: Vec<CaptureEvent> = RecordReader::open(&path)
            .expect("open")
            .collect::<Result<_>>()
            .expect("read");
        assert_eq!(read, events[..events.len() - 1]);
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
