//! The loaded eBPF object: programs, the probes defined for them, and the maps user space
//! talks to. Nothing outside the capture stage touches aya.
use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    path::Path,
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use aya_obj::{
    btf::BtfFeatures,
    generated::{BPF_NOEXIST, bpf_insn},
};
use observer_common::{ConnId, CopyVerdict, Followed, Lineage, config, copy_verdict, counter};

use super::{
    Command, Unfollowed,
    catch_up::Descendant,
    kernel_btf::KernelOffsets,
    uprobe_links::{ATTACH_UPROBE_MULTI, Link, LinkCloser, Site, bpf_new_fd},
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
    entry("rustls_decrypt"),
    exit("rustls_decrypt_return"),
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

/// The loaded programs.
pub struct Probes {
    /// The uprobe programs, loaded for per-process links, by name.
    uprobes: std::collections::HashMap<&'static str, OwnedFd>,
    links: LinkCloser,
    /// The maps and the process tracepoints.
    _ebpf: Ebpf,
}

/// Maps that user space reads or writes while capturing.
pub struct SharedMaps {
    followed: HashMap<MapData, u32, Followed>,
    counters: PerCpuArray<MapData, u64>,
    /// Connections whose bytes the probes no longer copy.
    copy_verdicts: HashMap<MapData, ConnId, CopyVerdict>,
    /// Agents and the processes below them (see `observer-ebpf/src/agent_tree.rs`).
    agent_tree: HashMap<MapData, u32, Lineage>,
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
    pub tree_depth_cut: u64,
    pub tree_full: u64,
    /// Decrypted rustls records lost: their session had not written since its keys changed.
    pub rustls_session_unknown: u64,
    /// rustls calls on the server side of a connection, not copied.
    pub rustls_server_side: u64,
}

impl Probes {
    /// Loads the object and attaches the process tracepoints; `every_exec`: report every
    /// `execve` on the host (whole host), else only those of followed processes.
    pub fn load(every_exec: bool) -> Result<(Probes, RingBuf<MapData>, SharedMaps)> {
        ensure_tracefs();
        let mut ebpf = Ebpf::load(PROBES_OBJECT).map_err(explain_load_error)?;
        let uprobes = load_uprobe_programs(&ebpf)?;
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
        match KernelOffsets::of_running_kernel() {
            Ok(offsets) => {
                for (index, offset) in [
                    (config::TASK_MM, offsets.task_mm),
                    (config::MM_ARG_START, offsets.mm_arg_start),
                    (config::MM_ARG_END, offsets.mm_arg_end),
                    (config::TASK_EXIT_CODE, offsets.task_exit_code),
                ] {
                    settings.set(index, offset, 0)?;
                }
            }
            Err(reason) => log::warn!(
                "commands that agents run will be reported without their arguments and exit \
                 codes: {reason}"
            ),
        }
        let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?;
        let maps = SharedMaps {
            followed: HashMap::try_from(take_map(&mut ebpf, "FOLLOWED")?)?,
            counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?,
            copy_verdicts: HashMap::try_from(take_map(&mut ebpf, "COPY_VERDICTS")?)?,
            agent_tree: HashMap::try_from(take_map(&mut ebpf, "AGENT_TREE")?)?,
        };
        let probes = Probes {
            uprobes,
            links: LinkCloser::start()?,
            _ebpf: ebpf,
        };
        Ok((probes, events, maps))
    }

    pub fn program_named(&self, name: &str) -> Option<ProgramRef> {
        UPROBE_PROGRAMS.iter().find(|p| p.name == name).copied()
    }

    /// Switches `program` on at `sites` of the file at `path`, in process `pid` only.
    pub fn enable_for(
        &self,
        pid: u32,
        path: &Path,
        program: ProgramRef,
        sites: &[Site],
    ) -> Result<Link> {
        let loaded = self
            .uprobes
            .get(program.name)
            .ok_or_else(|| anyhow!("probe object has no program {}", program.name))?;
        self.links
            .attach(loaded.as_fd(), path, sites, pid, program.at_return)
    }

    /// Waits for the links dropped so far to be closed (the capture stops).
    pub fn finish(&mut self) {
        self.links.finish();
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

    /// A followed process's flags (`followed_flags`), None when it is not followed.
    pub fn flags(&self, pid: u32) -> Option<u32> {
        self.followed.get(&pid, 0).ok().map(|state| state.flags)
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

    /// The kernel follows the processes `pid` starts from now on (it makes LLM calls): their
    /// programs and exits are reported as commands. A process already in an agent's tree
    /// becomes the top of a tree of its own (a sub-agent's commands are its own). `found`: the
    /// processes it had already started (see [`catch_up`](super::catch_up)), added to its tree;
    /// returns the commands they ran.
    pub fn add_agent(&mut self, pid: u32, found: Vec<Descendant>) -> Result<Vec<Command>> {
        if self
            .agent_tree
            .get(&pid, 0)
            .is_ok_and(|lineage| lineage.depth == 0)
        {
            return Ok(Vec::new());
        }
        let lineage = Lineage {
            root: pid,
            parent: 0,
            depth: 0,
            flags: 0,
        };
        self.agent_tree
            .insert(pid, lineage, 0)
            .context("adding an agent to the kernel's agent trees")?;
        let mut commands = Vec::new();
        for descendant in found {
            // An entry the kernel made meanwhile (a fork it saw) is the more exact one.
            if self
                .agent_tree
                .insert(descendant.pid, descendant.lineage, u64::from(BPF_NOEXIST))
                .is_ok()
            {
                commands.extend(descendant.command);
            }
        }
        Ok(commands)
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
            tree_depth_cut: sum(counter::TREE_DEPTH_CUT),
            tree_full: sum(counter::TREE_FULL),
            rustls_session_unknown: sum(counter::RUSTLS_SESSION_UNKNOWN),
            rustls_server_side: sum(counter::RUSTLS_SERVER_SIDE),
        }
    }
}

/// Loads the uprobe programs for `uprobe_multi` links, which aya cannot: the kernel wants that
/// attach type given at load. The object is read again and relocated against the maps aya
/// created, so both sides share them.
fn load_uprobe_programs(ebpf: &Ebpf) -> Result<std::collections::HashMap<&'static str, OwnedFd>> {
    let mut object = aya_obj::Object::parse(PROBES_OBJECT).context("parsing the probe object")?;
    // The verifier wants the programs' function info, which refers to the object's BTF.
    let all_features = BtfFeatures::new(true, true, true, true, true, true, true, true);
    let btf = match object
        .fixup_and_sanitize_btf(&all_features)
        .context("preparing the probe object's BTF")?
    {
        Some(btf) => Some(load_btf(&btf.to_bytes())?),
        None => None,
    };
    if let Ok(kernel_btf) = Btf::from_sys_fs() {
        object
            .relocate_btf(&kernel_btf)
            .context("relocating the probe object against the kernel's BTF")?;
    }
    let definitions = object.maps.clone();
    let mut maps = Vec::new();
    for (name, map) in ebpf.maps() {
        let definition = definitions
            .get(name)
            .ok_or_else(|| anyhow!("map {name} is not in the probe object"))?;
        maps.push((name, map_fd(map)?, definition));
    }
    let text_sections: HashSet<usize> = object
        .functions
        .keys()
        .map(|(section, _)| *section)
        .collect();
    object
        .relocate_maps(maps.into_iter(), &text_sections)
        .context("relocating the probe programs' maps")?;
    object
        .relocate_calls(&text_sections)
        .context("relocating the probe programs' calls")?;
    let mut loaded = std::collections::HashMap::new();
    for program in UPROBE_PROGRAMS {
        let definition = object
            .programs
            .get(program.name)
            .ok_or_else(|| anyhow!("probe object has no program {}", program.name))?;
        let function = object
            .functions
            .get(&definition.function_key())
            .ok_or_else(|| anyhow!("probe object has no code for {}", program.name))?;
        let fd = load_program(program.name, function, &definition.license, btf.as_ref())
            .with_context(|| {
                format!(
                    "loading probe {} for per-process uprobe_multi links (these need Linux 6.6 \
                     or later)",
                    program.name
                )
            })?;
        loaded.insert(program.name, fd);
    }
    Ok(loaded)
}

fn map_fd(map: &Map) -> Result<RawFd> {
    let data: &MapData = match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::PerCpuLruHashMap(data)
        | Map::RingBuf(data) => data,
        other => bail!("the probe object has a map of a type not handled here: {other:?}"),
    };
    Ok(data.fd().as_fd().as_raw_fd())
}

/// Loads the object's BTF into the kernel (`BPF_BTF_LOAD`).
fn load_btf(bytes: &[u8]) -> Result<OwnedFd> {
    const BPF_BTF_LOAD: libc::c_long = 18;
    #[repr(C)]
    struct BtfLoad {
        btf: u64,
        btf_log_buf: u64,
        btf_size: u32,
        btf_log_size: u32,
        btf_log_level: u32,
        /// Zero, spelled out (no padding byte reaches the kernel).
        btf_flags: u32,
    }
    let attr = BtfLoad {
        btf: bytes.as_ptr() as u64,
        btf_log_buf: 0,
        btf_size: bytes.len() as u32,
        btf_log_size: 0,
        btf_log_level: 0,
        btf_flags: 0,
    };
    // SAFETY: the buffer the attr points to outlives the call.
    unsafe { bpf_new_fd(BPF_BTF_LOAD, &attr) }.context("loading the probe object's BTF")
}

/// `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to the line info.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    /// Zero: spelled out so that no padding byte reaches the kernel, which checks them.
    attach_btf_id: u32,
}

fn load_program(
    name: &str,
    function: &aya_obj::Function,
    license: &CString,
    btf: Option<&OwnedFd>,
) -> Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_KPROBE: u32 = 2;
    let instructions: &[bpf_insn] = &function.instructions;
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    let mut prog_name = [0u8; 16];
    for (slot, byte) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_KPROBE,
            insn_cnt: instructions.len() as u32,
            insns: instructions.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name,
            prog_ifindex: 0,
            expected_attach_type: ATTACH_UPROBE_MULTI,
            prog_btf_fd: 0,
            func_info_rec_size: 0,
            func_info: 0,
            func_info_cnt: 0,
            line_info_rec_size: 0,
            line_info: 0,
            line_info_cnt: 0,
            attach_btf_id: 0,
        };
        if let Some(btf) = btf.filter(|_| !func_info.is_empty()) {
            attr.prog_btf_fd = btf.as_raw_fd() as u32;
            attr.func_info_rec_size = function.func_info_rec_size as u32;
            attr.func_info = func_info.as_ptr() as u64;
            attr.func_info_cnt = function.func_info.len() as u32;
            attr.line_info_rec_size = function.line_info_rec_size as u32;
            attr.line_info = line_info.as_ptr() as u64;
            attr.line_info_cnt = function.line_info.len() as u32;
        }
        // SAFETY: the instructions, license, BTF records and log outlive the call.
        unsafe { bpf_new_fd(BPF_PROG_LOAD, &attr) }
    };
    let error = match load(&mut []) {
        Ok(fd) => return Ok(fd),
        Err(error) => error,
    };
    // Again with the verifier's log, to say why.
    let mut log = vec![0u8; 1 << 20];
    if let Ok(fd) = load(&mut log) {
        return Ok(fd);
    }
    let log = String::from_utf8_lossy(&log);
    let tail: Vec<&str> = log.trim_end_matches('\0').lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!("{error}; the verifier said:\n{}", tail.join("\n"))
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("probe object has no program {name}"))
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("probe object has no map {name}"))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
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
