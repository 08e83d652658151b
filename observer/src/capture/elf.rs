//! Finding TLS functions in ELF files: which of them a file defines, and at what file offset
//! a uprobe must be placed.
use std::path::Path;

use object::{Object, ObjectSegment, ObjectSymbol};

pub use super::tls_functions::{
    AttachPoint, BORINGSSL_READ, BORINGSSL_WRITE, TLS_FUNCTIONS, TlsFunction,
};
use super::{
    TlsLibrary,
    probe_sites::{self, Located, SiteChoice},
    untrusted::{Deadline, Elf},
};

/// File offsets at which to probe the `functions` that `elf` defines (dynamic or static symbol
/// table), moved to cheaper sites where [`probe_sites`] finds them. `shown` names the file in
/// the log.
pub fn find_functions(
    elf: &Elf,
    functions: &'static [TlsFunction],
    deadline: &Deadline,
    shown: &Path,
) -> Vec<(TlsFunction, u64)> {
    let (mut found, rustls_0_23) = locate_with_rustls_version(elf, functions, deadline);
    if !rustls_0_23
        && found
            .iter()
            .any(|l| l.function.library == TlsLibrary::Rustls)
    {
        log::info!(
            "{}: its rustls predates the OutboundChunks layout the probes read (0.23); not attached",
            shown.display()
        );
        found.retain(|l| l.function.library != TlsLibrary::Rustls);
    }
    for (site, choice) in probe_sites::prefer_emulated_sites(elf, &mut found) {
        match choice {
            SiteChoice::Internal {
                address,
                first_instruction,
            } => log::info!(
                "{}: probing {site} at 0x{address:x} (starts with {first_instruction}, emulated by the kernel)",
                shown.display()
            ),
            SiteChoice::Exported { reason } => log::info!(
                "{}: probing the exported entries instead of {site}: {reason}",
                shown.display()
            ),
        }
    }
    found
        .into_iter()
        .filter_map(|l| Some((l.function, file_offset(elf, l.address)?)))
        .collect()
}

/// The `functions` that `elf` defines, by virtual address.
#[cfg(test)]
pub(super) fn locate<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    functions: &'static [TlsFunction],
) -> Vec<Located> {
    let deadline = Deadline::after(super::untrusted::ANALYSIS_TIME_BOUND);
    locate_with_rustls_version(elf, functions, &deadline).0
}

/// Copies of one function attached at most (two rustls versions, drop glue instantiated per
/// crate: a handful in real programs); a file claiming more is not believed past this.
const MAX_COPIES: usize = 16;

/// [`locate`], and whether the file's rustls is 0.23 or later.
fn locate_with_rustls_version<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    functions: &'static [TlsFunction],
    deadline: &Deadline,
) -> (Vec<Located>, bool) {
    let mut found: Vec<Located> = Vec::new();
    let mut rustls_0_23 = false;
    for symbol in elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .take_while(|_| deadline.left())
    {
        if !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let name = plain_name(name);
        rustls_0_23 |= name.starts_with(RUSTLS_OUTBOUND_CHUNKS);
        let Some(function) = functions.iter().find(|f| f.symbol == name) else {
            continue;
        };
        // A symbol can be in both tables; a Rust function can have several copies (two rustls
        // versions, or drop glue instantiated per crate): each address is attached once.
        let copies = found
            .iter()
            .filter(|l| l.function.symbol == function.symbol);
        if copies.clone().count() >= MAX_COPIES
            || copies.clone().any(|l| l.address == symbol.address())
        {
            continue;
        }
        found.push(Located {
            function: *function,
            address: symbol.address(),
            size: symbol.size(),
        });
    }
    (found, rustls_0_23)
}

/// rustls 0.23 and later hand `buffer_plaintext` an `OutboundChunks`; earlier versions a plain
/// slice, which the probes would misread. Its methods' symbols tell the versions apart.
const RUSTLS_OUTBOUND_CHUNKS: &str = "rustls::msgs::message::outbound::OutboundChunks::";

/// The name a symbol is matched by: versioned names (`SSL_read@@OPENSSL_3.0.0`) by their plain
/// name, mangled Rust names of rustls by their demangled path without the hash.
fn plain_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains("rustls") && (name.starts_with("_ZN") || name.starts_with("_R")) {
        return format!("{:#}", rustc_demangle::demangle(name)).into();
    }
    name.split('@').next().unwrap_or(name).into()
}

/// "SSL_read at file offset 0x…, …"; a function with several copies is counted, not listed.
pub fn describe_offsets(functions: &[(TlsFunction, u64)]) -> String {
    let mut seen: Vec<(&str, Vec<u64>)> = Vec::new();
    for (function, offset) in functions {
        match seen
            .iter_mut()
            .find(|(symbol, _)| *symbol == function.symbol)
        {
            Some((_, offsets)) => offsets.push(*offset),
            None => seen.push((function.symbol, vec![*offset])),
        }
    }
    seen.iter()
        .map(|(symbol, offsets)| match offsets.as_slice() {
            [one] => format!("{symbol} at file offset {one:#x}"),
            many => format!("{symbol} ({} copies)", many.len()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where virtual address `address` lives in the file, through the loadable segments.
pub fn file_offset<'a, R: object::ReadRef<'a>>(
    elf: &object::File<'a, R>,
    address: u64,
) -> Option<u64> {
    elf.segments().find_map(|segment| {
        let (offset, size) = segment.file_range();
        let into = address
            .checked_sub(segment.address())
            .filter(|&into| into < size)?;
        // Its header may claim more than the file holds.
        segment.data().ok()?;
        offset.checked_add(into)
    })
}

/// Every `lea r64, [rip + disp32]` in `code` (loaded at `base`), in order: the instruction's
/// address and the address it loads. How both locators of stripped code find what refers to a
/// string or a panic location.
pub fn rip_relative_leas(code: &[u8], base: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    memchr::memchr_iter(0x8d, code).filter_map(move |at| {
        let rex = *code.get(at.checked_sub(1)?)?;
        let modrm = *code.get(at + 1)?;
        let disp: [u8; 4] = code.get(at + 2..at + 6)?.try_into().ok()?;
        if rex & 0xfb != 0x48 || modrm & 0xc7 != 0x05 {
            return None;
        }
        let next = base.wrapping_add(at as u64 + 6);
        Some((
            base.wrapping_add(at as u64 - 1),
            next.wrapping_add_signed(i32::from_le_bytes(disp).into()),
        ))
    })
}
