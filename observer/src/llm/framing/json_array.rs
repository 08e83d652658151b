//! A JSON array streamed element by element (Gemini's `streamGenerateContent` without
//! `alt=sse`): `[{...},\r\n{...}]`. Yields each top-level element once its last byte arrived;
//! an element cut off by the body's end is not yielded.
use super::TextFrame;

/// The complete top-level elements of a (possibly cut-off) JSON array body.
pub fn elements(body: &[u8]) -> Elements<'_> {
    let start = body
        .iter()
        .position(|&b| b == b'[')
        .map_or(body.len(), |open| open + 1);
    Elements { body, pos: start }
}

pub struct Elements<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TextFrame<'a>;

    fn next(&mut self) -> Option<TextFrame<'a>> {
        let rest = &self.body[self.pos..];
        let skip = rest
            .iter()
            .position(|&b| !(b.is_ascii_whitespace() || b == b','))?;
        let start = self.pos + skip;
        if self.body[start] == b']' {
            self.pos = self.body.len();
            return None;
        }
        let end = element_end(&self.body[start..])? + start;
        self.pos = end + 1;
        Some(TextFrame {
            data: &self.body[start..=end],
            completed_at: end,
        })
    }
}

/// Offset of the last byte of the value `text` starts with: the bracket closing an object or
/// array, or the byte before the separator ending a scalar. `None` when the value is cut off.
fn element_end(text: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, &byte) in text.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some(at);
                }
            }
            // A scalar element (not sent by any API we read) or a stray closer.
            b',' | b']' | b'}' if depth == 0 => return at.checked_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(body: &str) -> Vec<(&str, usize)> {
        elements(body.as_bytes())
            .map(|frame| {
                let text = std::str::from_utf8(frame.data).expect("utf-8 fixture");
                (text, frame.completed_at)
            })
            .collect()
    }

    #[test]
    fn yields_each_element_with_its_closing_offset() {
        let body = "[{\"a\": \"}]\\\"\"},\r\n{\"b\": [1, {}]}\n]";
        assert_eq!(
            collect(body),
            vec![("{\"a\": \"}]\\\"\"}", 13), ("{\"b\": [1, {}]}", 30)]
        );
    }

    #[test]
    fn a_cut_off_element_is_not_yielded() {
        assert_eq!(
            collect("[{\"a\": 1},\n{\"b\": \"x"),
            vec![("{\"a\": 1}", 8)]
        );
        assert_eq!(collect("[{\"a\": 1}"), vec![("{\"a\": 1}", 8)]);
        assert_eq!(collect(""), vec![]);
        assert_eq!(collect("[]"), vec![]);
    }

    #[test]
    fn survives_arbitrary_bytes() {
        let noise: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert!(elements(&noise).all(|e| e.completed_at < noise.len()));
        assert!(elements(b"[,,,]]]}}}").all(|e| e.completed_at < 10));
    }
}
