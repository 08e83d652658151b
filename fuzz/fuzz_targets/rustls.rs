//! rustls without symbols: the send and the decrypters located by the shape of the record
//! layer's calls through its ciphers, in arbitrary machine code beside rustls-shaped data and
//! unwind tables. Whatever the code, the locator answers within its bounds, and only ever
//! with addresses inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use observer_fuzz::{executables, seeds};

fuzz_target!(
    init: seeds::write_into_corpus(executables::rustls_seeds),
    |code: &[u8]| {
        executables::analyse(&executables::rustls_executable(code));
    }
);
