//! The processes agents start: commands as spans.
//!
//! User space puts an agent (a process that makes LLM calls) in `AGENT_TREE` at depth 0. From
//! then on the scheduler tracepoints (rare events, already attached) follow its tree: a fork
//! adds the child, an `execve` reports the program and its arguments (read from the new
//! program's memory as the kernel laid them out, so a command that ends at once still has
//! them), an exit reports the exit code and removes the process. A thread is added like a
//! process (the fork tracepoint cannot tell them apart) and removed when it ends.
use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_FORCE_WAKEUP,
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use observer_common::{
    ARGS_CAPACITY, COMMAND_EVENT_HEADER_LEN, CommandEvent, CommandExitEvent, Lineage,
    MAX_TREE_DEPTH, config, counter, kind, lineage_flags,
};

use crate::{
    probes::{CONFIG, bump, header, ring_flags, send},
    sound::{Lookup, current_task, per_cpu, read_kernel, tracepoint_field},
};

/// Agents and the processes below them, by pid.
#[map]
static AGENT_TREE: HashMap<u32, Lineage> = HashMap::with_max_entries(16384, 0);

#[map]
static COMMAND_SCRATCH: PerCpuArray<CommandEvent> = PerCpuArray::with_max_entries(1, 0);

/// Whether `pid` is an agent (a process that makes LLM calls): its pipes may carry MCP.
pub(crate) fn is_agent(pid: u32) -> bool {
    AGENT_TREE
        .copied(&pid)
        .is_some_and(|lineage| lineage.depth == 0)
}

/// Makes `pid` an agent (it speaks JSON-RPC: an MCP client), at the top of its own tree.
pub(crate) fn add_agent(pid: u32) {
    let lineage = Lineage {
        root: pid,
        parent: 0,
        depth: 0,
        flags: 0,
    };
    if AGENT_TREE.insert(&pid, &lineage, 0).is_err() {
        bump(counter::TREE_FULL, 1);
    }
}

/// `parent` forked `child` (a process or a thread).
pub(crate) fn forked(parent: u32, child: u32) {
    let Some(lineage) = AGENT_TREE.copied(&parent) else {
        return;
    };
    if lineage.depth >= MAX_TREE_DEPTH {
        bump(counter::TREE_DEPTH_CUT, 1);
        return;
    }
    let command = lineage.depth == 0 || lineage.flags & lineage_flags::RAN != 0;
    let child_lineage = Lineage {
        root: lineage.root,
        parent: if command { parent } else { lineage.parent },
        depth: lineage.depth + 1,
        flags: 0,
    };
    if AGENT_TREE.insert(&child, &child_lineage, 0).is_err() {
        bump(counter::TREE_FULL, 1);
    }
}

/// The process `pid` ran a program (the `sched_process_exec` tracepoint, whose record starts
/// with the file name's `__data_loc` at offset 8).
pub(crate) fn executed(ctx: &TracePointContext, pid_tgid: u64) {
    let pid = (pid_tgid >> 32) as u32;
    let Some(lineage) = AGENT_TREE.get_ptr_mut(&pid) else {
        return;
    };
    // SAFETY: the entry stays allocated while the program runs; only this process's own
    // exec and exit touch it.
    let lineage = unsafe { &mut *lineage };
    if lineage.depth == 0 {
        return; // the agent itself started another program: not a command of its own
    }
    lineage.flags |= lineage_flags::RAN;
    let Some(event) = per_cpu(&COMMAND_SCRATCH, 0) else {
        return;
    };
    let head = &mut event.head;
    head.header = header(kind::COMMAND, pid_tgid);
    head.root = lineage.root;
    head.parent = lineage.parent;
    head.depth = lineage.depth;
    head.path_len = 0;
    if let Ok(loc) = tracepoint_field::<u32>(ctx, 8) {
        let offset = (loc & 0xffff) as usize;
        // SAFETY: `__data_loc` offsets point inside the tracepoint's record; the helper checks
        // the read and stops at the buffer's end.
        let src = unsafe { (ctx.as_ptr() as *const u8).add(offset) };
        if let Ok(path) =
            unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, &mut head.path) }
        {
            head.path_len = path.len() as u32;
        }
    }
    let (len, cut) = read_arguments(&mut event.args);
    event.head.args_len = len as u32;
    event.head.args_cut = cut as u32;
    // SAFETY: the head and the first `len` argument bytes of a repr(C) struct of integers and
    // byte arrays, all initialised (the bytes past `len` are not sent).
    let record = unsafe {
        core::slice::from_raw_parts(
            (event as *const CommandEvent).cast::<u8>(),
            COMMAND_EVENT_HEADER_LEN + len,
        )
    };
    // At once: a short command is over in a millisecond, and user space reads its working
    // directory from /proc while it lives.
    send::<[u8]>(record, BPF_RB_FORCE_WAKEUP as u64);
}

/// Copies the running program's arguments (`mm->arg_start..arg_end`) into `args`: how many
/// bytes, and whether there were more.
fn read_arguments(args: &mut [u8; ARGS_CAPACITY]) -> (usize, bool) {
    let offset = |index| CONFIG.get(index).copied().unwrap_or(0) as u64;
    let (task_mm, arg_start, arg_end) = (
        offset(config::TASK_MM),
        offset(config::MM_ARG_START),
        offset(config::MM_ARG_END),
    );
    if task_mm == 0 || arg_start == 0 || arg_end == 0 {
        return (0, false);
    }
    let Ok(mm) = read_kernel::<u64>(current_task() + task_mm) else {
        return (0, false);
    };
    let (Ok(start), Ok(end)) = (
        read_kernel::<u64>(mm + arg_start),
        read_kernel::<u64>(mm + arg_end),
    ) else {
        return (0, false);
    };
    let total = end.saturating_sub(start) as usize;
    let len = if total > ARGS_CAPACITY {
        ARGS_CAPACITY
    } else {
        total
    };
    // SAFETY: the helper checks the source range and fails on a fault.
    if unsafe { aya_ebpf::helpers::bpf_probe_read_user_buf(start as *const u8, &mut args[..len]) }
        .is_err()
    {
        bump(counter::READ_FAULTS, 1);
        return (0, false);
    }
    (len, total > len)
}

/// A thread of process `pid` ended; `group_dead`: the last one, the process is over.
pub(crate) fn exited(pid_tgid: u64, group_dead: bool) {
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid != pid {
        // A thread, added at its creation like a process.
        let _ = AGENT_TREE.remove(&tid);
    }
    if !group_dead {
        return;
    }
    let Some(lineage) = AGENT_TREE.copied(&pid) else {
        return;
    };
    let _ = AGENT_TREE.remove(&pid);
    if lineage.depth == 0 || lineage.flags & lineage_flags::RAN == 0 {
        return; // the agent (its exit is reported as a followed process's), or no command
    }
    let offset = CONFIG.get(config::TASK_EXIT_CODE).copied().unwrap_or(0) as u64;
    let exit_code = match offset {
        0 => None,
        offset => read_kernel::<u32>(current_task() + offset).ok(),
    };
    let event = CommandExitEvent {
        header: header(kind::COMMAND_EXIT, pid_tgid),
        exit_code: exit_code.unwrap_or(0),
        known: exit_code.is_some() as u32,
    };
    send::<CommandExitEvent>(&event, ring_flags());
}
