//! The guest page walker: 32-bit paging without PAE, as the guest's own
//! page tables describe it (Intel SDM Vol. 3A §4.3).
//!
//! This module owns the translation of one guest linear address into a
//! guest physical address through the page directory that CR3 names: the
//! two-level walk with 4 KiB pages and, when CR4.PSE is set, 4 MiB pages;
//! the U/S and R/W protection checks with CR0.WP (§4.6); the reserved-bit
//! check of 4 MiB page-directory entries; the exact #PF error code (§4.7);
//! and the Accessed and Dirty bits written back into the guest's entries
//! (§4.8). It keeps no TLB: every call reads the guest's tables again. The
//! monitor caches translations as host mappings and drops them on the
//! effects that `exec.rs` reports (CR3 writes, `invlpg`), so a second cache
//! here would only be a second thing to keep coherent.
//!
//! It does not decide *who* makes an access (that is [`PageAccess::user`],
//! which `memory.rs` derives from the CPL or from the kind of system access)
//! and it does not look at CR0.PG: callers translate only when paging is on
//! ([`Cpu::translate`] does both). It never touches the host; the tables
//! are read and written through [`Bus`].
//!
//! # The model's choices, where the SDM leaves room
//!
//! - **No global pages.** Our CPUID has no PGE, so CR4.PGE cannot be set
//!   and the G bit is ignored (§4.10.2.4): [`PageWalk::global`] is always
//!   false and every CR3 write drops every translation.
//! - **Reserved bits of a 4 MiB entry.** Our CPUID reports neither PSE-36
//!   nor PAE, so MAXPHYADDR is 32 (Vol. 2A CPUID, "MAXPHYADDR") and bits
//!   21:13 of a PDE that maps a 4 MiB page are reserved (§4.3, Table 4-4,
//!   "Bits 21:(M–19)"): setting any of them gives a #PF with RSVD, and
//!   with P, since reserved bits are only checked in present entries
//!   (§4.7: "bit 3 of the error code can be set only if bit 0 is also
//!   set"). A 4 KiB entry has no reserved bits in 32-bit paging. QEMU
//!   (7.2, `qemu32`, measured with a guest) differs in two ways, so guest
//!   tests against it must not set these bits: it reserves only bit 21
//!   and reports it with error code 0x8 (RSVD without P), and it reads
//!   bits 20:13 as physical address bits 39:32 (PSE-36), sending the
//!   access above 4 GiB where nothing is mapped, without a fault.
//! - **Accessed bits on a failed walk.** The processor sets the Accessed
//!   bit of every paging-structure entry it *uses* (§4.8). A page-directory
//!   entry that points at a page table is used as soon as the walker reads
//!   through it, so its A bit is set even when the page-table entry then
//!   turns out not present or forbids the access. QEMU does exactly that
//!   (measured: a read through a PDE whose page table is empty faults and
//!   leaves the PDE accessed).
//!   The entry that maps the page (the PTE, or a 4 MiB PDE) gets A, and D
//!   on a write, only when the access is allowed. [`probe`] walks the same
//!   way without writing anything, for a monitor that wants to look ahead.

use bt86_machine::{Bus, GuestPhysAddr};

use crate::exception::Exception;
use crate::state::{cr, Cpu, LinearAddr};

/// Bits of a page-directory or page-table entry (SDM Vol. 3A Tables 4-4 to
/// 4-6).
pub mod entry {
    /// Present: the entry maps something.
    pub const P: u32 = 1 << 0;
    /// Read/write: writes allowed (subject to CR0.WP for supervisor).
    pub const RW: u32 = 1 << 1;
    /// User/supervisor: CPL 3 may access.
    pub const US: u32 = 1 << 2;
    /// Page-level write-through (caching is not modelled).
    pub const PWT: u32 = 1 << 3;
    /// Page-level cache disable (caching is not modelled).
    pub const PCD: u32 = 1 << 4;
    /// Accessed: set by the walker when the entry is used.
    pub const A: u32 = 1 << 5;
    /// Dirty: set in the entry that maps a page when the page is written.
    pub const D: u32 = 1 << 6;
    /// Page size, in a PDE: with CR4.PSE, the entry maps a 4 MiB page.
    pub const PS: u32 = 1 << 7;
    /// Global (needs CR4.PGE, which our model lacks).
    pub const G: u32 = 1 << 8;
    /// The frame of a page table or 4 KiB page.
    pub const FRAME_4K: u32 = 0xFFFF_F000;
    /// The frame of a 4 MiB page.
    pub const FRAME_4M: u32 = 0xFFC0_0000;
    /// Bits 21:13 of a 4 MiB PDE: reserved while MAXPHYADDR is 32.
    pub const RESERVED_4M: u32 = 0x003F_E000;
}

/// Bits of the #PF error code (SDM Vol. 3A §4.7, Figure 4-12).
pub mod error_code {
    /// 0: the page was not present; 1: a protection or reserved-bit
    /// violation on a present entry.
    pub const P: u32 = 1 << 0;
    /// The access was a write.
    pub const W: u32 = 1 << 1;
    /// The access was a user-mode access.
    pub const U: u32 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// Instruction fetch. Only reported with NX or SMEP, which 32-bit
    /// paging without PAE lacks, so bt86 never sets it.
    pub const ID: u32 = 1 << 4;
}

/// The size of a small page.
pub const PAGE_SIZE_4K: u32 = 4096;
/// The size of a PSE page.
pub const PAGE_SIZE_4M: u32 = 4 << 20;

/// What an access wants from a page: the three facts the protection check
/// and the error code depend on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageAccess {
    /// A write (or the write half of a read-modify-write).
    pub write: bool,
    /// A user-mode access: an explicit access at CPL 3. Implicit accesses
    /// to system structures (GDT, LDT, IDT, TSS, the inner stack of a
    /// privilege change) are supervisor accesses at any CPL (SDM Vol. 3A
    /// §4.6).
    pub user: bool,
    /// An instruction fetch. In 32-bit paging it is checked like a read
    /// and never sets the I/D bit of the error code.
    pub fetch: bool,
}

impl PageAccess {
    /// A data read.
    pub const fn read(user: bool) -> PageAccess {
        PageAccess { write: false, user, fetch: false }
    }
    /// A data write.
    pub const fn write(user: bool) -> PageAccess {
        PageAccess { write: true, user, fetch: false }
    }
    /// An instruction fetch.
    pub const fn fetch(user: bool) -> PageAccess {
        PageAccess { write: false, user, fetch: true }
    }

    /// The #PF error code for this access, given the bits that describe the
    /// failure itself (0 for a not-present page, `P` for a protection
    /// violation, `P | RSVD` for a reserved bit).
    pub fn error_code(self, cause: u32) -> u32 {
        let mut code = cause;
        if self.write {
            code |= error_code::W;
        }
        if self.user {
            code |= error_code::U;
        }
        code
    }
}

/// A successful translation: where the byte is, and everything the monitor
/// needs to map the whole page and to know which guest entries it relied
/// on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageWalk {
    /// The physical address of the byte that was translated.
    pub phys: GuestPhysAddr,
    /// The linear address of the first byte of the page.
    pub page_base: u32,
    /// [`PAGE_SIZE_4K`] or [`PAGE_SIZE_4M`].
    pub page_size: u32,
    /// The R/W bits of every entry on the path are set: the page is
    /// writable for user accesses, and for supervisor accesses whatever
    /// CR0.WP says (see [`PageWalk::allows`]).
    pub writable: bool,
    /// The U/S bits of every entry on the path are set: CPL 3 may reach
    /// the page.
    pub user: bool,
    /// The translation survives CR3 writes (G with CR4.PGE). Always false
    /// in our model; see the module documentation.
    pub global: bool,
    /// The D bit of the entry that maps the page, after this access: a
    /// monitor may map the page writable only when it is set, so that the
    /// first write comes back here to set it.
    pub dirty: bool,
    /// The A bit of the entry that maps the page, after this access:
    /// always set after [`walk`]; after [`probe`], whether the guest
    /// already used the page. A monitor fills mappings ahead of the guest
    /// only for pages whose A bit is set, so that filling one never
    /// changes what the guest can observe.
    pub accessed: bool,
    /// The page-directory entry used.
    pub pde_addr: GuestPhysAddr,
    /// The page-table entry used; `None` for a 4 MiB page.
    pub pte_addr: Option<GuestPhysAddr>,
}

impl PageWalk {
    /// The physical address of the first byte of the page.
    pub fn phys_base(&self) -> GuestPhysAddr {
        GuestPhysAddr(self.phys.0 & !(self.page_size - 1))
    }

    /// Whether the page permits `access` with CR0.WP = `wp`: the rule the
    /// walker itself applies (SDM Vol. 3A §4.6.1). Reads and fetches need
    /// U/S for user accesses; writes also need R/W, except that a
    /// supervisor write ignores R/W when WP is clear.
    pub fn allows(&self, access: PageAccess, wp: bool) -> bool {
        permits(self.user, self.writable, access, wp)
    }
}

/// The protection rule of SDM Vol. 3A §4.6.1 for 32-bit paging, given the
/// combined U/S and R/W bits of the path.
fn permits(user_page: bool, writable_page: bool, access: PageAccess, wp: bool) -> bool {
    if access.user && !user_page {
        return false;
    }
    if access.write && !writable_page && (access.user || wp) {
        return false;
    }
    true
}

/// Translates `linear` for `access` through the guest's page tables, as
/// the processor does on a TLB miss, and sets the Accessed and Dirty bits
/// it would set.
///
/// The walk (SDM Vol. 3A §4.3):
///
/// 1. The PDE is the entry at CR3[31:12], indexed by linear[31:22]. If it
///    is not present: #PF.
/// 2. With CR4.PSE and its PS bit set, it maps a 4 MiB page at
///    PDE[31:22] (bits 21:13 must be 0).
/// 3. Otherwise the walker sets the PDE's A bit (§4.8) and reads the PTE:
///    the entry at PDE[31:12], indexed by linear[21:12]. If it is not
///    present: #PF.
/// 4. Permissions combine every entry used (§4.6.1); a violation is a #PF
///    with P set.
/// 5. The entry that maps the page gets A, and D if `access.write`, in one
///    write of the entry and only if a bit was missing (hardware updates
///    it with a locked read-modify-write that sets A no later than D).
///
/// Errors are always `Exception::PageFault { addr: linear, code }`; the
/// caller delivers them (which sets CR2). CR0.PG is not consulted.
pub fn walk(cpu: &Cpu, bus: &mut dyn Bus, linear: LinearAddr, access: PageAccess) -> Result<PageWalk, Exception> {
    walk_tables(cpu, bus, linear, access, true)
}

/// The same translation as [`walk`] with no write to guest memory: no
/// Accessed or Dirty bit is set. For a monitor that fills mappings ahead
/// of the guest (a page that was never touched must not look accessed)
/// and for debuggers. The result is what `walk` would return, unless the
/// guest's tables map themselves so that `walk`'s own A-bit write changes
/// an entry it reads afterwards.
pub fn probe(cpu: &Cpu, bus: &mut dyn Bus, linear: LinearAddr, access: PageAccess) -> Result<PageWalk, Exception> {
    walk_tables(cpu, bus, linear, access, false)
}

fn read_entry(bus: &mut dyn Bus, addr: GuestPhysAddr) -> u32 {
    let mut b = [0u8; 4];
    bus.read_phys(addr, &mut b);
    u32::from_le_bytes(b)
}

/// Sets `bits` in the entry at `addr` whose current value is `value`, if
/// any of them is missing; returns the new value.
fn set_bits(bus: &mut dyn Bus, addr: GuestPhysAddr, value: u32, bits: u32, commit: bool) -> u32 {
    let new = value | bits;
    if commit && new != value {
        bus.write_phys(addr, &new.to_le_bytes());
    }
    new
}

fn walk_tables(
    cpu: &Cpu,
    bus: &mut dyn Bus,
    linear: LinearAddr,
    access: PageAccess,
    commit: bool,
) -> Result<PageWalk, Exception> {
    let fault = |cause: u32| Exception::PageFault { addr: linear.0, code: access.error_code(cause) };
    let wp = cpu.cr0 & cr::CR0_WP != 0;
    let pse = cpu.cr4 & cr::CR4_PSE != 0;
    let pge = cpu.cr4 & cr::CR4_PGE != 0;
    let leaf_bits = if access.write { entry::A | entry::D } else { entry::A };

    // Without PAE, CR3 bits 31:12 locate the page directory; PWT and PCD
    // only choose a caching type (SDM Vol. 3A §4.3, Table 4-3).
    let pde_addr = GuestPhysAddr((cpu.cr3 & entry::FRAME_4K) | ((linear.0 >> 22) << 2));
    let pde = read_entry(bus, pde_addr);
    if pde & entry::P == 0 {
        return Err(fault(0));
    }

    if pse && pde & entry::PS != 0 {
        // A 4 MiB page (SDM Vol. 3A Table 4-4). Without CR4.PSE the PS bit
        // is ignored and the entry points at a page table, below.
        if pde & entry::RESERVED_4M != 0 {
            return Err(fault(error_code::P | error_code::RSVD));
        }
        let user = pde & entry::US != 0;
        let writable = pde & entry::RW != 0;
        if !permits(user, writable, access, wp) {
            return Err(fault(error_code::P));
        }
        let accessed = commit || pde & entry::A != 0;
        let pde = set_bits(bus, pde_addr, pde, leaf_bits, commit);
        let offset = linear.0 & (PAGE_SIZE_4M - 1);
        return Ok(PageWalk {
            phys: GuestPhysAddr((pde & entry::FRAME_4M) | offset),
            page_base: linear.0 & !(PAGE_SIZE_4M - 1),
            page_size: PAGE_SIZE_4M,
            writable,
            user,
            global: pge && pde & entry::G != 0,
            dirty: pde & entry::D != 0,
            accessed,
            pde_addr,
            pte_addr: None,
        });
    }

    // The PDE is used to find the page table, so it is accessed now,
    // whatever becomes of the rest of the walk (SDM Vol. 3A §4.8).
    let pde = set_bits(bus, pde_addr, pde, entry::A, commit);
    let pte_addr = GuestPhysAddr((pde & entry::FRAME_4K) | (((linear.0 >> 12) & 0x3FF) << 2));
    let pte = read_entry(bus, pte_addr);
    if pte & entry::P == 0 {
        return Err(fault(0));
    }
    // The page is only as open as the stricter of its two entries (SDM
    // Vol. 3A §4.6.1: "the access rights ... are determined by the
    // paging-structure entries used").
    let user = pde & pte & entry::US != 0;
    let writable = pde & pte & entry::RW != 0;
    if !permits(user, writable, access, wp) {
        return Err(fault(error_code::P));
    }
    let accessed = commit || pte & entry::A != 0;
    let pte = set_bits(bus, pte_addr, pte, leaf_bits, commit);
    let offset = linear.0 & (PAGE_SIZE_4K - 1);
    Ok(PageWalk {
        phys: GuestPhysAddr((pte & entry::FRAME_4K) | offset),
        page_base: linear.0 & !(PAGE_SIZE_4K - 1),
        page_size: PAGE_SIZE_4K,
        writable,
        user,
        global: pge && pte & entry::G != 0,
        dirty: pte & entry::D != 0,
        accessed,
        pde_addr,
        pte_addr: Some(pte_addr),
    })
}

#[cfg(test)]
#[path = "paging_tests.rs"]
mod tests;
