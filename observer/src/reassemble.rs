//! Per-connection ordered byte streams.
//!
//! Chunks of one connection and direction normally arrive in offset order, but two threads
//! writing to one TLS session (or per-CPU ring buffers) can swap them. A small reorder window per
//! stream puts them back in order; when the window overflows, the stream goes quiet for too long,
//! or the connection ends, what is held is released with the missing bytes marked as a gap.
use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;

use crate::capture::{CaptureEvent, Chunk, ConnHash, ConnKey, Direction, TlsLibrary};

/// What the stream stages take: bytes, and the ends that close their streams.
#[derive(Clone, Debug)]
pub enum StreamInput {
    Chunk(Chunk),
    /// The TLS session was freed.
    ConnectionEnd {
        conn: ConnKey,
        ts: u64,
    },
    /// The process exited, or exec'd a new program: none of its sessions live on.
    ProcessEnd {
        pid: u32,
        ts: u64,
    },
}

impl StreamInput {
    /// The part of a capture event the stream stages need, if any.
    pub fn of(event: CaptureEvent) -> Option<StreamInput> {
        match event {
            CaptureEvent::Data(chunk) => Some(StreamInput::Chunk(chunk)),
            CaptureEvent::ConnEnd { conn, ts } => Some(StreamInput::ConnectionEnd { conn, ts }),
            CaptureEvent::Exec { pid, ts, .. } | CaptureEvent::Exit { pid, ts } => {
                Some(StreamInput::ProcessEnd { pid, ts })
            }
            CaptureEvent::Socket { .. }
            | CaptureEvent::Container { .. }
            | CaptureEvent::Costly { .. }
            | CaptureEvent::Losses { .. }
            | CaptureEvent::Command(_)
            | CaptureEvent::CommandExit { .. }
            | CaptureEvent::Pipe { .. } => None,
        }
    }
}

/// In-order bytes of one connection and direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub conn: ConnKey,
    pub dir: Direction,
    pub tid: u32,
    pub ts: u64,
    pub data: Bytes,
    /// Bytes missing between the previous segment of this stream and this one.
    pub gap_before: u64,
    /// Stream offset just past `data`.
    pub end_offset: u64,
    /// The TLS call was larger than the capture cap: bytes after `data` were not copied.
    pub truncated_after: bool,
    pub library: TlsLibrary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Out-of-order chunks held per stream before the oldest is released with a gap.
    pub max_pending_chunks: usize,
    /// Out-of-order bytes held per stream.
    pub max_pending_bytes: usize,
    /// Out-of-order bytes held over all streams.
    pub max_total_pending_bytes: usize,
    /// How long (event time, ns) a stream waits for a missing chunk.
    pub reorder_timeout_ns: u64,
    /// Streams (connection × direction) tracked at once.
    pub max_streams: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_pending_chunks: 16,
            max_pending_bytes: 1 << 20,
            max_total_pending_bytes: 64 << 20,
            reorder_timeout_ns: 50_000_000,
            max_streams: 32_768,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub chunks: u64,
    /// Chunks that arrived ahead of a missing one and waited.
    pub reordered: u64,
    /// Chunks entirely made of bytes already delivered.
    pub duplicates: u64,
    /// Gaps released, and the bytes they cover.
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Releases forced by the per-stream window, the total cap or the timeout.
    pub window_overflows: u64,
    pub total_cap_releases: u64,
    pub timeouts: u64,
    /// Streams dropped because `max_streams` was reached.
    pub streams_evicted: u64,
}

impl ReassemblyStats {
    /// Every counter with its metric label, for the health metrics.
    pub fn counters(&self) -> [(&'static str, u64); 9] {
        [
            ("chunks", self.chunks),
            ("reordered", self.reordered),
            ("duplicates", self.duplicates),
            ("gaps", self.gaps),
            ("gap_bytes", self.gap_bytes),
            ("window_overflows", self.window_overflows),
            ("total_cap_releases", self.total_cap_releases),
            ("timeouts", self.timeouts),
            ("streams_evicted", self.streams_evicted),
        ]
    }
}

type StreamKey = (ConnKey, Direction);

#[derive(Default)]
struct Stream {
    /// Offset of the next byte to deliver.
    next_offset: u64,
    /// Chunks waiting for the bytes before them, by offset.
    pending: BTreeMap<u64, Chunk>,
    pending_bytes: usize,
    /// Event time of the last chunk seen, for eviction.
    last_ts: u64,
    /// Event time at which the oldest pending chunk started waiting.
    waiting_since: u64,
    /// The last delivered chunk was cut by the capture cap, so the next jump in offsets is a
    /// known loss, not a reordering worth waiting for.
    loss_expected: bool,
}

/// Turns chunks into in-order segments, per connection and direction.
pub struct Reassembler {
    limits: ReassemblyLimits,
    streams: HashMap<StreamKey, Stream, ConnHash>,
    /// Streams holding pending chunks, so expiry does not scan every stream.
    waiting: HashSet<StreamKey, ConnHash>,
    total_pending_bytes: usize,
    stats: ReassemblyStats,
}

impl Reassembler {
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            streams: HashMap::default(),
            waiting: HashSet::default(),
            total_pending_bytes: 0,
            stats: ReassemblyStats::default(),
        }
    }

    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Accepts one chunk; appends to `out` whatever is now deliverable in order.
    pub fn push(&mut self, chunk: Chunk, out: &mut Vec<Segment>) {
        self.stats.chunks += 1;
        let key = (chunk.conn, chunk.dir);
        if self.streams.len() >= self.limits.max_streams && !self.streams.contains_key(&key) {
            self.make_room(out);
        }
        // One map lookup per chunk: the waiting set changes only when the stream starts or
        // stops holding chunks.
        let stream = self.streams.entry(key).or_default();
        let was_waiting = !stream.pending.is_empty();
        stream.last_ts = stream.last_ts.max(chunk.ts);
        let mut released = Released::new(out, &mut self.stats);

        if chunk.offset <= stream.next_offset || (stream.loss_expected && stream.pending.is_empty())
        {
            released.deliver(stream, chunk);
            self.total_pending_bytes -= released.drain_contiguous(stream);
        } else {
            released.stats.reordered += 1;
            if stream.pending.is_empty() {
                stream.waiting_since = chunk.ts;
            }
            self.total_pending_bytes += hold(stream, chunk);
            self.total_pending_bytes -= released.enforce_window(stream, &self.limits);
        }
        let now_waiting = !stream.pending.is_empty();
        if now_waiting && !was_waiting {
            self.waiting.insert(key);
        } else if was_waiting && !now_waiting {
            self.waiting.remove(&key);
        }
        if self.total_pending_bytes > self.limits.max_total_pending_bytes {
            self.stats.total_cap_releases += 1;
            self.release_all_pending(out);
        }
    }

    /// Releases, with gaps, streams that have waited longer than the reorder timeout at `now`.
    pub fn expire(&mut self, now: u64, out: &mut Vec<Segment>) {
        let timeout = self.limits.reorder_timeout_ns;
        let expired: Vec<StreamKey> = self
            .waiting
            .iter()
            .filter(|key| {
                self.streams
                    .get(key)
                    .is_some_and(|s| now.saturating_sub(s.waiting_since) >= timeout)
            })
            .copied()
            .collect();
        for key in expired {
            self.stats.timeouts += 1;
            self.release_stream(key, out);
        }
    }

    /// The connection is over: releases what it holds (with gaps) and forgets it.
    pub fn end_conn(&mut self, conn: ConnKey, out: &mut Vec<Segment>) {
        for dir in [Direction::Egress, Direction::Ingress] {
            self.remove_stream((conn, dir), out);
        }
    }

    /// The process is gone (or replaced by exec): ends all its connections.
    pub fn end_process(&mut self, pid: u32, out: &mut Vec<Segment>) {
        let keys: Vec<StreamKey> = self
            .streams
            .keys()
            .filter(|(c, _)| c.pid == pid)
            .copied()
            .collect();
        for key in keys {
            self.remove_stream(key, out);
        }
    }

    /// Releases everything held, e.g. when the observer stops.
    pub fn release_all_pending(&mut self, out: &mut Vec<Segment>) {
        let keys: Vec<StreamKey> = self.waiting.iter().copied().collect();
        for key in keys {
            self.release_stream(key, out);
        }
    }

    fn remove_stream(&mut self, key: StreamKey, out: &mut Vec<Segment>) {
        self.release_stream(key, out);
        self.streams.remove(&key);
    }

    fn release_stream(&mut self, key: StreamKey, out: &mut Vec<Segment>) {
        if let Some(stream) = self.streams.get_mut(&key) {
            let mut released = Released::new(out, &mut self.stats);
            self.total_pending_bytes -= released.release_with_gaps(stream);
        }
        self.waiting.remove(&key);
    }

    /// At the stream cap, forgets the least recently active sixteenth of the streams, so the
    /// scan is paid once per many new streams rather than once per stream.
    fn make_room(&mut self, out: &mut Vec<Segment>) {
        if self.streams.len() < self.limits.max_streams {
            return;
        }
        let mut by_age: Vec<(u64, StreamKey)> =
            self.streams.iter().map(|(k, s)| (s.last_ts, *k)).collect();
        let evict = (by_age.len() / 16).max(1);
        by_age.select_nth_unstable(evict - 1);
        for &(_, key) in &by_age[..evict] {
            self.stats.streams_evicted += 1;
            self.remove_stream(key, out);
        }
    }
}

/// Keeps a chunk that arrived ahead of missing bytes; returns the bytes newly held.
fn hold(stream: &mut Stream, chunk: Chunk) -> usize {
    let len = chunk.data.len();
    match stream.pending.get(&chunk.offset) {
        // Same start: keep the longer copy.
        Some(held) if held.data.len() >= len => 0,
        Some(held) => {
            let grown = len - held.data.len();
            stream.pending.insert(chunk.offset, chunk);
            stream.pending_bytes += grown;
            grown
        }
        None => {
            stream.pending.insert(chunk.offset, chunk);
            stream.pending_bytes += len;
            len
        }
    }
}

/// Turns chunks into segments, in order, counting what it does.
struct Released<'a> {
    out: &'a mut Vec<Segment>,
    stats: &'a mut ReassemblyStats,
}

impl<'a> Released<'a> {
    fn new(out: &'a mut Vec<Segment>, stats: &'a mut ReassemblyStats) -> Self {
        Self { out, stats }
    }

    /// Emits the part of `chunk` past `next_offset`; bytes before it were delivered already.
    fn deliver(&mut self, stream: &mut Stream, chunk: Chunk) {
        let end = chunk.offset + chunk.data.len() as u64;
        if end <= stream.next_offset && !chunk.data.is_empty() {
            self.stats.duplicates += 1;
            return;
        }
        let gap_before = chunk.offset.saturating_sub(stream.next_offset);
        if gap_before > 0 {
            self.stats.gaps += 1;
            self.stats.gap_bytes += gap_before;
        }
        // Bounded by the chunk length: `end > next_offset` here.
        let skip = stream.next_offset.saturating_sub(chunk.offset) as usize;
        stream.next_offset = end.max(stream.next_offset);
        stream.loss_expected = chunk.truncated_after;
        if chunk.data.is_empty() && gap_before == 0 {
            return;
        }
        self.out.push(Segment {
            conn: chunk.conn,
            dir: chunk.dir,
            tid: chunk.tid,
            ts: chunk.ts,
            data: chunk.data.slice(skip..),
            gap_before,
            end_offset: end,
            truncated_after: chunk.truncated_after,
            library: chunk.library,
        });
    }

    /// Delivers held chunks that now continue the stream; returns the bytes no longer held.
    fn drain_contiguous(&mut self, stream: &mut Stream) -> usize {
        let mut freed = 0;
        while let Some(entry) = stream.pending.first_entry() {
            if *entry.key() > stream.next_offset {
                break;
            }
            let chunk = entry.remove();
            freed += chunk.data.len();
            self.deliver(stream, chunk);
        }
        stream.pending_bytes -= freed;
        if !stream.pending.is_empty() {
            stream.waiting_since = stream.last_ts;
        }
        freed
    }

    /// Gives up waiting: delivers every held chunk in offset order, gaps marked.
    fn release_with_gaps(&mut self, stream: &mut Stream) -> usize {
        let freed = stream.pending_bytes;
        while let Some((_, chunk)) = stream.pending.pop_first() {
            self.deliver(stream, chunk);
        }
        stream.pending_bytes = 0;
        freed
    }

    /// Releases the oldest held chunks (with a gap) while the stream's window is over its caps.
    fn enforce_window(&mut self, stream: &mut Stream, limits: &ReassemblyLimits) -> usize {
        let mut freed = 0;
        while stream.pending.len() > limits.max_pending_chunks
            || stream.pending_bytes > limits.max_pending_bytes
        {
            let Some((_, chunk)) = stream.pending.pop_first() else {
                break;
            };
            self.stats.window_overflows += 1;
            let len = chunk.data.len();
            stream.pending_bytes -= len;
            freed += len;
            self.deliver(stream, chunk);
            freed += self.drain_contiguous(stream);
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: ConnKey = ConnKey {
        pid: 7,
        conn: 0xabc,
    };

    fn chunk(offset: u64, data: &'static [u8], ts: u64) -> Chunk {
        Chunk {
            conn: CONN,
            tid: 1,
            dir: Direction::Egress,
            ts,
            offset,
            data: Bytes::from_static(data),
            truncated_after: false,
            library: TlsLibrary::OpenSsl,
        }
    }

    fn stream_of(segments: &[Segment]) -> (Vec<u8>, u64) {
        let data = segments
            .iter()
            .flat_map(|s| s.data.iter().copied())
            .collect();
        (data, segments.iter().map(|s| s.gap_before).sum())
    }

    #[test]
    fn in_order_chunks_pass_straight_through() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Vec::new();
        r.push(chunk(0, b"hello ", 1), &mut out);
        r.push(chunk(6, b"world", 2), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(stream_of(&out), (b"hello world".to_vec(), 0));
    }

    #[test]
    fn swapped_chunks_are_reordered() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Vec::new();
        r.push(chunk(6, b"world", 2), &mut out);
        assert!(out.is_empty());
        r.push(chunk(0, b"hello ", 1), &mut out);
        assert_eq!(stream_of(&out), (b"hello world".to_vec(), 0));
        assert_eq!(r.stats().reordered, 1);
    }

    #[test]
    fn overlaps_and_duplicates_are_trimmed() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Vec::new();
        r.push(chunk(0, b"hello", 1), &mut out);
        r.push(chunk(0, b"hello", 1), &mut out);
        r.push(chunk(3, b"lo world", 2), &mut out);
        assert_eq!(stream_of(&out), (b"hello world".to_vec(), 0));
        assert_eq!(r.stats().duplicates, 1);
    }

    #[test]
    fn window_overflow_releases_with_gap() {
        let limits = ReassemblyLimits {
            max_pending_chunks: 2,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = Vec::new();
        r.push(chunk(10, b"a", 1), &mut out);
        r.push(chunk(11, b"b", 2), &mut out);
        assert!(out.is_empty());
        r.push(chunk(12, b"c", 3), &mut out);
        assert_eq!(stream_of(&out), (b"abc".to_vec(), 10));
        assert_eq!(out[0].gap_before, 10);
        // A late chunk for the lost range is dropped, not delivered out of order.
        r.push(chunk(0, b"0123456789", 4), &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn truncated_chunk_does_not_wait_for_the_missing_bytes() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Vec::new();
        let mut cut = chunk(0, b"abc", 1);
        cut.truncated_after = true;
        r.push(cut, &mut out);
        r.push(chunk(100, b"z", 2), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].gap_before, 97);
    }

    #[test]
    fn timeout_releases_with_gap() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Vec::new();
        r.push(chunk(0, b"ab", 0), &mut out);
        r.push(chunk(5, b"fg", 10), &mut out);
        r.expire(20, &mut out);
        assert_eq!(out.len(), 1);
        r.expire(
            10 + ReassemblyLimits::default().reorder_timeout_ns,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].gap_before, 3);
        assert_eq!(r.stats().timeouts, 1);
    }

    #[test]
    fn conn_end_releases_and_forgets() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Vec::new();
        r.push(chunk(4, b"x", 1), &mut out);
        r.end_conn(CONN, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].gap_before, 4);
        assert!(r.streams.is_empty() && r.waiting.is_empty());
        assert_eq!(r.total_pending_bytes, 0);
    }

    #[test]
    fn total_cap_bounds_memory() {
        let limits = ReassemblyLimits {
            max_total_pending_bytes: 4,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = Vec::new();
        r.push(chunk(10, b"abc", 1), &mut out);
        assert!(out.is_empty());
        r.push(chunk(20, b"def", 1), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(r.total_pending_bytes, 0);
        assert_eq!(r.stats().total_cap_releases, 1);
    }

    #[test]
    fn stream_cap_evicts_oldest() {
        let limits = ReassemblyLimits {
            max_streams: 2,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = Vec::new();
        for conn in 0..5 {
            let mut c = chunk(0, b"x", conn);
            c.conn.conn = conn;
            r.push(c, &mut out);
        }
        assert!(r.streams.len() <= 2);
        assert_eq!(r.stats().streams_evicted, 3);
    }
}
