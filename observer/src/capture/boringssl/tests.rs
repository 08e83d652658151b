use super::*;

#[test]
fn binaries_without_boringssl_are_absent() {
    let own = std::env::current_exe().expect("current exe");
    let mut locator = Locator::default();
    assert_eq!(locator.locate(&own).expect("readable"), Verdict::Absent);
}

const BASE: u64 = 0x40_0000;
const MARKER_AT: u32 = 0x29_e59d;
const ERR_PUT_ERROR: u64 = BASE;
const RESET_ERRORS: u64 = BASE + 0x10;
const READ_IMPL: u64 = BASE + 0x100;
const READ: u64 = BASE + 0x200;
const WRITE: u64 = BASE + 0x300;

/// A little x86-64, written by hand: just the instructions the signature looks at.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn at(&mut self, address: u64) -> &mut Self {
        self.0.resize((address - BASE) as usize, 0xcc);
        self
    }
    fn call(&mut self, target: u64) -> &mut Self {
        let next = BASE + self.0.len() as u64 + 5;
        self.0.push(0xe8);
        self.0
            .extend(((target as i64 - next as i64) as i32).to_le_bytes());
        self
    }
    /// `OPENSSL_PUT_ERROR(SSL, reason)`: ERR_put_error(16, 0, reason, file, line).
    fn raise(&mut self, reason: u64) -> &mut Self {
        self.0.push(0xb9); // mov ecx, file
        self.0.extend(MARKER_AT.to_le_bytes());
        self.0.extend([0xbf, 0x10, 0, 0, 0, 0x31, 0xf6]); // mov edi, 16; xor esi, esi
        self.0.push(0xba); // mov edx, reason
        self.0.extend((reason as u32).to_le_bytes());
        self.0.extend([0x41, 0xb8, 0x2a, 0, 0, 0]); // mov r8d, 42
        self.call(ERR_PUT_ERROR)
    }
    /// `cmp qword [rdi+field], 0`
    fn test_field(&mut self, field: u32) -> &mut Self {
        self.0.extend([0x48, 0x83, 0xbf]);
        self.0.extend(field.to_le_bytes());
        self.0.push(0);
        self
    }
    /// `add [rax+0x80], rbx`: a store through the session.
    fn store(&mut self) -> &mut Self {
        self.0.extend([0x48, 0x01, 0x98, 0x80, 0, 0, 0]);
        self
    }
    fn ret(&mut self) -> &mut Self {
        self.0.push(0xc3);
        self
    }
}

/// ERR_put_error, the error-state reset, ssl_read_impl, SSL_read and SSL_write, and a
/// caller of the three; `write_field` is the field SSL_write tests before its QUIC error.
fn boringssl_like(write_field: u32) -> Asm {
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
fn write_like(asm: &mut Asm, field: u32) {
    use reason::*;
    asm.call(RESET_ERRORS)
        .test_field(field)
        .raise(SHOULD_NOT_HAVE_BEEN_CALLED)
        .raise(UNINITIALIZED)
        .raise(SSL_HANDSHAKE_FAILURE)
        .raise(BAD_LENGTH)
        .ret();
}

fn identify_in(asm: &Asm) -> Result<Option<(u64, u64)>, String> {
    let code = Code_ {
        bytes: &asm.0,
        base: BASE,
    };
    identify(&code, MARKER_AT.into()).map(|found| found.map(|f| (f.read, f.write)))
}

#[test]
fn finds_read_and_write_by_their_errors() {
    assert_eq!(identify_in(&boringssl_like(0x98)), Ok(Some((READ, WRITE))));
}

#[test]
fn refuses_when_the_cross_check_disagrees() {
    let verdict = identify_in(&boringssl_like(0xa0));
    assert!(
        matches!(&verdict, Err(why) if why.contains("same session field")),
        "{verdict:?}"
    );
}

#[test]
fn refuses_two_candidates() {
    let mut asm = boringssl_like(0x98);
    let copy = BASE + 0x500;
    asm.at(copy);
    write_like(&mut asm, 0x98);
    asm.call(copy).ret();
    let verdict = identify_in(&asm);
    assert!(
        matches!(&verdict, Err(why) if why.contains("2 functions look like SSL_write")),
        "{verdict:?}"
    );
}

#[test]
fn a_file_name_without_ssl_errors_is_not_boringssl() {
    let mut asm = Asm::default();
    asm.at(BASE + 0x20).0.push(0xb9); // mov ecx, file: but no ERR_put_error call
    asm.0.extend(MARKER_AT.to_le_bytes());
    asm.ret().at(BASE + 0x40).call(BASE + 0x20).ret();
    assert_eq!(identify_in(&asm), Ok(None));
}
