use super::{example::*, *};

#[test]
fn binaries_without_boringssl_are_absent() {
    let own = std::fs::read(std::env::current_exe().expect("current exe")).expect("readable");
    let elf = super::super::untrusted::parse(&own).expect("an ELF file");
    let deadline = Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND);
    assert_eq!(locate(&elf, &deadline), Verdict::Absent);
}

fn identify_in(asm: &Asm) -> Result<Option<(u64, u64)>, String> {
    let deadline = Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND);
    identify(&asm.0, BASE, MARKER_AT.into(), &deadline)
        .map(|found| found.map(|f| (f.read, f.write)))
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
