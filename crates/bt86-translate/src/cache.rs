//! The translation cache (TC): placement, lookup, chaining, the indirect
//! branch table, invalidation of one guest page, and the full flush.
//!
//! The cache writes code only through [`MonitorMemory`], which the native
//! layer implements over the monitor area (through a writable alias of the
//! executable mapping) and tests implement over a plain buffer. It never
//! executes anything.
//!
//! The TC stays writable for its whole life, unlike a JIT that publishes
//! code once: chaining patches exit stubs of units that are already placed,
//! and invalidation un-patches them. What keeps the guest from writing it is
//! segment truncation, not page protection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::classify::Mode;
use crate::emit;
use crate::layout::{TcAddr, IB_ENTRIES, IB_TABLE, MONITOR_BASE, TC_SIZE, TC_START};
use crate::unit::{translate_unit_into, CodeSource, ExitKind, MapEntry, MapKind, TranslatedInsn, Unit, UnitEnd};

/// A small, fast hasher for the cache's integer keys (guest addresses and
/// page numbers), in the style of rustc's FxHasher. The standard SipHash
/// resists flooding by untrusted keys; here a guest that chose colliding
/// addresses could only slow down its own translation.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map with [`FastHasher`], for keys that are guest addresses.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Memory of the monitor area, as the cache writes it.
pub trait MonitorMemory {
    /// Writes `bytes` at `offset` from the start of the monitor area.
    fn write(&mut self, offset: u32, bytes: &[u8]);
}

/// A plain buffer standing in for the monitor area, for tests and for
/// golden translations that are never run.
pub struct BufferMemory(pub Vec<u8>);

impl BufferMemory {
    pub fn new() -> BufferMemory {
        BufferMemory(vec![0; crate::layout::MONITOR_SIZE as usize])
    }
    /// The bytes at TC address `addr`.
    pub fn at(&self, addr: TcAddr, len: usize) -> &[u8] {
        let off = (addr.0 - MONITOR_BASE) as usize;
        &self.0[off..off + len]
    }
}

impl Default for BufferMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl MonitorMemory for BufferMemory {
    fn write(&mut self, offset: u32, bytes: &[u8]) {
        let off = offset as usize;
        self.0[off..off + bytes.len()].copy_from_slice(bytes);
    }
}

/// Index of a unit in the cache; stable until the next flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(pub u32);

/// The value an exit stub leaves in `gs:[EXIT_ID]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitId(pub u32);

impl ExitId {
    /// The shared indirect-branch miss stub.
    pub const INDIRECT_MISS: ExitId = ExitId(0);
    /// Written by the native fault handler, not by any stub.
    pub const FAULT: ExitId = ExitId(u32::MAX);
    /// Written by the native layer before an asynchronous exit.
    pub const ASYNC: ExitId = ExitId(u32::MAX - 1);
    /// The return stub used when guest code is called directly, without
    /// translation (benchmarks and differential tests).
    pub const DIRECT_RETURN: ExitId = ExitId(u32::MAX - 2);
}

/// A unit placed in the cache.
#[derive(Clone, Debug)]
pub struct PlacedUnit {
    pub tc: TcAddr,
    pub tc_len: u32,
    pub guest_start: u32,
    pub guest_end: u32,
    /// The physical frames of the guest pages the unit's code came from
    /// (one, or two when its last instruction runs across a page end).
    pub frames: Frames,
    pub mode: Mode,
    pub map: Box<[MapEntry]>,
    pub insns: Box<[TranslatedInsn]>,
    pub end: UnitEnd,
    /// First exit id of this unit; its exits are consecutive.
    pub first_exit: u32,
    pub exit_count: u32,
    /// Exit stubs of other units chained into this one.
    pub incoming: Vec<ExitId>,
    /// Its indirect-branch trampoline, once one was needed, and whether it
    /// is guarded (hits only below CPL 3).
    pub trampoline: Option<TcAddr>,
    pub trampoline_guarded: bool,
    /// Cleared by invalidation; the code stays until the next flush.
    pub valid: bool,
}

/// The physical frames a unit's code came from: one, or two when its last
/// instruction runs across a page end (a unit never starts a third page).
/// Kept inline: the cache places hundreds of thousands of units, and an
/// allocation for each one's frames showed in the translator's profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frames {
    len: u8,
    frames: [u32; 2],
}

impl std::ops::Deref for Frames {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.frames[..usize::from(self.len)]
    }
}

impl FromIterator<u32> for Frames {
    /// Takes the first two frames of the iterator (the only ones a unit
    /// can have).
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Frames {
        let mut out = Frames { len: 0, frames: [0; 2] };
        for frame in iter.into_iter().take(2) {
            out.frames[usize::from(out.len)] = frame;
            out.len += 1;
        }
        out
    }
}

/// An exit stub placed in the cache.
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub unit: UnitId,
    pub stub: TcAddr,
    /// The `rel32` of a `jcc` that jumps to this stub, retargeted by
    /// chaining.
    pub branch_site: Option<TcAddr>,
    pub kind: ExitKind,
    /// The unit this stub is chained to, if it was patched.
    pub chained_to: Option<UnitId>,
}

/// Counters of the translator, shown by `--stats` (brief §4.8).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TranslationStats {
    pub units: u64,
    pub guest_instructions: u64,
    pub guest_bytes: u64,
    pub tc_bytes: u64,
    pub ident: u64,
    /// Rewritten instructions by class: branch kinds and callout classes.
    pub rewritten: BTreeMap<&'static str, u64>,
    pub chain_patches: u64,
    pub trampolines: u64,
    pub invalidated_units: u64,
    pub invalidated_pages: u64,
    pub flushes: u64,
    /// Times the links that depend on linear mappings were cut (CR3
    /// writes and `invlpg` with paging on).
    pub unlinks: u64,
}

/// The translation cache.
pub struct TranslationCache {
    units: Vec<PlacedUnit>,
    /// Units by guest EIP, mode and the frame of their first page: with
    /// paging, the same linear address in two address spaces holds two
    /// units, and both stay usable across CR3 switches.
    by_key: FastMap<(u32, Mode, u32), UnitId>,
    /// Units by the physical frames their code came from.
    by_frame: FastMap<u32, Vec<UnitId>>,
    /// Chains whose two ends lie on different linear pages: cut when a
    /// linear-to-physical mapping may change (see
    /// [`TranslationCache::unlink_linear`]).
    cross_page_chains: Vec<ExitId>,
    exits: Vec<ExitRecord>,
    /// Next free byte of the TC, as an offset from `MONITOR_BASE`.
    next: u32,
    /// Where the permanent stubs end and units begin.
    units_start: u32,
    entry_trampoline: TcAddr,
    ib_miss: TcAddr,
    direct_return: TcAddr,
    /// Which trampoline each IB-table slot holds, for invalidation.
    ib_slots: FastMap<u16, UnitId>,
    generation: u64,
    /// Guest addresses before which every unit ends.
    breaks: BTreeSet<u32>,
    /// The unit being translated, whose buffers are reused.
    scratch: Unit,
    pub stats: TranslationStats,
}

/// Returned by [`TranslationCache::translate`] when the TC was flushed to
/// make room: every `UnitId` and `ExitId` from before is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flushed(pub bool);

impl TranslationCache {
    /// Creates the cache and writes its permanent stubs and an empty IB
    /// table into `mem`.
    pub fn new(mem: &mut dyn MonitorMemory) -> TranslationCache {
        let mut code = Vec::new();
        let entry = TC_START;
        emit::entry_trampoline(&mut code);
        let ib_miss = TC_START + code.len() as u32;
        emit::ib_miss_stub(&mut code, ExitId::INDIRECT_MISS.0);
        let direct_return = TC_START + code.len() as u32;
        emit::exit_stub(&mut code, ExitId::DIRECT_RETURN.0);
        let units_start = (TC_START + code.len() as u32 + 15) & !15;
        mem.write(TC_START, &code);
        let mut cache = TranslationCache {
            units: Vec::with_capacity(4096),
            by_key: FastMap::default(),
            by_frame: FastMap::default(),
            cross_page_chains: Vec::new(),
            exits: Vec::with_capacity(8192),
            next: units_start,
            units_start,
            entry_trampoline: TcAddr(MONITOR_BASE + entry),
            ib_miss: TcAddr(MONITOR_BASE + ib_miss),
            direct_return: TcAddr(MONITOR_BASE + direct_return),
            ib_slots: FastMap::default(),
            generation: 0,
            breaks: BTreeSet::new(),
            scratch: Unit::empty(),
            stats: TranslationStats::default(),
        };
        cache.reset_ib_table(mem);
        cache.reset_exits();
        cache
    }

    fn reset_exits(&mut self) {
        self.exits.clear();
        // Exit id 0 is the shared miss stub; it belongs to no unit.
        self.exits.push(ExitRecord {
            unit: UnitId(u32::MAX),
            stub: self.ib_miss,
            branch_site: None,
            kind: ExitKind::Branch { target: 0 },
            chained_to: None,
        });
    }

    fn reset_ib_table(&mut self, mem: &mut dyn MonitorMemory) {
        let miss = self.ib_miss.0.to_le_bytes();
        let table: Vec<u8> = (0..IB_ENTRIES).flat_map(|_| miss).collect();
        mem.write(IB_TABLE, &table);
        self.ib_slots.clear();
    }

    /// The 32-bit code the world switch far-jumps to.
    pub fn entry_trampoline(&self) -> TcAddr {
        self.entry_trampoline
    }

    /// The stub that ends a direct (untranslated) call into guest code:
    /// push it as the return address.
    pub fn direct_return(&self) -> TcAddr {
        self.direct_return
    }

    /// Counts flushes; ids from an older generation are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The unit for guest EIP `eip` in `mode` whose first page came from
    /// physical frame `frame` (without paging: `eip >> 12`).
    pub fn lookup(&self, eip: u32, mode: Mode, frame: u32) -> Option<UnitId> {
        self.by_key.get(&(eip, mode, frame)).copied()
    }

    pub fn unit(&self, id: UnitId) -> &PlacedUnit {
        &self.units[id.0 as usize]
    }

    pub fn exit(&self, id: ExitId) -> Option<&ExitRecord> {
        self.exits.get(id.0 as usize)
    }

    /// All units placed since the last flush, valid or not.
    pub fn units(&self) -> impl Iterator<Item = (UnitId, &PlacedUnit)> {
        self.units.iter().enumerate().map(|(i, u)| (UnitId(i as u32), u))
    }

    /// The unit containing TC address `addr`, if any (valid or not).
    pub fn unit_at(&self, addr: u32) -> Option<UnitId> {
        let i = self.units.partition_point(|u| u.tc.0 <= addr);
        let u = self.units.get(i.checked_sub(1)?)?;
        (addr < u.tc.0 + u.tc_len).then_some(UnitId((i - 1) as u32))
    }

    /// Resolves a host address inside translated code to the map entry that
    /// covers it: the guest instruction and how to restore guest state.
    pub fn locate(&self, addr: u32) -> Option<(UnitId, MapEntry)> {
        let id = self.unit_at(addr)?;
        let u = self.unit(id);
        let off = addr - u.tc.0;
        let i = u.map.partition_point(|m| m.tc_offset <= off);
        Some((id, *u.map.get(i.checked_sub(1)?)?))
    }

    /// If `addr` is exactly where a guest instruction's translation begins
    /// (in a valid unit), the guest EIP of that instruction: a point where
    /// translated code can be stopped and resumed in the monitor with no
    /// state to repair. Used by the asynchronous exit of the timer signal,
    /// so it only searches and never allocates.
    pub fn boundary_at(&self, addr: u32) -> Option<u32> {
        let id = self.unit_at(addr)?;
        let u = &self.units[id.0 as usize];
        if !u.valid {
            return None;
        }
        let off = addr - u.tc.0;
        let i = u.map.partition_point(|m| m.tc_offset < off);
        let m = u.map.get(i)?;
        (m.tc_offset == off).then_some(m.guest_eip)
    }

    /// Translates the unit at `eip` in `mode` and places it, flushing the
    /// whole cache first if it does not fit.
    pub fn translate(&mut self, mem: &mut dyn MonitorMemory, src: &mut dyn CodeSource, eip: u32, mode: Mode) -> (UnitId, Flushed) {
        let mut unit = std::mem::take(&mut self.scratch);
        translate_unit_into(&mut unit, src, eip, mode, &self.breaks);
        let frames: Frames = pages(unit.guest_start, unit.guest_end).map(|p| src.frame(p).unwrap_or(p)).collect();
        let mut flushed = Flushed(false);
        if self.next + unit.code.len() as u32 + 64 > TC_START + TC_SIZE {
            self.flush(mem);
            flushed = Flushed(true);
        }
        let id = self.place(mem, &mut unit, frames);
        self.scratch = unit;
        (id, flushed)
    }

    fn place(&mut self, mem: &mut dyn MonitorMemory, unit: &mut Unit, frames: Frames) -> UnitId {
        // Keep a unit's body (its code up to the first exit stub) inside one
        // 64-byte line when it fits in one: a small loop that straddles two
        // lines runs measurably slower (up to 2x for a tight matmul loop on
        // the machines we measured), because the CPU fetches and caches
        // decoded instructions per line.
        let body = unit.exits.first().map_or(unit.code.len() as u32, |e| e.stub_offset);
        if body <= 64 && (self.next % 64) + body > 64 {
            self.next = (self.next + 63) & !63;
        }
        let id = UnitId(self.units.len() as u32);
        let tc = TcAddr(MONITOR_BASE + self.next);
        let first_exit = self.exits.len() as u32;
        for (i, exit) in unit.exits.iter().enumerate() {
            let exit_id = first_exit + i as u32;
            let at = exit.stub_offset as usize + emit::EXIT_STUB_ID_OFFSET;
            unit.code[at..at + 4].copy_from_slice(&exit_id.to_le_bytes());
            self.exits.push(ExitRecord {
                unit: id,
                stub: tc.offset(exit.stub_offset),
                branch_site: exit.branch_site.map(|s| tc.offset(s)),
                kind: exit.kind,
                chained_to: None,
            });
        }
        mem.write(self.next, &unit.code);
        self.next = (self.next + unit.code.len() as u32 + 15) & !15;

        let s = &mut self.stats;
        s.units += 1;
        s.guest_instructions += unit.insns.len() as u64;
        s.guest_bytes += u64::from(unit.guest_end.wrapping_sub(unit.guest_start));
        s.tc_bytes += unit.code.len() as u64;
        for t in &unit.insns {
            match t.class {
                crate::Class::Ident => s.ident += 1,
                crate::Class::Branch(b) => *s.rewritten.entry(branch_class(b)).or_default() += 1,
                crate::Class::Callout(r) => *s.rewritten.entry(r.class()).or_default() += 1,
                crate::Class::Inline(_) => *s.rewritten.entry("segment-read-inline").or_default() += 1,
                crate::Class::Fault(_) => *s.rewritten.entry("fault").or_default() += 1,
            }
        }
        for &frame in frames.iter() {
            self.by_frame.entry(frame).or_default().push(id);
        }
        // Single-step units are used once and translated afresh each time,
        // so they are never found by lookup.
        if !unit.mode.single_step && !unit.mode.isolated {
            self.by_key.insert((unit.guest_start, unit.mode, frames[0]), id);
        }
        self.units.push(PlacedUnit {
            tc,
            tc_len: unit.code.len() as u32,
            guest_start: unit.guest_start,
            guest_end: unit.guest_end,
            frames,
            mode: unit.mode,
            map: unit.map.as_slice().into(),
            insns: unit.insns.as_slice().into(),
            end: unit.end,
            first_exit,
            exit_count: unit.exits.len() as u32,
            incoming: Vec::new(),
            trampoline: None,
            trampoline_guarded: false,
            valid: true,
        });
        id
    }

    /// Patches exit stub `exit` into a direct jump to unit `to` (chaining),
    /// so the next time no exit happens at all. Units translated for
    /// single-stepping are never chained: each must come back to the
    /// monitor.
    pub fn chain(&mut self, mem: &mut dyn MonitorMemory, exit: ExitId, to: UnitId) -> bool {
        let Some(rec) = self.exits.get(exit.0 as usize).copied() else { return false };
        if rec.chained_to.is_some() || rec.unit.0 == u32::MAX || !matches!(rec.kind, ExitKind::Branch { .. }) {
            return false;
        }
        let (from_unit, to_unit) = (self.unit(rec.unit), self.unit(to));
        let once = |u: &PlacedUnit| u.mode.single_step || u.mode.isolated;
        if !from_unit.valid || !to_unit.valid || once(from_unit) || once(to_unit) || to_unit.mode != from_unit.mode {
            return false;
        }
        let jmp = emit::jmp_rel32(rec.stub.0, to_unit.tc.0);
        mem.write(rec.stub.0 - MONITOR_BASE, &jmp);
        if let Some(site) = rec.branch_site {
            mem.write(site.0 - MONITOR_BASE, &rel32(site, to_unit.tc));
        }
        let (from_unit, to_unit) = (self.unit(rec.unit), self.unit(to));
        if from_unit.guest_start >> 12 != to_unit.guest_start >> 12 || from_unit.frames.len() > 1 || to_unit.frames.len() > 1 {
            self.cross_page_chains.push(exit);
        }
        self.exits[exit.0 as usize].chained_to = Some(to);
        self.units[to.0 as usize].incoming.push(exit);
        self.stats.chain_patches += 1;
        true
    }

    /// Makes indirect branches to unit `id` hit: gives it a trampoline and
    /// points its IB-table slot there (replacing whatever shared the slot).
    /// A `guarded` trampoline hits only below CPL 3 (for code on
    /// supervisor-only pages; see [`emit::trampoline`]).
    pub fn install_indirect(&mut self, mem: &mut dyn MonitorMemory, id: UnitId, guarded: bool) -> bool {
        let u = self.unit(id);
        if !u.valid || u.mode != Mode::default() {
            return false;
        }
        let (eip, unit_tc) = (u.guest_start, u.tc);
        let tramp = match u.trampoline {
            Some(t) if u.trampoline_guarded == guarded => t,
            _ => {
                let probe = emit::trampoline(0, 0, 0, 0, guarded).len() as u32;
                if self.next + probe > TC_START + TC_SIZE {
                    return false;
                }
                let at = TcAddr(MONITOR_BASE + self.next);
                let code = emit::trampoline(at.0, eip, unit_tc.0, self.ib_miss.0, guarded);
                mem.write(self.next, &code);
                self.next = (self.next + code.len() as u32 + 15) & !15;
                self.units[id.0 as usize].trampoline = Some(at);
                self.units[id.0 as usize].trampoline_guarded = guarded;
                self.stats.trampolines += 1;
                at
            }
        };
        let slot = eip as u16;
        mem.write(IB_TABLE + u32::from(slot) * 4, &tramp.0.to_le_bytes());
        self.ib_slots.insert(slot, id);
        true
    }

    /// Drops every unit with code from physical frame `frame`: un-chains
    /// the stubs that jump into them and clears their IB-table slots. Their
    /// TC space is reclaimed at the next flush.
    pub fn invalidate_page(&mut self, mem: &mut dyn MonitorMemory, frame: u32) -> usize {
        let Some(ids) = self.by_frame.remove(&frame) else { return 0 };
        let count = ids.into_iter().filter(|&id| self.invalidate_unit(mem, id)).count();
        self.stats.invalidated_units += count as u64;
        self.stats.invalidated_pages += 1;
        count
    }

    /// Drops one unit (see [`TranslationCache::invalidate_page`]); false if
    /// it was already gone.
    fn invalidate_unit(&mut self, mem: &mut dyn MonitorMemory, id: UnitId) -> bool {
        if !self.units[id.0 as usize].valid {
            return false;
        }
        self.units[id.0 as usize].valid = false;
        let u = &self.units[id.0 as usize];
        let key = (u.guest_start, u.mode, u.frames[0]);
        if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
        // Un-chain: put the original exit stubs back.
        for exit in std::mem::take(&mut self.units[id.0 as usize].incoming) {
            self.unchain(mem, exit);
        }
        // Its own outgoing chains no longer matter, but the targets must
        // forget them so a later invalidation does not patch dead code.
        let u = &self.units[id.0 as usize];
        for e in u.first_exit..u.first_exit + u.exit_count {
            if let Some(target) = self.exits[e as usize].chained_to {
                self.units[target.0 as usize].incoming.retain(|x| x.0 != e);
            }
        }
        let slot = self.units[id.0 as usize].guest_start as u16;
        if self.ib_slots.get(&slot) == Some(&id) {
            mem.write(IB_TABLE + u32::from(slot) * 4, &self.ib_miss.0.to_le_bytes());
            self.ib_slots.remove(&slot);
        }
        true
    }

    /// Puts exit stub `exit` back as it was before chaining.
    fn unchain(&mut self, mem: &mut dyn MonitorMemory, exit: ExitId) {
        let rec = &mut self.exits[exit.0 as usize];
        rec.chained_to = None;
        let mut stub = Vec::with_capacity(emit::EXIT_STUB_LEN);
        emit::exit_stub(&mut stub, exit.0);
        mem.write(rec.stub.0 - MONITOR_BASE, &stub);
        if let Some(site) = rec.branch_site {
            mem.write(site.0 - MONITOR_BASE, &rel32(site, rec.stub));
        }
    }

    /// Forgets every link that was made for one linear-to-physical mapping:
    /// chains between different linear pages, and the indirect-branch
    /// table. For a CR3 write or `invlpg` with paging on.
    ///
    /// Units themselves stay: they are keyed by the frame of their code,
    /// and the monitor checks that frame whenever it looks a unit up. A
    /// chain between two units on the same linear page also stays, because
    /// if that page now maps elsewhere the source unit is unreachable too:
    /// the monitor's lookup will not return it, and every cross-page way in
    /// is cut here.
    pub fn unlink_linear(&mut self, mem: &mut dyn MonitorMemory) {
        for exit in std::mem::take(&mut self.cross_page_chains) {
            let Some(to) = self.exits[exit.0 as usize].chained_to else { continue };
            self.units[to.0 as usize].incoming.retain(|x| *x != exit);
            self.unchain(mem, exit);
        }
        let miss = self.ib_miss.0.to_le_bytes();
        for (slot, _) in std::mem::take(&mut self.ib_slots) {
            mem.write(IB_TABLE + u32::from(slot) * 4, &miss);
        }
        self.stats.unlinks += 1;
    }

    /// Whether any valid unit holds code from physical frame `frame`.
    pub fn page_has_code(&self, frame: u32) -> bool {
        self.by_frame.get(&frame).is_some_and(|ids| ids.iter().any(|id| self.units[id.0 as usize].valid))
    }

    /// The valid units with code from physical frame `frame`.
    pub fn units_on_page(&self, frame: u32) -> impl Iterator<Item = UnitId> + '_ {
        self.by_frame.get(&frame).into_iter().flatten().copied().filter(|id| self.units[id.0 as usize].valid)
    }

    /// Physical frames that hold translated code.
    pub fn code_pages(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_frame.keys().copied()
    }

    /// Sets the guest addresses before which units must end, and drops
    /// every unit that runs across one of them so it is translated again.
    pub fn set_breaks(&mut self, mem: &mut dyn MonitorMemory, breaks: BTreeSet<u32>) {
        let stale: Vec<UnitId> = self
            .units()
            .filter(|(_, u)| u.valid && u.insns.iter().skip(1).any(|t| breaks.contains(&t.insn.ip32()) || self.breaks.contains(&t.insn.ip32())))
            .map(|(id, _)| id)
            .collect();
        for id in stale {
            if self.invalidate_unit(mem, id) {
                self.stats.invalidated_units += 1;
            }
        }
        self.breaks = breaks;
    }

    /// Empties the whole cache.
    pub fn flush(&mut self, mem: &mut dyn MonitorMemory) {
        self.units.clear();
        self.by_key.clear();
        self.by_frame.clear();
        self.cross_page_chains.clear();
        self.reset_exits();
        self.reset_ib_table(mem);
        self.next = self.units_start;
        self.generation += 1;
        self.stats.flushes += 1;
    }

    /// Bytes of TC in use.
    pub fn used(&self) -> u32 {
        self.next - self.units_start
    }
}

/// The `rel32` field at `site` that makes its jump land on `to`.
fn rel32(site: TcAddr, to: TcAddr) -> [u8; 4] {
    to.0.wrapping_sub(site.0 + 4).to_le_bytes()
}

fn branch_class(b: crate::Branch) -> &'static str {
    use crate::Branch as B;
    match b {
        B::Jump { .. } => "jmp",
        B::Conditional { .. } => "jcc",
        B::ShortConditional { .. } => "loop/jecxz",
        B::Call { .. } => "call",
        B::Return { .. } => "ret",
        B::IndirectJump => "jmp-indirect",
        B::IndirectCall => "call-indirect",
    }
}

/// The 4 KiB guest pages covered by `[start, end)`.
fn pages(start: u32, end: u32) -> impl Iterator<Item = u32> {
    let last = end.wrapping_sub(1).max(start) >> 12;
    (start >> 12)..=last
}

/// The guest EIP a fault at a map entry restarts, and whether ECX/EDX must
/// be taken back from the scratch slots.
pub fn restart_point(entry: &MapEntry) -> (u32, bool) {
    (entry.guest_eip, entry.kind == MapKind::ScratchSequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_at(base: u32, bytes: &[u8]) -> (u32, Vec<u8>) {
        (base, bytes.to_vec())
    }

    #[test]
    fn chaining_and_invalidation_patch_and_restore_stubs() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        // 0x1000: nop; jmp 0x2000        0x2000: ret
        let (b1, c1) = code_at(0x1000, &[0x90, 0xE9, 0xFA, 0x0F, 0, 0]);
        let (b2, c2) = code_at(0x2000, &[0xC3]);
        let (u1, _) = tc.translate(&mut mem, &mut (b1, &c1[..]), 0x1000, Mode::default());
        let (u2, _) = tc.translate(&mut mem, &mut (b2, &c2[..]), 0x2000, Mode::default());
        let exit = ExitId(tc.unit(u1).first_exit);
        assert!(matches!(tc.exit(exit).unwrap().kind, ExitKind::Branch { target: 0x2000 }));
        let stub = tc.exit(exit).unwrap().stub;
        let before = mem.at(stub, 18).to_vec();
        assert!(tc.chain(&mut mem, exit, u2));
        assert_eq!(mem.at(stub, 5), emit::jmp_rel32(stub.0, tc.unit(u2).tc.0));
        assert_eq!(tc.invalidate_page(&mut mem, 0x2), 1);
        assert_eq!(mem.at(stub, 18), &before[..]);
        assert_eq!(tc.lookup(0x2000, Mode::default(), 0x2), None);
        assert_eq!(tc.lookup(0x1000, Mode::default(), 0x1), Some(u1));
    }

    /// Guest code as paging shows it: linear pages map to chosen frames,
    /// or cannot be fetched.
    struct Paged<'a> {
        base: u32,
        code: &'a [u8],
        frames: &'a [(u32, Option<u32>)],
    }

    impl CodeSource for Paged<'_> {
        fn read_code(&mut self, eip: u32, buf: &mut [u8]) {
            (self.base, self.code).read_code(eip, buf);
        }
        fn frame(&mut self, page: u32) -> Option<u32> {
            self.frames.iter().find(|(p, _)| *p == page).and_then(|(_, f)| *f)
        }
    }

    #[test]
    fn units_are_keyed_and_invalidated_by_the_frame_of_their_code() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        // The same linear address in two address spaces: frames 0x70 and 0x80.
        let code = [0x40, 0xC3]; // inc eax ; ret
        let (a, _) = tc.translate(&mut mem, &mut Paged { base: 0x1000, code: &code, frames: &[(1, Some(0x70))] }, 0x1000, Mode::default());
        let (b, _) = tc.translate(&mut mem, &mut Paged { base: 0x1000, code: &code, frames: &[(1, Some(0x80))] }, 0x1000, Mode::default());
        assert_ne!(a, b);
        assert_eq!(&*tc.unit(a).frames, &[0x70]);
        assert_eq!(tc.lookup(0x1000, Mode::default(), 0x70), Some(a));
        assert_eq!(tc.lookup(0x1000, Mode::default(), 0x80), Some(b));
        assert_eq!(tc.lookup(0x1000, Mode::default(), 0x1), None);
        // A write through any alias of frame 0x80 drops only its unit.
        assert_eq!(tc.invalidate_page(&mut mem, 0x80), 1);
        assert!(tc.page_has_code(0x70) && !tc.page_has_code(0x80));
        assert_eq!(tc.lookup(0x1000, Mode::default(), 0x70), Some(a));
    }

    #[test]
    fn an_instruction_running_onto_an_unfetchable_page_ends_the_unit_before_it() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        // nop at 0x1FFC..0x1FFE, then `mov eax, imm32` from 0x1FFE into page 2.
        let code = [0x90, 0x90, 0xB8, 1, 2, 3, 4];
        let fetchable = [(1, Some(0x11)), (2, Some(0x12))];
        let (u, _) = tc.translate(&mut mem, &mut Paged { base: 0x1FFC, code: &code, frames: &fetchable }, 0x1FFC, Mode::default());
        assert_eq!(tc.unit(u).insns.len(), 3);
        assert_eq!(&*tc.unit(u).frames, &[0x11, 0x12]);
        let cut = [(1, Some(0x21)), (2, None)];
        let (u, _) = tc.translate(&mut mem, &mut Paged { base: 0x1FFC, code: &code, frames: &cut }, 0x1FFC, Mode::default());
        let unit = tc.unit(u);
        assert_eq!((unit.insns.len(), unit.guest_end, unit.end), (2, 0x1FFE, UnitEnd::PageBoundary));
        assert!(matches!(tc.exit(ExitId(unit.first_exit)).unwrap().kind, ExitKind::Branch { target: 0x1FFE }));
        assert_eq!(&*unit.frames, &[0x21]);
    }

    #[test]
    fn unlinking_cuts_cross_page_chains_and_the_ib_table_but_keeps_same_page_chains() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        // 0x1000: jmp 0x1010    0x1010: jmp 0x2000    0x2000: ret
        let mut page1 = [0u8; 0x20];
        page1[..5].copy_from_slice(&[0xE9, 0x0B, 0, 0, 0]);
        page1[0x10..0x15].copy_from_slice(&[0xE9, 0xEB, 0x0F, 0, 0]);
        let (a, _) = tc.translate(&mut mem, &mut (0x1000, &page1[..]), 0x1000, Mode::default());
        let (b, _) = tc.translate(&mut mem, &mut (0x1000, &page1[..]), 0x1010, Mode::default());
        let (c, _) = tc.translate(&mut mem, &mut (0x2000, &[0xC3][..]), 0x2000, Mode::default());
        let (a_exit, b_exit) = (ExitId(tc.unit(a).first_exit), ExitId(tc.unit(b).first_exit));
        assert!(tc.chain(&mut mem, a_exit, b));
        assert!(tc.chain(&mut mem, b_exit, c));
        assert!(tc.install_indirect(&mut mem, c, false));
        let slot = IB_TABLE + 0x2000 * 4;
        assert_ne!(mem.at(TcAddr(MONITOR_BASE + slot), 4), tc.ib_miss.0.to_le_bytes());
        tc.unlink_linear(&mut mem);
        assert_eq!(tc.exit(a_exit).unwrap().chained_to, Some(b), "a chain within one page stays");
        assert_eq!(tc.exit(b_exit).unwrap().chained_to, None, "a chain to another page is cut");
        assert!(tc.unit(c).incoming.is_empty());
        assert_eq!(mem.at(TcAddr(MONITOR_BASE + slot), 4), tc.ib_miss.0.to_le_bytes());
        assert_eq!(tc.stats.unlinks, 1);
    }

    #[test]
    fn chaining_a_jcc_retargets_the_jcc_itself() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        // 0x1000: dec ecx ; jnz 0x1000 (a one-unit loop)
        let code = [0x49, 0x75, 0xFD];
        let (u, _) = tc.translate(&mut mem, &mut (0x1000, &code[..]), 0x1000, Mode::default());
        let taken = (tc.unit(u).first_exit..tc.unit(u).first_exit + 2)
            .map(ExitId)
            .find(|e| tc.exit(*e).unwrap().branch_site.is_some())
            .expect("the taken exit of a jcc has a branch site");
        let rec = *tc.exit(taken).unwrap();
        let site = rec.branch_site.unwrap();
        let to_stub = mem.at(site, 4).to_vec();
        assert_eq!(to_stub, rel32(site, rec.stub));
        assert!(tc.chain(&mut mem, taken, u));
        assert_eq!(mem.at(site, 4), rel32(site, tc.unit(u).tc));
        tc.invalidate_page(&mut mem, 1);
        assert_eq!(mem.at(site, 4), &to_stub[..]);
    }

    #[test]
    fn locate_maps_every_tc_byte_to_a_guest_instruction() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        // add eax, ebx ; mov ecx, [edx] ; ret
        let code = [0x01, 0xD8, 0x8B, 0x0A, 0xC3];
        let (u, _) = tc.translate(&mut mem, &mut (0x5000, &code[..]), 0x5000, Mode::default());
        let base = tc.unit(u).tc.0;
        assert_eq!(tc.locate(base).unwrap().1.guest_eip, 0x5000);
        assert_eq!(tc.locate(base + 2).unwrap().1.guest_eip, 0x5002);
        let (_, ret) = tc.locate(base + 4).unwrap();
        assert_eq!((ret.guest_eip, ret.kind), (0x5004, MapKind::ScratchSequence));
        assert!(tc.locate(base - 1).is_none() || tc.locate(base - 1).unwrap().0 != u);
    }

    #[test]
    fn boundaries_are_exactly_the_starts_of_translated_instructions() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        // add eax, ebx (2 bytes) ; mov ecx, [edx] (2 bytes) ; ret
        let code = [0x01, 0xD8, 0x8B, 0x0A, 0xC3];
        let (u, _) = tc.translate(&mut mem, &mut (0x5000, &code[..]), 0x5000, Mode::default());
        let base = tc.unit(u).tc.0;
        assert_eq!(tc.boundary_at(base), Some(0x5000));
        assert_eq!(tc.boundary_at(base + 1), None, "inside add eax, ebx");
        assert_eq!(tc.boundary_at(base + 2), Some(0x5002));
        // The ret's lookup sequence: its first byte is a boundary, the
        // middle (after ECX was parked) is not.
        assert_eq!(tc.boundary_at(base + 4), Some(0x5004));
        assert_eq!(tc.boundary_at(base + 4 + 7), None);
        tc.invalidate_page(&mut mem, 5);
        assert_eq!(tc.boundary_at(base), None, "an invalidated unit has no boundaries");
    }

    #[test]
    fn a_full_cache_flushes() {
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        let code = [0x90u8; 0x2000];
        let mut flushed = false;
        for i in 0..TC_SIZE / 16 {
            let eip = 0x10_0000 + (i % 0x1000) * 2;
            let (_, f) = tc.translate(&mut mem, &mut (0x10_0000, &code[..]), eip.wrapping_add(i / 0x1000 * 0x10000), Mode::default());
            if f.0 {
                flushed = true;
                break;
            }
        }
        assert!(flushed);
        assert_eq!(tc.stats.flushes, 1);
        assert_eq!(tc.generation(), 1);
    }
}
