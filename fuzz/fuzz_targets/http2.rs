//! As `http1`, with each connection opened by the HTTP/2 client preface: arbitrary frames both
//! ways through the HTTP/2 decoder (HPACK, streams, flow of DATA), then the rest of the pipeline.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: observer_fuzz::seeds::write_into_corpus(observer_fuzz::seeds::http2),
    |input: &[u8]| {
        let calls = observer_fuzz::calls(input);
        let events = observer_fuzz::capture_events(&calls, Some(observer_fuzz::H2_PREFACE));
        observer_fuzz::run_pipeline(events);
    }
);
