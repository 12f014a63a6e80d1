//! gdb's i386 register file, filled from the virtual CPU and written back
//! to it.
//!
//! This module owns the mapping between `gdbstub_arch`'s `X86CoreRegs`
//! (gdb's `32bit-core.xml` and `32bit-sse.xml` features: the eight GPRs,
//! EIP, EFLAGS, the six segment selectors, the x87 stack and its control
//! registers, XMM0-7 and MXCSR) and bt86-cpu's `Cpu`. The x87 and SSE
//! registers come from the FXSAVE image the monitor keeps of the guest's
//! FPU. It must not change anything the virtual CPU would have to check:
//! a segment register cannot be written from gdb, because loading a
//! selector means reading and checking a descriptor (SDM Vol. 3A §5.4),
//! which is the guest's job, not the debugger's.

use bt86_cpu::state::flags;
use bt86_cpu::SegReg;
use bt86_native::Vm;
use gdbstub_arch::x86::reg::{X86CoreRegs, X86SegmentRegs, X87FpuInternalRegs, F80};

/// A register write the virtual CPU cannot take.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterWriteError {
    #[error("cannot set {reg} to {value:#x} from gdb: loading a segment register means checking its descriptor, which only guest code may do; change it with guest instructions (or in the guest's GDT) instead")]
    Segment { reg: &'static str, value: u32 },
    #[error("cannot set EFLAGS to {value:#010x} from gdb: bit 17 (VM) would enter virtual-8086 mode, which bt86 does not emulate")]
    Virtual8086 { value: u32 },
    #[error("cannot change the x87/SSE registers from gdb: the monitor keeps the guest's FPU state live in the host's FPU and reads it back only; set them with guest instructions instead")]
    Fpu,
}

/// EFLAGS bits that exist on the virtual CPU (SDM Vol. 1 §3.4.3): writes
/// from gdb keep these and force the always-one bit 1.
const EFLAGS_DEFINED: u32 = flags::CF
    | flags::PF
    | flags::AF
    | flags::ZF
    | flags::SF
    | flags::TF
    | flags::IF
    | flags::DF
    | flags::OF
    | flags::IOPL
    | flags::NT
    | flags::RF
    | flags::VM
    | flags::AC
    | flags::VIF
    | flags::VIP
    | flags::ID;

/// Offsets in the 512-byte FXSAVE image (SDM Vol. 1 §10.5.1, Table 10-2).
mod fx {
    pub const FCW: usize = 0;
    pub const FSW: usize = 2;
    /// The abridged tag: one bit per physical register, 1 = not empty.
    pub const FTW: usize = 4;
    pub const FOP: usize = 6;
    pub const FIP: usize = 8;
    pub const FCS: usize = 12;
    pub const FDP: usize = 16;
    pub const FDS: usize = 20;
    pub const MXCSR: usize = 24;
    /// ST(0)..ST(7) in stack order, 16 bytes apart, 10 used.
    pub const ST: usize = 32;
    pub const XMM: usize = 160;
}

/// The registers as gdb sees them. The selectors are the guest's own,
/// never the shadow selectors the monitor loads while translated code
/// runs.
pub fn read(vm: &mut Vm) -> X86CoreRegs {
    // The live FPU state is saved on every exit; copy it where it can be
    // read.
    vm.sync_fpu();
    let cpu = &vm.cpu;
    let g = cpu.gpr;
    let sel = |reg| u32::from(cpu.segment(reg).selector.0);
    let image: &[u8; 512] = &cpu.fpu;
    let mut regs = X86CoreRegs {
        eax: g[0],
        ecx: g[1],
        edx: g[2],
        ebx: g[3],
        esp: g[4],
        ebp: g[5],
        esi: g[6],
        edi: g[7],
        eip: cpu.eip,
        eflags: cpu.eflags,
        segments: X86SegmentRegs {
            cs: sel(SegReg::Cs),
            ss: sel(SegReg::Ss),
            ds: sel(SegReg::Ds),
            es: sel(SegReg::Es),
            fs: sel(SegReg::Fs),
            gs: sel(SegReg::Gs),
        },
        ..X86CoreRegs::default()
    };
    fill_fpu(image, &mut regs);
    regs
}

/// The x87 and SSE part of gdb's register file, from an FXSAVE image.
fn fill_fpu(image: &[u8; 512], regs: &mut X86CoreRegs) {
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([image[o], image[o + 1], image[o + 2], image[o + 3]]);
    for (i, st) in regs.st.iter_mut().enumerate() {
        st.copy_from_slice(&image[fx::ST + 16 * i..fx::ST + 16 * i + 10]);
    }
    let fsw = u16_at(fx::FSW);
    regs.fpu = X87FpuInternalRegs {
        fctrl: u32::from(u16_at(fx::FCW)),
        fstat: u32::from(fsw),
        ftag: u32::from(full_tag_word(image[fx::FTW], fsw, &regs.st)),
        fiseg: u32::from(u16_at(fx::FCS)),
        fioff: u32_at(fx::FIP),
        foseg: u32::from(u16_at(fx::FDS)),
        fooff: u32_at(fx::FDP),
        // The opcode is 11 bits (SDM Vol. 1 §8.1.9).
        fop: u32::from(u16_at(fx::FOP) & 0x7FF),
    };
    for (i, xmm) in regs.xmm.iter_mut().enumerate() {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&image[fx::XMM + 16 * i..fx::XMM + 16 * (i + 1)]);
        *xmm = u128::from_le_bytes(bytes);
    }
    regs.mxcsr = u32_at(fx::MXCSR);
}

/// Rebuilds the x87 tag word gdb expects (two bits per physical register:
/// 00 valid, 01 zero, 10 special, 11 empty) from FXSAVE's abridged one
/// (one bit per physical register: 0 empty), looking at each non-empty
/// register's value as FSAVE would have (SDM Vol. 1 §8.1.7 and §10.5.1.1).
/// FXSAVE stores the registers in stack order, so physical register `p`
/// is ST((p - TOP) mod 8), with TOP in bits 11-13 of the status word.
fn full_tag_word(abridged: u8, fsw: u16, st: &[F80; 8]) -> u16 {
    let top = usize::from((fsw >> 11) & 7);
    let mut tags = 0u16;
    for physical in 0..8 {
        let tag = if abridged & (1 << physical) == 0 {
            0b11
        } else {
            let value = &st[(physical + 8 - top) % 8];
            let exponent = u16::from_le_bytes([value[8], value[9]]) & 0x7FFF;
            let mut m = [0u8; 8];
            m.copy_from_slice(&value[..8]);
            let mantissa = u64::from_le_bytes(m);
            match (exponent, mantissa) {
                (0, 0) => 0b01,
                // Infinities and NaNs, denormals, and "unnormals" without
                // the explicit integer bit.
                (0x7FFF, _) | (0, _) => 0b10,
                (_, m) if m >> 63 == 0 => 0b10,
                _ => 0b00,
            }
        };
        tags |= tag << (2 * physical);
    }
    tags
}

/// Writes gdb's register file back. gdb sends the whole file even to
/// change one register, so unchanged segment and FPU values are fine; a
/// changed one is refused and nothing is written.
pub fn write(vm: &mut Vm, new: &X86CoreRegs) -> Result<(), RegisterWriteError> {
    let current = read(vm);
    let segments = [
        ("cs", new.segments.cs, current.segments.cs),
        ("ss", new.segments.ss, current.segments.ss),
        ("ds", new.segments.ds, current.segments.ds),
        ("es", new.segments.es, current.segments.es),
        ("fs", new.segments.fs, current.segments.fs),
        ("gs", new.segments.gs, current.segments.gs),
    ];
    for (reg, value, now) in segments {
        if value != now {
            return Err(RegisterWriteError::Segment { reg, value });
        }
    }
    if new.st != current.st || new.fpu != current.fpu || new.xmm != current.xmm || new.mxcsr != current.mxcsr {
        return Err(RegisterWriteError::Fpu);
    }
    if new.eflags & flags::VM != 0 {
        return Err(RegisterWriteError::Virtual8086 { value: new.eflags });
    }
    let cpu = &mut vm.cpu;
    cpu.gpr = [new.eax, new.ecx, new.edx, new.ebx, new.esp, new.ebp, new.esi, new.edi];
    cpu.eip = new.eip;
    cpu.eflags = (new.eflags & EFLAGS_DEFINED) | flags::RESERVED1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 80-bit extended-precision value from its sign/exponent word and
    /// 64-bit significand.
    fn f80(exponent: u16, mantissa: u64) -> F80 {
        let mut v = [0u8; 10];
        v[..8].copy_from_slice(&mantissa.to_le_bytes());
        v[8..].copy_from_slice(&exponent.to_le_bytes());
        v
    }

    /// Each class of value gets its FSAVE tag, and empty registers stay
    /// empty, with TOP rotating stack order into physical order.
    #[test]
    fn full_tag_word_classifies_each_register() {
        let one = f80(0x3FFF, 1 << 63);
        let zero = f80(0, 0);
        let infinity = f80(0x7FFF, 1 << 63);
        let denormal = f80(0, 1);
        let unnormal = f80(0x3FFF, 1);
        let cases: &[(u8, u16, [F80; 8], u16)] = &[
            // Everything empty (the state after FNINIT): all 11.
            (0x00, 0, [zero; 8], 0xFFFF),
            // TOP = 0: ST(i) is physical register i.
            (0x01, 0, [one, zero, zero, zero, zero, zero, zero, zero], 0xFFFC),
            (0x03, 0, [one, zero, zero, zero, zero, zero, zero, zero], 0xFFF4),
            (0x1F, 0, [one, zero, infinity, denormal, unnormal, zero, zero, zero], 0xFEA4),
            // TOP = 7 (one value pushed after FNINIT): ST(0) is physical
            // register 7.
            (0x80, 7 << 11, [one, zero, zero, zero, zero, zero, zero, zero], 0x3FFF),
            (0x80, 7 << 11, [infinity, zero, zero, zero, zero, zero, zero, zero], 0xBFFF),
        ];
        for (abridged, fsw, st, expected) in cases {
            assert_eq!(
                full_tag_word(*abridged, *fsw, st),
                *expected,
                "abridged {abridged:#04x}, FSW {fsw:#06x}"
            );
        }
    }

    /// The FPU part comes from the documented FXSAVE offsets.
    #[test]
    fn fpu_registers_come_from_the_fxsave_image() {
        let mut image = [0u8; 512];
        image[fx::FCW..fx::FCW + 2].copy_from_slice(&0x037Fu16.to_le_bytes());
        image[fx::FSW..fx::FSW + 2].copy_from_slice(&0x3800u16.to_le_bytes()); // TOP = 7
        image[fx::FTW] = 0x80;
        image[fx::FOP..fx::FOP + 2].copy_from_slice(&0xF9E8u16.to_le_bytes());
        image[fx::FIP..fx::FIP + 4].copy_from_slice(&0x0010_2030u32.to_le_bytes());
        image[fx::FCS..fx::FCS + 2].copy_from_slice(&0x0008u16.to_le_bytes());
        image[fx::FDP..fx::FDP + 4].copy_from_slice(&0x0010_4000u32.to_le_bytes());
        image[fx::FDS..fx::FDS + 2].copy_from_slice(&0x0010u16.to_le_bytes());
        image[fx::MXCSR..fx::MXCSR + 4].copy_from_slice(&0x1F80u32.to_le_bytes());
        image[fx::ST..fx::ST + 10].copy_from_slice(&f80(0x3FFF, 1 << 63));
        image[fx::XMM + 16..fx::XMM + 32].copy_from_slice(&0x0011_2233_4455_6677_8899_AABB_CCDD_EEFFu128.to_le_bytes());
        let mut regs = X86CoreRegs::default();
        fill_fpu(&image, &mut regs);
        assert_eq!(regs.fpu.fctrl, 0x037F);
        assert_eq!(regs.fpu.fstat, 0x3800);
        assert_eq!(regs.fpu.ftag, 0x3FFF);
        assert_eq!(regs.fpu.fop, 0x1E8);
        assert_eq!((regs.fpu.fiseg, regs.fpu.fioff), (0x8, 0x0010_2030));
        assert_eq!((regs.fpu.foseg, regs.fpu.fooff), (0x10, 0x0010_4000));
        assert_eq!(regs.mxcsr, 0x1F80);
        assert_eq!(regs.st[0], f80(0x3FFF, 1 << 63));
        assert_eq!(regs.st[1], [0; 10]);
        assert_eq!(regs.xmm[1], 0x0011_2233_4455_6677_8899_AABB_CCDD_EEFF);
        assert_eq!(regs.xmm[0], 0);
    }
}
