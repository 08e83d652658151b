//! Go programs: the build info (the version) and the runtime's function table (`.gopclntab`),
//! found by section name or by magic, then the functions' code (stack checks, RETs).
#![no_main]
use libfuzzer_sys::fuzz_target;
use observer_fuzz::{executables, seeds};

fuzz_target!(
    init: seeds::write_into_corpus(executables::go_seeds),
    |input: &[u8]| {
        executables::analyse(&executables::go_executable(input));
    }
);
