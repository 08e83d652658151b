//! Files written by anyone: discovery reads the executables and libraries of every process on
//! the host, including ones an unprivileged user crafted to hurt the observer (truncated, lying
//! headers, huge counts, names without end). What one file may cost is bounded here: its size,
//! its number of sections, the length of every name read from it, and the time its analysis
//! takes. Past a bound the file is refused (and counted), never guessed at.
use std::{
    cell::Cell,
    ops::Range,
    time::{Duration, Instant},
};

use object::{Object, ReadRef};

/// Larger files are not analysed. They are mapped, not read into memory, but every scan of one
/// costs: the largest programs seen (Bun, Claude Code) are a few hundred MB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// One file's analysis stops past this, the exec gate's own bound: the slowest analyses seen,
/// BoringSSL located in Bun's 90 MB executable or Claude Code's 200 MB one, take under 0.1 s.
pub const ANALYSIS_TIME_BOUND: Duration = Duration::from_secs(1);
/// A name (symbol, section, library) longer than this is not read: each lookup scans at most
/// this far for its end, however long the string table.
const MAX_NAME_BYTES: u64 = 4096;
/// Linked programs and libraries have a few dozen sections; each lookup by name walks them all.
const MAX_SECTIONS: usize = 4096;

/// A file's bytes as the ELF reader sees them: every name read stops at [`MAX_NAME_BYTES`].
#[derive(Clone, Copy, Debug)]
pub struct Image<'a>(pub &'a [u8]);

impl<'a> ReadRef<'a> for Image<'a> {
    fn len(self) -> Result<u64, ()> {
        ReadRef::len(self.0)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        self.0.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        let end = range.end.min(range.start.saturating_add(MAX_NAME_BYTES));
        self.0.read_bytes_at_until(range.start..end, delimiter)
    }
}

/// A parsed object file whose names are read with bounds.
pub type Elf<'a> = object::File<'a, Image<'a>>;

/// Why a file is not analysed.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Not an object file the reader understands: nothing to analyse, nothing to report.
    NotObject,
    /// An object file past a bound: refused, and said so.
    OverBound(String),
}

/// The object file in `bytes`, if it is one within the bounds.
pub fn parse(bytes: &[u8]) -> Result<Elf<'_>, Unreadable> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Unreadable::OverBound(format!(
            "{} bytes, more than the {MAX_FILE_BYTES} read",
            bytes.len()
        )));
    }
    let elf = object::File::parse(Image(bytes)).map_err(|_| Unreadable::NotObject)?;
    let sections = elf.sections().take(MAX_SECTIONS + 1).count();
    if sections > MAX_SECTIONS {
        return Err(Unreadable::OverBound(format!(
            "more than {MAX_SECTIONS} sections"
        )));
    }
    Ok(elf)
}

/// The end of one file's analysis. Loops over what the file says (symbols, functions, error
/// sites, table entries) ask [`Deadline::passed`] at each step; the step itself is bounded
/// (a name read, a function decoded), so the analysis ends soon after the deadline.
pub struct Deadline {
    at: Instant,
    asked: Cell<u32>,
    passed: Cell<bool>,
}

/// The clock is read once per this many questions (a step costs far less than a clock read).
const ASKED_PER_CLOCK_READ: u32 = 64;

impl Deadline {
    pub fn after(bound: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + bound,
            asked: Cell::new(0),
            passed: Cell::new(false),
        }
    }

    /// Whether the time is up (once up, it stays up).
    pub fn passed(&self) -> bool {
        if self.passed.get() {
            return true;
        }
        let asked = self.asked.get().wrapping_add(1);
        self.asked.set(asked);
        if asked.is_multiple_of(ASKED_PER_CLOCK_READ) && Instant::now() >= self.at {
            self.passed.set(true);
        }
        self.passed.get()
    }

    /// For use in `take_while`: true while there is time.
    pub fn left(&self) -> bool {
        !self.passed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_only_so_far() {
        let mut bytes = vec![b'a'; 10_000];
        bytes.push(0);
        let image = Image(&bytes);
        assert_eq!(
            image.read_bytes_at_until(9_000..10_001, 0).map(<[u8]>::len),
            Ok(1000)
        );
        assert!(
            image.read_bytes_at_until(0..10_001, 0).is_err(),
            "past the bound"
        );
        assert!(image.read_bytes_at_until(20_000..20_001, 0).is_err());
    }

    #[test]
    fn a_deadline_passes_and_stays_passed() {
        let deadline = Deadline::after(Duration::ZERO);
        let asked = (0..ASKED_PER_CLOCK_READ)
            .take_while(|_| deadline.left())
            .count();
        assert!(asked < ASKED_PER_CLOCK_READ as usize);
        assert!(deadline.passed());
        let later = Deadline::after(Duration::from_secs(3600));
        assert!((0..1000).all(|_| later.left()));
    }

    #[test]
    fn files_that_are_not_objects_are_not_analysed() {
        assert_eq!(parse(b"#!/bin/sh\n").err(), Some(Unreadable::NotObject));
        assert_eq!(parse(&[]).err(), Some(Unreadable::NotObject));
    }
}
