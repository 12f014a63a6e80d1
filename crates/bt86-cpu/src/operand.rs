//! Reading and writing the operands of a decoded instruction: general
//! registers of every width, and memory operands through their segment.
//!
//! This module owns the mapping from iced-x86's operand description to the
//! virtual CPU's registers and to `seg:offset` memory references (the
//! effective-address computation of Intel SDM Vol. 1 §3.7.5, including
//! 16-bit address-size wrapping). It makes no privilege decisions and knows
//! nothing about which instruction it serves.

use bt86_machine::Bus;
use iced_x86::{Instruction, OpKind, Register};

use crate::exception::Exception;
use crate::state::{Cpu, SegReg};

/// The value of an 8-, 16- or 32-bit general-purpose register, or `None`
/// for any other register.
pub fn gpr_value(cpu: &Cpu, reg: Register) -> Option<u32> {
    if reg.is_gpr32() {
        Some(cpu.gpr[reg.number()])
    } else if reg.is_gpr16() {
        Some(cpu.gpr[reg.number()] & 0xFFFF)
    } else if reg.is_gpr8() {
        // AL, CL, DL, BL are numbers 0-3; AH, CH, DH, BH are 4-7 and name
        // bits 15:8 of the first four registers.
        let n = reg.number();
        if n < 4 {
            Some(cpu.gpr[n] & 0xFF)
        } else {
            Some((cpu.gpr[n - 4] >> 8) & 0xFF)
        }
    } else {
        None
    }
}

/// Writes a general-purpose register. Narrow writes leave the other bits
/// alone, as on hardware in 32-bit mode. Any other register is ignored.
pub fn set_gpr(cpu: &mut Cpu, reg: Register, value: u32) {
    if reg.is_gpr32() {
        cpu.gpr[reg.number()] = value;
    } else if reg.is_gpr16() {
        let r = &mut cpu.gpr[reg.number()];
        *r = (*r & 0xFFFF_0000) | (value & 0xFFFF);
    } else if reg.is_gpr8() {
        let n = reg.number();
        if n < 4 {
            cpu.gpr[n] = (cpu.gpr[n] & !0xFF) | (value & 0xFF);
        } else {
            cpu.gpr[n - 4] = (cpu.gpr[n - 4] & !0xFF00) | ((value & 0xFF) << 8);
        }
    }
}

/// The segment register and offset of memory operand `op`: the effective
/// address, wrapped to the address size, and the segment after any
/// override prefix.
pub fn memory_operand(cpu: &Cpu, insn: &Instruction, op: u32) -> Result<(SegReg, u32), Exception> {
    let seg = SegReg::from_iced(insn.memory_segment()).ok_or(Exception::InvalidOpcode)?;
    // With every segment base reported as 0, iced's virtual address is the
    // effective address, already masked to the address size.
    let offset = insn
        .virtual_address(op, 0, |reg, _, _| {
            if SegReg::from_iced(reg).is_some() {
                Some(0)
            } else {
                gpr_value(cpu, reg).map(u64::from)
            }
        })
        .ok_or(Exception::InvalidOpcode)?;
    Ok((seg, offset as u32))
}

/// Reads operand `op` of `size` bytes (1, 2 or 4): a register, an
/// immediate or memory.
pub fn read_operand(cpu: &Cpu, bus: &mut dyn Bus, insn: &Instruction, op: u32, size: u32) -> Result<u32, Exception> {
    match insn.op_kind(op) {
        OpKind::Register => {
            let reg = insn.op_register(op);
            if let Some(seg) = SegReg::from_iced(reg) {
                return Ok(u32::from(cpu.segment(seg).selector.0));
            }
            gpr_value(cpu, reg).ok_or(Exception::InvalidOpcode)
        }
        OpKind::Memory => {
            let (seg, offset) = memory_operand(cpu, insn, op)?;
            match size {
                1 => cpu.read_u8(bus, seg, offset).map(u32::from),
                2 => cpu.read_u16(bus, seg, offset).map(u32::from),
                _ => cpu.read_u32(bus, seg, offset),
            }
        }
        OpKind::Immediate8 => Ok(u32::from(insn.immediate8())),
        OpKind::Immediate16 => Ok(u32::from(insn.immediate16())),
        OpKind::Immediate32 => Ok(insn.immediate32()),
        _ => Err(Exception::InvalidOpcode),
    }
}

/// Writes operand `op`: `size` bytes to memory, or the named register (a
/// 32-bit register receives all of `value`).
pub fn write_operand(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction, op: u32, size: u32, value: u32) -> Result<(), Exception> {
    match insn.op_kind(op) {
        OpKind::Register => {
            set_gpr(cpu, insn.op_register(op), value);
            Ok(())
        }
        OpKind::Memory => {
            let (seg, offset) = memory_operand(cpu, insn, op)?;
            match size {
                1 => cpu.write_u8(bus, seg, offset, value as u8),
                2 => cpu.write_u16(bus, seg, offset, value as u16),
                _ => cpu.write_u32(bus, seg, offset, value),
            }
        }
        _ => Err(Exception::InvalidOpcode),
    }
}
