//! Pruning: spans older than the age limit go, then the oldest spans until the store fits
//! its size limit.
use std::time::Duration;

use anyhow::Result;
use rusqlite::{Connection, params};

/// How long spans are kept, and how large the store may grow.
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    /// None: kept whatever their age (a replay keeps its recording's spans).
    pub max_age: Option<Duration>,
    /// Bytes of pages in use (the file can be briefly larger while the WAL is checkpointed).
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: Some(1 << 30),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub expired: u64,
    pub evicted_for_size: u64,
}

pub fn enforce(
    connection: &mut Connection,
    retention: &Retention,
    now_ns: u64,
) -> Result<RetentionReport> {
    let expired = match retention.max_age {
        Some(max_age) => {
            let cutoff = now_ns.saturating_sub(max_age.as_nanos() as u64);
            connection.execute(
                "DELETE FROM spans WHERE start_ns < ?1",
                params![i64::try_from(cutoff).unwrap_or(i64::MAX)],
            )? as u64
        }
        None => 0,
    };
    let evicted_for_size = match retention.max_bytes {
        Some(max_bytes) => shrink_to(connection, max_bytes)?,
        None => 0,
    };
    if expired + evicted_for_size > 0 {
        // Hand the freed pages back: vacuum moves them to the file's end, the checkpoint
        // copies that into the main file and truncates both it and the WAL.
        // (The vacuum frees one page per step: step it to the end.)
        let mut vacuum = connection.prepare("PRAGMA incremental_vacuum")?;
        let mut steps = vacuum.query([])?;
        while steps.next()?.is_some() {}
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(RetentionReport {
        expired,
        evicted_for_size,
    })
}

/// Deletes the oldest spans, a share at a time proportional to the excess, until the pages in
/// use fit in `max_bytes` or no span is left.
fn shrink_to(connection: &mut Connection, max_bytes: u64) -> Result<u64> {
    let mut evicted = 0;
    loop {
        let used = used_bytes(connection)?;
        let spans: u64 = connection.query_row("SELECT count(*) FROM spans", [], |r| r.get(0))?;
        if used <= max_bytes || spans == 0 {
            return Ok(evicted);
        }
        let share = (spans as f64 * (used - max_bytes) as f64 / used as f64).ceil() as u64;
        let batch = share.max(spans / 100).max(1);
        evicted += connection.execute(
            "DELETE FROM spans WHERE span_id IN \
             (SELECT span_id FROM spans ORDER BY start_ns LIMIT ?1)",
            params![batch as i64],
        )? as u64;
    }
}

/// Bytes in pages that hold data (free pages are reused before the file grows).
fn used_bytes(connection: &Connection) -> Result<u64> {
    let pragma = |name: &str| -> Result<u64> {
        Ok(connection.pragma_query_value(None, name, |row| row.get(0))?)
    };
    Ok((pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?)
}
