//! Without the store, spans wait for the receiver in a bounded queue in memory (a number of
//! spans and of bytes). A batch is retried for up to the maximum elapsed time; a span that
//! finds the queue full, or whose batch runs out of time, is dropped and counted.
use std::{
    collections::VecDeque,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{Delivery, Exporter, Shared, encode::EncodedSpan};
use crate::config::QueueLimits;

/// How long the worker sleeps with nothing queued (it is woken by the first span anyway).
const IDLE: Duration = Duration::from_secs(60);

struct Waiting {
    since: Instant,
    size: usize,
    span: EncodedSpan,
}

pub(super) struct SpanQueue {
    waiting: VecDeque<Waiting>,
    /// Spans and bytes of the batch being sent: still counted against the limits.
    in_flight: (usize, usize),
    /// Bytes of the waiting spans and of the batch in flight.
    bytes: usize,
    limits: QueueLimits,
}

impl SpanQueue {
    pub fn new(limits: QueueLimits) -> SpanQueue {
        SpanQueue {
            waiting: VecDeque::new(),
            in_flight: (0, 0),
            bytes: 0,
            limits,
        }
    }

    /// Adds a span, unless the queue is full (false).
    pub fn push(&mut self, span: EncodedSpan) -> bool {
        let size = span.size();
        if self.len() >= self.limits.spans || self.bytes + size > self.limits.bytes {
            return false;
        }
        self.bytes += size;
        self.waiting.push_back(Waiting {
            since: Instant::now(),
            size,
            span,
        });
        true
    }

    /// Spans waiting or being sent.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.0
    }

    /// Takes up to `max` spans, oldest first, as the batch in flight.
    fn take(&mut self, max: usize) -> Vec<EncodedSpan> {
        let taken: Vec<Waiting> = self.waiting.drain(..max.min(self.waiting.len())).collect();
        self.in_flight = (taken.len(), taken.iter().map(|w| w.size).sum());
        taken.into_iter().map(|w| w.span).collect()
    }

    /// The batch in flight is done with (answered or given up).
    fn settle(&mut self) {
        self.bytes -= self.in_flight.1;
        self.in_flight = (0, 0);
    }

    /// The batch in flight waits again, first in line.
    fn put_back(&mut self, batch: Vec<EncodedSpan>) {
        let now = Instant::now();
        for span in batch.into_iter().rev() {
            let size = span.size();
            self.waiting.push_front(Waiting {
                since: now,
                size,
                span,
            });
        }
        self.in_flight = (0, 0);
    }
}

/// The exporting thread: a batch when `max_spans` wait or the oldest has waited `max_delay`
/// (at once when flushing), delivered with retries for up to `max_elapsed`.
pub(super) fn run(shared: &Shared, mut exporter: Exporter, max_elapsed: Duration) {
    let (max_spans, max_delay) = (exporter.batching.max_spans, exporter.batching.max_delay);
    let stats = &shared.stats;
    loop {
        let batch = {
            let mut state = shared.lock();
            loop {
                let queue = &state.queue;
                if state.closing {
                    // Never sent: given up.
                    stats
                        .expired
                        .fetch_add(queue.len() as u64, Ordering::Relaxed);
                    stats.backlog.store(0, Ordering::Relaxed);
                    return;
                }
                let due = queue.waiting.front().map(|w| w.since + max_delay);
                let now = Instant::now();
                if queue.waiting.len() >= max_spans
                    || due.is_some_and(|due| state.flushing() || due <= now)
                {
                    break state.queue.take(max_spans);
                }
                if state.flushing() {
                    shared.flushed(&mut state);
                    continue;
                }
                let wait = due.map_or(IDLE, |due| due - now);
                state = shared.wait_timeout(state, wait);
            }
        };
        let give_up_at = Instant::now() + max_elapsed;
        let delivery = exporter.deliver(&batch, Some(give_up_at), shared, &mut || {});
        let mut state = shared.lock();
        match delivery {
            Delivery::Answered => state.queue.settle(),
            Delivery::Expired => {
                stats
                    .expired
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                log::warn!(
                    "otlp: {} spans dropped: {} did not take them within {} s",
                    batch.len(),
                    exporter.transport.url(),
                    max_elapsed.as_secs()
                );
                state.queue.settle();
            }
            Delivery::Stopped => {
                state.queue.put_back(batch);
                // A flush past its deadline is answered with the rest still queued.
                if state.flushing() {
                    shared.flushed(&mut state);
                }
            }
        }
        stats
            .backlog
            .store(state.queue.len() as u64, Ordering::Relaxed);
    }
}
