//! Function bounds from the unwind tables, for executables without symbols.
//!
//! Stripped programs keep `.eh_frame` (unwinding needs it), and linkers add `.eh_frame_hdr`: a
//! table of every function's start sorted by address, each pointing at the entry (FDE) that
//! gives the function's length. The table is searched where it lies in the file, never copied:
//! the Codex CLI's holds over 300,000 functions.
use std::{cell::RefCell, collections::HashMap, ops::Range};

use object::{Object, ObjectSection};

use super::untrusted::Elf;

/// `DW_EH_PE_*` pointer encodings: the low nibble is the value's format, the high one what it
/// is relative to.
mod pe {
    pub const ABSPTR: u8 = 0x00;
    pub const ULEB128: u8 = 0x01;
    pub const UDATA2: u8 = 0x02;
    pub const UDATA4: u8 = 0x03;
    pub const UDATA8: u8 = 0x04;
    pub const SLEB128: u8 = 0x09;
    pub const SDATA2: u8 = 0x0a;
    pub const SDATA4: u8 = 0x0b;
    pub const SDATA8: u8 = 0x0c;
    pub const PCREL: u8 = 0x10;
    pub const DATAREL: u8 = 0x30;
    pub const OMIT: u8 = 0xff;
    /// The binary search table's only encoding in practice (GNU ld, lld, gold, mold).
    pub const TABLE: u8 = DATAREL | SDATA4;
}

/// Longest function believed: past this an FDE's length is taken for a lie.
const MAX_FUNCTION_BYTES: u64 = 1 << 24;

/// The functions of one executable, as its `.eh_frame_hdr` lists them.
pub struct FunctionBounds<'a> {
    /// `.eh_frame_hdr`: its bytes and address (the table's entries are relative to it).
    header: &'a [u8],
    header_address: u64,
    /// Where the table starts in `header`, and its number of entries.
    table: usize,
    count: usize,
    /// `.eh_frame`: where the entries the table points at are.
    frames: &'a [u8],
    frames_address: u64,
    /// The FDE pointer encoding of each CIE read so far, by address.
    encodings: RefCell<HashMap<u64, Option<u8>>>,
}

impl<'a> FunctionBounds<'a> {
    /// The table of `elf`, if it has one this reader understands.
    pub fn of(elf: &Elf<'a>) -> Option<FunctionBounds<'a>> {
        let header = elf.section_by_name(".eh_frame_hdr")?;
        let frames = elf.section_by_name(".eh_frame")?;
        let (header_address, header) = (header.address(), header.data().ok()?);
        let (frames_address, frames) = (frames.address(), frames.data().ok()?);
        let &[1, frame_pointer, count_encoding, pe::TABLE, ..] = header else {
            return None;
        };
        let mut at = 4;
        read_encoded(header, &mut at, header_address, frame_pointer)?;
        let count = read_encoded(header, &mut at, header_address, count_encoding)?;
        let count = usize::try_from(count).ok()?;
        if count > (header.len() - at) / 8 {
            return None;
        }
        Some(FunctionBounds {
            header,
            header_address,
            table: at,
            count,
            frames,
            frames_address,
            encodings: RefCell::new(HashMap::new()),
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }

    /// The function `address` lies in.
    pub fn containing(&self, address: u64) -> Option<Range<u64>> {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.start(middle)? <= address {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let entry = low.checked_sub(1)?;
        let function = self.function(entry)?;
        function.contains(&address).then_some(function)
    }

    /// Whether a function starts at `address`.
    pub fn starts_at(&self, address: u64) -> bool {
        self.containing(address).is_some_and(|f| f.start == address)
    }

    /// Start of the function in table entry `index`.
    fn start(&self, index: usize) -> Option<u64> {
        let at = self.table + index * 8;
        let offset = i32::from_le_bytes(self.header.get(at..at + 4)?.try_into().ok()?);
        Some(self.header_address.wrapping_add_signed(offset.into()))
    }

    /// The function in table entry `index`, from its FDE.
    fn function(&self, index: usize) -> Option<Range<u64>> {
        let at = self.table + index * 8 + 4;
        let offset = i32::from_le_bytes(self.header.get(at..at + 4)?.try_into().ok()?);
        let fde = self.header_address.wrapping_add_signed(offset.into());
        let start = self.start(index)?;
        let (begin, length) = self.read_fde(fde)?;
        (begin == start && length <= MAX_FUNCTION_BYTES).then(|| start..start + length)
    }

    /// The start and length an FDE gives.
    fn read_fde(&self, address: u64) -> Option<(u64, u64)> {
        let at = usize::try_from(address.checked_sub(self.frames_address)?).ok()?;
        let mut cursor = at;
        let length = read_u32(self.frames, &mut cursor)?;
        if length == 0 || length == u32::MAX {
            // A terminator, or a 64-bit entry (never emitted for code this size).
            return None;
        }
        let id_at = cursor;
        let cie_pointer = read_u32(self.frames, &mut cursor)?;
        if cie_pointer == 0 {
            return None; // a CIE, not an FDE
        }
        let cie = (self.frames_address + id_at as u64).checked_sub(cie_pointer.into())?;
        let encoding = self.fde_encoding(cie)?;
        let begin = read_encoded(self.frames, &mut cursor, self.frames_address, encoding)?;
        // The length has the same format, never relative to anything.
        let length = read_encoded(self.frames, &mut cursor, 0, encoding & 0x0f)?;
        Some((begin, length))
    }

    /// The encoding of the addresses in the FDEs of the CIE at `address` (its `R` augmentation).
    fn fde_encoding(&self, address: u64) -> Option<u8> {
        if let Some(known) = self.encodings.borrow().get(&address) {
            return *known;
        }
        let encoding = self.read_cie(address);
        let mut known = self.encodings.borrow_mut();
        // A file claiming many CIEs is read again each time rather than remembered.
        if known.len() < 4096 {
            known.insert(address, encoding);
        }
        encoding
    }

    fn read_cie(&self, address: u64) -> Option<u8> {
        let bytes = self.frames;
        let mut at = usize::try_from(address.checked_sub(self.frames_address)?).ok()?;
        read_u32(bytes, &mut at)?;
        if read_u32(bytes, &mut at)? != 0 {
            return None;
        }
        let version = *bytes.get(at)?;
        at += 1;
        let augmentation_start = at;
        while *bytes.get(at)? != 0 {
            at += 1;
            if at - augmentation_start > 16 {
                return None;
            }
        }
        let augmentation = &bytes[augmentation_start..at];
        at += 1;
        read_uleb(bytes, &mut at)?; // code alignment
        read_uleb(bytes, &mut at)?; // data alignment (signed: its bytes are skipped alike)
        if version == 1 {
            at += 1;
        } else {
            read_uleb(bytes, &mut at)?;
        }
        let [b'z', rest @ ..] = augmentation else {
            return Some(pe::ABSPTR);
        };
        read_uleb(bytes, &mut at)?; // augmentation data length
        for letter in rest {
            match letter {
                b'R' => return bytes.get(at).copied(),
                b'P' => {
                    let encoding = *bytes.get(at)?;
                    at += 1;
                    read_encoded(bytes, &mut at, 0, encoding & 0x0f)?;
                }
                b'L' => at += 1,
                b'S' | b'B' => {}
                _ => return None,
            }
        }
        Some(pe::ABSPTR)
    }
}

fn read_u32(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let value = u32::from_le_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?);
    *at += 4;
    Some(value)
}

fn read_uleb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A value in `encoding` at `at` of `bytes`, which begin at address `base` (for `pcrel` and
/// `datarel`, both relative to where the bytes lie here).
fn read_encoded(bytes: &[u8], at: &mut usize, base: u64, encoding: u8) -> Option<u64> {
    if encoding == pe::OMIT {
        return None;
    }
    let place = base.wrapping_add(*at as u64);
    let mut fixed = |n: usize| -> Option<u64> {
        let slice = bytes.get(*at..*at + n)?;
        *at += n;
        let mut raw = [0u8; 8];
        raw[..n].copy_from_slice(slice);
        Some(u64::from_le_bytes(raw))
    };
    let value = match encoding & 0x0f {
        pe::ABSPTR | pe::UDATA8 | pe::SDATA8 => fixed(8)?,
        pe::UDATA4 => fixed(4)?,
        pe::SDATA4 => fixed(4)? as u32 as i32 as i64 as u64,
        pe::UDATA2 => fixed(2)?,
        pe::SDATA2 => fixed(2)? as u16 as i16 as i64 as u64,
        pe::ULEB128 | pe::SLEB128 => read_uleb(bytes, at)?,
        _ => return None,
    };
    match encoding & 0x70 {
        0 => Some(value),
        pe::PCREL => Some(place.wrapping_add(value)),
        pe::DATAREL => Some(base.wrapping_add(value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_values() {
        let bytes = [0xfc, 0xff, 0xff, 0xff, 0x10, 0, 0, 0];
        let mut at = 0;
        assert_eq!(
            read_encoded(&bytes, &mut at, 0x1000, pe::PCREL | pe::SDATA4),
            Some(0xffc)
        );
        assert_eq!(
            read_encoded(&bytes, &mut at, 0x1000, pe::DATAREL | pe::UDATA4),
            Some(0x1010)
        );
        assert_eq!(read_encoded(&bytes, &mut at, 0, pe::UDATA4), None);
        let mut at = 0;
        assert_eq!(read_uleb(&[0xe5, 0x8e, 0x26], &mut at), Some(624_485));
        assert_eq!(read_uleb(&[0x80; 12], &mut 0), None);
    }

    #[test]
    fn the_test_binary_lists_its_own_functions() {
        use object::ObjectSymbol;
        let own = std::fs::read(std::env::current_exe().expect("current exe")).expect("readable");
        let elf = super::super::untrusted::parse(&own).expect("an ELF file");
        let bounds = FunctionBounds::of(&elf).expect("an .eh_frame_hdr");
        assert!(bounds.len() > 1000);
        let mut checked = 0;
        for symbol in elf.symbols().filter(|s| {
            s.kind() == object::SymbolKind::Text
                && s.size() > 16
                && s.name().is_ok_and(|n| n.contains("eh_frame"))
        }) {
            let function = bounds
                .containing(symbol.address() + 4)
                .expect("its function");
            assert_eq!(function, symbol.address()..symbol.address() + symbol.size());
            assert!(bounds.starts_at(symbol.address()));
            assert!(!bounds.starts_at(symbol.address() + 1));
            checked += 1;
        }
        assert!(checked > 2, "this module's functions have symbols");
    }
}
