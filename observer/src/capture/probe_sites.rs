//! Where a uprobe costs least.
//!
//! The kernel handles a probed instruction in one of two ways: it emulates it (push, nop,
//! jmp/call/jcc: ~0.7 µs per hit on these machines) or it single-steps it out of line, which
//! traps twice (~10 µs in a VM). OpenSSL 3's exported `SSL_read`/`SSL_write` and their `_ex`
//! forms begin with `sub $N,%rsp` (single-stepped) and only forward to internal functions,
//! `ssl_read_internal`/`ssl_write_internal`, which begin with `push` (emulated) and take exactly
//! the `_ex` arguments: (SSL*, buffer, length, size_t *count), returning > 0 with the count set.
//!
//! The internal functions have no symbols, so they are found per library build: the call that
//! both the plain and the `_ex` export make to one common function, which the `_ex` form reaches
//! with its four arguments untouched. Anything else (a different layout, a library whose exports
//! call each other, a first instruction the kernel would single-step) keeps the exported entries.
//!
//! Probing the internal function also sees reads and writes made through OpenSSL's SSL BIO
//! (`BIO_f_ssl`), which call it directly; `SSL_peek` has its own internal function and stays
//! invisible, as it was at the exported entries.
use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Register,
};
use object::{Object, ObjectSection, ReadRef};

use super::{TlsLibrary, tls_functions::TlsFunction};

/// A function found in an ELF file: what it is, its virtual address and its size (0: unknown).
#[derive(Clone, Copy, Debug)]
pub struct Located {
    pub function: TlsFunction,
    pub address: u64,
    pub size: u64,
}

/// An exported pair that forwards to one internal function, and what to attach there.
struct ForwardingPair {
    plain: &'static str,
    ex: &'static str,
    internal: TlsFunction,
}

const FORWARDING_PAIRS: &[ForwardingPair] = &[
    ForwardingPair {
        plain: "SSL_read",
        ex: "SSL_read_ex",
        internal: TlsFunction {
            library: TlsLibrary::OpenSsl,
            symbol: "ssl_read_internal",
            entry_program: "ssl_read_ex",
            return_program: Some("ssl_return"),
            moves_data: true,
        },
    },
    ForwardingPair {
        plain: "SSL_write",
        ex: "SSL_write_ex",
        internal: TlsFunction {
            library: TlsLibrary::OpenSsl,
            symbol: "ssl_write_internal",
            entry_program: "ssl_write_ex",
            return_program: Some("ssl_return"),
            moves_data: true,
        },
    },
];

/// How far into an exported function to look for its call (they are a few dozen bytes).
const SCAN_LIMIT: u64 = 256;

/// How a pair of exported functions is probed in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteChoice {
    /// At the common internal function, at this address (past an `endbr64` if there is one).
    Internal {
        address: u64,
        first_instruction: String,
    },
    /// At the exported entries, for this reason.
    Exported { reason: String },
}

/// Replaces each exported read/write pair in `found` by its internal function when that is
/// safe and cheaper; returns what was decided for each pair present.
pub fn prefer_emulated_sites<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    found: &mut Vec<Located>,
) -> Vec<(&'static str, SiteChoice)> {
    let mut decisions = Vec::new();
    for pair in FORWARDING_PAIRS {
        let by_name = |name: &str| found.iter().find(|l| l.function.symbol == name).copied();
        let (Some(plain), Some(ex)) = (by_name(pair.plain), by_name(pair.ex)) else {
            continue;
        };
        let choice = match internal_site(elf, &plain, &ex) {
            Ok((address, first_instruction)) => {
                found.retain(|l| l.function.symbol != pair.plain && l.function.symbol != pair.ex);
                found.push(Located {
                    function: pair.internal,
                    address,
                    size: 0,
                });
                SiteChoice::Internal {
                    address,
                    first_instruction,
                }
            }
            Err(reason) => SiteChoice::Exported { reason },
        };
        decisions.push((pair.internal.symbol, choice));
    }
    decisions
}

/// The internal function both exports call, if the `_ex` form hands it its own arguments and
/// the kernel emulates its first instruction.
fn internal_site<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    plain: &Located,
    ex: &Located,
) -> Result<(u64, String), String> {
    let ex_code = code_at(elf, ex)?;
    let target = forwarded_call(&ex_code, ex)?;
    let plain_code = code_at(elf, plain)?;
    if !direct_branch_targets(&plain_code, plain.address).contains(&target) {
        return Err(format!(
            "{} does not call the function {} forwards to (0x{target:x})",
            plain.function.symbol, ex.function.symbol
        ));
    }
    if !same_section(elf, target, ex.address) {
        return Err(format!(
            "0x{target:x} is not in the exports' section (an import stub?)"
        ));
    }
    let head = code_at(
        elf,
        &Located {
            size: 32,
            address: target,
            ..*ex
        },
    )?;
    emulated_entry(&head, target)
}

/// The target of the `_ex` export's first direct call or tail jump, provided every instruction
/// before it leaves the four argument registers alone.
fn forwarded_call(code: &[u8], at: &Located) -> Result<u64, String> {
    let argument_registers = [Register::RDI, Register::RSI, Register::RDX, Register::RCX];
    let mut decoder = Decoder::with_ip(64, code, at.address, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    for instruction in &mut decoder {
        if instruction.is_invalid() {
            break;
        }
        match instruction.flow_control() {
            FlowControl::Call | FlowControl::UnconditionalBranch
                if instruction.is_call_near() || instruction.is_jmp_short_or_near() =>
            {
                return Ok(instruction.near_branch_target());
            }
            FlowControl::Next => {}
            _ => break,
        }
        let writes_argument = info.info(&instruction).used_registers().iter().any(|used| {
            argument_registers.contains(&used.register().full_register())
                && used.access() != iced_x86::OpAccess::Read
        });
        if writes_argument {
            return Err(format!(
                "{} changes its arguments before calling on (at 0x{:x})",
                at.function.symbol,
                instruction.ip()
            ));
        }
    }
    Err(format!(
        "{} makes no direct call before branching",
        at.function.symbol
    ))
}

/// Targets of every direct call and jump in `code`.
fn direct_branch_targets(code: &[u8], address: u64) -> Vec<u64> {
    Decoder::with_ip(64, code, address, DecoderOptions::NONE)
        .into_iter()
        .take_while(|i| !i.is_invalid())
        .filter(|i| i.is_call_near() || i.is_jmp_short_or_near())
        .map(|i| i.near_branch_target())
        .collect()
}

/// Where to probe a function starting at `address`: its first instruction, or the one after an
/// `endbr64` (which changes no state), if the kernel emulates it.
fn emulated_entry(code: &[u8], address: u64) -> Result<(u64, String), String> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut first = decoder.decode();
    if first.code() == Code::Endbr64 {
        first = decoder.decode();
    }
    let bytes = instruction_bytes(code, address, &first);
    let name = format!("{:?}", first.code());
    if kernel_emulates(first.code(), bytes) {
        Ok((first.ip(), name))
    } else {
        Err(format!(
            "the function at 0x{address:x} starts with {name}, which the kernel single-steps"
        ))
    }
}

/// Instructions looked at from a function's entry for a cheaper probe site.
const STRAIGHT_LINE_LIMIT: usize = 6;

/// Where to probe the function at `address` so the kernel emulates the probed instruction: the
/// first emulated instruction reached from the entry through instructions that neither branch,
/// move the stack pointer, nor write one of `arguments` (so the probe sees the registers and
/// the return address as they were at entry, on every call). The entry itself when there is
/// none; the second value says what was found, for the log.
pub fn straight_line_site(code: &[u8], address: u64, arguments: &[Register]) -> (u64, String) {
    let mut info = InstructionInfoFactory::new();
    let decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    for instruction in decoder.into_iter().take(STRAIGHT_LINE_LIMIT) {
        if instruction.is_invalid() {
            break;
        }
        let bytes = instruction_bytes(code, address, &instruction);
        if kernel_emulates(instruction.code(), bytes) {
            return (instruction.ip(), format!("{:?}", instruction.code()));
        }
        if instruction.code() == Code::Endbr64 {
            continue;
        }
        let writes_state = info.info(&instruction).used_registers().iter().any(|used| {
            let register = used.register().full_register();
            used.access() != iced_x86::OpAccess::Read
                && (register == Register::RSP || arguments.contains(&register))
        });
        if instruction.flow_control() != FlowControl::Next || writes_state {
            break;
        }
    }
    (address, "its entry (single-stepped)".into())
}

/// The bytes of `instruction`, decoded from `code` at `address`.
fn instruction_bytes<'a>(code: &'a [u8], address: u64, instruction: &Instruction) -> &'a [u8] {
    let offset = instruction.ip().wrapping_sub(address) as usize;
    offset
        .checked_add(instruction.len())
        .and_then(|end| code.get(offset..end))
        .unwrap_or_default()
}

/// Instructions x86 uprobes emulate instead of single-stepping: push of a 64-bit register
/// (optionally with REX.B only), nops, and relative jumps and calls.
fn kernel_emulates(code: Code, bytes: &[u8]) -> bool {
    match code {
        Code::Push_r64 => matches!(bytes, [0x50..=0x57] | [0x41, 0x50..=0x57]),
        Code::Nopd | Code::Nopq | Code::Nopw | Code::Nop_rm16 | Code::Nop_rm32 | Code::Nop_rm64 => {
            true
        }
        Code::Jmp_rel8_64 | Code::Jmp_rel32_64 | Code::Call_rel32_64 => true,
        other => other.is_jcc_short_or_near(),
    }
}

fn same_section<'data, R: ReadRef<'data>>(elf: &object::File<'data, R>, a: u64, b: u64) -> bool {
    elf.sections().any(|section| {
        let within = |address: u64| address.wrapping_sub(section.address()) < section.size();
        within(a) && within(b)
    })
}

/// The bytes of `at` (or its first `SCAN_LIMIT` bytes), read from the section holding it.
fn code_at<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    at: &Located,
) -> Result<Vec<u8>, String> {
    let length = if at.size == 0 {
        SCAN_LIMIT
    } else {
        at.size.min(SCAN_LIMIT)
    };
    for section in elf.sections() {
        let Some(into) = at
            .address
            .checked_sub(section.address())
            .filter(|&into| into < section.size())
        else {
            continue;
        };
        let length = length.min(section.size() - into);
        return match section.data_range(at.address, length) {
            Ok(Some(bytes)) => Ok(bytes.to_vec()),
            _ => Err(format!(
                "the code of {} could not be read",
                at.function.symbol
            )),
        };
    }
    Err(format!("{} lies in no section", at.function.symbol))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: u64 = 0x1000;

    fn located(symbol: &'static str, size: u64) -> Located {
        Located {
            function: TlsFunction {
                library: TlsLibrary::OpenSsl,
                symbol,
                entry_program: "ssl_read_ex",
                return_program: Some("ssl_return"),
                moves_data: true,
            },
            address: AT,
            size,
        }
    }

    #[test]
    fn pushes_nops_and_branches_are_emulated_and_stack_adjustments_are_not() {
        let push_r13 = [0x41, 0x55];
        let push_rbp = [0x55];
        let nop5 = [0x0f, 0x1f, 0x44, 0x00, 0x00];
        let jmp = [0xeb, 0x00];
        let sub_rsp = [0x48, 0x83, 0xec, 0x18];
        let endbr_push = [0xf3, 0x0f, 0x1e, 0xfa, 0x55];
        let endbr_sub = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18];
        assert_eq!(emulated_entry(&push_r13, AT).map(|s| s.0), Ok(AT));
        assert_eq!(emulated_entry(&push_rbp, AT).map(|s| s.0), Ok(AT));
        assert_eq!(emulated_entry(&nop5, AT).map(|s| s.0), Ok(AT));
        assert_eq!(emulated_entry(&jmp, AT).map(|s| s.0), Ok(AT));
        assert_eq!(emulated_entry(&endbr_push, AT).map(|s| s.0), Ok(AT + 4));
        assert!(emulated_entry(&sub_rsp, AT).is_err());
        assert!(emulated_entry(&endbr_sub, AT).is_err());
    }

    #[test]
    fn a_forwarding_export_leads_to_its_callee() {
        // sub $8,%rsp; call +0x100; add $8,%rsp; ret  (OpenSSL 3's SSL_read_ex)
        let code = [
            0x48, 0x83, 0xec, 0x08, 0xe8, 0xf7, 0x00, 0x00, 0x00, 0x48, 0x83, 0xc4, 0x08, 0xc3,
        ];
        assert_eq!(
            forwarded_call(&code, &located("SSL_read_ex", 14)),
            Ok(AT + 0x100)
        );
    }

    #[test]
    fn an_export_that_changes_its_arguments_first_is_not_followed() {
        // sub $8,%rsp; movslq %edx,%rdx; call +0x100
        let code = [
            0x48, 0x83, 0xec, 0x08, 0x48, 0x63, 0xd2, 0xe8, 0xf4, 0x00, 0x00, 0x00,
        ];
        assert!(forwarded_call(&code, &located("SSL_read_ex", 12)).is_err());
    }

    /// The library this machine's programs load: its internal functions must be found, and
    /// must be the functions both exports call.
    #[test]
    fn system_libssl_probes_its_internal_functions() {
        let path = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let Ok(data) = std::fs::read(path) else {
            eprintln!("skipped: {} is not installed", path.display());
            return;
        };
        let elf = object::File::parse(&*data).expect("libssl.so.3 parses");
        let mut found = super::super::elf::locate(&elf, super::super::elf::TLS_FUNCTIONS);
        let decisions = prefer_emulated_sites(&elf, &mut found);
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        for (name, choice) in &decisions {
            assert!(
                matches!(choice, SiteChoice::Internal { .. }),
                "{name}: {choice:?}"
            );
        }
        let symbols: Vec<_> = found.iter().map(|l| l.function.symbol).collect();
        for exported in ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"] {
            assert!(!symbols.contains(&exported), "{symbols:?}");
        }
        assert!(symbols.contains(&"ssl_read_internal") && symbols.contains(&"ssl_write_internal"));
    }
}
