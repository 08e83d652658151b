//! Finding TLS functions in ELF files: which of them a file defines, and at what file offset
//! a uprobe must be placed.
use std::{fs::File, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol, read::ReadCache};

pub use super::tls_functions::{
    AttachPoint, BORINGSSL_READ, BORINGSSL_WRITE, TLS_FUNCTIONS, TlsFunction,
};
use super::{
    TlsLibrary,
    probe_sites::{self, Located, SiteChoice},
};

/// File offsets at which to probe the `functions` that `path` defines (dynamic or static symbol
/// table), moved to cheaper sites where [`probe_sites`] finds them. Empty when the file is not
/// ELF or defines none of them.
pub fn find_functions(
    path: &Path,
    functions: &'static [TlsFunction],
) -> std::io::Result<Vec<(TlsFunction, u64)>> {
    let file = File::open(path)?;
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Ok(Vec::new());
    };
    let (mut found, rustls_0_23) = locate_with_rustls_version(&elf, functions);
    if !rustls_0_23
        && found
            .iter()
            .any(|l| l.function.library == TlsLibrary::Rustls)
    {
        log::info!(
            "{}: its rustls predates the OutboundChunks layout the probes read (0.23); not attached",
            path.display()
        );
        found.retain(|l| l.function.library != TlsLibrary::Rustls);
    }
    for (site, choice) in probe_sites::prefer_emulated_sites(&elf, &mut found) {
        match choice {
            SiteChoice::Internal {
                address,
                first_instruction,
            } => log::info!(
                "{}: probing {site} at 0x{address:x} (starts with {first_instruction}, emulated by the kernel)",
                path.display()
            ),
            SiteChoice::Exported { reason } => log::info!(
                "{}: probing the exported entries instead of {site}: {reason}",
                path.display()
            ),
        }
    }
    Ok(found
        .into_iter()
        .filter_map(|l| Some((l.function, file_offset(&elf, l.address)?)))
        .collect())
}

/// The `functions` that `elf` defines, by virtual address.
#[cfg(test)]
pub(super) fn locate<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    functions: &'static [TlsFunction],
) -> Vec<Located> {
    locate_with_rustls_version(elf, functions).0
}

/// [`locate`], and whether the file's rustls is 0.23 or later.
fn locate_with_rustls_version<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    functions: &'static [TlsFunction],
) -> (Vec<Located>, bool) {
    let mut found: Vec<Located> = Vec::new();
    let mut rustls_0_23 = false;
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
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
        if found
            .iter()
            .any(|l| l.function.symbol == function.symbol && l.address == symbol.address())
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
        let start = segment.address();
        (address >= start && address < start + size).then(|| address - start + offset)
    })
}
