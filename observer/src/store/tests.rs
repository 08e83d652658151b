use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};

use super::*;
use crate::query::{Cursor, Filter, OrderBy, Query};
use crate::span::GenAi;

const SECOND: u64 = 1_000_000_000;

/// A chat span `seconds_ago` old with the given extra attributes.
pub(crate) fn span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    seconds_ago: u64,
    extra: Value,
) -> Span {
    let start = now_unix_nanos() - seconds_ago * SECOND;
    let mut attributes: Map<String, Value> = json!({
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "process.pid": 4242,
        "process.executable.name": "python3",
    })
    .as_object()
    .cloned()
    .unwrap();
    attributes.extend(extra.as_object().cloned().unwrap_or_default());
    Span {
        trace_id: format!("{trace:0>32}"),
        span_id: format!("{id:0>16}"),
        parent_span_id: parent.map(|p| format!("{p:0>16}")),
        name: "chat gpt-4o".into(),
        kind: SpanKind::Client,
        start_time_unix_nano: start,
        end_time_unix_nano: start + SECOND / 2,
        gen_ai: GenAi::take_from(&mut attributes),
        attributes,
        links: Vec::new(),
    }
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/observer.db");
    (dir, path)
}

fn open(path: &Path) -> Store {
    Store::open(path, &Retention::default()).unwrap()
}

fn query(filters: &[(&str, &str, &str)]) -> Query {
    Query {
        filters: filters
            .iter()
            .map(|(f, o, v)| Filter::new(f, o, v).unwrap())
            .collect(),
        ..Query::default()
    }
}

fn ids(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| s.span_id.trim_start_matches('0').to_string())
        .collect()
}

fn sample_store(path: &Path) -> Store {
    let mut store = open(path);
    store
        .insert(&[
            span("a", "1", None, 50, json!({})),
            span("a", "2", Some("1"), 40, json!({"gen_ai.response.finish_reasons": ["tool_calls"]})),
            span(
                "a",
                "3",
                Some("1"),
                30,
                json!({"error.type": "429", "gen_ai.usage.input_tokens": 7, "gen_ai.request.temperature": 0.2}),
            ),
            span(
                "b",
                "4",
                None,
                10,
                json!({"gen_ai.request.model": "claude-sonnet-4", "gen_ai.provider.name": "anthropic", "gen_ai.request.stream": true}),
            ),
        ])
        .unwrap();
    store
}

#[test]
fn stores_spans_and_rolls_them_up_into_traces() {
    let (_dir, path) = temp_db();
    let store = sample_store(&path);
    let traces = store.traces(&Query::default()).unwrap();
    assert_eq!(traces.len(), 2);
    let (b, a) = (&traces[0], &traces[1]);
    assert_eq!(b.trace_id, format!("{:0>32}", "b"));
    assert_eq!(
        (a.span_count, a.input_tokens, a.output_tokens, a.error_count),
        (3, 207, 60, 1)
    );
    assert_eq!(a.root_name, "chat gpt-4o");

    let spans = store.trace_spans(&a.trace_id).unwrap();
    assert_eq!(a.start_time_unix_nano, spans[0].start_time_unix_nano);
    assert_eq!(a.end_time_unix_nano, spans[2].end_time_unix_nano);
    assert_eq!(ids(&spans), ["1", "2", "3"]);
    assert_eq!(
        spans[1].attribute("gen_ai.response.finish_reasons"),
        Some(&json!(["tool_calls"]))
    );
    assert_eq!(
        store.span(&spans[2].span_id).unwrap().as_ref(),
        Some(&spans[2])
    );
}

#[test]
fn filters_on_columns_and_on_any_attribute() {
    let (_dir, path) = temp_db();
    let store = sample_store(&path);
    let spans = |filters: &[(&str, &str, &str)]| ids(&store.spans(&query(filters)).unwrap());
    assert_eq!(spans(&[("gen_ai.provider.name", "eq", "anthropic")]), ["4"]);
    assert_eq!(
        spans(&[("gen_ai.request.model", "contains", "claude")]),
        ["4"]
    );
    assert_eq!(spans(&[("error.type", "eq", "429")]), ["3"]);
    assert_eq!(spans(&[("error.type", "ne", "429")]), ["4", "2", "1"]);
    assert_eq!(spans(&[("gen_ai.usage.input_tokens", "lt", "50")]), ["3"]);
    assert_eq!(spans(&[("gen_ai.request.temperature", "gt", "0.1")]), ["3"]);
    assert_eq!(spans(&[("gen_ai.request.stream", "eq", "true")]), ["4"]);
    assert_eq!(
        spans(&[("gen_ai.response.finish_reasons", "contains", "tool")]),
        ["2"]
    );
    assert_eq!(
        spans(&[
            ("process.pid", "eq", "4242"),
            ("gen_ai.provider.name", "ne", "openai")
        ]),
        ["4"]
    );

    let traces = store
        .traces(&query(&[("gen_ai.provider.name", "eq", "anthropic")]))
        .unwrap();
    assert_eq!(traces.len(), 1);
    let traces = store.traces(&query(&[("span_count", "gt", "1")])).unwrap();
    assert_eq!(traces[0].span_count, 3);
}

#[test]
fn pages_orders_and_limits_by_time() {
    let (_dir, path) = temp_db();
    let store = sample_store(&path);
    let ordered = |order: &str, limit, offset, since| {
        let query = Query {
            order_by: Some(order.parse::<OrderBy>().unwrap()),
            limit,
            offset,
            since,
            ..Query::default()
        };
        ids(&store.spans(&query).unwrap())
    };
    assert_eq!(ordered("start_time", 2, 1, None), ["2", "3"]);
    assert_eq!(ordered("-gen_ai.request.temperature", 1, 0, None), ["3"]);
    assert_eq!(ordered("gen_ai.usage.input_tokens:asc", 1, 0, None), ["3"]);
    assert_eq!(
        ordered("start_time:desc", 10, 0, Some(Duration::from_secs(35))),
        ["4", "3"]
    );
    let traces = Query {
        order_by: Some("-span_count".parse().unwrap()),
        ..Query::default()
    };
    assert_eq!(store.traces(&traces).unwrap()[0].span_count, 3);
    let unknown = Query {
        order_by: Some("gen_ai.request.model".parse().unwrap()),
        ..Query::default()
    };
    assert!(store.traces(&unknown).is_err());
}

#[test]
fn values_that_look_like_sql_stay_values() {
    let (_dir, path) = temp_db();
    let store = sample_store(&path);
    for value in ["'; DROP TABLE spans; --", "x' OR '1'='1", "\" OR 1=1 --"] {
        for field in ["gen_ai.request.model", "some.attribute"] {
            assert!(
                store
                    .spans(&query(&[(field, "eq", value)]))
                    .unwrap()
                    .is_empty()
            );
            assert!(
                store
                    .traces(&query(&[(field, "contains", value)]))
                    .unwrap()
                    .is_empty()
            );
        }
    }
    assert_eq!(store.spans(&Query::default()).unwrap().len(), 4);
}

#[test]
fn prunes_by_age_and_keeps_traces_consistent() {
    let (_dir, path) = temp_db();
    let mut store = sample_store(&path);
    let retention = Retention {
        max_age: Some(Duration::from_secs(35)),
        max_bytes: None,
    };
    let report = store
        .enforce_retention(&retention, now_unix_nanos())
        .unwrap();
    assert_eq!(report.expired, 2);
    assert_eq!(ids(&store.spans(&Query::default()).unwrap()), ["4", "3"]);
    let traces = store.traces(&Query::default()).unwrap();
    let a = traces.iter().find(|t| t.trace_id.ends_with('a')).unwrap();
    assert_eq!((a.span_count, a.input_tokens, a.error_count), (1, 7, 1));
}

#[test]
fn prunes_oldest_first_to_fit_the_size_limit() {
    let (_dir, path) = temp_db();
    let mut store = open(&path);
    let padding = "x".repeat(2000);
    let spans: Vec<Span> = (0..2000)
        .map(|i| {
            span(
                &format!("t{i}"),
                &format!("{i:x}"),
                None,
                5000 - i,
                json!({"pad": padding}),
            )
        })
        .collect();
    store.insert(&spans).unwrap();
    let max_bytes = 1 << 20;
    let retention = Retention {
        max_age: Some(Duration::from_secs(86_400)),
        max_bytes: Some(max_bytes),
    };
    let report = store
        .enforce_retention(&retention, now_unix_nanos())
        .unwrap();
    assert!(report.evicted_for_size > 1000, "{report:?}");
    let left = store
        .spans(&Query {
            limit: 5000,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(left.len() as u64, 2000 - report.evicted_for_size);
    // The newest spans are the ones kept.
    assert_eq!(left[0].span_id, spans[1999].span_id);
    assert!(std::fs::metadata(&path).unwrap().len() < 2 * max_bytes);
}

#[test]
fn reopens_what_an_earlier_writer_left() {
    let (_dir, path) = temp_db();
    drop(sample_store(&path));
    let store = Store::open_existing(&path).unwrap();
    assert_eq!(store.spans(&Query::default()).unwrap().len(), 4);
    let version: u32 = store
        .connection
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::CURRENT_VERSION);
}

#[test]
fn a_missing_store_is_reported_with_what_to_do() {
    let (_dir, path) = temp_db();
    let error = Store::open_existing(&path).err().unwrap();
    assert!(format!("{error:#}").contains("observer run"), "{error:#}");
}

/// With OBSERVER_STORE_CHILD set, writes batches until killed (run by the test below);
/// otherwise does nothing.
#[test]
fn writer_child_process() {
    let Some(path) = std::env::var_os("OBSERVER_STORE_CHILD") else {
        return;
    };
    let mut store = open(Path::new(&path));
    for batch in 0u64.. {
        let spans: Vec<Span> = (0..50)
            .map(|i| {
                span(
                    &format!("{batch:x}"),
                    &format!("{batch:x}{i:04x}"),
                    None,
                    1,
                    json!({}),
                )
            })
            .collect();
        store.insert(&spans).unwrap();
    }
}

#[test]
fn survives_sigkill_in_the_middle_of_writing() {
    let (_dir, path) = temp_db();
    drop(open(&path));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store::tests::writer_child_process",
            "--exact",
            "--test-threads=1",
        ])
        .env("OBSERVER_STORE_CHILD", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reader = Store::open_existing(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.traces(&Query::default()).unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "the child wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(reader);

    let store = open(&path);
    let integrity: String = store
        .connection
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let spans = store
        .spans(&Query {
            limit: 1_000_000,
            ..Query::default()
        })
        .unwrap();
    // Whole batches only: a transaction is all or nothing.
    assert_eq!(spans.len() % 50, 0);
    let traces = store
        .traces(&Query {
            limit: 1_000_000,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(traces.len() * 50, spans.len());
}

#[test]
fn keeps_span_kind_and_links() {
    let (_dir, path) = temp_db();
    let mut store = open(&path);
    let mut root = span(
        "a",
        "1",
        None,
        10,
        json!({"gen_ai.operation.name": "invoke_agent"}),
    );
    root.kind = SpanKind::Internal;
    let mut call = span("a", "2", Some("1"), 9, json!({}));
    call.links.push(SpanLink {
        trace_id: format!("{:0>32}", "b"),
        span_id: format!("{:0>16}", "7"),
        attributes: json!({"observer.link.reason": "same_thread"})
            .as_object()
            .cloned()
            .unwrap(),
    });
    store.insert(&[root.clone(), call.clone()]).unwrap();
    drop(store);
    let stored = Store::open_existing(&path)
        .unwrap()
        .trace_spans(&root.trace_id)
        .unwrap();
    assert_eq!(stored, [root, call]);
}

#[test]
fn an_export_cursor_starts_at_the_end_and_moves_only_from_where_it_is() {
    let (_dir, path) = temp_db();
    let mut store = open(&path);
    store
        .insert(&[
            span("a", "1", None, 5, json!({})),
            span("a", "2", None, 4, json!({})),
        ])
        .unwrap();
    let cursor = store.export_cursor("otlp").unwrap();
    assert_eq!(
        cursor.last_rowid,
        store.last_rowid().unwrap(),
        "not the history"
    );
    assert_eq!(cursor.pruned, 0);
    store
        .insert(&[
            span("a", "3", None, 3, json!({})),
            span("a", "4", None, 2, json!({})),
        ])
        .unwrap();
    let after = store.spans_after(cursor.last_rowid, 10).unwrap();
    let found: Vec<String> = after
        .iter()
        .map(|(_, span)| {
            span.as_ref()
                .unwrap()
                .span_id
                .trim_start_matches('0')
                .to_owned()
        })
        .collect();
    assert_eq!(found, ["3", "4"]);
    let first = after[0].0;
    assert_eq!(store.spans_after(cursor.last_rowid, 1).unwrap().len(), 1);
    assert!(
        store
            .advance_export_cursor("otlp", cursor.last_rowid, first)
            .unwrap()
    );
    assert!(
        !store
            .advance_export_cursor("otlp", cursor.last_rowid, first)
            .unwrap(),
        "no longer where the caller thought"
    );
    // Kept across reopening, as a restarted daemon finds it.
    drop(store);
    let mut store = open(&path);
    assert_eq!(store.export_cursor("otlp").unwrap().last_rowid, first);
    assert_eq!(store.spans_after(first, 10).unwrap().len(), 1);
}

#[test]
fn retention_counts_spans_it_deletes_before_export_and_keeps_the_cursor_honest() {
    let (_dir, path) = temp_db();
    let mut store = open(&path);
    store
        .insert(&[span("a", "1", None, 50, json!({}))])
        .unwrap();
    let cursor = store.export_cursor("otlp").unwrap();
    // Two old spans not exported yet, one recent.
    store
        .insert(&[
            span("b", "2", None, 40, json!({})),
            span("b", "3", None, 30, json!({})),
            span("c", "4", None, 1, json!({})),
        ])
        .unwrap();
    let retention = Retention {
        max_age: Some(Duration::from_secs(20)),
        max_bytes: None,
    };
    store
        .enforce_retention(&retention, now_unix_nanos())
        .unwrap();
    let after = store.export_cursor("otlp").unwrap();
    assert_eq!(after.pruned, 2, "the exported one is not counted");
    assert_eq!(after.last_rowid, cursor.last_rowid);
    assert_eq!(store.spans_after(after.last_rowid, 10).unwrap().len(), 1);

    // Everything deleted: the cursor comes back to the end, so that the rowids SQLite hands
    // out next (from the largest left, plus one) are still after it.
    let everything = Retention {
        max_age: Some(Duration::ZERO),
        max_bytes: None,
    };
    store
        .enforce_retention(&everything, now_unix_nanos() + SECOND)
        .unwrap();
    let emptied = store.export_cursor("otlp").unwrap();
    assert_eq!(emptied.pruned, 3);
    assert_eq!(emptied.last_rowid, 0);
    store.insert(&[span("d", "5", None, 0, json!({}))]).unwrap();
    assert_eq!(store.spans_after(emptied.last_rowid, 10).unwrap().len(), 1);
}

#[test]
fn an_unreadable_row_is_skipped_not_a_stuck_export() {
    let (_dir, path) = temp_db();
    let mut store = open(&path);
    let cursor = store.export_cursor("otlp").unwrap();
    store
        .insert(&[
            span("a", "1", None, 2, json!({})),
            span("a", "2", None, 1, json!({})),
        ])
        .unwrap();
    store
        .connection
        .execute(
            "UPDATE spans SET attributes = 'not json' WHERE span_id = ?1",
            [format!("{:0>16}", "1")],
        )
        .unwrap();
    let after = store.spans_after(cursor.last_rowid, 10).unwrap();
    assert_eq!(after.len(), 2);
    assert!(after[0].1.is_none());
    assert!(after[1].1.is_some());
}

/// A store written by an observer of schema version 2 keeps its spans at version 3, and gains
/// what the web view reads (cost, container, calls per trace).
#[test]
fn migrates_a_version_2_store_with_its_spans() {
    let (_dir, path) = temp_db();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let connection = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..2] {
            connection.execute_batch(sql).unwrap();
        }
        connection.pragma_update(None, "user_version", 2).unwrap();
        connection
            .execute(
                "INSERT INTO spans (span_id, trace_id, name, start_ns, end_ns, provider, \
                 input_tokens, attributes, kind) VALUES ('00000000000000a1', \
                 '000000000000000000000000000000a1', 'chat gpt-4o', 10, 20, 'openai', 5, \
                 '{\"observer.cost.usd\": 0.25, \"container.id\": \"c0ffee\"}', 'CLIENT')",
                [],
            )
            .unwrap();
    }
    let store = Store::open_existing(&path).unwrap();
    let trace = &store.traces(&Query::default()).unwrap()[0];
    assert_eq!(
        (trace.call_count, trace.cost_usd, trace.input_tokens),
        (1, 0.25, 5)
    );
    assert_eq!(store.facets().unwrap().containers, ["c0ffee"]);
    assert_eq!(store.last_rowid().unwrap(), 1);
}

#[test]
fn pages_traces_newest_first_by_cursor() {
    let (_dir, path) = temp_db();
    let mut store = open(&path);
    let spans: Vec<Span> = (0..7)
        .map(|i| span(&format!("{i}"), &format!("{i}"), None, 100 - i, json!({})))
        .collect();
    store.insert(&spans).unwrap();
    let mut seen = Vec::new();
    let mut query = Query {
        limit: 3,
        ..Query::default()
    };
    loop {
        let page = store.traces(&query).unwrap();
        seen.extend(
            page.iter()
                .map(|t| t.trace_id.trim_start_matches('0').to_string()),
        );
        let Some(last) = page.last().filter(|_| page.len() == 3) else {
            break;
        };
        query.before = Some(Cursor {
            start_ns: last.start_time_unix_nano,
            trace_id: last.trace_id.clone(),
        });
    }
    assert_eq!(seen, ["6", "5", "4", "3", "2", "1", ""]);
}

#[test]
fn filters_traces_by_the_web_views_fields() {
    let (_dir, path) = temp_db();
    let mut store = sample_store(&path);
    store
        .insert(&[span(
            "c",
            "5",
            None,
            5,
            json!({"observer.cost.usd": 0.5, "gen_ai.response.model": "gpt-4o-2024",
                   "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "find the needle"}]}]}),
        )])
        .unwrap();
    let found = |filters: &[(&str, &str, &str)]| -> Vec<String> {
        store
            .traces(&query(filters))
            .unwrap()
            .iter()
            .map(|t| t.trace_id.trim_start_matches('0').to_string())
            .collect()
    };
    assert_eq!(found(&[("messages", "contains", "needle")]), ["c"]);
    assert_eq!(found(&[("cost_usd", "ge", "0.5")]), ["c"]);
    assert_eq!(found(&[("model", "eq", "gpt-4o-2024")]), ["c"]);
    assert_eq!(found(&[("error_count", "gt", "0")]), ["a"]);
    assert_eq!(found(&[("tokens", "ge", "130")]), ["a"]);
    let host = crate::callers::host_name();
    assert_eq!(found(&[("host.name", "eq", &host)]).len(), 3);
}

#[test]
fn sums_usage_per_bucket_and_key() {
    let (_dir, path) = temp_db();
    let store = sample_store(&path);
    let now = now_unix_nanos();
    let usage = store
        .usage(&UsageQuery::new(now - 60 * SECOND, now, 2, UsageKey::Model).unwrap())
        .unwrap();
    let calls: u64 = usage.points.iter().map(|p| p.calls).sum();
    assert_eq!(calls, 4);
    let claude = usage
        .points
        .iter()
        .find(|p| p.key == "claude-sonnet-4")
        .unwrap();
    assert_eq!((claude.bucket, claude.input_tokens), (1, 100));
    assert!(UsageQuery::new(now, now, 2, UsageKey::Host).is_err());
    assert!(UsageQuery::new(0, now, 0, UsageKey::Host).is_err());
}

/// Spans followed by sequence number are never missed, even when the newest rows were pruned
/// before new ones came (a replayed old recording, then a live capture).
#[test]
fn sequence_numbers_are_never_reused() {
    let (_dir, path) = temp_db();
    let mut store = sample_store(&path);
    let last = store.last_rowid().unwrap();
    store
        .connection
        .execute("DELETE FROM spans WHERE seq = ?1", [last])
        .unwrap();
    let after = store.last_rowid().unwrap();
    store.insert(&[span("z", "9", None, 1, json!({}))]).unwrap();
    let new = store.spans_after(after, 10).unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].1.as_ref().unwrap().span_id, format!("{:0>16}", "9"));
    assert!(new[0].0 > last);
}

#[test]
fn finds_the_spans_linking_to_a_span() {
    let (_dir, path) = temp_db();
    let mut store = open(&path);
    let first = span("a", "1", None, 20, json!({}));
    let mut second = span("a", "2", None, 10, json!({}));
    second.links.push(SpanLink {
        trace_id: first.trace_id.clone(),
        span_id: first.span_id.clone(),
        attributes: json!({"observer.link.reason": "same_thread"})
            .as_object()
            .cloned()
            .unwrap(),
    });
    store.insert(&[first.clone(), second]).unwrap();
    let later = store
        .linked_from(&first.span_id, first.start_time_unix_nano)
        .unwrap();
    assert_eq!(ids(&later), ["2"]);
    assert!(store.linked_from(&later[0].span_id, 0).unwrap().is_empty());
}
