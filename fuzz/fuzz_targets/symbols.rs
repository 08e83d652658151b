//! Symbol tables: OpenSSL, GnuTLS and rustls functions found by name (rustls demangled), the
//! cheaper sites OpenSSL 3's exports forward to, the C library's wrappers, arbitrary names over
//! arbitrary code.
#![no_main]
use libfuzzer_sys::fuzz_target;
use observer_fuzz::{executables, seeds};

fuzz_target!(
    init: seeds::write_into_corpus(executables::symbols_seeds),
    |input: &[u8]| {
        executables::analyse(&executables::symbols_executable(input));
    }
);
