//! With the store, the store is the exporter's queue: the exporting thread reads the spans
//! stored after its cursor (its own connection; WAL lets it read while the store sink writes),
//! sends them, and moves the cursor once the receiver has answered for them. While the
//! receiver is away it retries the same batch without end; spans keep arriving in the store,
//! bounded by its retention (which counts what it deletes before export).
use std::{path::Path, sync::atomic::Ordering};

use anyhow::Context;

use super::{Delivery, Exporter, Shared, encode::EncodedSpan};
use crate::store::{ExportCursor, Store};

/// The exporter's name in the store's `export_cursor` table.
const CURSOR: &str = "otlp";

pub(super) struct StoreBacklog {
    store: Store,
    cursor: ExportCursor,
    /// Pruned spans counted before this run started (the store keeps the total).
    pruned_before: u64,
}

/// Spans read from the store, to send together.
struct Batch {
    spans: Vec<EncodedSpan>,
    /// The cursor before and after the batch.
    after: i64,
    last: i64,
}

impl StoreBacklog {
    /// Opens the store (the store sink has created it) and the exporter's cursor.
    pub fn open(path: &Path) -> anyhow::Result<StoreBacklog> {
        let mut store = Store::open_existing(path)?;
        let cursor = store
            .export_cursor(CURSOR)
            .with_context(|| format!("reading the OTLP export cursor in {}", path.display()))?;
        Ok(StoreBacklog {
            store,
            cursor,
            pruned_before: cursor.pruned,
        })
    }

    /// Reads the cursor again (retention may have moved it) and updates the backlog and
    /// pruned counts, saying when retention deleted spans before export.
    fn refresh(&mut self, shared: &Shared) -> anyhow::Result<()> {
        let cursor = self.store.export_cursor(CURSOR)?;
        if cursor.pruned > self.cursor.pruned {
            log::warn!(
                "otlp: the store's retention deleted {} spans before they were exported (the \
                 receiver has been away longer than the store keeps spans, or the store hit \
                 its size limit)",
                cursor.pruned - self.cursor.pruned
            );
        }
        self.cursor = cursor;
        let stats = &shared.stats;
        stats.pruned.store(
            cursor.pruned.saturating_sub(self.pruned_before),
            Ordering::Relaxed,
        );
        let backlog = self.store.last_rowid()?.saturating_sub(cursor.last_rowid);
        stats
            .backlog
            .store(u64::try_from(backlog).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// Up to `max` spans stored after the cursor (None: nothing new).
    fn next(&mut self, max: usize) -> anyhow::Result<Option<Batch>> {
        let stored = self.store.spans_after(self.cursor.last_rowid, max)?;
        let Some(&(last, _)) = stored.last() else {
            return Ok(None);
        };
        let unreadable = stored.iter().filter(|(_, span)| span.is_none()).count();
        if unreadable > 0 {
            log::error!(
                "otlp: {unreadable} rows of the store {} could not be read and are not exported",
                self.store.path().display()
            );
        }
        Ok(Some(Batch {
            spans: stored
                .iter()
                .filter_map(|(_, span)| span.as_ref().map(EncodedSpan::new))
                .collect(),
            after: self.cursor.last_rowid,
            last,
        }))
    }

    fn commit(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if self
            .store
            .advance_export_cursor(CURSOR, batch.after, batch.last)?
        {
            self.cursor.last_rowid = batch.last;
        }
        Ok(())
    }
}

/// The exporting thread: every `max_delay` (at once when flushing), everything stored after
/// the cursor, batch by batch.
pub(super) fn run(shared: &Shared, mut exporter: Exporter, mut backlog: StoreBacklog) {
    let poll = exporter.batching.max_delay;
    let mut last_error = None;
    loop {
        {
            let mut state = shared.lock();
            if !state.flushing() && !state.closing {
                state = shared.wait_timeout(state, poll);
            }
            if state.closing {
                return;
            }
        }
        match export_stored(shared, &mut exporter, &mut backlog) {
            Ok(()) => last_error = None,
            Err(error) => {
                let error = format!("{error:#}");
                if last_error.as_ref() != Some(&error) {
                    log::error!("otlp: reading the store for export failed: {error}");
                }
                last_error = Some(error);
            }
        }
        let mut state = shared.lock();
        if state.flushing() {
            shared.flushed(&mut state);
        }
    }
}

/// Sends what is stored after the cursor until nothing is left or the delivery stops.
fn export_stored(
    shared: &Shared,
    exporter: &mut Exporter,
    backlog: &mut StoreBacklog,
) -> anyhow::Result<()> {
    loop {
        backlog.refresh(shared)?;
        let Some(batch) = backlog.next(exporter.batching.max_spans)? else {
            return Ok(());
        };
        if !batch.spans.is_empty() {
            // While the receiver is away, the backlog and what retention prunes stay current.
            let mut refresh = || {
                if let Err(error) = backlog.refresh(shared) {
                    log::debug!("otlp: reading the export cursor failed: {error:#}");
                }
            };
            match exporter.deliver(&batch.spans, None, shared, &mut refresh) {
                Delivery::Answered => {}
                Delivery::Expired | Delivery::Stopped => return Ok(()),
            }
        }
        backlog.commit(&batch)?;
    }
}
