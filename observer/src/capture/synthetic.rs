//! Small ELF executables built in memory around given sections: what the locators' tests and
//! the fuzzer (`fuzz/`) hand the analysis, so that they exercise what lies behind the ELF
//! parsing without a real program.

/// A section of a built executable: loaded at `address`, named (an empty name is none).
pub struct Section<'a> {
    pub name: &'a str,
    pub address: u64,
    pub data: &'a [u8],
    pub code: bool,
}

/// A function symbol at `offset` into section `section` of the same executable.
pub struct Symbol<'a> {
    pub name: &'a [u8],
    pub section: usize,
    pub offset: u64,
    pub size: u64,
}

const EHDR: usize = 64;
const PHDR: usize = 56;
const SHDR: usize = 64;
const SYM: usize = 24;

/// An x86-64 ELF executable with `sections` (each in a loadable segment of its own) and a
/// symbol table of `symbols`.
pub fn executable(sections: &[Section], symbols: &[Symbol]) -> Vec<u8> {
    let mut shstrtab = vec![0u8];
    let mut name_at = |name: &str| {
        if name.is_empty() {
            return 0;
        }
        let at = shstrtab.len() as u32;
        shstrtab.extend(name.as_bytes());
        shstrtab.push(0);
        at
    };
    let section_names: Vec<u32> = sections.iter().map(|s| name_at(s.name)).collect();
    // A file whose sections are all unnamed names none (as if it had no section headers).
    let named = sections.iter().any(|s| !s.name.is_empty());
    let table_names =
        [".symtab", ".strtab", ".shstrtab"].map(|name| name_at(if named { name } else { "" }));

    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; SYM];
    for symbol in symbols {
        let section = sections.get(symbol.section);
        symtab.extend((strtab.len() as u32).to_le_bytes());
        strtab.extend(symbol.name);
        strtab.push(0);
        symtab.push(0x12); // global function
        symtab.push(0);
        symtab.extend(((symbol.section + 1) as u16).to_le_bytes());
        let address = section.map_or(0, |s| s.address.wrapping_add(symbol.offset));
        symtab.extend(address.to_le_bytes());
        symtab.extend(symbol.size.to_le_bytes());
    }

    // Header, program headers, then each section's bytes, the tables, the section headers.
    let mut file = vec![0u8; EHDR + PHDR * sections.len()];
    let mut offsets = Vec::new();
    for blob in sections
        .iter()
        .map(|s| s.data)
        .chain([&symtab[..], &strtab[..], &shstrtab[..]])
    {
        file.resize(file.len().next_multiple_of(16), 0);
        offsets.push(file.len() as u64);
        file.extend(blob);
    }
    file.resize(file.len().next_multiple_of(8), 0);
    let section_headers = file.len() as u64;

    let header = &mut file[..EHDR];
    header[..16].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
    put(16, &2u16.to_le_bytes()); // ET_EXEC
    put(18, &62u16.to_le_bytes()); // x86-64
    put(20, &1u32.to_le_bytes());
    put(24, &sections.first().map_or(0, |s| s.address).to_le_bytes());
    put(32, &(EHDR as u64).to_le_bytes());
    put(40, &section_headers.to_le_bytes());
    put(52, &(EHDR as u16).to_le_bytes());
    put(54, &(PHDR as u16).to_le_bytes());
    put(56, &(sections.len() as u16).to_le_bytes());
    put(58, &(SHDR as u16).to_le_bytes());
    put(60, &((sections.len() + 4) as u16).to_le_bytes());
    put(62, &((sections.len() + 3) as u16).to_le_bytes());

    for (i, section) in sections.iter().enumerate() {
        let at = EHDR + i * PHDR;
        let flags: u32 = if section.code { 5 } else { 4 };
        let mut phdr = Vec::with_capacity(PHDR);
        phdr.extend(1u32.to_le_bytes()); // PT_LOAD
        phdr.extend(flags.to_le_bytes());
        phdr.extend(offsets[i].to_le_bytes());
        phdr.extend(section.address.to_le_bytes());
        phdr.extend(section.address.to_le_bytes());
        phdr.extend((section.data.len() as u64).to_le_bytes());
        phdr.extend((section.data.len() as u64).to_le_bytes());
        phdr.extend(16u64.to_le_bytes());
        file[at..at + PHDR].copy_from_slice(&phdr);
    }

    file.extend([0u8; SHDR]);
    let mut shdr = |name: u32, kind: u32, flags: u64, address: u64, i: usize, size: usize| {
        let (link, info, entry) = match kind {
            2 => ((sections.len() + 2) as u32, 1u32, SYM as u64),
            _ => (0, 0, 0),
        };
        for value in [name, kind] {
            file.extend(value.to_le_bytes());
        }
        for value in [flags, address, offsets[i], size as u64] {
            file.extend(value.to_le_bytes());
        }
        file.extend(link.to_le_bytes());
        file.extend(info.to_le_bytes());
        file.extend(16u64.to_le_bytes());
        file.extend(entry.to_le_bytes());
    };
    for (i, section) in sections.iter().enumerate() {
        // SHF_ALLOC, and SHF_EXECINSTR for code; PROGBITS.
        let flags = if section.code { 6 } else { 2 };
        shdr(
            section_names[i],
            1,
            flags,
            section.address,
            i,
            section.data.len(),
        );
    }
    let n = sections.len();
    shdr(table_names[0], 2, 0, 0, n, symtab.len());
    shdr(table_names[1], 3, 0, 0, n + 1, strtab.len());
    shdr(table_names[2], 3, 0, 0, n + 2, shstrtab.len());
    file
}
