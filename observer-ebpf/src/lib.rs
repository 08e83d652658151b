//! Nothing: the probes are this crate's binary (`src/main.rs`, BPF target only). The library
//! exists so that `observer` can depend on the crate and be rebuilt when the probes change.
#![no_std]
