//! The streaming body framings on their own: SSE, NDJSON, JSON arrays and the AWS event stream.
//! Each frame must end inside the body, after the one before it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use observer::llm::framing::{eventstream, json_array, ndjson, sse};
use observer_fuzz::seeds;

fuzz_target!(
    init: seeds::write_into_corpus(seeds::framings),
    |body: &[u8]| {
        check_ends(body, sse::events(body).map(|event| event.completed_at));
        check_ends(body, ndjson::lines(body).map(|line| line.completed_at));
        check_ends(body, json_array::elements(body).map(|element| element.completed_at));
        let mut messages = eventstream::messages(body);
        let mut ends = Vec::new();
        for message in &mut messages {
            let _ = message.header_str(":event-type");
            ends.push(message.completed_at);
        }
        check_ends(body, ends.into_iter());
        let _ = (messages.corrupt_messages(), messages.problem());
    }
);

fn check_ends(body: &[u8], ends: impl Iterator<Item = usize>) {
    let mut previous = None;
    for end in ends {
        assert!(end < body.len(), "a frame ends at {end}, past the body");
        assert!(
            previous < Some(end),
            "frames out of order: {previous:?} then {end}"
        );
        previous = Some(end);
    }
}
