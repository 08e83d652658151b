//! Every provider's request and response parsers: a POST to the input's host and path with the
//! input's body, answered by the input's raw HTTP/1.1 response (head and body, so status, media
//! type, content encoding and framing all vary), read in pieces of the input's size, through the
//! whole pipeline. The request carries an API key that must never reach a sink.
#![no_main]
use libfuzzer_sys::fuzz_target;
use observer_fuzz::{Call, capture_events, flag, run_pipeline, seeds};

const API_KEY: &[u8] = b"sk-fuzz-6b0e2c91d7";

fuzz_target!(
    init: seeds::write_into_corpus(seeds::providers),
    |input: &[u8]| {
        // First byte: the response's read size in 16-byte units (0: one read).
        let Some((&read_size, rest)) = input.split_first() else {
            return;
        };
        // Then `HOST PATH\n`, the request body, 0xFF, the response.
        let Some((line, rest)) = split_once(rest, b'\n') else {
            return;
        };
        let Some((host, path)) = split_once(line, b' ') else {
            return;
        };
        let (body, response) = split_once(rest, seeds::REQUEST_END).unwrap_or((rest, &[]));
        let request = [
            b"POST ",
            path,
            b" HTTP/1.1\r\nHost: ",
            host,
            b"\r\nAuthorization: Bearer ",
            API_KEY,
            b"\r\nContent-Type: application/json\r\nContent-Length: ",
            body.len().to_string().as_bytes(),
            b"\r\n\r\n",
            body,
        ]
        .concat();
        let read_size = match usize::from(read_size) * 16 {
            0 => response.len().max(1),
            size => size,
        };
        let calls: Vec<Call> = std::iter::once(Call { flags: 0, data: &request })
            .chain(response.chunks(read_size).map(|data| Call {
                flags: flag::INGRESS,
                data,
            }))
            .collect();
        let written = run_pipeline(capture_events(&calls, None));
        if !contains(input, API_KEY) {
            assert!(!contains(&written, API_KEY), "the API key reached a sink");
        }
    }
);

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
