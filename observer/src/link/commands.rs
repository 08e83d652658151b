//! Commands: the programs an agent's processes ran, as spans in the agent's run.
//!
//! The capture reports each program that a process below an agent ran (`execve`) and how it
//! ended. A command started by the agent itself is placed in the agent's run: under the
//! `execute_tool` span of the tool call it carried out when an open tool call's arguments hold
//! its command line (a `Bash` tool's `{"command": "…"}` run through `sh -c`), else under the
//! run's root. A command started by a command is that command's child. A process that runs a
//! second program (a shell's `exec`) keeps its first span, and the second program is its child.
//!
//! A span is written when its process ends, or when its run closes (a dev server the agent
//! left running ends with the run, marked still running). Commands of an agent with no open
//! run, and past the bounds, are counted, not written.
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{
    REASON, new_span_id,
    run::{Run, Within},
};
use crate::{
    capture::{Command, Ending},
    config::ContentMode,
    llm::attr,
    span::{GenAi, Span, SpanKind},
};

/// Commands under way at once, over every run; past this new ones are counted and skipped.
const MAX_OPEN_COMMANDS: usize = 4096;
/// Commands one run may have; past this they are counted and skipped.
pub(super) const MAX_COMMANDS_PER_RUN: u64 = 1000;
/// Programs one process may run in turn (`exec` after `exec`) that are followed.
const MAX_PROGRAMS_PER_PROCESS: usize = 8;

/// The `observer.link.reason` of a tool span whose command was seen, and of the command under it.
pub const COMMAND_LINE: &str = "command_line";
/// The reason on a command that is the child of another command's process.
const CHILD_PROCESS: &str = "child_process";
/// The reason on a command of the agent that no tool call asked for.
const AGENT_PROCESS: &str = "agent_process";

/// What was not made into command spans, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandStats {
    pub spans: u64,
    /// The agent had no open run when the command started.
    pub outside_runs: u64,
    /// Past `MAX_COMMANDS_PER_RUN` or `MAX_OPEN_COMMANDS`.
    pub over_bound: u64,
}

/// A command under way.
struct OpenCommand {
    run: u64,
    trace_id: String,
    span_id: String,
    /// The span it is a child of, once known; else the run's root, unless a tool call asking
    /// for it is read before it ends.
    parent: Option<String>,
    root_span_id: String,
    /// The tool call it carries out.
    tool: Option<String>,
    start: u64,
    /// Its command line, to match against tool calls' arguments.
    command_line: String,
    name: String,
    attributes: Map<String, Value>,
}

#[derive(Default)]
pub(super) struct Commands {
    /// By pid: the programs the process ran, the first first.
    open: HashMap<u32, Vec<OpenCommand>>,
    pub stats: CommandStats,
}

impl Commands {
    /// `command` started; `runs` are the linker's open runs.
    pub fn started(
        &mut self,
        command: &Command,
        runs: &mut HashMap<u64, Run>,
        content: ContentMode,
    ) {
        let open = self.open.values().map(Vec::len).sum::<usize>();
        let parent = self
            .open
            .get(&command.pid)
            .or_else(|| self.open.get(&command.parent))
            .and_then(|programs| programs.last());
        let (run_id, parent, reason) = match parent {
            Some(parent) => (parent.run, Some(parent.span_id.clone()), CHILD_PROCESS),
            None => match agent_run(runs, command) {
                Some(run) => (run, None, AGENT_PROCESS),
                None => {
                    self.stats.outside_runs += 1;
                    return;
                }
            },
        };
        let Some(run) = runs.get_mut(&run_id) else {
            self.stats.outside_runs += 1;
            return;
        };
        let programs = self.open.get(&command.pid).map_or(0, Vec::len);
        if open >= MAX_OPEN_COMMANDS
            || run.actions >= MAX_COMMANDS_PER_RUN
            || programs >= MAX_PROGRAMS_PER_PROCESS
        {
            self.stats.over_bound += 1;
            return;
        }
        run.actions += 1;
        run.extend(command.ts);
        let command_line = command.args.join(" ");
        let mut open = OpenCommand {
            run: run_id,
            trace_id: run.trace_id.clone(),
            span_id: new_span_id(),
            parent,
            root_span_id: run.root_span_id().to_owned(),
            tool: None,
            start: command.ts,
            command_line,
            name: executable_name(&command.path).to_owned(),
            attributes: attributes(command, content),
        };
        open.attributes.insert(REASON.into(), json!(reason));
        if open.parent.is_none() {
            place_in_tool(&mut open, run);
        }
        self.open.entry(command.pid).or_default().push(open);
    }

    /// The span of the program process `pid` runs now, if it is a command: a sub-agent's run
    /// started by that process runs inside it.
    pub fn enclosing(&self, pid: u32) -> Option<Within> {
        let command = self.open.get(&pid)?.last()?;
        Some(Within {
            trace_id: command.trace_id.clone(),
            span_id: command.span_id.clone(),
            reason: CHILD_PROCESS,
        })
    }

    /// The process `pid` ended: the spans of the programs it ran.
    pub fn ended(
        &mut self,
        pid: u32,
        ts: u64,
        ending: Ending,
        runs: &mut HashMap<u64, Run>,
    ) -> Vec<Span> {
        let Some(programs) = self.open.remove(&pid) else {
            return Vec::new();
        };
        let mut spans: Vec<Span> = programs
            .into_iter()
            .map(|mut command| {
                if let Some(run) = runs.get_mut(&command.run) {
                    if command.parent.is_none() {
                        place_in_tool(&mut command, run);
                    }
                    if let Some(tool) = &command.tool {
                        run.tool_ended(tool, ts);
                    }
                    run.extend(ts);
                }
                command_span(command, ts, Some(ending), &mut self.stats)
            })
            .collect();
        spans.reverse(); // the innermost program first: a child before its parent
        spans
    }

    /// The run `run` closed at `now`: its commands still under way end with it.
    pub fn run_closed(&mut self, run: u64, now: u64) -> Vec<Span> {
        let mut spans = Vec::new();
        self.open.retain(|_, programs| {
            if programs.first().is_none_or(|first| first.run != run) {
                return true;
            }
            for command in programs.drain(..).rev() {
                let end = now.max(command.start);
                spans.push(command_span(command, end, None, &mut self.stats));
            }
            false
        });
        spans
    }
}

/// The span of `command`, ended at `end` as `ending` says (`None`: still running).
fn command_span(
    command: OpenCommand,
    end: u64,
    ending: Option<Ending>,
    stats: &mut CommandStats,
) -> Span {
    stats.spans += 1;
    let mut attributes = command.attributes;
    let mut error_type = None;
    match ending {
        Some(Ending::Exited(code)) => {
            attributes.insert(attr::PROCESS_EXIT_CODE.into(), json!(code));
            if code != 0 {
                error_type = Some(code.to_string());
            }
        }
        Some(Ending::Killed { signal, .. }) => {
            attributes.insert(
                attr::PROCESS_EXIT_CODE.into(),
                json!(128 + u32::from(signal)),
            );
            attributes.insert(attr::OBSERVER_PROCESS_SIGNAL.into(), json!(signal));
            error_type = Some(signal_name(signal));
        }
        Some(Ending::Unknown) => {}
        None => {
            attributes.insert(attr::OBSERVER_PROCESS_STILL_RUNNING.into(), json!(true));
        }
    }
    Span {
        trace_id: command.trace_id,
        span_id: command.span_id,
        parent_span_id: Some(command.parent.unwrap_or(command.root_span_id)),
        name: format!("exec {}", command.name),
        kind: SpanKind::Internal,
        start_time_unix_nano: command.start,
        end_time_unix_nano: end.max(command.start),
        gen_ai: GenAi {
            error_type,
            ..GenAi::default()
        },
        attributes,
        links: Vec::new(),
    }
}

/// The open run of the command's agent it belongs to: the one with an open tool call that
/// asks for it, else the one active last.
fn agent_run(runs: &HashMap<u64, Run>, command: &Command) -> Option<u64> {
    let command_line = command.args.join(" ");
    let agent_runs = || runs.iter().filter(|(_, run)| run.site.pid == command.agent);
    agent_runs()
        .find(|(_, run)| {
            run.find_tool(command.ts, |_, arguments| {
                asks_for(arguments, &command_line)
            })
            .is_some()
        })
        .or_else(|| agent_runs().max_by_key(|(_, run)| run.end))
        .map(|(&id, _)| id)
}

/// Puts a command of the agent under the tool call that asked for it, if one did.
fn place_in_tool(command: &mut OpenCommand, run: &mut Run) {
    let line = &command.command_line;
    let Some(tool) = run.find_tool(command.start, |_, arguments| asks_for(arguments, line)) else {
        return;
    };
    if let Some(span_id) = run.tool_started(&tool, command.start, COMMAND_LINE) {
        command.parent = Some(span_id);
        command.tool = Some(tool);
        command
            .attributes
            .insert(REASON.into(), json!(COMMAND_LINE));
    }
}

/// Whether a tool call's arguments ask for the command line `line`: a string among them (or a
/// list of strings, joined) that is the command line, or a shell script found in it (an agent
/// runs `sh -c SCRIPT`, or wraps the script in one of its own).
pub(super) fn asks_for(arguments: &Value, line: &str) -> bool {
    let parsed;
    let arguments = match arguments {
        // OpenAI sends arguments as a JSON string.
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                parsed = value;
                &parsed
            }
            Err(_) => arguments,
        },
        other => other,
    };
    let mut found = false;
    visit_strings(arguments, 0, &mut |candidate| {
        let candidate = candidate.trim();
        found = found
            || candidate == line
            || (candidate.len() >= 3
                && candidate.contains(char::is_whitespace)
                && (line.contains(candidate) || line.contains(&shell_quoted(candidate))));
    });
    found
}

/// Calls `visit` with every string in `value`, and every list of strings joined by spaces.
fn visit_strings(value: &Value, depth: u32, visit: &mut impl FnMut(&str)) {
    if depth > 8 {
        return;
    }
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => {
            let words: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            if let Some(words) = words {
                visit(&words.join(" "));
            }
            items
                .iter()
                .for_each(|item| visit_strings(item, depth + 1, visit));
        }
        Value::Object(fields) => fields
            .values()
            .for_each(|field| visit_strings(field, depth + 1, visit)),
        _ => {}
    }
}

/// `script` as a shell writes it inside single quotes (`'` becomes `'\''`).
fn shell_quoted(script: &str) -> String {
    script.replace('\'', "'\\''")
}

fn executable_name(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or(path)
}

/// The command's attributes (OpenTelemetry's `process.*`); its arguments and working directory
/// only with `--content full`.
fn attributes(command: &Command, content: ContentMode) -> Map<String, Value> {
    let mut attributes = Map::new();
    let mut set = |key: &str, value: Value| {
        attributes.insert(key.into(), value);
    };
    set(attr::OPENINFERENCE_SPAN_KIND, json!("CHAIN"));
    set(attr::PROCESS_PID, json!(command.pid));
    set(attr::PROCESS_PARENT_PID, json!(command.parent));
    set(
        attr::PROCESS_EXECUTABLE_NAME,
        json!(executable_name(&command.path)),
    );
    set(attr::PROCESS_EXECUTABLE_PATH, json!(command.path));
    set(attr::OBSERVER_PROCESS_DEPTH, json!(command.depth));
    set(attr::PROCESS_ARGS_COUNT, json!(command.args.len()));
    if content == ContentMode::Full {
        set(attr::PROCESS_COMMAND_ARGS, json!(command.args));
        if command.args_cut {
            set(attr::OBSERVER_PROCESS_ARGS_TRUNCATED, json!(true));
        }
        if let Some(cwd) = &command.cwd {
            set(attr::PROCESS_WORKING_DIRECTORY, json!(cwd));
        }
    }
    attributes
}

/// `SIGKILL`, `SIGTERM`, …; the number for the others.
fn signal_name(signal: u8) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}
