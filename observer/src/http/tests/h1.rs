//! HTTP/1 byte streams, and how a connection's first bytes decide what it is followed as.
use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const GET: &[u8] = b"GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n";

fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chunked(body_chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body_chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn keep_alive_carries_three_exchanges() {
    let mut wire = Wire::new();
    for i in 0..3 {
        let body = format!("{{\"n\":{i}}}");
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        wire.write(request.as_bytes())
            .read(&ok_response(&format!("answer {i}")));
    }
    assert_eq!(wire.out.len(), 3);
    for (i, ex) in wire.out.iter().enumerate() {
        assert_eq!(ex.end, ExchangeEnd::Complete);
        assert_eq!(ex.request.method, "POST");
        assert_eq!(body_text(&ex.request.body), format!("{{\"n\":{i}}}"));
        assert_eq!(body_text(&response_of(ex).body), format!("answer {i}"));
        assert!(
            ex.request.ts_start <= ex.request.ts_end
                && ex.request.ts_end < response_of(ex).ts_start
        );
    }
    assert_eq!(wire.stats().exchanges, 3);
}

#[test]
fn chunked_body_split_at_every_byte_position() {
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    response.extend_from_slice(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    for split in 1..response.len() {
        let mut wire = Wire::new();
        wire.write(GET)
            .read(&response[..split])
            .read(&response[split..]);
        assert_eq!(wire.out.len(), 1, "split at {split}");
        let ex = &wire.out[0];
        assert_eq!(ex.end, ExchangeEnd::Complete, "split at {split}");
        assert_eq!(
            body_text(&response_of(ex).body),
            "hello world",
            "split at {split}"
        );
    }
}

fn encoded(coding: &str, data: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::default();
    match coding {
        "gzip" => gzip(data),
        "deflate" => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), level);
            enc.write_all(data)
                .and_then(|()| enc.finish())
                .expect("zlib in memory")
        }
        "deflate-raw" => {
            let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), level);
            enc.write_all(data)
                .and_then(|()| enc.finish())
                .expect("deflate in memory")
        }
        "br" => {
            let mut out = Vec::new();
            let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            enc.write_all(data).expect("brotli in memory");
            drop(enc);
            out
        }
        "zstd" => zstd::encode_all(data, 3).expect("zstd in memory"),
        other => panic!("no encoder for {other}"),
    }
}

#[test]
fn content_encodings_are_decoded_across_reads() {
    let text = "{\"choices\":[{\"message\":{\"content\":\"hi there\"}}]}".repeat(50);
    for coding in ["gzip", "deflate", "deflate-raw", "br", "zstd"] {
        let compressed = encoded(coding, text.as_bytes());
        let header = coding.trim_end_matches("-raw");
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: {header}\r\nContent-Length: {}\r\n\r\n",
            compressed.len()
        )
        .into_bytes();
        response.extend_from_slice(&compressed);
        let mut wire = Wire::new();
        wire.write(GET);
        for piece in response.chunks(7) {
            wire.read(piece);
        }
        assert_eq!(wire.out.len(), 1, "{coding}");
        let body = &response_of(&wire.out[0]).body;
        assert_eq!(body.problem, None, "{coding}");
        assert_eq!(body_text(body), text, "{coding}");
        assert_eq!(
            body.parts.last().map(|p| p.end),
            Some(text.len()),
            "{coding}"
        );
    }
}

#[test]
fn streamed_sse_keeps_arrival_times_even_when_compressed() {
    let events: Vec<String> = (0..5)
        .map(|i| format!("data: {{\"delta\":\"token{i}\"}}\n\n"))
        .collect();
    for compressed in [false, true] {
        let mut wire = Wire::new();
        let encoding = if compressed {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{encoding}Transfer-Encoding: chunked\r\n\r\n"
        );
        wire.write(GET).read(head.as_bytes());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut arrivals = Vec::new();
        for event in &events {
            let payload = if compressed {
                gz.write_all(event.as_bytes())
                    .and_then(|()| gz.flush())
                    .expect("gzip in memory");
                std::mem::take(gz.get_mut())
            } else {
                event.clone().into_bytes()
            };
            let framed = format!("{:x}\r\n", payload.len());
            wire.read(framed.as_bytes())
                .read(&[payload.as_slice(), b"\r\n"].concat());
            arrivals.push(wire.ts);
        }
        let tail = gz.finish().expect("gzip in memory");
        let last = if compressed {
            chunked(&[&tail])
        } else {
            b"0\r\n\r\n".to_vec()
        };
        wire.read(&last);

        assert_eq!(wire.out.len(), 1);
        let body = &response_of(&wire.out[0]).body;
        assert_eq!(body_text(body), events.concat(), "compressed: {compressed}");
        let mut event_start = 0;
        for (event, ts) in events.iter().zip(&arrivals) {
            assert_eq!(
                body.time_at(event_start),
                Some(*ts),
                "compressed: {compressed}"
            );
            event_start += event.len();
        }
    }
}

#[test]
fn response_cut_by_conn_end_is_handed_over_partial() {
    let mut wire = Wire::new();
    wire.write(GET)
        .read(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        .end();
    assert_eq!(wire.out.len(), 1);
    let ex = &wire.out[0];
    assert_eq!(ex.end, ExchangeEnd::ConnectionClosed);
    let body = &response_of(ex).body;
    assert_eq!(body_text(body), "partial");
    assert_eq!(body.problem.as_deref(), Some("connection closed"));
}

#[test]
fn body_delimited_by_close_is_complete_at_conn_end() {
    let mut wire = Wire::new();
    wire.write(GET)
        .read(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        .end();
    assert_eq!(wire.out[0].end, ExchangeEnd::Complete);
    assert_eq!(body_text(&response_of(&wire.out[0]).body), "all of it");
}

#[test]
fn observer_stop_hands_over_open_exchanges() {
    let mut wire = Wire::new();
    wire.write(GET)
        .read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    wire.write(b"GET /second HTTP/1.1\r\n\r\n").stop();
    assert_eq!(wire.out.len(), 2);
    assert_eq!(wire.out[0].end, ExchangeEnd::ObserverStopped);
    assert_eq!(body_text(&response_of(&wire.out[0]).body), "abc");
    assert_eq!(wire.out[1].request.target, "/second");
    assert_eq!(wire.out[1].response, None);
    assert_eq!(wire.out[1].end, ExchangeEnd::ObserverStopped);
}

#[test]
fn gap_mid_body_loses_that_exchange_and_parses_the_next() {
    let mut wire = Wire::new();
    wire.write(GET)
        .read(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst part");
    wire.lose(Direction::Ingress, 500).read(&[b'x'; 490]);
    wire.write(GET).read(&ok_response("second"));
    assert_eq!(wire.out.len(), 2);
    assert_eq!(wire.out[0].end, ExchangeEnd::DataLost);
    assert_eq!(
        response_of(&wire.out[0]).body.problem.as_deref(),
        Some("bytes lost")
    );
    assert_eq!(wire.out[1].end, ExchangeEnd::Complete);
    assert_eq!(body_text(&response_of(&wire.out[1]).body), "second");
    assert_eq!(wire.stats().gaps, 1);
}

#[test]
fn resync_finds_the_next_status_line_inside_a_read() {
    let mut wire = Wire::new();
    wire.write(GET)
        .write(GET)
        .read(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nabc");
    let mut after_gap = b"tail of the lost body\r\nmore\n".to_vec();
    after_gap.extend_from_slice(&ok_response("next"));
    wire.lose(Direction::Ingress, 10).read(&after_gap);
    assert_eq!(wire.out.len(), 2);
    assert_eq!(wire.out[0].end, ExchangeEnd::DataLost);
    assert_eq!(body_text(&response_of(&wire.out[1]).body), "next");
}

#[test]
fn server_side_connection_is_skipped() {
    let mut wire = Wire::new();
    wire.read(GET).write(&ok_response("served")).end();
    assert!(wire.out.is_empty());
    assert_eq!(wire.stats().server_side_skipped, 1);
}

#[test]
fn non_http_connections_are_skipped() {
    let mut wire = Wire::new();
    wire.write(b"\x16\x03\x01binary protocol")
        .write(GET)
        .read(&ok_response("x"))
        .end();
    assert!(wire.out.is_empty());
    assert_eq!(wire.stats().non_http_skipped, 1);
}

#[test]
fn connections_no_longer_followed_are_reported_once() {
    let mut server = Wire::new();
    server.read(GET);
    assert_eq!(
        server.stage.take_unfollowed(),
        vec![Unfollowed::Connection(CONN)]
    );
    server.write(&ok_response("served")).read(GET);
    assert!(server.stage.take_unfollowed().is_empty());

    let mut client = Wire::new();
    client.write(GET).read(&ok_response("ok"));
    assert!(client.stage.take_unfollowed().is_empty());
}

fn only_model_calls(request: &Request) -> bool {
    request.target.starts_with("/v1/chat")
}

const DOWNLOAD: &[u8] = b"GET /backup.tar HTTP/1.1\r\nHost: files.internal\r\n\r\n";
const CHAT: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";

#[test]
fn the_response_to_an_unwanted_request_is_not_read() {
    let mut wire = Wire::following(only_model_calls);
    wire.write(DOWNLOAD);
    assert_eq!(
        wire.stage.take_unfollowed(),
        vec![Unfollowed::Response {
            conn: CONN,
            request_end: DOWNLOAD.len() as u64,
        }]
    );
    // The capture may stop copying anywhere in it: what does arrive is dropped.
    let download = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nxxxx";
    wire.read(download.as_bytes());
    // The next request is followed again, its response read from its first byte.
    wire.write(CHAT).read(&ok_response("answer"));
    assert_eq!(wire.out.len(), 1);
    assert_eq!(wire.out[0].request.target, "/v1/chat/completions");
    assert_eq!(body_text(&response_of(&wire.out[0]).body), "answer");
    assert_eq!(wire.out[0].end, ExchangeEnd::Complete);
    assert!(wire.stage.take_unfollowed().is_empty());
    let stats = wire.stats();
    assert_eq!((stats.responses_not_followed, stats.exchanges), (1, 1));
    assert_eq!(stats.parse_failures, 0);
}

#[test]
fn responses_are_read_when_skipping_one_could_lose_another() {
    // Pipelined behind a wanted request: its response comes after the wanted one's.
    let mut wire = Wire::following(only_model_calls);
    wire.write(CHAT).write(DOWNLOAD);
    wire.read(&ok_response("answer")).read(&ok_response("file"));
    assert_eq!(wire.out.len(), 2);
    assert_eq!(body_text(&response_of(&wire.out[0]).body), "answer");
    // Two requests in one write: the capture cannot stop between their responses.
    let mut wire = Wire::following(only_model_calls);
    wire.write(&[DOWNLOAD, CHAT].concat());
    wire.read(&ok_response("file")).read(&ok_response("answer"));
    assert_eq!(wire.out.len(), 2);
    assert_eq!(body_text(&response_of(&wire.out[1]).body), "answer");
    // An upgrade changes what the connection carries: its answer must be seen.
    let mut wire = Wire::following(only_model_calls);
    wire.write(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .read(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(wire.stats().upgraded, 1);
    assert_eq!(wire.stats().responses_not_followed, 0);
}

#[test]
fn a_binary_protocol_is_judged_at_its_first_message() {
    let mut wire = Wire::new();
    // A PostgreSQL startup message.
    let startup = [&b"\0\0\0\x29\0\x03\0\0user\0"[..], &[b'a'; 40]].concat();
    wire.write(&startup);
    assert_eq!(wire.stats().non_http_skipped, 1);
    assert_eq!(wire.stats().joined_mid_stream, 0);
    assert_eq!(
        wire.stage.take_unfollowed(),
        vec![Unfollowed::Connection(CONN)]
    );
    wire.write(b"\0\0\0\x08");
    assert_eq!(wire.stats().reads_after_not_http, 1);
    // A long method name still is one.
    let mut wire = Wire::new();
    wire.write(b"UPDATEREDIRECTREF / HTTP/1.1\r\n\r\n");
    assert_eq!(wire.stats().non_http_skipped, 0);
}

#[test]
fn first_bytes_split_across_reads_are_sniffed_together() {
    let mut wire = Wire::new();
    wire.write(b"G")
        .write(b"ET /slow HTTP/1.1\r\n")
        .write(b"\r\n")
        .read(&ok_response("ok"));
    assert_eq!(wire.out.len(), 1);
    assert_eq!(wire.out[0].request.target, "/slow");
    assert_eq!(
        wire.out[0].request.ts_start + 2 * MS,
        wire.out[0].request.ts_end
    );
}

#[test]
fn absurd_content_length_keeps_only_the_cap() {
    let limits = HttpLimits {
        max_body_bytes: 1024,
        ..HttpLimits::default()
    };
    let mut wire = Wire::with_limits(limits);
    wire.write(GET)
        .read(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
    for _ in 0..10 {
        wire.read(&[b'a'; 10_000]);
    }
    wire.end();
    let body = &response_of(&wire.out[0]).body;
    assert_eq!(body.data.len(), 1024);
    assert!(body.truncated);
    assert_eq!(wire.out[0].end, ExchangeEnd::ConnectionClosed);
    assert_eq!(wire.stats().bodies_truncated, 1);
}

#[test]
fn header_flood_is_a_counted_failure_and_the_next_request_parses() {
    let mut wire = Wire::new();
    let mut flood = b"GET /flood HTTP/1.1\r\n".to_vec();
    while flood.len() < 100_000 {
        flood.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    for piece in flood.chunks(4096) {
        wire.write(piece);
    }
    wire.write(b"\r\n").write(GET).read(&ok_response("fine"));
    assert_eq!(wire.stats().parse_failures, 1);
    assert_eq!(wire.out.len(), 1);
    assert_eq!(wire.out[0].request.target, "/v1/models");
}

#[test]
fn too_many_headers_in_one_read_is_a_counted_failure() {
    let mut wire = Wire::new();
    let mut flood = b"GET /flood HTTP/1.1\r\n".to_vec();
    for i in 0..1000 {
        flood.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    wire.write(&flood).write(GET).read(&ok_response("fine"));
    assert_eq!(wire.stats().parse_failures, 1);
    assert_eq!(wire.out.len(), 1);
}

#[test]
fn gzip_bomb_is_bounded() {
    let limits = HttpLimits {
        max_body_bytes: 64 << 10,
        ..HttpLimits::default()
    };
    let bomb = gzip(&vec![0u8; 8 << 20]);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        bomb.len()
    )
    .into_bytes();
    response.extend_from_slice(&bomb);
    let mut wire = Wire::with_limits(limits);
    wire.write(GET).read(&response);
    let body = &response_of(&wire.out[0]).body;
    assert!(body.truncated);
    assert_eq!(body.data.len(), 64 << 10);
    assert!(body.problem.is_some());
    assert_eq!(wire.out[0].end, ExchangeEnd::Complete);
}

#[test]
fn corrupt_compressed_body_is_a_counted_decode_failure() {
    let mut wire = Wire::new();
    let junk = b"this is not gzip at all";
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        junk.len()
    );
    wire.write(GET).read(response.as_bytes()).read(junk);
    let body = &response_of(&wire.out[0]).body;
    assert!(
        body.problem
            .as_deref()
            .is_some_and(|p| p.starts_with("decode:"))
    );
    assert_eq!(wire.stats().decode_failures, 1);
}

#[test]
fn interim_100_continue_is_skipped() {
    let mut wire = Wire::new();
    wire.write(b"POST /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    wire.read(b"HTTP/1.1 100 Continue\r\n\r\n")
        .write(b"data")
        .read(&ok_response("done"));
    assert_eq!(wire.out.len(), 1);
    assert_eq!(response_of(&wire.out[0]).status, 200);
    assert_eq!(body_text(&wire.out[0].request.body), "data");
}

#[test]
fn head_204_and_304_responses_have_no_body() {
    let mut wire = Wire::new();
    wire.write(b"HEAD /big HTTP/1.1\r\n\r\n")
        .read(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    wire.write(GET)
        .read(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
    wire.write(GET).read(b"HTTP/1.1 304 Not Modified\r\n\r\n");
    wire.write(GET).read(&ok_response("body"));
    let statuses: Vec<u16> = wire.out.iter().map(|ex| response_of(ex).status).collect();
    assert_eq!(statuses, [200, 204, 304, 200]);
    assert!(wire.out.iter().all(|ex| ex.end == ExchangeEnd::Complete));
    assert_eq!(body_text(&response_of(&wire.out[3]).body), "body");
}

#[test]
fn pipelined_requests_pair_in_order() {
    let mut wire = Wire::new();
    let requests = [
        b"GET /1 HTTP/1.1\r\n\r\n".as_slice(),
        b"GET /2 HTTP/1.1\r\n\r\n",
        b"GET /3 HTTP/1.1\r\n\r\n",
    ];
    wire.write(&requests.concat());
    wire.read(&[ok_response("one"), ok_response("two"), ok_response("three")].concat());
    let pairs: Vec<(&str, &str)> = wire
        .out
        .iter()
        .map(|ex| (ex.request.target.as_str(), body_text(&response_of(ex).body)))
        .collect();
    assert_eq!(pairs, [("/1", "one"), ("/2", "two"), ("/3", "three")]);
}

#[test]
fn secrets_are_redacted_and_tid_is_the_writer() {
    let mut wire = Wire::new();
    let request = b"GET /v1beta/models?key=AIzaSECRET&alt=sse HTTP/1.1\r\nAuthorization: Bearer sk-SECRET\r\nX-Api-Key: SECRET\r\n\r\n";
    wire.send(Direction::Egress, request, 99)
        .read(&ok_response("{}"));
    let ex = &wire.out[0];
    assert_eq!(ex.tid, 99);
    assert_eq!(ex.request.target, "/v1beta/models?key=[REDACTED]&alt=sse");
    assert_eq!(
        ex.request.headers.get("authorization"),
        Some("Bearer [REDACTED]")
    );
    assert_eq!(ex.request.headers.get("x-api-key"), Some("[REDACTED]"));
}

#[test]
fn invalid_utf8_header_values_are_kept_lossily() {
    let mut wire = Wire::new();
    wire.write(GET)
        .read(b"HTTP/1.1 200 OK\r\nX-Odd: caf\xe9\r\nContent-Length: 2\r\n\r\n\xff\xfe");
    let response = response_of(&wire.out[0]);
    assert_eq!(response.headers.get("x-odd"), Some("caf\u{fffd}"));
    assert_eq!(&response.body.data[..], b"\xff\xfe");
}

#[test]
fn malformed_chunk_size_resyncs_to_the_next_response() {
    let mut wire = Wire::new();
    wire.write(GET).write(GET);
    wire.read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    wire.read(&ok_response("after"));
    assert_eq!(wire.out.len(), 2);
    assert_eq!(wire.out[0].end, ExchangeEnd::DataLost);
    assert_eq!(body_text(&response_of(&wire.out[1]).body), "after");
    assert_eq!(wire.stats().parse_failures, 1);
}

#[test]
fn process_exit_ends_its_connections() {
    let mut wire = Wire::new();
    wire.write(GET);
    wire.stage.push(
        StreamInput::ProcessEnd {
            pid: CONN.pid,
            ts: wire.ts + MS,
        },
        &mut wire.out,
    );
    assert_eq!(wire.out.len(), 1);
    assert_eq!(wire.out[0].end, ExchangeEnd::ConnectionClosed);
    assert_eq!(wire.out[0].response, None);
}

#[test]
fn swapped_chunks_are_reordered_before_parsing() {
    let mut stage = ConnectionStage::default();
    let mut out = Vec::new();
    let response = ok_response("in order");
    let (first, second) = response.split_at(20);
    let chunk = |dir, offset: usize, data: &[u8], ts| Chunk {
        conn: CONN,
        tid: TID,
        dir,
        ts,
        offset: offset as u64,
        data: Bytes::copy_from_slice(data),
        truncated_after: false,
        library: TlsLibrary::OpenSsl,
    };
    for ev in [
        chunk(Direction::Egress, 0, GET, 1),
        chunk(Direction::Ingress, first.len(), second, 2),
        chunk(Direction::Ingress, 0, first, 3),
    ] {
        stage.push(StreamInput::Chunk(ev), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(body_text(&response_of(&out[0]).body), "in order");
}

/// A recorded client session touching most framing paths.
fn recorded_session() -> Vec<(Direction, Vec<u8>)> {
    let gz = gzip(b"{\"compressed\":true}");
    let mut gz_response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    gz_response.extend_from_slice(&gz);
    let mut sse =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    sse.extend_from_slice(&chunked(&[
        b"data: {\"a\":1}\n\n",
        b"data: {\"b\":2}\n\n",
        b"data: [DONE]\n\n",
    ]));
    let post = b"POST /v1/messages HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"x\":\"yz\"}\n";
    vec![
        (Direction::Egress, post.to_vec()),
        (
            Direction::Ingress,
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        ),
        (Direction::Ingress, ok_response("{\"id\":1}")),
        (Direction::Egress, GET.to_vec()),
        (Direction::Ingress, gz_response),
        (Direction::Egress, b"HEAD /h HTTP/1.1\r\n\r\n".to_vec()),
        (
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n".to_vec(),
        ),
        (Direction::Egress, post.to_vec()),
        (Direction::Ingress, sse),
        (Direction::Egress, GET.to_vec()),
        (
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close".to_vec(),
        ),
    ]
}

fn replay(session: &[(Direction, Vec<u8>)], rng: Option<&mut StdRng>) -> Vec<Exchange> {
    let mut wire = Wire::new();
    match rng {
        None => {
            for (dir, bytes) in session {
                wire.send(*dir, bytes, TID);
            }
        }
        Some(rng) => {
            for (dir, bytes) in session {
                let mut rest = bytes.as_slice();
                while !rest.is_empty() {
                    let take = rng.random_range(1..=rest.len().min(12));
                    let (piece, tail) = rest.split_at(take);
                    wire.send(*dir, piece, TID);
                    rest = tail;
                }
            }
        }
    }
    wire.end();
    timeless(std::mem::take(&mut wire.out))
}

#[test]
fn rechunking_a_recorded_stream_gives_identical_exchanges() {
    let session = recorded_session();
    let expected = replay(&session, None);
    assert_eq!(expected.len(), 5);
    assert!(expected.iter().all(|ex| ex.end == ExchangeEnd::Complete));
    assert_eq!(
        body_text(&response_of(&expected[1]).body),
        "{\"compressed\":true}"
    );
    assert_eq!(body_text(&response_of(&expected[4]).body), "until close");

    let mut rng = StdRng::seed_from_u64(0x0b5e_12e4);
    for round in 0..200 {
        assert_eq!(replay(&session, Some(&mut rng)), expected, "round {round}");
    }
}

/// 100,000 connections that each send a request head claiming a 1 GB body and are never
/// closed: the stage keeps at most its configured number of connections (the rest are evicted,
/// counted), so memory stays bounded by the caps rather than by what clients claim or leave open.
#[test]
fn connections_never_closed_are_bounded_by_the_caps() {
    let mut stage = ConnectionStage::default();
    let mut out = Vec::new();
    let head =
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1000000000\r\n\r\npartial";
    for n in 0..100_000u64 {
        let chunk = Chunk {
            conn: ConnKey {
                pid: 4242,
                conn: 0x10_0000 + n,
            },
            tid: TID,
            dir: Direction::Egress,
            ts: 1_000 * MS + n,
            offset: 0,
            data: Bytes::from_static(head),
            truncated_after: false,
            library: TlsLibrary::OpenSsl,
        };
        stage.push(StreamInput::Chunk(chunk), &mut out);
    }
    let limits = HttpLimits::default();
    assert!(stage.http.conns.len() <= limits.max_connections);
    assert!(stage.stats().connections_evicted >= 100_000 - limits.max_connections as u64);
    let max_streams = ReassemblyLimits::default().max_streams as u64;
    assert!(stage.reassembly_stats().streams_evicted >= 100_000 - max_streams);
}

#[test]
fn a_connection_joined_mid_stream_is_followed_from_its_next_exchange() {
    // The rest of a streamed answer whose request predates the capture, then a new call.
    let mut wire = Wire::new();
    wire.read(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
    wire.write(CHAT).read(&ok_response("answer"));
    assert_eq!(wire.out.len(), 1, "{:?}", wire.out);
    assert_eq!(body_text(&response_of(&wire.out[0]).body), "answer");
    let stats = wire.stats();
    assert_eq!(stats.joined_mid_stream, 1);
    assert_eq!(stats.resync_skipped_bytes, 35);
    assert_eq!((stats.non_http_skipped, stats.unmatched_responses), (0, 0));
    // Joined in the middle of a request body.
    let mut wire = Wire::new();
    wire.write(b"\"messages\":[]}").read(&ok_response("lost"));
    wire.write(CHAT).read(&ok_response("answer"));
    assert_eq!(wire.stats().joined_mid_stream, 1);
    assert_eq!(wire.stats().unmatched_responses, 1);
    assert_eq!(wire.out.len(), 1, "{:?}", wire.out);
    assert_eq!(body_text(&response_of(&wire.out[0]).body), "answer");
}

#[test]
fn a_joined_connection_that_never_shows_a_message_start_is_given_up() {
    let mut wire = Wire::new();
    let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
    for _ in 0..1025 {
        wire.read(&line);
    }
    let stats = wire.stats();
    assert_eq!((stats.joined_mid_stream, stats.non_http_skipped), (1, 1));
    assert_eq!(
        wire.stage.take_unfollowed(),
        vec![Unfollowed::Connection(CONN)]
    );
}

#[test]
fn a_followed_request_is_told_before_its_response() {
    let mut wire = Wire::following(only_model_calls);
    wire.write(DOWNLOAD);
    assert!(wire.stage.take_calls_sent().is_empty(), "not a call");
    wire.read(b"HTTP/1.1 204 No Content\r\n\r\n");
    wire.write(CHAT);
    assert_eq!(wire.stage.take_calls_sent(), [CONN]);
    assert!(wire.out.is_empty(), "its response has not come yet");
    wire.read(&ok_response("answer"));
    assert_eq!(wire.out.len(), 1);
    assert!(wire.stage.take_calls_sent().is_empty(), "told once");
}
