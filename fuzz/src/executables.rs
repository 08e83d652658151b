//! Executables for the analysis targets: what discovery reads of every program on the host,
//! whoever wrote it. The `elf` target takes its input as a whole file; the others build a small
//! ELF executable around theirs (code, Go's tables, symbol names), so that the fuzzer works on
//! what lies behind the ELF parsing instead of having to invent a valid file first. Every one
//! goes through the observer's single entry point, `analysis::analyse_bytes`.
use std::path::Path;

pub use observer::capture::synthetic::{Section, Symbol, executable};
use observer::capture::{
    analysis::{self, FileAnalysis},
    boringssl::example as boringssl,
    golang::{self, example as go},
    rustls::example as rustls,
};

/// Analyses `bytes` as the observer does any file it meets, and checks what must hold whatever
/// they are: every probe lies inside the file, and the analysis survives the disk cache.
pub fn analyse(bytes: &[u8]) -> FileAnalysis {
    let analysis = analysis::analyse_bytes(bytes, Path::new("fuzz-input"));
    for probe in analysis
        .capture
        .iter()
        .chain(&analysis.sentinel)
        .chain(&analysis.loader)
    {
        assert!(
            probe.offset < bytes.len() as u64,
            "{} probed at {:#x}, past the file's {} bytes",
            probe.function,
            probe.offset,
            bytes.len()
        );
    }
    let stored = serde_json::to_vec(&analysis).expect("an analysis serialises");
    let read: FileAnalysis = serde_json::from_slice(&stored).expect("and reads back");
    assert_eq!(read, analysis);
    analysis
}

/// Splits `input` into `N` parts: each but the last prefixed by its little-endian u16 length.
pub fn parts<const N: usize>(mut input: &[u8]) -> [&[u8]; N] {
    let mut parts = [&[][..]; N];
    for (i, part) in parts.iter_mut().enumerate() {
        if i + 1 == N {
            *part = input;
            break;
        }
        let Some((length, rest)) = input.split_first_chunk::<2>() else {
            break;
        };
        let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
        (*part, input) = rest.split_at(length);
    }
    parts
}

/// The inverse of [`parts`], for seeds.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut input = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            input.extend((part.len() as u16).to_le_bytes());
        }
        input.extend(*part);
    }
    input
}

/// Where the Go and symbol targets load their code.
pub const TEXT: u64 = 0x40_1000;

/// `go` input: a flags byte (bit 0: sections keep their names, else the tables are found by
/// their magic), then the code, the function table and the build info ([`parts`]).
pub fn go_executable(input: &[u8]) -> Vec<u8> {
    let Some((&flags, rest)) = input.split_first() else {
        return Vec::new();
    };
    let [text, pclntab, buildinfo] = parts::<3>(rest);
    let named = flags & 1 != 0;
    let name = |name| if named { name } else { "" };
    executable(
        &[
            Section {
                name: name(".text"),
                address: TEXT,
                data: text,
                code: true,
            },
            Section {
                name: name(".gopclntab"),
                address: 0x60_0000,
                data: pclntab,
                code: false,
            },
            Section {
                name: name(".go.buildinfo"),
                address: 0x70_0000,
                data: buildinfo,
                code: false,
            },
        ],
        &[],
    )
}

/// `boringssl` input: the code of `.text`, at the address the hand-written example assumes,
/// beside the ssl_lib.cc name its error sites load.
pub fn boringssl_executable(code: &[u8]) -> Vec<u8> {
    const RODATA: &[u8] = b"\0third_party/boringssl/src/ssl/ssl_lib.cc\0";
    let marker = u64::from(boringssl::MARKER_AT);
    executable(
        &[
            Section {
                name: ".text",
                address: boringssl::BASE,
                data: code,
                code: true,
            },
            Section {
                name: ".rodata",
                // The name starts one byte in, after the NUL ending the string before it.
                address: marker - 1,
                data: RODATA,
                code: false,
            },
        ],
        &[],
    )
}

/// `symbols` input: the code ([`parts`]), then symbol names, one a line; the n-th names a
/// function at 16 n bytes into the code (wrapping), 16 bytes long.
pub fn symbols_executable(input: &[u8]) -> Vec<u8> {
    let [code, names] = parts::<2>(input);
    let symbols: Vec<Symbol> = names
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, name)| Symbol {
            name,
            section: 0,
            offset: (i as u64 * 16) % (code.len() as u64).max(1),
            size: 16,
        })
        .collect();
    executable(
        &[Section {
            name: ".text",
            address: TEXT,
            data: code,
            code: true,
        }],
        &symbols,
    )
}

/// Seeds for `go`: a Go 1.21 program's tables naming every function the probes look for, in
/// named sections and in unnamed ones.
pub fn go_seeds() -> Vec<Vec<u8>> {
    let (text, functions) = go_program();
    let table = go::pclntab(golang::PCLNTAB_GO120, TEXT, &functions, text.len() as u32);
    let buildinfo = go::buildinfo("go1.21.0");
    let old = go::buildinfo("go1.16.3");
    let mut seeds = Vec::new();
    for flags in [1u8, 0] {
        for info in [&buildinfo, &old] {
            let mut seed = vec![flags];
            seed.extend(join(&[&text, &table, info]));
            seeds.push(seed);
        }
    }
    seeds
}

/// Code for the Go functions the probes look for, each shaped as Go compiles them (the stack
/// check, a NOP before the RET), and where each starts.
fn go_program() -> (Vec<u8>, Vec<(&'static str, u32)>) {
    const NAMES: [&str; 7] = [
        "crypto/tls.(*Conn).Write",
        "crypto/tls.(*Conn).Read",
        "crypto/tls.(*Conn).Close",
        "internal/poll.(*FD).Write",
        "internal/poll.(*FD).Read",
        "internal/poll.(*FD).Close",
        "syscall.connect",
    ];
    // cmp rsp,[r14+0x10]; jbe +6; sub rsp,0x18; add rsp,0x18; nop; ret
    const BODY: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x76, 0x0a, 0x48, 0x83, 0xec, 0x18, 0x48, 0x83, 0xc4, 0x18, 0x90,
        0xc3,
    ];
    let mut text = Vec::new();
    let mut functions = vec![("runtime.main", 0)];
    text.extend([0xc3; 16]);
    for name in NAMES {
        functions.push((name, text.len() as u32));
        text.extend(BODY);
        text.resize(text.len() + 16, 0xcc);
    }
    (text, functions)
}

/// Seeds for `boringssl`: the hand-written BoringSSL-shaped code, with its two checks agreeing
/// and not.
pub fn boringssl_seeds() -> Vec<Vec<u8>> {
    [0x98, 0xa0]
        .map(|field| boringssl::boringssl_like(field).0)
        .to_vec()
}

/// `rustls` input: the code of `.text`, at the address the hand-written example assumes, with
/// its data (rustls's source paths, panic locations, cipher vtables) and unwind tables.
pub fn rustls_executable(code: &[u8]) -> Vec<u8> {
    rustls::with_code(&rustls::Shape::default(), code)
}

/// Seeds for `rustls`: the example's code as rustls is built, and with the cross-checks
/// disagreeing (Ok tags, where the ciphers are).
pub fn rustls_seeds() -> Vec<Vec<u8>> {
    let shapes = [
        rustls::Shape::default(),
        rustls::Shape {
            receive_ok: 0xff,
            ..rustls::Shape::default()
        },
        rustls::Shape {
            decrypter_field: 0x38,
            ..rustls::Shape::default()
        },
    ];
    shapes.iter().map(rustls::code).collect()
}

/// Seeds for `symbols`: the names of every TLS library the probes read (OpenSSL, GnuTLS,
/// rustls mangled as rustc does), the C library's wrappers and loader hook, and Go's names,
/// over code that forwards as OpenSSL 3's exports do.
pub fn symbols_seeds() -> Vec<Vec<u8>> {
    // Four exports in 16-byte slots (SSL_read_ex, SSL_read, SSL_write_ex, SSL_write, as the
    // first names below are placed), each `sub rsp,8; call INTERNAL; add rsp,8; ret` as
    // OpenSSL 3 forwards; the two internal functions at 0x100 and 0x110 start `push rbp`.
    let mut code = Vec::new();
    for slot in 0..4u32 {
        let internal = 0x100 + (slot / 2) * 0x10;
        let next = slot * 16 + 9;
        code.extend([0x48, 0x83, 0xec, 0x08, 0xe8]);
        code.extend((internal - next).to_le_bytes());
        code.extend([0x48, 0x83, 0xc4, 0x08, 0xc3, 0xcc, 0xcc]);
    }
    code.resize(0x100, 0xcc);
    for _ in 0..2 {
        code.extend([0x55, 0xc3]);
        code.resize(code.len() + 14, 0xcc);
    }
    code.resize(0x200, 0xcc);
    let lists: [&[&str]; 4] = [
        &[
            "SSL_read_ex",
            "SSL_read@@OPENSSL_3.0.0",
            "SSL_write_ex",
            "SSL_write",
            "SSL_free",
            "gnutls_record_send",
            "gnutls_record_recv",
            "gnutls_deinit",
        ],
        &[
            "_ZN6rustls12common_state11CommonState16buffer_plaintext17h0123456789abcdefE",
            "_ZN6rustls12common_state11CommonState23take_received_plaintext17h0123456789abcdefE",
            "_ZN4core3ptr62drop_in_place$LT$rustls..common_state..CommonState$GT$17h0123456789abcdefE",
            "_ZN6rustls4msgs7message8outbound14OutboundChunks3len17h0123456789abcdefE",
        ],
        &[
            "write",
            "send",
            "sendto",
            "writev",
            "sendmsg",
            "read",
            "recv",
            "recvfrom",
            "readv",
            "recvmsg",
            "close",
            "connect",
            "_dl_debug_state",
        ],
        &[
            "crypto/tls.(*Conn).Write",
            "crypto/tls.(*Conn).Read",
            "crypto/tls.(*Conn).Close",
            "syscall.connect",
        ],
    ];
    lists
        .iter()
        .map(|names| join(&[&code, names.join("\n").as_bytes()]))
        .collect()
}

/// Seeds for `elf`: every other target's seeds as the files they build, and the small ELF
/// files of this machine (programs and libraries up to 64 KiB).
pub fn elf_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = go_seeds().iter().map(|s| go_executable(s)).collect();
    seeds.extend(boringssl_seeds().iter().map(|s| boringssl_executable(s)));
    seeds.extend(rustls_seeds().iter().map(|s| rustls_executable(s)));
    seeds.extend(symbols_seeds().iter().map(|s| symbols_executable(s)));
    for dir in ["/usr/bin", "/usr/lib/x86_64-linux-gnu"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let small_elf = entries
            .flatten()
            .filter(|entry| {
                entry
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.len() <= 64 << 10)
            })
            .filter_map(|entry| std::fs::read(entry.path()).ok())
            .filter(|bytes| bytes.starts_with(b"\x7fELF"));
        seeds.extend(small_elf.take(16));
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds reach what their targets are for: the fuzzer starts from located probes.
    #[test]
    fn each_seed_reaches_its_locator() {
        let tls = |file: &[u8]| analyse(file).tls.unwrap_or_default();
        let go: Vec<_> = go_seeds()
            .iter()
            .map(|s| analyse(&go_executable(s)))
            .collect();
        assert!(
            go[0]
                .tls
                .as_deref()
                .is_some_and(|t| t.contains("Go crypto/tls")),
            "{:?}",
            go[0]
        );
        assert!(go[1].refused.is_some(), "Go 1.16 is refused: {:?}", go[1]);
        assert!(
            go[2]
                .tls
                .as_deref()
                .is_some_and(|t| t.contains("from .gopclntab")),
            "{:?}",
            go[2]
        );
        let boringssl = boringssl_seeds();
        assert!(tls(&boringssl_executable(&boringssl[0])).contains("boringssl probes"));
        assert!(
            analyse(&boringssl_executable(&boringssl[1]))
                .refused
                .is_some()
        );
        let rustls = rustls_seeds();
        assert!(tls(&rustls_executable(&rustls[0])).contains("without symbols, by code shape"));
        for refused in &rustls[1..] {
            assert!(analyse(&rustls_executable(refused)).refused.is_some());
        }
        let symbols = symbols_seeds();
        assert!(tls(&symbols_executable(&symbols[0])).contains("openssl probes"));
        assert!(tls(&symbols_executable(&symbols[0])).contains("ssl_read_internal"));
        assert!(tls(&symbols_executable(&symbols[1])).contains("rustls probes"));
        let libc = analyse(&symbols_executable(&symbols[2]));
        assert!(
            libc.capture.iter().any(|p| p.program == "socket_send"),
            "{libc:?}"
        );
        assert_eq!(libc.loader.len(), 1);
    }
}
