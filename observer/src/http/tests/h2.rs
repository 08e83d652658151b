//! HTTP/2 byte streams built frame by frame (HPACK-encoded with the decoder's own crate) and fed
//! through `ConnectionStage` as a traced client's writes and reads.
use loona_hpack::Encoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length fits");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = entries
        .iter()
        .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat())
        .collect();
    frame(kind::SETTINGS, 0, 0, &payload)
}

fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    frame(
        kind::DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
        bytes,
    )
}

/// One side's HPACK encoder: header blocks share its dynamic table, as on a real connection.
struct Side(Encoder<'static>);

impl Side {
    fn new() -> Self {
        Self(Encoder::new())
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.0
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(kind::HEADERS, flags, stream, &self.block(fields))
    }
}

fn post(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".to_owned()),
        (":scheme", "https".to_owned()),
        (":path", path.to_owned()),
        (":authority", "api.openai.com".to_owned()),
        ("content-type", "application/json".to_owned()),
        // Not in the static table: encoders index it, so later requests refer to the entry.
        ("x-client", "observer-test".to_owned()),
    ]
}

fn fields<'a>(owned: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    owned.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

const OK_JSON: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/json")];

/// A client connection: preface and SETTINGS written, the server's SETTINGS read.
struct Conn {
    wire: Wire,
    client: Side,
    server: Side,
}

impl Conn {
    fn open() -> Self {
        let mut wire = Wire::new();
        wire.write(&[PREFACE, &settings(&[(0x2, 0), (0x4, 65_535)])].concat())
            .read(&[settings(&[(0x3, 100)]), frame(kind::SETTINGS, 1, 0, &[])].concat())
            .write(&frame(kind::SETTINGS, 1, 0, &[]));
        Self {
            wire,
            client: Side::new(),
            server: Side::new(),
        }
    }

    /// Writes a POST to `path` with `body`, whole, on `stream`.
    fn post(&mut self, stream: u32, path: &str, body: &[u8]) -> &mut Self {
        let head = self.client.headers(stream, &fields(&post(path)), false);
        self.wire.write(&[head, data(stream, body, true)].concat());
        self
    }

    fn respond(&mut self, stream: u32, head: &[(&str, &str)], body: &[u8]) -> &mut Self {
        let head = self.server.headers(stream, head, false);
        self.wire.read(&[head, data(stream, body, true)].concat());
        self
    }
}

fn body_of(ex: &Exchange) -> &str {
    body_text(&response_of(ex).body)
}

#[test]
fn one_request_and_response_map_pseudo_headers_and_redact() {
    let mut conn = Conn::open();
    let mut head = post("/v1/chat/completions?api_key=sk-query");
    head.push(("authorization", "Bearer sk-secret".to_owned()));
    let request = conn.client.headers(1, &fields(&head), false);
    conn.wire.send(
        Direction::Egress,
        &[request, data(1, br#"{"model":"m"}"#, true)].concat(),
        99,
    );
    conn.respond(1, OK_JSON, br#"{"id":"x"}"#);

    let wire = &conn.wire;
    assert_eq!(wire.out.len(), 1);
    let ex = &wire.out[0];
    assert_eq!(ex.end, ExchangeEnd::Complete);
    assert_eq!(ex.tid, 99);
    assert_eq!(ex.request.method, "POST");
    assert_eq!(ex.request.target, "/v1/chat/completions?api_key=[REDACTED]");
    assert_eq!(ex.request.headers.get("host"), Some("api.openai.com"));
    assert_eq!(
        ex.request.headers.get("authorization"),
        Some("Bearer [REDACTED]")
    );
    assert!(
        ex.request
            .headers
            .0
            .iter()
            .all(|(n, _)| !n.starts_with(':'))
    );
    assert_eq!(body_text(&ex.request.body), r#"{"model":"m"}"#);
    assert_eq!(response_of(ex).status, 200);
    assert_eq!(body_of(ex), r#"{"id":"x"}"#);
    assert_eq!(ex.request.body.problem, None);
    assert_eq!(response_of(ex).body.problem, None);
    let stats = wire.stats();
    assert_eq!(
        (
            stats.http2_connections,
            stats.http2_streams,
            stats.exchanges
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.parse_failures, 0);
}

#[test]
fn multiplexed_streams_with_interleaved_data_stay_apart() {
    let mut conn = Conn::open();
    for (stream, tid) in [(1, 11), (3, 13), (5, 15)] {
        let head = conn
            .client
            .headers(stream, &fields(&post(&format!("/s{stream}"))), false);
        let body = format!("request {stream}");
        conn.wire.send(
            Direction::Egress,
            &[head, data(stream, body.as_bytes(), true)].concat(),
            tid,
        );
    }
    // Heads in reverse order, then DATA frames round-robin across the streams.
    for stream in [5, 3, 1] {
        let head = conn.server.headers(stream, OK_JSON, false);
        conn.wire.read(&head);
    }
    for piece in 0..4 {
        let mut read = Vec::new();
        for stream in [1, 3, 5] {
            let text = format!("[{stream}.{piece}]");
            read.extend(data(stream, text.as_bytes(), piece == 3));
        }
        conn.wire.read(&read);
    }

    let mut out = conn.wire.out.clone();
    assert_eq!(out.len(), 3);
    out.sort_by(|a, b| a.request.target.cmp(&b.request.target));
    for (ex, (stream, tid)) in out.iter().zip([(1, 11), (3, 13), (5, 15)]) {
        assert_eq!(ex.request.target, format!("/s{stream}"));
        assert_eq!(ex.tid, tid);
        assert_eq!(body_text(&ex.request.body), format!("request {stream}"));
        let expected: String = (0..4).map(|p| format!("[{stream}.{p}]")).collect();
        assert_eq!(body_of(ex), expected);
        assert_eq!(ex.end, ExchangeEnd::Complete);
    }
}

#[test]
fn sse_over_many_data_frames_keeps_arrival_times() {
    let mut conn = Conn::open();
    conn.post(1, "/v1/chat/completions", br#"{"stream":true}"#);
    let head = conn.server.headers(
        1,
        &[(":status", "200"), ("content-type", "text/event-stream")],
        false,
    );
    conn.wire.read(&head);
    let events: Vec<String> = (0..5)
        .map(|i| format!("data: {{\"delta\":\"{i}\"}}\n\n"))
        .collect();
    for event in &events {
        conn.wire.read(&data(1, event.as_bytes(), false));
    }
    conn.wire.read(&data(1, b"data: [DONE]\n\n", true));

    let ex = &conn.wire.out[0];
    let body = &response_of(ex).body;
    assert_eq!(ex.end, ExchangeEnd::Complete);
    assert_eq!(body.parts.len(), 6);
    assert!(body.parts.windows(2).all(|w| w[0].ts < w[1].ts));
    assert_eq!(body.time_at(0), Some(response_of(ex).ts_start + MS));
    assert!(body_text(body).ends_with("data: [DONE]\n\n"));
}

#[test]
fn gzip_body_split_across_frames_is_decoded() {
    let mut conn = Conn::open();
    conn.post(1, "/v1/embeddings", b"{}");
    let text = "embedding ".repeat(500);
    let compressed = gzip(text.as_bytes());
    let head = conn.server.headers(
        1,
        &[(":status", "200"), ("content-encoding", "gzip")],
        false,
    );
    conn.wire.read(&head);
    let (first, second) = compressed.split_at(compressed.len() / 2);
    conn.wire
        .read(&data(1, first, false))
        .read(&data(1, second, true));
    let ex = &conn.wire.out[0];
    assert_eq!(body_of(ex), text);
    assert_eq!(response_of(ex).body.problem, None);
}

#[test]
fn large_body_in_flow_control_sized_frames() {
    let mut conn = Conn::open();
    conn.post(1, "/v1/files", b"{}");
    let body: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let mut bytes = conn.server.headers(1, OK_JSON, false);
    let frames: Vec<&[u8]> = body.chunks(16 * 1024).collect();
    for (i, piece) in frames.iter().enumerate() {
        bytes.extend(data(1, piece, i + 1 == frames.len()));
    }
    // TLS reads do not follow frame boundaries.
    for read in bytes.chunks(5000) {
        conn.wire.read(read);
    }
    let ex = &conn.wire.out[0];
    assert_eq!(&response_of(ex).body.data[..], &body[..]);
    assert_eq!(ex.end, ExchangeEnd::Complete);
}

#[test]
fn trailers_end_the_response_and_are_not_kept() {
    let mut conn = Conn::open();
    conn.post(1, "/svc/Method", b"req");
    let head = conn.server.headers(1, OK_JSON, false);
    let trailers = conn.server.headers(1, &[("x-trailer", "done")], true);
    conn.wire
        .read(&[head, data(1, b"partial", false)].concat())
        .read(&trailers);
    assert_eq!(conn.wire.out.len(), 1);
    let ex = &conn.wire.out[0];
    assert_eq!(ex.end, ExchangeEnd::Complete);
    assert_eq!(body_of(ex), "partial");
    assert_eq!(response_of(ex).headers.get("x-trailer"), None);
}

#[test]
fn rst_stream_mid_response_cuts_only_that_stream() {
    let mut conn = Conn::open();
    conn.post(1, "/first", b"{}").post(3, "/second", b"{}");
    let head = conn.server.headers(1, OK_JSON, false);
    conn.wire
        .read(&[head, data(1, b"data: 1\n\n", false)].concat());
    // The client gives up (CANCEL = 0x8).
    conn.wire
        .write(&frame(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    conn.respond(3, OK_JSON, b"second");

    let out = &conn.wire.out;
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].request.target, "/first");
    assert_eq!(out[0].end, ExchangeEnd::ConnectionClosed);
    assert_eq!(
        response_of(&out[0]).body.problem.as_deref(),
        Some("stream reset by the client: CANCEL")
    );
    assert_eq!(body_of(&out[0]), "data: 1\n\n");
    assert_eq!(out[1].request.target, "/second");
    assert_eq!(out[1].end, ExchangeEnd::Complete);
    // Late frames of the reset stream open nothing.
    conn.wire.read(&data(1, b"late", true)).end();
    assert_eq!(conn.wire.out.len(), 2);
}

#[test]
fn continuation_padding_and_priority_are_read_past() {
    let mut conn = Conn::open();
    let block = conn.client.block(&fields(&post("/v1/responses")));
    let (a, rest) = block.split_at(block.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    // HEADERS: pad length, priority (5 bytes), fragment, padding.
    let headers_payload = [&[3u8][..], &[0, 0, 0, 0, 16], a, &[0, 0, 0]].concat();
    let request = [
        frame(kind::HEADERS, PADDED | PRIORITY_FLAG, 1, &headers_payload),
        frame(kind::CONTINUATION, 0, 1, b),
        frame(kind::CONTINUATION, END_HEADERS, 1, c),
        frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 16]),
        frame(kind::DATA, PADDED | END_STREAM, 1, b"\x04body\0\0\0\0"),
    ]
    .concat();
    conn.wire.write(&request);
    conn.wire.read(
        &[
            frame(kind::WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()),
            frame(kind::PING, 0, 0, &[1; 8]),
        ]
        .concat(),
    );
    conn.respond(1, OK_JSON, b"{}");
    let ex = &conn.wire.out[0];
    assert_eq!(ex.request.target, "/v1/responses");
    assert_eq!(
        ex.request.headers.get("content-type"),
        Some("application/json")
    );
    assert_eq!(body_text(&ex.request.body), "body");
    assert_eq!(ex.end, ExchangeEnd::Complete);
}

#[test]
fn huffman_coded_fields_and_table_size_updates_decode() {
    let mut wire = Wire::new();
    // The client allows the server a 256-byte table; RFC 7541 C.4.1 is a Huffman-coded request.
    wire.write(&[PREFACE, &settings(&[(0x1, 256)])].concat());
    let huffman_block = b"\x82\x86\x84\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff";
    wire.write(&frame(
        kind::HEADERS,
        END_HEADERS | END_STREAM,
        1,
        huffman_block,
    ));
    // The server shrinks its table to 256 bytes (a size update opens the block).
    let mut server = Side::new();
    server.0.set_max_table_size(256);
    let block = [&[0x3f, 0xe1, 0x01][..], &server.block(OK_JSON)].concat();
    wire.read(&frame(kind::HEADERS, END_HEADERS | END_STREAM, 1, &block));

    let ex = &wire.out[0];
    assert_eq!(ex.request.method, "GET");
    assert_eq!(ex.request.target, "/");
    assert_eq!(ex.request.headers.get("host"), Some("www.example.com"));
    assert_eq!(response_of(ex).status, 200);
    assert_eq!(response_of(ex).body.problem, None);

    // A size update past what the client allowed breaks the server's HPACK stream.
    let block = [&[0x3f, 0xe1, 0x1f][..], &server.block(OK_JSON)].concat();
    wire.write(&frame(
        kind::HEADERS,
        END_HEADERS | END_STREAM,
        3,
        huffman_block,
    ));
    wire.read(&frame(kind::HEADERS, END_HEADERS | END_STREAM, 3, &block));
    let ex = &wire.out[1];
    assert_eq!(response_of(ex).status, 0);
    assert!(
        response_of(ex)
            .body
            .problem
            .as_deref()
            .is_some_and(|p| p.starts_with("hpack state unknown"))
    );
}

#[test]
fn interim_response_and_server_push_are_skipped() {
    let mut conn = Conn::open();
    conn.post(1, "/v1/chat/completions", b"{}");
    let interim = conn.server.headers(1, &[(":status", "103")], false);
    let promise = [
        &2u32.to_be_bytes()[..],
        &conn.server.block(&[(":path", "/pushed")]),
    ]
    .concat();
    conn.wire
        .read(&[interim, frame(kind::PUSH_PROMISE, END_HEADERS, 1, &promise)].concat());
    conn.wire.read(&conn.server.headers(2, OK_JSON, false));
    conn.wire.read(&data(2, b"pushed", true));
    conn.respond(1, OK_JSON, b"real");
    assert_eq!(conn.wire.out.len(), 1);
    assert_eq!(response_of(&conn.wire.out[0]).status, 200);
    assert_eq!(body_of(&conn.wire.out[0]), "real");
}

/// A connection whose first requests happened before we attached: `client`/`server` hold the
/// dynamic table entries they made.
fn joined_mid_connection() -> Conn {
    let mut conn = Conn::open();
    let mut unseen = Wire::new();
    let first = conn
        .client
        .headers(1, &fields(&post("/v1/chat/completions")), true);
    unseen.write(&first);
    let response = conn.server.headers(1, OK_JSON, true);
    unseen.read(&response);
    Conn {
        wire: Wire::new(),
        ..conn
    }
}

#[test]
fn joined_mid_connection_reports_unknown_hpack_state_without_inventing_values() {
    let mut conn = joined_mid_connection();
    // Stream 3's head refers to dynamic entries we never saw; its body is still ours.
    conn.post(3, "/v1/chat/completions", br#"{"model":"m"}"#);
    conn.respond(3, OK_JSON, br#"{"id":"y"}"#);
    let stats = conn.wire.stats();
    assert_eq!(stats.http2_connections, 1);
    let ex = &conn.wire.out[0];
    assert_eq!(
        ex.request.body.problem.as_deref(),
        Some("hpack state unknown (joined mid-connection)")
    );
    // Fields before the unknown entry are real; nothing after it is guessed.
    assert_eq!(ex.request.target, "/v1/chat/completions");
    assert_eq!(ex.request.headers.get("x-client"), None);
    assert_eq!(body_text(&ex.request.body), r#"{"model":"m"}"#);
    assert_eq!(body_of(ex), r#"{"id":"y"}"#);
    assert_eq!(stats.http2_hpack_unknown, 1);
    assert_eq!(stats.parse_failures, 0);
}

#[test]
fn joined_mid_response_yields_an_exchange_without_request() {
    let mut wire = Wire::new();
    let mut server = Side::new();
    // A streamed response already under way: its head was sent before we attached.
    wire.read(&data(7, b"data: {\"x\":1}\n\n", false));
    wire.read(&data(7, b"data: [DONE]\n\n", true));
    // Then a fresh exchange whose heads use only static and literal fields.
    let mut client = Side::new();
    wire.write(&client.headers(9, &[(":method", "GET"), (":path", "/v1/models")], true));
    wire.read(
        &[
            server.headers(9, &[(":status", "200")], false),
            data(9, b"[]", true),
        ]
        .concat(),
    );

    let stats = wire.stats();
    assert_eq!(stats.http2_connections, 1);
    assert_eq!(wire.out.len(), 2);
    let ex = &wire.out[0];
    assert_eq!(ex.request.method, "");
    assert_eq!(
        ex.request.body.problem.as_deref(),
        Some("request not seen (joined mid-connection)")
    );
    assert_eq!(body_of(ex), "data: {\"x\":1}\n\ndata: [DONE]\n\n");
    assert_eq!(ex.end, ExchangeEnd::Complete);
    assert_eq!(wire.out[1].request.target, "/v1/models");
    assert_eq!(body_of(&wire.out[1]), "[]");
    assert_eq!(stats.http2_hpack_unknown, 1);
}

#[test]
fn malformed_frame_stops_the_connection_with_a_count() {
    let mut conn = Conn::open();
    conn.post(1, "/v1/chat/completions", b"{}");
    // A PING must be 8 bytes long.
    conn.wire.read(&frame(kind::PING, 0, 0, &[0; 7]));
    conn.respond(3, OK_JSON, b"ignored").wire.end();
    let out = &conn.wire.out;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end, ExchangeEnd::DataLost);
    assert_eq!(conn.wire.stats().parse_failures, 1);
}

#[test]
fn continuation_on_another_stream_is_malformed() {
    let mut conn = Conn::open();
    let block = conn.client.block(&fields(&post("/x")));
    conn.wire.write(&frame(kind::HEADERS, 0, 1, &block));
    conn.wire
        .write(&frame(kind::CONTINUATION, END_HEADERS, 3, &[]));
    assert_eq!(conn.wire.stats().parse_failures, 1);
}

#[test]
fn stream_count_is_bounded() {
    let mut conn = Conn::open();
    for i in 0..300u32 {
        let head = conn
            .client
            .headers(2 * i + 1, &fields(&post("/wait")), true);
        conn.wire.write(&head);
    }
    let stats = conn.wire.stats();
    assert_eq!(stats.http2_streams_evicted, 44);
    assert_eq!(conn.wire.out.len(), 44);
    assert!(
        conn.wire
            .out
            .iter()
            .all(|ex| ex.end == ExchangeEnd::DataLost)
    );
    conn.wire.stop();
    assert_eq!(conn.wire.out.len(), 300);
}

#[test]
fn oversized_header_block_is_bounded() {
    let mut wire = Wire::with_limits(HttpLimits {
        max_header_bytes: 1024,
        ..HttpLimits::default()
    });
    let mut client = Side::new();
    wire.write(&[PREFACE, &settings(&[])].concat());
    let big = "x".repeat(4000);
    let mut head = post("/big");
    head.push(("x-big", big));
    let block = client.block(&fields(&head));
    let (a, b) = block.split_at(900);
    wire.write(&frame(kind::HEADERS, 0, 1, a));
    wire.write(&frame(kind::CONTINUATION, END_HEADERS, 1, b));
    wire.write(&data(1, b"body", true));
    wire.read(&Side::new().headers(1, OK_JSON, true));
    let ex = &wire.out[0];
    assert_eq!(
        ex.request.body.problem.as_deref(),
        Some("header block larger than the limit")
    );
    assert_eq!(body_text(&ex.request.body), "body");
    assert_eq!(response_of(ex).status, 200);
}

#[test]
fn lost_bytes_end_open_streams_and_frames_are_found_again() {
    let mut conn = Conn::open();
    conn.post(1, "/a", b"{}").post(3, "/b", b"{}");
    let head = conn.server.headers(1, OK_JSON, false);
    conn.wire.read(&[head, data(1, b"start", false)].concat());
    conn.wire.lose(Direction::Ingress, 100);
    // A read from the middle of a frame is dropped; the next starts with a frame.
    conn.wire.read(b"middle of a frame");
    assert_eq!(conn.wire.out.len(), 2);
    assert!(
        conn.wire
            .out
            .iter()
            .all(|ex| ex.end == ExchangeEnd::DataLost)
    );
    conn.post(5, "/c", b"{}");
    conn.respond(5, OK_JSON, b"after");
    let ex = &conn.wire.out[2];
    assert_eq!(ex.request.target, "/c");
    assert_eq!(body_of(ex), "after");
    // The server's HPACK table is unknown after the loss: the status is not guessed.
    assert!(
        response_of(ex)
            .body
            .problem
            .as_deref()
            .is_some_and(|p| p.starts_with("hpack state unknown"))
    );
}

#[test]
fn conn_end_and_stop_hand_over_open_streams() {
    let mut conn = Conn::open();
    conn.post(1, "/a", b"{}");
    let head = conn.server.headers(1, OK_JSON, false);
    conn.wire.read(&[head, data(1, b"partial", false)].concat());
    conn.wire
        .read(&frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]))
        .end();
    let ex = &conn.wire.out[0];
    assert_eq!(ex.end, ExchangeEnd::ConnectionClosed);
    assert_eq!(body_of(ex), "partial");
    assert_eq!(
        response_of(ex).body.problem.as_deref(),
        Some("connection closed")
    );

    let mut conn = Conn::open();
    conn.post(1, "/b", b"{}").wire.stop();
    assert_eq!(conn.wire.out[0].end, ExchangeEnd::ObserverStopped);
    assert!(conn.wire.out[0].response.is_none());
}

/// A session with multiplexing, CONTINUATION, compression and streaming.
fn h2_session() -> Vec<(Direction, Vec<u8>)> {
    let mut client = Side::new();
    let mut server = Side::new();
    let mut session = vec![
        (
            Direction::Egress,
            [PREFACE, &settings(&[(0x1, 4096)])].concat(),
        ),
        (Direction::Ingress, settings(&[(0x3, 100)])),
    ];
    let block = client.block(&fields(&post("/v1/chat/completions")));
    let (a, b) = block.split_at(block.len() / 2);
    session.push((
        Direction::Egress,
        [
            frame(kind::HEADERS, 0, 1, a),
            frame(kind::CONTINUATION, END_HEADERS, 1, b),
            data(1, br#"{"stream":true}"#, true),
            client.headers(3, &fields(&post("/v1/embeddings")), false),
            data(3, b"{}", true),
        ]
        .concat(),
    ));
    let sse = [("content-type", "text/event-stream"), (":status", "200")];
    session.push((Direction::Ingress, server.headers(1, &sse, false)));
    let gzipped = gzip(b"{\"data\":[1,2,3]}");
    let gz_head = server.headers(
        3,
        &[(":status", "200"), ("content-encoding", "gzip")],
        false,
    );
    session.push((
        Direction::Ingress,
        [gz_head, data(3, &gzipped, true)].concat(),
    ));
    for i in 0..4 {
        let event = format!("data: {i}\n\n");
        session.push((Direction::Ingress, data(1, event.as_bytes(), i == 3)));
    }
    session
}

fn replay_h2(session: &[(Direction, Vec<u8>)], rng: Option<&mut StdRng>) -> Vec<Exchange> {
    let mut wire = Wire::new();
    match rng {
        None => {
            for (dir, bytes) in session {
                wire.send(*dir, bytes, TID);
            }
        }
        Some(rng) => {
            for (dir, bytes) in session {
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let n = rng.random_range(1..=rest.len());
                    wire.send(*dir, &rest[..n], TID);
                    rest = &rest[n..];
                }
            }
        }
    }
    wire.end();
    timeless(wire.out)
}

#[test]
fn rechunking_an_h2_session_gives_identical_exchanges() {
    let session = h2_session();
    let expected = replay_h2(&session, None);
    assert_eq!(expected.len(), 2);
    assert!(expected.iter().all(|ex| ex.end == ExchangeEnd::Complete));
    assert_eq!(body_of(&expected[0]), r#"{"data":[1,2,3]}"#);
    assert_eq!(
        body_of(&expected[1]),
        "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
    );
    let mut rng = StdRng::seed_from_u64(0x4832);
    for _ in 0..200 {
        assert_eq!(replay_h2(&session, Some(&mut rng)), expected);
    }
}

#[test]
fn garbage_after_the_preface_never_panics() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..500 {
        let mut wire = Wire::new();
        let len = rng.random_range(0..200);
        let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        wire.write(&[PREFACE, &noise].concat()).read(&noise).end();
    }
}

#[test]
fn a_whole_post_is_told_before_its_response() {
    let mut conn = Conn::open();
    let head = conn
        .client
        .headers(1, &fields(&post("/v1/responses")), false);
    conn.wire.write(&head);
    assert!(
        conn.wire.stage.take_calls_sent().is_empty(),
        "not whole yet"
    );
    conn.wire.write(&data(1, b"{}", true));
    assert_eq!(conn.wire.stage.take_calls_sent(), [CONN]);
    conn.respond(1, &[(":status", "200")], b"ok");
    assert_eq!(conn.wire.out.len(), 1);
    assert!(conn.wire.stage.take_calls_sent().is_empty(), "told once");
}
