//! The embedded store: spans in a SQLite file (WAL, so a reader never waits on the writer and
//! a crash loses at most the uncommitted batch), traces kept beside them, old data pruned.
mod browse;
mod export;
mod retention;
mod schema;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, Row, params_from_iter, types::Value as SqlValue};
use serde_json::Value;

pub use browse::{Facets, MAX_BUCKETS, Usage, UsageKey, UsagePoint, UsageQuery};
pub use export::{ExportCursor, StoredSpan};
pub use retention::{Retention, RetentionReport};

use crate::{
    private_file,
    query::{self, ATTRIBUTE_COLUMNS, Query, SPAN_COLUMNS, TraceSummary},
    span::{GenAi, Span, SpanKind, SpanLink},
};

/// Where `observer run` keeps its store, and where the query commands look by default.
pub const DEFAULT_PATH: &str = "/var/lib/observer/observer.db";

pub struct Store {
    connection: Connection,
    path: PathBuf,
    /// This machine's name, stored with each span written (`host.name` in queries).
    host: String,
}

impl Store {
    /// Opens (creating if needed) the store a writer uses, migrates it and prunes it once. The
    /// database is made private before SQLite opens it: SQLite gives the WAL and shared-memory
    /// files it creates the database's permissions; ones left by an earlier run are tightened.
    pub fn open(path: &Path, retention: &Retention) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_file::create_dir_all(dir, false)
                .with_context(|| format!("creating the store's directory {}", dir.display()))?;
        }
        let context = || format!("opening the store {}", path.display());
        private_file::create_keeping(path).with_context(context)?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut companion = path.as_os_str().to_owned();
            companion.push(suffix);
            private_file::tighten_if_present(Path::new(&companion)).with_context(context)?;
        }
        let connection = Connection::open(path)?;
        // Only takes effect on a new file; lets pruning give pages back to the file system.
        connection.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let mut store = Store::configure(connection, path)?;
        store.enforce_retention(retention, now_unix_nanos())?;
        Ok(store)
    }

    /// Opens a store that must already exist, for the query commands.
    pub fn open_existing(path: &Path) -> Result<Store> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).with_context(|| {
            format!(
                "no store at {}: start `observer run` (or `observer capture --store {0}`) \
                 first, or pass --db PATH",
                path.display()
            )
        })?;
        Store::configure(connection, path)
    }

    fn configure(mut connection: Connection, path: &Path) -> Result<Store> {
        let context = || format!("opening the store {}", path.display());
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .with_context(context)?;
        // With WAL, NORMAL loses at most the last commits on power loss, never consistency.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // The daemon writes while `observer serve` reads: wait for the other's lock briefly.
        connection.busy_timeout(Duration::from_secs(5))?;
        schema::migrate(&mut connection).with_context(context)?;
        Ok(Store {
            connection,
            path: path.to_path_buf(),
            host: crate::callers::host_name(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds spans in one transaction; a span already stored (same span id) is left as it is.
    pub fn insert(&mut self, spans: &[Span]) -> Result<()> {
        let transaction = self.connection.transaction()?;
        {
            let mut statement = transaction.prepare_cached(&insert_sql())?;
            for span in spans {
                statement.execute(params_from_iter(span_row(span, &self.host)?))?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    pub fn enforce_retention(
        &mut self,
        retention: &Retention,
        now_ns: u64,
    ) -> Result<RetentionReport> {
        retention::enforce(&mut self.connection, retention, now_ns)
    }

    pub fn traces(&self, query: &Query) -> Result<Vec<TraceSummary>> {
        let sql = query::traces_sql(query, now_unix_nanos())?;
        let mut statement = self.connection.prepare(&sql.text)?;
        let rows = statement.query_map(params_from_iter(sql.params), |row| {
            Ok(TraceSummary {
                trace_id: row.get(0)?,
                root_name: row.get(1)?,
                start_time_unix_nano: row.get(2)?,
                end_time_unix_nano: row.get(3)?,
                span_count: row.get(4)?,
                input_tokens: row.get(5)?,
                output_tokens: row.get(6)?,
                error_count: row.get(7)?,
                call_count: row.get(8)?,
                cost_usd: row.get(9)?,
                process: row.get(10)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn spans(&self, query: &Query) -> Result<Vec<Span>> {
        let sql = query::spans_sql(query, now_unix_nanos());
        self.select_spans(&sql.text, sql.params)
    }

    /// Every span of one trace, earliest first.
    pub fn trace_spans(&self, trace_id: &str) -> Result<Vec<Span>> {
        let sql = format!("SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = ?1 ORDER BY start_ns");
        self.select_spans(&sql, vec![SqlValue::Text(trace_id.to_string())])
    }

    pub fn span(&self, span_id: &str) -> Result<Option<Span>> {
        let sql = format!("SELECT {SPAN_COLUMNS} FROM spans WHERE span_id = ?1");
        let spans = self.select_spans(&sql, vec![SqlValue::Text(span_id.to_string())])?;
        Ok(spans.into_iter().next())
    }

    fn select_spans(&self, sql: &str, params: Vec<SqlValue>) -> Result<Vec<Span>> {
        let mut statement = self.connection.prepare_cached(sql)?;
        let rows = statement.query_map(params_from_iter(params), span_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn insert_sql() -> String {
    let columns: Vec<&str> = ATTRIBUTE_COLUMNS
        .iter()
        .map(|(_, column)| *column)
        .collect();
    let placeholders = vec!["?"; 10 + columns.len()].join(", ");
    format!(
        "INSERT INTO spans (span_id, trace_id, parent_span_id, name, start_ns, end_ns, \
         attributes, kind, links, host, {}) VALUES ({placeholders}) \
         ON CONFLICT(span_id) DO NOTHING",
        columns.join(", ")
    )
}

/// The values for [`insert_sql`]'s placeholders.
fn span_row(span: &Span, host: &str) -> Result<Vec<SqlValue>> {
    let mut row = vec![
        SqlValue::Text(span.span_id.clone()),
        SqlValue::Text(span.trace_id.clone()),
        span.parent_span_id
            .clone()
            .map_or(SqlValue::Null, SqlValue::Text),
        SqlValue::Text(span.name.clone()),
        SqlValue::Integer(nanos_to_sql(span.start_time_unix_nano)),
        SqlValue::Integer(nanos_to_sql(span.end_time_unix_nano)),
        SqlValue::Text(span.flat_attributes_json()?),
        SqlValue::Text(span.kind.as_str().to_owned()),
        match span.links.as_slice() {
            [] => SqlValue::Null,
            links => SqlValue::Text(
                Value::Array(links.iter().map(SpanLink::to_json).collect()).to_string(),
            ),
        },
        SqlValue::Text(host.to_owned()),
    ];
    row.extend(ATTRIBUTE_COLUMNS.iter().map(|(key, _)| {
        span.flat_attribute(key)
            .map_or(SqlValue::Null, |value| json_to_sql(&value))
    }));
    Ok(row)
}

fn json_to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

pub(crate) fn span_from_row(row: &Row) -> rusqlite::Result<Span> {
    let attributes: String = row.get(6)?;
    let mut attributes = serde_json::from_str(&attributes).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(error))
    })?;
    let kind: Option<String> = row.get(7)?;
    let links: Option<String> = row.get(8)?;
    // Links are the store's own JSON: unreadable ones (never written so) are left out.
    let links = links
        .and_then(|text| serde_json::from_str::<Vec<Value>>(&text).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(SpanLink::from_json)
        .collect();
    Ok(Span {
        span_id: row.get(0)?,
        trace_id: row.get(1)?,
        parent_span_id: row.get(2)?,
        name: row.get(3)?,
        kind: kind.as_deref().map_or(SpanKind::Client, SpanKind::parse),
        start_time_unix_nano: row.get(4)?,
        end_time_unix_nano: row.get(5)?,
        gen_ai: GenAi::take_from(&mut attributes),
        attributes,
        links,
    })
}

/// SQLite integers are signed; nanoseconds since 1970 fit until 2262.
fn nanos_to_sql(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
pub(crate) mod tests;
