//! BoringSSL without symbols: `SSL_read`/`SSL_write` located by the error sites that name
//! ssl_lib.cc, in arbitrary machine code. Whatever the code, the locator answers within its
//! bounds, and only ever with addresses inside it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use observer_fuzz::{executables, seeds};

fuzz_target!(
    init: seeds::write_into_corpus(executables::boringssl_seeds),
    |code: &[u8]| {
        executables::analyse(&executables::boringssl_executable(code));
    }
);
