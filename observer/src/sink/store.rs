//! Spans into the embedded store, batched into transactions on the sink's own thread, with
//! retention applied every few minutes.
use std::time::{Duration, Instant};

use super::background::{BackgroundSink, BatchPolicy, BatchWriter};
use crate::{
    config::StoreConfig,
    span::Span,
    store::{Retention, Store, now_unix_nanos},
};

const POLICY: BatchPolicy = BatchPolicy {
    queue: 10_000,
    max_spans: 256,
    max_delay: Duration::from_millis(200),
};

const RETENTION_INTERVAL: Duration = Duration::from_secs(300);

impl StoreConfig {
    /// Opens the store (here, so a bad path fails before capture starts) and starts a sink
    /// writing to it.
    pub fn build(&self) -> anyhow::Result<BackgroundSink> {
        let retention = self.retention();
        let writer = StoreWriter {
            store: Store::open(&self.path, &retention)?,
            retention,
            last_retention: Instant::now(),
        };
        BackgroundSink::start("store", writer, POLICY)
    }
}

struct StoreWriter {
    store: Store,
    retention: Retention,
    last_retention: Instant,
}

impl BatchWriter for StoreWriter {
    fn write_batch(&mut self, spans: Vec<Span>) {
        if let Err(error) = self.store.insert(&spans) {
            log::error!(
                "store {}: {} spans not saved: {error:#}",
                self.store.path().display(),
                spans.len()
            );
        }
    }

    fn tick(&mut self) {
        if self.last_retention.elapsed() < RETENTION_INTERVAL {
            return;
        }
        self.last_retention = Instant::now();
        match self
            .store
            .enforce_retention(&self.retention, now_unix_nanos())
        {
            Ok(report) if report.expired + report.evicted_for_size > 0 => log::info!(
                "store: removed {} expired spans and {} oldest spans to stay under the size limit",
                report.expired,
                report.evicted_for_size
            ),
            Ok(_) => {}
            Err(error) => log::error!("store: pruning failed: {error:#}"),
        }
    }
}
