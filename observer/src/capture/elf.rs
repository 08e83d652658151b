//! Finding TLS functions in ELF files: which of them a file defines, and at what file offset
//! a uprobe must be placed.
use std::{fs::File, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol, read::ReadCache};

use super::TlsLibrary;

/// A function the probes attach to, with the probe programs that serve it.
#[derive(Clone, Copy, Debug)]
pub struct TlsFunction {
    pub library: TlsLibrary,
    pub symbol: &'static str,
    pub entry_program: &'static str,
    /// The return probe, if the call's result is needed.
    pub return_program: Option<&'static str>,
}

impl TlsFunction {
    /// Reads or writes application data (as opposed to ending a session).
    pub fn moves_data(&self) -> bool {
        self.return_program.is_some()
    }

    /// Its probes, for the function found at file offset `offset`.
    pub fn attach_points(&self, offset: u64) -> impl Iterator<Item = AttachPoint> + '_ {
        std::iter::once(self.entry_program)
            .chain(self.return_program)
            .map(move |program| AttachPoint {
                program,
                offset,
                library: self.library,
                function: self.symbol,
            })
    }
}

/// One uprobe to place: a probe program at a file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    pub program: &'static str,
    pub offset: u64,
    /// Passed to the program as its attach cookie.
    pub library: TlsLibrary,
    /// The function the offset lies in, for messages.
    pub function: &'static str,
}

const fn io(library: TlsLibrary, symbol: &'static str, entry_program: &'static str) -> TlsFunction {
    TlsFunction {
        library,
        symbol,
        entry_program,
        return_program: Some("ssl_return"),
    }
}

const fn end(library: TlsLibrary, symbol: &'static str) -> TlsFunction {
    TlsFunction {
        library,
        symbol,
        entry_program: "ssl_free",
        return_program: None,
    }
}

/// Every TLS API the probes understand. Their read/write functions share one calling shape
/// (session, buffer, length; bytes or a count pointer back), so they share the probe programs.
pub const TLS_FUNCTIONS: &[TlsFunction] = &[
    // OpenSSL, also exported by BoringSSL builds and executables linking OpenSSL statically.
    io(TlsLibrary::OpenSsl, "SSL_write", "ssl_write"),
    io(TlsLibrary::OpenSsl, "SSL_write_ex", "ssl_write_ex"),
    io(TlsLibrary::OpenSsl, "SSL_read", "ssl_read"),
    io(TlsLibrary::OpenSsl, "SSL_read_ex", "ssl_read_ex"),
    end(TlsLibrary::OpenSsl, "SSL_free"),
    // GnuTLS (wget, curl-gnutls).
    io(TlsLibrary::GnuTls, "gnutls_record_send", "ssl_write"),
    io(TlsLibrary::GnuTls, "gnutls_record_recv", "ssl_read"),
    end(TlsLibrary::GnuTls, "gnutls_deinit"),
];

/// File offsets of the `functions` that `path` defines (dynamic or static symbol table).
/// Empty when the file is not ELF or defines none of them.
pub fn find_functions(
    path: &Path,
    functions: &'static [TlsFunction],
) -> std::io::Result<Vec<(TlsFunction, u64)>> {
    let file = File::open(path)?;
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        if !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        // Versioned names (`SSL_read@@OPENSSL_3.0.0`) attach by their plain name.
        let name = name.split('@').next().unwrap_or(name);
        let Some(function) = functions.iter().find(|f| f.symbol == name) else {
            continue;
        };
        if found
            .iter()
            .any(|(f, _): &(TlsFunction, u64)| f.symbol == function.symbol)
        {
            continue;
        }
        if let Some(offset) = file_offset(&elf, symbol.address()) {
            found.push((*function, offset));
        }
    }
    Ok(found)
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
