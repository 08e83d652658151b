//! What the locator reads from a file's data: rustls's source paths, the panic `Location`
//! records naming them, and trait-object vtables, with pointers as the program sees them once
//! loaded (relocations applied).
use std::ops::Range;

use object::{
    Object, ObjectSection, RelocationFlags, SectionFlags, SectionKind, elf::R_X86_64_RELATIVE,
};

use super::super::{
    eh_frame::FunctionBounds,
    untrusted::{Deadline, Elf},
};

/// Longest source path a `Location` is believed to name.
const MAX_PATH_BYTES: u64 = 4096;
/// Relocations kept, at most (a large Rust program has a few hundred thousand).
const MAX_RELOCATIONS: usize = 1 << 21;

/// Pointers stored in the file's data, as loaded: a position-independent executable relocated
/// with RELA keeps its pointers in the relocations (the data holds zeros); one relocated with
/// RELR, and a fixed-address one, hold them in place.
pub struct Pointers<'a> {
    elf: &'a Elf<'a>,
    /// `R_X86_64_RELATIVE` relocations: place and value, sorted by place.
    relative: Vec<(u64, u64)>,
}

impl<'a> Pointers<'a> {
    pub fn of(elf: &'a Elf<'a>, deadline: &Deadline) -> Pointers<'a> {
        let mut relative: Vec<(u64, u64)> = elf
            .dynamic_relocations()
            .into_iter()
            .flatten()
            .take_while(|_| deadline.left())
            .filter(|(_, r)| {
                matches!(r.flags(), RelocationFlags::Elf { r_type } if r_type == R_X86_64_RELATIVE)
            })
            .map(|(place, r)| (place, r.addend() as u64))
            .take(MAX_RELOCATIONS)
            .collect();
        relative.sort_unstable();
        Pointers { elf, relative }
    }

    /// The 8 bytes at `address` as the loaded program sees them.
    pub fn read(&self, address: u64) -> Option<u64> {
        if let Ok(found) = self.relative.binary_search_by_key(&address, |&(p, _)| p) {
            return Some(self.relative[found].1);
        }
        self.read_raw(address)
    }

    /// The 8 bytes at `address` in the file.
    pub fn read_raw(&self, address: u64) -> Option<u64> {
        self.elf.sections().find_map(|section| {
            let into = address.checked_sub(section.address())?;
            let bytes = section.data().ok()?;
            let at = usize::try_from(into).ok()?;
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        })
    }

    /// Places holding a pointer into one of `ranges`, with the pointer.
    fn pointing_into(&self, ranges: &[Range<u64>], deadline: &Deadline) -> Vec<(u64, u64)> {
        let wanted = |value: &u64| ranges.iter().any(|r| r.contains(value));
        if !self.relative.is_empty() {
            return self
                .relative
                .iter()
                .copied()
                .filter(|(_, value)| wanted(value))
                .collect();
        }
        let mut found = Vec::new();
        for section in self.elf.sections().filter(holds_pointers) {
            let Ok(bytes) = section.data() else { continue };
            // Pointers are aligned: the section's first aligned word, then every eighth byte.
            let first = section.address().next_multiple_of(8);
            let skip = (first - section.address()) as usize;
            let words = bytes.get(skip..).unwrap_or_default().chunks_exact(8);
            for (index, word) in words.enumerate() {
                if index % 4096 == 0 && deadline.passed() {
                    return found;
                }
                let value = u64::from_le_bytes(word.try_into().unwrap_or_default());
                if wanted(&value) {
                    found.push((first + index as u64 * 8, value));
                }
            }
        }
        found
    }
}

/// Data sections that may hold pointers (not code, not unwind or exception tables).
fn holds_pointers<'a>(section: &impl ObjectSection<'a>) -> bool {
    let writable_or_read_only = matches!(
        section.kind(),
        SectionKind::Data | SectionKind::ReadOnlyData | SectionKind::ReadOnlyDataWithRel
    );
    let named = section
        .name()
        .is_ok_and(|n| !n.starts_with(".eh_frame") && !n.starts_with(".gcc_except_table"));
    let allocated = match section.flags() {
        SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_ALLOC) != 0,
        _ => false,
    };
    writable_or_read_only && named && allocated
}

/// Where the bytes `needle` occur in the file's read-only data, as address ranges.
pub fn strings(elf: &Elf, needle: &[u8]) -> Vec<Range<u64>> {
    elf.sections()
        .filter(|s| {
            matches!(
                s.kind(),
                SectionKind::ReadOnlyData | SectionKind::ReadOnlyString
            )
        })
        .filter_map(|s| Some((s.address(), s.data().ok()?)))
        .flat_map(|(address, bytes)| {
            memchr::memmem::find_iter(bytes, needle)
                .map(move |at| address + at as u64..address + (at + needle.len()) as u64)
        })
        .take(256)
        .collect()
}

/// The rustls versions (`0.MINOR.PATCH`) whose sources the file names, from their panic
/// messages' paths (`…/rustls-0.23.46/src/…`).
pub fn rustls_versions(elf: &Elf) -> Vec<(u32, u32, u32)> {
    let mut versions = Vec::new();
    for section in elf.sections().filter(|s| {
        matches!(
            s.kind(),
            SectionKind::ReadOnlyData | SectionKind::ReadOnlyString
        )
    }) {
        let Ok(bytes) = section.data() else { continue };
        for at in memchr::memmem::find_iter(bytes, b"/rustls-0.").take(4096) {
            let rest = &bytes[at + b"/rustls-0.".len()..];
            let Some(end) = rest.iter().position(|&b| b == b'/') else {
                continue;
            };
            let mut parts = std::str::from_utf8(&rest[..end])
                .ok()
                .into_iter()
                .flat_map(|v| v.split('.'))
                .map(str::parse::<u32>);
            if let (Some(Ok(minor)), Some(Ok(patch)), None, true) = (
                parts.next(),
                parts.next(),
                parts.next(),
                rest[end..].starts_with(b"/src/"),
            ) && !versions.contains(&(0, minor, patch))
            {
                versions.push((0, minor, patch));
            }
        }
    }
    versions.sort_unstable();
    versions
}

/// The panic `Location` records (`{file: &str, line: u32, col: u32}`) that name a file whose
/// path ends at the end of one of `paths` (each a range found by [`strings`]): their
/// addresses, with the index of the path each names.
pub fn locations(
    pointers: &Pointers,
    paths: &[Range<u64>],
    deadline: &Deadline,
) -> Vec<(u64, usize)> {
    let starts: Vec<Range<u64>> = paths
        .iter()
        .map(|p| p.end.saturating_sub(MAX_PATH_BYTES)..p.start + 1)
        .collect();
    pointers
        .pointing_into(&starts, deadline)
        .into_iter()
        .filter_map(|(place, file)| {
            let end = file.checked_add(pointers.read_raw(place + 8)?)?;
            let path =
                (0..paths.len()).find(|&i| starts[i].contains(&file) && paths[i].end == end)?;
            Some((place, path))
        })
        .collect()
}

/// The first method of the trait-object vtable at `address`, if it has that shape: a function
/// or nothing to drop, a size, a power-of-two alignment, and a function first. Zero-sized
/// types (`Debug` for a unit error, invalid ciphers) are no key holders, so not taken.
pub fn vtable_method(pointers: &Pointers, bounds: &FunctionBounds, address: u64) -> Option<u64> {
    let word = |i: u64| pointers.read(address + 8 * i);
    let (drop, size, align, method) = (word(0)?, word(1)?, word(2)?, word(3)?);
    let shaped = (drop == 0 || bounds.starts_at(drop))
        && size > 0
        && size < 1 << 20
        && align.is_power_of_two()
        && align <= 4096
        && size % align == 0
        && bounds.starts_at(method);
    shaped.then_some(method)
}
