//! The VM as a gdbstub `Target`: registers, memory, run control,
//! breakpoints and watchpoints, and the event loop that runs the guest
//! while watching the socket.
//!
//! This module owns the translation between gdb's vocabulary and the
//! monitor's run control: a `Z0` or `Z1` becomes a linear breakpoint, a
//! `Z2`-`Z4` a watchpoint, a `continue` a series of short `Vm::resume`
//! slices, a `stepi` one `Vm::step`. It must not touch guest state except
//! through `Vm`'s public API and the virtual CPU.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::TcpStream;

use bt86_native::{BreakAddr, Exit, NativeError, Stop, Vm, WatchKind};
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::SingleThreadStopReason;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86CoreRegs;
use gdbstub_arch::x86::X86_SSE;

use super::{client_has_data, monitor, regs, slice};

/// The errno gdb shows as "Cannot access memory" (EFAULT).
const EFAULT: u8 = 14;

/// What the client asked the guest to do when it last resumed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Continue,
    Step,
}

/// Which kinds of breakpoint gdb set at one address. gdb may set a
/// software and a hardware breakpoint at the same place; the monitor has
/// one breakpoint there, kept until both are gone.
#[derive(Clone, Copy, Debug, Default)]
struct BreakKinds {
    software: bool,
    hardware: bool,
}

/// The VM, seen from gdb.
pub struct GdbTarget<'vm> {
    vm: &'vm mut Vm,
    breakpoints: BTreeMap<u32, BreakKinds>,
    /// Watchpoints as gdb set them: kind, address, length.
    watchpoints: Vec<(WatchKind, u32, u32)>,
    action: Action,
    /// How the guest stopped for good, once it has.
    exit: Option<Exit>,
    exit_status: fn(&Exit) -> i32,
}

impl<'vm> GdbTarget<'vm> {
    pub fn new(vm: &'vm mut Vm, exit_status: fn(&Exit) -> i32) -> GdbTarget<'vm> {
        GdbTarget { vm, breakpoints: BTreeMap::new(), watchpoints: Vec::new(), action: Action::Continue, exit: None, exit_status }
    }

    pub fn vm(&self) -> &Vm {
        self.vm
    }

    /// The guest's exit, if it stopped for good during the session.
    pub fn take_exit(&mut self) -> Option<Exit> {
        self.exit.take()
    }

    /// Drops every breakpoint and watchpoint the client set (after a
    /// detach, so that the guest runs on undisturbed).
    pub fn forget_all(&mut self) {
        for addr in std::mem::take(&mut self.breakpoints).into_keys() {
            self.vm.remove_breakpoint(BreakAddr::Linear(addr));
        }
        for (kind, addr, len) in std::mem::take(&mut self.watchpoints) {
            self.vm.remove_watchpoint(kind, addr, len);
        }
    }

    /// Runs the guest as the client asked, until it stops or the client
    /// has something to say.
    fn run(&mut self, conn: &mut TcpStream) -> Result<Option<SingleThreadStopReason<u32>>, NativeError> {
        let stop = match self.action {
            Action::Step => self.vm.step()?,
            Action::Continue => {
                if client_has_data(conn) {
                    return Ok(None);
                }
                self.vm.resume(slice())?
            }
        };
        if stop == Stop::Limit && self.action == Action::Continue {
            // The slice ended: look at the socket and go on.
            return Ok(None);
        }
        Ok(Some(match stop {
            Stop::Stepped | Stop::Limit => SingleThreadStopReason::DoneStep,
            Stop::Breakpoint { eip } => match self.breakpoints.get(&eip) {
                Some(BreakKinds { hardware: true, .. }) => SingleThreadStopReason::HwBreak(()),
                _ => SingleThreadStopReason::SwBreak(()),
            },
            Stop::Watchpoint { kind, addr, .. } => {
                SingleThreadStopReason::Watch { tid: (), kind: gdb_watch_kind(kind), addr }
            }
            // Not asked for (`stop_on_events` is off), but if the monitor
            // stops there, gdb hears of it as a plain trap.
            Stop::Exception { .. } | Stop::Interrupt { .. } => SingleThreadStopReason::Signal(Signal::SIGTRAP),
            Stop::Exit(exit) => {
                // gdb shows the status in "exited with code NN": the one
                // the shell will see when bt86 ends.
                let status = (self.exit_status)(&exit);
                self.exit = Some(exit);
                SingleThreadStopReason::Exited((status & 0xFF) as u8)
            }
        }))
    }

    fn add_breakpoint(&mut self, addr: u32, hardware: bool) -> TargetResult<bool, Self> {
        let kinds = self.breakpoints.get(&addr).copied();
        if kinds.is_none() {
            if let Err(e) = self.vm.add_breakpoint(BreakAddr::Linear(addr)) {
                log::warn!("gdb: cannot set a breakpoint at {addr:#010x}: {e}");
                return Ok(false);
            }
        }
        let kinds = self.breakpoints.entry(addr).or_default();
        if hardware {
            kinds.hardware = true;
        } else {
            kinds.software = true;
        }
        Ok(true)
    }

    fn remove_breakpoint(&mut self, addr: u32, hardware: bool) -> TargetResult<bool, Self> {
        let Some(kinds) = self.breakpoints.get_mut(&addr) else {
            return Ok(false);
        };
        let was_set = if hardware { std::mem::take(&mut kinds.hardware) } else { std::mem::take(&mut kinds.software) };
        if !kinds.hardware && !kinds.software {
            self.breakpoints.remove(&addr);
            self.vm.remove_breakpoint(BreakAddr::Linear(addr));
        }
        Ok(was_set)
    }
}

/// gdb's watchpoint kinds (`Z2` write, `Z3` read, `Z4` access) and the
/// monitor's.
fn watch_kind(kind: GdbWatchKind) -> WatchKind {
    match kind {
        GdbWatchKind::Write => WatchKind::Write,
        GdbWatchKind::Read => WatchKind::Read,
        GdbWatchKind::ReadWrite => WatchKind::Access,
    }
}

fn gdb_watch_kind(kind: WatchKind) -> GdbWatchKind {
    match kind {
        WatchKind::Write => GdbWatchKind::Write,
        WatchKind::Read => GdbWatchKind::Read,
        WatchKind::Access => GdbWatchKind::ReadWrite,
    }
}

impl Target for GdbTarget<'_> {
    type Arch = X86_SSE;
    type Error = NativeError;

    #[inline(always)]
    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    #[inline(always)]
    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for GdbTarget<'_> {
    fn read_registers(&mut self, out: &mut X86CoreRegs) -> TargetResult<(), Self> {
        *out = regs::read(self.vm);
        Ok(())
    }

    fn write_registers(&mut self, new: &X86CoreRegs) -> TargetResult<(), Self> {
        regs::write(self.vm, new).map_err(|e| {
            log::warn!("gdb: {e}");
            TargetError::NonFatal
        })
    }

    /// Reads guest memory at linear addresses, through the guest's page
    /// tables when paging is on. An unmapped page ends the read; gdb gets
    /// the bytes before it, or an error when there are none.
    fn read_addrs(&mut self, start: u32, data: &mut [u8]) -> TargetResult<usize, Self> {
        let mut done = 0;
        for (addr, chunk) in page_chunks(start, data.len()) {
            if self.vm.read_linear(addr, &mut data[done..done + chunk]).is_err() {
                break;
            }
            done += chunk;
        }
        if done == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(done)
    }

    /// Writes guest memory at linear addresses; translations of code it
    /// overwrites are dropped by the monitor.
    fn write_addrs(&mut self, start: u32, data: &[u8]) -> TargetResult<(), Self> {
        self.vm.write_linear(start, data).map_err(|_| TargetError::Errno(EFAULT))
    }

    #[inline(always)]
    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for GdbTarget<'_> {
    fn resume(&mut self, signal: Option<Signal>) -> Result<(), Self::Error> {
        // Signals are a process's, not a machine's: a guest has no signal
        // handlers to pass one to. Exceptions reach the guest through its
        // own IDT anyway.
        if let Some(signal) = signal {
            log::info!("gdb: ignoring signal {signal} passed on continue; a guest kernel has no signal handlers");
        }
        self.action = Action::Continue;
        Ok(())
    }

    #[inline(always)]
    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for GdbTarget<'_> {
    fn step(&mut self, signal: Option<Signal>) -> Result<(), Self::Error> {
        if let Some(signal) = signal {
            log::info!("gdb: ignoring signal {signal} passed on stepi; a guest kernel has no signal handlers");
        }
        self.action = Action::Step;
        Ok(())
    }
}

impl Breakpoints for GdbTarget<'_> {
    #[inline(always)]
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

/// `Z0`: a "software" breakpoint. gdb would otherwise write `int3` into
/// guest memory; the monitor's breakpoints end translation units instead,
/// so the guest's code (and a checksum over it) stays untouched.
impl SwBreakpoint for GdbTarget<'_> {
    fn add_sw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        self.add_breakpoint(addr, false)
    }

    fn remove_sw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_breakpoint(addr, false)
    }
}

/// `Z1`: a "hardware" breakpoint (`hbreak`). The monitor has no debug
/// registers to spend and no limit of four: it is the same breakpoint as
/// `Z0`, reported back as a hardware one.
impl HwBreakpoint for GdbTarget<'_> {
    fn add_hw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        self.add_breakpoint(addr, true)
    }

    fn remove_hw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_breakpoint(addr, true)
    }
}

/// `Z2`-`Z4`: watchpoints, which the monitor implements with page
/// protection plus a check of the faulting access.
impl HwWatchpoint for GdbTarget<'_> {
    fn add_hw_watchpoint(&mut self, addr: u32, len: u32, kind: GdbWatchKind) -> TargetResult<bool, Self> {
        let kind = watch_kind(kind);
        match self.vm.add_watchpoint(kind, addr, len) {
            Ok(()) => {
                self.watchpoints.push((kind, addr, len));
                Ok(true)
            }
            Err(e) => {
                log::warn!("gdb: cannot set a watchpoint on {len} bytes at {addr:#010x}: {e}");
                Ok(false)
            }
        }
    }

    fn remove_hw_watchpoint(&mut self, addr: u32, len: u32, kind: GdbWatchKind) -> TargetResult<bool, Self> {
        let kind = watch_kind(kind);
        let Some(i) = self.watchpoints.iter().position(|w| *w == (kind, addr, len)) else {
            return Ok(false);
        };
        self.watchpoints.remove(i);
        Ok(self.vm.remove_watchpoint(kind, addr, len))
    }
}

impl MonitorCmd for GdbTarget<'_> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), Self::Error> {
        let text = String::from_utf8_lossy(cmd);
        let reply = monitor::execute(self.vm, &text);
        out.write_raw(reply.as_bytes());
        if !reply.ends_with('\n') {
            out.write_raw(b"\n");
        }
        Ok(())
    }
}

/// The blocking event loop: while the guest runs, it runs in slices of a
/// few milliseconds, and the socket is looked at between them for a
/// Ctrl-C or any other packet.
/// (A type only, never a value: gdbstub names the loop by its type.)
pub struct EventLoop<'vm>(PhantomData<GdbTarget<'vm>>);

impl<'vm> BlockingEventLoop for EventLoop<'vm> {
    type Target = GdbTarget<'vm>;
    type Connection = TcpStream;
    type StopReason = SingleThreadStopReason<u32>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Self::Target,
        conn: &mut TcpStream,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<NativeError, std::io::Error>> {
        loop {
            match target.run(conn).map_err(WaitForStopReasonError::Target)? {
                Some(stop) => return Ok(Event::TargetStopped(stop)),
                None if client_has_data(conn) => {
                    let byte = ConnectionExt::read(conn).map_err(WaitForStopReasonError::Connection)?;
                    return Ok(Event::IncomingData(byte));
                }
                None => continue,
            }
        }
    }

    /// Ctrl-C in gdb: the guest is already stopped between two slices, at
    /// an instruction boundary, so the stop is reported at once.
    fn on_interrupt(_target: &mut Self::Target) -> Result<Option<Self::StopReason>, NativeError> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// Splits `len` bytes from `start` into pieces that each stay within one
/// 4 KiB page, so that an unmapped page ends a read exactly where it
/// begins. Addresses wrap at 4 GiB, as linear addresses do.
fn page_chunks(start: u32, len: usize) -> impl Iterator<Item = (u32, usize)> {
    let mut addr = start;
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let room = 0x1000 - (addr & 0xFFF) as usize;
        let chunk = room.min(left);
        let piece = (addr, chunk);
        addr = addr.wrapping_add(chunk as u32);
        left -= chunk;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_split_at_page_boundaries() {
        // (start, length, the pieces as (address, length))
        type Case = (u32, usize, &'static [(u32, usize)]);
        let cases: &[Case] = &[
            (0x1000, 0, &[]),
            (0x1000, 16, &[(0x1000, 16)]),
            (0x1FF8, 16, &[(0x1FF8, 8), (0x2000, 8)]),
            (0x0FFF, 0x1002, &[(0x0FFF, 1), (0x1000, 0x1000), (0x2000, 1)]),
            (0xFFFF_FFFE, 4, &[(0xFFFF_FFFE, 2), (0, 2)]),
        ];
        for &(start, len, expected) in cases {
            let got: Vec<_> = page_chunks(start, len).collect();
            assert_eq!(got, expected, "{len} bytes at {start:#x}");
        }
    }

    #[test]
    fn watch_kinds_round_trip() {
        for kind in [GdbWatchKind::Write, GdbWatchKind::Read, GdbWatchKind::ReadWrite] {
            assert_eq!(gdb_watch_kind(watch_kind(kind)), kind);
        }
        assert_eq!(watch_kind(GdbWatchKind::ReadWrite), WatchKind::Access);
    }
}
