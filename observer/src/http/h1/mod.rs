//! HTTP/1.x: message framing per direction, and request/response pairing per connection.
mod head;
mod pairing;
mod reader;

pub(super) use head::{Role, StartLine, sniff_start_line};
pub(super) use pairing::Http1Conn;
