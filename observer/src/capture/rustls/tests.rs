use super::{example::*, *};

fn locate_in(shape: &Shape) -> Verdict {
    let bytes = executable_of(shape);
    let elf = super::super::untrusted::parse(&bytes).expect("an ELF file");
    locate(
        &elf,
        &Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND),
    )
}

fn refused(shape: Shape, because: &str) {
    let verdict = locate_in(&shape);
    assert!(
        matches!(&verdict, Verdict::Refused(why) if why.contains(because)),
        "expected a refusal saying {because:?}: {verdict:?}"
    );
}

#[test]
fn finds_the_send_and_the_decrypter() {
    let Verdict::Located(found) = locate_in(&Shape::default()) else {
        panic!("{:?}", locate_in(&Shape::default()));
    };
    let bytes = executable_of(&Shape::default());
    let elf = super::super::untrusted::parse(&bytes).expect("an ELF file");
    assert_eq!(Some(found.send), file_offset(&elf, SEND));
    assert_eq!(
        found.decrypters,
        vec![file_offset(&elf, DECRYPTER).expect("in the file")]
    );
    assert_eq!(found.decrypter_field, 0x20);
    assert_eq!(found.ok_tag, 0x16);
    assert!(
        found.evidence.contains("rustls 0.23.46"),
        "{}",
        found.evidence
    );
    assert!(
        found.evidence.contains("cross-checked"),
        "{}",
        found.evidence
    );
}

#[test]
fn the_record_layer_may_lie_elsewhere_if_both_ciphers_agree() {
    let shape = Shape {
        encrypter_field: 0x40,
        decrypter_field: 0x30,
        ..Shape::default()
    };
    let Verdict::Located(found) = locate_in(&shape) else {
        panic!("{:?}", locate_in(&shape));
    };
    assert_eq!(found.decrypter_field, 0x30);
}

#[test]
fn refuses_when_the_ok_tags_disagree() {
    refused(
        Shape {
            receive_ok: 0xff,
            decrypter_tags: [6, 0xff],
            ..Shape::default()
        },
        "not the send's Ok tag",
    );
}

#[test]
fn refuses_when_the_ciphers_are_not_in_one_record_layer() {
    refused(
        Shape {
            decrypter_field: 0x38,
            ..Shape::default()
        },
        "not next to the encrypter",
    );
}

#[test]
fn refuses_without_a_decrypter_writing_both_tags() {
    refused(
        Shape {
            decrypter_tags: [7, 0x16],
            ..Shape::default()
        },
        "holds a decrypter",
    );
}

#[test]
fn refuses_a_send_that_is_not_application_data() {
    refused(
        Shape {
            content_type: 2,
            ..Shape::default()
        },
        "encrypts application data",
    );
}

#[test]
fn refuses_a_send_whose_session_is_not_its_first_argument() {
    refused(
        Shape {
            keeps_first_argument: false,
            ..Shape::default()
        },
        "encrypts application data",
    );
}

#[test]
fn refuses_a_send_taking_a_slice() {
    refused(
        Shape {
            payload_by_reference: false,
            ..Shape::default()
        },
        "encrypts application data",
    );
}

#[test]
fn refuses_two_candidates() {
    refused(
        Shape {
            second_send: true,
            ..Shape::default()
        },
        "2 functions look like send_appdata_encrypt",
    );
}

#[test]
fn other_versions_are_refused_and_files_without_rustls_absent() {
    refused(
        Shape {
            version: "0.22.4",
            ..Shape::default()
        },
        "only 0.23",
    );
    let own = std::fs::read(std::env::current_exe().expect("current exe")).expect("readable");
    let elf = super::super::untrusted::parse(&own).expect("an ELF file");
    // The test binary holds rustls (the exporter's HTTPS) with its symbols, and the paths: it
    // is read like any other, and is not built with its record layer inlined.
    let verdict = locate(
        &elf,
        &Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND),
    );
    assert!(!matches!(verdict, Verdict::Absent), "{verdict:?}");
    let bytes = super::super::synthetic::executable(&[], &[]);
    let elf = super::super::untrusted::parse(&bytes).expect("an ELF file");
    let verdict = locate(
        &elf,
        &Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND),
    );
    assert_eq!(verdict, Verdict::Absent);
}

#[test]
fn any_code_is_answered_within_the_file() {
    // Truncated, shifted, or garbage code where the tables say functions are.
    let shape = Shape::default();
    let code = code(&shape);
    for variant in [
        code[..code.len() / 2].to_vec(),
        code[1..].to_vec(),
        vec![0xff; code.len()],
        Vec::new(),
    ] {
        let bytes = with_code(&shape, &variant);
        let elf = super::super::untrusted::parse(&bytes).expect("an ELF file");
        let verdict = locate(
            &elf,
            &Deadline::after(super::super::untrusted::ANALYSIS_TIME_BOUND),
        );
        if let Verdict::Located(found) = verdict {
            assert!(found.send < bytes.len() as u64);
        }
    }
}
