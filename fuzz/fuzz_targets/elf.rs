//! Any file as discovery meets it: the executables and libraries of every process on the host,
//! whoever wrote them (truncated, lying headers, huge counts, names without end). The analysis
//! must end within its bounds, never panic, and probe nothing outside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use observer_fuzz::{executables, seeds};

fuzz_target!(
    init: seeds::write_into_corpus(executables::elf_seeds),
    |file: &[u8]| {
        executables::analyse(file);
    }
);
