//! MCP on stdio: the newline-delimited JSON-RPC an agent writes to, and reads from, the pipes of
//! an MCP server it started. The capture reports each pipe as a connection of its own, with
//! the process at its other end; a session joins the two pipes of one server (requests written
//! on one, responses read on the other), so that responses pair with requests by id.
use std::collections::HashMap;

use serde_json::Value;

use super::{Direction, McpCall, Session, Transport};
use crate::capture::{Chunk, ConnHash, ConnKey, Direction as Flow, Unfollowed};

/// A line longer than this is dropped (counted) up to its end: no message is that long.
const MAX_LINE_BYTES: usize = 8 << 20;
/// Pipes and sessions followed at once; past this new ones are not (counted).
const MAX_PIPES: usize = 4096;

/// What the stdio stage could not read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioStats {
    /// Lines that were not JSON, or longer than the cap.
    pub unreadable_lines: u64,
    /// Bytes the capture lost on a pipe (a gap in its offsets): the line they were in is lost.
    pub gaps: u64,
    /// Requests never answered, dropped from a session holding too many.
    pub requests_dropped: u64,
    /// Pipes not followed: past the bound.
    pub pipes_over_bound: u64,
}

/// One pipe of an agent's (or a Unix socket, which carries both ways): which session it
/// belongs to, and the line being read each way.
struct Pipe {
    session: (u32, u32),
    /// Written, read.
    ways: [Lines; 2],
    /// A client's JSON-RPC message was seen on it (a request sent, or a response received).
    speaks_json_rpc: bool,
}

/// One direction of a pipe.
#[derive(Default)]
struct Lines {
    /// The stream offset the next chunk should start at.
    offset: u64,
    line: Vec<u8>,
    /// The current line is past the cap, or started in bytes that were lost: dropped to its end.
    skipping: bool,
}

#[derive(Default)]
pub struct StdioStage {
    pipes: HashMap<ConnKey, Pipe, ConnHash>,
    /// By (agent pid, server pid; 0 when the server is not known).
    sessions: HashMap<(u32, u32), Session>,
    unfollowed: Vec<Unfollowed>,
    pub stats: StdioStats,
}

impl StdioStage {
    /// The capture found that `conn` is a pipe to the process `peer`.
    pub fn pipe(&mut self, conn: ConnKey, peer: Option<u32>) {
        if self.pipes.len() >= MAX_PIPES && !self.pipes.contains_key(&conn) {
            self.stats.pipes_over_bound += 1;
            self.unfollowed.push(Unfollowed::Connection(conn));
            return;
        }
        self.pipes.insert(
            conn,
            Pipe {
                session: (conn.pid, peer.unwrap_or(0)),
                ways: Default::default(),
                speaks_json_rpc: false,
            },
        );
    }

    /// Bytes written to (egress) or read from (ingress) a pipe: the requests and notifications
    /// they complete.
    pub fn chunk(&mut self, chunk: &Chunk, out: &mut Vec<McpCall>) {
        if !self.pipes.contains_key(&chunk.conn) {
            self.pipe(chunk.conn, None);
        }
        let Some(pipe) = self.pipes.get_mut(&chunk.conn) else {
            return;
        };
        let (direction, way) = match chunk.dir {
            Flow::Egress => (Direction::Sent, 0),
            Flow::Ingress => (Direction::Received, 1),
        };
        let lines = &mut pipe.ways[way];
        if chunk.offset != lines.offset {
            self.stats.gaps += 1;
            lines.line.clear();
            lines.skipping = true;
        }
        lines.offset = chunk.offset + chunk.data.len() as u64;
        if self.sessions.len() >= MAX_PIPES && !self.sessions.contains_key(&pipe.session) {
            self.stats.pipes_over_bound += 1;
            return;
        }
        let session = self
            .sessions
            .entry(pipe.session)
            .or_insert_with(|| Session {
                transport: Transport::Pipe,
                ..Session::default()
            });
        let mut rest = &chunk.data[..];
        while !rest.is_empty() {
            let (piece, complete) = match memchr::memchr(b'\n', rest) {
                Some(newline) => (&rest[..newline], true),
                None => (rest, false),
            };
            rest = &rest[(piece.len() + usize::from(complete)).min(rest.len())..];
            let lines = &mut pipe.ways[way];
            if !lines.skipping {
                if lines.line.len() + piece.len() > MAX_LINE_BYTES {
                    lines.line.clear();
                    lines.skipping = true;
                    // A loss only on a pipe known to carry MCP.
                    self.stats.unreadable_lines += u64::from(pipe.speaks_json_rpc);
                } else {
                    lines.line.extend_from_slice(piece);
                }
            }
            if !complete {
                break;
            }
            let line = std::mem::take(&mut lines.line);
            if std::mem::take(&mut lines.skipping) || line.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(&line) {
                Ok(message) if message.get("jsonrpc").and_then(Value::as_str) == Some("2.0") => {
                    let request = message.get("method").is_some();
                    // A server's pipe: it sends responses, it receives requests.
                    if !pipe.speaks_json_rpc && request == (direction == Direction::Received) {
                        self.unfollowed.push(Unfollowed::Connection(chunk.conn));
                        self.pipes.remove(&chunk.conn);
                        break;
                    }
                    pipe.speaks_json_rpc = true;
                    session.message(direction, chunk.ts, &message, out);
                }
                _ if pipe.speaks_json_rpc => self.stats.unreadable_lines += 1,
                _ => {
                    // Its first line is not JSON-RPC: something else (not a loss), no longer
                    // copied.
                    self.unfollowed.push(Unfollowed::Connection(chunk.conn));
                    self.pipes.remove(&chunk.conn);
                    break;
                }
            }
        }
        self.stats.requests_dropped += std::mem::take(&mut session.dropped);
    }

    /// A pipe was closed: when both of a session's pipes are, its requests still waiting are
    /// reported unanswered.
    pub fn pipe_ended(&mut self, conn: &ConnKey, ts: u64) -> Vec<McpCall> {
        let Some(pipe) = self.pipes.remove(conn) else {
            return Vec::new();
        };
        let session = pipe.session;
        if self.pipes.values().any(|p| p.session == session) {
            return Vec::new();
        }
        self.sessions
            .remove(&session)
            .map(|mut s| s.finish(ts))
            .unwrap_or_default()
    }

    /// The agent `pid` ended: its sessions end.
    pub fn process_ended(&mut self, pid: u32, ts: u64) -> Vec<McpCall> {
        self.pipes.retain(|conn, _| conn.pid != pid);
        let ended: Vec<(u32, u32)> = self
            .sessions
            .keys()
            .filter(|(agent, _)| *agent == pid)
            .copied()
            .collect();
        ended
            .into_iter()
            .filter_map(|key| self.sessions.remove(&key))
            .flat_map(|mut session| session.finish(ts))
            .collect()
    }

    /// Pipes found not to carry JSON-RPC: the capture may stop copying them.
    pub fn take_unfollowed(&mut self) -> Vec<Unfollowed> {
        std::mem::take(&mut self.unfollowed)
    }
}
