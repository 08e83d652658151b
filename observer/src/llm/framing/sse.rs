//! Server-sent events, as the WHATWG HTML standard ("Server-sent events") defines the stream format.
//!
//! One deliberate deviation: an event still pending when the body ends (no closing blank line)
//! is dispatched, because servers often close without one and a cut-off stream is still evidence.

use std::borrow::Cow;

/// One dispatched event. Its fields borrow from the body unless they had to be rebuilt
/// (several `data:` lines, or bytes that are not UTF-8): most events are one line of JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field; `None` means the default type, "message".
    pub event: Option<Cow<'a, str>>,
    /// The `data:` lines, joined with "\n".
    pub data: Cow<'a, str>,
    /// Offset of the event's last byte in the body (the end of the blank line that dispatched
    /// it), for `Body::time_at`.
    pub completed_at: usize,
}

/// The events of an event-stream body, in order.
pub fn events(body: &[u8]) -> Events<'_> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let pos = if body.starts_with(BOM) { BOM.len() } else { 0 };
    Events { body, pos }
}

pub struct Events<'a> {
    body: &'a [u8],
    pos: usize,
}

/// Fields gathered since the last dispatch.
#[derive(Default)]
struct Pending<'a> {
    event: Option<Cow<'a, str>>,
    data: Cow<'a, str>,
    has_data: bool,
}

impl<'a> Pending<'a> {
    fn apply(&mut self, line: &'a [u8]) {
        if line.starts_with(b":") {
            return; // comment, e.g. OpenRouter's ": OPENROUTER PROCESSING" keep-alives
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_data {
                    let data = self.data.to_mut();
                    data.push('\n');
                    data.push_str(&value);
                } else {
                    self.data = value;
                }
                self.has_data = true;
            }
            b"event" => self.event = (!value.is_empty()).then_some(value),
            // `id` and `retry` only matter to a reconnecting client.
            _ => {}
        }
    }

    fn dispatch(self, completed_at: usize) -> Option<SseEvent<'a>> {
        self.has_data.then_some(SseEvent {
            event: self.event,
            data: self.data,
            completed_at,
        })
    }
}

impl<'a> Events<'a> {
    /// The next line and the offset of its last byte (line end included); `\r\n`, `\n` and `\r`
    /// all end a line. The last line of the body may have no line end.
    fn next_line(&mut self) -> (&'a [u8], usize) {
        let rest = &self.body[self.pos..];
        let (line, terminator) = match memchr::memchr2(b'\n', b'\r', rest) {
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => (&rest[..i], 2),
            Some(i) => (&rest[..i], 1),
            None => (rest, 0),
        };
        self.pos += line.len() + terminator;
        (line, self.pos - 1)
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = SseEvent<'a>;

    fn next(&mut self) -> Option<SseEvent<'a>> {
        let mut pending = Pending::default();
        while self.pos < self.body.len() {
            let (line, last_byte) = self.next_line();
            if line.is_empty() {
                if let Some(event) = std::mem::take(&mut pending).dispatch(last_byte) {
                    return Some(event);
                }
            } else {
                pending.apply(line);
            }
        }
        pending.dispatch(self.body.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(body: &str) -> Vec<(Option<String>, String)> {
        let owned = |e: SseEvent| (e.event.map(Cow::into_owned), e.data.into_owned());
        events(body.as_bytes()).map(owned).collect()
    }

    fn message(data: &str) -> (Option<String>, String) {
        (None, data.to_owned())
    }

    #[test]
    fn joins_data_lines_and_reads_event_type() {
        let body = "event: delta\ndata: a\ndata:b\ndata:  c\n\ndata: second\n\n";
        assert_eq!(
            collect(body),
            vec![(Some("delta".into()), "a\nb\n c".into()), message("second")]
        );
    }

    #[test]
    fn accepts_every_line_ending() {
        for body in [
            "data: x\r\n\r\ndata: y\r\n\r\n",
            "data: x\n\ndata: y\n\n",
            "data: x\r\rdata: y\r\r",
            "data: x\r\n\ndata: y\r\r\n",
        ] {
            assert_eq!(collect(body), vec![message("x"), message("y")], "{body:?}");
        }
    }

    #[test]
    fn ignores_comments_and_unknown_fields_and_dataless_events() {
        let body = ": OPENROUTER PROCESSING\n\nid: 7\nretry: 10\nevent: ping\n\n:c\ndata\n\n";
        assert_eq!(collect(body), vec![message("")]);
    }

    #[test]
    fn dispatches_the_final_event_without_a_blank_line() {
        assert_eq!(
            collect("data: a\n\ndata: b\n"),
            vec![message("a"), message("b")]
        );
        assert_eq!(
            collect("data: a\n\ndata: b"),
            vec![message("a"), message("b")]
        );
    }

    #[test]
    fn strips_a_leading_byte_order_mark() {
        assert_eq!(collect("\u{feff}data: a\n\n"), vec![message("a")]);
    }

    #[test]
    fn reports_the_offset_of_the_dispatching_line_end() {
        let body = "data: a\n\ndata: b\r\n\r\ndata: c";
        let ends: Vec<usize> = events(body.as_bytes()).map(|e| e.completed_at).collect();
        assert_eq!(ends, vec![8, 19, body.len() - 1]);
    }

    #[test]
    fn survives_arbitrary_bytes() {
        let noise: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert!(events(&noise).all(|e| e.completed_at < noise.len()));
        assert_eq!(events(b"").count(), 0);
    }
}
