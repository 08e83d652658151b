//! HTTP/2 frames (RFC 9113 §4, §6): one direction's bytes turned into frame events, and the
//! fields read out of frame payloads.
use bytes::{Bytes, BytesMut};

use crate::http::common::Arrival;

/// The client connection preface (RFC 9113 §3.4).
pub(in crate::http) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

/// Largest frame believed while guessing where frames start: peers rarely raise the 16 KiB
/// default frame size past 1 MiB.
const MAX_GUESSED_FRAME_LEN: u32 = 1 << 20;
/// SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2).
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

pub(super) mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// Extension frames are ignored (RFC 9113 §4.1).
    Unknown,
}

impl Kind {
    fn of(code: u8) -> Self {
        match code {
            0x0 => Kind::Data,
            0x1 => Kind::Headers,
            0x2 => Kind::Priority,
            0x3 => Kind::RstStream,
            0x4 => Kind::Settings,
            0x5 => Kind::PushPromise,
            0x6 => Kind::Ping,
            0x7 => Kind::GoAway,
            0x8 => Kind::WindowUpdate,
            0x9 => Kind::Continuation,
            _ => Kind::Unknown,
        }
    }

    /// Flags a sender may set on this kind of frame.
    fn known_flags(self) -> u8 {
        use flags::*;
        match self {
            Kind::Data => END_STREAM | PADDED,
            Kind::Headers => END_STREAM | END_HEADERS | PADDED | PRIORITY,
            Kind::PushPromise => END_HEADERS | PADDED,
            Kind::Continuation => END_HEADERS,
            Kind::Settings | Kind::Ping => ACK,
            Kind::Priority | Kind::RstStream | Kind::GoAway | Kind::WindowUpdate => 0,
            Kind::Unknown => 0xff,
        }
    }

    /// Whether frames of this kind belong to a stream (non-zero id) or to the connection.
    fn on_stream(self) -> bool {
        matches!(
            self,
            Kind::Data
                | Kind::Headers
                | Kind::Priority
                | Kind::RstStream
                | Kind::PushPromise
                | Kind::Continuation
        )
    }

    pub(super) fn carries_header_block(self) -> bool {
        matches!(self, Kind::Headers | Kind::PushPromise | Kind::Continuation)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameHeader {
    len: u32,
    pub(super) kind: Kind,
    flags: u8,
    pub(super) stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes;
        Self {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            kind: Kind::of(kind),
            flags,
            // The high bit is reserved.
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        }
    }

    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Violations of RFC 9113 that make the rest of the connection unreadable.
    fn check(&self) -> Result<(), Malformed> {
        let fixed_len = match self.kind {
            Kind::Priority => Some(5),
            Kind::RstStream | Kind::WindowUpdate => Some(4),
            Kind::Ping => Some(8),
            _ => None,
        };
        if fixed_len.is_some_and(|len| len != self.len) {
            return Err(Malformed("frame of the wrong length"));
        }
        if self.kind == Kind::Settings
            && (!self.len.is_multiple_of(6) || self.has(flags::ACK) && self.len > 0)
        {
            return Err(Malformed("SETTINGS of the wrong length"));
        }
        let stream_expected = self.kind.on_stream();
        if self.kind != Kind::Unknown
            && self.kind != Kind::WindowUpdate
            && stream_expected != (self.stream != 0)
        {
            return Err(Malformed("frame on the wrong stream"));
        }
        Ok(())
    }

    /// Whether this looks like a frame a peer would send, judged strictly: used to find frames
    /// when there is no preface to go by.
    fn is_plausible(&self) -> bool {
        self.kind != Kind::Unknown
            && self.flags & !self.kind.known_flags() == 0
            && self.len <= MAX_GUESSED_FRAME_LEN
            && self.check().is_ok()
    }
}

/// Whether `bytes` start with HTTP/2 frames (a connection joined after its preface), or `None`
/// if more bytes are needed to tell.
pub(in crate::http) fn sniff_frames(bytes: &[u8]) -> Option<bool> {
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + FRAME_HEADER_LEN) else {
            // One whole plausible frame header is enough; a first one not yet whole is not.
            return (at > 0).then_some(true);
        };
        let header = FrameHeader::parse(header.try_into().ok()?);
        if !header.is_plausible() {
            return Some(false);
        }
        at += FRAME_HEADER_LEN + header.len as usize;
        if at >= bytes.len() {
            return Some(true);
        }
    }
}

/// The connection breaks RFC 9113: nothing after this can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) &'static str);

/// What one direction's frames say, in order.
#[derive(Debug)]
pub(super) enum Event<'a> {
    /// A whole frame other than DATA, as sent (padding included).
    Frame {
        header: FrameHeader,
        payload: Bytes,
        started: Arrival,
    },
    /// The next piece of a DATA frame's payload, padding removed.
    Data { stream: u32, bytes: &'a [u8] },
    /// A DATA frame ended.
    DataEnd { stream: u32, end_stream: bool },
    /// A frame other than DATA too large to keep was skipped.
    Skipped { header: FrameHeader },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadState {
    /// Matching the client preface; `matched` bytes of it seen. `optional`: a connection we
    /// believe joined mid-way may still turn out to start with it (reads seen out of order).
    Preface {
        matched: usize,
        optional: bool,
    },
    Header,
    /// Collecting the payload of a frame other than DATA.
    Payload(FrameHeader),
    /// Skipping the payload of a frame too large to keep.
    Skip {
        header: FrameHeader,
        left: u32,
    },
    /// A padded DATA frame's pad length byte is next.
    PadLength(FrameHeader),
    Data {
        stream: u32,
        end_stream: bool,
        data_left: u32,
        pad_left: u32,
    },
    /// Bytes were lost: waiting for a read that starts with a frame.
    Resync,
}

/// One direction of a connection: bytes in, frame events out. DATA payloads are passed on as
/// they arrive, so a streamed body keeps its arrival times and no DATA frame is buffered.
pub(super) struct FrameReader {
    state: ReadState,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload: BytesMut,
    started: Arrival,
}

impl FrameReader {
    pub(super) fn new(state: ReadState) -> Self {
        Self {
            state,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload: BytesMut::new(),
            started: Arrival { ts: 0, tid: 0 },
        }
    }

    /// Bytes before the next read were lost: frames are looked for again from a read's start.
    pub(super) fn lose_sync(&mut self) {
        self.state = ReadState::Resync;
        self.header_len = 0;
        self.payload = BytesMut::new();
    }

    /// At the start of a read: whether it may be parsed (false drops it while resynchronising).
    pub(super) fn accepts(&mut self, input: &[u8]) -> bool {
        if self.state != ReadState::Resync {
            return true;
        }
        if sniff_frames(input) == Some(true) {
            self.state = ReadState::Header;
        }
        self.state != ReadState::Resync
    }

    /// Consumes `input` up to the next event.
    pub(super) fn next<'a>(
        &mut self,
        input: &mut &'a [u8],
        at: Arrival,
        max_payload: usize,
    ) -> Result<Option<Event<'a>>, Malformed> {
        loop {
            if let Some(end) = self.frame_end_if_empty() {
                return Ok(Some(end));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let event = match self.state {
                ReadState::Preface { matched, optional } => {
                    self.read_preface(input, matched, optional)?
                }
                ReadState::Header => self.read_header(input, at, max_payload)?,
                ReadState::Payload(header) => self.read_payload(input, header),
                ReadState::Skip { header, left } => self.skip(input, header, left),
                ReadState::PadLength(header) => self.read_pad_length(input, header)?,
                ReadState::Data {
                    stream,
                    end_stream,
                    data_left,
                    pad_left,
                } => self.read_data(input, stream, end_stream, data_left, pad_left),
                ReadState::Resync => {
                    *input = &[];
                    None
                }
            };
            if event.is_some() {
                return Ok(event);
            }
        }
    }

    fn read_preface(
        &mut self,
        input: &mut &[u8],
        matched: usize,
        optional: bool,
    ) -> Result<Option<Event<'static>>, Malformed> {
        let expected = &PREFACE[matched..];
        let n = expected.len().min(input.len());
        if input[..n] != expected[..n] {
            if optional && matched == 0 {
                self.state = ReadState::Header;
                return Ok(None);
            }
            return Err(Malformed("not the HTTP/2 preface"));
        }
        *input = &input[n..];
        self.state = if matched + n == PREFACE.len() {
            ReadState::Header
        } else {
            ReadState::Preface {
                matched: matched + n,
                optional,
            }
        };
        Ok(None)
    }

    fn read_header(
        &mut self,
        input: &mut &[u8],
        at: Arrival,
        max_payload: usize,
    ) -> Result<Option<Event<'static>>, Malformed> {
        if self.header_len == 0 {
            self.started = at;
        }
        let n = (FRAME_HEADER_LEN - self.header_len).min(input.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
        self.header_len += n;
        *input = &input[n..];
        if self.header_len < FRAME_HEADER_LEN {
            return Ok(None);
        }
        self.header_len = 0;
        let header = FrameHeader::parse(&self.header);
        header.check()?;
        self.state = match header.kind {
            Kind::Data if header.has(flags::PADDED) => ReadState::PadLength(header),
            Kind::Data => ReadState::Data {
                stream: header.stream,
                end_stream: header.has(flags::END_STREAM),
                data_left: header.len,
                pad_left: 0,
            },
            Kind::Unknown => ReadState::Skip {
                header,
                left: header.len,
            },
            _ if header.len as usize > max_payload => ReadState::Skip {
                header,
                left: header.len,
            },
            _ => ReadState::Payload(header),
        };
        Ok(None)
    }

    /// A frame (or what is left of it) without payload ends without more input.
    fn frame_end_if_empty(&mut self) -> Option<Event<'static>> {
        match self.state {
            ReadState::Payload(header) if header.len == 0 => {
                self.read_payload(&mut &[][..], header)
            }
            ReadState::Skip { header, left: 0 } => {
                self.state = ReadState::Header;
                Some(Event::Skipped { header })
            }
            ReadState::Data {
                stream,
                end_stream,
                data_left: 0,
                pad_left: 0,
            } => {
                self.state = ReadState::Header;
                Some(Event::DataEnd { stream, end_stream })
            }
            _ => None,
        }
    }

    fn read_payload(&mut self, input: &mut &[u8], header: FrameHeader) -> Option<Event<'static>> {
        let missing = header.len as usize - self.payload.len();
        let n = missing.min(input.len());
        self.payload.extend_from_slice(&input[..n]);
        *input = &input[n..];
        if n < missing {
            return None;
        }
        self.state = ReadState::Header;
        Some(Event::Frame {
            header,
            payload: self.payload.split().freeze(),
            started: self.started,
        })
    }

    fn skip(
        &mut self,
        input: &mut &[u8],
        header: FrameHeader,
        left: u32,
    ) -> Option<Event<'static>> {
        let n = (left as usize).min(input.len());
        *input = &input[n..];
        self.state = ReadState::Skip {
            header,
            left: left - n as u32,
        };
        None
    }

    fn read_pad_length(
        &mut self,
        input: &mut &[u8],
        header: FrameHeader,
    ) -> Result<Option<Event<'static>>, Malformed> {
        let pad = u32::from(input[0]);
        *input = &input[1..];
        let Some(data_left) = header.len.checked_sub(1 + pad) else {
            return Err(Malformed("padding longer than the frame"));
        };
        self.state = ReadState::Data {
            stream: header.stream,
            end_stream: header.has(flags::END_STREAM),
            data_left,
            pad_left: pad,
        };
        Ok(None)
    }

    fn read_data<'a>(
        &mut self,
        input: &mut &'a [u8],
        stream: u32,
        end_stream: bool,
        data_left: u32,
        pad_left: u32,
    ) -> Option<Event<'a>> {
        if data_left > 0 {
            let n = (data_left as usize).min(input.len());
            let (bytes, rest) = input.split_at(n);
            *input = rest;
            self.state = ReadState::Data {
                stream,
                end_stream,
                data_left: data_left - n as u32,
                pad_left,
            };
            return Some(Event::Data { stream, bytes });
        }
        let n = (pad_left as usize).min(input.len());
        *input = &input[n..];
        self.state = ReadState::Data {
            stream,
            end_stream,
            data_left: 0,
            pad_left: pad_left - n as u32,
        };
        None
    }
}

/// The header block fragment of a HEADERS, PUSH_PROMISE or CONTINUATION payload.
pub(super) fn header_block_fragment(
    header: FrameHeader,
    mut payload: Bytes,
) -> Result<Bytes, Malformed> {
    let too_short = Malformed("header frame shorter than its fields");
    let padded = header.kind != Kind::Continuation && header.has(flags::PADDED);
    let pad = if padded {
        let pad = usize::from(*payload.first().ok_or(too_short)?);
        payload = payload.slice(1..);
        pad
    } else {
        0
    };
    let skip = match header.kind {
        Kind::Headers if header.has(flags::PRIORITY) => 5,
        // The promised stream id.
        Kind::PushPromise => 4,
        _ => 0,
    };
    let end = payload.len().checked_sub(pad).ok_or(too_short)?;
    if skip > end {
        return Err(too_short);
    }
    Ok(payload.slice(skip..end))
}

/// The SETTINGS_HEADER_TABLE_SIZE values in a SETTINGS payload, in order.
pub(super) fn header_table_sizes(payload: &[u8]) -> impl Iterator<Item = u32> + '_ {
    payload.chunks_exact(6).filter_map(|entry| {
        let [i0, i1, v0, v1, v2, v3] = entry.try_into().ok()?;
        (u16::from_be_bytes([i0, i1]) == SETTINGS_HEADER_TABLE_SIZE)
            .then(|| u32::from_be_bytes([v0, v1, v2, v3]))
    })
}

/// RFC 9113 §7 error code names.
pub(super) fn error_name(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("error {code:#x}"), |name| (*name).to_owned())
}
