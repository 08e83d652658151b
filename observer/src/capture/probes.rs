//! The loaded eBPF object: programs, the probes defined for them, and the maps user space
//! talks to. Nothing outside the capture stage touches aya.
use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, UProbe},
};
use observer_ebpf::{ConnId, CopyVerdict, Followed, config, copy_verdict, counter};

use super::{
    Unfollowed,
    uprobe_events::{ProbeKey, UprobeEvents},
};

static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer-probes"));

/// A uprobe program, and whether it runs at the probed function's return.
#[derive(Clone, Copy, Debug)]
pub struct ProgramRef {
    pub name: &'static str,
    pub at_return: bool,
}

const fn entry(name: &'static str) -> ProgramRef {
    ProgramRef {
        name,
        at_return: false,
    }
}

const fn exit(name: &'static str) -> ProgramRef {
    ProgramRef {
        name,
        at_return: true,
    }
}

const UPROBE_PROGRAMS: &[ProgramRef] = &[
    entry("ssl_write"),
    entry("ssl_write_ex"),
    entry("ssl_read"),
    entry("ssl_read_ex"),
    exit("ssl_return"),
    entry("ssl_free"),
    entry("go_tls_write"),
    entry("go_tls_read"),
    // A uprobe on each RET instruction, not a return probe (Go moves its stacks).
    entry("go_tls_read_return"),
    entry("go_tls_close"),
    entry("go_fd_write"),
    entry("go_fd_read"),
    entry("go_fd_read_return"),
    entry("go_fd_close"),
    entry("go_connect"),
    entry("rustls_send"),
    exit("rustls_send_return"),
    entry("rustls_receive"),
    entry("socket_send"),
    entry("socket_sendv"),
    entry("socket_sendmsg"),
    entry("socket_recv"),
    entry("socket_recvv"),
    entry("socket_recvmsg"),
    exit("socket_return"),
    entry("socket_close"),
    entry("socket_connect"),
    entry("library_loaded"),
];
/// Tracepoints: rare events (process lifecycle), never per call.
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("process_fork", "sched", "sched_process_fork"),
    ("process_exec", "sched", "sched_process_exec"),
    ("process_exit", "sched", "sched_process_exit"),
];

/// The loaded programs and the probes defined for them.
pub struct Probes {
    // Dropped first: the definitions reference the programs.
    events: UprobeEvents,
    ebpf: Ebpf,
}

/// Maps that user space reads or writes while capturing.
pub struct SharedMaps {
    followed: HashMap<MapData, u32, Followed>,
    counters: PerCpuArray<MapData, u64>,
    /// Connections whose bytes the probes no longer copy.
    copy_verdicts: HashMap<MapData, ConnId, CopyVerdict>,
}

/// Per-CPU kernel counters, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub events_lost: u64,
    pub bytes_lost: u64,
    pub calls_truncated: u64,
    pub bytes_truncated: u64,
    pub read_faults: u64,
    pub probe_hits: u64,
    pub skipped_connection: u64,
    pub skipped_response: u64,
    pub skipped_not_http: u64,
}

impl Probes {
    /// Loads the object and attaches the process tracepoints; `every_exec`: report every
    /// `execve` on the host (whole host), else only those of followed processes.
    pub fn load(every_exec: bool) -> Result<(Probes, RingBuf<MapData>, SharedMaps)> {
        ensure_tracefs();
        let mut ebpf = Ebpf::load(PROBES_OBJECT).map_err(explain_load_error)?;
        for program in UPROBE_PROGRAMS {
            let uprobe: &mut UProbe = program_mut(&mut ebpf, program.name)?.try_into()?;
            uprobe
                .load()
                .with_context(|| format!("loading probe {}", program.name))?;
        }
        for (name, category, event) in TRACEPOINTS {
            let tracepoint: &mut TracePoint = program_mut(&mut ebpf, name)?.try_into()?;
            tracepoint
                .load()
                .with_context(|| format!("loading tracepoint program {name}"))?;
            tracepoint
                .attach(category, event)
                .with_context(|| format!("attaching to tracepoint {category}/{event}"))?;
        }
        let mut settings: Array<_, u32> = Array::try_from(map(&mut ebpf, "CONFIG")?)?;
        settings.set(config::EXEC_EVENTS_ALL, u32::from(every_exec), 0)?;
        let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?;
        let maps = SharedMaps {
            followed: HashMap::try_from(take_map(&mut ebpf, "FOLLOWED")?)?,
            counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?,
            copy_verdicts: HashMap::try_from(take_map(&mut ebpf, "COPY_VERDICTS")?)?,
        };
        let probes = Probes {
            events: UprobeEvents::new()?,
            ebpf,
        };
        Ok((probes, events, maps))
    }

    pub fn program_named(&self, name: &str) -> Option<ProgramRef> {
        UPROBE_PROGRAMS.iter().find(|p| p.name == name).copied()
    }

    /// The probe `key` on the file at `path`, defined once whatever the number of processes.
    pub fn define(
        &mut self,
        key: ProbeKey,
        path: &Path,
        program: ProgramRef,
        cookie: u64,
    ) -> Result<u64> {
        let loaded = self
            .ebpf
            .program(program.name)
            .ok_or_else(|| anyhow!("probe object has no program {}", program.name))?
            .fd()?;
        self.events
            .define(key, path, program.at_return, loaded.as_fd(), cookie)
    }

    /// Switches a defined probe on for one process (until the fd is closed).
    pub fn enable_for(&self, tracepoint_id: u64, pid: u32) -> Result<OwnedFd> {
        self.events.enable_for(tracepoint_id, pid)
    }

    pub fn definitions(&self) -> usize {
        self.events.defined()
    }
}

impl SharedMaps {
    /// The kernel counts the process's probe hits from now on (and reports its forks and exit).
    pub fn follow(&mut self, pid: u32, state: Followed) -> Result<()> {
        self.followed
            .insert(pid, state, 0)
            .context("adding a pid to the kernel's followed processes")
    }

    pub fn unfollow(&mut self, pid: u32) -> Result<()> {
        self.followed
            .remove(&pid)
            .context("removing a pid from the kernel's followed processes")
    }

    pub fn update_flags(&mut self, pid: u32, set: u32, clear: u32) -> Result<()> {
        let mut state = self
            .followed
            .get(&pid, 0)
            .context("reading a followed process's state")?;
        state.flags = (state.flags | set) & !clear;
        self.followed
            .insert(pid, state, 0)
            .context("updating a followed process's state")
    }

    /// Stops the probes copying what the pipeline no longer follows: a connection (until its
    /// session ends), or the response being read on one (until its next request).
    pub fn skip(&mut self, unfollowed: Unfollowed) -> Result<()> {
        let (conn, verdict) = match unfollowed {
            Unfollowed::Connection(conn) => (
                conn,
                CopyVerdict {
                    mode: copy_verdict::SKIP,
                    request_end: 0,
                },
            ),
            Unfollowed::Response { conn, request_end } => (
                conn,
                CopyVerdict {
                    mode: copy_verdict::SKIP_RESPONSE,
                    request_end,
                },
            ),
        };
        let id: ConnId = [conn.conn, u64::from(conn.pid)];
        self.copy_verdicts
            .insert(id, verdict, 0)
            .context("adding a verdict to the kernel's copy verdicts")
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        KernelCounters {
            events_lost: sum(counter::EVENTS_LOST),
            bytes_lost: sum(counter::BYTES_LOST),
            calls_truncated: sum(counter::CALLS_TRUNCATED),
            bytes_truncated: sum(counter::BYTES_TRUNCATED),
            read_faults: sum(counter::READ_FAULTS),
            probe_hits: sum(counter::PROBE_HITS),
            skipped_connection: sum(counter::SKIPPED_CONNECTION),
            skipped_response: sum(counter::SKIPPED_RESPONSE),
            skipped_not_http: sum(counter::SKIPPED_NOT_HTTP),
        }
    }
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("probe object has no program {name}"))
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("probe object has no map {name}"))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("probe object has no map {name}"))
}

/// Tracepoints are found through tracefs, which a fresh boot may not have mounted.
fn ensure_tracefs() {
    let target = Path::new("/sys/kernel/tracing");
    if !running_as_root()
        || target.join("events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    // SAFETY: plain mount(2) with static NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        log::warn!(
            "tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn explain_load_error(error: aya::EbpfError) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("Operation not permitted") || text.contains("EPERM") || !running_as_root() {
        anyhow!(
            "loading the eBPF probes failed ({text}): the observer needs root, or CAP_BPF and \
             CAP_PERFMON (plus CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to read other processes' \
             /proc/PID/maps). Run it with sudo, or grant those capabilities to the binary."
        )
    } else {
        anyhow!(error).context("loading the eBPF probes")
    }
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
