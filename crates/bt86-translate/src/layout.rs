//! The monitor area: where the VCPU page, the exit stubs, the indirect-branch
//! table and the translation cache live in the guest's 4 GiB linear space.
//!
//! bt86 runs guest code with guest linear address X equal to host address X
//! (brief §4.1), so the monitor needs somewhere in the same 32-bit space for
//! its own code and data. Like VMware, it takes the top 4 MiB,
//! [0xFFC00000, 4 GiB), and keeps the guest out with segment truncation: the
//! guest's data segments are shadowed with limits that stop short of
//! [`MONITOR_BASE`], and GS is the monitor's, based at [`MONITOR_BASE`], so
//! that translated code reaches VCPU fields as `gs:[offset]`.
//!
//! The translator emits code against these offsets and the native layer's
//! world switch reads and writes the same offsets; both take them from here.
//!
//! ```text
//! 0xFFC00000  VCPU page        guest GPRs, flags, exit id, scratch, host state
//! 0xFFC01000  stub page        64-bit exit landing pad, 32-bit entry trampoline,
//!                              the shared indirect-miss exit
//! 0xFFC10000  IB table         65536 x u32: TC address of an indirect-branch
//!                              trampoline, indexed by the low 16 bits of the
//!                              guest target
//! 0xFFC50000  translation cache, to the end of the 4 GiB space
//! ```

/// Lowest address of the monitor area. Guest segment limits are truncated
/// so that base + limit stays below it.
pub const MONITOR_BASE: u32 = 0xFFC0_0000;
/// Size of the monitor area: the top 4 MiB of the 32-bit space.
pub const MONITOR_SIZE: u32 = 0x0040_0000;

/// Offset (from [`MONITOR_BASE`], i.e. a `gs:` displacement) of the VCPU page.
pub const VCPU_PAGE: u32 = 0x0;
/// Offset of the stub page, which holds the fixed code of the world switch.
pub const STUB_PAGE: u32 = 0x1000;
/// Size reserved for the stub page.
pub const STUB_PAGE_SIZE: u32 = 0x1000;
/// Offset of the indirect-branch lookup table.
pub const IB_TABLE: u32 = 0x1_0000;
/// Number of entries in the indirect-branch table: one per value of the low
/// 16 bits of a guest target, so the hash is a single flag-free `movzx`.
pub const IB_ENTRIES: u32 = 0x1_0000;
/// Offset of the translation cache.
pub const TC_START: u32 = IB_TABLE + IB_ENTRIES * 4;
/// Size of the translation cache.
pub const TC_SIZE: u32 = MONITOR_SIZE - TC_START;

/// Field offsets in the VCPU page. Each is a `gs:` displacement usable from
/// translated 32-bit code, and an offset from [`MONITOR_BASE`] for the
/// 64-bit halves of the world switch.
pub mod vcpu {
    /// The eight guest GPRs in hardware order (EAX, ECX, EDX, EBX, ESP, EBP,
    /// ESI, EDI), 4 bytes each. Valid at entry and after every exit.
    pub const GPR: u32 = 0x00;
    /// The real EFLAGS captured at exit; only the native bits
    /// (`bt86_cpu::state::flags::NATIVE`) are guest state.
    pub const EFLAGS: u32 = 0x20;
    /// Written by every exit stub: the id of the exit record that explains
    /// why translated code left (see `ExitId`).
    pub const EXIT_ID: u32 = 0x24;
    /// Where the inline indirect-branch lookup parks ECX and EDX.
    pub const SCRATCH_ECX: u32 = 0x28;
    pub const SCRATCH_EDX: u32 = 0x2C;
    /// The guest target of the last indirect branch, for a lookup miss.
    pub const IB_TARGET: u32 = 0x30;
    /// Count of indirect-branch lookups that hit, kept by translated code.
    pub const IB_HITS: u32 = 0x34;
    /// TC address where the entry trampoline continues (a near jump target).
    pub const ENTRY_TARGET: u32 = 0x38;
    /// Far pointer (m16:32) used by the 64-bit entry to reach 32-bit code:
    /// offset of the entry trampoline, then the TC code selector.
    pub const ENTRY_FARPTR: u32 = 0x3C;
    /// Far pointer (m16:32) every exit jumps through: offset of the 64-bit
    /// landing pad, then the host's 64-bit code selector.
    pub const EXIT_FARPTR: u32 = 0x44;
    /// Segment selectors loaded on entry: the shadows of DS, ES, FS, SS and
    /// the monitor's GS, 2 bytes each.
    pub const GUEST_DS: u32 = 0x4C;
    pub const GUEST_ES: u32 = 0x4E;
    pub const GUEST_FS: u32 = 0x50;
    pub const GUEST_GS: u32 = 0x52;
    pub const GUEST_SS: u32 = 0x54;
    /// Host state saved by the entry and restored by the landing pad.
    pub const HOST_SS: u32 = 0x60;
    pub const HOST_FCW: u32 = 0x64;
    pub const HOST_MXCSR: u32 = 0x68;
    pub const HOST_RSP: u32 = 0x70;
    pub const HOST_FSBASE: u32 = 0x78;
    pub const HOST_GSBASE: u32 = 0x80;
    /// Filled by the fault handler before it redirects to the landing pad:
    /// trap number, error code, fault address (CR2) and host RIP.
    pub const FAULT_TRAPNO: u32 = 0x88;
    pub const FAULT_ERR: u32 = 0x8C;
    pub const FAULT_ADDR: u32 = 0x90;
    pub const FAULT_RIP: u32 = 0x98;
    /// The guest-visible selectors of ES, CS, SS, DS, FS and GS (in
    /// `SegReg` order), zero-extended to 4 bytes, kept current by the
    /// monitor so that translated code can read them inline.
    pub const GUEST_SELECTORS: u32 = 0xA0;
    /// 1 while the guest runs at CPL 3, else 0: read by the guarded
    /// indirect-branch trampolines of supervisor code (see
    /// `emit::trampoline`).
    pub const IB_USER: u32 = 0xB8;
    /// The guest's FXSAVE image while the monitor runs (16-byte aligned).
    pub const GUEST_FX: u32 = 0x200;
}

/// An address inside the translation cache (a host linear address in the
/// monitor area). Kept apart from guest addresses: the guest must never see
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TcAddr(pub u32);

impl TcAddr {
    pub fn offset(self, by: u32) -> TcAddr {
        TcAddr(self.0 + by)
    }
}

impl std::fmt::Display for TcAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tc:{:#010x}", self.0)
    }
}

/// Whether `addr` lies in the monitor area.
pub fn in_monitor_area(addr: u32) -> bool {
    addr >= MONITOR_BASE
}
