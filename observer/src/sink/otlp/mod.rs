//! Spans (and metrics, in [`metrics`]) to an OpenTelemetry collector or backend over OTLP:
//! HTTP with protobuf bodies or gRPC, batched on the exporter's own thread, retried by the
//! specification's rules when the receiver is busy or away.
//!
//! Where spans wait until the receiver has them:
//! - With the store (the daemon's default), in the store ([`durable`]): the exporter reads the
//!   spans stored after its cursor and moves the cursor only once the receiver accepted them.
//!   An outage of any length within the store's retention loses nothing, and a restart resumes
//!   where the last run stopped (after a crash, the last batch may be sent twice; span ids are
//!   stable, so receivers can tell).
//! - Without it, in a bounded queue in memory ([`queue`]), each batch retried for up to a
//!   maximum elapsed time; what does not fit or runs out of time is dropped and counted.
mod durable;
mod encode;
pub mod metrics;
mod queue;
mod retry;
mod transport;

use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;

use self::{
    encode::{BaseResource, EncodedSpan},
    queue::SpanQueue,
    retry::{Backoff, BackoffPolicy, Outcome},
    transport::{Request, Transport},
};
use super::Sink;
use crate::{
    config::{OtlpExport, Protocol, StoreConfig, Target},
    health::{ExportHealth, QueueHealth},
    span::Span,
};

/// How spans are batched and how long a flush may take: fixed in the observer, quicker in
/// tests.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// A request carries this many spans at most…
    pub max_spans: usize,
    /// …and goes when full, or when its first span has waited this long (without the store;
    /// with it, the store is read this often).
    pub max_delay: Duration,
    pub backoff: BackoffPolicy,
    /// A flush (at exit) stops retrying after this long.
    pub flush_timeout: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_spans: 512,
            max_delay: Duration::from_secs(1),
            backoff: BackoffPolicy::default(),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// The protobuf body of one export request for `spans`, as the exporter would send it, with
/// `resource` over the host's own attributes (for tools and fuzzing; the sink batches itself).
pub fn encode_request(
    spans: &[Span],
    resource: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    use prost::Message;
    let encoded: Vec<EncodedSpan> = spans.iter().map(EncodedSpan::new).collect();
    encode::export_request(&encoded, &BaseResource::new(resource)).encode_to_vec()
}

/// A `Retry-After` or `RetryInfo` is honoured up to this long.
const MAX_RECEIVER_WAIT: Duration = Duration::from_secs(300);

impl OtlpExport {
    /// The sink exporting spans (None without a traces endpoint): from the store when there
    /// is one, else through a queue in memory.
    pub fn traces_sink(&self, store: Option<&StoreConfig>) -> anyhow::Result<Option<OtlpSink>> {
        self.traces_sink_with(store, Batching::default())
    }

    fn traces_sink_with(
        &self,
        store: Option<&StoreConfig>,
        batching: Batching,
    ) -> anyhow::Result<Option<OtlpSink>> {
        let Some(target) = &self.traces else {
            return Ok(None);
        };
        let exporter = Exporter::new(target, BaseResource::new(&self.resource), batching)?;
        let shared = Arc::new(Shared::new(SpanQueue::new(self.queue)));
        let worker = shared.clone();
        let (spawned, holds) = match store {
            Some(store) => {
                let backlog = durable::StoreBacklog::open(&store.path)?;
                let spawned = std::thread::Builder::new()
                    .name("otlp-export".into())
                    .spawn(move || durable::run(&worker, exporter, backlog));
                (spawned, Holds::Store)
            }
            None => {
                let max_elapsed = self.retry_max_elapsed;
                let spawned = std::thread::Builder::new()
                    .name("otlp-export".into())
                    .spawn(move || queue::run(&worker, exporter, max_elapsed));
                (spawned, Holds::Memory(max_elapsed))
            }
        };
        Ok(Some(OtlpSink {
            shared,
            worker: Some(spawned.context("starting the OTLP exporter's thread")?),
            target: target.clone(),
            holds,
            flush_timeout: batching.flush_timeout,
        }))
    }
}

/// Where the sink's spans wait for the receiver.
enum Holds {
    Store,
    /// A queue, each batch retried this long.
    Memory(Duration),
}

pub struct OtlpSink {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    target: Target,
    holds: Holds,
    flush_timeout: Duration,
}

impl OtlpSink {
    /// Where spans go and how they wait, for the daemon's start-up lines.
    pub fn describe(&self) -> String {
        let protocol = match self.target.protocol {
            Protocol::Grpc => "gRPC",
            Protocol::HttpProtobuf => "HTTP/protobuf",
        };
        let waiting = match self.holds {
            Holds::Store => "read from the store, kept there until the receiver has them".into(),
            Holds::Memory(max) => format!(
                "queued in memory, retried for up to {} s (keep a store for no loss)",
                max.as_secs()
            ),
        };
        format!(
            "exporting spans to {} over {protocol}; {waiting}",
            self.target.url
        )
    }

    fn health(&self) -> ExportHealth {
        self.shared.stats.health()
    }
}

impl Sink for OtlpSink {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        if let Holds::Store = self.holds {
            // The store sink writes it; the exporter reads it from the store.
            return Ok(());
        }
        let span = EncodedSpan::new(span);
        let mut state = self.shared.lock();
        let stats = &self.shared.stats;
        if state.queue.push(span) {
            stats
                .backlog
                .store(state.queue.len() as u64, Ordering::Relaxed);
            self.shared.changed.notify_all();
        } else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// At the end: sends what waits (from the store: everything stored so far), giving up
    /// after the flush timeout when the receiver does not take it, stops the exporter and
    /// says what became of the spans.
    fn flush(&mut self) -> anyhow::Result<()> {
        let ticket = {
            let mut state = self.shared.lock();
            state.flush_asked += 1;
            state.flush_deadline = Some(Instant::now() + self.flush_timeout);
            self.shared.changed.notify_all();
            state.flush_asked
        };
        // The worker answers within the flush timeout plus one request's.
        let bound = Instant::now() + self.flush_timeout + self.target.timeout * 2;
        let mut state = self.shared.lock();
        while state.flush_done < ticket {
            let now = Instant::now();
            anyhow::ensure!(
                now < bound,
                "the OTLP exporter did not finish flushing within {:?}",
                bound.saturating_duration_since(now)
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, bound - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        self.stop();
        self.report();
        Ok(())
    }

    fn queue(&self) -> Option<QueueHealth> {
        Some(QueueHealth {
            name: "otlp",
            depth: self.shared.stats.backlog.load(Ordering::Relaxed),
            dropped: self.shared.stats.dropped.load(Ordering::Relaxed),
            export: Some(self.health()),
        })
    }
}

impl OtlpSink {
    /// Stops the exporting thread (without the store, what it still holds is given up).
    fn stop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }

    /// The losses, if any, and what still waits, in the log.
    fn report(&self) {
        let health = self.health();
        let dropped = self.shared.stats.dropped.load(Ordering::Relaxed);
        let backlog = self.shared.stats.backlog.load(Ordering::Relaxed);
        if dropped > 0 {
            log::warn!("otlp: {dropped} spans dropped because the export queue was full");
        }
        if health.expired > 0 {
            log::warn!(
                "otlp: {} spans given up: {} did not take them in time (keep a store for no \
                 loss)",
                health.expired,
                self.target.url
            );
        }
        if backlog > 0 {
            log::info!(
                "otlp: {backlog} spans not exported yet stay in the store; the next start sends \
                 them"
            );
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the sink and its exporting thread share.
struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of `state`.
    changed: Condvar,
    stats: ExportStats,
}

struct State {
    /// Spans waiting, without the store.
    queue: SpanQueue,
    /// Flushes asked for and answered; the worker answers once what waited is sent or the
    /// deadline has passed.
    flush_asked: u64,
    flush_done: u64,
    flush_deadline: Option<Instant>,
    /// The sink is going away: stop at once.
    closing: bool,
}

impl State {
    fn flushing(&self) -> bool {
        self.flush_asked > self.flush_done
    }
}

impl Shared {
    fn new(queue: SpanQueue) -> Shared {
        Shared {
            state: Mutex::new(State {
                queue,
                flush_asked: 0,
                flush_done: 0,
                flush_deadline: None,
                closing: false,
            }),
            changed: Condvar::new(),
            stats: ExportStats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_timeout<'a>(
        &self,
        state: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Answers the flushes asked so far.
    fn flushed(&self, state: &mut State) {
        state.flush_done = state.flush_asked;
        state.flush_deadline = None;
        self.changed.notify_all();
    }

    /// Waits `wait` between two attempts, or less when a flush is asked for meanwhile (the
    /// observer is stopping: one more attempt at once); false when the sink is closing or a
    /// flush's deadline came first (then the caller stops retrying).
    fn pause(&self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        let mut state = self.lock();
        let asked = state.flush_asked;
        loop {
            let now = Instant::now();
            let flush_over = state.flushing() && state.flush_deadline.is_some_and(|d| now >= d);
            if state.closing || flush_over {
                return false;
            }
            if now >= end || state.flush_asked != asked {
                return true;
            }
            let until = match state.flush_deadline.filter(|_| state.flushing()) {
                Some(deadline) => end.min(deadline),
                None => end,
            };
            state = self.wait_timeout(state, until - now);
        }
    }
}

/// The exporter's counters, read by the sink for the metrics and the summary.
#[derive(Default)]
struct ExportStats {
    exported: AtomicU64,
    rejected: AtomicU64,
    expired: AtomicU64,
    pruned: AtomicU64,
    /// Full queue (without the store).
    dropped: AtomicU64,
    /// Spans waiting to be exported.
    backlog: AtomicU64,
}

impl ExportStats {
    fn health(&self) -> ExportHealth {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ExportHealth {
            exported: get(&self.exported),
            rejected: get(&self.rejected),
            expired: get(&self.expired),
            pruned: get(&self.pruned),
        }
    }
}

/// How one batch's delivery ended.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    /// The receiver has answered for every span: accepted or refused them.
    Answered,
    /// The retry time ran out.
    Expired,
    /// The sink is closing, or a flush's deadline has passed.
    Stopped,
}

/// Sends batches and retries them, saying in the log when the receiver goes away and comes
/// back, and each distinct refusal once.
struct Exporter {
    transport: Transport,
    resource: BaseResource,
    batching: Batching,
    /// Since when the receiver has not been taking requests, and why.
    outage: Option<(Instant, String)>,
    last_refusal: Option<String>,
}

impl Exporter {
    fn new(target: &Target, resource: BaseResource, batching: Batching) -> anyhow::Result<Self> {
        Ok(Exporter {
            transport: Transport::new(target)?,
            resource,
            batching,
            outage: None,
            last_refusal: None,
        })
    }

    /// Sends `spans` until the receiver answers, the retry time (`give_up_at`) runs out, or
    /// the sink stops it; `waiting` runs before each wait between attempts.
    fn deliver(
        &mut self,
        spans: &[EncodedSpan],
        give_up_at: Option<Instant>,
        shared: &Shared,
        waiting: &mut dyn FnMut(),
    ) -> Delivery {
        let count = spans.len() as u64;
        let request = encode::export_request(spans, &self.resource);
        let mut backoff = Backoff::new(self.batching.backoff);
        let stats = &shared.stats;
        loop {
            match self.transport.send(Request::Traces(request.clone())) {
                Outcome::Accepted { rejected, message } => {
                    self.back();
                    let rejected = rejected.min(count);
                    stats
                        .exported
                        .fetch_add(count - rejected, Ordering::Relaxed);
                    if rejected > 0 {
                        stats.rejected.fetch_add(rejected, Ordering::Relaxed);
                        self.refused(rejected, count, &message);
                    }
                    return Delivery::Answered;
                }
                Outcome::Refused { reason } => {
                    self.back();
                    stats.rejected.fetch_add(count, Ordering::Relaxed);
                    self.refused(count, count, &reason);
                    return Delivery::Answered;
                }
                Outcome::Retry { reason, after } => {
                    self.away(reason);
                    let wait = match after {
                        Some(after) => after.min(MAX_RECEIVER_WAIT),
                        None => backoff.next_wait(),
                    };
                    if give_up_at.is_some_and(|limit| Instant::now() + wait > limit) {
                        return Delivery::Expired;
                    }
                    waiting();
                    if !shared.pause(wait) {
                        return Delivery::Stopped;
                    }
                }
            }
        }
    }

    fn away(&mut self, reason: String) {
        match &self.outage {
            None => {
                log::warn!(
                    "otlp: {} is not taking spans ({reason}); retrying with backoff",
                    self.transport.url()
                );
                self.outage = Some((Instant::now(), reason));
            }
            Some((_, known)) if *known != reason => {
                log::debug!(
                    "otlp: {} still not taking spans: {reason}",
                    self.transport.url()
                );
            }
            Some(_) => {}
        }
    }

    fn back(&mut self) {
        if let Some((since, _)) = self.outage.take() {
            log::info!(
                "otlp: {} is taking spans again after {} s",
                self.transport.url(),
                since.elapsed().as_secs()
            );
        }
    }

    /// A refusal, logged the first time the receiver gives this reason.
    fn refused(&mut self, refused: u64, sent: u64, reason: &str) {
        if self.last_refusal.as_deref() == Some(reason) {
            log::debug!("otlp: {refused} of {sent} spans refused again: {reason}");
            return;
        }
        log::error!(
            "otlp: {} refused {refused} of {sent} spans: {reason} (sending them again would not \
             help; such refusals are counted in observer_export_spans_total{{outcome=\"rejected\"}})",
            self.transport.url()
        );
        self.last_refusal = Some(reason.to_owned());
    }
}

#[cfg(test)]
mod tests;
