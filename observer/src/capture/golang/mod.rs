//! Go executables: where `crypto/tls.(*Conn)`'s Write, Read and Close are, and every RET
//! instruction of Read (Go is probed there, never with uretprobes: the runtime moves goroutine
//! stacks and a return address rewritten by the kernel crashes it).
//!
//! Function bounds come from the symbol table when the binary has one, else from the runtime's
//! own function table (`.gopclntab`), which stripping (`-ldflags "-s -w"`, `strip`) leaves in
//! place; without section headers it is found by its magic. The Go version comes from the build
//! info: before 1.17, Go passed arguments on the stack, which the probes do not read.
use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic, Register};
use memchr::memmem;
use object::{Architecture, Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::{
    TlsLibrary,
    elf::{AttachPoint, file_offset},
    untrusted::{Deadline, Elf},
};

const WRITE: &str = "crypto/tls.(*Conn).Write";
const READ: &str = "crypto/tls.(*Conn).Read";
const CLOSE: &str = "crypto/tls.(*Conn).Close";
/// Every socket read and write of a Go program passes here (plaintext HTTP, and the socket
/// under each TLS session).
const FD_WRITE: &str = "internal/poll.(*FD).Write";
const FD_READ: &str = "internal/poll.(*FD).Read";
const FD_CLOSE: &str = "internal/poll.(*FD).Close";
/// `connect(s int, addr unsafe.Pointer, addrlen _Socklen)`: where every connection starts.
const CONNECT: &str = "syscall.connect";

/// A probed function larger than this is not believed: `(*Conn).Read` and `(*FD).Read` are
/// about a kilobyte, and every instruction of Read is decoded and kept while its RETs are found.
const MAX_FUNCTION_BYTES: u64 = 64 << 10;
/// Function names longer than this are not read (those the probes need are short).
const MAX_NAME_BYTES: usize = 512;

/// Starts the build info blob (`runtime/debug.BuildInfo` source) in every Go ≥ 1.13 binary.
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// `.gopclntab` header magics, by the Go versions that write them.
pub const PCLNTAB_GO116: u32 = 0xffff_fffa;
pub const PCLNTAB_GO118: u32 = 0xffff_fff0;
pub const PCLNTAB_GO120: u32 = 0xffff_fff1;

/// What a file is, as far as Go capture goes.
#[derive(Debug, PartialEq, Eq)]
pub enum GoBinary {
    NotGo,
    /// A Go executable the probes cannot serve.
    Unsupported {
        version: Option<String>,
        reason: String,
    },
    Go(GoProbes),
}

/// Where the probes go in one Go executable.
#[derive(Debug, PartialEq, Eq)]
pub struct GoProbes {
    /// As the build info says (`go1.19.8`), when it could be read.
    pub version: Option<String>,
    /// `.symtab` or `.gopclntab`: where the function bounds came from.
    pub bounds_from: &'static str,
    /// `crypto/tls.(*Conn)`, when the program links it.
    pub tls: Option<GoSites>,
    /// `internal/poll.(*FD)`, when the program does I/O through the runtime's poller.
    pub net: Option<GoSites>,
    /// `syscall.connect`: each connection's peer, and re-admission once not followed.
    pub connect: Option<u64>,
}

/// A Write/Read/Close trio (file offsets): Read is probed at each of its RET instructions.
#[derive(Debug, PartialEq, Eq)]
pub struct GoSites {
    pub write: u64,
    pub read: u64,
    pub read_returns: Vec<u64>,
    pub close: Option<u64>,
}

/// The programs serving a trio, and the names of its functions.
struct Trio {
    library: TlsLibrary,
    programs: [&'static str; 4],
    names: [&'static str; 3],
}

const TLS_TRIO: Trio = Trio {
    library: TlsLibrary::Go,
    programs: [
        "go_tls_write",
        "go_tls_read",
        "go_tls_read_return",
        "go_tls_close",
    ],
    names: [WRITE, READ, CLOSE],
};

const NET_TRIO: Trio = Trio {
    library: TlsLibrary::Plaintext,
    programs: [
        "go_fd_write",
        "go_fd_read",
        "go_fd_read_return",
        "go_fd_close",
    ],
    names: [FD_WRITE, FD_READ, FD_CLOSE],
};

impl GoProbes {
    pub fn attach_points(&self) -> Vec<AttachPoint> {
        [(&self.tls, TLS_TRIO), (&self.net, NET_TRIO)]
            .into_iter()
            .filter_map(|(sites, trio)| Some(sites.as_ref()?.attach_points(&trio)))
            .flatten()
            .chain(self.sentinel_points())
            .collect()
    }

    /// Kept on a process no longer followed.
    pub fn sentinel_points(&self) -> Vec<AttachPoint> {
        self.connect
            .map(|offset| AttachPoint {
                program: "go_connect",
                offset,
                library: TlsLibrary::Plaintext,
                function: CONNECT,
            })
            .into_iter()
            .collect()
    }
}

impl GoSites {
    fn attach_points(&self, trio: &Trio) -> Vec<AttachPoint> {
        let point = |program, offset, function| AttachPoint {
            program,
            offset,
            library: trio.library,
            function,
        };
        let [write, read, read_return, close] = trio.programs;
        let [write_name, read_name, close_name] = trio.names;
        let mut points = vec![
            point(write, self.write, write_name),
            point(read, self.read, read_name),
        ];
        points.extend(
            self.read_returns
                .iter()
                .map(|&offset| point(read_return, offset, read_name)),
        );
        points.extend(self.close.map(|offset| point(close, offset, close_name)));
        points
    }
}

/// Looks at `elf`, whose bytes are `bytes`. Files whose section headers name no Go section
/// are dismissed at once; the tables of the others (and of ELF files without section headers)
/// are searched for.
pub fn inspect(elf: &Elf, bytes: &[u8], deadline: &Deadline) -> GoBinary {
    let has_sections = elf
        .sections()
        .any(|s| s.name().is_ok_and(|n| !n.is_empty()));
    let section = |name| {
        elf.section_by_name(name)
            .and_then(|s| s.data().ok())
            .filter(|d| !d.is_empty())
    };
    let (buildinfo, pclntab) = (section(".go.buildinfo"), section(".gopclntab"));
    if has_sections && buildinfo.is_none() && pclntab.is_none() {
        return GoBinary::NotGo;
    }
    let buildinfo = buildinfo.or_else(|| find_buildinfo(bytes));
    let pclntab = pclntab
        .and_then(Pclntab::parse)
        .or_else(|| find_pclntab(bytes, deadline));
    if buildinfo.is_none() && pclntab.is_none() {
        return GoBinary::NotGo;
    }
    let version = buildinfo.and_then(|b| buildinfo_version(elf, b));
    let unsupported = |reason: String| GoBinary::Unsupported {
        version: version.clone(),
        reason,
    };
    match version.as_deref().map(release) {
        Some(Some(release)) if release < (1, 17) => {
            return unsupported(
                "Go before 1.17 passes arguments on the stack; the probes read the register ABI"
                    .into(),
            );
        }
        Some(Some(_)) => {}
        _ if pclntab.as_ref().is_some_and(|p| p.magic == PCLNTAB_GO116) => {
            return unsupported(
                "the build info gives no version and the function table is Go 1.16's or 1.17's; \
                 Go 1.16 passes arguments on the stack"
                    .into(),
            );
        }
        _ => {}
    }
    if elf.architecture() != Architecture::X86_64 {
        return unsupported(format!(
            "the probes read amd64 registers; this is {:?}",
            elf.architecture()
        ));
    }

    const NAMES: [&str; 7] = [WRITE, READ, CLOSE, FD_WRITE, FD_READ, FD_CLOSE, CONNECT];
    let mut bounds = symbol_bounds(elf, &NAMES, deadline);
    let mut bounds_from = ".symtab";
    if bounds.iter().any(Option::is_none) {
        let Some(table) = &pclntab else {
            return unsupported("it has neither symbols nor a readable .gopclntab".into());
        };
        let text = elf.section_by_name(".text").map(|s| s.address());
        let Some(functions) = table.find(&NAMES, text, deadline) else {
            return unsupported(".gopclntab could not be read".into());
        };
        for (slot, found) in bounds.iter_mut().zip(functions) {
            *slot = slot.or(found);
        }
        bounds_from = ".gopclntab";
    }
    let [
        tls_write,
        tls_read,
        tls_close,
        fd_write,
        fd_read,
        fd_close,
        connect,
    ] = bounds;
    let tls = match locate_trio(elf, tls_write, tls_read, tls_close, READ) {
        Ok(sites) => sites,
        Err(reason) => return unsupported(reason),
    };
    let net = locate_trio(elf, fd_write, fd_read, fd_close, FD_READ).unwrap_or_default();
    if tls.is_none() && net.is_none() {
        return GoBinary::NotGo;
    }
    let connect = connect.and_then(|bounds| {
        file_offset(
            elf,
            entry_probe_address(function_code(elf, bounds)?, bounds.0),
        )
    });
    GoBinary::Go(GoProbes {
        version,
        bounds_from,
        tls,
        net,
        connect,
    })
}

/// The machine code of the function at `[start, end)`; none past [`MAX_FUNCTION_BYTES`] (or
/// outside the file's segments).
fn function_code<'a>(elf: &Elf<'a>, (start, end): (u64, u64)) -> Option<&'a [u8]> {
    let size = end
        .checked_sub(start)
        .filter(|&size| size <= MAX_FUNCTION_BYTES)?;
    elf.segments()
        .find_map(|segment| segment.data_range(start, size).ok().flatten())
}

/// The probe sites of a Write/Read/Close trio from their bounds; none when Write or Read is
/// not in the program.
fn locate_trio(
    elf: &Elf,
    write: Option<(u64, u64)>,
    read: Option<(u64, u64)>,
    close: Option<(u64, u64)>,
    read_name: &str,
) -> Result<Option<GoSites>, String> {
    let (Some(write), Some(read)) = (write, read) else {
        return Ok(None);
    };
    let offset = |address| file_offset(elf, address);
    let entry_probe =
        |bounds: (u64, u64)| offset(entry_probe_address(function_code(elf, bounds)?, bounds.0));
    let (Some(write), Some(read_entry), Some(read_code)) = (
        entry_probe(write),
        entry_probe(read),
        function_code(elf, read),
    ) else {
        return Err(format!(
            "{read_name} and its Write lie outside the file's segments, or are implausibly large"
        ));
    };
    let Some(read_returns) = return_addresses(read_code, read.0)
        .into_iter()
        .map(offset)
        .collect::<Option<Vec<u64>>>()
        .filter(|r| !r.is_empty())
    else {
        return Err(format!("no RET instruction found in {read_name}"));
    };
    Ok(Some(GoSites {
        write,
        read: read_entry,
        read_returns,
        close: close.and_then(entry_probe),
    }))
}

/// Where a function's entry probe goes: on the conditional jump that ends Go's stack-bound
/// check (`cmp rsp, [r14+16]`, after `lea r12, [rsp-N]` for large frames), when the function
/// starts with one. The kernel emulates a jump but single-steps a memory compare, at ~10 µs a
/// hit on these machines; the check writes only flags and R12, never an argument register, so
/// the arguments are the same there. (If the stack must grow, the function restarts from its
/// entry and the probe fires again with the same arguments.)
fn entry_probe_address(code: &[u8], entry: u64) -> u64 {
    for instruction in Decoder::with_ip(64, code, entry, DecoderOptions::NONE)
        .into_iter()
        .take(3)
    {
        match instruction.mnemonic() {
            Mnemonic::Cmp => {}
            Mnemonic::Lea if instruction.op0_register() == Register::R12 => {}
            _ if instruction.is_jcc_short_or_near() => return instruction.ip(),
            _ => break,
        }
    }
    entry
}

/// `[start, end)` of each of `names`, from the defined function symbols.
fn symbol_bounds<const N: usize>(
    elf: &Elf,
    names: &[&str; N],
    deadline: &Deadline,
) -> [Option<(u64, u64)>; N] {
    let mut found = [None; N];
    for symbol in elf.symbols().take_while(|_| deadline.left()) {
        if !symbol.is_definition() || symbol.size() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if let Some(slot) = names.iter().position(|&n| n == name) {
            let start = symbol.address();
            found[slot] = found[slot].or(Some((start, start.saturating_add(symbol.size()))));
        }
    }
    found
}

/// Where to probe the returns of the function whose machine code is `code`: each RET, or the
/// NOP just before it when no jump lands on the RET itself. The kernel single-steps a RET
/// (~10 µs a hit here) but emulates a NOP, and Go's epilogues often end `add rsp, N; nop; ret`:
/// at the NOP the stack is already unwound and the results are in their registers.
fn return_addresses(code: &[u8], address: u64) -> Vec<u64> {
    let instructions: Vec<_> = Decoder::with_ip(64, code, address, DecoderOptions::NONE)
        .into_iter()
        .collect();
    let jumped_to: Vec<u64> = instructions
        .iter()
        .filter(|instruction| instruction.flow_control() != FlowControl::Next)
        .map(|instruction| instruction.near_branch_target())
        .filter(|&target| target != 0)
        .collect();
    instructions
        .iter()
        .enumerate()
        .filter(|(_, instruction)| instruction.mnemonic() == Mnemonic::Ret)
        .map(
            |(index, ret)| match index.checked_sub(1).map(|i| &instructions[i]) {
                Some(before)
                    if before.mnemonic() == Mnemonic::Nop && !jumped_to.contains(&ret.ip()) =>
                {
                    before.ip()
                }
                _ => ret.ip(),
            },
        )
        .collect()
}

/// The build info blob found by its magic (binaries without section headers). Go aligns it
/// to 16 bytes.
fn find_buildinfo(bytes: &[u8]) -> Option<&[u8]> {
    memmem::find_iter(bytes, BUILDINFO_MAGIC)
        .find(|at| at % 16 == 0)
        .map(|at| &bytes[at..])
}

/// The Go version recorded in the build info: inline since Go 1.18, behind a pointer before.
fn buildinfo_version(elf: &Elf, blob: &[u8]) -> Option<String> {
    let header = blob.get(..32)?;
    if !header.starts_with(BUILDINFO_MAGIC) {
        return None;
    }
    let (ptr_size, flags) = (usize::from(header[14]), header[15]);
    const INLINE_STRINGS: u8 = 2;
    const BIG_ENDIAN: u8 = 1;
    let text = if flags & INLINE_STRINGS != 0 {
        let rest = blob.get(32..)?;
        let (len, used) = uvarint(rest)?;
        rest.get(used..used.checked_add(usize::try_from(len).ok()?)?)?
    } else {
        if flags & BIG_ENDIAN != 0 || !(ptr_size == 4 || ptr_size == 8) {
            return None;
        }
        // A pointer to a Go string header {data, len} in the data segment.
        let at_address = |address: u64, size: usize| {
            elf.segments()
                .find_map(|s| s.data_range(address, size as u64).ok().flatten())
        };
        let string_header = at_address(word(blob, 16, ptr_size)?, 2 * ptr_size)?;
        let data = word(string_header, 0, ptr_size)?;
        let len = word(string_header, ptr_size, ptr_size)?;
        at_address(data, usize::try_from(len).ok().filter(|&l| l <= 256)?)?
    };
    String::from_utf8(text.to_vec()).ok()
}

/// `(major, minor)` of a Go version string: `go1.19.8`, `go1.21rc2`, `devel go1.23-abc…`.
fn release(version: &str) -> Option<(u32, u32)> {
    let rest = &version[version.find("go")? + 2..];
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Little-endian unsigned word of `size` bytes at `at`.
fn word(bytes: &[u8], at: usize, size: usize) -> Option<u64> {
    let raw = bytes.get(at..at.checked_add(size)?)?;
    Some(match size {
        4 => u64::from(u32::from_le_bytes(raw.try_into().ok()?)),
        8 => u64::from_le_bytes(raw.try_into().ok()?),
        _ => return None,
    })
}

/// Go's unsigned varint (LEB128): the value and the bytes it took.
fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The runtime's function table: for each function, its entry address and name.
#[derive(Debug)]
struct Pclntab<'a> {
    data: &'a [u8],
    magic: u32,
    ptr_size: usize,
    nfunc: usize,
    /// Go ≥ 1.18 stores entries relative to this (0 in position-independent builds).
    text_start: u64,
    funcnames: usize,
    /// `pclnOffset`: the function table, and the base of its `funcoff`s.
    functab: usize,
}

impl<'a> Pclntab<'a> {
    /// Reads and checks the header; `None` unless everything in it is plausible.
    fn parse(data: &'a [u8]) -> Option<Pclntab<'a>> {
        let magic = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
        let (pad, min_lc, ptr_size) = (data.get(4..6)?, *data.get(6)?, usize::from(*data.get(7)?));
        if pad != [0, 0] || !matches!(min_lc, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
            return None;
        }
        let field =
            |i: usize| word(data, 8 + i * ptr_size, ptr_size).and_then(|w| usize::try_from(w).ok());
        let (text_start, offsets) = match magic {
            PCLNTAB_GO118 | PCLNTAB_GO120 => (field(2)? as u64, 3),
            PCLNTAB_GO116 => (0, 2),
            _ => return None,
        };
        let nfunc = field(0)?;
        let [funcnames, cu, filetab, pctab, functab] = [0, 1, 2, 3, 4].map(|i| field(offsets + i));
        let (funcnames, functab) = (funcnames?, functab?);
        let ordered = [Some(8), Some(funcnames), cu, filetab, pctab, Some(functab)]
            .windows(2)
            .all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if a <= b));
        let table = Pclntab {
            data,
            magic,
            ptr_size,
            nfunc,
            text_start,
            funcnames,
            functab,
        };
        let table_end =
            functab.checked_add(nfunc.checked_add(1)?.checked_mul(table.entry_size())?)?;
        (ordered && nfunc > 0 && nfunc < 10_000_000 && table_end <= data.len()).then_some(table)
    }

    /// Bytes per function-table entry: two u32s since Go 1.18, two words before.
    fn entry_size(&self) -> usize {
        if self.magic == PCLNTAB_GO116 {
            2 * self.ptr_size
        } else {
            8
        }
    }

    /// Entry address and `_func` offset of function-table entry `i` (`i == nfunc` gives the
    /// end of the last function).
    fn entry(&self, i: usize, text_start: u64) -> Option<(u64, usize)> {
        let at = self.functab + i * self.entry_size();
        if self.magic == PCLNTAB_GO116 {
            let entry = word(self.data, at, self.ptr_size)?;
            let func = word(self.data, at + self.ptr_size, self.ptr_size)?;
            Some((entry, usize::try_from(func).ok()?))
        } else {
            let entry = text_start.checked_add(word(self.data, at, 4)?)?;
            Some((entry, usize::try_from(word(self.data, at + 4, 4)?).ok()?))
        }
    }

    fn name(&self, func: usize) -> Option<&'a [u8]> {
        // `_func`: the entry (a u32 offset since 1.18, an address before), then nameoff (i32).
        let name_field = if self.magic == PCLNTAB_GO116 {
            self.ptr_size
        } else {
            4
        };
        let at = self.functab.checked_add(func)?.checked_add(name_field)?;
        let nameoff = i32::from_le_bytes(self.data.get(at..at.checked_add(4)?)?.try_into().ok()?);
        let start = self.funcnames.checked_add(usize::try_from(nameoff).ok()?)?;
        let rest = self.data.get(start..)?;
        let rest = &rest[..rest.len().min(MAX_NAME_BYTES)];
        Some(&rest[..memchr::memchr(0, rest)?])
    }

    /// `[start, end)` of each of `names`. `text` (the `.text` address) stands in for a zero
    /// `textStart`. `None` if the table cannot be walked.
    fn find<const N: usize>(
        &self,
        names: &[&str; N],
        text: Option<u64>,
        deadline: &Deadline,
    ) -> Option<[Option<(u64, u64)>; N]> {
        let text_start = match (self.magic, self.text_start) {
            (PCLNTAB_GO116, _) => 0,
            (_, 0) => text?,
            (_, start) => start,
        };
        let mut found = [None; N];
        let mut current = self.entry(0, text_start)?;
        for i in 0..self.nfunc {
            if deadline.passed() {
                return None;
            }
            let next = self.entry(i + 1, text_start)?;
            let name = self.name(current.1)?;
            if let Some(slot) = names.iter().position(|n| n.as_bytes() == name) {
                found[slot] = Some((current.0, next.0));
            }
            current = next;
        }
        Some(found)
    }
}

/// `.gopclntab` found by its magic (binaries without section headers): the first candidate
/// whose whole header is plausible and whose first function has a name.
fn find_pclntab<'a>(bytes: &'a [u8], deadline: &Deadline) -> Option<Pclntab<'a>> {
    let magics = [PCLNTAB_GO120, PCLNTAB_GO118, PCLNTAB_GO116].map(u32::to_le_bytes);
    magics
        .iter()
        .flat_map(|magic| memmem::find_iter(bytes, magic).filter(|at| at % 8 == 0))
        .take_while(|_| deadline.left())
        .filter_map(|at| Pclntab::parse(&bytes[at..]))
        .find(|table| {
            table
                .entry(0, table.text_start)
                .and_then(|(_, func)| table.name(func))
                .is_some_and(|name| !name.is_empty() && name.is_ascii())
        })
}

/// Go's tables written by hand, as the linker lays them out: what the tests read, and where
/// the fuzzer starts (`fuzz/fuzz_targets/go.rs`).
pub mod example {
    /// A Go 1.18+ function table: header, names, function table, `_func`s. `functions` are
    /// names with their entries' offsets from `text_start`, in order; `end` ends the last.
    pub fn pclntab(magic: u32, text_start: u64, functions: &[(&str, u32)], end: u32) -> Vec<u8> {
        let mut names = Vec::new();
        let mut name_offsets = Vec::new();
        for (name, _) in functions {
            name_offsets.push(names.len() as i32);
            names.extend(name.as_bytes());
            names.push(0);
        }
        let header_len = 8 + 8 * 8;
        let funcnames = header_len;
        let functab = funcnames + names.len();
        let mut data = Vec::new();
        data.extend(magic.to_le_bytes());
        data.extend([0, 0, 1, 8]);
        for value in [
            functions.len() as u64,
            0,
            text_start,
            funcnames as u64,
            functab as u64,
            functab as u64,
            functab as u64,
            functab as u64,
        ] {
            data.extend(value.to_le_bytes());
        }
        data.extend(names);
        // (entryoff, funcoff) for each function, then the end; the `_func`s follow.
        let funcs_at = (functions.len() as u32 + 1) * 8;
        for (i, (_, entry)) in functions.iter().enumerate() {
            data.extend(entry.to_le_bytes());
            data.extend((funcs_at + i as u32 * 8).to_le_bytes());
        }
        data.extend(end.to_le_bytes());
        data.extend(0u32.to_le_bytes());
        for ((_, entry), name) in functions.iter().zip(name_offsets) {
            data.extend(entry.to_le_bytes());
            data.extend(name.to_le_bytes());
        }
        data
    }

    /// Go 1.18+ build info with `version` inline.
    pub fn buildinfo(version: &str) -> Vec<u8> {
        let mut data = super::BUILDINFO_MAGIC.to_vec();
        data.extend([8, 2]); // pointer size, inline strings
        data.resize(32, 0);
        data.push(version.len() as u8);
        data.extend(version.as_bytes());
        data.push(0); // no module info
        data
    }
}

#[cfg(test)]
mod tests;
