//! Finding `SSL_read` and `SSL_write` in executables that embed BoringSSL without symbols:
//! Bun, and programs compiled with `bun build --compile` (the Claude Code CLI).
//!
//! A per-build offset table breaks with every release, so the functions are recognised by what
//! survives recompilation: BoringSSL reports errors with `OPENSSL_PUT_ERROR`, which passes the
//! source file name (`.../ssl/ssl_lib.cc`) and a reason code as immediates. Within ssl_lib.cc:
//! - `SSL_write` raises SHOULD_NOT_HAVE_BEEN_CALLED (QUIC session), UNINITIALIZED,
//!   SSL_HANDSHAKE_FAILURE and BAD_LENGTH;
//! - `ssl_read_impl` raises UNINITIALIZED and SSL_HANDSHAKE_FAILURE but neither of the others;
//! - `SSL_read` (with `SSL_peek` inlined, or calling it) raises SHOULD_NOT_HAVE_BEEN_CALLED and
//!   reaches `ssl_read_impl`; unlike `SSL_peek` it stores to the session (it consumes the data).
//!
//! Each candidate must be the only one of its kind, and two independent facts must agree before
//! anything is attached: both functions test the same session field (`ssl->quic_method`) before
//! the QUIC error, and `SSL_write` and `ssl_read_impl` begin with the same error-state reset
//! (their first direct call has one target). Anything else is refused: a uprobe at a wrong
//! address corrupts the running process.
//!
//! Function bounds come from direct call targets (16-byte aligned) and a recursive descent of
//! each candidate's code: Bun ships no `.eh_frame` to read them from. x86-64 only.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess,
    OpKind, Register,
};
use object::{Object, ObjectSection, SectionKind};

use super::{
    elf::{self, file_offset},
    untrusted::{Deadline, Elf},
};

/// BoringSSL's source file for the SSL API, as `OPENSSL_PUT_ERROR` embeds it (`__FILE__`).
const MARKER: &[u8] = b"/ssl/ssl_lib.cc\0";
/// `ERR_LIB_SSL`: the library argument of every error raised in ssl_lib.cc.
const ERR_LIB_SSL: u64 = 16;

mod reason {
    pub const SHOULD_NOT_HAVE_BEEN_CALLED: u64 = 66;
    pub const BAD_LENGTH: u64 = 111;
    pub const SSL_HANDSHAKE_FAILURE: u64 = 215;
    pub const UNINITIALIZED: u64 = 226;
}

/// How far before an error site a function may start, and how much code one may span.
const MAX_FUNCTION_SPAN: u64 = 0x4000;
/// Instructions decoded per function before giving up on it.
const MAX_INSTRUCTIONS: usize = 4000;
/// Error sites naming ssl_lib.cc looked at, at most (BoringSSL has about a hundred); each holds
/// its function's decoded code while the functions are compared.
const MAX_ERROR_SITES: usize = 512;

/// The result for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No BoringSSL SSL code in the file (or not x86-64 ELF).
    Absent,
    /// Both functions found and cross-checked; file offsets for the uprobes.
    Located {
        read_offset: u64,
        write_offset: u64,
        /// What was found and how it was checked, for the log.
        evidence: String,
    },
    /// BoringSSL is there but the functions could not be told apart with certainty.
    Refused(String),
}

/// Looks for BoringSSL's `SSL_read`/`SSL_write` in `elf`.
pub fn locate(elf: &Elf, deadline: &Deadline) -> Verdict {
    if elf.architecture() != object::Architecture::X86_64 {
        return Verdict::Absent;
    }
    let Some(marker) = marker_address(elf) else {
        return Verdict::Absent;
    };
    let Some(text) = elf.section_by_name(".text") else {
        return Verdict::Refused("no .text section".into());
    };
    let Ok(code) = text.data() else {
        return Verdict::Refused(".text could not be read".into());
    };
    match identify(code, text.address(), marker, deadline) {
        Ok(None) => Verdict::Absent,
        Ok(Some(found)) => {
            let (Some(read_offset), Some(write_offset)) =
                (file_offset(elf, found.read), file_offset(elf, found.write))
            else {
                return Verdict::Refused("functions outside the file's segments".into());
            };
            Verdict::Located {
                read_offset,
                write_offset,
                evidence: found.evidence,
            }
        }
        Err(why) => Verdict::Refused(why),
    }
}

/// Virtual address of the ssl_lib.cc file-name string, if the file has one.
fn marker_address(elf: &Elf) -> Option<u64> {
    elf.sections()
        .filter(|s| {
            matches!(
                s.kind(),
                SectionKind::ReadOnlyData | SectionKind::ReadOnlyString
            )
        })
        .find_map(|section| {
            let bytes = section.data().ok()?;
            let end = memchr::memmem::find(bytes, MARKER)?;
            let start = bytes[..end]
                .iter()
                .rposition(|&b| b == 0)
                .map_or(0, |p| p + 1);
            section.address().checked_add(start as u64)
        })
}

/// Machine code and the address of its first byte.
struct Code_<'a> {
    bytes: &'a [u8],
    base: u64,
}

impl Code_<'_> {
    fn contains(&self, address: u64) -> bool {
        address.wrapping_sub(self.base) < self.bytes.len() as u64
    }

    /// The address of byte `at` (addresses wrap, as a hostile base may make them).
    fn address(&self, at: usize) -> u64 {
        self.base.wrapping_add(at as u64)
    }

    fn decoder_at(&self, address: u64) -> Option<Decoder<'_>> {
        let offset = usize::try_from(address.checked_sub(self.base)?).ok()?;
        let bytes = self.bytes.get(offset..)?;
        let end = bytes.len().min(MAX_FUNCTION_SPAN as usize * 2);
        Some(Decoder::with_ip(
            64,
            &bytes[..end],
            address,
            DecoderOptions::NONE,
        ))
    }

    /// Instructions that load `target`'s address: `mov r32, imm32` (non-PIE) or
    /// `lea r64, [rip+disp32]` (PIE), sorted; `None` past [`MAX_ERROR_SITES`].
    fn references_to(&self, target: u64) -> Option<Vec<u64>> {
        let mut sites = Vec::new();
        let mut add = |site: u64| {
            sites.push(site);
            sites.len() <= MAX_ERROR_SITES
        };
        if let Ok(imm) = u32::try_from(target) {
            for at in memchr::memmem::find_iter(self.bytes, &imm.to_le_bytes()) {
                if at >= 1
                    && (0xb8..=0xbf).contains(&self.bytes[at - 1])
                    && !add(
                        self.address(at - 1 - usize::from(at >= 2 && self.bytes[at - 2] == 0x41))
                    )
                {
                    return None;
                }
            }
        }
        for (site, loaded) in elf::rip_relative_leas(self.bytes, self.base) {
            if loaded == target && !add(site) {
                return None;
            }
        }
        sites.sort_unstable();
        Some(sites)
    }

    /// Targets of direct calls that look like function entries (16-byte aligned) and may own
    /// one of `sites` (at most [`MAX_FUNCTION_SPAN`] before it), sorted.
    fn call_targets(&self, sites: &[u64]) -> Vec<u64> {
        let may_own_a_site = |target: u64| {
            let next_site = sites.partition_point(|&site| site < target);
            sites
                .get(next_site)
                .is_some_and(|&site| site - target <= MAX_FUNCTION_SPAN)
        };
        // A set: however many calls the code holds, the entries kept are bounded by the sites.
        let targets: BTreeSet<u64> = memchr::memchr_iter(0xe8, self.bytes)
            .filter_map(|at| {
                let rel = self.bytes.get(at + 1..at + 5)?;
                let rel = i32::from_le_bytes([rel[0], rel[1], rel[2], rel[3]]);
                let target = self.address(at + 5).wrapping_add_signed(rel.into());
                (target % 16 == 0 && self.contains(target) && may_own_a_site(target))
                    .then_some(target)
            })
            .collect();
        targets.into_iter().collect()
    }
}

/// One function, decoded by following its branches from the entry.
struct Function {
    entry: u64,
    code: BTreeMap<u64, Instruction>,
}

impl Function {
    fn decode(code: &Code_, entry: u64) -> Option<Function> {
        let mut decoded = BTreeMap::new();
        let mut pending = vec![entry];
        let limit = entry.saturating_add(MAX_FUNCTION_SPAN);
        while let Some(start) = pending.pop() {
            let mut decoder = code.decoder_at(start)?;
            while decoder.can_decode() {
                let ip = decoder.ip();
                if decoded.contains_key(&ip) {
                    break;
                }
                let instruction = decoder.decode();
                if instruction.is_invalid() || decoded.len() >= MAX_INSTRUCTIONS {
                    return None;
                }
                decoded.insert(ip, instruction);
                let branch = instruction.near_branch_target();
                let in_function = |t: u64| t >= entry && t < limit;
                match instruction.flow_control() {
                    FlowControl::Next | FlowControl::Call | FlowControl::IndirectCall => {}
                    FlowControl::ConditionalBranch => {
                        if in_function(branch) {
                            pending.push(branch);
                        }
                    }
                    FlowControl::UnconditionalBranch => {
                        if in_function(branch) {
                            pending.push(branch);
                        }
                        break;
                    }
                    _ => break,
                }
            }
        }
        Some(Function {
            entry,
            code: decoded,
        })
    }

    /// The straight-line instructions from `address` on, as decoded.
    fn from(&self, address: u64) -> impl Iterator<Item = &Instruction> {
        let mut next = address;
        std::iter::from_fn(move || {
            let instruction = self.code.get(&next)?;
            next = instruction.next_ip();
            Some(instruction)
        })
    }

    /// Reason codes of the ssl_lib.cc errors this function raises, by site.
    fn errors(&self, sites: &[u64]) -> Vec<(u64, Option<u64>)> {
        sites
            .iter()
            .filter(|s| self.code.contains_key(s))
            .map(|&site| (site, self.reason_at(site)))
            .collect()
    }

    /// `ERR_put_error(lib, [0,] reason, file, line)`: the reason is in the argument register
    /// before the file's, set between the file load and the call.
    fn reason_at(&self, site: u64) -> Option<u64> {
        let file_register = self.code.get(&site)?.op0_register().full_register();
        let reason_register = match file_register {
            Register::RCX => Register::RDX,
            Register::RDX => Register::RSI,
            _ => return None,
        };
        let (mut reason, mut library) = (None, None);
        for instruction in self.from(site).take(8) {
            if instruction.flow_control() != FlowControl::Next {
                break;
            }
            if instruction.code() == Code::Mov_r32_imm32 {
                let value = u64::from(instruction.immediate32());
                match instruction.op0_register().full_register() {
                    r if r == reason_register => reason = Some(value),
                    Register::RDI => library = Some(value),
                    _ => {}
                }
            }
        }
        (library == Some(ERR_LIB_SSL)).then_some(reason).flatten()
    }

    fn direct_calls(&self) -> impl Iterator<Item = u64> + '_ {
        self.code
            .values()
            .filter(|i| i.flow_control() == FlowControl::Call)
            .map(|i| i.near_branch_target())
    }

    /// Displacement of the last `cmp qword [reg+disp], 0` before `site`: the field whose test
    /// leads to the error raised there.
    fn tested_field_before(&self, site: u64) -> Option<i64> {
        self.code
            .range(..site)
            .rev()
            .take(12)
            .map(|(_, i)| i)
            .find(|i| {
                matches!(i.code(), Code::Cmp_rm64_imm8 | Code::Cmp_rm64_imm32)
                    && i.op0_kind() == OpKind::Memory
                    && i.immediate(1) == 0
            })
            .map(|i| i.memory_displacement64() as i64)
    }

    /// Whether the function writes through a pointer that is not the stack (SSL_read consumes
    /// the buffered record; SSL_peek only copies it).
    fn stores_to_heap(&self) -> bool {
        let mut factory = InstructionInfoFactory::new();
        self.code.values().any(|instruction| {
            factory
                .info(instruction)
                .used_memory()
                .iter()
                .any(|memory| {
                    matches!(
                        memory.access(),
                        OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite
                    ) && !matches!(
                        memory.base(),
                        Register::RSP | Register::RBP | Register::RIP | Register::None
                    )
                })
        })
    }
}

/// Where `SSL_read` and `SSL_write` start, and how that was established.
#[derive(Debug)]
pub struct Found {
    pub read: u64,
    pub write: u64,
    pub evidence: String,
}

/// A function with the ssl_lib.cc errors it raises.
struct Profile {
    function: Function,
    /// (site, reason) for every site whose reason could be read.
    errors: Vec<(u64, u64)>,
    unreadable_errors: usize,
}

impl Profile {
    fn raises(&self, reason: u64) -> bool {
        self.errors.iter().any(|(_, r)| *r == reason)
    }

    fn site_of(&self, reason: u64) -> Option<u64> {
        self.errors
            .iter()
            .find(|(_, r)| *r == reason)
            .map(|(site, _)| *site)
    }
}

/// `SSL_read` and `SSL_write` in machine code `code` at address `base`, from its error sites
/// naming the ssl_lib.cc string at `marker`. `Ok(None)`: the code names ssl_lib.cc but raises
/// no SSL error with it (not BoringSSL).
pub fn identify(
    code: &[u8],
    base: u64,
    marker: u64,
    deadline: &Deadline,
) -> Result<Option<Found>, String> {
    let code = &Code_ { bytes: code, base };
    let Some(sites) = code.references_to(marker) else {
        return Err(format!(
            "more than {MAX_ERROR_SITES} instructions load the ssl_lib.cc name"
        ));
    };
    let entries = code.call_targets(&sites);
    // Each error site belongs to the nearest preceding function entry whose code reaches it.
    let mut functions: HashMap<u64, Profile> = HashMap::new();
    for &site in &sites {
        if functions
            .values()
            .any(|p| p.function.code.contains_key(&site))
        {
            continue;
        }
        let first = entries.partition_point(|&e| e < site.saturating_sub(MAX_FUNCTION_SPAN));
        let last = entries.partition_point(|&e| e <= site);
        let owner = entries[first..last]
            .iter()
            .rev()
            .take_while(|_| deadline.left())
            .filter_map(|&entry| Function::decode(code, entry))
            .find(|f| f.code.contains_key(&site));
        if let Some(function) = owner {
            let all = function.errors(&sites);
            let errors = all.iter().filter_map(|(s, r)| Some((*s, (*r)?))).collect();
            let unreadable_errors = all.iter().filter(|(_, r)| r.is_none()).count();
            functions.insert(
                function.entry,
                Profile {
                    function,
                    errors,
                    unreadable_errors,
                },
            );
        }
    }
    if functions.values().all(|p| p.errors.is_empty()) {
        return Ok(None);
    }
    let only = |what: &str, matches: Vec<&Profile>| -> Result<u64, String> {
        match matches.as_slice() {
            [one] if one.unreadable_errors == 0 => Ok(one.function.entry),
            [_] => Err(format!("{what}: an error site's reason could not be read")),
            [] => Err(format!("no function looks like {what}")),
            many => Err(format!("{} functions look like {what}", many.len())),
        }
    };
    use reason::*;
    let write = only(
        "SSL_write",
        functions
            .values()
            .filter(|p| {
                [
                    SHOULD_NOT_HAVE_BEEN_CALLED,
                    UNINITIALIZED,
                    SSL_HANDSHAKE_FAILURE,
                    BAD_LENGTH,
                ]
                .iter()
                .all(|&r| p.raises(r))
            })
            .collect(),
    )?;
    let read_impl = only(
        "ssl_read_impl",
        functions
            .values()
            .filter(|p| {
                p.raises(UNINITIALIZED)
                    && p.raises(SSL_HANDSHAKE_FAILURE)
                    && !p.raises(BAD_LENGTH)
                    && !p.raises(SHOULD_NOT_HAVE_BEEN_CALLED)
            })
            .collect(),
    )?;
    let read = only(
        "SSL_read",
        functions
            .values()
            .filter(|p| {
                p.raises(SHOULD_NOT_HAVE_BEEN_CALLED)
                    && !p.raises(BAD_LENGTH)
                    && p.function.direct_calls().any(|t| t == read_impl)
                    && p.function.stores_to_heap()
            })
            .collect(),
    )?;

    // Cross-check 1: SSL_read and SSL_write test the same session field before the QUIC error.
    let quic_field = |entry: u64| {
        let profile = &functions[&entry];
        profile
            .site_of(SHOULD_NOT_HAVE_BEEN_CALLED)
            .and_then(|site| profile.function.tested_field_before(site))
    };
    let (read_field, write_field) = (quic_field(read), quic_field(write));
    if read_field.is_none() || read_field != write_field {
        return Err(format!(
            "SSL_read and SSL_write do not test the same session field before the QUIC error \
             ({read_field:?} vs {write_field:?})"
        ));
    }
    // Cross-check 2: SSL_write and ssl_read_impl start with the same error-state reset.
    let first_call = |entry: u64| functions[&entry].function.direct_calls().next();
    if first_call(write).is_none() || first_call(write) != first_call(read_impl) {
        return Err(
            "SSL_write and ssl_read_impl do not begin with the same error-state reset".into(),
        );
    }
    Ok(Some(Found {
        read,
        write,
        evidence: format!(
            "OPENSSL_PUT_ERROR reason codes from ssl_lib.cc ({} error sites in {} functions); \
             cross-checked: both test session field +{:#x} before the QUIC error, SSL_write and \
             ssl_read_impl ({read_impl:#x}) share their error-reset call",
            sites.len(),
            functions.len(),
            read_field.unwrap_or_default(),
        ),
    }))
}

/// Machine code shaped like BoringSSL's ssl_lib.cc functions, written by hand with just the
/// instructions the signature looks at: what the tests check the locator against, and where
/// the fuzzer starts (`fuzz/fuzz_targets/boringssl.rs`).
pub mod example {
    use super::reason;

    pub const BASE: u64 = 0x40_0000;
    pub const MARKER_AT: u32 = 0x29_e59d;
    pub const ERR_PUT_ERROR: u64 = BASE;
    pub const RESET_ERRORS: u64 = BASE + 0x10;
    pub const READ_IMPL: u64 = BASE + 0x100;
    pub const READ: u64 = BASE + 0x200;
    pub const WRITE: u64 = BASE + 0x300;

    /// A little x86-64, written by hand: just the instructions the signature looks at.
    #[derive(Default)]
    pub struct Asm(pub Vec<u8>);

    impl Asm {
        pub fn at(&mut self, address: u64) -> &mut Self {
            self.0.resize((address - BASE) as usize, 0xcc);
            self
        }
        pub fn call(&mut self, target: u64) -> &mut Self {
            let next = BASE + self.0.len() as u64 + 5;
            self.0.push(0xe8);
            self.0
                .extend(((target as i64 - next as i64) as i32).to_le_bytes());
            self
        }
        /// `OPENSSL_PUT_ERROR(SSL, reason)`: ERR_put_error(16, 0, reason, file, line).
        pub fn raise(&mut self, reason: u64) -> &mut Self {
            self.0.push(0xb9); // mov ecx, file
            self.0.extend(MARKER_AT.to_le_bytes());
            self.0.extend([0xbf, 0x10, 0, 0, 0, 0x31, 0xf6]); // mov edi, 16; xor esi, esi
            self.0.push(0xba); // mov edx, reason
            self.0.extend((reason as u32).to_le_bytes());
            self.0.extend([0x41, 0xb8, 0x2a, 0, 0, 0]); // mov r8d, 42
            self.call(ERR_PUT_ERROR)
        }
        /// `cmp qword [rdi+field], 0`
        pub fn test_field(&mut self, field: u32) -> &mut Self {
            self.0.extend([0x48, 0x83, 0xbf]);
            self.0.extend(field.to_le_bytes());
            self.0.push(0);
            self
        }
        /// `add [rax+0x80], rbx`: a store through the session.
        pub fn store(&mut self) -> &mut Self {
            self.0.extend([0x48, 0x01, 0x98, 0x80, 0, 0, 0]);
            self
        }
        pub fn ret(&mut self) -> &mut Self {
            self.0.push(0xc3);
            self
        }
    }

    /// ERR_put_error, the error-state reset, ssl_read_impl, SSL_read and SSL_write, and a
    /// caller of the three; `write_field` is the field SSL_write tests before its QUIC error.
    pub fn boringssl_like(write_field: u32) -> Asm {
        use reason::*;
        let mut asm = Asm::default();
        asm.at(ERR_PUT_ERROR).ret();
        asm.at(RESET_ERRORS).ret();
        asm.at(READ_IMPL)
            .call(RESET_ERRORS)
            .raise(UNINITIALIZED)
            .raise(SSL_HANDSHAKE_FAILURE)
            .ret();
        asm.at(READ)
            .test_field(0x98)
            .raise(SHOULD_NOT_HAVE_BEEN_CALLED)
            .call(READ_IMPL)
            .store()
            .ret();
        asm.at(WRITE);
        write_like(&mut asm, write_field);
        asm.at(BASE + 0x400)
            .call(READ_IMPL)
            .call(READ)
            .call(WRITE)
            .ret();
        asm
    }

    /// SSL_write's shape, from the current position.
    pub fn write_like(asm: &mut Asm, field: u32) {
        use reason::*;
        asm.call(RESET_ERRORS)
            .test_field(field)
            .raise(SHOULD_NOT_HAVE_BEEN_CALLED)
            .raise(UNINITIALIZED)
            .raise(SSL_HANDSHAKE_FAILURE)
            .raise(BAD_LENGTH)
            .ret();
    }
}

#[cfg(test)]
mod tests;
