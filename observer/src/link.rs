//! The link stage: gives each span its place in a trace.
//!
//! A request that carries a W3C `traceparent` joins that trace as a child of the caller's span
//! (the application is already traced: we complete its trace without code). Every other call
//! starts a trace of its own.
use rand::Rng;

use crate::{http::Exchange, span::Span};

#[derive(Default)]
pub struct Linker;

impl Linker {
    pub fn link(&mut self, exchange: &Exchange, mut span: Span) -> Span {
        let mut rng = rand::rng();
        match exchange
            .request
            .headers
            .get("traceparent")
            .and_then(parse_traceparent)
        {
            Some((trace_id, parent)) => {
                span.trace_id = trace_id;
                span.parent_span_id = Some(parent);
                span.attributes
                    .insert("observer.link.reason".into(), "traceparent".into());
            }
            None => span.trace_id = format!("{:032x}", rng.random::<u128>().max(1)),
        }
        span.span_id = format!("{:016x}", rng.random::<u64>().max(1));
        span
    }
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; all-zero ids are invalid.
fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2)
        || version == "ff"
        || !hex(trace_id, 32)
        || !hex(span_id, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace_id.to_ascii_lowercase(), span_id.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_w3c_traceparent() {
        let parsed = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            parsed,
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
    }
}
