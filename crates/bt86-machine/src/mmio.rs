//! The memory-mapped I/O bus: which physical range belongs to which device,
//! and how one guest access is cut into the accesses each device sees.
//!
//! This module owns the MMIO map and its splitting rules. It does not model
//! any device (those live in `devices`), it does not decide what RAM is
//! (`Machine` asks RAM first and hands the bus only what lies outside it),
//! and it knows nothing about the CPU or the host. The native layer never
//! maps an MMIO page into the host: every guest access to one faults, the
//! monitor emulates the faulting instruction once, and the emulator's
//! physical accesses arrive here through `Machine::read_phys` and
//! `Machine::write_phys`.
//!
//! # Registering a device
//! A device implements [`MmioDevice`] and claims one [`MmioRange`] with
//! [`MmioBus::register`]. Ranges are whole 4 KiB pages, because the page is
//! the unit in which the monitor maps or refuses to map guest memory: a
//! device page must never share a host mapping with RAM. Two ranges may not
//! overlap, and registering one that does is refused with
//! [`MmioError::Overlap`] rather than letting one device silently shadow the
//! other. The map is a vector sorted by base address, and a lookup is a
//! binary search over it.
//!
//! # How an access is split
//! A device sees each access as one call of 1, 2, 4 or 8 bytes that is
//! naturally aligned (its offset is a multiple of its length) and lies
//! wholly inside its range. The bus makes sure of it:
//! 1. An access is cut where the owner changes: at the start and end of
//!    every device range. A piece that no device claims is unassigned: it
//!    reads as [`UNASSIGNED_MEMORY_BYTE`] and drops writes, as QEMU's `pc`
//!    machine does.
//! 2. Each piece that a device claims is cut, lowest address first, into
//!    the largest naturally aligned pieces of 8, 4, 2 or 1 bytes that fit.
//!    An aligned dword stays one access; a dword at offset 1 becomes a
//!    byte at 1, a word at 2 and a byte at 4; six bytes at offset 2 become
//!    a word at 2 and a dword at 4.
//!
//! Real processors split misaligned accesses to uncacheable memory in
//! their own, model-specific ways (SDM Vol. 3A §9.1.1, "Guaranteed Atomic
//! Operations", says such accesses are not atomic and may be performed as
//! several bus cycles), so no guest can depend on the exact pieces. QEMU's
//! TCG, the reference, reads a misaligned value as the two aligned accesses
//! of the full width around it and writes it byte by byte; for a device
//! whose registers are plain storage the result is the same bytes as ours.
//! The difference shows only for registers with side effects on reads,
//! which drivers access aligned anyway. Because every piece is naturally
//! aligned, none crosses a 4 KiB boundary either; the virtual CPU also cuts
//! its accesses at page boundaries before they reach the bus.
//!
//! A device whose registers are narrower than an access (a LAPIC's are 32
//! bits wide) decides itself what a wider one does, as its datasheet says.

use thiserror::Error;

use crate::machine::UNASSIGNED_MEMORY_BYTE;
use crate::GuestPhysAddr;

/// The granule of MMIO ranges: one 4 KiB page (SDM Vol. 3A §4.3).
pub const MMIO_PAGE_SIZE: u64 = 4096;

/// The size of the physical address space: 4 GiB, as bt86 models no PAE.
const PHYS_SPACE: u64 = 1 << 32;

/// A device's window of memory-mapped registers, as the device sees it:
/// `offset` is relative to the start of the device's [`MmioRange`].
///
/// `data.len()` is always 1, 2, 4 or 8, and `offset` a multiple of it (see
/// the module documentation for how the bus splits other accesses). Values
/// are little-endian: `data[0]` is the byte at `offset`. A device must not
/// panic on any offset inside its range, even one that holds no register;
/// what such an access does is the device's to define (commonly: reads 0,
/// writes ignored).
///
/// `Send`, so that the machine can move to the thread that runs the VM.
pub trait MmioDevice: Send {
    /// Fills `data` from the device's registers at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` to the device's registers at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// The device's guest-visible state as bytes, in a format of the
    /// device's own, for a snapshot of the machine (see
    /// `MachineState::mmio`).
    fn save_state(&self) -> Vec<u8>;
    /// Whether [`MmioDevice::restore_state`] would accept `state`: the
    /// machine checks every device before it changes any, so that a failed
    /// restore leaves the whole machine as it was.
    fn check_state(&self, state: &[u8]) -> Result<(), String>;
    /// Puts the device back in a state taken with
    /// [`MmioDevice::save_state`]. Called only after `check_state`
    /// accepted `state`.
    fn restore_state(&mut self, state: &[u8]);
}

/// One device's saved state, under the name it has on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmioDeviceState {
    pub name: String,
    pub state: Vec<u8>,
}

/// A saved MMIO bus that does not fit this one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MmioStateError {
    #[error(
        "the snapshot's memory-mapped devices ({saved}) are not this machine's ({present}); \
         restore it into a VM started with the same -device options"
    )]
    Devices { saved: String, present: String },
    #[error("cannot restore memory-mapped device {name}: {problem}")]
    Device { name: String, problem: String },
}

/// A range of physical addresses claimed by one device: a base and a length
/// that are both whole 4 KiB pages, inside the 4 GiB physical space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MmioRange {
    base: GuestPhysAddr,
    len: u64,
}

impl MmioRange {
    /// The range of `len` bytes at `base`. Both must be multiples of
    /// [`MMIO_PAGE_SIZE`], `len` must not be zero, and the range must end
    /// at or below 4 GiB.
    pub fn new(base: GuestPhysAddr, len: u64) -> Result<MmioRange, MmioError> {
        let range = MmioRange { base, len };
        if u64::from(base.0) % MMIO_PAGE_SIZE != 0 || len == 0 || len % MMIO_PAGE_SIZE != 0 {
            return Err(MmioError::NotPageAligned { range });
        }
        if range.end() > PHYS_SPACE {
            return Err(MmioError::PastEnd { range });
        }
        Ok(range)
    }

    /// The first address of the range.
    pub fn base(&self) -> GuestPhysAddr {
        self.base
    }

    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a range holds at least one page. (Present because a
    /// `len` without it puzzles readers and lints alike.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first address after the range, as a `u64` because a range may
    /// end exactly at 4 GiB.
    pub fn end(&self) -> u64 {
        u64::from(self.base.0) + self.len
    }

    /// Whether `addr` lies inside the range.
    pub fn contains(&self, addr: GuestPhysAddr) -> bool {
        let a = u64::from(addr.0);
        a >= u64::from(self.base.0) && a < self.end()
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &MmioRange) -> bool {
        u64::from(self.base.0) < other.end() && u64::from(other.base.0) < self.end()
    }
}

impl std::fmt::Display for MmioRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#010x}, {:#010x})", self.base.0, self.end())
    }
}

/// A device that could not be placed on the bus. Nothing was registered.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MmioError {
    #[error(
        "MMIO range {range} (length {len:#x}) is not made of whole 4 KiB pages; \
         give a page-aligned base and a non-zero length that is a multiple of 0x1000",
        len = range.len
    )]
    NotPageAligned { range: MmioRange },
    #[error("MMIO range {range} runs past the 4 GiB physical address space; give a range that ends at or below 0x100000000")]
    PastEnd { range: MmioRange },
    #[error(
        "cannot register MMIO device {name} at {range}: it overlaps {existing} at {existing_range}; \
         move one of them to a free range"
    )]
    Overlap {
        name: String,
        range: MmioRange,
        existing: String,
        existing_range: MmioRange,
    },
    #[error(
        "cannot register MMIO device {name} at {range}: it overlaps guest RAM, which ends at {ram_end:#010x} \
         and would hide the device; place it above RAM or give the VM less memory"
    )]
    OverlapsRam {
        name: String,
        range: MmioRange,
        ram_end: u64,
    },
}

/// One device on the bus.
struct Region {
    name: String,
    range: MmioRange,
    device: Box<dyn MmioDevice>,
}

/// The MMIO map: devices by physical range, kept sorted by base address
/// and free of overlaps.
#[derive(Default)]
pub struct MmioBus {
    regions: Vec<Region>,
}

impl std::fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.regions()
                    .map(|(name, range)| format!("{name} {range}")),
            )
            .finish()
    }
}

impl MmioBus {
    /// An empty bus: every address is unassigned.
    pub fn new() -> MmioBus {
        MmioBus::default()
    }

    /// Puts `device` on the bus at `range`, under `name` (used in messages
    /// and listings, e.g. "pc-testdev" or "lapic"). Refused, with nothing
    /// changed, if the range overlaps one already registered.
    pub fn register(
        &mut self,
        name: &str,
        range: MmioRange,
        device: Box<dyn MmioDevice>,
    ) -> Result<(), MmioError> {
        // Every region before `index` ends at or below our base. The region
        // at `index` ends above it, so it overlaps us unless it starts at or
        // after our end, and then so do all the regions after it (the map
        // is sorted and disjoint). One comparison decides.
        let index = self
            .regions
            .partition_point(|r| r.range.end() <= u64::from(range.base.0));
        if let Some(existing) = self.regions.get(index).filter(|r| r.range.overlaps(&range)) {
            return Err(MmioError::Overlap {
                name: name.to_string(),
                range,
                existing: existing.name.clone(),
                existing_range: existing.range,
            });
        }
        self.regions.insert(
            index,
            Region {
                name: name.to_string(),
                range,
                device,
            },
        );
        Ok(())
    }

    /// The name and range of the device that claims `addr`, if any.
    pub fn region_at(&self, addr: GuestPhysAddr) -> Option<(&str, MmioRange)> {
        self.index_at(addr)
            .map(|i| (self.regions[i].name.as_str(), self.regions[i].range))
    }

    /// Whether some device claims `addr`. The native layer asks this before
    /// mapping a page, so that device pages always trap.
    pub fn contains(&self, addr: GuestPhysAddr) -> bool {
        self.index_at(addr).is_some()
    }

    /// Every device's state, in address order.
    pub fn state(&self) -> Vec<MmioDeviceState> {
        self.regions.iter().map(|r| MmioDeviceState { name: r.name.clone(), state: r.device.save_state() }).collect()
    }

    /// Checks that `states` is a state of exactly these devices that each
    /// accepts; nothing changes.
    pub fn check(&self, states: &[MmioDeviceState]) -> Result<(), MmioStateError> {
        let names = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(", ");
        let present = names(&mut self.regions.iter().map(|r| r.name.as_str()));
        let saved = names(&mut states.iter().map(|s| s.name.as_str()));
        if present != saved {
            return Err(MmioStateError::Devices { saved, present });
        }
        for (region, saved) in self.regions.iter().zip(states) {
            region
                .device
                .check_state(&saved.state)
                .map_err(|problem| MmioStateError::Device { name: region.name.clone(), problem })?;
        }
        Ok(())
    }

    /// Puts every device back in `states`, taken with [`MmioBus::state`].
    /// On error nothing changes.
    pub fn restore(&mut self, states: &[MmioDeviceState]) -> Result<(), MmioStateError> {
        self.check(states)?;
        for (region, saved) in self.regions.iter_mut().zip(states) {
            region.device.restore_state(&saved.state);
        }
        Ok(())
    }

    /// Every registered device's name and range, in address order.
    pub fn regions(&self) -> impl Iterator<Item = (&str, MmioRange)> + '_ {
        self.regions.iter().map(|r| (r.name.as_str(), r.range))
    }

    /// Reads `buf.len()` bytes at `addr`: device pieces from their devices,
    /// unassigned pieces as [`UNASSIGNED_MEMORY_BYTE`]. Bytes that would lie
    /// past 4 GiB read as unassigned too; `Machine` wraps accesses at 4 GiB
    /// before they get here.
    pub fn read(&mut self, addr: GuestPhysAddr, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let at = u64::from(addr.0) + done as u64;
            let (owner, len) = self.owner(at, buf.len() - done);
            let piece = &mut buf[done..done + len];
            match owner {
                Some(i) => {
                    let region = &mut self.regions[i];
                    let offset = at - u64::from(region.range.base.0);
                    for (start, size) in aligned_pieces(offset, len) {
                        let rel = (start - offset) as usize;
                        region.device.read(start, &mut piece[rel..rel + size]);
                    }
                }
                None => piece.fill(UNASSIGNED_MEMORY_BYTE),
            }
            done += len;
        }
    }

    /// Writes `data` at `addr`: device pieces to their devices; unassigned
    /// pieces (and anything past 4 GiB) are dropped.
    pub fn write(&mut self, addr: GuestPhysAddr, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = u64::from(addr.0) + done as u64;
            let (owner, len) = self.owner(at, data.len() - done);
            if let Some(i) = owner {
                let region = &mut self.regions[i];
                let offset = at - u64::from(region.range.base.0);
                let piece = &data[done..done + len];
                for (start, size) in aligned_pieces(offset, len) {
                    let rel = (start - offset) as usize;
                    region.device.write(start, &piece[rel..rel + size]);
                }
            }
            done += len;
        }
    }

    /// The index of the region containing `addr`.
    fn index_at(&self, addr: GuestPhysAddr) -> Option<usize> {
        let a = u64::from(addr.0);
        let i = self.regions.partition_point(|r| r.range.end() <= a);
        self.regions
            .get(i)
            .filter(|r| r.range.contains(addr))
            .map(|_| i)
    }

    /// Who owns the byte at `at` (a region index, or None for unassigned),
    /// and how many of the next `len` bytes share that owner: up to the end
    /// of the region, or up to the start of the next region.
    fn owner(&self, at: u64, len: usize) -> (Option<usize>, usize) {
        let i = self.regions.partition_point(|r| r.range.end() <= at);
        let (owner, limit) = match self.regions.get(i) {
            Some(r) if u64::from(r.range.base.0) <= at => (Some(i), r.range.end()),
            Some(r) => (None, u64::from(r.range.base.0)),
            None => (None, u64::MAX),
        };
        let run = (limit - at).min(len as u64) as usize;
        (owner, run)
    }
}

/// Cuts `len` bytes at device offset `offset` into naturally aligned
/// pieces of 8, 4, 2 or 1 bytes, lowest first: at each step the largest
/// size that divides the current offset and fits in what is left. Yields
/// (offset, size).
pub fn aligned_pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize)> {
    let end = offset + len as u64;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let left = end - at;
        let size = [8u64, 4, 2, 1]
            .into_iter()
            .find(|&s| at % s == 0 && s <= left)
            .unwrap_or(1);
        let piece = (at, size as usize);
        at += size;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// One access a device saw: (write?, offset, bytes).
    type Seen = (bool, u64, Vec<u8>);

    /// A device that records every access and answers reads with the low
    /// byte of each offset, so a test sees which device byte went where.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Seen>>>);

    impl Recorder {
        fn take(&self) -> Vec<Seen> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl MmioDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset + i as u64) as u8;
            }
            self.0.lock().unwrap().push((false, offset, data.to_vec()));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((true, offset, data.to_vec()));
        }
        fn save_state(&self) -> Vec<u8> {
            Vec::new()
        }
        fn check_state(&self, state: &[u8]) -> Result<(), String> {
            if state.is_empty() {
                Ok(())
            } else {
                Err(format!("a recorder has no state, but the snapshot holds {} bytes", state.len()))
            }
        }
        fn restore_state(&mut self, _state: &[u8]) {}
    }

    fn range(base: u32, len: u64) -> MmioRange {
        MmioRange::new(GuestPhysAddr(base), len).unwrap()
    }

    fn bus_with(ranges: &[(u32, u64)]) -> (MmioBus, Vec<Recorder>) {
        let mut bus = MmioBus::new();
        let mut recorders = Vec::new();
        for (i, &(base, len)) in ranges.iter().enumerate() {
            let rec = Recorder::default();
            bus.register(&format!("dev{i}"), range(base, len), Box::new(rec.clone()))
                .unwrap();
            recorders.push(rec);
        }
        (bus, recorders)
    }

    #[test]
    fn ranges_must_be_whole_pages_below_4_gib() {
        // (base, len, accepted)
        let cases: &[(u32, u64, bool)] = &[
            (0xFF00_0000, 0x1_0000, true),
            (0xFFFF_F000, 0x1000, true),
            (0x0000_0000, 0x1000, true),
            (0xFF00_0800, 0x1000, false),
            (0xFF00_0000, 0x800, false),
            (0xFF00_0000, 0, false),
            (0xFFFF_F000, 0x2000, false),
            (0x8000_0000, 1 << 32, false),
        ];
        for &(base, len, ok) in cases {
            let result = MmioRange::new(GuestPhysAddr(base), len);
            assert_eq!(
                result.is_ok(),
                ok,
                "base {base:#x} len {len:#x}: {result:?}"
            );
        }
        assert!(matches!(
            MmioRange::new(GuestPhysAddr(0xFFFF_F000), 0x2000),
            Err(MmioError::PastEnd { .. })
        ));
        assert_eq!(range(0xFFFF_F000, 0x1000).end(), 1 << 32);
    }

    #[test]
    fn overlapping_registrations_are_refused() {
        let (mut bus, _) = bus_with(&[(0x1000_0000, 0x2000), (0x2000_0000, 0x1000)]);
        // (base, len, accepted)
        let cases: &[(u32, u64, bool)] = &[
            (0x1000_0000, 0x1000, false),
            (0x0FFF_F000, 0x2000, false),
            (0x1000_1000, 0x1000, false),
            (0x0FFF_0000, 0x10_0000, false),
            (0x1FFF_F000, 0x2000, false),
            (0x0000_0000, 0x1000_0000, true),
            (0x1000_2000, 0x1000, true),
            (0x2000_1000, 0x1000, true),
        ];
        for &(base, len, ok) in cases {
            let before: Vec<_> = bus.regions().map(|(n, r)| (n.to_string(), r)).collect();
            let result = bus.register("new", range(base, len), Box::new(Recorder::default()));
            assert_eq!(
                result.is_ok(),
                ok,
                "base {base:#x} len {len:#x}: {result:?}"
            );
            if !ok {
                let after: Vec<_> = bus.regions().map(|(n, r)| (n.to_string(), r)).collect();
                assert_eq!(before, after, "a refused registration changed the map");
                let message = result.unwrap_err().to_string();
                assert!(message.contains("overlaps dev"), "{message}");
            }
        }
        let bases: Vec<u32> = bus.regions().map(|(_, r)| r.base().0).collect();
        let mut sorted = bases.clone();
        sorted.sort_unstable();
        assert_eq!(
            bases, sorted,
            "the map stays sorted whatever the order of registration"
        );
        assert_eq!(bases.len(), 5);
    }

    #[test]
    fn lookup_finds_the_owner_at_every_edge() {
        let (bus, _) = bus_with(&[
            (0x2000_0000, 0x1000),
            (0x1000_0000, 0x2000),
            (0xFFFF_F000, 0x1000),
        ]);
        // (address, owner)
        let cases: &[(u32, Option<&str>)] = &[
            (0x0FFF_FFFF, None),
            (0x1000_0000, Some("dev1")),
            (0x1000_1FFF, Some("dev1")),
            (0x1000_2000, None),
            (0x2000_0000, Some("dev0")),
            (0x2000_0FFF, Some("dev0")),
            (0x2000_1000, None),
            (0xFFFF_EFFF, None),
            (0xFFFF_F000, Some("dev2")),
            (0xFFFF_FFFF, Some("dev2")),
            (0, None),
        ];
        for &(addr, owner) in cases {
            assert_eq!(
                bus.region_at(GuestPhysAddr(addr)).map(|(n, _)| n),
                owner,
                "address {addr:#x}"
            );
            assert_eq!(bus.contains(GuestPhysAddr(addr)), owner.is_some());
        }
    }

    #[test]
    fn aligned_pieces_are_the_largest_that_fit() {
        // (offset, len, pieces)
        type Pieces = &'static [(u64, usize)];
        let cases: &[(u64, usize, Pieces)] = &[
            (0, 1, &[(0, 1)]),
            (0, 2, &[(0, 2)]),
            (0, 4, &[(0, 4)]),
            (8, 8, &[(8, 8)]),
            (1, 4, &[(1, 1), (2, 2), (4, 1)]),
            (2, 4, &[(2, 2), (4, 2)]),
            (3, 4, &[(3, 1), (4, 2), (6, 1)]),
            (2, 6, &[(2, 2), (4, 4)]),
            (4, 8, &[(4, 4), (8, 4)]),
            (0xFFE, 4, &[(0xFFE, 2), (0x1000, 2)]),
            (5, 3, &[(5, 1), (6, 2)]),
            (0, 0, &[]),
        ];
        for &(offset, len, want) in cases {
            let got: Vec<_> = aligned_pieces(offset, len).collect();
            assert_eq!(got, want, "offset {offset:#x} len {len}");
            assert_eq!(got.iter().map(|p| p.1).sum::<usize>(), len);
        }
    }

    #[test]
    fn accesses_are_split_at_device_edges_and_into_aligned_pieces() {
        let (mut bus, recs) = bus_with(&[(0x1000, 0x1000), (0x2000, 0x1000)]);
        // An access, the pieces each device must see as (offset, length),
        // and the bytes the whole read returns.
        struct Case {
            addr: u32,
            len: usize,
            dev0: &'static [(u64, usize)],
            dev1: &'static [(u64, usize)],
            bytes: &'static [u8],
        }
        let cases = [
            Case {
                addr: 0x1010,
                len: 4,
                dev0: &[(0x10, 4)],
                dev1: &[],
                bytes: &[0x10, 0x11, 0x12, 0x13],
            },
            Case {
                addr: 0x1011,
                len: 4,
                dev0: &[(0x11, 1), (0x12, 2), (0x14, 1)],
                dev1: &[],
                bytes: &[0x11, 0x12, 0x13, 0x14],
            },
            Case {
                addr: 0x1008,
                len: 8,
                dev0: &[(0x8, 8)],
                dev1: &[],
                bytes: &[8, 9, 10, 11, 12, 13, 14, 15],
            },
            // Across the boundary between two devices.
            Case {
                addr: 0x1FFE,
                len: 4,
                dev0: &[(0xFFE, 2)],
                dev1: &[(0, 2)],
                bytes: &[0xFE, 0xFF, 0, 1],
            },
            // From unassigned space into a device.
            Case {
                addr: 0x0FFE,
                len: 4,
                dev0: &[(0, 2)],
                dev1: &[],
                bytes: &[0, 0, 0, 1],
            },
            // From a device into unassigned space.
            Case {
                addr: 0x2FFF,
                len: 2,
                dev0: &[],
                dev1: &[(0xFFF, 1)],
                bytes: &[0xFF, 0],
            },
            Case {
                addr: 0x3000,
                len: 4,
                dev0: &[],
                dev1: &[],
                bytes: &[0, 0, 0, 0],
            },
        ];
        for case in &cases {
            let mut buf = vec![0xEE; case.len];
            bus.read(GuestPhysAddr(case.addr), &mut buf);
            assert_eq!(buf, case.bytes, "read at {:#x}", case.addr);
            for (rec, want) in recs.iter().zip([case.dev0, case.dev1]) {
                let got: Vec<(u64, usize)> = rec
                    .take()
                    .into_iter()
                    .map(|(write, offset, data)| {
                        assert!(!write);
                        (offset, data.len())
                    })
                    .collect();
                assert_eq!(got, want, "read at {:#x}", case.addr);
            }
            // The same access as a write carries the same pieces, each with
            // its own bytes of the value.
            let data: Vec<u8> = (0..case.len as u8).map(|i| 0xA0 + i).collect();
            bus.write(GuestPhysAddr(case.addr), &data);
            for ((rec, want), device_base) in recs
                .iter()
                .zip([case.dev0, case.dev1])
                .zip([0x1000u64, 0x2000])
            {
                let seen = rec.take();
                assert_eq!(seen.len(), want.len(), "write at {:#x}", case.addr);
                for ((write, offset, bytes), &(want_offset, want_len)) in seen.into_iter().zip(want)
                {
                    assert!(write);
                    assert_eq!((offset, bytes.len()), (want_offset, want_len));
                    // The piece carries the bytes of the value at its own
                    // place in the guest's access.
                    let rel = (device_base + offset - u64::from(case.addr)) as usize;
                    assert_eq!(
                        bytes,
                        data[rel..rel + want_len].to_vec(),
                        "write at {:#x}",
                        case.addr
                    );
                }
            }
        }
    }

    #[test]
    fn unassigned_space_and_the_top_of_memory() {
        let (mut bus, recs) = bus_with(&[(0xFFFF_F000, 0x1000)]);
        let mut buf = [0xEE; 4];
        bus.read(GuestPhysAddr(0x8000_0000), &mut buf);
        assert_eq!(buf, [UNASSIGNED_MEMORY_BYTE; 4]);
        bus.write(GuestPhysAddr(0x8000_0000), &[1, 2, 3, 4]);
        assert!(recs[0].take().is_empty());
        // The last bytes of the 4 GiB space belong to the device; anything
        // past them (which `Machine` never passes) reads as unassigned.
        let mut buf = [0xEE; 4];
        bus.read(GuestPhysAddr(0xFFFF_FFFE), &mut buf);
        assert_eq!(buf, [0xFE, 0xFF, 0, 0]);
        assert_eq!(recs[0].take(), vec![(false, 0xFFE, vec![0xFE, 0xFF])]);
    }

    /// A machine with the smallest RAM (2 MiB) and no output.
    fn machine() -> crate::Machine {
        let ram = crate::Ram::anonymous(crate::memory::MIN_RAM_SIZE).unwrap();
        crate::Machine::new(ram, Box::new(std::io::sink()))
    }

    #[test]
    fn the_machine_routes_ram_then_devices_then_unassigned() {
        use crate::Bus;
        let mut m = machine();
        let ram_end = crate::memory::MIN_RAM_SIZE;
        let rec = Recorder::default();
        m.add_mmio_device("rec", range(ram_end, 0x1000), Box::new(rec.clone()))
            .unwrap();
        m.add_pc_testdev().unwrap();

        // (address, is RAM, is MMIO)
        let cases: &[(u32, bool, bool)] = &[
            (0, true, false),
            (ram_end - 1, true, false),
            (ram_end, false, true),
            (ram_end + 0xFFF, false, true),
            (ram_end + 0x1000, false, false),
            (0xFEFF_FFFF, false, false),
            (0xFF00_0000, false, true),
            (0xFF00_FFFF, false, true),
            (0xFF01_0000, false, false),
            (0xFFC0_0000, false, false),
        ];
        for &(addr, ram, mmio) in cases {
            assert_eq!(m.is_ram(GuestPhysAddr(addr)), ram, "is_ram({addr:#x})");
            assert_eq!(m.mmio_at(GuestPhysAddr(addr)), mmio, "mmio_at({addr:#x})");
        }

        // An access across the end of RAM: two bytes of RAM, then the
        // device's first two, one aligned word.
        m.write_phys(GuestPhysAddr(ram_end - 2), &[1, 2, 3, 4]);
        assert_eq!(rec.take(), vec![(true, 0, vec![3, 4])]);
        let mut buf = [0xEE; 4];
        m.read_phys(GuestPhysAddr(ram_end - 2), &mut buf);
        assert_eq!(
            buf,
            [1, 2, 0, 1],
            "RAM kept 1, 2; the recorder reads its offsets"
        );
        assert_eq!(rec.take(), vec![(false, 0, vec![0, 1])]);

        // The test device through the machine, and the unassigned page
        // after it.
        m.write_phys(GuestPhysAddr(0xFF00_FFFE), &[0xAA, 0xBB, 0xCC, 0xDD]);
        let mut buf = [0xEE; 4];
        m.read_phys(GuestPhysAddr(0xFF00_FFFE), &mut buf);
        assert_eq!(buf, [0xAA, 0xBB, 0, 0]);
        let mut unaligned = [0; 4];
        m.write_phys(GuestPhysAddr(0xFF00_0101), &[1, 2, 3, 4]);
        m.read_phys(GuestPhysAddr(0xFF00_0100), &mut unaligned);
        assert_eq!(unaligned, [0, 1, 2, 3]);
    }

    #[test]
    fn the_machine_refuses_devices_over_ram_or_each_other() {
        let mut m = machine();
        let ram_end = crate::memory::MIN_RAM_SIZE;
        let cases: &[(u32, u64)] = &[
            (0, 0x1000),
            (ram_end - 0x1000, 0x1000),
            (ram_end - 0x1000, 0x2000),
        ];
        for &(base, len) in cases {
            let err = m
                .add_mmio_device("low", range(base, len), Box::new(Recorder::default()))
                .unwrap_err();
            assert!(matches!(err, MmioError::OverlapsRam { .. }), "{err}");
        }
        m.add_pc_testdev().unwrap();
        let err = m.add_pc_testdev().unwrap_err();
        assert!(
            err.to_string()
                .contains("overlaps pc-testdev at [0xff000000, 0xff010000)"),
            "{err}"
        );
        assert_eq!(m.mmio().regions().count(), 1);
    }

    #[test]
    fn an_empty_bus_is_all_unassigned() {
        let mut bus = MmioBus::new();
        let mut buf = [0xEE; 3];
        bus.read(GuestPhysAddr(0xFEC0_0000), &mut buf);
        assert_eq!(buf, [0; 3]);
        assert!(!bus.contains(GuestPhysAddr(0xFEC0_0000)));
        assert_eq!(format!("{bus:?}"), "[]");
    }
}
