//! HPACK (RFC 7541) per direction, over the `loona-hpack` decoder: header blocks decoded into
//! heads, and a dynamic table that is reported unknown rather than guessed.
use loona_hpack::Decoder;
use loona_hpack::decoder::DecoderError;

use crate::http::common::{Cx, MAX_HEADERS, StartKind, redacted_header};
use crate::http::types::Headers;
use crate::redact;

/// Largest HPACK dynamic table we keep per direction, whatever the peer allows.
const MAX_HPACK_TABLE: usize = 64 << 10;

/// One direction's HPACK decoder, and whether its dynamic table can still be trusted.
pub(super) struct Hpack {
    decoder: Decoder<'static>,
    /// The capture started after the preface: entries of the peer's table may be missing.
    joined_mid: bool,
    /// Why the table is no longer known: later header blocks are not decoded.
    pub(super) unknown: Option<&'static str>,
}

impl Hpack {
    pub(super) fn new(joined_mid: bool) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_HPACK_TABLE);
        Self {
            decoder,
            joined_mid,
            unknown: None,
        }
    }

    /// The peer allowed this direction's encoder a table of `size` bytes.
    pub(super) fn allow_table_size(&mut self, size: u32) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        self.decoder
            .set_max_allowed_table_size(size.min(MAX_HPACK_TABLE));
    }

    /// Decodes one header block, keeping what the limits allow.
    pub(super) fn decode(&mut self, block: &[u8], max_bytes: usize, cx: &mut Cx) -> DecodedHead {
        let mut head = DecodedHead::new(max_bytes);
        if let Some(why) = self.unknown {
            head.problem = Some(format!("hpack state unknown ({why})"));
            return head;
        }
        let result = self
            .decoder
            .decode_with_cb(block, |name, value| head.push(&name, &value));
        if let Err(err) = result {
            let why = match err {
                DecoderError::HeaderIndexOutOfBounds if self.joined_mid => "joined mid-connection",
                _ => {
                    cx.stats.parse_failures += 1;
                    log::debug!("{:?}: hpack: {err}", cx.conn);
                    "malformed header block"
                }
            };
            // Entries this block would have added are missing: later indices would be wrong.
            self.unknown = Some(why);
            head.problem = Some(format!("hpack state unknown ({why})"));
        }
        head
    }
}

/// A decoded header block: pseudo-header fields apart, the rest redacted in wire order.
#[derive(Default)]
pub(super) struct DecodedHead {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) status: u16,
    pub(super) headers: Headers,
    /// Decoded bytes still allowed in `headers`.
    pub(super) budget: usize,
    pub(super) problem: Option<String>,
}

impl DecodedHead {
    fn new(max_bytes: usize) -> Self {
        Self {
            budget: max_bytes,
            ..Self::default()
        }
    }

    /// A head that was never seen (its HEADERS frame came before we attached).
    pub(super) fn not_seen() -> Self {
        Self {
            problem: Some("head not seen (joined mid-connection)".to_owned()),
            ..Self::default()
        }
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len();
        if size > self.budget || self.headers.0.len() >= MAX_HEADERS {
            self.problem
                .get_or_insert_with(|| "header list larger than the limit".to_owned());
            return;
        }
        self.budget -= size;
        let text = || String::from_utf8_lossy(value);
        match name {
            b":method" => self.method = text().into_owned(),
            b":path" => self.target = redact::target(&text()).into_owned(),
            b":status" => self.status = text().parse().unwrap_or_default(),
            // Downstream stages read the host from a Host header, as in HTTP/1.
            b":authority" => self.headers.0.push(redacted_header("host", value)),
            // Other pseudo-headers (:scheme, :protocol) have no HTTP/1 counterpart.
            _ if name.starts_with(b":") => {}
            _ => self
                .headers
                .0
                .push(redacted_header(&String::from_utf8_lossy(name), value)),
        }
    }

    pub(super) fn is_interim_response(&self) -> bool {
        StartKind::Response {
            status: self.status,
        }
        .is_interim()
    }
}
