//! One process's TLS calls on two connections, arbitrary bytes split at arbitrary points (with
//! losses, truncations, reordering and pauses), through the whole pipeline: reassembly, HTTP/1
//! (and whatever the protocol sniffing makes of the bytes), the providers, linking, the sinks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: observer_fuzz::seeds::write_into_corpus(observer_fuzz::seeds::http1),
    |input: &[u8]| {
        let calls = observer_fuzz::calls(input);
        observer_fuzz::run_pipeline(observer_fuzz::capture_events(&calls, None));
    }
);
