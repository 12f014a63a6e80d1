//! The architectural state of the virtual CPU.
//!
//! Everything here is plain data so that a VM can be suspended, copied and
//! resumed exactly: the native layer copies the guest's general-purpose
//! registers and arithmetic flags in and out of its VCPU page on every exit,
//! and the rest lives only here.

use std::fmt;

/// A segment selector as the guest wrote it: index, table indicator, RPL
/// (Intel SDM Vol. 3A §3.4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector(pub u16);

impl Selector {
    /// Requested privilege level, bits 1:0.
    pub fn rpl(self) -> u8 {
        (self.0 & 3) as u8
    }
    /// Table indicator: true for the LDT.
    pub fn is_ldt(self) -> bool {
        self.0 & 4 != 0
    }
    /// Descriptor index, bits 15:3.
    pub fn index(self) -> u16 {
        self.0 >> 3
    }
    /// A null selector: index 0 in the GDT, any RPL.
    pub fn is_null(self) -> bool {
        self.0 & !3 == 0
    }
    /// The selector with its RPL bits cleared, as used in error codes.
    pub fn error_code(self) -> u16 {
        self.0 & !3
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// A guest linear address: segment base plus offset, before paging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinearAddr(pub u32);

impl fmt::Display for LinearAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// The six segment registers, in the hardware's encoding order (the `sreg`
/// field of a ModRM byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl SegReg {
    pub const ALL: [SegReg; 6] = [SegReg::Es, SegReg::Cs, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs];

    /// The register named by iced-x86's `Register`, if it is a segment register.
    pub fn from_iced(reg: iced_x86::Register) -> Option<SegReg> {
        use iced_x86::Register as R;
        Some(match reg {
            R::ES => SegReg::Es,
            R::CS => SegReg::Cs,
            R::SS => SegReg::Ss,
            R::DS => SegReg::Ds,
            R::FS => SegReg::Fs,
            R::GS => SegReg::Gs,
            _ => return None,
        })
    }

    /// The two-letter name, as in the Intel manuals.
    pub fn name(self) -> &'static str {
        ["es", "cs", "ss", "ds", "fs", "gs"][self as usize]
    }
}

/// A segment register: the visible selector and the hidden descriptor cache
/// loaded with it (SDM Vol. 3A §3.4.3). Also used for LDTR and TR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Segment {
    pub selector: Selector,
    pub base: u32,
    /// The effective limit in bytes: granularity already applied.
    pub limit: u32,
    /// Access rights as in descriptor bits 40..56, shifted down by 8 the way
    /// `lar` returns them: bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL,
    /// 14 D/B, 15 G. Zero means "unusable" (a null selector was loaded).
    pub access: u16,
}

impl Segment {
    pub const ACCESS_PRESENT: u16 = 1 << 7;
    pub const ACCESS_S: u16 = 1 << 4;
    pub const ACCESS_DB: u16 = 1 << 14;
    pub const ACCESS_G: u16 = 1 << 15;

    /// A flat 4 GiB segment with the given selector and access rights.
    pub fn flat(selector: u16, access: u16) -> Segment {
        Segment { selector: Selector(selector), base: 0, limit: 0xFFFF_FFFF, access }
    }
    /// Descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.access >> 5) & 3) as u8
    }
    /// The 4-bit type field.
    pub fn type_bits(&self) -> u8 {
        (self.access & 0xF) as u8
    }
    pub fn is_present(&self) -> bool {
        self.access & Self::ACCESS_PRESENT != 0
    }
    /// Code or data (S = 1) rather than a system segment.
    pub fn is_code_or_data(&self) -> bool {
        self.access & Self::ACCESS_S != 0
    }
    pub fn is_code(&self) -> bool {
        self.is_code_or_data() && self.type_bits() & 0x8 != 0
    }
    /// Data segment with the expand-down bit.
    pub fn is_expand_down(&self) -> bool {
        self.is_code_or_data() && self.type_bits() & 0xC == 0x4
    }
    /// Writable data segment.
    pub fn is_writable(&self) -> bool {
        self.is_code_or_data() && self.type_bits() & 0xA == 0x2
    }
    /// Readable: any data segment, or a code segment with the R bit.
    pub fn is_readable(&self) -> bool {
        self.is_code_or_data() && (self.type_bits() & 0x8 == 0 || self.type_bits() & 0x2 != 0)
    }
    /// The D/B bit: 32-bit default operand size (CS) or stack (SS).
    pub fn is_32bit(&self) -> bool {
        self.access & Self::ACCESS_DB != 0
    }
    /// Whether `offset .. offset + len` lies within the limit, honouring
    /// expand-down segments (SDM Vol. 3A §5.3).
    pub fn contains(&self, offset: u32, len: u32) -> bool {
        let last = match offset.checked_add(len.saturating_sub(1)) {
            Some(last) => last,
            None => return false,
        };
        if self.is_expand_down() {
            let upper = if self.is_32bit() { 0xFFFF_FFFF } else { 0xFFFF };
            offset > self.limit && last <= upper
        } else {
            last <= self.limit
        }
    }
}

/// GDTR or IDTR: a linear base and a 16-bit limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DescriptorTable {
    pub base: u32,
    pub limit: u16,
}

/// EFLAGS bits (SDM Vol. 1 §3.4.3).
pub mod flags {
    pub const CF: u32 = 1 << 0;
    pub const RESERVED1: u32 = 1 << 1;
    pub const PF: u32 = 1 << 2;
    pub const AF: u32 = 1 << 4;
    pub const ZF: u32 = 1 << 6;
    pub const SF: u32 = 1 << 7;
    pub const TF: u32 = 1 << 8;
    pub const IF: u32 = 1 << 9;
    pub const DF: u32 = 1 << 10;
    pub const OF: u32 = 1 << 11;
    pub const IOPL: u32 = 3 << 12;
    pub const NT: u32 = 1 << 14;
    pub const RF: u32 = 1 << 16;
    pub const VM: u32 = 1 << 17;
    pub const AC: u32 = 1 << 18;
    pub const VIF: u32 = 1 << 19;
    pub const VIP: u32 = 1 << 20;
    pub const ID: u32 = 1 << 21;
    /// The status flags and DF: the bits that live in the real EFLAGS while
    /// translated code runs. Every other bit is virtual and lives only in
    /// [`super::Cpu::eflags`].
    pub const NATIVE: u32 = CF | PF | AF | ZF | SF | DF | OF;
    /// The status flags alone.
    pub const STATUS: u32 = CF | PF | AF | ZF | SF | OF;
}

/// Control-register bits used by the virtual CPU (SDM Vol. 3A §2.5).
pub mod cr {
    pub const CR0_PE: u32 = 1 << 0;
    pub const CR0_MP: u32 = 1 << 1;
    pub const CR0_EM: u32 = 1 << 2;
    pub const CR0_TS: u32 = 1 << 3;
    pub const CR0_ET: u32 = 1 << 4;
    pub const CR0_NE: u32 = 1 << 5;
    pub const CR0_WP: u32 = 1 << 16;
    pub const CR0_AM: u32 = 1 << 18;
    pub const CR0_NW: u32 = 1 << 29;
    pub const CR0_CD: u32 = 1 << 30;
    pub const CR0_PG: u32 = 1 << 31;
    pub const CR4_VME: u32 = 1 << 0;
    pub const CR4_PVI: u32 = 1 << 1;
    pub const CR4_TSD: u32 = 1 << 2;
    pub const CR4_DE: u32 = 1 << 3;
    pub const CR4_PSE: u32 = 1 << 4;
    pub const CR4_PAE: u32 = 1 << 5;
    pub const CR4_PGE: u32 = 1 << 7;
    pub const CR4_PCE: u32 = 1 << 8;
    pub const CR4_OSFXSR: u32 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u32 = 1 << 10;
}

/// The model-specific registers bt86 implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Msrs {
    pub sysenter_cs: u32,
    pub sysenter_esp: u32,
    pub sysenter_eip: u32,
    /// Added to the host's TSC to give the guest's (IA32_TIME_STAMP_COUNTER
    /// writes set it).
    pub tsc_offset: u64,
}

/// Index of each general-purpose register in [`Cpu::gpr`]: the hardware's
/// register-number order.
pub mod gpr {
    pub const EAX: usize = 0;
    pub const ECX: usize = 1;
    pub const EDX: usize = 2;
    pub const EBX: usize = 3;
    pub const ESP: usize = 4;
    pub const EBP: usize = 5;
    pub const ESI: usize = 6;
    pub const EDI: usize = 7;
    pub const NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
}

/// Counters of things the virtual CPU did silently: events that leave no
/// trace in the guest's state and that the run loop therefore cannot see
/// from outside. The `--stats` output reads them.
///
/// The popf counters are the point of Lab 2: on hardware, `popf` at CPL 3
/// with IOPL < 3 does not fault when it asks to change IF; the processor
/// keeps the old IF and says nothing (SDM Vol. 2B POPF). A monitor that
/// relies on trap-and-emulate therefore never learns that its guest kernel,
/// deprivileged to ring 3, wanted interrupts off. bt86 sees every `popf`
/// because the translator turns it into a callout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExecStats {
    /// `popf`/`popfd` executed at CPL > 0.
    pub popf_above_cpl0: u64,
    /// Of those, the ones whose popped image had a different IF while
    /// CPL > IOPL, so that IF silently kept its old value.
    pub popf_if_ignored: u64,
    /// Of those, the ones whose popped image had a different IOPL, which
    /// only CPL 0 may change, so that IOPL silently kept its old value.
    pub popf_iopl_ignored: u64,
    /// Transfers that changed CPL: interrupts and exceptions into an inner
    /// ring, `iret` and far `ret` to an outer one, calls through call gates
    /// to an inner ring, `sysenter` and `sysexit`.
    pub privilege_changes: u64,
}

/// The size of the FXSAVE image that holds the guest's x87/SSE state.
pub const FXSAVE_SIZE: usize = 512;

/// The whole architectural state of one virtual CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI (see [`gpr`]).
    pub gpr: [u32; 8],
    pub eip: u32,
    /// EFLAGS exactly as the guest sees it, including the virtual IF, IOPL,
    /// TF, NT, AC and ID bits.
    pub eflags: u32,
    /// ES, CS, SS, DS, FS, GS, indexed by [`SegReg`].
    pub seg: [Segment; 6],
    pub gdtr: DescriptorTable,
    pub idtr: DescriptorTable,
    pub ldtr: Segment,
    pub tr: Segment,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    /// DR0-DR7, stored but not acted on (DR4/DR5 alias DR6/DR7).
    pub dr: [u32; 8],
    pub msr: Msrs,
    /// Set by `hlt`; cleared when an interrupt is delivered.
    pub halted: bool,
    /// The guest's x87/SSE state as an FXSAVE image. While translated code
    /// runs the live copy is in the host FPU; the native layer writes it back
    /// here when it needs the whole state (snapshots, the debugger).
    pub fpu: Box<[u8; FXSAVE_SIZE]>,
    /// Bumped every time a segment register's hidden part changes, so the
    /// native layer knows when to rebuild its shadow descriptors.
    pub segment_generation: u64,
    /// Counters for `--stats`; they never affect execution.
    pub stats: ExecStats,
}

impl Cpu {
    /// The current privilege level: the RPL of CS (SDM Vol. 3A §5.5).
    pub fn cpl(&self) -> u8 {
        self.seg[SegReg::Cs as usize].selector.rpl()
    }

    pub fn segment(&self, reg: SegReg) -> &Segment {
        &self.seg[reg as usize]
    }

    /// Replaces a segment register and records that shadows must be rebuilt.
    pub fn set_segment(&mut self, reg: SegReg, seg: Segment) {
        if self.seg[reg as usize] != seg {
            self.seg[reg as usize] = seg;
            self.segment_generation += 1;
        }
    }

    /// IOPL, EFLAGS bits 13:12.
    pub fn iopl(&self) -> u8 {
        ((self.eflags >> 12) & 3) as u8
    }

    pub fn interrupts_enabled(&self) -> bool {
        self.eflags & flags::IF != 0
    }

    /// The state at a Multiboot entry point, before the loader fills in EAX,
    /// EBX and EIP: 32-bit protected mode with flat segments, paging off,
    /// interrupts off (Multiboot spec §3.2).
    pub fn new() -> Cpu {
        let mut fpu = Box::new([0u8; FXSAVE_SIZE]);
        // FNINIT state: FCW = 0x037F; MXCSR = 0x1F80 (all exceptions masked).
        fpu[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        fpu[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        // Access rights: present, S, DPL 0, D/B, G; code execute/read
        // accessed (0xB), data read/write accessed (0x3).
        let code = 0xC09B;
        let data = 0xC093;
        let mut seg = [Segment::flat(0x18, data); 6];
        seg[SegReg::Cs as usize] = Segment::flat(0x10, code);
        Cpu {
            gpr: [0; 8],
            eip: 0,
            eflags: flags::RESERVED1,
            seg,
            gdtr: DescriptorTable::default(),
            idtr: DescriptorTable { base: 0, limit: 0x3FF },
            ldtr: Segment::default(),
            tr: Segment::default(),
            cr0: cr::CR0_PE | cr::CR0_ET,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xFFFF_0FF0, 0x0000_0400],
            msr: Msrs::default(),
            halted: false,
            fpu,
            segment_generation: 0,
            stats: ExecStats::default(),
        }
    }
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::new()
    }
}
