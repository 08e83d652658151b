//! Newline-delimited JSON (Ollama's streams): one JSON value per line.
//!
//! A last line without its newline is still yielded: a cut-off stream is still evidence, and the
//! reader finds out whether it parses.
use super::TextFrame;

/// The non-blank lines of `body`, `\r\n` or `\n` terminated.
pub fn lines(body: &[u8]) -> impl Iterator<Item = TextFrame<'_>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        while start < body.len() {
            let rest = &body[start..];
            let (line, consumed) = match rest.iter().position(|&b| b == b'\n') {
                Some(newline) => (&rest[..newline], newline + 1),
                None => (rest, rest.len()),
            };
            let completed_at = start + consumed - 1;
            start += consumed;
            let line = line.trim_ascii();
            if !line.is_empty() {
                return Some(TextFrame {
                    data: line,
                    completed_at,
                });
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(body: &str) -> Vec<(&str, usize)> {
        lines(body.as_bytes())
            .map(|frame| {
                let text = std::str::from_utf8(frame.data).expect("utf-8 fixture");
                (text, frame.completed_at)
            })
            .collect()
    }

    #[test]
    fn splits_lines_and_reports_their_newline() {
        assert_eq!(
            collect("{\"a\":1}\n{\"b\":2}\r\n"),
            vec![("{\"a\":1}", 7), ("{\"b\":2}", 16)]
        );
    }

    #[test]
    fn skips_blank_lines_and_yields_an_unterminated_last_line() {
        assert_eq!(collect("\n\n{}\n\n{\"cut"), vec![("{}", 4), ("{\"cut", 10)]);
        assert_eq!(collect(""), vec![]);
    }
}
