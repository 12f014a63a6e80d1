//! The run loop: translate, enter, exit, emulate, repeat.
//!
//! A [`Vm`] owns the address space, the shadow LDT, the translation cache,
//! the virtual CPU and the machine. [`Vm::run`] is the monitor's main loop
//! (brief §4): find or translate the unit at the guest's EIP, enter it
//! through the world switch, and when translated code exits, find out why
//! from the exit id and act in ordinary Rust: chain a branch, resolve an
//! indirect-branch miss, execute a callout on bt86-cpu, or turn a host
//! fault into an emulated access, a self-modifying-code invalidation, or a
//! guest exception delivered through the guest's IDT.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bt86_cpu::emulate::{emulate, EmulateError};
use bt86_cpu::interrupt::{deliver_exception, deliver_interrupt, Shutdown, Source};
use bt86_cpu::paging::{self, PageAccess, PageWalk};
use bt86_cpu::state::{cr, flags, gpr};
use bt86_cpu::{Cpu, Exception, LinearAddr, SegReg, Segment, Vector};
use bt86_machine::{Bus, GuestPhysAddr, Machine};
use bt86_translate::layout::{vcpu, MONITOR_BASE, STUB_PAGE};
use bt86_translate::{CalloutReason, CodeSource, ExitId, ExitKind, MapKind, Mode, TranslationCache, UnitId};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

use crate::addrspace::AddressSpace;
use crate::ldt::{self, Ldt};
use crate::shadow::{Mapping, Shadow};
use crate::timer::{self, HostTimer};
use crate::{signals, switch, NativeError};

/// Hidden faults fill the guest pages around the faulting one in aligned
/// groups of this many pages (64 KiB).
const FILL_GROUP: u32 = 16;

/// A CR3 write checks at most this many shadow mappings one by one; past
/// that, dropping them all is cheaper.
const MAX_KEPT_ON_SWITCH: usize = 8192;

/// Whether shadow mapping `m` of linear page `page` is exactly what a
/// hidden fault would map now, under the guest's current tables, without
/// changing any A or D bit (see [`Vm::address_space_changed`]).
fn still_mapped(cpu: &Cpu, machine: &mut Machine, page: u32, m: &Mapping) -> bool {
    let Ok(w) = paging::probe(cpu, machine, LinearAddr(page << 12), PageAccess::read(false)) else { return false };
    let mut pde = [0u8; 4];
    machine.read_phys(w.pde_addr, &mut pde);
    let pde_accessed = u32::from_le_bytes(pde) & 0x20 != 0;
    w.phys.0 >> 12 == m.frame
        && w.accessed
        && pde_accessed
        && w.user == m.user
        && (w.page_size == paging::PAGE_SIZE_4M) == m.large
        && (!m.writable || (w.writable && w.dirty))
}

/// Where the instruction at some EIP is fetched from.
#[derive(Clone, Copy, Debug)]
struct CodePage {
    frame: u32,
    /// CPL 3 may fetch from the page.
    user: bool,
}

/// What a host page fault with paging on turned out to be.
enum Fill {
    /// A hidden fault: the page is mapped now; run the instruction again.
    Done,
    /// The guest's own page fault.
    Guest(Exception),
    /// An access the monitor carries out itself.
    Emulate,
}

/// The longest `hlt` sleep before the run loop looks at the clock again
/// (so that a --timeout deadline is noticed).
const MAX_HALT_SLEEP_NS: u64 = 50_000_000;

/// Only one VM can own the low 4 GiB of a process at a time.
static VM_EXISTS: AtomicBool = AtomicBool::new(false);

/// Why [`Vm::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest asked to stop: isa-debug-exit or ACPI power-off. The
    /// value is the process exit status QEMU would use.
    GuestExit(i32),
    /// `hlt` with nothing that could ever wake the CPU: interrupts disabled,
    /// or (in this milestone) no device that raises interrupts.
    Halted { eip: u32, interrupts_enabled: bool },
    /// A triple fault: the processor shut down.
    Shutdown(Shutdown),
    /// The monitor met something it cannot emulate.
    Unsupported(String),
    /// The run-time limit passed.
    Timeout,
    /// The instruction limit of [`Vm::run_steps`] was reached.
    StepLimit,
}

/// What the debug log (`-d`) shows, as QEMU's flags of the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogFlags {
    /// Each translated unit's guest instructions.
    pub in_asm: bool,
    /// Each translated unit's TC code.
    pub out_asm: bool,
    /// Each exception and interrupt delivered.
    pub int: bool,
    /// Each unit entered from the monitor (chained transfers stay inside
    /// the TC and are not seen, as with QEMU without `-d nochain`).
    pub exec: bool,
}

/// Named counters, kept sorted by name. A handful of entries, bumped on
/// every exit: a short vector searched by the name's address beats a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(Vec<(&'static str, u64)>);

impl Counters {
    /// Adds one to `name`'s count.
    pub fn bump(&mut self, name: &'static str) {
        // Names are string literals, so the same call site passes the same
        // pointer; equal text from another site is found by the slow path.
        if let Some(entry) = self.0.iter_mut().find(|(k, _)| std::ptr::eq(*k, name)) {
            entry.1 += 1;
            return;
        }
        match self.0.binary_search_by(|(k, _)| (*k).cmp(name)) {
            Ok(i) => self.0[i].1 += 1,
            Err(i) => self.0.insert(i, (name, 1)),
        }
    }

    /// The count for `name` (0 if never bumped).
    pub fn get(&self, name: &str) -> u64 {
        self.0.iter().find(|(k, _)| *k == name).map_or(0, |(_, n)| *n)
    }

    /// The counts, in name order.
    pub fn values(&self) -> impl Iterator<Item = &u64> {
        self.0.iter().map(|(_, n)| n)
    }
}

impl<'a> IntoIterator for &'a Counters {
    type Item = (&'static str, &'a u64);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (&'static str, u64)>, fn(&'a (&'static str, u64)) -> (&'static str, &'a u64)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, n)| (*k, n))
    }
}

/// Counters of the monitor, shown by `--stats` beside the translator's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// World switches into translated code.
    pub entries: u64,
    /// Exits by reason.
    pub exits: Counters,
    /// Callouts by class.
    pub callouts: Counters,
    /// Guest exceptions delivered, by mnemonic.
    pub exceptions: Counters,
    /// Software interrupts delivered by `int n`.
    pub software_interrupts: u64,
    /// Indirect-branch lookups that missed (exited) and that hit (stayed in
    /// the TC).
    pub ib_misses: u64,
    pub ib_hits: u64,
    /// Instructions emulated after a host fault (monitor area, page 0,
    /// unbacked physical addresses).
    pub emulated_accesses: u64,
    /// Writes that hit a write-protected code page.
    pub smc_faults: u64,
    /// Hardware interrupts delivered, and times `hlt` slept until a device
    /// event.
    pub interrupts: u64,
    pub halt_sleeps: u64,
    /// Guest pages write-protected because they hold translated code.
    pub protected_pages: u64,
    /// `modify_ldt` calls made to update shadow segments.
    pub ldt_writes: u64,
    /// Shadow page mappings (paging guests).
    pub shadow: crate::shadow::ShadowStats,
}

/// A virtual machine on this host.
pub struct Vm {
    pub(crate) space: AddressSpace,
    ldt: Ldt,
    pub(crate) tc: TranslationCache,
    pub cpu: Cpu,
    pub machine: Machine,
    pub stats: RunStats,
    pub log: LogFlags,
    log_sink: Option<Box<dyn Write + Send>>,
    /// Guest frames write-protected for self-modifying-code detection:
    /// frames that hold translated code.
    pub(crate) protected: HashSet<u32>,
    /// The shadow page mappings, used while the guest runs with CR0.PG
    /// set; `paged_layout` says whether the host holds them now (rather
    /// than RAM at its physical addresses).
    shadow: Shadow,
    paged_layout: bool,
    /// Linear pages whose units chains or IB entries lead to or from, with
    /// the frame and U/S they had then (`None`: unmapped): see
    /// [`Vm::revalidate_links`].
    linked_pages: HashMap<u32, Option<(u32, bool)>>,
    /// Segment generation the shadows were last built for, the ceiling
    /// they were truncated at, and the guest DS, ES, FS and SS they were
    /// built from.
    shadow_generation: Option<u64>,
    shadow_ceiling: u32,
    shadowed: [Option<Segment>; 4],
    /// Run the instruction at this EIP once in a single-step unit that does
    /// not protect its page (after a write to a code page).
    step_once: Option<u32>,
    pub(crate) deadline: Option<Instant>,
    /// When the VM started: virtual time 0 for the devices.
    started: Instant,
    /// The host timer for asynchronous exits, and the device deadline it is
    /// armed for.
    timer: HostTimer,
    armed_for: Option<u64>,
    /// Run one guest instruction per unit (the debugger's step).
    stepping: bool,
    /// Run one isolated unit (the debugger's step unit).
    isolating: bool,
    /// Set by `sti` enabling interrupts: one more instruction runs before
    /// an interrupt is taken.
    interrupt_shadow: bool,
    /// The last trip into the TC ended before its first instruction could
    /// complete, only for the monitor to make it possible (a hidden fault
    /// filled, supervisor mappings dropped, a code page released): the
    /// instruction runs again and the trip does not count towards a step.
    retry: bool,
    /// The devices need bringing up to date: the guest talked to them (port
    /// I/O, an emulated access) since the last `advance_to`, or
    /// `device_deadline` passed. Between those, nothing in the devices can
    /// change, so the run loop skips the work.
    devices_touched: bool,
    device_deadline: Option<u64>,
    /// Whether the PIC asserted INTR when the devices were last brought up
    /// to date (it cannot change in between).
    irq_pending: bool,
    /// Breakpoints, watchpoints and the event log (see `runctl`).
    pub(crate) debug: crate::runctl::DebugState,
}

/// Reads guest code for the translator and the emulator, as the CPU
/// fetches it: through the guest's page tables when paging is on (with the
/// fetch rights of the current CPL, and without setting A bits: the run
/// loop's own fetch walk did that), else at physical = linear. Every
/// address reads as the bus says (RAM, or the unassigned value).
struct GuestCode<'a> {
    machine: &'a mut Machine,
    cpu: &'a Cpu,
}

impl GuestCode<'_> {
    fn translate(&mut self, linear: u32) -> Option<u32> {
        if !self.cpu.paging_enabled() {
            return Some(linear);
        }
        let access = PageAccess::fetch(self.cpu.cpl() == 3);
        paging::probe(self.cpu, self.machine, LinearAddr(linear), access).ok().map(|w| w.phys.0)
    }
}

impl CodeSource for GuestCode<'_> {
    fn read_code(&mut self, eip: u32, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let at = eip.wrapping_add(done as u32);
            let chunk = ((0x1000 - (at & 0xFFF)) as usize).min(buf.len() - done);
            match self.translate(at) {
                Some(phys) => self.machine.read_phys(GuestPhysAddr(phys), &mut buf[done..done + chunk]),
                None => buf[done..done + chunk].fill(0),
            }
            done += chunk;
        }
    }

    fn frame(&mut self, page: u32) -> Option<u32> {
        self.translate(page << 12).map(|phys| phys >> 12)
    }
}

impl Vm {
    /// Builds the VM around `machine` (whose RAM must be file-backed, see
    /// [`crate::create_ram`]) and a CPU in its boot state.
    pub fn new(machine: Machine, cpu: Cpu) -> Result<Vm, NativeError> {
        crate::check_host()?;
        if VM_EXISTS.swap(true, Ordering::SeqCst) {
            return Err(NativeError::AlreadyRunning);
        }
        let result = Self::build(machine, cpu);
        if result.is_err() {
            VM_EXISTS.store(false, Ordering::SeqCst);
        }
        result
    }

    fn build(machine: Machine, cpu: Cpu) -> Result<Vm, NativeError> {
        let file = machine.ram().file().ok_or(NativeError::RamNotFileBacked)?;
        let mut space = AddressSpace::new(file, machine.ram().size())?;
        let ldt = Ldt::new()?;
        signals::install()?;
        signals::ensure_alt_stack()?;
        // The landing pad must live below 4 GiB; copy it into the stub page.
        let landing = switch::landing_template();
        space.monitor_write(STUB_PAGE, landing);
        let tc = TranslationCache::new(&mut space.monitor());
        // Far pointers: entry (to the 32-bit entry trampoline under the TC
        // code selector) and exit (to the landing pad under the host's
        // 64-bit selector).
        let mut farptr = [0u8; 6];
        farptr[..4].copy_from_slice(&tc.entry_trampoline().0.to_le_bytes());
        farptr[4..].copy_from_slice(&ldt::CODE_SELECTOR.to_le_bytes());
        space.vcpu_write(vcpu::ENTRY_FARPTR, &farptr);
        farptr[..4].copy_from_slice(&signals::LANDING.to_le_bytes());
        farptr[4..].copy_from_slice(&ldt::HOST_CODE64_SELECTOR.to_le_bytes());
        space.vcpu_write(vcpu::EXIT_FARPTR, &farptr);
        space.vcpu_write(vcpu::GUEST_GS, &ldt::MONITOR_SELECTOR.to_le_bytes());
        space.vcpu_write(vcpu::GUEST_FX, &cpu.fpu[..]);
        // The signal trampoline needs this thread's FS base before it may
        // run any Rust code.
        switch::record_host_fs_base();
        let timer = HostTimer::new()?;
        Ok(Vm {
            space,
            ldt,
            tc,
            cpu,
            machine,
            stats: RunStats::default(),
            log: LogFlags::default(),
            log_sink: None,
            protected: HashSet::new(),
            shadow: Shadow::default(),
            paged_layout: false,
            linked_pages: HashMap::new(),
            shadow_generation: None,
            shadow_ceiling: MONITOR_BASE,
            shadowed: [None; 4],
            step_once: None,
            deadline: None,
            started: Instant::now(),
            timer,
            armed_for: None,
            interrupt_shadow: false,
            retry: false,
            stepping: false,
            isolating: false,
            devices_touched: true,
            device_deadline: None,
            irq_pending: false,
            debug: Default::default(),
        })
    }

    /// Sends the `-d` log and `--trace` output to `sink`.
    pub fn set_log(&mut self, flags: LogFlags, sink: Box<dyn Write + Send>) {
        self.log = flags;
        self.log_sink = Some(sink);
    }

    /// Stops the run with [`Exit::Timeout`] once `deadline` has passed. The
    /// check happens on exits, and the host timer is armed for the deadline
    /// too, so a guest spinning in chained code is stopped at an
    /// instruction boundary all the same.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// The translation cache, for statistics and the debugger.
    pub fn translation_cache(&self) -> &TranslationCache {
        &self.tc
    }

    /// Drops every translation and write-protection of code pages, for when
    /// guest code was changed behind the guest's back (by the loader, a
    /// test or the debugger writing RAM through the machine).
    pub fn flush_translations(&mut self) -> Result<(), NativeError> {
        self.tc.flush(&mut self.space.monitor());
        for frame in std::mem::take(&mut self.protected) {
            if self.paged_layout {
                self.shadow.drop_frame(&mut self.space, frame).map_err(NativeError::Protect)?;
            } else {
                self.space.protect_page(frame, true).map_err(NativeError::Protect)?;
            }
        }
        self.debug_reprotect_all()
    }

    /// Makes every translation unit end before the given guest addresses
    /// (breakpoints, or the cut points of the differential tests).
    pub fn set_unit_breaks(&mut self, breaks: std::collections::BTreeSet<u32>) {
        self.tc.set_breaks(&mut self.space.monitor(), breaks);
    }

    /// Copies the live x87/SSE state into `cpu.fpu`.
    pub fn sync_fpu(&mut self) {
        let fx = self.space.monitor_bytes(vcpu::GUEST_FX, self.cpu.fpu.len()).to_vec();
        self.cpu.fpu.copy_from_slice(&fx);
    }

    /// Runs until the guest stops.
    pub fn run(&mut self) -> Result<Exit, NativeError> {
        self.run_loop(None)
    }

    /// Runs at most `max_exits` trips through the monitor (for tests).
    pub fn run_steps(&mut self, max_exits: u64) -> Result<Exit, NativeError> {
        self.run_loop(Some(max_exits))
    }

    /// Executes exactly one guest instruction (or takes one pending
    /// interrupt or exception on the way), from a single-instruction
    /// translation unit that is never chained or cached: the run control a
    /// debugger's `step` needs. Returns [`Exit::StepLimit`] when the
    /// instruction completed and the guest can go on.
    pub fn step_instruction(&mut self) -> Result<Exit, NativeError> {
        self.stepping = true;
        let result = self.run_loop(Some(1));
        self.stepping = false;
        result
    }

    pub(crate) fn mode(&self, single_step: bool) -> Mode {
        let cr0 = self.cpu.cr0;
        Mode {
            fpu_trap: cr0 & (cr::CR0_TS | cr::CR0_EM) != 0,
            fpu_emulate: cr0 & cr::CR0_EM != 0,
            single_step,
            isolated: false,
        }
    }

    /// Runs exactly one translation unit natively, from a copy translated
    /// for this run alone (never cached, never chained, indirect branches
    /// exit): the debugger's step unit. Returns [`Exit::StepLimit`] when
    /// the unit ended and the guest can go on; a hidden fault or the like
    /// on the way does not count as the unit's run.
    pub fn step_unit_native(&mut self) -> Result<Exit, NativeError> {
        self.isolating = true;
        let result = self.run_loop(Some(1));
        self.isolating = false;
        result
    }

    pub(crate) fn run_loop(&mut self, limit: Option<u64>) -> Result<Exit, NativeError> {
        // The machine may have been driven from outside since the last run
        // (a test or the debugger writing its ports).
        self.devices_touched = true;
        let result = self.run_trips(limit);
        self.stats.shadow = self.shadow.stats;
        // Nothing may interrupt the monitor, or a direct call, once the run
        // is over.
        self.timer.disarm();
        self.armed_for = None;
        result
    }

    fn run_trips(&mut self, limit: Option<u64>) -> Result<Exit, NativeError> {
        let mut trips = 0u64;
        loop {
            if let Some(status) = self.machine.power().exit_status() {
                return Ok(Exit::GuestExit(status));
            }
            if let Some(deadline) = self.deadline {
                if Instant::now() >= deadline {
                    return Ok(Exit::Timeout);
                }
            }
            if let Some(max) = limit {
                if trips >= max {
                    return Ok(Exit::StepLimit);
                }
            }
            trips += 1;
            // Devices catch up with time, and a pending interrupt is taken
            // here, between translation units, when the guest allows it
            // (brief §4.7).
            let now = self.now_ns();
            if self.devices_touched || self.device_deadline.is_some_and(|at| now >= at) {
                self.machine.advance_to(now);
                self.device_deadline = self.machine.next_deadline();
                self.devices_touched = false;
                self.irq_pending = self.machine.interrupt_pending();
            }
            if let Some(exit) = self.take_interrupt()? {
                return Ok(exit);
            }
            if self.cpu.halted {
                if !self.cpu.interrupts_enabled() {
                    return Ok(Exit::Halted { eip: self.cpu.eip, interrupts_enabled: false });
                }
                match self.machine.next_deadline() {
                    // hlt: sleep until the next device event, using no CPU.
                    Some(at) => {
                        self.stats.halt_sleeps += 1;
                        let wait = at.saturating_sub(now).min(MAX_HALT_SLEEP_NS);
                        std::thread::sleep(std::time::Duration::from_nanos(wait));
                        continue;
                    }
                    None => return Ok(Exit::Halted { eip: self.cpu.eip, interrupts_enabled: true }),
                }
            }
            // The host layout follows CR0.PG: RAM at its physical
            // addresses, or shadow mappings of the guest's page tables.
            self.sync_layout()?;
            // Units are keyed by EIP and fetched at linear address EIP: the
            // code segment must be based at 0, as in every flat-model kernel.
            let cs_base = self.cpu.segment(SegReg::Cs).base;
            if cs_base != 0 {
                return Ok(Exit::Unsupported(format!(
                    "the guest runs code in a segment based at {cs_base:#x} (CS = {}); bt86 translates only code segments based at 0",
                    self.cpu.segment(SegReg::Cs).selector
                )));
            }
            // EFLAGS.TF: a #DB trap after every guest instruction, so run
            // one instruction per unit and come back (SDM Vol. 3A §17.3.1.4).
            let trap_flag = self.cpu.eflags & flags::TF != 0;
            let step_once = self.step_once.take() == Some(self.cpu.eip);
            let single_step = trap_flag || step_once || self.stepping;
            let mode = Mode { isolated: self.isolating && !single_step, ..self.mode(single_step) };
            if self.debug_stop_before_unit() {
                return Ok(Exit::StepLimit);
            }
            // The fetch itself may fault (paging): deliver that #PF.
            let frame = match self.code_frame(self.cpu.eip) {
                Ok(frame) => frame,
                Err(exception) => match self.deliver(exception)? {
                    Some(exit) => return Ok(exit),
                    None => continue,
                },
            };
            let unit = self.unit_for(self.cpu.eip, frame, mode, !step_once)?;
            self.arm_timer(now);
            self.enter(unit)?;
            if let Some(exit) = self.handle_exit(trap_flag)? {
                return Ok(exit);
            }
            if std::mem::take(&mut self.retry) {
                trips -= 1;
            }
        }
    }

    /// Nanoseconds of virtual time since the VM started: the devices' clock.
    /// It follows the host's monotonic clock, as QEMU's virtual clock does.
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Delivers the PIC's pending interrupt if EFLAGS.IF allows it and no
    /// interrupt shadow (the instruction after `sti`) is in force.
    fn take_interrupt(&mut self) -> Result<Option<Exit>, NativeError> {
        if self.interrupt_shadow {
            // The instruction after sti runs before any interrupt (SDM
            // Vol. 2B STI): run it alone, then look again.
            self.interrupt_shadow = false;
            self.step_once = Some(self.cpu.eip);
            return Ok(None);
        }
        if !self.cpu.interrupts_enabled() || !self.irq_pending {
            return Ok(None);
        }
        let acknowledged = self.machine.acknowledge_interrupt();
        self.irq_pending = self.machine.interrupt_pending();
        let Some(vector) = acknowledged else { return Ok(None) };
        self.stats.interrupts += 1;
        if self.log.int {
            let text = format!("int: hardware interrupt vector {vector:#04x} at eip {:#010x}", self.cpu.eip);
            self.log_line(&text);
        }
        self.cpu.halted = false;
        let from = self.cpu.eip;
        match deliver_interrupt(&mut self.cpu, &mut self.machine, Vector(vector), Source::External) {
            Ok(()) => Ok(self.debug_delivered(true, vector, from, "hardware interrupt")),
            Err(exception) => self.deliver(exception),
        }
    }

    /// Arms the host timer for the next device deadline or the run's own
    /// deadline, whichever comes first, so that a guest spinning in chained
    /// code still comes back for its interrupt, or to be stopped.
    fn arm_timer(&mut self, now: u64) {
        let run_deadline = self.deadline.map(|d| d.saturating_duration_since(self.started).as_nanos() as u64);
        let next = match (self.device_deadline, run_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next == self.armed_for && next.is_none_or(|at| at > now) {
            return;
        }
        match next {
            Some(at) => self.timer.arm_in(at.saturating_sub(now).max(1_000)),
            None => self.timer.disarm(),
        }
        self.armed_for = next;
    }

    /// Finds or translates the unit for `eip` in `mode`, fetched from
    /// physical frame `frame` (see [`Vm::code_frame`]); write-protects the
    /// frames it was translated from unless told not to.
    pub(crate) fn unit_for(&mut self, eip: u32, frame: u32, mode: Mode, protect: bool) -> Result<UnitId, NativeError> {
        if let Some(id) = self.tc.lookup(eip, mode, frame) {
            if self.second_frame_current(id) {
                return Ok(id);
            }
        }
        let mut code = GuestCode { machine: &mut self.machine, cpu: &self.cpu };
        let (id, _flushed) = self.tc.translate(&mut self.space.monitor(), &mut code, eip, mode);
        let frames = self.tc.unit(id).frames;
        if frames.len() > 1 && self.cpu.paging_enabled() {
            // Its last instruction was fetched from the next page too.
            let next = (eip & !0xFFF).wrapping_add(0x1000);
            let _ = paging::walk(&self.cpu, &mut self.machine, LinearAddr(next), PageAccess::fetch(self.cpu.cpl() == 3));
        }
        if protect && !mode.single_step {
            for &frame in frames.iter() {
                if self.protected.insert(frame) {
                    self.write_protect(frame)?;
                    if !self.paged_layout {
                        self.debug_reprotect(frame)?;
                    }
                    self.stats.protected_pages += 1;
                }
            }
        }
        if self.log.in_asm || self.log.out_asm {
            self.log_unit(id);
        }
        Ok(id)
    }

    /// Whether a unit whose last instruction runs onto a second page still
    /// finds the same frame there (its first frame is part of its key).
    fn second_frame_current(&mut self, id: UnitId) -> bool {
        let u = self.tc.unit(id);
        let Some(&second) = u.frames.get(1) else { return true };
        let page = (u.guest_start >> 12).wrapping_add(1);
        GuestCode { machine: &mut self.machine, cpu: &self.cpu }.frame(page) == Some(second)
    }

    /// The physical frame the instruction at `eip` is fetched from, with
    /// the checks and the A bits of a real fetch: a #PF if its page, or the
    /// next page when the instruction runs onto it, cannot be fetched at
    /// the current CPL. Without paging the frame is `eip >> 12`.
    pub(crate) fn code_frame(&mut self, eip: u32) -> Result<u32, Exception> {
        self.code_page(eip).map(|page| page.frame)
    }

    /// [`Vm::code_frame`], and whether CPL 3 may fetch from the page.
    fn code_page(&mut self, eip: u32) -> Result<CodePage, Exception> {
        if !self.cpu.paging_enabled() {
            return Ok(CodePage { frame: eip >> 12, user: true });
        }
        let access = PageAccess::fetch(self.cpu.cpl() == 3);
        let walk = paging::walk(&self.cpu, &mut self.machine, LinearAddr(eip), access)?;
        let left = (0x1000 - (eip & 0xFFF)) as usize;
        if left < 15 {
            let mut bytes = [0u8; 15];
            self.machine.read_phys(walk.phys, &mut bytes[..left]);
            let mut decoder = Decoder::with_ip(32, &bytes[..left], u64::from(eip), DecoderOptions::NONE);
            let _ = decoder.decode();
            if decoder.last_error() == iced_x86::DecoderError::NoMoreBytes {
                let next = eip.wrapping_add(left as u32);
                paging::walk(&self.cpu, &mut self.machine, LinearAddr(next), access)?;
            }
        }
        Ok(CodePage { frame: walk.phys.0 >> 12, user: walk.user })
    }

    fn note_unit_links(&mut self, id: UnitId) {
        let u = self.tc.unit(id);
        let (first, pages) = (u.guest_start >> 12, u.frames.len() as u32);
        for page in first..first + pages {
            self.note_link(page);
        }
    }

    /// Whether a unit may be chained to one on `target`: not from a page
    /// CPL 3 can run to a supervisor-only page, or CPL 3 could later follow
    /// a chain the kernel made into kernel code without a fetch check.
    fn may_chain(&mut self, from: UnitId, target: CodePage) -> bool {
        if !self.cpu.paging_enabled() || target.user {
            return true;
        }
        let start = self.tc.unit(from).guest_start;
        let probe = paging::probe(&self.cpu, &mut self.machine, LinearAddr(start), PageAccess::fetch(true));
        probe.is_err()
    }

    /// Makes `frame` read-only in the host wherever it is mapped: it holds
    /// translated code now.
    fn write_protect(&mut self, frame: u32) -> Result<(), NativeError> {
        if self.paged_layout {
            self.shadow.write_protect_frame(&mut self.space, frame).map_err(NativeError::Protect)
        } else {
            self.space.protect_page(frame, false).map_err(NativeError::Protect)
        }
    }

    /// Switches the host layout between RAM at its physical addresses
    /// (CR0.PG clear) and shadow mappings (CR0.PG set) when the guest
    /// turned paging on or off.
    fn sync_layout(&mut self) -> Result<(), NativeError> {
        let paged = self.cpu.paging_enabled();
        if paged == self.paged_layout {
            return Ok(());
        }
        self.shadow.drop_all(&mut self.space).map_err(NativeError::Protect)?;
        if !paged {
            self.space.map_identity().map_err(NativeError::Protect)?;
            for &frame in &self.protected {
                self.space.protect_page(frame, false).map_err(NativeError::Protect)?;
            }
        }
        self.paged_layout = paged;
        self.tc.unlink_linear(&mut self.space.monitor());
        self.linked_pages.clear();
        // The watchpoints' guards, in the new layout's terms.
        self.debug_reprotect_all()
    }

    /// CR3 was written (or CR0.WP or CR4.PSE changed): the TLB forgets
    /// every translation (SDM Vol. 3A §4.10.4.1).
    ///
    /// Dropping every shadow mapping would be correct, and costly: the
    /// kernel's own pages, the same in every address space, would each
    /// take a hidden fault again after every switch. So each mapping is
    /// checked against the new tables instead, and kept when they map the
    /// page to the same frame with the same rights and with the A bits of
    /// both entries already set (and D, if it is writable): then a refill
    /// would give exactly the same mapping and change nothing the guest can
    /// see. The rest are dropped.
    fn address_space_changed(&mut self) -> Result<(), NativeError> {
        if self.paged_layout {
            if self.shadow.len() > MAX_KEPT_ON_SWITCH {
                self.shadow.drop_all(&mut self.space).map_err(NativeError::Protect)?;
            } else {
                let (cpu, machine) = (&self.cpu, &mut self.machine);
                self.shadow
                    .retain(&mut self.space, |page, m| still_mapped(cpu, machine, page, m))
                    .map_err(NativeError::Protect)?;
            }
        }
        self.revalidate_links();
        Ok(())
    }

    /// `invlpg`: the page holding `linear` (4 KiB, or the whole 4 MiB page
    /// it belongs to) loses its mapping.
    fn invalidate_linear(&mut self, linear: u32) -> Result<(), NativeError> {
        if self.paged_layout {
            self.shadow.invalidate(&mut self.space, linear >> 12).map_err(NativeError::Protect)?;
        }
        self.revalidate_links();
        Ok(())
    }

    /// Notes that translated code now links to or from the units on
    /// linear page `page` (a chain, an IB-table entry), as it maps now.
    fn note_link(&mut self, page: u32) {
        if !self.cpu.paging_enabled() || self.linked_pages.contains_key(&page) {
            return;
        }
        let probe = paging::probe(&self.cpu, &mut self.machine, LinearAddr(page << 12), PageAccess::fetch(false));
        self.linked_pages.insert(page, probe.ok().map(|w| (w.phys.0 >> 12, w.user)));
    }

    /// After a mapping change: if a linear page that chains or IB entries
    /// rely on now maps another frame (or another U/S), cut every link that
    /// depends on linear mappings (`TranslationCache::unlink_linear`). Most
    /// switches between processes leave the kernel's code where it was, and
    /// its links stay.
    fn revalidate_links(&mut self) {
        let changed = self.linked_pages.iter().any(|(&page, &was)| {
            let probe = paging::probe(&self.cpu, &mut self.machine, LinearAddr(page << 12), PageAccess::fetch(false));
            probe.ok().map(|w| (w.phys.0 >> 12, w.user)) != was
        });
        if changed || !self.cpu.paging_enabled() {
            self.tc.unlink_linear(&mut self.space.monitor());
            self.linked_pages.clear();
        }
    }

    /// A host page fault at `addr` with paging on: a hidden fault to fill,
    /// a fault the guest must see, or an access to emulate.
    fn hidden_fault(&mut self, write: bool, addr: u32) -> Result<Fill, NativeError> {
        let page = addr >> 12;
        let access = PageAccess { write, user: self.cpu.cpl() == 3, fetch: false };
        let walk = match paging::walk(&self.cpu, &mut self.machine, LinearAddr(addr), access) {
            Ok(walk) => walk,
            Err(exception) => return Ok(Fill::Guest(exception)),
        };
        let frame = walk.phys.0 >> 12;
        // Page 0 and the monitor area cannot hold a host mapping, and
        // frames past RAM are devices or nothing: emulate. So is a
        // supervisor write that only CR0.WP = 0 allows (a writable mapping
        // would let CPL 3 write too), and a write to translated code.
        if !self.mappable(page, frame) || (write && (!walk.writable || self.protected.contains(&frame))) || self.debug_guards_page(page) {
            return Ok(Fill::Emulate);
        }
        self.shadow.stats.hidden_faults += 1;
        let writable = walk.writable && walk.dirty && !self.protected.contains(&frame);
        if let Some(m) = self.shadow.get(page) {
            if m.frame == frame && writable && !m.writable {
                // The first write: the walk set D, the page may be written.
                self.shadow.make_writable(&mut self.space, page).map_err(NativeError::Protect)?;
                return Ok(Fill::Done);
            }
        }
        self.fill_around(page, &walk, writable)?;
        Ok(Fill::Done)
    }

    /// Whether the host holds shadow mappings now (rather than RAM at its
    /// physical addresses).
    pub(crate) fn paged_layout(&self) -> bool {
        self.paged_layout
    }

    /// Removes the shadow mapping of linear page `page`, if any (a
    /// watchpoint now guards it).
    pub(crate) fn unmap_linear_page(&mut self, page: u32) -> Result<(), NativeError> {
        self.shadow.unmap(&mut self.space, page).map_err(NativeError::Protect)
    }

    fn mappable(&self, page: u32, frame: u32) -> bool {
        page != 0 && page < MONITOR_BASE >> 12 && frame < self.space.ram_size() >> 12
    }

    /// Maps `page` as `walk` found it, and with it the neighbours in its
    /// aligned group of [`FILL_GROUP`] pages that the guest has already
    /// used (A set) and that have the same U/S: one `mmap` per run of
    /// consecutive frames, so that a program touching its pages in order
    /// takes one hidden fault per group rather than per page (brief §4.5).
    /// Pages whose A bit is clear are left to fault themselves, so that the
    /// guest sees A set exactly on the pages it touched.
    fn fill_around(&mut self, page: u32, walk: &PageWalk, writable: bool) -> Result<(), NativeError> {
        let large = walk.page_size == paging::PAGE_SIZE_4M;
        let mut runs: Vec<(u32, Mapping, u32)> = Vec::new();
        let group = page & !(FILL_GROUP - 1);
        for p in group..group + FILL_GROUP {
            let mapping = if p == page {
                Mapping { frame: walk.phys.0 >> 12, writable, user: walk.user, large }
            } else {
                if self.shadow.get(p).is_some() || self.debug_guards_page(p) {
                    continue;
                }
                let probe = paging::probe(&self.cpu, &mut self.machine, LinearAddr(p << 12), PageAccess::read(false));
                let Ok(w) = probe else { continue };
                let frame = w.phys.0 >> 12;
                if !w.accessed || w.user != walk.user || !self.mappable(p, frame) {
                    continue;
                }
                let writable = w.writable && w.dirty && !self.protected.contains(&frame);
                Mapping { frame, writable, user: w.user, large: w.page_size == paging::PAGE_SIZE_4M }
            };
            match runs.last_mut() {
                Some((start, m, n)) if *start + *n == p && m.frame + *n == mapping.frame && m.writable == mapping.writable && m.large == mapping.large => *n += 1,
                _ => runs.push((p, mapping, 1)),
            }
        }
        for (start, mapping, count) in runs {
            self.shadow.map_run(&mut self.space, start, mapping.frame, count, mapping).map_err(NativeError::Protect)?;
        }
        Ok(())
    }

    /// The frame a data access to `addr` reaches, if it can be found.
    fn data_frame(&mut self, addr: u32) -> Option<u32> {
        if !self.cpu.paging_enabled() {
            return Some(addr >> 12);
        }
        paging::probe(&self.cpu, &mut self.machine, LinearAddr(addr), PageAccess::read(false)).ok().map(|w| w.phys.0 >> 12)
    }

    fn log_unit(&mut self, id: UnitId) {
        let u = self.tc.unit(id);
        let code = self.space.monitor_bytes(u.tc.0 - MONITOR_BASE, u.tc_len as usize).to_vec();
        let text = if self.log.out_asm {
            bt86_translate::trace::format_unit(u.guest_start, &u.insns, u.end, &code, u.tc.0)
        } else {
            let mut s = format!("IN: unit {:#010x}\n", u.guest_start);
            for t in &u.insns {
                let _ = writeln!(s, "  {:08x}  {}", t.insn.ip32(), bt86_translate::trace::format_insn(&t.insn));
            }
            s
        };
        self.log_line(&text);
    }

    fn log_line(&mut self, text: &str) {
        if let Some(sink) = self.log_sink.as_mut() {
            let _ = sink.write_all(text.as_bytes());
            if !text.ends_with('\n') {
                let _ = sink.write_all(b"\n");
            }
        }
    }

    /// Rebuilds the LDT shadows if a segment register changed.
    fn sync_shadows(&mut self) -> Result<(), NativeError> {
        // At CPL 3 with paging, the segments also stop below the lowest
        // supervisor page mapped (brief §4.6).
        let ceiling = if self.paged_layout && self.cpu.cpl() == 3 { self.shadow.ceiling() } else { MONITOR_BASE };
        if ceiling != self.shadow_ceiling {
            self.shadow_ceiling = ceiling;
            self.shadow_generation = None;
            self.shadowed = [None; 4];
        }
        if self.shadow_generation == Some(self.cpu.segment_generation) {
            return Ok(());
        }
        for (i, (reg, field)) in [
            (SegReg::Ds, vcpu::GUEST_DS),
            (SegReg::Es, vcpu::GUEST_ES),
            (SegReg::Fs, vcpu::GUEST_FS),
            (SegReg::Ss, vcpu::GUEST_SS),
        ]
        .into_iter()
        .enumerate()
        {
            // A ring switch changes CS and SS; the others keep their shadow.
            let seg = *self.cpu.segment(reg);
            if self.shadowed[i] == Some(seg) {
                continue;
            }
            let sel = self.ldt.shadow(reg, &seg, ceiling)?;
            self.space.vcpu_write(field, &sel.to_le_bytes());
            self.shadowed[i] = Some(seg);
        }
        // The guest-visible selectors, for inline `push sreg` / `mov r, sreg`.
        let mut selectors = [0u8; 24];
        for reg in SegReg::ALL {
            let i = reg as usize * 4;
            selectors[i..i + 4].copy_from_slice(&u32::from(self.cpu.segment(reg).selector.0).to_le_bytes());
        }
        self.space.vcpu_write(vcpu::GUEST_SELECTORS, &selectors);
        self.stats.ldt_writes = self.ldt.writes;
        self.shadow_generation = Some(self.cpu.segment_generation);
        Ok(())
    }

    /// The world switch: guest registers into the VCPU page, run, and
    /// back.
    fn enter(&mut self, unit: UnitId) -> Result<(), NativeError> {
        if self.log.exec {
            let text = format!("exec: unit {:#010x} at {}", self.tc.unit(unit).guest_start, self.tc.unit(unit).tc);
            self.log_line(&text);
        }
        self.enter_at(self.tc.unit(unit).tc.0)
    }

    /// Enters 32-bit code at host address `target` (a TC unit, or guest
    /// code itself for a direct call).
    pub(crate) fn enter_at(&mut self, target: u32) -> Result<(), NativeError> {
        self.sync_shadows()?;
        let mut regs = [0u8; 36];
        for (i, r) in self.cpu.gpr.iter().enumerate() {
            regs[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        regs[32..36].copy_from_slice(&self.cpu.eflags.to_le_bytes());
        self.space.vcpu_write(vcpu::GPR, &regs);
        self.space.vcpu_write(vcpu::ENTRY_TARGET, &target.to_le_bytes());
        self.space.vcpu_write(vcpu::IB_USER, &u32::from(self.cpu.cpl() == 3).to_le_bytes());
        self.stats.entries += 1;
        signals::ASYNC_TC.store(&mut self.tc as *mut TranslationCache, Ordering::SeqCst);
        timer::IN_GUEST.store(true, Ordering::SeqCst);
        // SAFETY: the VCPU page is set up (far pointers, shadow selectors
        // synced above, entry target inside the TC), the landing pad was
        // copied at construction, and the fault handlers and this thread's
        // alternate stack are installed.
        unsafe { switch::bt86_world_enter(u64::from(MONITOR_BASE)) };
        timer::IN_GUEST.store(false, Ordering::SeqCst);
        signals::ASYNC_TC.store(std::ptr::null_mut(), Ordering::SeqCst);
        for i in 0..8 {
            self.cpu.gpr[i] = self.space.vcpu_read(vcpu::GPR + 4 * i as u32);
        }
        let real = self.space.vcpu_read(vcpu::EFLAGS);
        self.cpu.eflags = (self.cpu.eflags & !flags::NATIVE) | (real & flags::NATIVE);
        Ok(())
    }

    fn count_exit(&mut self, reason: &'static str) {
        self.stats.exits.bump(reason);
    }

    /// Acts on the exit that just happened. `trap_flag` says whether TF was
    /// set when the unit was entered (single-step mode).
    fn handle_exit(&mut self, trap_flag: bool) -> Result<Option<Exit>, NativeError> {
        self.debug_record_exit();
        let id = ExitId(self.space.vcpu_read(vcpu::EXIT_ID));
        self.stats.ib_hits = u64::from(self.space.vcpu_read(vcpu::IB_HITS));
        let result = match id {
            ExitId::FAULT => self.host_fault(trap_flag),
            ExitId::ASYNC => {
                // The host timer stopped the guest at an instruction
                // boundary; the loop takes the interrupt.
                self.count_exit("timer");
                let rip = self.space.vcpu_read_u64(vcpu::FAULT_RIP) as u32;
                match self.tc.boundary_at(rip) {
                    Some(eip) => {
                        self.cpu.eip = eip;
                        Ok(None)
                    }
                    None => Err(NativeError::Internal(format!("timer exit at {rip:#x}, which is no instruction boundary"))),
                }
            }
            ExitId::INDIRECT_MISS => {
                self.count_exit("indirect-miss");
                self.stats.ib_misses += 1;
                let target = self.space.vcpu_read(vcpu::IB_TARGET);
                self.cpu.eip = target;
                if !trap_flag && !self.debug_is_break(target) {
                    if let Ok(page) = self.code_page(target) {
                        let unit = self.unit_for(target, page.frame, self.mode(false), true)?;
                        // Kernel code is reached from CPL 3 only through
                        // a fetch check: its IB entry is guarded.
                        let guarded = self.cpu.paging_enabled() && !page.user;
                        if self.tc.install_indirect(&mut self.space.monitor(), unit, guarded) {
                            self.note_unit_links(unit);
                        }
                    }
                }
                self.single_step_trap(trap_flag)
            }
            id => match self.tc.exit(id).copied() {
                Some(rec) => match rec.kind {
                    ExitKind::Branch { target } => {
                        self.count_exit("branch");
                        self.cpu.eip = target;
                        // A target whose fetch faults is not chained: the
                        // run loop delivers the #PF.
                        if !trap_flag && !self.debug_is_break(target) {
                            if let Ok(page) = self.code_page(target) {
                                let generation = self.tc.generation();
                                let to = self.unit_for(target, page.frame, self.mode(false), true)?;
                                if self.tc.generation() == generation
                                    && self.may_chain(rec.unit, page)
                                    && self.tc.chain(&mut self.space.monitor(), id, to)
                                {
                                    self.note_unit_links(rec.unit);
                                    self.note_unit_links(to);
                                }
                            }
                        }
                        self.single_step_trap(trap_flag)
                    }
                    ExitKind::Callout { eip, insn, reason } => {
                        self.count_exit("callout");
                        // Port I/O may change what the devices will do next
                        // (an EOI, a new PIT count). The POST diagnostic
                        // port 0x80 feeds nothing, and it is what guests
                        // write to wait a moment, so it is left out.
                        if reason == CalloutReason::PortIo && io_port(&insn, &self.cpu) != Some(POST_PORT) {
                            self.devices_touched = true;
                        }
                        self.stats.callouts.bump(reason.class());
                        self.cpu.eip = eip;
                        self.callout(&insn, reason, trap_flag)
                    }
                    ExitKind::Fault { eip, exception } => {
                        self.count_exit("fault");
                        self.cpu.eip = eip;
                        self.deliver(exception)
                    }
                },
                None => Err(NativeError::Internal(format!("unknown exit id {}", id.0))),
            },
        };
        result
    }

    /// After an instruction completed in single-step mode, the #DB trap.
    pub(crate) fn single_step_trap(&mut self, trap_flag: bool) -> Result<Option<Exit>, NativeError> {
        if !trap_flag {
            return Ok(None);
        }
        // DR6.BS: the debug exception was caused by single-step.
        self.cpu.dr[6] |= 1 << 14;
        self.deliver(Exception::Debug)
    }

    /// Executes a callout on the virtual CPU.
    fn callout(&mut self, insn: &Instruction, reason: CalloutReason, trap_flag: bool) -> Result<Option<Exit>, NativeError> {
        let software_int = matches!(insn.mnemonic(), Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Into | Mnemonic::Int1);
        let mut written = Vec::new();
        let result = match insn.mnemonic() {
            // Single-stepping a repeated string instruction: one iteration,
            // EIP kept at the instruction until the last.
            _ if reason == CalloutReason::RepeatIteration => {
                let mut bus = AccessLog::new(&mut self.machine);
                let result = bt86_cpu::emulate::emulate_iteration(&mut self.cpu, &mut bus, insn);
                written = bus.written_frames();
                result.map(|_| bt86_cpu::exec::Effect::Continue)
            }
            // Indirect branches through a GS or CS override, and 16-bit
            // near branches: read the target with full segment checks here.
            _ if is_near_branch(insn) && reason != CalloutReason::FarTransfer => {
                self.emulate_near_branch(insn).map(|_| bt86_cpu::exec::Effect::Continue).map_err(EmulateError::from)
            }
            _ => bt86_cpu::exec::execute(&mut self.cpu, &mut self.machine, insn, host_tsc()),
        };
        self.check_written_code(&written)?;
        match result {
            Ok(effect) => {
                if software_int {
                    self.stats.software_interrupts += 1;
                    if self.log.int {
                        let text = format!("int: {} at eip {:#010x}", bt86_translate::trace::format_insn(insn), insn.ip32());
                        self.log_line(&text);
                    }
                }
                match effect {
                    bt86_cpu::exec::Effect::Halt => self.cpu.halted = true,
                    // Only sti holds interrupts off for one more
                    // instruction (SDM Vol. 2B STI); popf and iret that set
                    // IF let them in at once.
                    bt86_cpu::exec::Effect::InterruptsEnabled if insn.mnemonic() == Mnemonic::Sti => {
                        self.interrupt_shadow = true
                    }
                    bt86_cpu::exec::Effect::AddressSpaceChanged => self.address_space_changed()?,
                    bt86_cpu::exec::Effect::InvalidatePage(linear) => self.invalidate_linear(linear.0)?,
                    _ => {}
                }
                if software_int {
                    // INT n clears TF for the handler; no single-step trap
                    // follows it (SDM Vol. 3A §17.3.1.4).
                    return Ok(None);
                }
                self.single_step_trap(trap_flag)
            }
            Err(EmulateError::Exception(exception)) => self.deliver(exception),
            Err(e @ EmulateError::Unsupported { .. }) => Ok(Some(Exit::Unsupported(e.to_string()))),
        }
    }

    /// `jmp`/`call` r/m with a GS or CS override, or a 16-bit near
    /// branch: rare, so done here against the guest's real segments.
    pub(crate) fn emulate_near_branch(&mut self, insn: &Instruction) -> Result<(), Exception> {
        let op16 = insn.code().op_code().operand_size() == 16;
        let size = if op16 { 2 } else { 4 };
        let next = insn.next_ip32();
        let mask = if op16 { 0xFFFF } else { 0xFFFF_FFFF };
        let target = match insn.mnemonic() {
            Mnemonic::Ret => {
                let t = self.cpu.peek_stack(&mut self.machine, 0, size)?;
                let pop = if insn.op_count() == 1 { u32::from(insn.immediate16()) } else { 0 };
                self.cpu.pop(&mut self.machine, size)?;
                let sp = self.cpu.stack_pointer_plus(pop as i32);
                self.cpu.set_stack_pointer(sp);
                t
            }
            _ if insn.is_jcc_short_or_near() => {
                if bt86_cpu::alu::condition(insn.condition_code(), self.cpu.eflags) {
                    insn.near_branch32()
                } else {
                    next
                }
            }
            _ if matches!(insn.op0_kind(), iced_x86::OpKind::NearBranch16 | iced_x86::OpKind::NearBranch32) => {
                insn.near_branch32()
            }
            // jmp/call r/m: the target through the guest's real segments.
            _ => bt86_cpu::operand::read_operand(&self.cpu, &mut self.machine, insn, 0, size)?,
        } & mask;
        if insn.mnemonic() == Mnemonic::Call {
            self.cpu.push(&mut self.machine, next & mask, size)?;
        }
        self.cpu.eip = target;
        Ok(())
    }

    /// Delivers a guest exception through the guest's IDT.
    pub(crate) fn deliver(&mut self, exception: Exception) -> Result<Option<Exit>, NativeError> {
        self.stats.exceptions.bump(exception.mnemonic());
        if self.log.int {
            let text = format!("int: {exception} at eip {:#010x}", self.cpu.eip);
            self.log_line(&text);
        }
        let from = self.cpu.eip;
        match deliver_exception(&mut self.cpu, &mut self.machine, exception) {
            Ok(()) => Ok(self.debug_delivered(false, exception.vector().0, from, &exception.to_string())),
            Err(shutdown) => Ok(Some(Exit::Shutdown(shutdown))),
        }
    }

    /// A fault in translated code, recorded by the signal handler.
    fn host_fault(&mut self, trap_flag: bool) -> Result<Option<Exit>, NativeError> {
        let trapno = self.space.vcpu_read(vcpu::FAULT_TRAPNO);
        let err = self.space.vcpu_read(vcpu::FAULT_ERR);
        let addr = self.space.vcpu_read_u64(vcpu::FAULT_ADDR);
        let rip = self.space.vcpu_read_u64(vcpu::FAULT_RIP);
        let Some((_, entry)) = self.tc.locate(rip as u32) else {
            return Err(NativeError::Internal(format!(
                "fault {trapno} at TC address {rip:#x}, which belongs to no translation unit"
            )));
        };
        self.cpu.eip = entry.guest_eip;
        if entry.kind == MapKind::ScratchSequence {
            self.cpu.gpr[gpr::ECX] = self.space.vcpu_read(vcpu::SCRATCH_ECX);
            self.cpu.gpr[gpr::EDX] = self.space.vcpu_read(vcpu::SCRATCH_EDX);
        }
        let exception = match trapno {
            0 => Exception::DivideError,
            1 => Exception::Debug,
            3 => Exception::Breakpoint,
            4 => Exception::Overflow,
            5 => Exception::BoundRange,
            6 => Exception::InvalidOpcode,
            7 => Exception::DeviceNotAvailable,
            16 => Exception::FloatingPoint,
            17 => Exception::AlignmentCheck,
            19 => Exception::SimdFloatingPoint,
            12..=14 => {
                self.count_exit("memory-fault");
                return self.memory_fault(trapno, err, addr as u32, trap_flag);
            }
            other => {
                return Ok(Some(Exit::Unsupported(format!(
                    "host exception {other} at guest EIP {:#010x} has no guest meaning",
                    self.cpu.eip
                ))))
            }
        };
        self.count_exit("native-exception");
        self.deliver(exception)
    }

    /// A #GP, #SS or #PF from translated code. Not a guest fault yet: the
    /// access may be one the monitor must carry out itself.
    fn memory_fault(&mut self, trapno: u32, err: u32, addr: u32, trap_flag: bool) -> Result<Option<Exit>, NativeError> {
        let page = addr >> 12;
        self.devices_touched = true;
        if let Some(handled) = self.debug_watch_fault(trapno, addr, trap_flag)? {
            return Ok(handled);
        }
        if self.paged_layout {
            if trapno == 14 {
                match self.hidden_fault(err & 2 != 0, addr)? {
                    Fill::Done => {
                        self.retry = true;
                        return Ok(None);
                    }
                    Fill::Guest(exception) => return self.deliver(exception),
                    Fill::Emulate => {}
                }
            } else if self.cpu.cpl() == 3 && self.shadow.ceiling() < MONITOR_BASE {
                // The shadow segments stop at the lowest supervisor page,
                // and CPL 3 reached past it: perhaps a user page lies above
                // that page. Drop the supervisor mappings, which lifts the
                // ceiling, and run the instruction again natively. A real
                // guest fault comes straight back and is emulated below.
                self.shadow.drop_supervisor(&mut self.space).map_err(NativeError::Protect)?;
                self.retry = true;
                return Ok(None);
            }
        }
        // A write to a frame holding translated code (page-fault error
        // code bit 1 = write). Small kernels keep data beside code on one
        // page, so most such writes do not touch translated bytes at all:
        // emulate the write (through the monitor's own RAM mapping, which
        // the protection does not cover) and drop the frame's units only
        // if their code really changed (brief §4.6).
        let frame = self.data_frame(addr);
        if trapno == 14 && err & 2 != 0 && frame.is_some_and(|f| self.protected.contains(&f)) {
            let frame = frame.unwrap_or(page);
            self.stats.smc_faults += 1;
            let insn = self.decode_at(self.cpu.eip);
            let repeated = insn.has_rep_prefix() || insn.has_repne_prefix();
            if !repeated {
                match self.emulate_logged(&insn) {
                    Ok(written) => {
                        self.stats.emulated_accesses += 1;
                        self.check_written_code(&written)?;
                        return self.single_step_trap(trap_flag);
                    }
                    Err(EmulateError::Exception(e)) => return self.deliver(e),
                    Err(EmulateError::Unsupported { .. }) => {}
                }
            }
            // A string store (which may run across many pages) or an
            // instruction the emulator does not know: drop the page's
            // units, let the instruction run once, alone, from a unit that
            // does not protect the page again, and translate what follows
            // afresh. A store into the running unit thus takes effect
            // before the next instruction.
            self.release_code_page(frame)?;
            self.step_once = Some(self.cpu.eip);
            self.retry = true;
            return Ok(None);
        }
        // Anything else is an access the shadow segments or the host
        // mappings refused: the monitor area, page 0, physical addresses
        // without RAM, or a guest segment violation. Emulate the one
        // instruction against the real guest segments; bt86-cpu raises the
        // guest's own fault if there is one.
        let insn = self.decode_at(self.cpu.eip);
        match self.emulate_logged(&insn) {
            Ok(written) => {
                self.stats.emulated_accesses += 1;
                // Code on a page the host cannot protect (page 0, the
                // monitor area) may just have been rewritten by this
                // access.
                self.check_written_code(&written)?;
                self.single_step_trap(trap_flag)
            }
            Err(EmulateError::Exception(e)) => self.deliver(e),
            Err(EmulateError::Unsupported { .. }) => {
                log::warn!(
                    "cannot emulate {} at {:#010x} after a host fault; delivering #GP(0) to the guest",
                    bt86_translate::trace::format_insn(&insn),
                    self.cpu.eip
                );
                self.deliver(Exception::GeneralProtection(0))
            }
        }
    }

    /// Emulates one instruction, and returns the physical frames it wrote.
    fn emulate_logged(&mut self, insn: &Instruction) -> Result<Vec<u32>, EmulateError> {
        let mut bus = AccessLog::new(&mut self.machine);
        emulate(&mut self.cpu, &mut bus, insn)?;
        Ok(bus.written_frames())
    }

    /// After an emulated write to `frames`: drops the translations whose
    /// code it changed.
    pub(crate) fn check_written_code(&mut self, frames: &[u32]) -> Result<(), NativeError> {
        for &frame in frames {
            if self.tc.page_has_code(frame) && !self.code_intact(frame) {
                if self.protected.contains(&frame) {
                    self.release_code_page(frame)?;
                } else {
                    self.tc.invalidate_page(&mut self.space.monitor(), frame);
                }
            }
        }
        Ok(())
    }

    /// Pushes the direct-return stub's address as the return address of a
    /// direct call.
    pub(crate) fn prepare_direct_call(&mut self) -> Result<(), NativeError> {
        let ret = self.tc.direct_return().0;
        self.cpu
            .push(&mut self.machine, ret, 4)
            .map_err(|e| NativeError::Internal(format!("cannot push the return address for a direct call: {e}")))
    }

    pub(crate) fn space_mut(&mut self) -> &mut AddressSpace {
        &mut self.space
    }

    pub(crate) fn space_ref(&self) -> &AddressSpace {
        &self.space
    }

    /// Bytes of the monitor area, for showing translated code.
    pub fn monitor_bytes(&self, addr: u32, len: usize) -> &[u8] {
        self.space.monitor_bytes(addr - MONITOR_BASE, len)
    }

    pub(crate) fn decode_at(&mut self, eip: u32) -> Instruction {
        let mut bytes = [0u8; 16];
        GuestCode { machine: &mut self.machine, cpu: &self.cpu }.read_code(eip, &mut bytes);
        let mut decoder = Decoder::with_ip(32, &bytes, u64::from(eip), DecoderOptions::NONE);
        decoder.decode()
    }

    /// Whether every translated instruction from physical frame `frame`
    /// still has the bytes it was translated from. Bytes are read from the
    /// frames each unit was translated from, whatever the guest's page
    /// tables say now.
    pub(crate) fn code_intact(&mut self, frame: u32) -> bool {
        let units: Vec<UnitId> = self.tc.units_on_page(frame).collect();
        for id in units {
            let u = self.tc.unit(id);
            let first_page = u.guest_start >> 12;
            for t in &u.insns {
                for (i, &byte) in t.bytes().iter().enumerate() {
                    let linear = t.insn.ip32().wrapping_add(i as u32);
                    let Some(&f) = u.frames.get((linear >> 12).wrapping_sub(first_page) as usize) else { return false };
                    let mut now = [0u8];
                    self.machine.read_phys(GuestPhysAddr(f << 12 | (linear & 0xFFF)), &mut now);
                    if now[0] != byte {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Drops the units translated from `frame` and lets the guest write it
    /// freely until code from it is translated again.
    pub(crate) fn release_code_page(&mut self, frame: u32) -> Result<(), NativeError> {
        self.tc.invalidate_page(&mut self.space.monitor(), frame);
        self.protected.remove(&frame);
        if self.paged_layout {
            // Its mappings come back writable (if the guest allows) on
            // their next hidden fault.
            self.shadow.drop_frame(&mut self.space, frame).map_err(NativeError::Protect)?;
        } else {
            self.space.protect_page(frame, true).map_err(NativeError::Protect)?;
            self.debug_reprotect(frame)?;
        }
        Ok(())
    }

    /// Delivers a hardware interrupt now (for devices of later milestones
    /// and tests).
    pub fn inject_interrupt(&mut self, vector: Vector) -> Result<(), Exception> {
        deliver_interrupt(&mut self.cpu, &mut self.machine, vector, Source::External)
    }
}

/// The machine as the emulator's bus, with every memory access it made
/// recorded (physical address, length, write): guest memory and the A/D
/// bits of page tables alike. The monitor drops the translations of code
/// an emulated instruction overwrote, and the debugger checks the accesses
/// against its watchpoints.
pub(crate) struct AccessLog<'a> {
    machine: &'a mut Machine,
    pub(crate) accesses: Vec<(u32, u32, bool)>,
}

impl<'a> AccessLog<'a> {
    pub(crate) fn new(machine: &'a mut Machine) -> AccessLog<'a> {
        AccessLog { machine, accesses: Vec::new() }
    }

    /// The physical frames written, each once.
    pub(crate) fn written_frames(&self) -> Vec<u32> {
        let mut frames = Vec::new();
        for &(addr, len, _) in self.accesses.iter().filter(|a| a.2) {
            let last = addr.wrapping_add(len.max(1) - 1) >> 12;
            for frame in addr >> 12..=last {
                if !frames.contains(&frame) {
                    frames.push(frame);
                }
            }
        }
        frames
    }
}

impl Bus for AccessLog<'_> {
    fn read_phys(&mut self, addr: GuestPhysAddr, buf: &mut [u8]) {
        self.accesses.push((addr.0, buf.len() as u32, false));
        self.machine.read_phys(addr, buf);
    }

    fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]) {
        self.accesses.push((addr.0, data.len() as u32, true));
        self.machine.write_phys(addr, data);
    }

    fn io_in(&mut self, port: u16, size: bt86_machine::IoSize) -> u32 {
        self.machine.io_in(port, size)
    }

    fn io_out(&mut self, port: u16, size: bt86_machine::IoSize, value: u32) {
        self.machine.io_out(port, size, value)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        VM_EXISTS.store(false, Ordering::SeqCst);
    }
}

/// The POST diagnostic port, which no device behaviour depends on.
const POST_PORT: u16 = 0x80;

/// The port an `in`, `out`, `ins` or `outs` addresses.
fn io_port(insn: &Instruction, cpu: &Cpu) -> Option<u16> {
    let operand = if insn.mnemonic() == Mnemonic::In { 1 } else { 0 };
    match insn.op_kind(operand) {
        iced_x86::OpKind::Immediate8 => Some(u16::from(insn.immediate8())),
        _ => Some(cpu.gpr[gpr::EDX] as u16),
    }
}

/// A near jmp, call or ret (direct or through a register or memory).
fn is_near_branch(insn: &Instruction) -> bool {
    insn.is_jmp_short_or_near()
        || insn.is_jmp_near_indirect()
        || insn.is_call_near()
        || insn.is_call_near_indirect()
        || insn.is_jcc_short_or_near()
        || insn.mnemonic() == Mnemonic::Ret
}

/// The host's time-stamp counter, which the virtual TSC is offset from.
fn host_tsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86-64 and reads no memory.
    unsafe { std::arch::x86_64::_rdtsc() }
}
