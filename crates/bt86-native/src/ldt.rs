//! LDT shadow segments: the host descriptors translated code runs under.
//!
//! The guest's DS, ES, SS and FS cannot be loaded on the host as they are:
//! their selectors name descriptors in the guest's GDT, which the host CPU
//! never sees. Instead each is shadowed by a descriptor in the process's
//! LDT (installed with `modify_ldt`), with the guest's base and a limit cut
//! short of the monitor area. This is *segment truncation* (brief §4.2): a
//! guest access into [0xFFC00000, 4 GiB) exceeds the shadow's limit and
//! raises #GP, which the monitor turns into an emulated access or a guest
//! fault. GS belongs to the monitor (based at the monitor area), and CS is a
//! flat 32-bit code segment for the translation cache.
//!
//! The guest never sees these selectors: segment-register reads are
//! callouts that return the guest's own values.

use std::collections::HashMap;
use std::io;

use bt86_cpu::{SegReg, Segment};
use bt86_translate::layout::{MONITOR_BASE, MONITOR_SIZE};

use crate::NativeError;

/// LDT slots. Selector = slot << 3 | TI (4) | RPL 3.
const SLOT_CODE: u16 = 1;
const SLOT_MONITOR: u16 = 2;

const fn selector(slot: u16) -> u16 {
    slot << 3 | 4 | 3
}

/// The TC's code selector: flat, 32-bit, readable (exit stubs read their
/// far pointer through it), DPL 3.
pub const CODE_SELECTOR: u16 = selector(SLOT_CODE);
/// The monitor's GS: base MONITOR_BASE, limit 4 MiB.
pub const MONITOR_SELECTOR: u16 = selector(SLOT_MONITOR);
/// Linux's 64-bit user code selector (__USER_CS), the target of every exit.
pub const HOST_CODE64_SELECTOR: u16 = 0x33;

/// Linux's `struct user_desc` (asm/ldt.h), the argument of `modify_ldt`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct UserDesc {
    entry_number: u32,
    base_addr: u32,
    limit: u32,
    /// Bit field: seg_32bit:1, contents:2, read_exec_only:1,
    /// limit_in_pages:1, seg_not_present:1, useable:1, lm:1.
    flags: u32,
}

const CONTENTS_DATA: u32 = 0;
const CONTENTS_CODE: u32 = 2;

impl UserDesc {
    fn new(slot: u16, base: u32, limit: u32, contents: u32, seg_32bit: bool, read_exec_only: bool, pages: bool) -> UserDesc {
        let flags = u32::from(seg_32bit) | contents << 1 | u32::from(read_exec_only) << 3 | u32::from(pages) << 4 | 1 << 6;
        UserDesc { entry_number: u32::from(slot), base_addr: base, limit, flags }
    }

}

/// First LDT slot of the shadow pool.
const POOL_START: u16 = 8;
/// Number of shadow slots. A kernel and its user programs use a handful of
/// distinct segments; the pool only has to hold the working set.
const POOL_SLOTS: u16 = 64;

/// The process's LDT, as far as bt86 uses it.
///
/// Shadows live in a pool of slots, one per distinct shadow descriptor,
/// and stay installed: when a guest switches between its kernel's and its
/// user programs' segments (every system call and interrupt from ring 3),
/// the monitor only changes which selector it loads, instead of rewriting
/// a descriptor with a `modify_ldt` system call each time.
pub struct Ldt {
    /// The descriptor installed in each pool slot.
    pool: Vec<Option<UserDesc>>,
    /// Pool slot of each shadow descriptor (keyed with slot number 0).
    by_desc: HashMap<UserDesc, u16>,
    /// The slots the four shadowed registers use now (never evicted), and
    /// the shadow descriptors in them.
    in_use: [u16; 4],
    current: [Option<UserDesc>; 4],
    /// Where the search for a slot to reuse starts.
    next_victim: u16,
    /// Number of `modify_ldt` calls made, for `--stats`.
    pub writes: u64,
}

impl Ldt {
    /// Installs the code and monitor descriptors.
    pub fn new() -> Result<Ldt, NativeError> {
        let mut ldt = Ldt {
            pool: vec![None; usize::from(POOL_SLOTS)],
            by_desc: HashMap::new(),
            in_use: [0; 4],
            current: [None; 4],
            next_victim: 0,
            writes: 0,
        };
        ldt.install(UserDesc::new(SLOT_CODE, 0, 0xF_FFFF, CONTENTS_CODE, true, false, true))?;
        ldt.install(UserDesc::new(SLOT_MONITOR, MONITOR_BASE, MONITOR_SIZE / 4096 - 1, CONTENTS_DATA, true, false, true))?;
        Ok(ldt)
    }

    /// The selector of a shadow of guest segment `seg` (held in guest
    /// register `reg`), truncated below linear address `ceiling` (the
    /// monitor area, or at CPL 3 with paging the lowest supervisor page
    /// mapped), installing it in a free or reusable pool slot if no slot
    /// holds it yet.
    pub fn shadow(&mut self, reg: SegReg, seg: &Segment, ceiling: u32) -> Result<u16, NativeError> {
        let which = match reg {
            SegReg::Es => 0,
            SegReg::Ss => 1,
            SegReg::Ds => 2,
            _ => 3,
        };
        let key = truncated(0, seg, ceiling);
        // Most updates change one register (SS on a ring switch); the
        // others still have the shadow they had.
        if self.current[which] == Some(key) {
            return Ok(selector(self.in_use[which]));
        }
        let slot = match self.by_desc.get(&key) {
            Some(&slot) => slot,
            None => {
                let slot = self.free_slot();
                if let Some(old) = self.pool[usize::from(slot - POOL_START)].take() {
                    self.by_desc.remove(&UserDesc { entry_number: 0, ..old });
                }
                self.install(UserDesc { entry_number: u32::from(slot), ..key })?;
                self.pool[usize::from(slot - POOL_START)] = Some(key);
                self.by_desc.insert(key, slot);
                slot
            }
        };
        self.in_use[which] = slot;
        self.current[which] = Some(key);
        Ok(selector(slot))
    }

    /// A pool slot that is empty, or else the next one round the pool that
    /// no shadowed register uses now.
    fn free_slot(&mut self) -> u16 {
        if let Some(i) = self.pool.iter().position(Option::is_none) {
            return POOL_START + i as u16;
        }
        loop {
            let slot = POOL_START + self.next_victim;
            self.next_victim = (self.next_victim + 1) % POOL_SLOTS;
            if !self.in_use.contains(&slot) {
                return slot;
            }
        }
    }

    fn install(&mut self, desc: UserDesc) -> Result<(), NativeError> {
        // SAFETY: modify_ldt(1, ptr, size) reads one `struct user_desc` of
        // `size` bytes from `ptr`, which points at a live local value. It
        // changes only this process's LDT, whose slots bt86 owns.
        let r = unsafe {
            libc::syscall(libc::SYS_modify_ldt, 0x11, &desc as *const UserDesc, std::mem::size_of::<UserDesc>())
        };
        if r != 0 {
            return Err(NativeError::Ldt(io::Error::last_os_error()));
        }
        self.writes += 1;
        Ok(())
    }
}

/// Builds the shadow descriptor for a guest segment: same base, same
/// 16/32-bit size, same writability, and a limit truncated so that
/// base + limit < `ceiling` (at most MONITOR_BASE).
fn truncated(slot: u16, seg: &Segment, ceiling: u32) -> UserDesc {
    let ceiling = ceiling.min(MONITOR_BASE);
    // Segments the shadow cannot represent safely get a descriptor that
    // lets nothing through natively: base 0, limit 0. Every access then
    // faults (offset 0 is linear page 0, which the host never maps) and is
    // emulated against the real guest segment by bt86-cpu, which raises
    // the guest's own #GP or #SS where the guest segment refuses it. That
    // covers null (unusable) selectors, segments based inside the monitor
    // area, and expand-down segments, whose valid range runs up to 4 GiB
    // and so cannot be cut short of the monitor area by a limit.
    if seg.access == 0 || !seg.is_present() || seg.base >= ceiling || seg.is_expand_down() {
        return UserDesc::new(slot, 0, 0, CONTENTS_DATA, true, false, false);
    }
    let room = ceiling - 1 - seg.base; // highest offset below the ceiling
    let limit = seg.limit.min(room);
    // The descriptor limit field has 20 bits: byte granular up to 1 MiB,
    // page granular above. Rounding a page-granular limit down only makes
    // the shadow stricter; the monitor emulates the accesses it then
    // refuses.
    let (field, pages) = if limit <= 0xF_FFFF { (limit, false) } else { (((u64::from(limit) + 1) / 4096 - 1) as u32, true) };
    // A read-only guest segment gets a read-only shadow, so a write faults
    // and bt86-cpu raises the guest's #GP(0).
    let read_only = !seg.is_writable();
    UserDesc::new(slot, seg.base, field, CONTENTS_DATA, seg.is_32bit(), read_only, pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_segments_are_truncated_below_the_monitor() {
        let flat = Segment::flat(0x10, 0xC093);
        let d = truncated(6, &flat, MONITOR_BASE);
        assert_eq!(d.base_addr, 0);
        // Page granular: (0xFFBFFFFF + 1) / 4096 - 1.
        assert_eq!(d.limit, 0xFFBFF);
        assert_eq!(d.flags & 1 << 4, 1 << 4);
        let high = Segment { base: 0xFFB0_0000, ..flat };
        let d = truncated(6, &high, MONITOR_BASE);
        let size = if d.flags & 1 << 4 != 0 { (u64::from(d.limit) + 1) * 4096 } else { u64::from(d.limit) + 1 };
        assert_eq!(u64::from(d.base_addr) + size, u64::from(MONITOR_BASE));
        let small = Segment { limit: 0xFFF, ..flat };
        assert_eq!(truncated(6, &small, MONITOR_BASE).limit, 0xFFF);
        let null = Segment::default();
        assert_eq!((truncated(6, &null, MONITOR_BASE).base_addr, truncated(6, &null, MONITOR_BASE).limit), (0, 0));
        // At CPL 3 with paging, the limit stops below the lowest
        // supervisor page; a segment based above it lets nothing through.
        let d = truncated(6, &flat, 0x0010_0000);
        assert_eq!((d.limit, d.flags & 1 << 4), (0xFFFFF, 0));
        let d = truncated(6, &Segment { base: 0x0020_0000, ..flat }, 0x0010_0000);
        assert_eq!((d.base_addr, d.limit), (0, 0));
        let read_only = Segment::flat(0x10, 0xC091);
        assert_eq!(truncated(6, &read_only, MONITOR_BASE).flags & 1 << 3, 1 << 3);
    }
}
