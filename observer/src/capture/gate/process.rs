//! The gate process: the only holder of the fanotify descriptor, answering the kernel when
//! the observer replies or when the bound passes.
use super::*;

/// The gate's `main`: called by the observer's `main` when its first argument is
/// [`EXEC_GATE_ARG`], before anything else starts.
pub fn run_exec_gate() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let Some((fanotify, socket, bound)) = gate_arguments(&args) else {
        eprintln!(
            "observer: `{EXEC_GATE_ARG}` is the exec gate the observer starts for itself \
             (arguments: FANOTIFY_FD SOCKET_FD BOUND_MICROSECONDS)"
        );
        return ExitCode::from(2);
    };
    close_other_descriptors([fanotify.as_raw_fd(), socket.as_raw_fd()]);
    if let Err(errno) = nix::sys::prctl::set_name(c"observer-gate") {
        eprintln!("observer-gate: naming the process: {errno}");
    }
    // The observer ends the gate explicitly, and its death ends it too: the socket closes.
    // (Not PR_SET_PDEATHSIG, which fires when the thread that started the gate exits.)
    for ignored in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN runs no handler code.
        if let Err(errno) = unsafe { signal(ignored, SigHandler::SigIgn) } {
            eprintln!("observer-gate: ignoring {ignored}: {errno}");
        }
    }
    // The kernel denies an event whose descriptor it cannot open for the gate: leave room.
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    Gate {
        fanotify,
        observer: socket,
        bound,
        answered_at_once: [getpid().as_raw(), getppid().as_raw()],
        pending: Vec::with_capacity(MAX_PENDING),
        next_id: 0,
        observer_answering: true,
        answered_alone: 0,
    }
    .run();
    ExitCode::SUCCESS
}

pub(super) fn gate_arguments(args: &[OsString]) -> Option<(Fanotify, OwnedFd, Duration)> {
    let [fanotify, socket, bound] = args else {
        return None;
    };
    let number = |arg: &OsStr| arg.to_str()?.parse::<u64>().ok();
    let bound = Duration::from_micros(number(bound)?);
    let [fanotify, socket] = [fanotify, socket].map(|fd| {
        number(fd)
            .and_then(|fd| RawFd::try_from(fd).ok())
            // Standard streams are never ours, and the descriptor must be open.
            // SAFETY: F_GETFD only reads the descriptor's flags.
            .filter(|&fd| fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
    });
    let (fanotify, socket) = (fanotify?, socket?);
    if fanotify == socket {
        return None;
    }
    // SAFETY: the observer passed these two open descriptors for the gate alone.
    unsafe {
        Some((
            Fanotify::from_raw_fd(fanotify),
            OwnedFd::from_raw_fd(socket),
            bound,
        ))
    }
}

/// Descriptors the observer had inherited without close-on-exec reached the gate too: close
/// them, so that the gate keeps no one's pipe or file open.
pub(super) fn close_other_descriptors(kept: [RawFd; 2]) {
    let [low, high] = if kept[0] < kept[1] {
        kept
    } else {
        [kept[1], kept[0]]
    };
    for (first, last) in [(3, low - 1), (low + 1, high - 1), (high + 1, RawFd::MAX)] {
        if first <= last {
            // SAFETY: the gate has opened nothing yet; these are strays from the observer.
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    first as libc::c_uint,
                    last as libc::c_uint,
                    0,
                )
            };
        }
    }
}

pub(super) struct Pending {
    pub(super) id: u64,
    pub(super) event: FanotifyEvent,
    pub(super) deadline: Instant,
}

pub(super) struct Gate {
    pub(super) fanotify: Fanotify,
    pub(super) observer: OwnedFd,
    pub(super) bound: Duration,
    /// The gate's own pid and the observer's: never held (the observer reading a held file
    /// must not wait for itself).
    pub(super) answered_at_once: [i32; 2],
    pub(super) pending: Vec<Pending>,
    pub(super) next_id: u64,
    /// False once an event waited out the bound, until the observer sends anything again.
    pub(super) observer_answering: bool,
    /// Events answered without the observer's reply, sent with each message (a count, so that
    /// a lost message loses nothing).
    pub(super) answered_alone: u64,
}

impl Gate {
    pub(super) fn run(mut self) {
        loop {
            let (events_ready, observer_ready) = match self.wait() {
                Ok(ready) => ready,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    eprintln!("observer-gate: poll: {errno}");
                    break;
                }
            };
            if observer_ready && !self.read_observer() {
                break;
            }
            if events_ready {
                self.read_events();
            }
            self.answer_expired();
        }
        // The observer is gone: let everything go. Events not read yet are let go by the
        // kernel when the last fanotify descriptor closes, on exit.
        for pending in std::mem::take(&mut self.pending) {
            self.allow(&pending.event);
        }
    }

    /// Waits for an event, a message or the next deadline.
    pub(super) fn wait(&self) -> nix::Result<(bool, bool)> {
        let timeout = match self.pending.iter().map(|pending| pending.deadline).min() {
            // Rounded up, so that a deadline less than a millisecond away is not a busy loop.
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(self.fanotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.observer.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut fds, timeout)?;
        let ready = |fd: &PollFd| fd.revents().is_some_and(|revents| !revents.is_empty());
        Ok((ready(&fds[0]), ready(&fds[1])))
    }

    /// Handles what the observer sent; false when it is gone.
    pub(super) fn read_observer(&mut self) -> bool {
        let mut buffer = [0u8; Request::SIZE];
        loop {
            let (len, fd) = match receive(&self.observer, &mut buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(Some(received)) => received,
                Ok(None) => return false,
                Err(Errno::EAGAIN) => return true,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            };
            self.observer_answering = true;
            match Request::decode(&buffer[..len]) {
                Some(Request::Release(id)) => {
                    if let Some(index) = self.pending.iter().position(|pending| pending.id == id) {
                        let pending = self.pending.swap_remove(index);
                        self.allow(&pending.event);
                    }
                }
                Some(Request::Mark(target, request)) => {
                    let marked = match &fd {
                        Some(fd) => self.mark(target, fd.as_fd()),
                        None => Err(Errno::EBADF),
                    };
                    let reply = GateMessage {
                        body: GateBody::Marked(MarkReply {
                            request,
                            errno: marked.err().map_or(0, |errno| errno as i32),
                        }),
                        answered_alone: self.answered_alone,
                    };
                    let _ = send(&self.observer, &reply.encode(), None);
                }
                None => {}
            }
        }
    }

    /// Marks the file or filesystem of `fd`.
    pub(super) fn mark(&self, target: MarkTarget, fd: BorrowedFd) -> nix::Result<()> {
        let (flags, mask) = match target {
            MarkTarget::Filesystem => (
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
                MaskFlags::FAN_OPEN_EXEC_PERM,
            ),
            MarkTarget::File => (
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_INODE,
                MaskFlags::FAN_OPEN_PERM,
            ),
        };
        self.fanotify.mark(flags, mask, fd, None::<&str>)
    }

    /// One read's worth of events (at most 4 KiB of them), so the observer's messages are not
    /// starved by a burst of execs.
    pub(super) fn read_events(&mut self) {
        let events = match self.fanotify.read_events() {
            Ok(events) => events,
            Err(Errno::EAGAIN | Errno::EINTR) => return,
            Err(errno) => {
                eprintln!("observer-gate: reading fanotify events: {errno}");
                return;
            }
        };
        for event in events {
            self.on_event(event);
        }
    }

    pub(super) fn on_event(&mut self, event: FanotifyEvent) {
        // No descriptor: a queue overflow, which an unlimited queue does not have.
        if event.fd().is_none() {
            return;
        }
        let mask = event.mask();
        let kind = if mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
            HoldKind::Exec
        } else if mask.contains(MaskFlags::FAN_OPEN_PERM) {
            HoldKind::Open
        } else {
            return; // not a permission event: nothing waits for an answer
        };
        if self.answered_at_once.contains(&event.pid()) {
            self.allow(&event);
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let hold = GateBody::Hold {
            id,
            pid: event.pid() as u32,
            kind,
        };
        let waiting = self.observer_answering && self.pending.len() < MAX_PENDING;
        if waiting {
            let message = GateMessage {
                body: hold,
                answered_alone: self.answered_alone,
            };
            if send(&self.observer, &message.encode(), event.fd()).is_ok() {
                self.pending.push(Pending {
                    id,
                    event,
                    deadline: Instant::now() + self.bound,
                });
                return;
            }
        }
        // The observer is unresponsive, swamped, or its socket full: do not wait for it.
        self.allow(&event);
        self.answered_alone += 1;
        if !waiting {
            // Still told, for what it may learn from the file when it wakes.
            let message = GateMessage {
                body: hold,
                answered_alone: self.answered_alone,
            };
            let _ = send(&self.observer, &message.encode(), event.fd());
        }
    }

    pub(super) fn answer_expired(&mut self) {
        let now = Instant::now();
        let before = self.pending.len();
        let mut index = 0;
        while index < self.pending.len() {
            if self.pending[index].deadline <= now {
                let pending = self.pending.swap_remove(index);
                self.allow(&pending.event);
                self.answered_alone += 1;
            } else {
                index += 1;
            }
        }
        if self.pending.len() < before {
            self.observer_answering = false;
            let message = GateMessage {
                body: GateBody::Counters,
                answered_alone: self.answered_alone,
            };
            let _ = send(&self.observer, &message.encode(), None);
        }
    }

    pub(super) fn allow(&self, event: &FanotifyEvent) {
        let Some(fd) = event.fd() else {
            return;
        };
        if let Err(errno) = self
            .fanotify
            .write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW))
        {
            eprintln!(
                "observer-gate: answering pid {}: {errno} (it waits until the gate exits)",
                event.pid()
            );
        }
    }
}
