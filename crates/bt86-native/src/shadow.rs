//! Shadow page mappings: the host's view of the guest's page tables.
//!
//! With CR0.PG set, guest linear address X is still host address X (brief
//! §4.1), but what lies there is whatever guest frame the guest's page
//! tables map X to. The monitor builds that picture lazily: every guest
//! page starts unmapped in the host, the first access faults (a *hidden
//! fault*, which the guest never sees), the run loop walks the guest's
//! tables with bt86-cpu's walker, and this module maps the RAM file's page
//! for that frame at X. Like a TLB, the picture may lag behind the guest's
//! tables until the guest writes CR3 or executes `invlpg`, which drop
//! mappings here (SDM Vol. 3A §4.10.4).
//!
//! The module keeps the bookkeeping and makes the host calls through
//! [`AddressSpace`]; it does not walk guest tables or decide permissions
//! (the run loop does, from the walk), so that every guest rule stays in
//! bt86-cpu.
//!
//! Three rules decide how a page is mapped:
//! - **Writable** only if every CPL may write it (R/W set at both levels)
//!   *and* its D bit is already set *and* its frame holds no translated
//!   code. Otherwise the first write faults back into the monitor, which
//!   sets D, emulates a supervisor write that only CR0.WP = 0 allows, or
//!   handles self-modifying code.
//! - **Supervisor pages** are mapped like any other; CPL 3 is kept out of
//!   them by truncating the shadow segments at the lowest supervisor page
//!   mapped ([`Shadow::ceiling`]), as VMware did. When a user page lies
//!   above that line, the run loop drops the supervisor mappings
//!   ([`Shadow::drop_supervisor`]) and they come back, by hidden faults,
//!   when the kernel runs again.
//! - **Frames with translated code** are mapped read-only through every
//!   alias ([`Shadow::write_protect_frame`] uses a reverse map), so a write
//!   through any linear address that reaches them is seen.

use std::io;

use bt86_translate::layout::MONITOR_BASE;
use bt86_translate::FastMap;

use crate::addrspace::AddressSpace;

/// One guest-linear page mapped in the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub frame: u32,
    pub writable: bool,
    /// CPL 3 may reach it (U/S set at both levels).
    pub user: bool,
    /// Part of a 4 MiB guest page: `invlpg` anywhere in it drops it.
    pub large: bool,
}

/// Counters shown by `--stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Faults the guest never saw, resolved by mapping a page.
    pub hidden_faults: u64,
    /// Pages mapped, by hidden faults and by the neighbours filled with
    /// them.
    pub pages_mapped: u64,
    /// `mmap` calls made to map them.
    pub map_calls: u64,
    /// Writes that only set a page's D bit and made its mapping writable.
    pub dirty_upgrades: u64,
    /// Address-space switches: CR3 writes, paging switched on or off.
    pub flushes: u64,
    /// Mappings a CR3 write kept because the new page tables map the page
    /// to the same frame with the same rights, already accessed.
    pub kept_on_switch: u64,
    /// Pages dropped by `invlpg`.
    pub invlpg_drops: u64,
    /// Times the supervisor mappings were dropped so that CPL 3 could reach
    /// a user page above them.
    pub supervisor_drops: u64,
}

/// The linear pages that map one frame. Almost every frame has one, so it
/// is kept inline; hidden faults are the monitor's hot path, and an
/// allocation per mapped page showed in profiles.
#[derive(Clone, Debug)]
enum Aliases {
    One(u32),
    Many(Vec<u32>),
}

impl Aliases {
    fn pages(&self) -> &[u32] {
        match self {
            Aliases::One(page) => std::slice::from_ref(page),
            Aliases::Many(pages) => pages,
        }
    }
}

/// The shadow mappings of one VM.
#[derive(Default)]
pub struct Shadow {
    pages: FastMap<u32, Mapping>,
    /// Linear pages mapped to each frame: every alias of a code frame must
    /// become read-only.
    by_frame: FastMap<u32, Aliases>,
    /// How many supervisor pages are mapped, and the lowest of them if it
    /// is known (`None` after the lowest was dropped: found again when
    /// asked for).
    supervisor_count: usize,
    lowest_supervisor: Option<u32>,
    /// 4 MiB regions (linear address >> 22) with pages of a 4 MiB guest
    /// page mapped.
    large: FastMap<u32, ()>,
    /// `mmap` calls since the last full drop: a bound on the host mappings
    /// (VMAs) the shadow holds.
    live_maps: usize,
    pub stats: ShadowStats,
}

/// The most shadow `mmap` calls kept before everything is dropped. Each
/// call can add a host mapping and split the reservation around it, and
/// Linux allows a process 65530 mappings (`vm.max_map_count`): a guest
/// that scatters its pages must not use them all up, or the monitor's own
/// allocations would fail.
const MAX_LIVE_MAPS: usize = 16_384;

impl Shadow {
    /// What linear page `page` is mapped to, if anything.
    pub fn get(&self, page: u32) -> Option<Mapping> {
        self.pages.get(&page).copied()
    }

    /// How many pages are mapped.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The address the shadow segments must stop below at CPL 3: the
    /// lowest supervisor page mapped, or the monitor area.
    pub fn ceiling(&mut self) -> u32 {
        if self.supervisor_count == 0 {
            return MONITOR_BASE;
        }
        let lowest = match self.lowest_supervisor {
            Some(page) => page,
            None => {
                let page = self.pages.iter().filter(|(_, m)| !m.user).map(|(&p, _)| p).min().unwrap_or(MONITOR_BASE >> 12);
                self.lowest_supervisor = Some(page);
                page
            }
        };
        lowest << 12
    }

    /// Maps a run of linear pages to consecutive frames, all with the same
    /// rights, in one host call. Pages already mapped are replaced.
    pub fn map_run(&mut self, space: &mut AddressSpace, page: u32, frame: u32, count: u32, mapping: Mapping) -> io::Result<()> {
        for i in 0..count {
            self.forget(page + i);
        }
        if self.live_maps >= MAX_LIVE_MAPS {
            self.drop_all(space)?;
        }
        self.live_maps += 1;
        if let Err(e) = space.map_frames(page, frame, count, mapping.writable) {
            // Too many distinct mappings for the host (vm.max_map_count):
            // start afresh, as a TLB that overflows does.
            if e.raw_os_error() != Some(libc::ENOMEM) {
                return Err(e);
            }
            self.drop_all(space)?;
            space.map_frames(page, frame, count, mapping.writable)?;
        }
        for i in 0..count {
            let m = Mapping { frame: frame + i, ..mapping };
            self.remember(page + i, m);
        }
        self.stats.pages_mapped += u64::from(count);
        self.stats.map_calls += 1;
        Ok(())
    }

    /// Makes an existing read-only mapping writable (its D bit is now set).
    pub fn make_writable(&mut self, space: &mut AddressSpace, page: u32) -> io::Result<()> {
        if let Some(m) = self.pages.get_mut(&page) {
            space.protect_pages(page, 1, true)?;
            m.writable = true;
            self.stats.dirty_upgrades += 1;
        }
        Ok(())
    }

    /// Makes every mapping of `frame` read-only: it now holds translated
    /// code.
    pub fn write_protect_frame(&mut self, space: &mut AddressSpace, frame: u32) -> io::Result<()> {
        let Some(aliases) = self.by_frame.get(&frame) else { return Ok(()) };
        for &page in aliases.pages() {
            if let Some(m) = self.pages.get_mut(&page) {
                if m.writable {
                    space.protect_pages(page, 1, false)?;
                    m.writable = false;
                }
            }
        }
        Ok(())
    }

    /// Drops every mapping of `frame`, so that each alias is mapped again,
    /// with the right permissions, by its next hidden fault.
    pub fn drop_frame(&mut self, space: &mut AddressSpace, frame: u32) -> io::Result<()> {
        let aliases = self.by_frame.get(&frame).map(|a| a.pages().to_vec()).unwrap_or_default();
        for page in aliases {
            if self.pages.get(&page).is_some_and(|m| m.frame == frame) {
                self.forget(page);
                space.unmap_pages(page, 1)?;
            }
        }
        Ok(())
    }

    /// `invlpg` of linear page `page`: drops its mapping, or every page
    /// of the 4 MiB page it belongs to if it was mapped from one (SDM Vol.
    /// 3A §4.10.4.1).
    pub fn invalidate(&mut self, space: &mut AddressSpace, page: u32) -> io::Result<()> {
        if self.large.remove(&(page >> 10)).is_some() {
            self.drop_pages(space, page & !0x3FF, 1024)
        } else {
            self.drop_pages(space, page, 1)
        }
    }

    /// Drops the mapping of one linear page, if it has one.
    pub fn unmap(&mut self, space: &mut AddressSpace, page: u32) -> io::Result<()> {
        if self.pages.contains_key(&page) {
            self.forget(page);
            space.unmap_pages(page, 1)?;
        }
        Ok(())
    }

    /// Drops the mappings of `count` linear pages from `page`.
    pub fn drop_pages(&mut self, space: &mut AddressSpace, page: u32, count: u32) -> io::Result<()> {
        let mut run: Option<(u32, u32)> = None;
        for p in page..page + count {
            if self.pages.contains_key(&p) {
                self.forget(p);
                self.stats.invlpg_drops += 1;
                run = match run {
                    Some((start, n)) if start + n == p => Some((start, n + 1)),
                    Some((start, n)) => {
                        space.unmap_pages(start, n)?;
                        Some((p, 1))
                    }
                    None => Some((p, 1)),
                };
            }
        }
        if let Some((start, n)) = run {
            space.unmap_pages(start, n)?;
        }
        Ok(())
    }

    /// Keeps the mappings `keep` approves of and drops the others, in runs
    /// (a CR3 write: see `Vm::address_space_changed`). Returns how many
    /// were dropped.
    pub fn retain(&mut self, space: &mut AddressSpace, mut keep: impl FnMut(u32, &Mapping) -> bool) -> io::Result<usize> {
        let mut dropped: Vec<u32> = self.pages.iter().filter(|(page, m)| !keep(**page, m)).map(|(page, _)| *page).collect();
        dropped.sort_unstable();
        let mut i = 0;
        while i < dropped.len() {
            let start = dropped[i];
            let mut n = 1;
            while i + (n as usize) < dropped.len() && dropped[i + n as usize] == start + n {
                n += 1;
            }
            for p in start..start + n {
                self.forget(p);
            }
            space.unmap_pages(start, n)?;
            i += n as usize;
        }
        self.large = self.pages.iter().filter(|(_, m)| m.large).map(|(page, _)| (page >> 10, ())).collect();
        self.live_maps = self.live_maps.min(self.pages.len());
        self.stats.flushes += 1;
        self.stats.kept_on_switch += self.pages.len() as u64;
        Ok(dropped.len())
    }

    /// Drops every mapping (paging turned on or off).
    pub fn drop_all(&mut self, space: &mut AddressSpace) -> io::Result<()> {
        self.pages.clear();
        self.by_frame.clear();
        self.supervisor_count = 0;
        self.lowest_supervisor = None;
        self.large.clear();
        self.live_maps = 0;
        self.stats.flushes += 1;
        space.unmap_guest()
    }

    /// Drops the supervisor mappings, so that CPL 3 can reach a user page
    /// that lies above one of them.
    pub fn drop_supervisor(&mut self, space: &mut AddressSpace) -> io::Result<()> {
        self.retain(space, |_, m| m.user)?;
        // `retain` counted an address-space switch; this was none.
        self.stats.flushes -= 1;
        self.stats.supervisor_drops += 1;
        Ok(())
    }

    /// Records a new mapping in the bookkeeping (the caller maps it).
    fn remember(&mut self, page: u32, m: Mapping) {
        self.pages.insert(page, m);
        match self.by_frame.get_mut(&m.frame) {
            None => {
                self.by_frame.insert(m.frame, Aliases::One(page));
            }
            Some(aliases) => {
                let mut pages = aliases.pages().to_vec();
                pages.push(page);
                *aliases = Aliases::Many(pages);
            }
        }
        if !m.user {
            self.supervisor_count += 1;
            if self.lowest_supervisor.is_some_and(|low| page < low) || self.supervisor_count == 1 {
                self.lowest_supervisor = Some(page);
            }
        }
        if m.large {
            self.large.insert(page >> 10, ());
        }
    }

    /// Forgets page `page` in the bookkeeping (the caller unmaps it).
    fn forget(&mut self, page: u32) {
        let Some(m) = self.pages.remove(&page) else { return };
        if let Some(aliases) = self.by_frame.get_mut(&m.frame) {
            let rest: Vec<u32> = aliases.pages().iter().copied().filter(|&p| p != page).collect();
            match rest.as_slice() {
                [] => {
                    self.by_frame.remove(&m.frame);
                }
                [one] => *aliases = Aliases::One(*one),
                _ => *aliases = Aliases::Many(rest),
            }
        }
        if !m.user {
            self.supervisor_count -= 1;
            if self.lowest_supervisor == Some(page) {
                self.lowest_supervisor = None;
            }
        }
    }
}
