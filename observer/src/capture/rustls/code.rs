//! What the locator reads from a file's machine code (x86-64): references to data, functions
//! decoded within their unwind-table bounds, and the shape of calls through a boxed trait
//! object (`self.message_encrypter.encrypt(…)`), worked out over the straight-line code
//! before each call.
use std::{collections::BTreeSet, ops::Range};

use iced_x86::{
    Code as Opcode, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory,
    OpAccess, OpKind, Register,
};
use object::{Object, ObjectSection};

use super::super::{
    elf,
    untrusted::{Deadline, Elf},
};

/// Functions longer than this are not decoded (rustls's record-layer callers are a few KiB;
/// a connection's message loop, with everything inlined, tens of KiB).
const MAX_FUNCTION_BYTES: u64 = 256 * 1024;
/// Instructions looked at before a call for its arguments, and after it for its result.
const BEFORE_CALL: usize = 32;
const AFTER_CALL: usize = 8;
/// `[vtable + 0x18]`: a trait object's first method (after drop glue, size and alignment).
pub const FIRST_METHOD: u64 = 0x18;
/// Calls through boxed trait objects looked at per function (rustls's callers hold a few).
const MAX_BOX_CALLS: usize = 64;

/// The executable code of a file.
pub struct Code<'a> {
    bytes: &'a [u8],
    base: u64,
}

impl<'a> Code<'a> {
    pub fn of(elf: &Elf<'a>) -> Option<Code<'a>> {
        let text = elf.section_by_name(".text")?;
        Some(Code {
            bytes: text.data().ok()?,
            base: text.address(),
        })
    }

    pub fn contains(&self, address: u64) -> bool {
        address.wrapping_sub(self.base) < self.bytes.len() as u64
    }

    /// `lea r64, [rip + disp32]` instructions whose target is one of `targets` (sorted): the
    /// instruction's address and its target.
    pub fn references(&self, targets: &[u64], deadline: &Deadline) -> Vec<(u64, u64)> {
        let (Some(&low), Some(&high)) = (targets.first(), targets.last()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for (n, (site, target)) in elf::rip_relative_leas(self.bytes, self.base).enumerate() {
            if n % 4096 == 0 && deadline.passed() {
                break;
            }
            if (low..=high).contains(&target) && targets.binary_search(&target).is_ok() {
                found.push((site, target));
            }
        }
        found
    }

    /// Instructions comparing a 64-bit register or memory operand with `value` (as a
    /// sign-extended 32-bit immediate): their addresses.
    pub fn compares_with(&self, value: u64, deadline: &Deadline) -> Vec<u64> {
        let immediate = (value as u32).to_le_bytes();
        let mut found = Vec::new();
        for (n, at) in memchr::memmem::find_iter(self.bytes, &immediate).enumerate() {
            if n % 4096 == 0 && deadline.passed() {
                break;
            }
            // The immediate ends the instruction, after an opcode, a ModRM byte and at most a
            // SIB byte and a 32-bit displacement.
            for length in 6..=12 {
                let Some(start) = (at + 4).checked_sub(length) else {
                    break;
                };
                let ip = self.base + start as u64;
                let mut decoder =
                    Decoder::with_ip(64, &self.bytes[start..at + 4], ip, DecoderOptions::NONE);
                let instruction = decoder.decode();
                if instruction.len() == length
                    && matches!(
                        instruction.code(),
                        Opcode::Cmp_rm64_imm32 | Opcode::Cmp_RAX_imm32
                    )
                    && instruction.immediate(1) == value
                {
                    found.push(ip);
                    break;
                }
            }
        }
        found
    }

    /// The function at `range` (from the unwind table), decoded from its first byte to its
    /// last: compilers put no data in x86-64 code.
    pub fn function(&self, range: Range<u64>) -> Option<Function> {
        if range.end.checked_sub(range.start)? > MAX_FUNCTION_BYTES || !self.contains(range.start) {
            return None;
        }
        let start = usize::try_from(range.start - self.base).ok()?;
        let end = usize::try_from(range.end - self.base).ok()?;
        let bytes = self.bytes.get(start..end)?;
        let mut decoder = Decoder::with_ip(64, bytes, range.start, DecoderOptions::NONE);
        let mut instructions = Vec::new();
        let mut targets = BTreeSet::new();
        while decoder.can_decode() {
            let instruction = decoder.decode();
            if instruction.is_invalid() {
                return None;
            }
            if matches!(
                instruction.flow_control(),
                FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
            ) {
                targets.insert(instruction.near_branch_target());
            }
            instructions.push(instruction);
        }
        Some(Function {
            range,
            instructions,
            targets,
        })
    }
}

/// A call `call [RV + 0x18]` through a boxed trait object (data pointer and vtable pointer
/// side by side) loaded from a field of a struct: `object.field.method(…)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxCall {
    pub at: u64,
    /// The register holding the struct (its value where the straight-line code began).
    pub object: Register,
    /// The field's offset in the struct: data pointer there, vtable pointer after it.
    pub field: i64,
    /// `rdi` (the method's result) and `rdx` (its first argument) when they point at the
    /// stack: their offsets from `rsp`.
    pub result: Option<i64>,
    pub argument: Option<i64>,
    /// Whether `rcx` (its second argument) is a field of the same struct.
    pub rcx_from_object: bool,
    /// Where the straight-line code leading to the call begins (where `object` is taken).
    pub straight_from: u64,
    index: usize,
}

/// A register's value in straight-line code, as far as the locator follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    /// What the register held where the code began.
    Initial(Register),
    /// Loaded from `[register + displacement]`, the register as it was where the code began.
    Field(Register, i64),
    /// `rsp + offset`.
    Stack(i64),
    Unknown,
}

/// A function's instructions, in address order.
pub struct Function {
    pub range: Range<u64>,
    instructions: Vec<Instruction>,
    /// Targets of its direct jumps: where straight-line code may be entered.
    targets: BTreeSet<u64>,
}

impl Function {
    /// Addresses it loads with `lea r64, [rip + …]`.
    pub fn addresses_loaded(&self) -> impl Iterator<Item = u64> + '_ {
        self.instructions
            .iter()
            .filter(|i| i.code() == Opcode::Lea_r64_m && i.is_ip_rel_memory_operand())
            .map(Instruction::ip_rel_memory_address)
    }

    /// Whether its first instruction is `push r64`.
    pub fn starts_with_push(&self) -> bool {
        self.instructions
            .first()
            .is_some_and(|i| i.code() == Opcode::Push_r64)
    }

    /// Its calls through a boxed trait object's first method (the first [`MAX_BOX_CALLS`]).
    pub fn box_calls(&self) -> Vec<BoxCall> {
        let mut info = InstructionInfoFactory::new();
        (0..self.instructions.len())
            .filter_map(|index| self.box_call(index, &mut info))
            .take(MAX_BOX_CALLS)
            .collect()
    }

    fn box_call(&self, index: usize, info: &mut InstructionInfoFactory) -> Option<BoxCall> {
        let call = &self.instructions[index];
        if call.code() != Opcode::Call_rm64
            || call.op0_kind() != OpKind::Memory
            || call.memory_index() != Register::None
            || call.memory_displacement64() != FIRST_METHOD
            || !call.memory_base().is_gpr64()
        {
            return None;
        }
        let (start, state) = self.values_before(index, info);
        let value = |r: Register| state[number(r)];
        let Value::Field(object, vtable) = value(call.memory_base()) else {
            return None;
        };
        let field = vtable - 8;
        if value(Register::RSI) != Value::Field(object, field) {
            return None;
        }
        let on_stack = |r: Register| match value(r) {
            Value::Stack(offset) => Some(offset),
            _ => None,
        };
        Some(BoxCall {
            at: call.ip(),
            object,
            field,
            result: on_stack(Register::RDI),
            argument: on_stack(Register::RDX),
            rcx_from_object: matches!(value(Register::RCX), Value::Field(o, _) if o == object),
            straight_from: self.instructions[start].ip(),
            index,
        })
    }

    /// The registers' values just before instruction `index`, followed from where the
    /// straight-line code leading to it begins (a jump target, or the instruction after a
    /// branch or call): that instruction's index, and the values.
    fn values_before(
        &self,
        index: usize,
        info: &mut InstructionInfoFactory,
    ) -> (usize, [Value; 16]) {
        let mut start = index;
        while start > 0 && index - start < BEFORE_CALL {
            if self.targets.contains(&self.instructions[start].ip())
                || self.instructions[start - 1].flow_control() != FlowControl::Next
            {
                break;
            }
            start -= 1;
        }
        let mut state = GPRS.map(Value::Initial);
        for instruction in &self.instructions[start..index] {
            let written = match (instruction.code(), instruction.op1_kind()) {
                _ if register_copy(instruction).is_some() => {
                    Some(state[number(instruction.op1_register())])
                }
                (Opcode::Mov_r64_rm64, OpKind::Memory) => Some(match plain_memory(instruction) {
                    Some((base, displacement)) if base != Register::RSP => {
                        match state[number(base)] {
                            Value::Initial(register) => Value::Field(register, displacement),
                            _ => Value::Unknown,
                        }
                    }
                    _ => Value::Unknown,
                }),
                (Opcode::Lea_r64_m, _) => Some(match plain_memory(instruction) {
                    Some((Register::RSP, offset)) => Value::Stack(offset),
                    _ => Value::Unknown,
                }),
                _ => None,
            };
            if let Some(value) = written {
                state[number(instruction.op0_register())] = value;
                continue;
            }
            for used in info.info(instruction).used_registers() {
                if !matches!(
                    used.access(),
                    OpAccess::Read | OpAccess::CondRead | OpAccess::None
                ) && used.register().full_register().is_gpr64()
                {
                    let register = used.register().full_register();
                    state[number(register)] = Value::Unknown;
                    if register == Register::RSP {
                        // The stack moved: offsets from rsp taken before mean nothing now.
                        for value in &mut state {
                            if matches!(value, Value::Stack(_)) {
                                *value = Value::Unknown;
                            }
                        }
                    }
                }
            }
        }
        (start, state)
    }

    /// The byte values the code right after `call` compares the byte at its result with
    /// (`cmp byte [rsp+r], imm`, or a `movzx` of it and a compare of that register), through
    /// conditional branches, until the next call or jump.
    pub fn result_compares(&self, call: &BoxCall) -> Vec<u8> {
        let Some(result) = call.result else {
            return Vec::new();
        };
        let is_result = |i: &Instruction| plain_memory(i) == Some((Register::RSP, result));
        let mut loaded: Option<Register> = None;
        let mut values = Vec::new();
        for instruction in self
            .instructions
            .iter()
            .skip(call.index + 1)
            .take(AFTER_CALL)
        {
            match instruction.code() {
                Opcode::Cmp_rm8_imm8 if is_result(instruction) => {
                    values.push(instruction.immediate(1) as u8);
                }
                Opcode::Movzx_r32_rm8 | Opcode::Movzx_r64_rm8 if is_result(instruction) => {
                    loaded = Some(instruction.op0_register().full_register());
                }
                Opcode::Cmp_rm32_imm8
                | Opcode::Cmp_rm32_imm32
                | Opcode::Cmp_EAX_imm32
                | Opcode::Cmp_rm8_imm8
                | Opcode::Cmp_AL_imm8
                    if instruction.op0_kind() == OpKind::Register
                        && Some(instruction.op0_register().full_register()) == loaded =>
                {
                    if let Ok(value) = u8::try_from(instruction.immediate(1) & 0xffff_ffff) {
                        values.push(value);
                    }
                }
                _ => {
                    if !matches!(
                        instruction.flow_control(),
                        FlowControl::Next | FlowControl::ConditionalBranch
                    ) {
                        break;
                    }
                }
            }
        }
        values
    }

    /// Whether `register` holds the function's first argument (`rdi`) at `at`: it is `rdi`,
    /// not written before; or it is first written by `mov register, rdi` before any branch,
    /// and not again before `at` (in address order: the paths to a call inside a method's loop
    /// do not write the register holding `self`).
    pub fn holds_first_argument(&self, register: Register, at: u64) -> bool {
        let mut info = InstructionInfoFactory::new();
        let mut copied = register == Register::RDI;
        let mut branched = false;
        for instruction in self.instructions.iter().take_while(|i| i.ip() < at) {
            let writes = info.info(instruction).used_registers().iter().any(|u| {
                u.register().full_register() == register
                    && !matches!(
                        u.access(),
                        OpAccess::Read | OpAccess::CondRead | OpAccess::None
                    )
            });
            if register_copy(instruction) == Some((register, Register::RDI)) && !copied && !branched
            {
                copied = true;
            } else if writes && !self.restores_before_return(instruction) {
                return false;
            }
            branched |= instruction.flow_control() != FlowControl::Next;
        }
        copied
    }

    /// Whether it reads the first word its second argument (`rsi`) points at before writing
    /// `rsi`: an argument passed by reference (rustls's `OutboundChunks`, whose first word tells
    /// its variants apart), not a slice.
    pub fn reads_through_second_argument(&self) -> bool {
        let mut info = InstructionInfoFactory::new();
        for instruction in &self.instructions {
            if instruction.code() == Opcode::Mov_r64_rm64
                && plain_memory(instruction) == Some((Register::RSI, 0))
            {
                return true;
            }
            let writes_rsi = info.info(instruction).used_registers().iter().any(|u| {
                u.register().full_register() == Register::RSI
                    && !matches!(
                        u.access(),
                        OpAccess::Read | OpAccess::CondRead | OpAccess::None
                    )
            });
            if writes_rsi {
                return false;
            }
        }
        false
    }

    /// Whether `instruction` is a `pop` of an epilogue: only pops follow it up to a `ret`.
    fn restores_before_return(&self, instruction: &Instruction) -> bool {
        instruction.code() == Opcode::Pop_r64
            && self
                .instructions
                .iter()
                .skip_while(|i| i.ip() <= instruction.ip())
                .find(|i| i.code() != Opcode::Pop_r64)
                .is_some_and(|i| i.flow_control() == FlowControl::Return)
    }

    /// The value of the byte at `rsp + offset` that the function's immediate stores to the
    /// stack write (a byte store, or part of a wider one).
    pub fn stack_bytes_stored(&self, offset: i64) -> Vec<u8> {
        self.instructions
            .iter()
            .filter_map(|i| {
                let width = immediate_store_width(i)?;
                let (Register::RSP, at) = plain_memory(i)? else {
                    return None;
                };
                let byte = offset.checked_sub(at).filter(|b| (0..width).contains(b))?;
                Some((i.immediate(1) >> (8 * byte)) as u8)
            })
            .collect()
    }

    /// Byte constants it writes to a byte register or through a pointer (the stack aside):
    /// enum tags put into a result, directly or through a register.
    pub fn byte_constants(&self) -> BTreeSet<u8> {
        self.instructions
            .iter()
            .filter(|i| match i.code() {
                Opcode::Mov_r8_imm8 => true,
                Opcode::Mov_rm8_imm8 => !matches!(plain_memory(i), Some((Register::RSP, _))),
                _ => false,
            })
            .map(|i| i.immediate(1) as u8)
            .collect()
    }
}

/// The 16 general-purpose registers, in their encoding order.
const GPRS: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// A 64-bit general-purpose register's encoding number (0 for anything else, which the callers
/// never pass: they check `is_gpr64` first or name a register).
fn number(register: Register) -> usize {
    GPRS.iter()
        .position(|&r| r == register.full_register())
        .unwrap_or(0)
}

/// `mov r64, r64` (either encoding): destination and source.
fn register_copy(instruction: &Instruction) -> Option<(Register, Register)> {
    (matches!(
        instruction.code(),
        Opcode::Mov_r64_rm64 | Opcode::Mov_rm64_r64
    ) && instruction.op0_kind() == OpKind::Register
        && instruction.op1_kind() == OpKind::Register)
        .then(|| (instruction.op0_register(), instruction.op1_register()))
}

/// `[base + displacement]`: a memory operand with a 64-bit base and no index.
fn plain_memory(instruction: &Instruction) -> Option<(Register, i64)> {
    let memory = (0..instruction.op_count()).any(|i| instruction.op_kind(i) == OpKind::Memory);
    (memory && instruction.memory_index() == Register::None && instruction.memory_base().is_gpr64())
        .then(|| {
            (
                instruction.memory_base(),
                instruction.memory_displacement64() as i64,
            )
        })
}

/// The width of an immediate stored to memory (`mov m, imm`), if that is what it is.
fn immediate_store_width(instruction: &Instruction) -> Option<i64> {
    match instruction.code() {
        Opcode::Mov_rm8_imm8 => Some(1),
        Opcode::Mov_rm16_imm16 => Some(2),
        Opcode::Mov_rm32_imm32 => Some(4),
        Opcode::Mov_rm64_imm32 => Some(8),
        _ => None,
    }
    .filter(|_| instruction.op0_kind() == OpKind::Memory)
}
