//! What an agent started before the kernel knew it was one.
//!
//! The kernel follows an agent's tree from the moment user space marks it (its first LLM
//! request read from the ring). An agent that forks within milliseconds of its first answer,
//! while the pipeline is behind, has children by then that the fork tracepoint did not add. They
//! are found in `/proc` (`task/*/children`), put in the kernel's tree, and those that already ran
//! a program of their own are reported as the commands the exec tracepoint would have sent.
use std::{collections::VecDeque, fs};

use observer_common::{ARGS_CAPACITY, Lineage, MAX_TREE_DEPTH, lineage_flags};

use super::{
    decode::{Clock, split_arguments},
    types::Command,
};

/// At most this many processes of one agent are caught up (the kernel's tree is bounded too).
const MAX_CAUGHT_UP: usize = 256;
/// `/proc`'s start times are counted in clock ticks (10 ms): one started this much before the
/// agent's request may have started after it.
const START_TIME_STEP_NS: u64 = 10_000_000;

/// A process below an agent, found in `/proc`.
pub struct Descendant {
    pub pid: u32,
    pub lineage: Lineage,
    /// The program it runs, when it is not its parent's (it ran `execve` since it was forked).
    pub command: Option<Command>,
}

/// The processes below `agent` now that started after its first LLM request (at `since`, Unix
/// ns; those started before, such as an MCP server, are not its commands), parents before
/// children.
pub fn descendants(agent: u32, since: u64, clock: Clock) -> Vec<Descendant> {
    let mut found: Vec<Descendant> = Vec::new();
    let agent_lineage = Lineage {
        root: agent,
        parent: 0,
        depth: 0,
        flags: 0,
    };
    let mut queue = VecDeque::from([(agent, agent_lineage, Program::of(agent))]);
    while let Some((pid, lineage, program)) = queue.pop_front() {
        if lineage.depth >= MAX_TREE_DEPTH {
            continue;
        }
        for child in children(pid) {
            if found.len() >= MAX_CAUGHT_UP {
                return found;
            }
            let (Some(child_program), Some(start)) = (Program::of(child), start_time_ns(child))
            else {
                continue; // gone
            };
            let start = clock.to_unix_ns(start);
            if start.saturating_add(START_TIME_STEP_NS) < since {
                continue;
            }
            let ran = program.as_ref() != Some(&child_program);
            // As the kernel does (observer-ebpf/src/agent_tree.rs): a command hangs under the
            // nearest ancestor that is the agent or ran a program of its own.
            let is_command = lineage.depth == 0 || lineage.flags & lineage_flags::RAN != 0;
            let child_lineage = Lineage {
                root: agent,
                parent: if is_command { pid } else { lineage.parent },
                depth: lineage.depth + 1,
                flags: if ran { lineage_flags::RAN } else { 0 },
            };
            let command = ran.then(|| child_program.command(child, start, &child_lineage));
            found.push(Descendant {
                pid: child,
                lineage: child_lineage,
                command,
            });
            queue.push_back((child, child_lineage, Some(child_program)));
        }
    }
    found
}

/// The child processes of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children: Vec<u32> = tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    children.sort_unstable();
    children.dedup();
    children
}

/// What a process runs: its executable and arguments (a forked child that has not run a
/// program of its own has its parent's).
#[derive(PartialEq, Eq)]
struct Program {
    executable: String,
    cmdline: Vec<u8>,
}

impl Program {
    fn of(pid: u32) -> Option<Program> {
        let executable = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(Program {
            executable: executable.to_string_lossy().into_owned(),
            cmdline,
        })
    }

    fn command(&self, pid: u32, start: u64, lineage: &Lineage) -> Command {
        let args_cut = self.cmdline.len() > ARGS_CAPACITY;
        let args = &self.cmdline[..self.cmdline.len().min(ARGS_CAPACITY)];
        Command {
            pid,
            ts: start,
            agent: lineage.root,
            parent: lineage.parent,
            depth: lineage.depth,
            path: self.executable.clone(),
            args: crate::redact::arguments(&split_arguments(args)),
            args_cut,
            cwd: fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .map(|cwd| cwd.to_string_lossy().into_owned()),
        }
    }
}

/// When `pid` started, in nanoseconds since boot (`/proc/PID/stat`'s `starttime`, in clock
/// ticks: 10 ms steps; the boot clock is the monotonic one but for time spent suspended).
fn start_time_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields follow its last ')'.
    let fields = &stat[stat.rfind(')')? + 1..];
    // `state` is field 3; `starttime` is field 22.
    let ticks: u64 = fields.split_whitespace().nth(22 - 3)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    (per_second > 0).then(|| ticks.saturating_mul(1_000_000_000) / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that ran a program (`sleep`) is found with its command; the test process itself
    /// is the agent.
    #[test]
    fn a_child_that_ran_a_program_is_found_with_its_command() {
        let clock = Clock::now();
        let before = clock.to_unix_ns(monotonic_now());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("starting sleep");
        let me = std::process::id();
        // Not when asked about what started after it (as an MCP server started before the
        // agent's first call).
        let later = before + 60_000_000_000;
        assert!(
            descendants(me, later, clock)
                .iter()
                .all(|d| d.pid != child.id())
        );
        let found = descendants(me, before, clock);
        let _ = child.kill();
        let _ = child.wait();
        let sleep = found
            .iter()
            .find(|d| d.pid == child.id())
            .expect("the child is found");
        assert_eq!(
            (
                sleep.lineage.root,
                sleep.lineage.parent,
                sleep.lineage.depth
            ),
            (me, me, 1)
        );
        assert_eq!(sleep.lineage.flags, lineage_flags::RAN);
        let command = sleep.command.as_ref().expect("it ran a program");
        assert_eq!(command.args, ["sleep", "30"]);
        assert!(command.path.ends_with("/sleep"), "{}", command.path);
        let now = Clock::now().to_unix_ns(monotonic_now());
        assert!(
            command.ts <= now && now - command.ts < 60_000_000_000,
            "{}",
            command.ts
        );
    }

    fn monotonic_now() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the kernel to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    #[test]
    fn start_times_come_from_proc_stat() {
        assert!(start_time_ns(std::process::id()).is_some());
        assert_eq!(start_time_ns(u32::MAX), None);
    }
}
