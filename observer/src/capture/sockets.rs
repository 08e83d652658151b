//! The local (and, when the kernel did not see the connect, the peer) address of a socket,
//! from procfs: `/proc/PID/fd/FD` names the socket's inode, `/proc/PID/net/tcp{,6}` lists it.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `(local, peer)` of the TCP socket behind `fd` in `pid`, if it is one and still open.
pub fn tcp_addresses(pid: u32, fd: u32) -> Option<(SocketAddr, SocketAddr)> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .to_string();
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        find_inode(&text, &inode)
    })
}

/// How many established TCP connections `pid` has open.
pub fn established_connections(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    if inodes.is_empty() {
        return 0;
    }
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .map(|text| count_established(&text, &inodes))
        .sum()
}

/// Lines of a `/proc/net/tcp`-format table in state ESTABLISHED whose inode is in `inodes`.
fn count_established(table: &str, inodes: &std::collections::HashSet<String>) -> usize {
    const ESTABLISHED: &str = "01";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            columns.get(3) == Some(&ESTABLISHED)
                && columns.get(9).is_some_and(|inode| inodes.contains(*inode))
        })
        .count()
}

/// Whether `fd` of `pid` is known to be something other than a socket (a file, a pipe); false
/// when that cannot be told any more (the process or the fd is gone).
pub fn is_not_a_socket(pid: u32, fd: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .is_ok_and(|link| !link.to_string_lossy().starts_with("socket:"))
}

/// What an fd taken for JSON-RPC on a pipe turned out to be.
pub enum PipeEnd {
    /// A pipe; its other end is held by this child of the process (the MCP server it
    /// started), when one is found.
    Pipe { peer: Option<u32> },
    /// Not a pipe (a file starting with `{"`): not followed.
    NotAPipe,
    /// Gone before it could be looked at.
    Unknown,
}

/// What `fd` of `pid` is (see [`PipeEnd`]).
pub fn pipe_end(pid: u32, fd: u32) -> PipeEnd {
    let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
        return PipeEnd::Unknown;
    };
    if !link.to_string_lossy().starts_with("pipe:") {
        return PipeEnd::NotAPipe;
    }
    let children = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
                .collect::<Vec<_>>()
        });
    // The server's end may be any of its fds (a server that keeps its protocol stream off fd 1
    // moves it to another one).
    let peer = children.into_iter().find(|child| {
        std::fs::read_dir(format!("/proc/{child}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|end| end == link)
    });
    PipeEnd::Pipe { peer }
}

/// The line of a `/proc/net/tcp`-format table whose inode column is `inode`.
fn find_inode(table: &str, inode: &str) -> Option<(SocketAddr, SocketAddr)> {
    table.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.get(9) != Some(&inode) {
            return None;
        }
        Some((
            parse_address(columns.get(1)?)?,
            parse_address(columns.get(2)?)?,
        ))
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the kernel prints each 32-bit
/// word of the address in host (little-endian) order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_le_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_procfs_tcp_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:A1B2 0100007F:2CAA 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(
            find_inode(v4, "4242"),
            Some((
                "127.0.0.1:41394".parse().expect("addr"),
                "127.0.0.1:11434".parse().expect("addr")
            ))
        );
        assert_eq!(find_inode(v4, "4243"), None);
        let ours = ["4242".to_string()].into_iter().collect();
        assert_eq!(count_established(v4, &ours), 1);
        assert_eq!(count_established(&v4.replace(" 01 ", " 0A "), &ours), 0);
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 0000000000000000FFFF00000100007F:A1B2 00000000000000000000000001000000:01BB 01 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        assert_eq!(
            find_inode(v6, "77"),
            Some((
                "127.0.0.1:41394".parse().expect("addr"),
                "[::1]:443".parse().expect("addr")
            ))
        );
        assert_eq!(parse_address("zz:1"), None);
        assert_eq!(parse_address("0100007F"), None);
    }
}
