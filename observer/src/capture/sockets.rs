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
    /// A pipe, or a Unix socket (Bun gives its children socket pairs for their standard input
    /// and output); its other end is held by this child of the process (the MCP server it
    /// started), when one is found.
    Pipe { peer: Option<u32> },
    /// Neither (a file starting with `{"`): not followed.
    NotAPipe,
    /// Gone before it could be looked at.
    Unknown,
}

/// What `fd` of `pid` is (see [`PipeEnd`]).
pub fn pipe_end(pid: u32, fd: u32) -> PipeEnd {
    let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
        return PipeEnd::Unknown;
    };
    let link = link.to_string_lossy().into_owned();
    // The name the other end has in its process's fd table: the same pipe, or the Unix
    // socket's peer.
    let other_end = if link.starts_with("pipe:") {
        link
    } else if let Some(peer) = link
        .strip_prefix("socket:[")
        .and_then(|inode| inode.strip_suffix(']')?.parse().ok())
        .and_then(unix_peer)
    {
        format!("socket:[{peer}]")
    } else {
        return PipeEnd::NotAPipe;
    };
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
            .any(|end| end.as_os_str() == other_end.as_str())
    });
    PipeEnd::Pipe { peer }
}

/// The inode of the other end of Unix socket `inode`, from the kernel's socket diagnostics
/// (`NETLINK_SOCK_DIAG`, `UDIAG_SHOW_PEER`); none for a socket of another family.
fn unix_peer(inode: u32) -> Option<u32> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket,
    };
    use std::os::fd::AsRawFd;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UNIX_DIAG_PEER: u16 = 2;
    const HEADER: usize = 16; // nlmsghdr
    const DIAG_MSG: usize = 16; // unix_diag_msg
    let mut request = Vec::with_capacity(40);
    request.extend(40u32.to_ne_bytes()); // nlmsg_len: the header and a unix_diag_req
    request.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend((libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request.extend([0u8; 8]); // sequence, port
    request.extend([libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, padding
    request.extend(u32::MAX.to_ne_bytes()); // every state
    request.extend(inode.to_ne_bytes());
    request.extend(UDIAG_SHOW_PEER.to_ne_bytes());
    request.extend([0xff; 8]); // no cookie
    let netlink = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    send(netlink.as_raw_fd(), &request, MsgFlags::empty()).ok()?;
    let mut reply = [0u8; 1024];
    let len = recv(netlink.as_raw_fd(), &mut reply, MsgFlags::empty()).ok()?;
    let reply = reply.get(..len)?;
    let u16_at = |at: usize| Some(u16::from_ne_bytes(reply.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(reply.get(at..at + 4)?.try_into().ok()?));
    if u16_at(4)? == NLMSG_ERROR {
        return None;
    }
    let end = (u32_at(0)? as usize).min(reply.len());
    let mut at = HEADER + DIAG_MSG;
    while at + 4 <= end {
        let (attr_len, attr_type) = (u16_at(at)? as usize, u16_at(at + 2)?);
        if attr_len < 4 {
            return None;
        }
        if attr_type == UNIX_DIAG_PEER {
            return u32_at(at + 4);
        }
        at += attr_len.next_multiple_of(4);
    }
    None
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
