//! Queries over the store, shared by `observer traces` and the HTTP API: filters on any
//! attribute, a time window, paging and ordering, turned into SQL whose every user-given
//! value is a bound parameter.
pub mod render;
pub mod tree;

use std::{str::FromStr, time::Duration};

use anyhow::{Context, Result, bail};
use rusqlite::types::Value as SqlValue;
use serde::Serialize;

use crate::llm::attr;

/// Attributes copied into their own indexed column: (attribute key, column name).
pub const ATTRIBUTE_COLUMNS: &[(&str, &str)] = &[
    (attr::PROVIDER_NAME, "provider"),
    (attr::OPERATION_NAME, "operation"),
    (attr::REQUEST_MODEL, "request_model"),
    (attr::RESPONSE_MODEL, "response_model"),
    (attr::PROCESS_PID, "pid"),
    (attr::PROCESS_EXECUTABLE_NAME, "exe_name"),
    (attr::USAGE_INPUT_TOKENS, "input_tokens"),
    (attr::USAGE_OUTPUT_TOKENS, "output_tokens"),
    (attr::ERROR_TYPE, "error_type"),
    (attr::HTTP_RESPONSE_STATUS_CODE, "status_code"),
    (attr::OBSERVER_COST_USD, "cost_usd"),
    (attr::CONTAINER_ID, "container_id"),
];

/// Columns selected to rebuild a span, in the order the store reads them.
pub const SPAN_COLUMNS: &str =
    "span_id, trace_id, parent_span_id, name, start_ns, end_ns, attributes, kind, links";

/// A trace as listed: its root and its totals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_name: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub span_count: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub error_count: u64,
    /// Spans that are LLM calls (not the agent root or tools).
    pub call_count: u64,
    pub cost_usd: f64,
    /// The executable that made the calls.
    pub process: Option<String>,
}

pub const DEFAULT_LIMIT: u32 = 50;
/// Rows one query may return at most.
pub const MAX_LIMIT: u32 = 10_000;

#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub filters: Vec<Filter>,
    pub since: Option<Duration>,
    pub limit: u32,
    pub offset: u32,
    /// Newest first when not given.
    pub order_by: Option<OrderBy>,
    /// Traces only, newest first: the page after the trace with this start and id.
    pub before: Option<Cursor>,
}

/// Where a page of traces listed newest first ended: its last trace's start and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub start_ns: u64,
    pub trace_id: String,
}

impl FromStr for Cursor {
    type Err = anyhow::Error;

    /// `START_NS:TRACE_ID`, as the API gives it with each page.
    fn from_str(s: &str) -> Result<Cursor> {
        let parsed = s.split_once(':').and_then(|(start, id)| {
            let valid_id = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit());
            Some(Cursor {
                start_ns: start.parse().ok()?,
                trace_id: valid_id.then(|| id.to_string())?,
            })
        });
        parsed.with_context(|| format!("cursor `{s}` is not START_NS:TRACE_ID"))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.start_ns, self.trace_id)
    }
}

impl Default for Query {
    fn default() -> Self {
        Query {
            filters: Vec::new(),
            since: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
            order_by: None,
            before: None,
        }
    }
}

impl Query {
    /// The HTTP API's parameters: `where` (repeatable, `FIELD:OP:VALUE`), `since`, `limit`,
    /// `offset`, `order_by` and `before` (a cursor).
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Query> {
        let mut query = Query::default();
        for (key, value) in pairs {
            match key.as_str() {
                "where" => query.filters.push(Filter::parse_colon_form(value)?),
                "since" => query.since = Some(parse_duration(value)?),
                "limit" => query.limit = parse_limit(value)?,
                "offset" => {
                    query.offset = value
                        .parse()
                        .with_context(|| format!("offset `{value}` is not a whole number"))?
                }
                "order_by" => query.order_by = Some(value.parse()?),
                "before" => query.before = Some(value.parse()?),
                _ => {
                    bail!(
                        "unknown parameter `{key}`: use where, since, limit, offset, order_by \
                         or before"
                    )
                }
            }
        }
        Ok(query)
    }
}

/// A row count from 1 to [`MAX_LIMIT`].
pub fn parse_limit(text: &str) -> Result<u32> {
    match text.parse::<u32>() {
        Ok(limit @ 1..=MAX_LIMIT) => Ok(limit),
        _ => bail!("limit `{text}` should be a number from 1 to {MAX_LIMIT}"),
    }
}

/// `FIELD OP VALUE`: FIELD is a span field (`name`, `duration`, …), a trace field when
/// listing traces (`span_count`, …) or any attribute key.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub field: String,
    pub op: Op,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Contains,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
}

impl FromStr for Op {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Op> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "eq" | "=" | "==" => Op::Eq,
            "ne" | "!=" => Op::Ne,
            "gt" | ">" => Op::Gt,
            "lt" | "<" => Op::Lt,
            "ge" | ">=" => Op::Ge,
            "le" | "<=" => Op::Le,
            "contains" => Op::Contains,
            _ => bail!("unknown operator `{s}`: use eq, ne, gt, lt, ge, le or contains"),
        })
    }
}

impl Filter {
    pub fn new(field: &str, op: &str, value: &str) -> Result<Filter> {
        Ok(Filter {
            field: checked_field(field)?.to_string(),
            op: op.parse()?,
            value: value.to_string(),
        })
    }

    /// The HTTP form `FIELD:OP:VALUE` (the value may itself hold colons).
    pub fn parse_colon_form(text: &str) -> Result<Filter> {
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(field), Some(op), Some(value)) => Filter::new(field, op, value),
            _ => {
                bail!("filter `{text}` is not FIELD:OP:VALUE (e.g. gen_ai.request.model:eq:gpt-4o)")
            }
        }
    }
}

impl FromStr for OrderBy {
    type Err = anyhow::Error;

    /// `field`, `-field`, `field:desc` or `field:asc`.
    fn from_str(s: &str) -> Result<OrderBy> {
        let (field, descending) = if let Some(field) = s.strip_prefix('-') {
            (field, true)
        } else if let Some(field) = s.strip_suffix(":desc") {
            (field, true)
        } else {
            (s.strip_suffix(":asc").unwrap_or(s), false)
        };
        Ok(OrderBy {
            field: checked_field(field)?.to_string(),
            descending,
        })
    }
}

/// `30s`, `15m`, `2h`, `7d`, `1w`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("duration `{text}` needs a unit: s, m, h, d or w (e.g. 15m)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().with_context(|| {
        format!("duration `{text}` should start with a whole number (e.g. 15m)")
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("unknown unit `{unit}` in `{text}`: use s, m, h, d or w"),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// Field names are attribute keys: letters, digits, `_`, `.` and `-`. Anything else is
/// refused, so a name can never leave its JSON path or column.
fn checked_field(field: &str) -> Result<&str> {
    let valid = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        bail!("`{field}` is not a field name (letters, digits, `_`, `.`, `-`)");
    }
    Ok(field)
}

/// SQL text and the values for its `?` placeholders, in order.
#[derive(Debug, Default, PartialEq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<SqlValue>,
}

impl Sql {
    fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("?{}", self.params.len())
    }
}

/// The span fields that are not attributes, with their columns.
const SPAN_FIELDS: &[(&str, &str)] = &[
    ("trace_id", "trace_id"),
    ("span_id", "span_id"),
    ("parent_span_id", "parent_span_id"),
    ("name", "name"),
    ("start_time", "start_ns"),
    ("start_time_unix_nano", "start_ns"),
    ("end_time", "end_ns"),
    ("end_time_unix_nano", "end_ns"),
    ("duration", "(end_ns - start_ns)"),
    // The host whose observer wrote the span (a resource attribute, not stored per span).
    ("host.name", "host"),
    ("model", "coalesce(response_model, request_model)"),
    // Message text, where content is kept: instructions, input and output as their JSON.
    (
        "messages",
        "(ifnull(json_extract(attributes, '$.\"gen_ai.system_instructions\"'), '') || \
         ifnull(json_extract(attributes, '$.\"gen_ai.input.messages\"'), '') || \
         ifnull(json_extract(attributes, '$.\"gen_ai.output.messages\"'), ''))",
    ),
];

/// The fields of a listed trace, with their columns in `traces`.
const TRACE_FIELDS: &[(&str, &str)] = &[
    ("trace_id", "trace_id"),
    ("root_name", "root_name"),
    ("start_time", "start_ns"),
    ("start_time_unix_nano", "start_ns"),
    ("end_time", "end_ns"),
    ("end_time_unix_nano", "end_ns"),
    ("duration", "(end_ns - start_ns)"),
    ("span_count", "span_count"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("error_count", "error_count"),
    ("call_count", "call_count"),
    ("cost_usd", "cost_usd"),
    ("tokens", "(input_tokens + output_tokens)"),
    ("process", "process"),
];

fn lookup(fields: &[(&str, &'static str)], field: &str) -> Option<&'static str> {
    fields
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, column)| *column)
}

/// A span field as an SQL expression over `spans`: its column when it has one, else the
/// attribute from the JSON (the path is bound too).
fn span_expression(field: &str, sql: &mut Sql) -> (String, Typing) {
    if let Some(column) = lookup(SPAN_FIELDS, field).or_else(|| lookup(ATTRIBUTE_COLUMNS, field)) {
        return (column.to_string(), Typing::Column);
    }
    let path = sql.bind(SqlValue::Text(format!("$.\"{field}\"")));
    (format!("json_extract(attributes, {path})"), Typing::Json)
}

/// Columns have a type affinity, so SQLite converts a bound text value to compare; values out
/// of JSON have none, so a numeric-looking value is compared as a number or as text depending
/// on what the attribute holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Typing {
    Column,
    Json,
}

fn condition(expression: &str, typing: Typing, filter: &Filter, sql: &mut Sql) -> String {
    let operator = match filter.op {
        Op::Eq => "IS",
        Op::Ne => "IS NOT",
        Op::Gt => ">",
        Op::Lt => "<",
        Op::Ge => ">=",
        Op::Le => "<=",
        Op::Contains => {
            let needle = sql.bind(SqlValue::Text(filter.value.clone()));
            return format!("instr({expression}, {needle}) > 0");
        }
    };
    let text = SqlValue::Text(filter.value.clone());
    match (typing, as_number(&filter.value)) {
        (Typing::Json, Some(number)) => {
            let text = sql.bind(text);
            let number = sql.bind(number);
            format!(
                "(CASE WHEN typeof({expression}) = 'text' THEN {expression} {operator} {text} \
                 ELSE {expression} {operator} {number} END)"
            )
        }
        // A column converts a number to its own type; an expression over columns (`duration`,
        // `tokens`) has no type of its own, and would compare a number with text.
        (Typing::Column, Some(number)) => format!("{expression} {operator} {}", sql.bind(number)),
        _ => format!("{expression} {operator} {}", sql.bind(text)),
    }
}

/// A value as JSON would give it to SQL: booleans are 1 and 0.
fn as_number(value: &str) -> Option<SqlValue> {
    match value {
        "true" => Some(SqlValue::Integer(1)),
        "false" => Some(SqlValue::Integer(0)),
        _ => value
            .parse::<i64>()
            .map(SqlValue::Integer)
            .ok()
            .or_else(|| value.parse::<f64>().ok().map(SqlValue::Real)),
    }
}

fn since_cutoff(query: &Query, now_ns: u64) -> Option<SqlValue> {
    query.since.map(|since| {
        let cutoff = now_ns.saturating_sub(since.as_nanos() as u64);
        SqlValue::Integer(i64::try_from(cutoff).unwrap_or(i64::MAX))
    })
}

fn direction(order: &OrderBy) -> &'static str {
    if order.descending { "DESC" } else { "ASC" }
}

fn finish(mut sql: Sql, conditions: Vec<String>, order: String, query: &Query) -> Sql {
    if !conditions.is_empty() {
        sql.text.push_str(" WHERE ");
        sql.text.push_str(&conditions.join(" AND "));
    }
    let limit = sql.bind(SqlValue::Integer(query.limit.into()));
    let offset = sql.bind(SqlValue::Integer(query.offset.into()));
    sql.text
        .push_str(&format!(" ORDER BY {order} LIMIT {limit} OFFSET {offset}"));
    sql
}

/// Spans matching every filter.
pub fn spans_sql(query: &Query, now_ns: u64) -> Sql {
    let mut sql = Sql {
        text: format!("SELECT {} FROM spans", SPAN_COLUMNS),
        params: Vec::new(),
    };
    let mut conditions = span_conditions(query, &mut sql);
    if let Some(cutoff) = since_cutoff(query, now_ns) {
        conditions.push(format!("start_ns >= {}", sql.bind(cutoff)));
    }
    let order = match &query.order_by {
        Some(order) => {
            let (expression, _) = span_expression(&order.field, &mut sql);
            format!("{expression} {}", direction(order))
        }
        None => "start_ns DESC".to_string(),
    };
    finish(sql, conditions, order, query)
}

fn span_conditions(query: &Query, sql: &mut Sql) -> Vec<String> {
    query
        .filters
        .iter()
        .map(|filter| {
            let (expression, typing) = span_expression(&filter.field, sql);
            condition(&expression, typing, filter, sql)
        })
        .collect()
}

/// Traces matching every filter: a trace field is compared on the trace, any other field
/// must match on one of the trace's spans.
pub fn traces_sql(query: &Query, now_ns: u64) -> Result<Sql> {
    let mut sql = Sql {
        text: "SELECT trace_id, root_name, start_ns, end_ns, span_count, input_tokens, \
               output_tokens, error_count, call_count, cost_usd, process FROM traces t"
            .to_string(),
        params: Vec::new(),
    };
    let mut conditions = Vec::new();
    for filter in &query.filters {
        conditions.push(match lookup(TRACE_FIELDS, &filter.field) {
            Some(column) => condition(column, Typing::Column, filter, &mut sql),
            None => {
                let (expression, typing) = span_expression(&filter.field, &mut sql);
                let matches = condition(&expression, typing, filter, &mut sql);
                // Each trace's spans through their trace index: left to itself SQLite may walk
                // the filtered column's index instead, for every trace (seconds at 100k spans).
                format!(
                    "EXISTS (SELECT 1 FROM spans INDEXED BY spans_by_trace \
                     WHERE spans.trace_id = t.trace_id AND {matches})"
                )
            }
        });
    }
    if let Some(cutoff) = since_cutoff(query, now_ns) {
        conditions.push(format!("start_ns >= {}", sql.bind(cutoff)));
    }
    let order = match (&query.order_by, &query.before) {
        (Some(_), Some(_)) => bail!("a cursor (before) pages newest first: drop order_by"),
        (Some(order), None) => format!("{} {}", trace_order_column(order)?, direction(order)),
        (None, before) => {
            if let Some(cursor) = before {
                let start = sql.bind(SqlValue::Integer(
                    i64::try_from(cursor.start_ns).unwrap_or(i64::MAX),
                ));
                let id = sql.bind(SqlValue::Text(cursor.trace_id.clone()));
                conditions.push(format!("(start_ns, trace_id) < ({start}, {id})"));
            }
            // Ties in start broken by id, so that a cursor never skips or repeats a trace.
            "start_ns DESC, trace_id DESC".to_string()
        }
    };
    Ok(finish(sql, conditions, order, query))
}

/// Traces are ordered by their own fields only.
pub fn trace_order_column(order: &OrderBy) -> Result<&'static str> {
    lookup(TRACE_FIELDS, &order.field).with_context(|| {
        format!(
            "traces can be ordered by {}, not `{}`",
            field_names(TRACE_FIELDS),
            order.field
        )
    })
}

fn field_names(fields: &[(&str, &str)]) -> String {
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests;
