//! A sink whose work happens on its own thread: `write` only queues the span, so a slow disk
//! or network never stalls capture. The queue is bounded; spans that find it full are dropped
//! and counted.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::Sink;
use crate::{health::QueueHealth, span::Span};

/// What the worker thread does with spans, a batch at a time.
pub trait BatchWriter: Send + 'static {
    /// Errors are the writer's to report: the worker goes on with the next batch.
    fn write_batch(&mut self, spans: Vec<Span>);
    /// Called whenever the worker wakes (at least every `max_delay`), for housekeeping.
    fn tick(&mut self) {}
}

#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    /// Spans waiting in the queue at most.
    pub queue: usize,
    /// A batch is written when it has this many spans…
    pub max_spans: usize,
    /// …or when its first span has waited this long.
    pub max_delay: Duration,
}

enum Message {
    Span(Box<Span>),
    /// Write what is pending, then answer.
    Flush(SyncSender<()>),
}

pub struct BackgroundSink {
    name: &'static str,
    sender: Option<SyncSender<Message>>,
    worker: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
    /// Spans sent to the worker and not yet taken by it.
    queued: Arc<AtomicU64>,
}

impl BackgroundSink {
    pub fn start(
        name: &'static str,
        writer: impl BatchWriter,
        policy: BatchPolicy,
    ) -> anyhow::Result<BackgroundSink> {
        let (sender, receiver) = mpsc::sync_channel(policy.queue);
        let queued = Arc::new(AtomicU64::new(0));
        let taken = queued.clone();
        let worker = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || run(receiver, writer, policy, &taken))
            .with_context(|| format!("starting the {name} sink's thread"))?;
        Ok(BackgroundSink {
            name,
            sender: Some(sender),
            worker: Some(worker),
            dropped: Arc::default(),
            queued,
        })
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Sink for BackgroundSink {
    fn write(&mut self, span: &Span) -> anyhow::Result<()> {
        let Some(sender) = &self.sender else {
            anyhow::bail!("the {} sink has stopped", self.name);
        };
        // Counted before sending, so the worker never takes a span not counted yet.
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = sender.try_send(Message::Span(Box::new(span.clone())));
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => {
                anyhow::bail!("the {} sink's thread has stopped", self.name)
            }
        }
    }

    /// Waits until everything queued so far has been written.
    fn flush(&mut self) -> anyhow::Result<()> {
        let (done, wait) = mpsc::sync_channel(1);
        if let Some(sender) = &self.sender {
            sender
                .send(Message::Flush(done))
                .ok()
                .and_then(|()| wait.recv().ok())
                .with_context(|| format!("the {} sink's thread has stopped", self.name))?;
        }
        let dropped = self.dropped();
        if dropped > 0 {
            log::warn!(
                "{} sink: {dropped} spans dropped because it fell behind (queue full)",
                self.name
            );
        }
        Ok(())
    }

    fn queue(&self) -> Option<QueueHealth> {
        Some(QueueHealth {
            name: self.name,
            depth: self.queued.load(Ordering::Relaxed),
            dropped: self.dropped(),
            export: None,
        })
    }
}

impl Drop for BackgroundSink {
    fn drop(&mut self) {
        // Closing the queue lets the worker write what is left and end.
        self.sender = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn run(
    receiver: Receiver<Message>,
    mut writer: impl BatchWriter,
    policy: BatchPolicy,
    queued: &AtomicU64,
) {
    let mut batch = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = deadline.map_or(policy.max_delay, |d| {
            d.saturating_duration_since(Instant::now())
        });
        match receiver.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                queued.fetch_sub(1, Ordering::Relaxed);
                batch.push(*span);
                let due = *deadline.get_or_insert_with(|| Instant::now() + policy.max_delay);
                if batch.len() >= policy.max_spans || Instant::now() >= due {
                    write(&mut writer, &mut batch, &mut deadline);
                }
            }
            Ok(Message::Flush(done)) => {
                write(&mut writer, &mut batch, &mut deadline);
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => write(&mut writer, &mut batch, &mut deadline),
            Err(RecvTimeoutError::Disconnected) => {
                write(&mut writer, &mut batch, &mut deadline);
                return;
            }
        }
        writer.tick();
    }
}

fn write(writer: &mut impl BatchWriter, batch: &mut Vec<Span>, deadline: &mut Option<Instant>) {
    *deadline = None;
    if !batch.is_empty() {
        writer.write_batch(std::mem::take(batch));
    }
}
