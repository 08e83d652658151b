//! Who makes the calls: the processes (executable, command name, container) and the sockets
//! (peer and local address) the capture has told about, kept to name the spans.
use std::collections::HashMap;

use crate::{
    capture::{CaptureEvent, ConnHash, ConnKey},
    span::{Endpoints, ProcessInfo},
};

/// This machine's name (`host.name`), empty when the kernel does not say.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// Processes remembered for naming spans; past this they are forgotten.
const MAX_PROCESSES: usize = 65_536;
/// Connections whose socket addresses are remembered; past this they are forgotten.
const MAX_SOCKETS: usize = 65_536;

/// The processes and sockets the capture has described, bounded.
#[derive(Default)]
pub struct Callers {
    processes: HashMap<u32, ProcessInfo>,
    sockets: HashMap<ConnKey, Endpoints, ConnHash>,
    /// Only processes with one of these command or executable names are wanted; empty: all.
    names: Vec<String>,
}

/// What the table knows of the process and socket behind one connection.
pub struct Caller<'a> {
    pub process: &'a ProcessInfo,
    pub endpoints: Option<&'a Endpoints>,
}

static UNKNOWN_PROCESS: ProcessInfo = ProcessInfo {
    executable_path: String::new(),
    comm: String::new(),
    container_id: None,
};

impl Callers {
    /// A table that wants only processes named one of `names` (all when empty).
    pub fn wanting(names: Vec<String>) -> Callers {
        Callers {
            names,
            ..Callers::default()
        }
    }

    /// Learns what `event` says about a process or a socket.
    pub fn learn(&mut self, event: &CaptureEvent) {
        match event {
            CaptureEvent::Exec {
                pid, path, comm, ..
            } => {
                if self.processes.len() >= MAX_PROCESSES {
                    self.processes.clear();
                }
                let process = ProcessInfo {
                    executable_path: path.clone(),
                    comm: comm.clone(),
                    container_id: None,
                };
                self.processes.insert(*pid, process);
            }
            CaptureEvent::Socket {
                conn, peer, local, ..
            } => {
                if self.sockets.len() >= MAX_SOCKETS {
                    self.sockets.clear();
                }
                let endpoints = Endpoints {
                    peer: *peer,
                    local: *local,
                };
                self.sockets.insert(*conn, endpoints);
            }
            CaptureEvent::Container { pid, id, .. } => {
                if let Some(process) = self.processes.get_mut(pid) {
                    process.container_id = Some(id.clone());
                }
            }
            _ => {}
        }
    }

    /// Whether calls of `pid` are wanted (the `--comm` filter).
    pub fn wanted(&self, pid: u32) -> bool {
        if self.names.is_empty() {
            return true;
        }
        self.processes.get(&pid).is_some_and(|process| {
            self.names
                .iter()
                .any(|name| *name == process.comm || name == process.executable_name())
        })
    }

    /// The process and socket behind `conn`, as far as they are known.
    pub fn of(&self, conn: &ConnKey) -> Caller<'_> {
        Caller {
            process: self.processes.get(&conn.pid).unwrap_or(&UNKNOWN_PROCESS),
            endpoints: self.sockets.get(conn),
        }
    }

    /// Forgets a process and its sockets (once the spans that name them are out).
    pub fn process_ended(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.sockets.retain(|conn, _| conn.pid != pid);
    }

    pub fn connection_ended(&mut self, conn: &ConnKey) {
        self.sockets.remove(conn);
    }
}
