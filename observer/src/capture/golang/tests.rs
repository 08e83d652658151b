use super::*;

#[test]
fn reads_go_release_numbers() {
    assert_eq!(release("go1.19.8"), Some((1, 19)));
    assert_eq!(release("go1.21rc2"), Some((1, 21)));
    assert_eq!(release("go1.16"), Some((1, 16)));
    assert_eq!(release("devel go1.23-4f1d9a7e Tue"), Some((1, 23)));
    assert_eq!(release("weird"), None);
}

#[test]
fn reads_go_varints() {
    assert_eq!(uvarint(&[0x08, 0xff]), Some((8, 1)));
    assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
    assert_eq!(uvarint(&[0x80; 12]), None);
    assert_eq!(uvarint(&[]), None);
}

#[test]
fn entry_probes_skip_the_stack_check() {
    // cmp rsp,[r14+0x10]; jbe +0x3c2; sub rsp,0x68
    let small = [
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xc2, 0x03, 0x00, 0x00, 0x48, 0x83, 0xec, 0x68,
    ];
    assert_eq!(entry_probe_address(&small, 0x1000), 0x1004);
    // lea r12,[rsp-0x68]; cmp r12,[r14+0x10]; jbe +0x764
    let large = [
        0x4c, 0x8d, 0x64, 0x24, 0x98, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x64, 0x07, 0x00, 0x00,
    ];
    assert_eq!(entry_probe_address(&large, 0x1000), 0x1009);
    // A function without the check (or one that moves an argument first) keeps its entry.
    let other = [0x48, 0x89, 0xc3, 0x75, 0x01, 0xc3];
    assert_eq!(entry_probe_address(&other, 0x1000), 0x1000);
    assert_eq!(entry_probe_address(&[], 0x1000), 0x1000);
}

#[test]
fn finds_every_ret_and_nothing_else() {
    // push rbp; mov rbp,rsp; jne +1; ret; mov eax,0xc3 (a C3 byte inside an immediate); pop rbp; ret
    let code = [
        0x55, 0x48, 0x89, 0xe5, 0x75, 0x01, 0xc3, 0xb8, 0xc3, 0x00, 0x00, 0x00, 0x5d, 0xc3,
    ];
    assert_eq!(return_addresses(&code, 0x1000), vec![0x1006, 0x100d]);
}

#[test]
fn a_nop_before_a_ret_is_probed_instead_unless_a_jump_lands_on_the_ret() {
    // add rsp,0x78; nop; ret
    let code = [0x48, 0x83, 0xc4, 0x78, 0x90, 0xc3];
    assert_eq!(return_addresses(&code, 0x1000), vec![0x1004]);
    // je +3 (to the ret); add rsp,0x78; nop; ret
    let jumped = [0x74, 0x05, 0x48, 0x83, 0xc4, 0x78, 0x90, 0xc3];
    assert_eq!(return_addresses(&jumped, 0x1000), vec![0x1007]);
}

/// `runtime.main` at 0, `(*Conn).Read` at 0x40, ending at 0x90.
fn synthetic_pclntab(magic: u32, text_start: u64) -> Vec<u8> {
    example::pclntab(
        magic,
        text_start,
        &[("runtime.main", 0), (READ, 0x40)],
        0x90,
    )
}

fn deadline() -> Deadline {
    Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND)
}

#[test]
fn walks_a_function_table() {
    let data = synthetic_pclntab(PCLNTAB_GO120, 0x40_1000);
    let table = Pclntab::parse(&data).expect("valid header");
    let found = table
        .find(&[READ, WRITE], None, &deadline())
        .expect("walkable");
    assert_eq!(found, [Some((0x40_1040, 0x40_1090)), None]);

    // Position-independent build: textStart 0, `.text` stands in.
    let data = synthetic_pclntab(PCLNTAB_GO118, 0);
    let table = Pclntab::parse(&data).expect("valid header");
    assert_eq!(table.find(&[READ], None, &deadline()), None);
    assert_eq!(
        table.find(&[READ], Some(0x1000), &deadline()),
        Some([Some((0x1040, 0x1090))])
    );
}

#[test]
fn finds_the_table_by_its_magic_and_rejects_lookalikes() {
    let mut file = vec![0u8; 64];
    // A lookalike: right magic, nonsense header.
    file.extend(PCLNTAB_GO120.to_le_bytes());
    file.extend([0, 0, 1, 8]);
    file.extend([0xff; 56]);
    let real_at = file.len();
    file.extend(synthetic_pclntab(PCLNTAB_GO120, 0x40_1000));
    let table = find_pclntab(&file, &deadline()).expect("found");
    assert_eq!(table.data.as_ptr(), file[real_at..].as_ptr());
}

#[test]
fn hostile_tables_give_none_not_panics() {
    let data = synthetic_pclntab(PCLNTAB_GO120, 0x40_1000);
    for cut in 0..data.len() {
        if let Some(table) = Pclntab::parse(&data[..cut]) {
            let _ = table.find(&[READ], None, &deadline());
        }
    }
    let mut bad = data.clone();
    // nameoff of the second function far out of range
    let len = bad.len();
    bad[len - 4..].copy_from_slice(&i32::MAX.to_le_bytes());
    let table = Pclntab::parse(&bad).expect("header still valid");
    assert_eq!(table.find(&[READ], None, &deadline()), None);
}
