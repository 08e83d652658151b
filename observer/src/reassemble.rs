//! Per-connection ordered byte streams.
