//! The loaded eBPF object: programs, their attachments, and the maps user space talks to.
//! Nothing outside the capture stage touches aya.
use std::{collections::HashSet, path::Path};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use observer_ebpf::{ConnId, CopyVerdict, config, copy_verdict, counter};

use super::{
    Unfollowed,
    boringssl::{Locator, Verdict},
    discover::FileId,
    elf::{self, AttachPoint, TLS_FUNCTIONS},
    golang::{self, GoBinary},
};

static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer-probes"));

const UPROBE_PROGRAMS: &[&str] = &[
    "ssl_write",
    "ssl_write_ex",
    "ssl_read",
    "ssl_read_ex",
    "ssl_return",
    "ssl_free",
    "go_tls_write",
    "go_tls_read",
    "go_tls_read_return",
    "go_tls_close",
    "rustls_send",
    "rustls_send_return",
    "rustls_receive",
];
/// Each program and the tracepoints it serves (the syscall programs dispatch on the number).
const TRACEPOINTS: &[(&str, &str, &[&str])] = &[
    ("process_fork", "sched", &["sched_process_fork"]),
    ("process_exec", "sched", &["sched_process_exec"]),
    ("process_exit", "sched", &["sched_process_exit"]),
    ("syscall_enter", "syscalls", &SYSCALLS_ENTER),
    ("syscall_exit", "syscalls", &SYSCALLS_EXIT),
];
/// The syscalls that open, carry and close connections, and map libraries.
macro_rules! syscall_tracepoints {
    ($prefix:literal) => {
        [
            concat!($prefix, "connect"),
            concat!($prefix, "accept"),
            concat!($prefix, "accept4"),
            concat!($prefix, "close"),
            concat!($prefix, "mmap"),
            concat!($prefix, "read"),
            concat!($prefix, "write"),
            concat!($prefix, "readv"),
            concat!($prefix, "writev"),
            concat!($prefix, "recvfrom"),
            concat!($prefix, "sendto"),
            concat!($prefix, "recvmsg"),
            concat!($prefix, "sendmsg"),
        ]
    };
}
const SYSCALLS_ENTER: [&str; 13] = syscall_tracepoints!("sys_enter_");
const SYSCALLS_EXIT: [&str; 13] = syscall_tracepoints!("sys_exit_");

/// Loaded programs and the files they are attached to.
pub struct Probes {
    ebpf: Ebpf,
    judged: HashSet<FileId>,
    attached_files: usize,
    boringssl: Locator,
    own_executable: Option<FileId>,
}

/// Maps that user space reads or writes while capturing.
pub struct SharedMaps {
    pub watched_pids: HashMap<MapData, u32, u8>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Connections whose bytes the probes no longer copy.
    pub copy_verdicts: HashMap<MapData, ConnId, CopyVerdict>,
}

/// Per-CPU kernel counters, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub events_lost: u64,
    pub bytes_lost: u64,
    pub calls_truncated: u64,
    pub bytes_truncated: u64,
    pub read_faults: u64,
}

impl Probes {
    /// Loads the object and attaches the process tracepoints. No TLS library is attached yet.
    pub fn load(filter_pids: bool) -> Result<(Probes, RingBuf<MapData>, SharedMaps)> {
        ensure_tracefs();
        let mut ebpf = Ebpf::load(PROBES_OBJECT).map_err(explain_load_error)?;
        for name in UPROBE_PROGRAMS {
            let program: &mut UProbe = program(&mut ebpf, name)?.try_into()?;
            program
                .load()
                .with_context(|| format!("loading probe {name}"))?;
        }
        for (name, category, events) in TRACEPOINTS {
            let program: &mut TracePoint = program(&mut ebpf, name)?.try_into()?;
            program
                .load()
                .with_context(|| format!("loading tracepoint program {name}"))?;
            for event in *events {
                program
                    .attach(category, event)
                    .with_context(|| format!("attaching to tracepoint {category}/{event}"))?;
            }
        }
        let mut settings: Array<_, u32> = Array::try_from(map(&mut ebpf, "CONFIG")?)?;
        settings.set(config::FILTER_PIDS, u32::from(filter_pids), 0)?;
        let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?;
        let maps = SharedMaps {
            watched_pids: HashMap::try_from(take_map(&mut ebpf, "WATCHED_PIDS")?)?,
            counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?,
            copy_verdicts: HashMap::try_from(take_map(&mut ebpf, "COPY_VERDICTS")?)?,
        };
        Ok((
            Probes {
                ebpf,
                judged: HashSet::new(),
                attached_files: 0,
                boringssl: Locator::default(),
                own_executable: FileId::of(Path::new("/proc/self/exe")),
            },
            events,
            maps,
        ))
    }

    pub fn attached_files(&self) -> usize {
        self.attached_files
    }

    /// Attaches to `path` if it defines TLS functions: by symbol, by code signature (BoringSSL
    /// without symbols), or through the Go runtime's tables (`crypto/tls`). Each file (by
    /// inode) is looked at once. Returns how many probes were attached.
    pub fn consider(&mut self, id: FileId, path: &Path) -> Result<usize> {
        if self.judged.contains(&id) || Some(id) == self.own_executable {
            // The observer's own TLS (OTLP export over rustls) is not observed.
            return Ok(0);
        }
        // On an error the file stays unjudged: a later sighting (another path to it) tries again.
        let reading = || format!("reading {}", path.display());
        let mut functions = elf::find_functions(path, TLS_FUNCTIONS).with_context(reading)?;
        let mut method = "by symbol".to_owned();
        if !functions.iter().any(|(f, _)| f.moves_data) {
            match self.boringssl.locate(path).with_context(reading)? {
                Verdict::Absent => {}
                Verdict::Located {
                    read_offset,
                    write_offset,
                    evidence,
                } => {
                    functions = vec![
                        (elf::BORINGSSL_READ, read_offset),
                        (elf::BORINGSSL_WRITE, write_offset),
                    ];
                    method = format!("without symbols, by code signature: {evidence}");
                }
                Verdict::Refused(why) => log::warn!(
                    "{} embeds BoringSSL, but its SSL_read/SSL_write could not be identified \
                     with certainty ({why}); not attaching, so its TLS traffic will not be \
                     seen. Please report this build (its version and `file` output).",
                    path.display()
                ),
            }
        }
        let mut points = Vec::new();
        let mut found = Vec::new();
        if functions.iter().any(|(f, _)| f.moves_data) {
            points.extend(
                functions
                    .iter()
                    .flat_map(|(f, offset)| f.attach_points(*offset)),
            );
            found.push(format!(
                "{} probes ({}), found {method}",
                functions[0].0.library.as_str(),
                describe_offsets(&functions)
            ));
        }
        match golang::inspect(path).with_context(reading)? {
            GoBinary::Tls(go) => {
                points.extend(go.attach_points());
                found.push(format!(
                    "Go crypto/tls probes ({}, bounds from {}, {} RET instructions of Read{})",
                    go.version.as_deref().unwrap_or("Go version unknown"),
                    go.bounds_from,
                    go.read_returns.len(),
                    if go.close.is_some() { ", Close" } else { "" }
                ));
            }
            GoBinary::Unsupported { version, reason } => log::warn!(
                "not capturing TLS of the Go program {} ({}): {reason}. Its calls will not be \
                 seen; rebuild it with Go 1.17 or later for amd64 to capture them.",
                path.display(),
                version.as_deref().unwrap_or("Go version unknown"),
            ),
            GoBinary::NotGo | GoBinary::WithoutTls => {}
        }
        self.attach_all(path, &points)?;
        self.judged.insert(id);
        if points.is_empty() {
            return Ok(0);
        }
        self.attached_files += 1;
        log::info!("attached {} to {}", found.join(" and "), path.display());
        Ok(points.len())
    }
}

impl Probes {
    /// Attaches every probe, or none: a failure detaches what was attached.
    fn attach_all(&mut self, path: &Path, points: &[AttachPoint]) -> Result<()> {
        let mut attached = Vec::new();
        let result = self.attach_each(path, points, &mut attached);
        if result.is_err() {
            for (name, link) in attached {
                if let Ok(program) =
                    program(&mut self.ebpf, name).and_then(|p| Ok(<&mut UProbe>::try_from(p)?))
                {
                    let _ = program.detach(link);
                }
            }
        }
        result
    }

    fn attach_each(
        &mut self,
        path: &Path,
        points: &[AttachPoint],
        attached: &mut Vec<(&'static str, UProbeLinkId)>,
    ) -> Result<()> {
        for point in points {
            let program: &mut UProbe = program(&mut self.ebpf, point.program)?.try_into()?;
            let link = program
                .attach(
                    UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(point.offset),
                        // The cookie tells the probes which library the bytes come from.
                        cookie: Some(point.library as u64),
                    },
                    path,
                    UProbeScope::AllProcesses,
                )
                .with_context(|| {
                    format!(
                        "attaching {} to {} (file offset {:#x}) in {}",
                        point.program,
                        point.function,
                        point.offset,
                        path.display()
                    )
                })?;
            attached.push((point.program, link));
        }
        Ok(())
    }
}

impl SharedMaps {
    pub fn watch_pid(&mut self, pid: u32) -> Result<()> {
        self.watched_pids
            .insert(pid, 1, 0)
            .context("adding a pid to the kernel's watch list")
    }

    pub fn unwatch_pid(&mut self, pid: u32) -> Result<()> {
        self.watched_pids
            .remove(&pid)
            .context("removing a pid from the kernel's watch list")
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
        }
    }
}

/// "SSL_read at file offset 0x…, …"; a function with several copies is counted, not listed.
fn describe_offsets(functions: &[(elf::TlsFunction, u64)]) -> String {
    let mut seen: Vec<(&str, Vec<u64>)> = Vec::new();
    for (function, offset) in functions {
        match seen
            .iter_mut()
            .find(|(symbol, _)| *symbol == function.symbol)
        {
            Some((_, offsets)) => offsets.push(*offset),
            None => seen.push((function.symbol, vec![*offset])),
        }
    }
    seen.iter()
        .map(|(symbol, offsets)| match offsets.as_slice() {
            [one] => format!("{symbol} at file offset {one:#x}"),
            many => format!("{symbol} ({} copies)", many.len()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
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
