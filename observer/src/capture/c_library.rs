//! The C library's socket wrappers and the dynamic loader's debugger hook: where plaintext HTTP,
//! the socket under each TLS session, re-admission and late libraries are seen, per process.
use iced_x86::Register;
use object::{Object, ObjectSection, ObjectSymbol, ReadRef};

use super::{TlsLibrary, elf::file_offset, probe_sites::straight_line_site, untrusted::Deadline};

/// A wrapper and the probe programs that serve it.
struct Wrapper {
    symbol: &'static str,
    entry_program: &'static str,
    return_program: Option<&'static str>,
}

const fn data(symbol: &'static str, entry_program: &'static str) -> Wrapper {
    Wrapper {
        symbol,
        entry_program,
        return_program: Some("socket_return"),
    }
}

/// Reads and writes, by calling shape (see observer-ebpf/src/socket_io.rs), and `close`.
const CAPTURE: &[Wrapper] = &[
    data("write", "socket_send"),
    data("send", "socket_send"),
    data("sendto", "socket_send"),
    data("writev", "socket_sendv"),
    data("sendmsg", "socket_sendmsg"),
    data("read", "socket_recv"),
    data("recv", "socket_recv"),
    data("recvfrom", "socket_recv"),
    data("readv", "socket_recvv"),
    data("recvmsg", "socket_recvmsg"),
    Wrapper {
        symbol: "close",
        entry_program: "socket_close",
        return_program: None,
    },
    // The peer of each connection (in a process no longer followed, the sentinel below).
    Wrapper {
        symbol: "connect",
        entry_program: "socket_connect",
        return_program: None,
    },
];

/// Kept on a process that is no longer followed: a connection to a new peer is news.
const SENTINEL: &[Wrapper] = &[Wrapper {
    symbol: "connect",
    entry_program: "socket_connect",
    return_program: None,
}];

/// glibc's and musl's loaders call it around every change to the list of loaded objects (it is
/// where debuggers learn of `dlopen`).
const LOADER: &[Wrapper] = &[Wrapper {
    symbol: "_dl_debug_state",
    entry_program: "library_loaded",
    return_program: None,
}];

/// Symbols a file must define to be taken for a C library (a program that defines its own
/// `read` is not one).
const C_LIBRARY_MARKERS: &[&str] = &["send", "recv", "connect", "write", "read"];

/// One probe to place: a program at a file offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub program: &'static str,
    pub offset: u64,
    pub library: TlsLibrary,
    pub function: &'static str,
    /// How the site was chosen, for the log.
    pub chosen: String,
}

/// What a file offers as a C library or loader.
#[derive(Debug, Default)]
pub struct LibcSites {
    pub capture: Vec<Site>,
    pub sentinel: Vec<Site>,
    pub loader: Vec<Site>,
}

/// The wrappers `elf` defines, at the sites where their probes cost least.
pub fn locate<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    deadline: &Deadline,
) -> LibcSites {
    let defined = |name: &str| address_of(elf, name, deadline).is_some();
    let is_c_library = C_LIBRARY_MARKERS.iter().all(|name| defined(name));
    let sites = |wrappers: &[Wrapper]| -> Vec<Site> {
        let mut sites: Vec<Site> = Vec::new();
        for wrapper in wrappers {
            let Some((address, size)) = address_of(elf, wrapper.symbol, deadline) else {
                continue;
            };
            let (site, chosen) = cheap_site(elf, address, size);
            let Some(offset) = file_offset(elf, site) else {
                continue;
            };
            for program in std::iter::once(wrapper.entry_program).chain(wrapper.return_program) {
                // Aliases (`write`, `__write`) share an address: one probe.
                if !sites
                    .iter()
                    .any(|s| s.program == program && s.offset == offset)
                {
                    sites.push(Site {
                        program,
                        offset,
                        library: TlsLibrary::Plaintext,
                        function: wrapper.symbol,
                        chosen: chosen.clone(),
                    });
                }
            }
        }
        sites
    };
    LibcSites {
        capture: if is_c_library {
            sites(CAPTURE)
        } else {
            Vec::new()
        },
        sentinel: if is_c_library {
            sites(SENTINEL)
        } else {
            Vec::new()
        },
        loader: sites(LOADER),
    }
}

/// A defined function's address and size (0: unknown), by plain name (`write@@GLIBC_2.2.5`).
fn address_of<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    name: &str,
    deadline: &Deadline,
) -> Option<(u64, u64)> {
    elf.dynamic_symbols()
        .chain(elf.symbols())
        .take_while(|_| deadline.left())
        .find(|symbol| {
            symbol.is_definition()
                && symbol.address() != 0
                && symbol.kind() == object::SymbolKind::Text
                && symbol
                    .name()
                    .is_ok_and(|n| n.split('@').next() == Some(name))
        })
        .map(|symbol| (symbol.address(), symbol.size()))
}

/// The wrappers read their first two arguments (fd, buffer) and the return address.
fn cheap_site<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    address: u64,
    size: u64,
) -> (u64, String) {
    let length = if size == 0 { 64 } else { size.min(64) };
    let code = elf.sections().find_map(|section| {
        let into = address
            .checked_sub(section.address())
            .filter(|&into| into < section.size())?;
        let length = length.min(section.size() - into);
        section.data_range(address, length).ok().flatten()
    });
    match code {
        Some(code) => straight_line_site(code, address, &[Register::RDI, Register::RSI]),
        None => (address, "its entry (code unreadable)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline() -> Deadline {
        Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND)
    }

    /// This machine's C library: every wrapper found, each at a site the kernel emulates.
    #[test]
    fn system_libc_wrappers_are_found_at_emulated_sites() {
        let path = std::path::Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let Ok(data) = std::fs::read(path) else {
            eprintln!("skipped: {} is not here", path.display());
            return;
        };
        let elf = object::File::parse(&*data).expect("libc parses");
        let sites = locate(&elf, &deadline());
        let functions: Vec<_> = sites.capture.iter().map(|s| s.function).collect();
        for wrapper in CAPTURE {
            assert!(functions.contains(&wrapper.symbol), "{functions:?}");
        }
        assert_eq!(sites.sentinel.len(), 1);
        for site in sites.capture.iter().chain(&sites.sentinel) {
            assert!(!site.chosen.contains("single-stepped"), "{site:?}");
        }
        // The loader hook lives in ld.so, not in libc.
        assert!(sites.loader.is_empty());
    }

    #[test]
    fn the_loader_offers_its_debugger_hook() {
        let path = std::path::Path::new("/lib64/ld-linux-x86-64.so.2");
        let Ok(data) = std::fs::read(path) else {
            eprintln!("skipped: {} is not here", path.display());
            return;
        };
        let elf = object::File::parse(&*data).expect("ld.so parses");
        let sites = locate(&elf, &deadline());
        assert!(sites.capture.is_empty());
        assert_eq!(sites.loader.len(), 1, "{:?}", sites.loader);
    }
}
