//! The messages between the observer and the gate: fixed-size little-endian records, one per
//! packet, with at most one descriptor.
use super::*;

/// Sends one packet without blocking (a full socket means a peer that is not reading).
pub(super) fn send(socket: &OwnedFd, bytes: &[u8], fd: Option<BorrowedFd>) -> nix::Result<()> {
    let fds = fd.map(|fd| [fd.as_raw_fd()]);
    let rights: Vec<ControlMessage> = fds
        .iter()
        .map(|fds| ControlMessage::ScmRights(fds))
        .collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &rights,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(|_| ())
}

/// Receives one packet and the descriptor it carries; `None` at the end of the stream.
pub(super) fn receive(
    socket: &OwnedFd,
    buffer: &mut [u8],
    flags: MsgFlags,
) -> nix::Result<Option<(usize, Option<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if message.bytes == 0 {
        return Ok(None);
    }
    let mut received = Vec::new();
    // A truncated control message (ENOBUFS here) carries no descriptor we could use.
    for control in message.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(fds) = control {
            // SAFETY: descriptors the kernel just installed for this process.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    // One at most is expected; any other is closed here.
    Ok(Some((message.bytes, received.into_iter().next())))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MarkTarget {
    /// The filesystem of the descriptor: every exec on it.
    Filesystem,
    /// The descriptor's file: every open of it.
    File,
}

/// Observer → gate.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    Release(u64),
    /// A mark request, carrying the file or a directory of the filesystem, and its number.
    Mark(MarkTarget, u64),
}

impl Request {
    pub(super) const SIZE: usize = 12;

    pub(super) fn encode(&self) -> [u8; Self::SIZE] {
        let (tag, id) = match *self {
            Request::Release(id) => (1u32, id),
            Request::Mark(MarkTarget::Filesystem, request) => (2, request),
            Request::Mark(MarkTarget::File, request) => (3, request),
        };
        let mut bytes = [0; Self::SIZE];
        bytes[..4].copy_from_slice(&tag.to_le_bytes());
        bytes[4..].copy_from_slice(&id.to_le_bytes());
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Request> {
        let bytes: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        let id = u64::from_le_bytes(bytes[4..].try_into().ok()?);
        match u32::from_le_bytes(bytes[..4].try_into().ok()?) {
            1 => Some(Request::Release(id)),
            2 => Some(Request::Mark(MarkTarget::Filesystem, id)),
            3 => Some(Request::Mark(MarkTarget::File, id)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MarkReply {
    pub(super) request: u64,
    /// 0 when marked.
    pub(super) errno: i32,
}

/// Gate → observer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GateMessage {
    pub(super) body: GateBody,
    pub(super) answered_alone: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GateBody {
    /// An event, with its file attached.
    Hold {
        id: u64,
        pid: u32,
        kind: HoldKind,
    },
    Marked(MarkReply),
    /// Only the count of events answered alone changed.
    Counters,
}

impl GateMessage {
    /// tag u32, pid or errno u32, id u64, events answered alone u64.
    pub(super) const SIZE: usize = 24;

    pub(super) fn encode(&self) -> [u8; Self::SIZE] {
        let (tag, value, id) = match self.body {
            GateBody::Hold {
                id,
                pid,
                kind: HoldKind::Exec,
            } => (1u32, pid, id),
            GateBody::Hold {
                id,
                pid,
                kind: HoldKind::Open,
            } => (2, pid, id),
            GateBody::Marked(reply) => (3, reply.errno as u32, reply.request),
            GateBody::Counters => (4, 0, 0),
        };
        let mut bytes = [0; Self::SIZE];
        bytes[..4].copy_from_slice(&tag.to_le_bytes());
        bytes[4..8].copy_from_slice(&value.to_le_bytes());
        bytes[8..16].copy_from_slice(&id.to_le_bytes());
        bytes[16..].copy_from_slice(&self.answered_alone.to_le_bytes());
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<GateMessage> {
        let bytes: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes[at..at + 4].try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes[at..at + 8].try_into().ok()?));
        let (value, id) = (u32_at(4)?, u64_at(8)?);
        let body = match u32_at(0)? {
            1 => GateBody::Hold {
                id,
                pid: value,
                kind: HoldKind::Exec,
            },
            2 => GateBody::Hold {
                id,
                pid: value,
                kind: HoldKind::Open,
            },
            3 => GateBody::Marked(MarkReply {
                request: id,
                errno: value as i32,
            }),
            4 => GateBody::Counters,
            _ => return None,
        };
        Some(GateMessage {
            body,
            answered_alone: u64_at(16)?,
        })
    }
}
