//! An executable shaped like rustls 0.23 in a stripped LTO build, written by hand with just
//! what the locator looks at: the send function, a record-layer decryption, a decrypter and an
//! encrypter with their vtables and constructors, the panic locations naming their source files,
//! and the unwind tables bounding the functions. What the tests check the locator against,
//! and where the fuzzer starts (`fuzz/fuzz_targets/rustls.rs`).
use super::super::synthetic::{Section, executable};

pub const TEXT: u64 = 0x40_0000;
pub const SEND: u64 = TEXT;
pub const DECRYPTION: u64 = TEXT + 0x100;
pub const DECRYPTER: u64 = TEXT + 0x200;
pub const ENCRYPTER: u64 = TEXT + 0x240;
pub const ENCRYPTED_LEN: u64 = TEXT + 0x280;
pub const DECRYPTER_CONSTRUCTOR: u64 = TEXT + 0x300;
pub const ENCRYPTER_CONSTRUCTOR: u64 = TEXT + 0x340;
/// A second send function, when [`Shape::second_send`] asks for one.
pub const SECOND_SEND: u64 = TEXT + 0x380;
const RODATA: u64 = 0x50_0000;
const DATA: u64 = 0x60_0000;
const RECORD_LAYER_LOCATION: u64 = DATA;
const PROVIDER_LOCATION: u64 = DATA + 0x18;
const DECRYPTER_VTABLE: u64 = DATA + 0x40;
const ENCRYPTER_VTABLE: u64 = DATA + 0x68;
const EH_FRAME_HDR: u64 = 0x70_0000;
const EH_FRAME: u64 = 0x70_1000;

/// What the example's code says; [`Shape::default`] is rustls as built.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// The version in its source paths.
    pub version: &'static str,
    /// The Ok tag the send checks its encryption's result against.
    pub send_ok: u8,
    /// The Ok and DecryptError tags the decryption checks its result against.
    pub receive_ok: u8,
    pub receive_error: u8,
    /// The tags the decrypter writes into its result.
    pub decrypter_tags: [u8; 2],
    /// Where the encrypter and the decrypter are in the record layer.
    pub encrypter_field: u8,
    pub decrypter_field: u8,
    /// The content type the send gives its message.
    pub content_type: u8,
    /// Whether the send keeps its first argument (else it overwrites it before encrypting).
    pub keeps_first_argument: bool,
    /// Whether the send reads its payload by reference (else as a slice in registers).
    pub payload_by_reference: bool,
    pub second_send: bool,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            version: "0.23.46",
            send_ok: 0x16,
            receive_ok: 0x16,
            receive_error: 6,
            decrypter_tags: [6, 0x16],
            encrypter_field: 0x10,
            decrypter_field: 0x20,
            content_type: 3,
            keeps_first_argument: true,
            payload_by_reference: true,
            second_send: false,
        }
    }
}

/// A little x86-64, written by hand.
struct Asm(Vec<u8>);

impl Asm {
    fn at(&mut self, address: u64) -> &mut Self {
        self.0.resize((address - TEXT) as usize, 0xcc);
        self
    }
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend(bytes);
        self
    }
    /// `opcode…, [rip + disp32]` loading `target`.
    fn rip(&mut self, opcode: &[u8], target: u64) -> &mut Self {
        self.0.extend(opcode);
        let next = TEXT + self.0.len() as u64 + 4;
        self.0
            .extend(((target as i64 - next as i64) as i32).to_le_bytes());
        self
    }
}

/// The example's code.
pub fn code(shape: &Shape) -> Vec<u8> {
    let mut asm = Asm(Vec::new());
    send(asm.at(SEND), shape);
    let field = shape.decrypter_field;
    asm.at(DECRYPTION)
        .bytes(&[0x41, 0x57]) // push r15
        .bytes(&[0x4c, 0x8b, 0x7e, 0x40]) // mov r15, [rsi+0x40]: the read sequence number
        .bytes(&[0x49, 0x81, 0xff, 0, 0, 0xff, 0xff]) // cmp r15, SEQ_SOFT_LIMIT
        .bytes(&[0x48, 0x8b, 0x46, field + 8]) // mov rax, [rsi+field+8]
        .bytes(&[0x48, 0x8b, 0x76, field]) // mov rsi, [rsi+field]
        .bytes(&[0x48, 0x8d, 0x7c, 0x24, 0x08]) // lea rdi, [rsp+8]
        .bytes(&[0x4c, 0x89, 0xf9]) // mov rcx, r15
        .bytes(&[0xff, 0x50, 0x18]) // call [rax+0x18]
        .bytes(&[0x0f, 0xb6, 0x44, 0x24, 0x08]) // movzx eax, byte [rsp+8]
        .bytes(&[0x83, 0xf8, shape.receive_error]) // cmp eax, error
        .bytes(&[0x74, 0x00]) // je
        .bytes(&[0x3d, shape.receive_ok, 0, 0, 0]) // cmp eax, ok
        .bytes(&[0x41, 0x5f, 0xc3]); // pop r15; ret
    let [first, second] = shape.decrypter_tags;
    asm.at(DECRYPTER)
        .bytes(&[0x53, 0x48, 0x89, 0xfb]) // push rbx; mov rbx, rdi
        .bytes(&[0x40, 0xb5, first]) // mov bpl, tag
        .bytes(&[0xc6, 0x03, second]) // mov byte [rbx], tag
        .bytes(&[0x5b, 0xc3]); // pop rbx; ret
    asm.at(ENCRYPTER)
        .bytes(&[0x53, 0x48, 0x89, 0xfb]) // push rbx; mov rbx, rdi
        .bytes(&[0xc6, 0x03, 7]) // mov byte [rbx], EncryptError
        .bytes(&[0xc6, 0x03, shape.send_ok]) // mov byte [rbx], Ok
        .bytes(&[0x5b, 0xc3]); // pop rbx; ret
    asm.at(ENCRYPTED_LEN).bytes(&[0x48, 0x8d, 0x46, 0x11, 0xc3]); // lea rax, [rsi+0x11]; ret
    for (at, vtable) in [
        (DECRYPTER_CONSTRUCTOR, DECRYPTER_VTABLE),
        (ENCRYPTER_CONSTRUCTOR, ENCRYPTER_VTABLE),
    ] {
        asm.at(at)
            .rip(&[0x4c, 0x8d, 0x05], PROVIDER_LOCATION) // lea r8, [location]
            .rip(&[0x48, 0x8d, 0x15], vtable) // lea rdx, [vtable]
            .bytes(&[0xc3]);
    }
    if shape.second_send {
        send(asm.at(SECOND_SEND), shape);
    }
    asm.0
}

/// `send_appdata_encrypt`: keeps `self` (rdi) in r14, builds an ApplicationData message at
/// rsp+0x78 and encrypts it with the cipher at `self + encrypter_field`, unwrapping the result.
fn send(asm: &mut Asm, shape: &Shape) {
    let field = shape.encrypter_field;
    asm.bytes(&[0x41, 0x56]) // push r14
        .bytes(&[0x49, 0x89, 0xfe]); // mov r14, rdi
    if shape.payload_by_reference {
        asm.bytes(&[0x4c, 0x8b, 0x1e]); // mov r11, [rsi]: the payload's variant
    }
    asm.rip(&[0x4c, 0x8d, 0x05], RECORD_LAYER_LOCATION) // lea r8, [location]
        .bytes(&[0xc6, 0x84, 0x24, 0x98, 0, 0, 0, shape.content_type]); // mov byte [rsp+0x98], typ
    if !shape.keeps_first_argument {
        asm.bytes(&[0x4d, 0x31, 0xf6]); // xor r14, r14
        asm.bytes(&[0x74, 0x00]); // je: the call's straight line starts after it
    }
    asm.bytes(&[0x49, 0x8b, 0x76, field]) // mov rsi, [r14+field]
        .bytes(&[0x49, 0x8b, 0x46, field + 8]) // mov rax, [r14+field+8]
        .bytes(&[0x48, 0x8d, 0x7c, 0x24, 0x38]) // lea rdi, [rsp+0x38]
        .bytes(&[0x48, 0x8d, 0x54, 0x24, 0x78]) // lea rdx, [rsp+0x78]
        .bytes(&[0xff, 0x50, 0x18]) // call [rax+0x18]
        .bytes(&[0x80, 0x7c, 0x24, 0x38, shape.send_ok]) // cmp byte [rsp+0x38], ok
        .bytes(&[0x41, 0x5e, 0xc3]); // pop r14; ret
}

/// The functions the unwind tables list: start and length.
fn functions(shape: &Shape, code: &[u8]) -> Vec<(u64, u32)> {
    let mut starts = vec![
        SEND,
        DECRYPTION,
        DECRYPTER,
        ENCRYPTER,
        ENCRYPTED_LEN,
        DECRYPTER_CONSTRUCTOR,
        ENCRYPTER_CONSTRUCTOR,
    ];
    if shape.second_send {
        starts.push(SECOND_SEND);
    }
    starts.sort_unstable();
    let end = TEXT + code.len() as u64;
    (0..starts.len())
        .map(|i| {
            let next = starts.get(i + 1).copied().unwrap_or(end).min(end);
            // Up to the last byte before the next function's padding (int3).
            let body = &code[(starts[i] - TEXT) as usize..(next - TEXT) as usize];
            let length = body.iter().rposition(|&b| b != 0xcc).map_or(0, |p| p + 1);
            (starts[i], length as u32)
        })
        .collect()
}

/// `.eh_frame` (one CIE, an FDE per function, `pcrel|sdata4` addresses) and `.eh_frame_hdr`.
fn unwind_tables(functions: &[(u64, u32)]) -> (Vec<u8>, Vec<u8>) {
    let mut frames = Vec::new();
    // CIE: version 1, "zR", code alignment 1, data alignment -8, return address register 16,
    // augmentation data: the FDE encoding.
    let cie_body = [1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b, 0, 0, 0];
    frames.extend((4 + cie_body.len() as u32).to_le_bytes());
    frames.extend(0u32.to_le_bytes());
    frames.extend(cie_body);
    let mut table = Vec::new();
    for &(start, length) in functions {
        let fde = frames.len();
        frames.extend(16u32.to_le_bytes());
        frames.extend((frames.len() as u32).to_le_bytes()); // back to the CIE at 0
        let here = EH_FRAME + frames.len() as u64;
        frames.extend(((start as i64 - here as i64) as i32).to_le_bytes());
        frames.extend(length.to_le_bytes());
        frames.extend([0, 0, 0, 0]); // no augmentation data, padding
        let relative = |address: u64| ((address as i64 - EH_FRAME_HDR as i64) as i32).to_le_bytes();
        table.extend(relative(start));
        table.extend(relative(EH_FRAME + fde as u64));
    }
    frames.extend(0u32.to_le_bytes());
    let mut header = vec![1, 0x1b, 0x03, 0x3b];
    header.extend(((EH_FRAME as i64 - (EH_FRAME_HDR + 4) as i64) as i32).to_le_bytes());
    header.extend((functions.len() as u32).to_le_bytes());
    header.extend(table);
    (header, frames)
}

/// The example as an executable file.
pub fn executable_of(shape: &Shape) -> Vec<u8> {
    with_code(shape, &code(shape))
}

/// An executable with the example's data and unwind tables around `code` (the fuzzer's
/// input: functions may then end past it, or hold anything).
pub fn with_code(shape: &Shape, code: &[u8]) -> Vec<u8> {
    let source = format!(
        "/cargo/registry/src/index.crates.io-0/rustls-{}/src/",
        shape.version
    );
    let record_layer = format!("{source}record_layer.rs");
    let provider = format!("{source}crypto/ring/tls13.rs");
    let mut rodata = record_layer.clone().into_bytes();
    rodata.extend(provider.as_bytes());
    let mut data = Vec::new();
    let mut word = |value: u64| data.extend(value.to_le_bytes());
    for (at, path, line, column) in [
        (RODATA, &record_layer, 112, 9),
        (RODATA + record_layer.len() as u64, &provider, 175, 89),
    ] {
        word(at);
        word(path.len() as u64);
        word(line | column << 32);
    }
    // Padding, the decrypter's vtable, a word, the encrypter's.
    for value in [
        0,
        0,
        0,
        0x230,
        0x10,
        DECRYPTER,
        0,
        0,
        0x230,
        0x10,
        ENCRYPTER,
        ENCRYPTED_LEN,
    ] {
        word(value);
    }
    let padded = code
        .len()
        .max((ENCRYPTER_CONSTRUCTOR + 0x40 - TEXT) as usize);
    let (header, frames) = unwind_tables(&functions(shape, &{
        let mut full = code.to_vec();
        full.resize(padded, 0xcc);
        full
    }));
    executable(
        &[
            Section {
                name: ".text",
                address: TEXT,
                data: code,
                code: true,
            },
            Section {
                name: ".rodata",
                address: RODATA,
                data: &rodata,
                code: false,
            },
            Section {
                name: ".data.rel.ro",
                address: DATA,
                data: &data,
                code: false,
            },
            Section {
                name: ".eh_frame_hdr",
                address: EH_FRAME_HDR,
                data: &header,
                code: false,
            },
            Section {
                name: ".eh_frame",
                address: EH_FRAME,
                data: &frames,
                code: false,
            },
        ],
        &[],
    )
}
