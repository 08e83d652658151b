//! What the web view asks of the store besides lists of traces and spans: the values worth
//! filtering on, usage over time, the spans that link to a span, and the spans written since
//! it last looked (by `seq`, which only grows: it is never reused, pruned rows' included).
use anyhow::{Result, bail};
use rusqlite::{params, types::Value as SqlValue};
use serde::Serialize;

use super::{Store, nanos_to_sql, span_from_row};
use crate::{query::SPAN_COLUMNS, span::Span};

/// Distinct values offered per filter, at most.
const MAX_FACET_VALUES: i64 = 200;
/// Buckets a usage answer may have at most.
pub const MAX_BUCKETS: u32 = 1000;
/// Spans that link to one, at most this many.
const MAX_LINKED_FROM: i64 = 100;

/// The values seen in the store, per field the traces can be filtered on.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Facets {
    pub providers: Vec<String>,
    pub models: Vec<String>,
    pub processes: Vec<String>,
    pub containers: Vec<String>,
    pub hosts: Vec<String>,
}

/// What usage is grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageKey {
    Model,
    Provider,
    Process,
    Host,
}

impl std::str::FromStr for UsageKey {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<UsageKey> {
        Ok(match s {
            "model" => UsageKey::Model,
            "provider" => UsageKey::Provider,
            "process" => UsageKey::Process,
            "host" => UsageKey::Host,
            _ => bail!("usage is grouped by model, provider, process or host, not `{s}`"),
        })
    }
}

impl UsageKey {
    fn column(self) -> &'static str {
        match self {
            UsageKey::Model => "coalesce(response_model, request_model)",
            UsageKey::Provider => "provider",
            UsageKey::Process => "exe_name",
            UsageKey::Host => "host",
        }
    }
}

/// A time window cut into buckets, and what to group by.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageQuery {
    from_ns: u64,
    to_ns: u64,
    buckets: u32,
    by: UsageKey,
}

impl UsageQuery {
    pub fn new(from_ns: u64, to_ns: u64, buckets: u32, by: UsageKey) -> Result<UsageQuery> {
        if to_ns <= from_ns {
            bail!("the time window is empty: `to` must come after `from`");
        }
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            bail!("buckets should be a number from 1 to {MAX_BUCKETS}");
        }
        Ok(UsageQuery {
            from_ns,
            to_ns,
            buckets,
            by,
        })
    }
}

/// LLM calls started in `[from, to)`, summed per bucket of time and key.
#[derive(Debug, PartialEq, Serialize)]
pub struct Usage {
    pub from_ns: u64,
    pub to_ns: u64,
    pub bucket_ns: u64,
    pub points: Vec<UsagePoint>,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct UsagePoint {
    /// Index of the bucket, from 0 at `from_ns`.
    pub bucket: u64,
    /// The model, provider, process or host; empty when the calls did not say.
    pub key: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl Store {
    pub fn facets(&self) -> Result<Facets> {
        // Each read off its column's index, not the table.
        let distinct = |column: &str| -> Result<Vec<String>> {
            let sql = format!(
                "SELECT DISTINCT {column} FROM spans WHERE {column} IS NOT NULL \
                 AND {column} != '' ORDER BY {column} LIMIT ?1"
            );
            let mut statement = self.connection.prepare_cached(&sql)?;
            let rows = statement.query_map(params![MAX_FACET_VALUES], |row| row.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        let mut models = distinct("request_model")?;
        models.extend(distinct("response_model")?);
        models.sort();
        models.dedup();
        Ok(Facets {
            providers: distinct("provider")?,
            models,
            processes: distinct("exe_name")?,
            containers: distinct("container_id")?,
            hosts: distinct("host")?,
        })
    }

    pub fn usage(&self, query: &UsageQuery) -> Result<Usage> {
        let bucket_ns = (query.to_ns - query.from_ns)
            .div_ceil(u64::from(query.buckets))
            .max(1);
        // The key expression is one of ours; every value is bound.
        let sql = format!(
            "SELECT (start_ns - ?1) / ?3 AS bucket, ifnull({key}, '') AS key, count(*), \
             total(input_tokens), total(output_tokens), total(cost_usd) \
             FROM spans WHERE start_ns >= ?1 AND start_ns < ?2 AND provider IS NOT NULL \
             AND ifnull(kind, 'CLIENT') = 'CLIENT' GROUP BY bucket, key ORDER BY bucket, key",
            key = query.by.column()
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let bounds = [query.from_ns, query.to_ns, bucket_ns].map(nanos_to_sql);
        let rows = statement.query_map(params![bounds[0], bounds[1], bounds[2]], |row| {
            Ok(UsagePoint {
                bucket: row.get(0)?,
                key: row.get(1)?,
                calls: row.get(2)?,
                input_tokens: row.get::<_, f64>(3)? as u64,
                output_tokens: row.get::<_, f64>(4)? as u64,
                cost_usd: row.get(5)?,
            })
        })?;
        Ok(Usage {
            from_ns: query.from_ns,
            to_ns: query.to_ns,
            bucket_ns,
            points: rows.collect::<rusqlite::Result<_>>()?,
        })
    }

    /// The spans that name `span_id` in their links (the calls that followed it), earliest
    /// first. A link always points back in time, so only spans from `since_ns` on are read.
    pub fn linked_from(&self, span_id: &str, since_ns: u64) -> Result<Vec<Span>> {
        let sql = format!(
            "SELECT {SPAN_COLUMNS} FROM spans WHERE start_ns >= ?1 AND links IS NOT NULL \
             AND instr(links, ?2) > 0 ORDER BY start_ns LIMIT ?3"
        );
        let needle = SqlValue::Text(format!("\"span_id\":\"{span_id}\""));
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(
            params![nanos_to_sql(since_ns), needle, MAX_LINKED_FROM],
            span_from_row,
        )?;
        let spans: Vec<Span> = rows.collect::<rusqlite::Result<_>>()?;
        // instr found the id in the text; keep the spans whose links do name it.
        Ok(spans
            .into_iter()
            .filter(|span| span.links.iter().any(|link| link.span_id == span_id))
            .collect())
    }
}
