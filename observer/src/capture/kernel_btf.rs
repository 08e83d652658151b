//! Where the kernel keeps the few struct fields the probes read (a process's arguments, its exit
//! code), from the running kernel's BTF (`/sys/kernel/btf/vmlinux`): the layout of
//! `task_struct` changes with every build, so the offsets are looked up, never assumed.
//!
//! Only what is needed is read from the BTF: the type section is walked once to find the named
//! structs, then their members (through anonymous structs and unions) for the named fields.
use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;

/// The kinds whose records this reader needs to step over (`BTF_KIND_*`).
mod btf_kind {
    pub const INT: u32 = 1;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const ENUM64: u32 = 19;
}

/// Byte offsets of the fields the command probes read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_mm: u32,
    pub task_exit_code: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
}

impl KernelOffsets {
    /// The running kernel's offsets; an error saying why when its BTF is missing or lacks a
    /// field (commands are then reported without arguments or exit codes).
    pub fn of_running_kernel() -> Result<KernelOffsets, String> {
        let bytes = std::fs::read("/sys/kernel/btf/vmlinux")
            .map_err(|error| format!("reading /sys/kernel/btf/vmlinux: {error}"))?;
        KernelOffsets::from_btf(&bytes)
    }

    fn from_btf(bytes: &[u8]) -> Result<KernelOffsets, String> {
        let btf = Btf::parse(bytes).ok_or("the kernel's BTF is not in a known format")?;
        let field = |structure: &str, member: &str| {
            btf.member_offset(structure, member)
                .ok_or_else(|| format!("the kernel's BTF has no {structure}.{member}"))
        };
        Ok(KernelOffsets {
            task_mm: field("task_struct", "mm")?,
            task_exit_code: field("task_struct", "exit_code")?,
            mm_arg_start: field("mm_struct", "arg_start")?,
            mm_arg_end: field("mm_struct", "arg_end")?,
        })
    }
}

/// One type record: its name, kind, and (for structs and unions) its members.
struct Type {
    name: u32,
    kind: u32,
    /// Struct and union members: (name, type id, bit offset).
    members: Vec<(u32, u32, u32)>,
}

struct Btf<'a> {
    strings: &'a [u8],
    /// By type id - 1.
    types: Vec<Type>,
    /// Struct ids by name, for the named structs only.
    structs: HashMap<&'a str, u32>,
}

impl<'a> Btf<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Btf<'a>> {
        let u16_at = |at: usize| Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        if u16_at(0)? != BTF_MAGIC {
            return None;
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let type_start = header_len.checked_add(type_off)?;
        let types_bytes = bytes.get(type_start..type_start.checked_add(type_len)?)?;
        let str_start = header_len.checked_add(str_off)?;
        let strings = bytes.get(str_start..str_start.checked_add(str_len)?)?;
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(
                types_bytes.get(at..at + 4)?.try_into().ok()?,
            ))
        };
        let mut types = Vec::new();
        let mut at = 0;
        while at < types_bytes.len() {
            let (name, info) = (word(at)?, word(at + 4)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                btf_kind::INT | btf_kind::VAR | btf_kind::DECL_TAG => 4,
                btf_kind::ARRAY => 12,
                btf_kind::STRUCT | btf_kind::UNION => {
                    for index in 0..vlen {
                        let member = at + index * 12;
                        let offset = word(member + 8)?;
                        // With kind_flag, the top 8 bits are a bitfield's size.
                        let offset = if kind_flag {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        members.push((word(member)?, word(member + 4)?, offset));
                    }
                    12 * vlen
                }
                btf_kind::ENUM | btf_kind::FUNC_PROTO => 8 * vlen,
                btf_kind::DATASEC | btf_kind::ENUM64 => 12 * vlen,
                _ => 0,
            };
            at += extra;
            types.push(Type {
                name,
                kind,
                members,
            });
        }
        let mut btf = Btf {
            strings,
            types,
            structs: HashMap::new(),
        };
        for (index, ty) in btf.types.iter().enumerate() {
            if ty.kind == btf_kind::STRUCT
                && let Some(name) = btf.string(ty.name).filter(|name| !name.is_empty())
            {
                // The first definition wins (a name is defined once in vmlinux).
                btf.structs.entry(name).or_insert(index as u32 + 1);
            }
        }
        Some(btf)
    }

    fn string(&self, offset: u32) -> Option<&'a str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    fn member_offset(&self, structure: &str, member: &str) -> Option<u32> {
        let id = *self.structs.get(structure)?;
        self.find_member(id, member, 0)
    }

    /// The byte offset of `member` in type `id`, looking into anonymous structs and unions
    /// (`mm_struct` keeps its fields in one), at most `depth` 4 deep.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let ty = self.types.get(id.checked_sub(1)? as usize)?;
        for &(name, member_type, bit_offset) in &ty.members {
            match self.string(name) {
                Some(name) if name == member => return Some(bit_offset / 8),
                Some("") if depth < 4 => {
                    if let Some(inner) = self.find_member(member_type, member, depth + 1) {
                        return Some(bit_offset / 8 + inner);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct mm_struct { long a; struct { long arg_start, arg_end; }; }` and
    /// `struct task_struct { int x; void *mm; int exit_code; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0long\0mm_struct\0a\0arg_start\0arg_end\0task_struct\0x\0mm\0exit_code\0";
        let at = |name: &str| {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .expect("name in the table") as u32
                + 1
        };
        let mut types: Vec<u32> = Vec::new();
        // 1: long (INT, size 8, encoding word)
        types.extend([at("long"), btf_kind::INT << 24, 8, 64]);
        // 2: anonymous struct { arg_start @0, arg_end @64 }
        types.extend([0, (btf_kind::STRUCT << 24) | 2, 16]);
        types.extend([at("arg_start"), 1, 0, at("arg_end"), 1, 64]);
        // 3: mm_struct { a @0, <anon> @64 }
        types.extend([at("mm_struct"), (btf_kind::STRUCT << 24) | 2, 24]);
        types.extend([at("a"), 1, 0, 0, 2, 64]);
        // 4: task_struct { x @0, mm @64, exit_code @128 (a bitfield-flagged record) }
        types.extend([
            at("task_struct"),
            (1 << 31) | (btf_kind::STRUCT << 24) | 3,
            24,
        ]);
        types.extend([
            at("x"),
            1,
            0,
            at("mm"),
            1,
            64,
            at("exit_code"),
            1,
            (32 << 24) | 128,
        ]);
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = Vec::new();
        out.extend(BTF_MAGIC.to_ne_bytes());
        out.extend([1u8, 0]);
        for word in [24u32, 0, type_bytes.len() as u32, type_bytes.len() as u32] {
            out.extend(word.to_ne_bytes());
        }
        out.extend((strings.len() as u32).to_ne_bytes());
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_fields_through_anonymous_structs() {
        let offsets = KernelOffsets::from_btf(&blob()).expect("offsets");
        assert_eq!(
            offsets,
            KernelOffsets {
                task_mm: 8,
                task_exit_code: 16,
                mm_arg_start: 8,
                mm_arg_end: 16,
            }
        );
    }

    #[test]
    fn cut_or_foreign_blobs_are_refused_without_panicking() {
        let blob = blob();
        for len in 0..blob.len() {
            let _ = KernelOffsets::from_btf(&blob[..len]);
        }
        assert!(KernelOffsets::from_btf(b"not btf at all, not at all").is_err());
    }

    #[test]
    fn reads_the_running_kernel_when_it_has_btf() {
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            let offsets = KernelOffsets::of_running_kernel().expect("offsets");
            assert!(offsets.task_mm > 0 && offsets.mm_arg_end > offsets.mm_arg_start);
        }
    }
}
