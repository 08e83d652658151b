//! The TLS functions the probes attach to, and the probe programs that serve each.
use super::TlsLibrary;

/// A function the probes attach to, with the probe programs that serve it.
#[derive(Clone, Copy, Debug)]
pub struct TlsFunction {
    pub library: TlsLibrary,
    pub symbol: &'static str,
    pub entry_program: &'static str,
    /// The return probe, if the call's result is needed.
    pub return_program: Option<&'static str>,
    /// Reads or writes application data (as opposed to ending a session).
    pub moves_data: bool,
}

impl TlsFunction {
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
        moves_data: true,
    }
}

const fn end(library: TlsLibrary, symbol: &'static str) -> TlsFunction {
    TlsFunction {
        library,
        symbol,
        entry_program: "ssl_free",
        return_program: None,
        moves_data: false,
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
    // rustls, by demangled name (needs symbols; see observer-ebpf/src/rustls.rs). Both data
    // functions take the session's CommonState, which names the connection; its drop ends it.
    TlsFunction {
        library: TlsLibrary::Rustls,
        symbol: "rustls::common_state::CommonState::buffer_plaintext",
        entry_program: "rustls_send",
        return_program: Some("rustls_send_return"),
        moves_data: true,
    },
    TlsFunction {
        library: TlsLibrary::Rustls,
        symbol: "rustls::common_state::CommonState::take_received_plaintext",
        entry_program: "rustls_receive",
        return_program: None,
        moves_data: true,
    },
    end(
        TlsLibrary::Rustls,
        "core::ptr::drop_in_place<rustls::common_state::CommonState>",
    ),
];

/// BoringSSL's read and write, at offsets found by code signature (see `boringssl`): same
/// calling shape as OpenSSL's, so the same programs.
pub const BORINGSSL_READ: TlsFunction = io(TlsLibrary::BoringSsl, "SSL_read", "ssl_read");
pub const BORINGSSL_WRITE: TlsFunction = io(TlsLibrary::BoringSsl, "SSL_write", "ssl_write");
