//! The store's tables, versioned with SQLite's `user_version`: each migration moves the schema
//! one version up, inside one transaction, so an interrupted migration leaves the old version.
use rusqlite::{Connection, Transaction};

/// Each entry takes the schema from version `index` to `index + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: spans with the attributes queries filter on most as columns, and traces kept
    // up to date by triggers so listing traces never scans spans.
    r#"
    CREATE TABLE spans (
        span_id        TEXT PRIMARY KEY,
        trace_id       TEXT NOT NULL,
        parent_span_id TEXT,
        name           TEXT NOT NULL,
        start_ns       INTEGER NOT NULL,
        end_ns         INTEGER NOT NULL,
        provider       TEXT,
        operation      TEXT,
        request_model  TEXT,
        response_model TEXT,
        pid            INTEGER,
        exe_name       TEXT,
        input_tokens   INTEGER,
        output_tokens  INTEGER,
        error_type     TEXT,
        status_code    INTEGER,
        attributes     TEXT NOT NULL
    );
    CREATE INDEX spans_by_start ON spans(start_ns);
    CREATE INDEX spans_by_trace ON spans(trace_id, start_ns);
    CREATE INDEX spans_by_request_model ON spans(request_model, start_ns);
    CREATE INDEX spans_by_response_model ON spans(response_model, start_ns);
    CREATE INDEX spans_by_provider ON spans(provider, start_ns);
    CREATE INDEX spans_by_pid ON spans(pid, start_ns);
    CREATE INDEX spans_by_exe ON spans(exe_name, start_ns);

    CREATE TABLE traces (
        trace_id      TEXT PRIMARY KEY,
        root_name     TEXT NOT NULL,
        start_ns      INTEGER NOT NULL,
        end_ns        INTEGER NOT NULL,
        span_count    INTEGER NOT NULL,
        input_tokens  INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        error_count   INTEGER NOT NULL
    );
    CREATE INDEX traces_by_start ON traces(start_ns);

    -- A trace's row is recomputed from its spans (found through spans_by_trace; SQLite pushes
    -- the trace_id condition into the view) whenever one is added or removed: always right,
    -- and cheap for traces of a few hundred spans.
    CREATE VIEW trace_rollup AS
    SELECT s.trace_id,
           (SELECT name FROM spans r WHERE r.trace_id = s.trace_id
             ORDER BY r.parent_span_id IS NOT NULL, r.start_ns LIMIT 1),
           min(s.start_ns), max(s.end_ns), count(*),
           coalesce(sum(s.input_tokens), 0), coalesce(sum(s.output_tokens), 0),
           count(s.error_type)
    FROM spans s GROUP BY s.trace_id;
    CREATE TRIGGER spans_insert_refreshes_trace AFTER INSERT ON spans BEGIN
        INSERT OR REPLACE INTO traces SELECT * FROM trace_rollup WHERE trace_id = NEW.trace_id;
    END;
    CREATE TRIGGER spans_delete_refreshes_trace AFTER DELETE ON spans BEGIN
        DELETE FROM traces WHERE trace_id = OLD.trace_id;
        INSERT INTO traces SELECT * FROM trace_rollup WHERE trace_id = OLD.trace_id;
    END;
    "#,
    // 2: span kind (CLIENT calls, INTERNAL inferred spans) and span links (JSON), from the
    // link stage. Rows written before have neither: NULL reads as CLIENT and no links.
    r#"
    ALTER TABLE spans ADD COLUMN kind TEXT;
    ALTER TABLE spans ADD COLUMN links TEXT;
    "#,
    // 3: where each exporter stands in the spans (by rowid, which SQLite assigns in insertion
    // order). Deleting spans keeps every cursor honest in the same transaction: spans deleted
    // past a cursor are counted as pruned before export, and a cursor past the last rowid
    // left is brought back to it, since SQLite hands the next insert that rowid plus one.
    r#"
    CREATE TABLE export_cursor (
        name       TEXT PRIMARY KEY,
        last_rowid INTEGER NOT NULL,
        pruned     INTEGER NOT NULL DEFAULT 0
    );
    CREATE TRIGGER spans_delete_moves_export_cursors AFTER DELETE ON spans BEGIN
        UPDATE export_cursor SET pruned = pruned + 1 WHERE OLD.rowid > last_rowid;
        UPDATE export_cursor SET last_rowid = (SELECT coalesce(max(rowid), 0) FROM spans)
         WHERE last_rowid > (SELECT coalesce(max(rowid), 0) FROM spans);
    END;
    "#,
    // 4: what the web view lists and sums: each span's cost, container and writing host as
    // columns; each trace's LLM calls, cost and process; traces paged by (start, id). Spans
    // get a sequence number that is never reused (AUTOINCREMENT), so that a reader following
    // new rows by rowid misses none even after the newest-written rows were pruned (a replayed
    // old recording); the table is rebuilt for it (each row keeps its rowid as its number, so
    // the export cursors stay where they were), with the view and triggers over it.
    r#"
    DROP TRIGGER spans_insert_refreshes_trace;
    DROP TRIGGER spans_delete_refreshes_trace;
    DROP VIEW trace_rollup;

    CREATE TABLE spans_v3 (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        span_id        TEXT NOT NULL UNIQUE,
        trace_id       TEXT NOT NULL,
        parent_span_id TEXT,
        name           TEXT NOT NULL,
        start_ns       INTEGER NOT NULL,
        end_ns         INTEGER NOT NULL,
        provider       TEXT,
        operation      TEXT,
        request_model  TEXT,
        response_model TEXT,
        pid            INTEGER,
        exe_name       TEXT,
        input_tokens   INTEGER,
        output_tokens  INTEGER,
        error_type     TEXT,
        status_code    INTEGER,
        attributes     TEXT NOT NULL,
        kind           TEXT,
        links          TEXT,
        cost_usd       REAL,
        container_id   TEXT,
        host           TEXT
    );
    INSERT INTO spans_v3 (seq, span_id, trace_id, parent_span_id, name, start_ns, end_ns, provider,
        operation, request_model, response_model, pid, exe_name, input_tokens, output_tokens,
        error_type, status_code, attributes, kind, links, cost_usd, container_id)
    SELECT rowid, span_id, trace_id, parent_span_id, name, start_ns, end_ns, provider, operation,
        request_model, response_model, pid, exe_name, input_tokens, output_tokens, error_type,
        status_code, attributes, kind, links,
        json_extract(attributes, '$."observer.cost.usd"'),
        json_extract(attributes, '$."container.id"')
    FROM spans ORDER BY rowid;
    DROP TABLE spans;
    ALTER TABLE spans_v3 RENAME TO spans;
    CREATE INDEX spans_by_start ON spans(start_ns);
    CREATE INDEX spans_by_trace ON spans(trace_id, start_ns);
    CREATE INDEX spans_by_request_model ON spans(request_model, start_ns);
    CREATE INDEX spans_by_response_model ON spans(response_model, start_ns);
    CREATE INDEX spans_by_provider ON spans(provider, start_ns);
    CREATE INDEX spans_by_pid ON spans(pid, start_ns);
    CREATE INDEX spans_by_exe ON spans(exe_name, start_ns);
    CREATE INDEX spans_by_container ON spans(container_id, start_ns);
    CREATE INDEX spans_by_host ON spans(host, start_ns);

    ALTER TABLE traces ADD COLUMN call_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE traces ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE traces ADD COLUMN process TEXT;
    DROP INDEX traces_by_start;
    CREATE INDEX traces_by_start_id ON traces(start_ns, trace_id);

    CREATE VIEW trace_rollup AS
    SELECT s.trace_id,
           (SELECT name FROM spans r WHERE r.trace_id = s.trace_id
             ORDER BY r.parent_span_id IS NOT NULL, r.start_ns LIMIT 1),
           min(s.start_ns), max(s.end_ns), count(*),
           coalesce(sum(s.input_tokens), 0), coalesce(sum(s.output_tokens), 0),
           count(s.error_type),
           sum(s.provider IS NOT NULL AND coalesce(s.kind, 'CLIENT') = 'CLIENT'),
           total(s.cost_usd),
           max(s.exe_name)
    FROM spans s GROUP BY s.trace_id;
    CREATE TRIGGER spans_insert_refreshes_trace AFTER INSERT ON spans BEGIN
        INSERT OR REPLACE INTO traces SELECT * FROM trace_rollup WHERE trace_id = NEW.trace_id;
    END;
    CREATE TRIGGER spans_delete_refreshes_trace AFTER DELETE ON spans BEGIN
        DELETE FROM traces WHERE trace_id = OLD.trace_id;
        INSERT INTO traces SELECT * FROM trace_rollup WHERE trace_id = OLD.trace_id;
    END;
    CREATE TRIGGER spans_delete_moves_export_cursors AFTER DELETE ON spans BEGIN
        UPDATE export_cursor SET pruned = pruned + 1 WHERE OLD.seq > last_rowid;
        UPDATE export_cursor SET last_rowid = (SELECT coalesce(max(seq), 0) FROM spans)
         WHERE last_rowid > (SELECT coalesce(max(seq), 0) FROM spans);
    END;
    INSERT OR REPLACE INTO traces SELECT * FROM trace_rollup;
    "#,
];

pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the schema to the current version.
pub fn migrate(connection: &mut Connection) -> anyhow::Result<()> {
    let found: u32 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > CURRENT_VERSION {
        anyhow::bail!(
            "the store has schema version {found}, newer than this observer's {CURRENT_VERSION}: \
             upgrade observer or use another --db path"
        );
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        set_version(&transaction, version as u32 + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

fn set_version(transaction: &Transaction, version: u32) -> rusqlite::Result<()> {
    transaction.pragma_update(None, "user_version", version)
}
