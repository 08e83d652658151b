use super::*;

#[test]
fn mountinfo_lines_give_device_mount_point_and_type() {
    let line = b"36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext4 /dev/root rw";
    let entry = parse_mountinfo_line(line).expect("a well-formed line");
    assert_eq!(entry.device, (98, 0));
    assert_eq!(entry.mount_point, "/mnt two");
    assert_eq!(entry.fstype, "ext4");

    let no_optional_fields = b"22 27 0:21 / /proc rw,relatime - proc proc rw";
    let entry = parse_mountinfo_line(no_optional_fields).expect("a well-formed line");
    assert_eq!(
        (entry.device, entry.fstype.as_os_str()),
        ((0, 21), OsStr::new("proc"))
    );

    assert!(parse_mountinfo_line(b"").is_none());
    assert!(parse_mountinfo_line(b"1 2 x:y / / rw - ext4 a rw").is_none());
}

#[test]
fn octal_escapes_are_undone_and_the_rest_kept() {
    assert_eq!(unescape_octal(b"a\\011b\\134c\\012"), b"a\tb\\c\n");
    assert_eq!(unescape_octal(b"\\09x\\"), b"\\09x\\");
}

#[test]
fn messages_survive_their_encoding() {
    for body in [
        GateBody::Hold {
            id: 1 << 40,
            pid: 4_000_000,
            kind: HoldKind::Exec,
        },
        GateBody::Hold {
            id: 3,
            pid: 1,
            kind: HoldKind::Open,
        },
        GateBody::Marked(MarkReply {
            request: 9,
            errno: libc::EXDEV,
        }),
        GateBody::Counters,
    ] {
        let message = GateMessage {
            body,
            answered_alone: u64::MAX - 1,
        };
        assert_eq!(GateMessage::decode(&message.encode()), Some(message));
    }
    for request in [
        Request::Release(u64::MAX),
        Request::Mark(MarkTarget::Filesystem, 2),
        Request::Mark(MarkTarget::File, 3),
    ] {
        assert_eq!(Request::decode(&request.encode()), Some(request));
    }
    assert_eq!(GateMessage::decode(&[1; GateMessage::SIZE - 1]), None);
    assert_eq!(Request::decode(&[9; Request::SIZE]), None);
}
