//! Ring-buffer records (the layout in `observer_common`) to [`CaptureEvent`]s.
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use observer_common::{
    COMMAND_EVENT_HEADER_LEN, CommandExitEvent, CommandHead, ConnEndEvent, DATA_EVENT_HEADER_LEN,
    DataHead, EventHeader, ExecEvent, ForkEvent, SocketEvent, direction, flags, kind, socket_role,
};

use super::{CaptureEvent, Chunk, Command, ConnKey, Direction, Ending, SocketRole, TlsLibrary};

/// Converts the kernel's CLOCK_MONOTONIC timestamps to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    monotonic_to_unix_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let read = |id| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec for the kernel to fill.
            unsafe { libc::clock_gettime(id, &mut ts) };
            ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
        };
        let monotonic = read(libc::CLOCK_MONOTONIC);
        let unix = read(libc::CLOCK_REALTIME);
        Clock {
            monotonic_to_unix_ns: unix - monotonic,
        }
    }

    pub fn to_unix_ns(self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.monotonic_to_unix_ns).max(0) as u64
    }
}

/// What one record said, plus the traced thread's command name when the record carries it.
pub struct Decoded {
    pub event: CaptureEvent,
    pub comm: Option<String>,
}

/// A record: an event for the pipeline, or news for the capture stage itself.
pub enum Record {
    Event(Decoded),
    /// A followed process's loader loaded libraries: look for TLS libraries now.
    LibraryMapped {
        pid: u32,
    },
    /// A followed process forked (or started a thread).
    Fork {
        parent: u32,
        child: u32,
    },
    /// A process no longer followed connected to a new peer.
    Connect {
        pid: u32,
    },
}

/// Reads a record; `None` for records that are too short or of an unknown kind.
pub fn decode(record: &[u8], clock: Clock) -> Option<Record> {
    let header: EventHeader = read_struct(record)?;
    match header.kind {
        kind::LIBRARY_MAPPED => Some(Record::LibraryMapped { pid: header.pid }),
        kind::FORK => {
            let event: ForkEvent = read_struct(record)?;
            Some(Record::Fork {
                parent: header.pid,
                child: event.child,
            })
        }
        kind::CONNECT => Some(Record::Connect { pid: header.pid }),
        _ => decode_event(record, header, clock).map(Record::Event),
    }
}

fn decode_event(record: &[u8], header: EventHeader, clock: Clock) -> Option<Decoded> {
    let ts = clock.to_unix_ns(header.ts_ns);
    match header.kind {
        kind::DATA => {
            let event: DataHead = read_struct(record)?;
            let len = event.len as usize;
            let data = record.get(DATA_EVENT_HEADER_LEN..DATA_EVENT_HEADER_LEN + len)?;
            let chunk = Chunk {
                conn: ConnKey {
                    pid: header.pid,
                    conn: event.conn,
                },
                tid: header.tid,
                dir: if event.dir == direction::EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                ts,
                offset: event.offset,
                data: Bytes::copy_from_slice(data),
                truncated_after: event.flags & flags::CALL_TRUNCATED != 0,
                library: TlsLibrary::from_source(event.source)?,
            };
            Some(Decoded {
                event: CaptureEvent::Data(chunk),
                comm: Some(c_string(&event.comm)),
            })
        }
        kind::EXEC => {
            let event: ExecEvent = read_struct(record)?;
            let path_len = (event.path_len as usize).min(event.path.len());
            let path = c_string(&event.path[..path_len]);
            let comm = c_string(&event.comm);
            Some(Decoded {
                event: CaptureEvent::Exec {
                    pid: header.pid,
                    ts,
                    path,
                    comm: comm.clone(),
                },
                comm: Some(comm),
            })
        }
        kind::COMMAND => {
            let head: CommandHead = read_struct(record)?;
            let args_len = head.args_len as usize;
            let args = record.get(COMMAND_EVENT_HEADER_LEN..COMMAND_EVENT_HEADER_LEN + args_len)?;
            let path_len = (head.path_len as usize).min(head.path.len());
            let command = Command {
                pid: header.pid,
                ts,
                agent: head.root,
                parent: head.parent,
                depth: head.depth,
                path: c_string(&head.path[..path_len]),
                args: crate::redact::arguments(&split_arguments(args)),
                args_cut: head.args_cut != 0,
                cwd: None,
            };
            Some(Decoded {
                event: CaptureEvent::Command(command),
                comm: None,
            })
        }
        kind::COMMAND_EXIT => {
            let event: CommandExitEvent = read_struct(record)?;
            let ending = match event.known {
                0 => Ending::Unknown,
                _ => Ending::from_exit_code(event.exit_code),
            };
            Some(Decoded {
                event: CaptureEvent::CommandExit {
                    pid: header.pid,
                    ts,
                    ending,
                },
                comm: None,
            })
        }
        kind::COSTLY => Some(Decoded {
            event: CaptureEvent::Costly {
                pid: header.pid,
                ts,
            },
            comm: None,
        }),
        kind::EXIT => Some(Decoded {
            event: CaptureEvent::Exit {
                pid: header.pid,
                ts,
            },
            comm: None,
        }),
        kind::CONN_END => {
            let event: ConnEndEvent = read_struct(record)?;
            let conn = ConnKey {
                pid: header.pid,
                conn: event.conn,
            };
            Some(Decoded {
                event: CaptureEvent::ConnEnd { conn, ts },
                comm: None,
            })
        }
        kind::SOCKET => {
            let event: SocketEvent = read_struct(record)?;
            let conn = ConnKey {
                pid: header.pid,
                conn: event.conn,
            };
            let role = match event.role {
                socket_role::CONNECTED => SocketRole::Connected,
                socket_role::ACCEPTED => SocketRole::Accepted,
                _ => SocketRole::Unknown,
            };
            Some(Decoded {
                event: CaptureEvent::Socket {
                    conn,
                    ts,
                    fd: event.fd,
                    role,
                    peer: peer_address(&event),
                    local: None,
                },
                comm: None,
            })
        }
        _ => None,
    }
}

fn peer_address(event: &SocketEvent) -> Option<SocketAddr> {
    const AF_INET: u16 = libc::AF_INET as u16;
    const AF_INET6: u16 = libc::AF_INET6 as u16;
    let ip = match event.family {
        AF_INET => {
            let [a, b, c, d, ..] = event.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        AF_INET6 => {
            let v6 = Ipv6Addr::from(event.addr);
            // A v4-mapped peer (dual-stack socket) is shown as the IPv4 address it is.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, event.port))
}

/// The NUL-separated arguments the kernel laid out for a program (a cut last one kept as is).
pub(super) fn split_arguments(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Copies a plain-old-data struct from the start of `bytes`.
fn read_struct<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is a repr(C) struct of integers and byte arrays (any bit
    // pattern is valid), read unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_data_record() {
        let mut record = vec![0u8; DATA_EVENT_HEADER_LEN + 5];
        let header = DataHead {
            header: EventHeader {
                kind: kind::DATA,
                pid: 7,
                tid: 9,
                _pad: 0,
                ts_ns: 1_000,
            },
            conn: 0xabc,
            offset: 100,
            len: 5,
            dir: direction::INGRESS,
            source: 1,
            flags: flags::CALL_TRUNCATED,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: the buffer is at least the struct's size.
        unsafe { std::ptr::write_unaligned(record.as_mut_ptr().cast(), header) };
        record[DATA_EVENT_HEADER_LEN..].copy_from_slice(b"hello");
        let decoded = decode(
            &record,
            Clock {
                monotonic_to_unix_ns: 10,
            },
        )
        .expect("decodes");
        let Record::Event(decoded) = decoded else {
            panic!("not an event")
        };
        assert_eq!(decoded.comm.as_deref(), Some("python3"));
        let CaptureEvent::Data(chunk) = decoded.event else {
            panic!("not data")
        };
        assert_eq!(
            chunk.conn,
            ConnKey {
                pid: 7,
                conn: 0xabc
            }
        );
        assert_eq!((chunk.tid, chunk.ts, chunk.offset), (9, 1_010, 100));
        assert_eq!(chunk.dir, Direction::Ingress);
        assert_eq!(&chunk.data[..], b"hello");
        assert!(chunk.truncated_after);
        // A record claiming more payload than it has is rejected, not read past its end.
        assert!(
            decode(
                &record[..record.len() - 1],
                Clock {
                    monotonic_to_unix_ns: 0
                }
            )
            .is_none()
        );
    }

    #[test]
    fn decodes_a_command_and_its_exit() {
        let mut head = CommandHead {
            header: EventHeader {
                kind: kind::COMMAND,
                pid: 42,
                tid: 42,
                _pad: 0,
                ts_ns: 7,
            },
            root: 40,
            parent: 41,
            depth: 2,
            args_len: 0,
            args_cut: 0,
            path_len: 7,
            path: [0; observer_common::EXEC_PATH_CAPACITY],
        };
        head.path[..7].copy_from_slice(b"/bin/sh");
        let args = b"sh\0-c\0curl -H 'x-api-key: sk-live-1' x\0";
        head.args_len = args.len() as u32;
        let mut record = vec![0u8; COMMAND_EVENT_HEADER_LEN];
        // SAFETY: the buffer is the head's size.
        unsafe { std::ptr::write_unaligned(record.as_mut_ptr().cast(), head) };
        record.extend_from_slice(args);
        let clock = Clock {
            monotonic_to_unix_ns: 0,
        };
        let Some(Record::Event(decoded)) = decode(&record, clock) else {
            panic!("not an event")
        };
        let CaptureEvent::Command(command) = decoded.event else {
            panic!("not a command")
        };
        assert_eq!((command.pid, command.agent, command.parent), (42, 40, 41));
        assert_eq!(command.path, "/bin/sh");
        assert_eq!(command.args[..2], ["sh", "-c"]);
        assert!(!command.args[2].contains("sk-live-1"), "{:?}", command.args);
        // Claiming more arguments than the record has: refused.
        assert!(decode(&record[..record.len() - 1], clock).is_none());

        let exit = CommandExitEvent {
            header: EventHeader {
                kind: kind::COMMAND_EXIT,
                pid: 42,
                tid: 42,
                _pad: 0,
                ts_ns: 9,
            },
            exit_code: 3 << 8,
            known: 1,
        };
        let mut record = vec![0u8; size_of::<CommandExitEvent>()];
        // SAFETY: the buffer is the struct's size.
        unsafe { std::ptr::write_unaligned(record.as_mut_ptr().cast(), exit) };
        let Some(Record::Event(decoded)) = decode(&record, clock) else {
            panic!("not an event")
        };
        assert_eq!(
            decoded.event,
            CaptureEvent::CommandExit {
                pid: 42,
                ts: 9,
                ending: Ending::Exited(3)
            }
        );
        assert_eq!(
            Ending::from_exit_code(9),
            Ending::Killed {
                signal: 9,
                core_dumped: false
            }
        );
    }

    #[test]
    fn decodes_a_socket_record_with_a_v4_mapped_peer() {
        let mut addr = [0u8; 16];
        addr[10..12].copy_from_slice(&[0xff, 0xff]);
        addr[12..].copy_from_slice(&[127, 0, 0, 1]);
        let event = SocketEvent {
            header: EventHeader {
                kind: kind::SOCKET,
                pid: 7,
                tid: 8,
                _pad: 0,
                ts_ns: 5,
            },
            conn: 0x1234,
            fd: 9,
            family: libc::AF_INET6 as u16,
            port: 11434,
            addr,
            source: observer_common::tls_source::PLAINTEXT,
            role: socket_role::CONNECTED,
            _pad: [0; 6],
        };
        let mut record = vec![0u8; size_of::<SocketEvent>()];
        // SAFETY: the buffer is the struct's size.
        unsafe { std::ptr::write_unaligned(record.as_mut_ptr().cast(), event) };
        let Some(Record::Event(decoded)) = decode(
            &record,
            Clock {
                monotonic_to_unix_ns: 0,
            },
        ) else {
            panic!("not an event")
        };
        assert_eq!(
            decoded.event,
            CaptureEvent::Socket {
                conn: ConnKey {
                    pid: 7,
                    conn: 0x1234
                },
                ts: 5,
                fd: 9,
                role: SocketRole::Connected,
                peer: Some("127.0.0.1:11434".parse().expect("address")),
                local: None,
            }
        );
    }
}
