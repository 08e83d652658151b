//! AWS event stream (`application/vnd.amazon.eventstream`), the binary framing of Bedrock's
//! streaming APIs. Each message:
//!
//! ```text
//! total length u32 BE | headers length u32 BE | prelude CRC32 | headers | payload | message CRC32
//! ```
//!
//! The lengths come from another process: every one is checked against the bytes present before
//! it is used, and nothing is allocated from them. A message whose own CRC fails is skipped and
//! counted; a prelude whose CRC fails leaves no trustworthy length to resynchronise on, so it
//! ends the stream with a [`Problem`].

/// Prelude (two lengths and its CRC) plus the trailing message CRC.
const OVERHEAD: usize = 16;
const PRELUDE: usize = 12;
/// AWS caps messages at 16 MiB; a larger claimed length is corruption, not a message.
const MAX_MESSAGE: usize = 16 << 20;

/// A header value; only strings matter to the readers, the rest are parsed to be skipped exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(&'a [u8]),
    String(&'a str),
    Timestamp(i64),
    Uuid([u8; 16]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub headers: Vec<(&'a str, HeaderValue<'a>)>,
    pub payload: &'a [u8],
    /// Offset of the message's last byte in the body.
    pub completed_at: usize,
}

impl Message<'_> {
    /// The string header `name` (`:event-type`, `:message-type`, `:exception-type`, ...).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(key, value)| match value {
            HeaderValue::String(text) if *key == name => Some(*text),
            _ => None,
        })
    }
}

/// Why reading stopped before the body's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A prelude failed its CRC: the lengths cannot be trusted.
    PreludeCrc,
    /// Lengths that cannot describe a message (shorter than its own framing, or over the cap).
    BadLength,
}

/// The messages of a body, in order. A message cut off by the body's end ends the iteration
/// without a problem: the exchange's end says why the body stopped.
pub fn messages(body: &[u8]) -> Messages<'_> {
    Messages {
        body,
        pos: 0,
        corrupt_messages: 0,
        problem: None,
    }
}

pub struct Messages<'a> {
    body: &'a [u8],
    pos: usize,
    corrupt_messages: u64,
    problem: Option<Problem>,
}

impl Messages<'_> {
    /// Messages that failed a CRC or held malformed headers: skipped, or (a bad prelude) ending the stream.
    pub fn corrupt_messages(&self) -> u64 {
        self.corrupt_messages
    }

    pub fn problem(&self) -> Option<Problem> {
        self.problem
    }

    fn fail(&mut self, problem: Problem) {
        self.problem = Some(problem);
        self.pos = self.body.len();
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        loop {
            let rest = &self.body[self.pos..];
            let prelude = rest.get(..PRELUDE)?;
            let total = be_u32(&prelude[0..4]) as usize;
            let headers_len = be_u32(&prelude[4..8]) as usize;
            if !crc_matches(&prelude[..8], &prelude[8..12]) {
                self.corrupt_messages += 1;
                self.fail(Problem::PreludeCrc);
                return None;
            }
            if !(OVERHEAD..=MAX_MESSAGE).contains(&total) || headers_len > total - OVERHEAD {
                self.fail(Problem::BadLength);
                return None;
            }
            let frame = rest.get(..total)?;
            let start = self.pos;
            self.pos += total;
            let (content, crc) = frame.split_at(total - 4);
            if !crc_matches(content, crc) {
                self.corrupt_messages += 1;
                continue;
            }
            let (header_bytes, payload) = content[PRELUDE..].split_at(headers_len);
            let Some(headers) = parse_headers(header_bytes) else {
                self.corrupt_messages += 1;
                continue;
            };
            return Some(Message {
                headers,
                payload,
                completed_at: start + total - 1,
            });
        }
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0, |value, &byte| (value << 8) | u32::from(byte))
}

/// A cursor over header bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<usize> {
        Some(u16::from_be_bytes(self.array()?).into())
    }
}

/// Every header, or `None` if any is malformed (the CRC passed, so the sender built it wrong).
fn parse_headers(bytes: &[u8]) -> Option<Vec<(&str, HeaderValue<'_>)>> {
    let mut reader = Reader(bytes);
    let mut headers = Vec::new();
    while !reader.0.is_empty() {
        let name_len = reader.u8()?.into();
        let name = std::str::from_utf8(reader.take(name_len)?).ok()?;
        headers.push((name, header_value(&mut reader)?));
    }
    Some(headers)
}

fn header_value<'a>(reader: &mut Reader<'a>) -> Option<HeaderValue<'a>> {
    Some(match reader.u8()? {
        0 => HeaderValue::Bool(true),
        1 => HeaderValue::Bool(false),
        2 => HeaderValue::Byte(i8::from_be_bytes(reader.array()?)),
        3 => HeaderValue::Short(i16::from_be_bytes(reader.array()?)),
        4 => HeaderValue::Int(i32::from_be_bytes(reader.array()?)),
        5 => HeaderValue::Long(i64::from_be_bytes(reader.array()?)),
        6 => {
            let len = reader.u16()?;
            HeaderValue::Bytes(reader.take(len)?)
        }
        7 => {
            let len = reader.u16()?;
            HeaderValue::String(std::str::from_utf8(reader.take(len)?).ok()?)
        }
        8 => HeaderValue::Timestamp(i64::from_be_bytes(reader.array()?)),
        9 => HeaderValue::Uuid(reader.array()?),
        _ => return None,
    })
}

/// Whether `bytes` have the CRC32 `crc` (big-endian). Fuzzing builds accept any CRC: a fuzzer
/// cannot forge them, and would never get past the prelude into the lengths and headers.
fn crc_matches(bytes: &[u8], crc: &[u8]) -> bool {
    cfg!(fuzzing) || crc32fast::hash(bytes) == be_u32(crc)
}

/// Builds messages with real CRCs, for tests and the fuzzers' seeds.
#[cfg(any(test, fuzzing))]
pub mod encode {
    /// One message with string headers only, as Bedrock sends.
    pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut header_bytes = Vec::new();
        for (name, value) in headers {
            header_bytes.push(name.len() as u8);
            header_bytes.extend_from_slice(name.as_bytes());
            header_bytes.push(7);
            header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
            header_bytes.extend_from_slice(value.as_bytes());
        }
        framed(&header_bytes, payload)
    }

    /// A message around already-encoded header bytes.
    pub fn framed(header_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = (super::OVERHEAD + header_bytes.len() + payload.len()) as u32;
        let mut frame = Vec::new();
        frame.extend_from_slice(&total.to_be_bytes());
        frame.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        frame.extend_from_slice(header_bytes);
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        frame
    }

    /// A Bedrock event: `:message-type` event, JSON payload.
    pub fn event(event_type: &str, payload: &serde_json::Value) -> Vec<u8> {
        message(
            &[
                (":event-type", event_type),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{framed, message};
    use super::*;

    fn two_messages() -> Vec<u8> {
        let mut body = message(&[(":event-type", "a")], b"{\"x\":1}");
        body.extend(message(&[(":event-type", "b")], b""));
        body
    }

    #[test]
    fn reads_messages_and_their_end_offsets() {
        let body = two_messages();
        let first_len = message(&[(":event-type", "a")], b"{\"x\":1}").len();
        let read: Vec<Message> = messages(&body).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].header_str(":event-type"), Some("a"));
        assert_eq!(read[0].payload, b"{\"x\":1}");
        assert_eq!(read[0].completed_at, first_len - 1);
        assert_eq!(read[1].header_str(":event-type"), Some("b"));
        assert_eq!(read[1].completed_at, body.len() - 1);
    }

    #[test]
    fn parses_every_header_type() {
        let mut headers = Vec::new();
        let mut add = |name: &str, kind: u8, value: &[u8]| {
            headers.push(name.len() as u8);
            headers.extend_from_slice(name.as_bytes());
            headers.push(kind);
            headers.extend_from_slice(value);
        };
        add("t", 0, &[]);
        add("f", 1, &[]);
        add("b", 2, &[0xff]);
        add("s", 3, &[0x01, 0x02]);
        add("i", 4, &7i32.to_be_bytes());
        add("l", 5, &(-2i64).to_be_bytes());
        add("y", 6, &[0, 2, 0xde, 0xad]);
        add(":event-type", 7, &[0, 3, b'e', b'v', b't']);
        add("ts", 8, &1i64.to_be_bytes());
        add("u", 9, &[9; 16]);
        let frame = framed(&headers, b"p");
        let read: Vec<Message> = messages(&frame).collect();
        assert_eq!(read.len(), 1);
        let message = &read[0];
        assert_eq!(message.header_str(":event-type"), Some("evt"));
        assert_eq!(message.payload, b"p");
        let values: Vec<&HeaderValue> = message.headers.iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                &HeaderValue::Bool(true),
                &HeaderValue::Bool(false),
                &HeaderValue::Byte(-1),
                &HeaderValue::Short(0x0102),
                &HeaderValue::Int(7),
                &HeaderValue::Long(-2),
                &HeaderValue::Bytes(&[0xde, 0xad]),
                &HeaderValue::String("evt"),
                &HeaderValue::Timestamp(1),
                &HeaderValue::Uuid([9; 16]),
            ]
        );
    }

    #[test]
    fn a_bad_message_crc_skips_that_message_only() {
        let mut body = two_messages();
        body[PRELUDE + 2] ^= 0x20; // inside the first message's headers
        let mut read = messages(&body);
        let events: Vec<Option<&str>> = read
            .by_ref()
            .map(|m| m.header_str(":event-type").map(|_| "seen"))
            .collect();
        assert_eq!(events, vec![Some("seen")]);
        assert_eq!(read.corrupt_messages(), 1);
        assert_eq!(read.problem(), None);
    }

    #[test]
    fn a_bad_prelude_crc_ends_the_stream() {
        let mut body = two_messages();
        body[3] ^= 1; // the first message's total length
        let mut read = messages(&body);
        assert_eq!(read.by_ref().count(), 0);
        assert_eq!(read.corrupt_messages(), 1);
        assert_eq!(read.problem(), Some(Problem::PreludeCrc));
    }

    #[test]
    fn impossible_lengths_end_the_stream_without_allocating() {
        for (total, headers) in [(4u32, 0u32), (u32::MAX, 0), (32, 17), (20, u32::MAX)] {
            let mut prelude = Vec::new();
            prelude.extend_from_slice(&total.to_be_bytes());
            prelude.extend_from_slice(&headers.to_be_bytes());
            prelude.extend_from_slice(&crc32fast::hash(&prelude).to_be_bytes());
            prelude.extend_from_slice(&[0; 20]);
            let mut read = messages(&prelude);
            assert_eq!(read.by_ref().count(), 0);
            assert_eq!(
                read.problem(),
                Some(Problem::BadLength),
                "{total} {headers}"
            );
        }
    }

    #[test]
    fn a_message_cut_anywhere_is_not_yielded() {
        let body = two_messages();
        let first_len = message(&[(":event-type", "a")], b"{\"x\":1}").len();
        for cut in 0..body.len() {
            let mut read = messages(&body[..cut]);
            let expected = usize::from(cut >= first_len);
            assert_eq!(read.by_ref().count(), expected, "cut at {cut}");
            assert_eq!(read.problem(), None);
        }
    }

    #[test]
    fn malformed_headers_behind_a_good_crc_skip_the_message() {
        for headers in [&[5u8, b'a'][..], &[1, b'a', 7, 0, 9, b'x'], &[1, b'a', 42]] {
            let frame = framed(headers, b"");
            let mut read = messages(&frame);
            assert_eq!(read.by_ref().count(), 0);
            assert_eq!(read.corrupt_messages(), 1);
        }
    }

    #[test]
    fn survives_arbitrary_bytes() {
        let noise: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert!(messages(&noise).all(|m| m.completed_at < noise.len()));
    }
}
