//! The store as a queue for its readers. Spans are numbered in the order they were stored, by a
//! rowid never reused (the `seq` column), so a reader following new rows misses none. Each
//! exporter has a cursor (the number of the last span its receiver accepted), moved only after
//! the receiver answered, so spans stored after it wait in the store across outages and restarts.
use anyhow::Result;
use rusqlite::params;

use super::{Store, span_from_row};
use crate::{query::SPAN_COLUMNS, span::Span};

/// Where one exporter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportCursor {
    /// Every span up to this rowid has been answered for.
    pub last_rowid: i64,
    /// Spans retention deleted before this exporter had sent them, since the cursor was made.
    pub pruned: u64,
}

/// A span stored after a cursor: its rowid, and the span (None when its row cannot be read).
pub type StoredSpan = (i64, Option<Span>);

impl Store {
    /// Exporter `name`'s cursor; a new exporter starts at the end of the store (it sends what is
    /// stored from now on, not the history).
    pub fn export_cursor(&mut self, name: &str) -> Result<ExportCursor> {
        self.connection.execute(
            "INSERT INTO export_cursor (name, last_rowid) \
             VALUES (?1, (SELECT coalesce(max(rowid), 0) FROM spans)) ON CONFLICT(name) DO NOTHING",
            params![name],
        )?;
        let cursor = self.connection.query_row(
            "SELECT last_rowid, pruned FROM export_cursor WHERE name = ?1",
            params![name],
            |row| {
                Ok(ExportCursor {
                    last_rowid: row.get(0)?,
                    pruned: row.get::<_, i64>(1)?.try_into().unwrap_or(0),
                })
            },
        )?;
        Ok(cursor)
    }

    /// Up to `limit` spans stored after `rowid`, in the order they were stored.
    pub fn spans_after(&self, rowid: i64, limit: usize) -> Result<Vec<StoredSpan>> {
        let sql = format!(
            "SELECT {SPAN_COLUMNS}, rowid FROM spans WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
        );
        let rowid_column = SPAN_COLUMNS.split(',').count();
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(
            params![rowid, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| Ok((row.get(rowid_column)?, span_from_row(row).ok())),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Moves exporter `name`'s cursor from `from` to `to`; false (and unmoved) when it is no
    /// longer at `from` because retention brought it back meanwhile.
    pub fn advance_export_cursor(&mut self, name: &str, from: i64, to: i64) -> Result<bool> {
        let moved = self.connection.execute(
            "UPDATE export_cursor SET last_rowid = ?3 WHERE name = ?1 AND last_rowid = ?2",
            params![name, from, to],
        )?;
        Ok(moved == 1)
    }

    /// The rowid of the last span stored (0 when there is none).
    pub fn last_rowid(&self) -> Result<i64> {
        Ok(self
            .connection
            .query_row("SELECT coalesce(max(rowid), 0) FROM spans", [], |row| {
                row.get(0)
            })?)
    }
}
