//! HTTP/2 client connections (RFC 9113): frames per direction, HPACK per direction, and one
//! exchange per stream.
//!
//! Egress carries the client's preface and frames (requests), ingress the server's (responses).
//! A connection joined after its preface is recognised by its frame headers; its HPACK dynamic
//! tables are then partly unknown, so a header block that refers to an entry we never saw is
//! reported as such, never guessed.
mod connection;
mod frame;
mod hpack;
mod stream;
mod streams;

pub(super) use connection::Http2Conn;
pub(super) use frame::{PREFACE, sniff_frames};
