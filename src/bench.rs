//! Benchmarks: what binary translation costs, measured against what it
//! replaces.
//!
//! Three questions decide whether the design of brief §1 pays off, and this
//! module measures each one against a reference taken in the same run, on
//! the same machine, so that the answer is a ratio rather than a number
//! that depends on the host:
//!
//! 1. **Compute kernels, translated against native.** The kernels of
//!    `guests/kernels.c` are called by symbol in the compute guest, once
//!    through the translator (`Vm::run`) and once directly in
//!    compatibility mode (`Vm::call_direct`). IDENT code should run at
//!    native speed; calls and returns pay for their rewrites.
//! 2. **Translation throughput.** Every function of every built-in guest is
//!    translated into a plain buffer, never run, against a budget of five
//!    million guest instructions per second.
//! 3. **A callout against a bare world switch.** A guest loop of
//!    `out 0x80, al` exits to the monitor once per iteration; the reference
//!    is a round trip through the world switch that does nothing at all
//!    (`Vm::time_world_switches`).
//! 4. **Rings and interrupts (issue 3).** A ring-3 loop of `int 0x80` or
//!    `sysenter` whose ring-0 handler returns at once, timed per round trip
//!    against the issue's 1.5 us budget, the host's own system call and
//!    QEMU running the same machine code; the delay from a PIT deadline to
//!    the guest's timer handler, under bt86 and QEMU; and the multitask
//!    guest run end to end by `bt86 run` and by QEMU. The guest of the
//!    first two is built by [`ring_guest`], and QEMU and `bt86 run` are
//!    timed as processes by [`external`].
//! 5. **Shadow page tables (issue 4).** A guest #PF round trip, `invlpg`
//!    and a CR3 switch against QEMU; one hidden fault against a bare host
//!    SIGSEGV round trip; a thousand address spaces against QEMU. The
//!    pagebench guest runs them; see [`paging`].
//! 6. **The debugger at rest (issue 5).** The compute guest resumed by the
//!    debugger with no breakpoint, against a plain run; see [`debugger`].
//!
//! `bt86 bench` runs them all with [`run_all`] and prints [`format_table`];
//! the criterion benches in `benches/` call the same pieces. This module
//! only drives the public APIs of bt86-native and bt86-translate: it holds
//! no VMM logic and never asserts a timing, because timings belong to the
//! machine, not to the code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bt86_cpu::state::gpr;
use bt86_cpu::Exception;
use bt86_machine::{Bus, GuestPhysAddr};
use bt86_native::direct::DirectOutcome;
use bt86_translate::{BufferMemory, CodeSource, Mode, TranslationCache};

use crate::{Exit, RunConfig, Vm};

pub mod debugger;
pub mod external;
pub mod paging;
pub mod ring_guest;

use ring_guest::{Entry, Finish, RingGuest};

/// The compute guest, as the build script built it.
pub const COMPUTE_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guests/compute.elf"));

/// Every guest built by `guests/Makefile`: the body of real guest code that
/// the translation benchmark translates.
pub const GUEST_IMAGES: &[(&str, &[u8])] = &[
    ("demo", crate::DEMO_GUEST),
    ("probe", include_bytes!(concat!(env!("OUT_DIR"), "/guests/probe.elf"))),
    ("exceptions", include_bytes!(concat!(env!("OUT_DIR"), "/guests/exceptions.elf"))),
    ("triple", include_bytes!(concat!(env!("OUT_DIR"), "/guests/triple.elf"))),
    ("halt", include_bytes!(concat!(env!("OUT_DIR"), "/guests/halt.elf"))),
    ("compute", COMPUTE_GUEST),
    ("hostile", include_bytes!(concat!(env!("OUT_DIR"), "/guests/hostile.elf"))),
];

/// The multitask guest of issue 3, as the build script built it.
pub const MULTITASK_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guests/multitask.elf"));

/// The translation benchmark's budget: five million guest instructions
/// translated per second, i.e. 200 ns per instruction.
pub const TRANSLATION_BUDGET_PER_SECOND: f64 = 5.0e6;

/// A failure while setting up or running a benchmark. A benchmark that
/// computes a wrong result fails rather than report a time for it.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} is not an ELF file the benchmarks can read ({source}); rebuild the guests with `make -C guests`")]
    Elf { what: String, source: goblin::error::Error },
    #[error("the compute guest has no function symbol `{0}`; it must be built from guests/kernels.c (`make -C guests`)")]
    MissingKernel(&'static str),
    #[error("cannot read the compute guest {path}: {source}")]
    ReadGuest { path: String, source: std::io::Error },
    #[error("cannot write the built-in compute guest to {path}: {source}; set TMPDIR to a writable directory")]
    TempFile { path: String, source: std::io::Error },
    #[error("cannot build the benchmark VM: {0}")]
    Build(#[from] crate::Error),
    #[error("the monitor failed during a benchmark: {0}")]
    Native(#[from] bt86_native::NativeError),
    #[error("cannot push {what} on the guest stack at ESP {esp:#010x}: {exception}; the compute guest's memory layout changed")]
    Stack { what: &'static str, esp: u32, exception: Exception },
    #[error("{what} under translation ended with {exit:?} instead of halting at the return stub at {stub:#010x}")]
    TranslatedRun { what: String, exit: Exit, stub: u32 },
    #[error("{what} run natively faulted (host trap {trapno} at {eip:#x}); only unprivileged code can be called directly")]
    NativeFault { what: String, trapno: u32, eip: u32 },
    #[error("{what} returned {translated:#010x} translated but {native:#010x} natively: the translation is wrong; run `cargo test -p bt86-native` to narrow it down")]
    Mismatch { what: String, translated: u32, native: u32 },
    #[error("the ring benchmark guest ({what}) ended with {exit:?} instead of halting at {finished:#010x}{hint}; rerun with `Vm::set_log` and `-d int` flags to see the exceptions")]
    RingGuest { what: String, exit: Exit, finished: u32, hint: &'static str },
    #[error("cannot start `{what}`: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("`{what}` {problem}")]
    External { what: String, problem: String },
    #[error("the timer samples cannot be analysed: {0}")]
    Timer(String),
}

/// The compute kernels of `guests/kernels.c`, each `uint32_t f(uint32_t n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Sieve,
    Crc32,
    Matmul,
    Loop,
    Fib,
}

impl Kernel {
    pub const ALL: [Kernel; 5] = [Kernel::Sieve, Kernel::Crc32, Kernel::Matmul, Kernel::Loop, Kernel::Fib];

    /// The short name used in tables and bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Sieve => "sieve",
            Kernel::Crc32 => "crc32",
            Kernel::Matmul => "matmul",
            Kernel::Loop => "loop",
            Kernel::Fib => "fib",
        }
    }

    /// The symbol of the kernel in compute.elf.
    pub fn symbol(self) -> &'static str {
        match self {
            Kernel::Sieve => "kernel_sieve",
            Kernel::Crc32 => "kernel_crc32",
            Kernel::Matmul => "kernel_matmul",
            Kernel::Loop => "kernel_loop",
            Kernel::Fib => "kernel_fib",
        }
    }

    /// The argument used by `bt86 bench`: big enough that one call takes
    /// milliseconds, so the fixed cost of entering and leaving the guest
    /// (well under 0.1 ms) does not blur the ratio.
    pub fn bench_n(self) -> u32 {
        match self {
            Kernel::Sieve => 2_000_000,
            Kernel::Crc32 => 4_000_000,
            Kernel::Matmul => 96,
            Kernel::Loop => 20_000_000,
            Kernel::Fib => 30,
        }
    }

    /// Whether the kernel is call-heavy: fib makes a call and a return for
    /// every few arithmetic instructions, so it measures the rewritten
    /// `call` and the inline indirect-branch lookup of `ret`, not IDENT code.
    pub fn call_heavy(self) -> bool {
        self == Kernel::Fib
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Finds the address of every kernel in the compute guest's symbol table.
pub fn kernel_addresses(image: &[u8]) -> Result<[u32; 5], BenchError> {
    let elf = parse_elf("the compute guest", image)?;
    let mut found = [None; 5];
    for sym in elf.syms.iter() {
        let Some(name) = elf.strtab.get_at(sym.st_name) else { continue };
        for k in Kernel::ALL {
            if name == k.symbol() && sym.is_function() {
                found[k.index()] = Some(sym.st_value as u32);
            }
        }
    }
    let mut out = [0; 5];
    for k in Kernel::ALL {
        out[k.index()] = found[k.index()].ok_or(BenchError::MissingKernel(k.symbol()))?;
    }
    Ok(out)
}

fn parse_elf<'a>(what: &str, image: &'a [u8]) -> Result<goblin::elf::Elf<'a>, BenchError> {
    goblin::elf::Elf::parse(image).map_err(|source| BenchError::Elf { what: what.to_string(), source })
}

/// The end of the highest loadable segment (bss included), in guest
/// memory: everything above it is free for the benchmark's stack and stubs.
fn image_end(image: &[u8]) -> Result<u32, BenchError> {
    let elf = parse_elf("the compute guest", image)?;
    let end = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == goblin::elf::program_header::PT_LOAD)
        .map(|ph| ph.p_paddr.saturating_add(ph.p_memsz))
        .max()
        .unwrap_or(0);
    Ok(u32::try_from(end).unwrap_or(u32::MAX))
}

/// The compute guest loaded in a VM, with a stack and two stubs of guest
/// code of the benchmark's own placed above the guest's image:
///
/// ```text
/// stub:         hlt                     ; where every translated call returns
/// callout_loop: out 0x80, al            ; one callout per iteration
///               dec ecx
///               jnz callout_loop
///               hlt
/// ```
///
/// The guest's own `kmain` never runs: each benchmark sets EIP and ESP and
/// calls one function. Only one VM can exist per process, so only one
/// `BenchVm` can exist at a time.
pub struct BenchVm {
    vm: Vm,
    kernels: [u32; 5],
    stub: u32,
    callout_loop: u32,
    stack_top: u32,
    /// The ring benchmark guest, 128 KiB above the stubs.
    ring: RingGuest,
}

/// The value the callout loop writes to port 0x80 (its AL).
pub const CALLOUT_POST_CODE: u8 = 0xB8;

/// Bytes of the callout loop, at its own address (see [`BenchVm`]).
const CALLOUT_LOOP: [u8; 6] = [
    0xE6, 0x80, // out 0x80, al
    0x49, // dec ecx
    0x75, 0xFB, // jnz -5 (back to the out)
    0xF4, // hlt
];

impl BenchVm {
    /// Builds the VM from the built-in compute guest.
    pub fn new() -> Result<BenchVm, BenchError> {
        Self::with_guest(None)
    }

    /// Builds the VM from the compute guest at `path`, or from the built-in
    /// one when `path` is `None`. The facade loads kernels from files, so
    /// the built-in image goes through a temporary file that is removed as
    /// soon as it has been read.
    pub fn with_guest(path: Option<PathBuf>) -> Result<BenchVm, BenchError> {
        let (image, vm) = match path {
            Some(path) => {
                let image = std::fs::read(&path)
                    .map_err(|source| BenchError::ReadGuest { path: path.display().to_string(), source })?;
                let vm = crate::build_vm(&RunConfig { kernel: Some(path), ..RunConfig::default() }, Box::new(std::io::sink()))?;
                (image, vm)
            }
            None => {
                let path = std::env::temp_dir().join(format!("bt86-bench-compute-{}.elf", std::process::id()));
                std::fs::write(&path, COMPUTE_GUEST)
                    .map_err(|source| BenchError::TempFile { path: path.display().to_string(), source })?;
                let built =
                    crate::build_vm(&RunConfig { kernel: Some(path.clone()), ..RunConfig::default() }, Box::new(std::io::sink()));
                let _ = std::fs::remove_file(&path);
                (COMPUTE_GUEST.to_vec(), built?)
            }
        };
        let kernels = kernel_addresses(&image)?;
        // A page of our own code, then 60 KiB of stack, on 64 KiB
        // boundaries above the image: far from the guest's code pages, so
        // that the stack never shares a page with translated code (a write
        // there would be taken for self-modifying code).
        let base = (image_end(&image)? | 0xFFFF).wrapping_add(1);
        let stub = base;
        let callout_loop = base + 0x10;
        let stack_top = base + 0x10000;
        let ring = RingGuest::build(base + 0x20000, Finish::Halt);
        let mut bench = BenchVm { vm, kernels, stub, callout_loop, stack_top, ring };
        bench.vm.machine.write_phys(GuestPhysAddr(stub), &[0xF4]);
        bench.vm.machine.write_phys(GuestPhysAddr(callout_loop), &CALLOUT_LOOP);
        Ok(bench)
    }

    /// The VM, for its counters.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The VM, mutably: for a debug log (`Vm::set_log`) or experiments of
    /// one's own. Overwriting the benchmark's stubs or stack above the
    /// guest image makes the next call fail with an error.
    pub fn vm_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }

    /// The guest address of `kernel`.
    pub fn kernel_address(&self, kernel: Kernel) -> u32 {
        self.kernels[kernel.index()]
    }

    /// A fresh stack with `n` pushed as the cdecl argument.
    fn push_argument(&mut self, n: u32) -> Result<(), BenchError> {
        self.vm.cpu.gpr[gpr::ESP] = self.stack_top;
        self.vm.cpu.halted = false;
        self.vm
            .cpu
            .push(&mut self.vm.machine, n, 4)
            .map_err(|exception| BenchError::Stack { what: "the argument", esp: self.stack_top, exception })
    }

    /// Calls `kernel(n)` through the translator and returns its result.
    /// The return address is the `hlt` stub, so the run ends when the
    /// kernel returns. Translations stay in the cache from one call to
    /// the next, so only the first call of a kernel pays for translating it.
    pub fn call_translated(&mut self, kernel: Kernel, n: u32) -> Result<u32, BenchError> {
        self.push_argument(n)?;
        let esp = self.vm.cpu.gpr[gpr::ESP];
        self.vm
            .cpu
            .push(&mut self.vm.machine, self.stub, 4)
            .map_err(|exception| BenchError::Stack { what: "the return address", esp, exception })?;
        self.vm.cpu.eip = self.kernel_address(kernel);
        let exit = self.vm.run()?;
        match exit {
            // `hlt` is a callout; the virtual CPU halts with EIP after it.
            Exit::Halted { eip, .. } if eip == self.stub.wrapping_add(1) => Ok(self.vm.cpu.gpr[gpr::EAX]),
            exit => Err(BenchError::TranslatedRun { what: format!("{}({n})", kernel.name()), exit, stub: self.stub }),
        }
    }

    /// Calls `kernel(n)` natively in compatibility mode, untranslated, and
    /// returns its result. This discards every translation (see
    /// `Vm::call_direct`).
    pub fn call_native(&mut self, kernel: Kernel, n: u32) -> Result<u32, BenchError> {
        self.push_argument(n)?;
        match self.vm.call_direct(self.kernel_address(kernel))? {
            DirectOutcome::Returned => Ok(self.vm.cpu.gpr[gpr::EAX]),
            DirectOutcome::Faulted { trapno, eip } => {
                Err(BenchError::NativeFault { what: format!("{}({n})", kernel.name()), trapno, eip })
            }
        }
    }

    /// Runs the callout loop for `count` iterations (`count` ≥ 1): `count`
    /// callouts for `out 0x80, al`, each an exit to the monitor, an `out`
    /// executed by bt86-cpu, and a re-entry.
    pub fn run_callouts(&mut self, count: u32) -> Result<(), BenchError> {
        let count = count.max(1);
        self.vm.cpu.gpr[gpr::ESP] = self.stack_top;
        self.vm.cpu.gpr[gpr::ECX] = count;
        self.vm.cpu.gpr[gpr::EAX] = u32::from(CALLOUT_POST_CODE);
        self.vm.cpu.halted = false;
        self.vm.cpu.eip = self.callout_loop;
        let exit = self.vm.run()?;
        let end = self.callout_loop + CALLOUT_LOOP.len() as u32;
        match exit {
            Exit::Halted { eip, .. } if eip == end && self.vm.cpu.gpr[gpr::ECX] == 0 => Ok(()),
            exit => Err(BenchError::TranslatedRun { what: format!("the callout loop ({count} iterations)"), exit, stub: end - 1 }),
        }
    }

    /// `count` bare round trips through the world switch; the total time.
    pub fn world_switches(&mut self, count: u32) -> Result<Duration, BenchError> {
        Ok(self.vm.time_world_switches(count)?)
    }

    /// Runs the ring guest from `entry`: its stub loads the GDT, IDT and
    /// TSS, sets the SYSENTER MSRs and irets to ring 3, which runs
    /// `iterations` system calls or takes one timer interrupt per entry of
    /// `schedule`, then ends with `int 0x81`. The tables and data are
    /// written afresh each time (a loaded TSS is marked busy, and `ltr`
    /// of a busy TSS faults); the code bytes never change, so their
    /// translations stay in the cache from one run to the next.
    fn run_ring_guest(&mut self, entry: Entry, iterations: u32, schedule: &[u16]) -> Result<(), BenchError> {
        let image = self.ring.image(iterations, schedule);
        self.vm.machine.write_phys(GuestPhysAddr(self.ring.base), &image);
        // The stub expects what a Multiboot loader leaves: CPL 0 with
        // interrupts off. Every run ends that way, in the finish handler.
        self.vm.cpu.eflags &= !bt86_cpu::state::flags::IF;
        self.vm.cpu.halted = false;
        self.vm.cpu.eip = self.ring.entry(entry);
        let exit = self.vm.run()?;
        match exit {
            Exit::Halted { eip, .. } if eip == self.ring.finished_eip => Ok(()),
            exit => Err(BenchError::RingGuest {
                what: format!("{entry:?}"),
                hint: if exit == (Exit::Halted { eip: self.ring.faulted_eip, interrupts_enabled: false }) {
                    " (an exception reached its kernel)"
                } else {
                    ""
                },
                exit,
                finished: self.ring.finished_eip,
            }),
        }
    }

    /// Runs `count` system call round trips (`count` >= 1) from ring 3:
    /// `int 0x80` to a DPL-3 trap gate whose handler is `iret`, or
    /// `sysenter` to a handler that is `sysexit`. Each round trip is two
    /// privilege changes in `vm.cpu.stats`; the run adds two more (the
    /// stub's iret to ring 3 and the final `int 0x81`).
    pub fn run_system_calls(&mut self, call: SystemCall, count: u32) -> Result<(), BenchError> {
        self.run_ring_guest(call.entry(), count.max(1), &[])
    }

    /// Takes one timer interrupt per entry of `schedule` (a PIT count, at
    /// most [`ring_guest::MAX_SAMPLES`] entries) while ring 3 spins in
    /// `jmp $`, and returns the samples: the guest TSC ticks from arming
    /// the PIT in mode 0 to the first instruction of the IRQ 0 handler.
    pub fn run_timer(&mut self, schedule: &[u16]) -> Result<Vec<u32>, BenchError> {
        let schedule = &schedule[..schedule.len().min(ring_guest::MAX_SAMPLES)];
        self.run_ring_guest(Entry::Timer, 1, schedule)?;
        let mut raw = vec![0u8; 4 * schedule.len()];
        self.vm.machine.read_phys(GuestPhysAddr(self.ring.samples_address()), &mut raw);
        Ok(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// The two ways the ring guest makes a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemCall {
    /// `int 0x80` through a DPL-3 trap gate, back with `iret`.
    Int80,
    /// `sysenter` to IA32_SYSENTER_EIP, back with `sysexit`.
    Sysenter,
}

impl SystemCall {
    pub fn name(self) -> &'static str {
        match self {
            SystemCall::Int80 => "int 0x80 + iret",
            SystemCall::Sysenter => "sysenter + sysexit",
        }
    }

    fn entry(self) -> Entry {
        match self {
            SystemCall::Int80 => Entry::Int80,
            SystemCall::Sysenter => Entry::Sysenter,
        }
    }
}

/// The code of one guest ELF image: its loadable segments and the extent
/// of every function symbol, for translating without running.
pub struct GuestCode {
    pub name: String,
    segments: Vec<(u32, Vec<u8>)>,
    /// `[start, end)` of every function with a size, in address order.
    pub functions: Vec<(u32, u32)>,
}

impl GuestCode {
    /// Reads the loadable segments and function symbols of `image`.
    pub fn from_elf(name: &str, image: &[u8]) -> Result<GuestCode, BenchError> {
        let elf = parse_elf(name, image)?;
        let mut segments = Vec::new();
        for ph in elf.program_headers.iter().filter(|ph| ph.p_type == goblin::elf::program_header::PT_LOAD) {
            let start = ph.p_offset as usize;
            let bytes = image.get(start..start.saturating_add(ph.p_filesz as usize)).unwrap_or(&[]);
            segments.push((ph.p_vaddr as u32, bytes.to_vec()));
        }
        let mut functions: Vec<(u32, u32)> = elf
            .syms
            .iter()
            .filter(|s| s.is_function() && s.st_size > 0)
            .map(|s| (s.st_value as u32, (s.st_value + s.st_size) as u32))
            .collect();
        functions.sort_unstable();
        functions.dedup();
        Ok(GuestCode { name: name.to_string(), segments, functions })
    }

    /// Every built-in guest.
    pub fn builtin() -> Result<Vec<GuestCode>, BenchError> {
        GUEST_IMAGES.iter().map(|(name, image)| GuestCode::from_elf(name, image)).collect()
    }

    /// Fills `buf` with the bytes at guest address `addr`; zero outside
    /// the file's contents, as bss is. The translator reads 16 bytes per
    /// instruction, so this copies slices rather than single bytes, to keep
    /// the benchmark's own cost out of the translator's figure.
    fn read(&self, addr: u32, buf: &mut [u8]) {
        buf.fill(0);
        let want = (u64::from(addr), u64::from(addr) + buf.len() as u64);
        for (start, bytes) in &self.segments {
            // Copy the overlap of [addr, addr + len) with the segment.
            let have = (u64::from(*start), u64::from(*start) + bytes.len() as u64);
            let (from, to) = (want.0.max(have.0), want.1.min(have.1));
            if from < to {
                let dst = (from - want.0) as usize..(to - want.0) as usize;
                let src = (from - have.0) as usize..(to - have.0) as usize;
                buf[dst].copy_from_slice(&bytes[src]);
            }
        }
    }

    /// The bytes of the function `[start, end)`.
    fn function_bytes(&self, (start, end): (u32, u32)) -> Vec<u8> {
        let mut bytes = vec![0; end.saturating_sub(start) as usize];
        self.read(start, &mut bytes);
        bytes
    }
}

impl CodeSource for &GuestCode {
    fn read_code(&mut self, eip: u32, buf: &mut [u8]) {
        self.read(eip, buf);
    }
}

/// Translates every function of `guests`, unit after unit from its first
/// byte to its last, into `tc` (whose code goes to `mem`); returns the
/// number of guest instructions translated. Nothing runs.
pub fn translate_all(guests: &[GuestCode], tc: &mut TranslationCache, mem: &mut BufferMemory) -> u64 {
    let before = tc.stats.guest_instructions;
    for guest in guests {
        let mut src = guest;
        for &(start, end) in &guest.functions {
            let mut eip = start;
            while eip < end {
                let (id, _flushed) = tc.translate(mem, &mut src, eip, Mode::default());
                let next = tc.unit(id).guest_end;
                if next <= eip {
                    break;
                }
                eip = next;
            }
        }
    }
    tc.stats.guest_instructions - before
}

/// Decodes every function of `guests` with iced-x86 and nothing else: the
/// floor under any translator's cost. Returns the instruction count.
pub fn decode_all(guests: &[GuestCode]) -> u64 {
    let mut count = 0;
    for guest in guests {
        for &range in &guest.functions {
            let bytes = guest.function_bytes(range);
            let mut decoder = iced_x86::Decoder::with_ip(32, &bytes, u64::from(range.0), iced_x86::DecoderOptions::NONE);
            let mut insn = iced_x86::Instruction::default();
            while decoder.can_decode() {
                decoder.decode_out(&mut insn);
                count += 1;
            }
        }
    }
    count
}

/// One row of the benchmark table: the time of one operation under bt86
/// and under its reference, and the limit their ratio must stay under.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub name: String,
    /// One operation under bt86.
    pub bt86: Duration,
    /// The same operation (or the budget for it) under the reference.
    pub reference: Duration,
    /// What the reference is: "native", "world switch", "budget".
    pub reference_name: &'static str,
    /// The largest acceptable `bt86 / reference`; infinite for a row that
    /// is reported without a target.
    pub limit: f64,
    /// The target as the issue states it.
    pub target: &'static str,
    /// Extra facts for the reader: sizes, rates, where the time goes.
    pub note: String,
}

impl Measurement {
    /// `bt86 / reference`: 1.0 is parity, 2.0 twice as slow.
    pub fn ratio(&self) -> f64 {
        let reference = self.reference.as_secs_f64();
        if reference > 0.0 {
            self.bt86.as_secs_f64() / reference
        } else {
            f64::INFINITY
        }
    }

    pub fn met(&self) -> bool {
        self.ratio() <= self.limit
    }

    /// A row whose reference could not be measured (QEMU is missing): it
    /// has no reference and no target, and its note says why.
    pub fn skipped(&self) -> bool {
        self.reference.is_zero() && !self.limit.is_finite()
    }

    /// The text of the result column.
    fn verdict(&self) -> &'static str {
        if self.skipped() {
            "skipped"
        } else if !self.limit.is_finite() {
            "reported"
        } else if self.met() {
            "met"
        } else {
            "not met"
        }
    }
}

/// How much work [`run_all`] does.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The compute guest; `None` uses the built-in one.
    pub compute_guest: Option<PathBuf>,
    /// Timed repetitions of each measurement; the fastest one counts,
    /// because noise on a shared machine only ever adds time.
    pub repeats: u32,
    /// Multiplies the kernels' sizes and the loop counts (1.0 by default).
    pub scale: f64,
    /// `qemu-system-i386`, for the rows that compare with QEMU; `None`
    /// skips those comparisons ([`external::find_qemu`] finds it).
    pub qemu: Option<PathBuf>,
    /// The `bt86` command whose `bt86 run` is timed on the multitask
    /// guest; `None` skips that row.
    pub bt86_command: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { compute_guest: None, repeats: 5, scale: 1.0, qemu: None, bt86_command: None }
    }
}

impl BenchOptions {
    fn scaled(&self, n: u32, min: u32) -> u32 {
        let scaled = (f64::from(n) * self.scale).round();
        if scaled.is_finite() && scaled >= f64::from(min) {
            scaled.min(f64::from(u32::MAX)) as u32
        } else {
            min
        }
    }

    /// The argument for `kernel`: matmul and fib grow steeply with n, so
    /// only the linear kernels are scaled.
    pub fn kernel_n(&self, kernel: Kernel) -> u32 {
        match kernel {
            Kernel::Matmul | Kernel::Fib => kernel.bench_n(),
            _ => self.scaled(kernel.bench_n(), 1000),
        }
    }

    /// Callouts (and world switches) per timed run.
    pub fn callouts(&self) -> u32 {
        self.scaled(200_000, 1000)
    }

    /// System call round trips per timed run under bt86.
    pub fn system_calls(&self) -> u32 {
        self.scaled(200_000, 1000)
    }

    /// System call round trips N of the smaller QEMU run (the larger one
    /// makes 10 N): enough that 9 N round trips take about a second under
    /// QEMU, well above the jitter of its boot.
    pub fn qemu_system_calls(&self) -> u32 {
        self.scaled(300_000, 1000)
    }

    /// Runs of each process-level measurement (QEMU, `bt86 run`): at most
    /// three, because each one boots a machine.
    fn process_repeats(&self) -> u32 {
        self.repeats.clamp(1, 3)
    }
}

/// The median of `values` (the lower middle one for an even count);
/// None when there are none.
fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// Times `f` `repeats` times and returns the median time with the value
/// of the last run. The issue-3 rows report medians: a system call or an
/// interrupt is short and frequent, and a typical run says more about it
/// than the luckiest one.
fn median_of<T>(repeats: u32, mut f: impl FnMut() -> Result<T, BenchError>) -> Result<(Duration, T), BenchError> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        last = Some(f()?);
        times.push(t0.elapsed());
    }
    Ok((median(&times).expect("at least one repetition ran"), last.expect("at least one repetition ran")))
}

/// Times `f` `repeats` times and returns the fastest run.
fn best_of<T>(repeats: u32, mut f: impl FnMut() -> Result<T, BenchError>) -> Result<(Duration, T), BenchError> {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let value = f()?;
        let elapsed = t0.elapsed();
        if best.as_ref().is_none_or(|(b, _)| elapsed < *b) {
            best = Some((elapsed, value));
        }
    }
    Ok(best.expect("at least one repetition ran"))
}

/// Runs `kernel(n)` natively and translated, checks that both give the
/// same result, and returns the row.
pub fn measure_kernel(bench: &mut BenchVm, kernel: Kernel, n: u32, repeats: u32) -> Result<Measurement, BenchError> {
    // Native first: a direct call discards the translations, so the
    // translated side warms up afterwards and keeps its cache while timed.
    let (native_time, native) = best_of(repeats, || bench.call_native(kernel, n))?;
    let translated = bench.call_translated(kernel, n)?;
    if translated != native {
        return Err(BenchError::Mismatch { what: format!("{}({n})", kernel.name()), translated, native });
    }
    let exits_before: u64 = bench.vm().stats.exits.values().sum();
    let (bt86_time, _) = best_of(repeats, || bench.call_translated(kernel, n))?;
    let exits = (bench.vm().stats.exits.values().sum::<u64>() - exits_before) / u64::from(repeats.max(1));
    let (limit, target) = if kernel.call_heavy() { (4.0, "< 4x native") } else { (1.0 / 0.9, ">= 0.9x native speed") };
    Ok(Measurement {
        name: format!("compute {}({n})", kernel.name()),
        bt86: bt86_time,
        reference: native_time,
        reference_name: "native",
        limit,
        target,
        note: format!("result {native:#010x}; {exits} exits per call"),
    })
}

/// Measures a callout (`out 0x80, al`) against a bare world switch.
pub fn measure_callout(bench: &mut BenchVm, count: u32, repeats: u32) -> Result<Measurement, BenchError> {
    let count = count.max(1);
    // Warm up: translate the loop and chain its units.
    bench.run_callouts(1000.min(count))?;
    let (raw_total, _) = best_of(repeats, || bench.world_switches(count))?;
    let exits_before: u64 = bench.vm().stats.exits.values().sum();
    let (callout_total, _) = best_of(repeats, || bench.run_callouts(count))?;
    let exits = bench.vm().stats.exits.values().sum::<u64>() - exits_before;
    let runs = u64::from(repeats.max(1)) * u64::from(count);
    let (callout, raw) = (callout_total / count, raw_total / count);
    Ok(Measurement {
        name: format!("callout out 0x80 (x{count})"),
        bt86: callout,
        reference: raw,
        reference_name: "world switch",
        limit: 2.0,
        target: "<= 2x raw round trip",
        note: format!(
            "{:.2} exits per iteration; beyond the bare switch, each callout spends {} in the monitor (decode the exit, execute the out, find the next unit)",
            exits as f64 / runs as f64,
            format_duration(callout.saturating_sub(raw))
        ),
    })
}

/// Measures translation throughput over every function of `guests`.
pub fn measure_translation(guests: &[GuestCode], repeats: u32) -> Result<Measurement, BenchError> {
    let mut mem = BufferMemory::new();
    let mut best: Option<(Duration, u64, u64)> = None;
    // A pass takes a few milliseconds; take the best of many, so the figure
    // is the translator's steady cost, not the allocator's first touches of
    // fresh memory.
    for _ in 0..repeats.max(1) * 10 {
        // A fresh cache each time, made before the clock starts, so every
        // pass translates into an empty TC as a booting guest does.
        let mut tc = TranslationCache::new(&mut mem);
        let t0 = Instant::now();
        let insns = translate_all(guests, &mut tc, &mut mem);
        let elapsed = t0.elapsed();
        if best.is_none_or(|(b, _, _)| elapsed < b) {
            best = Some((elapsed, insns, tc.stats.units));
        }
    }
    let (elapsed, insns, units) = best.expect("at least one pass ran");
    let (decode_time, decoded) = best_of(repeats, || Ok(decode_all(guests)))?;
    let insns_div = insns.max(1);
    let rate = insns as f64 / elapsed.as_secs_f64().max(1e-12);
    let decode_rate = decoded as f64 / decode_time.as_secs_f64().max(1e-12);
    Ok(Measurement {
        name: format!("translate {} guests", guests.len()),
        bt86: elapsed / u32::try_from(insns_div).unwrap_or(u32::MAX),
        reference: Duration::from_secs_f64(1.0 / TRANSLATION_BUDGET_PER_SECOND),
        reference_name: "budget",
        limit: 1.0,
        target: ">= 5 M insns/s",
        note: format!(
            "{insns} instructions in {units} units: {:.1} M insns/s; decoding alone {:.1} M insns/s",
            rate / 1e6,
            decode_rate / 1e6
        ),
    })
}

/// The issue-3 budget for one system call round trip under bt86.
pub const SYSCALL_BUDGET: Duration = Duration::from_nanos(1500);

/// The 8254's input clock in Hz, the same on every PC.
pub const PIT_HZ: f64 = 1_193_182.0;

/// The PIT counts of the timer benchmark: a short interval of 1 ms, whose
/// samples give the latency, and a long one of 25 ms, which calibrates the
/// guest's TSC against the PIT (see [`timer_latency`]).
pub const TIMER_SHORT: u16 = 1193;
pub const TIMER_LONG: u16 = 29830;
/// Samples at the start of a run that are not analysed: the first ones
/// pay for translating the handler, and the BIOS's periodic IRQ 0 may
/// still be pending when the guest unmasks it.
pub const TIMER_WARMUP: usize = 4;

/// The PIT count of each timer sample: the warm-up, then four rounds of
/// one long interval and twelve short ones, so that slow drifts of the
/// host touch both kinds alike.
pub fn timer_schedule() -> Vec<u16> {
    let mut s = vec![TIMER_SHORT; TIMER_WARMUP];
    for _ in 0..4 {
        s.push(TIMER_LONG);
        s.extend([TIMER_SHORT; 12]);
    }
    s
}

/// What the timer samples of one run say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimerLatency {
    /// The median delay from the PIT's terminal count to the handler's
    /// first instruction, over the short samples.
    pub median: Duration,
    /// The largest of those delays.
    pub max: Duration,
    /// The guest TSC's rate, as measured against the PIT.
    pub tsc_hz: f64,
}

/// Turns the samples of [`BenchVm::run_timer`] (or of the same guest under
/// QEMU) into latencies.
///
/// Each sample is `T = d + c * s`, in guest TSC ticks: `c` the PIT count,
/// `s` the TSC ticks per PIT tick, `d` the delay we want (plus the few
/// instructions between arming the PIT and reading the TSC, the same in
/// every sample). The guest does not know its TSC rate, so `s` comes from
/// the samples: `s = (median(T_long) - median(T_short)) / (long - short)`,
/// in which the delays cancel; then every short sample gives
/// `d = T - short * s`, and `s * PIT_HZ` converts ticks to seconds. The
/// method works the same under bt86 (host TSC plus an offset) and QEMU.
pub fn timer_latency(samples: &[u32], schedule: &[u16]) -> Result<TimerLatency, BenchError> {
    if samples.len() != schedule.len() || samples.len() <= TIMER_WARMUP {
        return Err(BenchError::Timer(format!("{} samples for a schedule of {}", samples.len(), schedule.len())));
    }
    let pick = |count: u16| -> Vec<f64> {
        samples.iter().zip(schedule).skip(TIMER_WARMUP).filter(|&(_, &c)| c == count).map(|(&t, _)| f64::from(t)).collect()
    };
    let (short, long) = (pick(TIMER_SHORT), pick(TIMER_LONG));
    let (Some(m_short), Some(m_long)) = (median(&short), median(&long)) else {
        return Err(BenchError::Timer("the schedule needs both short and long intervals after the warm-up".to_string()));
    };
    let per_pit_tick = (m_long - m_short) / f64::from(TIMER_LONG - TIMER_SHORT);
    if per_pit_tick.is_nan() || per_pit_tick <= 0.0 {
        return Err(BenchError::Timer(format!(
            "the long intervals ({m_long} TSC ticks) did not take longer than the short ones ({m_short}): the guest's TSC or PIT is not running"
        )));
    }
    let tsc_hz = per_pit_tick * PIT_HZ;
    let delays: Vec<f64> = short.iter().map(|t| (t - f64::from(TIMER_SHORT) * per_pit_tick) / tsc_hz).collect();
    // Noise in the calibration can make a delay come out a little below
    // zero; report those as zero rather than as a negative time.
    let secs = |d: f64| Duration::from_secs_f64(d.max(0.0));
    let median_delay = median(&delays).expect("short samples exist");
    let max_delay = delays.iter().copied().fold(f64::MIN, f64::max);
    Ok(TimerLatency { median: secs(median_delay), max: secs(max_delay), tsc_hz })
}

/// A row for a comparison with QEMU that could not be made.
fn skipped_row(name: String, bt86: Duration, reference_name: &'static str, why: &str) -> Measurement {
    Measurement {
        name,
        bt86,
        reference: Duration::ZERO,
        reference_name,
        limit: f64::INFINITY,
        target: "",
        note: format!("skipped: {why}"),
    }
}

const NO_QEMU: &str = "qemu-system-i386 was not found (install it, e.g. `apt-get install qemu-system-x86`, or name it with --qemu or BT86_QEMU)";

/// QEMU's time per system call round trip: the ring guest wrapped as a
/// Multiboot kernel, run end to end with N and with 10 N round trips, so
/// that boot and exit cancel out of `(T(10 N) - T(N)) / 9 N`.
fn qemu_system_call(qemu: &std::path::Path, call: SystemCall, n: u32, runs: u32) -> Result<Duration, BenchError> {
    let guest = RingGuest::build(ring_guest::ELF_AREA_BASE, Finish::DebugExit);
    let pass = (i32::from(ring_guest::PASS_CODE) << 1) | 1;
    let elf = |iterations: u32| ring_guest::multiboot_elf(&guest.image(iterations, &[]), guest.entry(call.entry()));
    let small = external::TempImage::new("syscall-n", &elf(n))?;
    let large = external::TempImage::new("syscall-10n", &elf(n.saturating_mul(10)))?;
    let (mut t_small, mut t_large) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        t_small.push(external::run_qemu(qemu, small.path(), &[], pass)?.wall);
        t_large.push(external::run_qemu(qemu, large.path(), &[], pass)?.wall);
    }
    let (small, large) = (median(&t_small).unwrap_or_default(), median(&t_large).unwrap_or_default());
    if large <= small {
        return Err(BenchError::External {
            what: format!("{} (the {} guest)", qemu.display(), call.name()),
            problem: format!("took {small:?} for {n} round trips and {large:?} for ten times as many; use a larger --scale"),
        });
    }
    Ok((large - small) / n.saturating_mul(9))
}

/// Measures a system call round trip from ring 3 under bt86 and returns
/// two rows: bt86 against the issue's budget (with the host's own system
/// call in the note), and bt86 against QEMU running the same code.
pub fn measure_system_call(bench: &mut BenchVm, call: SystemCall, options: &BenchOptions) -> Result<Vec<Measurement>, BenchError> {
    let count = options.system_calls();
    let repeats = options.repeats.max(1);
    // Warm up: translate the stub, the handlers and the loop.
    bench.run_system_calls(call, 1000.min(count))?;
    let changes_before = bench.vm().cpu.stats.privilege_changes;
    let (total, _) = median_of(repeats, || bench.run_system_calls(call, count))?;
    let changes = bench.vm().cpu.stats.privilege_changes - changes_before;
    // Each run also has the stub's iret to ring 3 and the final int 0x81.
    let per_iteration = changes.saturating_sub(2 * u64::from(repeats)) as f64 / (f64::from(repeats) * f64::from(count));
    let bt86 = total / count;
    let host_iters = 100_000;
    let host = median(&(0..repeats).map(|_| bt86_native::measure_host::host_syscall_round_trip(host_iters)).collect::<Vec<_>>())
        .unwrap_or_default()
        / host_iters;
    let qemu = match &options.qemu {
        Some(q) => Some(qemu_system_call(q, call, options.qemu_system_calls(), options.process_repeats())?),
        None => None,
    };
    let qemu_text = qemu.map_or("QEMU skipped".to_string(), |q| format!("QEMU {}", format_duration(q)));
    let budget = Measurement {
        name: format!("{} (x{count})", call.name()),
        bt86,
        reference: SYSCALL_BUDGET,
        reference_name: "budget",
        limit: 1.0,
        target: "<= 1.5 us per round trip",
        note: format!(
            "ring 3 -> 0 -> 3, median of {repeats} runs; {per_iteration:.2} privilege changes per round trip; host getppid() {} (bt86 {:.1}x the host); {qemu_text}",
            format_duration(host),
            bt86.as_secs_f64() / host.as_secs_f64().max(1e-12),
        ),
    };
    let name = format!("{} vs QEMU", call.name());
    let versus = match qemu {
        Some(q) => Measurement {
            name,
            bt86,
            reference: q,
            reference_name: "QEMU",
            limit: f64::INFINITY,
            target: "report",
            note: format!(
                "the same machine code as a Multiboot kernel under QEMU (TCG), timed end to end with N = {} and 10 N round trips: (T(10 N) - T(N)) / 9 N, medians of {} runs",
                options.qemu_system_calls(),
                options.process_repeats()
            ),
        },
        None => skipped_row(name, bt86, "QEMU", NO_QEMU),
    };
    Ok(vec![budget, versus])
}

/// QEMU's timer latency: the ring guest's timer entry as a Multiboot
/// kernel that writes its samples to COM1, run `runs` times.
fn qemu_timer(qemu: &std::path::Path, schedule: &[u16], runs: u32) -> Result<Vec<TimerLatency>, BenchError> {
    let guest = RingGuest::build(ring_guest::ELF_AREA_BASE, Finish::DebugExit);
    let image = external::TempImage::new("timer", &ring_guest::multiboot_elf(&guest.image(1, schedule), guest.entry(Entry::Timer)))?;
    let pass = (i32::from(ring_guest::PASS_CODE) << 1) | 1;
    let mut out = Vec::new();
    for _ in 0..runs.max(1) {
        let run = external::run_qemu(qemu, image.path(), &[], pass)?;
        // The samples are the last bytes the guest wrote, raw, in little
        // endian; anything before them is not ours.
        let want = 4 * schedule.len();
        let Some(raw) = run.stdout.get(run.stdout.len().saturating_sub(want)..).filter(|r| r.len() == want) else {
            return Err(BenchError::Timer(format!("QEMU's guest wrote {} bytes to COM1, fewer than the {want} of its samples", run.stdout.len())));
        };
        let samples: Vec<u32> = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.push(timer_latency(&samples, schedule)?);
    }
    Ok(out)
}

/// Measures timer interrupt delivery latency under bt86, and under QEMU
/// when it is there: ring 3 spins in `jmp $` and the PIT, armed in mode 0
/// by the previous interrupt's handler, interrupts it; the delay is from
/// the PIT's terminal count to the handler's first instruction.
pub fn measure_timer(bench: &mut BenchVm, options: &BenchOptions) -> Result<Measurement, BenchError> {
    let schedule = timer_schedule();
    let runs = options.process_repeats();
    // Warm up: translate the handler and the spin.
    bench.run_timer(&schedule[..TIMER_WARMUP])?;
    let interrupts_before = bench.vm().stats.interrupts;
    let mut bt86 = Vec::new();
    for _ in 0..runs {
        let samples = bench.run_timer(&schedule)?;
        bt86.push(timer_latency(&samples, &schedule)?);
    }
    let interrupts = bench.vm().stats.interrupts - interrupts_before;
    let summary = |l: &[TimerLatency]| {
        let med = median(&l.iter().map(|x| x.median).collect::<Vec<_>>()).unwrap_or_default();
        let max = l.iter().map(|x| x.max).max().unwrap_or_default();
        let hz = median(&l.iter().map(|x| x.tsc_hz).collect::<Vec<_>>()).unwrap_or_default();
        (med, max, hz)
    };
    let (b_med, b_max, b_hz) = summary(&bt86);
    let method = format!(
        "PIT mode 0 one-shots of {TIMER_SHORT} and {TIMER_LONG} counts while ring 3 spins; the guest's rdtsc at arming and at handler entry, the TSC calibrated against the long intervals; median of the short intervals' delays, median of {runs} runs"
    );
    let name = "timer IRQ 0 latency".to_string();
    let Some(qemu) = &options.qemu else {
        let mut row = skipped_row(name, b_med, "QEMU", NO_QEMU);
        row.note = format!("{}; bt86 worst {}; {method}", row.note, format_duration(b_max));
        return Ok(row);
    };
    let (q_med, q_max, q_hz) = summary(&qemu_timer(qemu, &schedule, runs)?);
    Ok(Measurement {
        name,
        bt86: b_med,
        reference: q_med,
        reference_name: "QEMU",
        limit: f64::INFINITY,
        target: "report",
        note: format!(
            "{method}; worst bt86 {}, QEMU {}; {interrupts} IRQ 0 delivered by bt86 for {} samples; TSC measured at {:.0} MHz (bt86) and {:.0} MHz (QEMU)",
            format_duration(b_max),
            format_duration(q_max),
            runs as usize * schedule.len(),
            b_hz / 1e6,
            q_hz / 1e6
        ),
    })
}

/// Wall time of the multitask guest, boot to exit, under `bt86 run` and
/// under QEMU, each run as a process the way a user runs it.
pub fn measure_multitask(options: &BenchOptions) -> Result<Measurement, BenchError> {
    let name = "multitask guest, wall time".to_string();
    let image = external::TempImage::new("multitask", MULTITASK_GUEST)?;
    let pass = 33;
    let Some(bt86_command) = &options.bt86_command else {
        return Ok(skipped_row(name, Duration::ZERO, "QEMU", "no bt86 command to run the guest with"));
    };
    let runs = options.repeats.max(1);
    let mut bt86_times = Vec::new();
    let mut bt86_out = Vec::new();
    for _ in 0..runs {
        let run = external::time_command(bt86_command, &["run".as_ref(), image.path().as_os_str()])?;
        if run.status != pass || !run.stdout.ends_with(b"multitask: done\n") {
            return Err(BenchError::External {
                what: format!("{} run {}", bt86_command.display(), image.path().display()),
                problem: format!("exited with status {} instead of {pass}, without finishing its tasks", run.status),
            });
        }
        bt86_times.push(run.wall);
        bt86_out = run.stdout;
    }
    let bt86 = median(&bt86_times).unwrap_or_default();
    let Some(qemu) = &options.qemu else {
        return Ok(skipped_row(name, bt86, "QEMU", NO_QEMU));
    };
    let mut qemu_times = Vec::new();
    let mut same_output = true;
    for _ in 0..runs {
        let run = external::run_qemu(qemu, image.path(), &[], pass)?;
        same_output &= run.stdout == bt86_out;
        qemu_times.push(run.wall);
    }
    Ok(Measurement {
        name,
        bt86,
        reference: median(&qemu_times).unwrap_or_default(),
        reference_name: "QEMU",
        limit: 1.0 / 3.0,
        target: ">= 3x faster than QEMU",
        note: format!(
            "`bt86 run multitask.elf` against `qemu-system-i386 -kernel multitask.elf ...`, boot to isa-debug-exit, medians of {runs} runs; serial output {}",
            if same_output { "identical" } else { "DIFFERS between the two (run tests/guests_qemu.rs)" }
        ),
    })
}

/// Runs every benchmark once, side by side, and returns the rows.
pub fn run_all(options: &BenchOptions) -> Result<Vec<Measurement>, BenchError> {
    let mut rows = Vec::new();
    let guests = GuestCode::builtin()?;
    rows.push(measure_translation(&guests, options.repeats)?);
    let mut bench = BenchVm::with_guest(options.compute_guest.clone())?;
    for kernel in Kernel::ALL {
        rows.push(measure_kernel(&mut bench, kernel, options.kernel_n(kernel), options.repeats)?);
    }
    rows.push(measure_callout(&mut bench, options.callouts(), options.repeats)?);
    // The ring guest's rows come last: they leave the virtual CPU in its
    // GDT at CPL 0, which the compute kernels above do not expect.
    for call in [SystemCall::Int80, SystemCall::Sysenter] {
        rows.extend(measure_system_call(&mut bench, call, options)?);
    }
    rows.push(measure_timer(&mut bench, options)?);
    drop(bench);
    rows.push(measure_multitask(options)?);
    // The paging rows build VMs of their own, one at a time.
    rows.extend(paging::measure_paging(options)?);
    rows.push(debugger::measure_debugger_overhead(options)?);
    Ok(rows)
}

/// A duration in the unit that keeps three significant digits readable.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// The table `bt86 bench` prints: one row per measurement, then the notes.
pub fn format_table(rows: &[Measurement]) -> String {
    use std::fmt::Write as _;
    let headers = ["benchmark", "bt86", "reference", "ratio", "target", "result"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                format_duration(m.bt86),
                if m.skipped() {
                    format!("- {}", m.reference_name)
                } else {
                    format!("{} {}", format_duration(m.reference), m.reference_name)
                },
                if m.skipped() { "-".to_string() } else { format!("{:.2}x", m.ratio()) },
                if m.limit.is_finite() { format!("{} (ratio <= {:.2})", m.target, m.limit) } else { m.target.to_string() },
                m.verdict().to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: [&str; 6]| {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Names and targets read left to right; numbers line up right.
            if matches!(i, 0 | 4 | 5) {
                let _ = write!(text, "{cell:<w$}  ");
            } else {
                let _ = write!(text, "{cell:>w$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, headers);
    for row in &cells {
        line(&mut out, [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    out.push('\n');
    for m in rows {
        let _ = writeln!(out, "{}: {}", m.name, m.note);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels of guests/kernels.c, written again in Rust, so that the
    /// benchmark's calls are checked against an independent answer.
    fn expected(kernel: Kernel, n: u32) -> u32 {
        match kernel {
            Kernel::Sieve => {
                let n = n as usize;
                let mut composite = vec![false; n + 1];
                let mut count = 0;
                for i in 2..=n {
                    if !composite[i] {
                        count += 1;
                        (2 * i..=n).step_by(i).for_each(|j| composite[j] = true);
                    }
                }
                count
            }
            Kernel::Crc32 => {
                let table: Vec<u32> = (0..256u32)
                    .map(|i| (0..8).fold(i, |c, _| if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 }))
                    .collect();
                let (mut crc, mut x) = (0xFFFF_FFFFu32, 12345u32);
                for _ in 0..n {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    crc = table[((crc ^ (x >> 24)) & 0xFF) as usize] ^ (crc >> 8);
                }
                !crc
            }
            Kernel::Matmul => {
                let n = n as usize;
                let a = |i: usize, j: usize| (i + j) as u32;
                let b = |i: usize, j: usize| (i * j + 1) as u32;
                let mut sum = 0u32;
                for i in 0..n {
                    for j in 0..n {
                        let c = (0..n).fold(0u32, |s, k| s.wrapping_add(a(i, k).wrapping_mul(b(k, j))));
                        sum = sum.wrapping_mul(31).wrapping_add(c);
                    }
                }
                sum
            }
            Kernel::Loop => (0..n).fold(1u32, |x, _| x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223)),
            Kernel::Fib => {
                let (mut a, mut b) = (0u32, 1u32);
                for _ in 0..n {
                    (a, b) = (b, a.wrapping_add(b));
                }
                a
            }
        }
    }

    #[test]
    fn every_kernel_is_found_once_in_the_compute_guest() {
        let addrs = kernel_addresses(COMPUTE_GUEST).unwrap();
        let code = GuestCode::from_elf("compute", COMPUTE_GUEST).unwrap();
        for k in Kernel::ALL {
            let a = addrs[k.index()];
            assert!(code.functions.iter().any(|&(s, _)| s == a), "{} at {a:#x} is not a function start", k.symbol());
        }
        let mut sorted = addrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5, "two kernels share an address: {addrs:x?}");
    }

    #[test]
    fn a_missing_kernel_is_named() {
        let err = kernel_addresses(crate::DEMO_GUEST).unwrap_err();
        assert!(matches!(err, BenchError::MissingKernel("kernel_sieve")), "{err}");
        assert!(matches!(kernel_addresses(b"not an elf"), Err(BenchError::Elf { .. })));
    }

    #[test]
    fn guest_code_reads_across_segments_and_zero_fills_the_rest() {
        let code = GuestCode {
            name: "synthetic".to_string(),
            segments: vec![(0x1000, vec![1, 2, 3, 4]), (0x1004, vec![5, 6]), (0x2000, vec![9])],
            functions: vec![],
        };
        let cases: [(u32, usize, &[u8]); 6] = [
            (0x1000, 4, &[1, 2, 3, 4]),
            (0x1002, 4, &[3, 4, 5, 6]),
            (0x1005, 3, &[6, 0, 0]),
            (0x0FFE, 3, &[0, 0, 1]),
            (0x1FFF, 3, &[0, 9, 0]),
            (0xFFFF_FFFE, 4, &[0, 0, 0, 0]),
        ];
        for (addr, len, want) in cases {
            let mut buf = vec![0xEE; len];
            (&code).read_code(addr, &mut buf);
            assert_eq!(buf, want, "{len} bytes at {addr:#x}");
        }
        assert_eq!(code.function_bytes((0x1003, 0x1006)), [4, 5, 6]);
    }

    #[test]
    fn translation_covers_every_function_and_counts_what_it_translated() {
        let guests = GuestCode::builtin().unwrap();
        assert_eq!(guests.len(), GUEST_IMAGES.len());
        let mut mem = BufferMemory::new();
        let mut tc = TranslationCache::new(&mut mem);
        let insns = translate_all(&guests, &mut tc, &mut mem);
        let decoded = decode_all(&guests);
        assert_eq!(insns, tc.stats.guest_instructions);
        // Units can run past a function's end (when it ends in a call that
        // never returns), but never translate less than a tenth of the
        // instructions the functions hold.
        assert!(insns >= decoded / 10 && decoded > 1000, "translated {insns}, decoded {decoded}");
        // Every function's first instruction starts a unit.
        for guest in &guests {
            for &(start, _) in &guest.functions {
                assert!(tc.lookup(start, Mode::default(), start >> 12).is_some(), "{}: no unit at {start:#x}", guest.name);
            }
        }
    }

    #[test]
    fn ratios_decide_the_result_and_the_table_shows_every_row() {
        let row = |name: &str, bt86: u64, reference: u64, limit: f64| Measurement {
            name: name.to_string(),
            bt86: Duration::from_nanos(bt86),
            reference: Duration::from_nanos(reference),
            reference_name: "native",
            limit,
            target: "t",
            note: format!("note of {name}"),
        };
        let cases = [
            (row("equal", 100, 100, 1.0), 1.0, true),
            (row("slower", 150, 100, 1.0 / 0.9), 1.5, false),
            (row("within", 390, 100, 4.0), 3.9, true),
            (row("zero reference", 1, 0, 2.0), f64::INFINITY, false),
        ];
        for (m, ratio, met) in &cases {
            assert!((m.ratio() - ratio).abs() < 1e-9 || m.ratio() == *ratio, "{}: ratio {}", m.name, m.ratio());
            assert_eq!(m.met(), *met, "{}", m.name);
        }
        let rows: Vec<Measurement> = cases.iter().map(|(m, _, _)| m.clone()).collect();
        let table = format_table(&rows);
        for m in &rows {
            let line = table.lines().find(|l| l.starts_with(&m.name)).unwrap_or_else(|| panic!("no row for {}", m.name));
            assert!(line.ends_with(if m.met() { "  met" } else { "not met" }), "{line}");
            assert!(table.contains(&m.note));
        }
        assert_eq!(format_duration(Duration::from_nanos(1500)), "1.50 us");
        assert_eq!(format_duration(Duration::from_millis(12)), "12.00 ms");
    }

    /// A process can hold only one VM at a time and tests run in parallel
    /// threads, so every test that needs the VM holds this lock.
    pub(super) static VM_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The benchmark VM with the lock held; None (after saying why) on a
    /// host that cannot run bt86.
    fn bench_vm() -> Option<(std::sync::MutexGuard<'static, ()>, BenchVm)> {
        let guard = VM_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match BenchVm::new() {
            Ok(b) => Some((guard, b)),
            Err(BenchError::Build(e)) if e.status() == crate::status::HOST_UNSUPPORTED => {
                eprintln!("skipped: this host cannot run bt86: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn translated_and_native_calls_agree_with_an_independent_answer() {
        let Some((_lock, mut bench)) = bench_vm() else { return };
        let cases = [
            (Kernel::Sieve, 1000),
            (Kernel::Crc32, 300),
            (Kernel::Matmul, 7),
            (Kernel::Loop, 1234),
            (Kernel::Fib, 15),
            (Kernel::Fib, 0),
        ];
        for (kernel, n) in cases {
            let want = expected(kernel, n);
            assert_eq!(bench.call_translated(kernel, n).unwrap(), want, "{}({n}) translated", kernel.name());
            assert_eq!(bench.call_native(kernel, n).unwrap(), want, "{}({n}) native", kernel.name());
        }
        let callouts_before = bench.vm().stats.callouts.values().sum::<u64>();
        bench.run_callouts(50).unwrap();
        let callouts = bench.vm().stats.callouts.values().sum::<u64>() - callouts_before;
        // 50 `out`s and the final `hlt`.
        assert_eq!(callouts, 51);
        assert_eq!(bench.vm().machine.post_code(), CALLOUT_POST_CODE, "the loop's out writes AL to port 0x80");
        let entries = bench.vm().stats.entries;
        assert!(bench.world_switches(10).unwrap() > Duration::ZERO);
        assert_eq!(bench.vm().stats.entries, entries + 1, "only the untimed first trip goes through enter_at");
        let row = measure_kernel(&mut bench, Kernel::Loop, 5000, 2).unwrap();
        assert!(row.note.contains(&format!("{:#010x}", expected(Kernel::Loop, 5000))), "{}", row.note);
    }

    #[test]
    fn each_ring_loop_makes_exactly_the_system_calls_it_counts() {
        let Some((_lock, mut bench)) = bench_vm() else { return };
        // (system call, round trips, software interrupts it must deliver)
        let cases = [
            (SystemCall::Int80, 1, 2),
            (SystemCall::Int80, 37, 38),
            (SystemCall::Sysenter, 1, 1),
            (SystemCall::Sysenter, 250, 1),
        ];
        for (call, n, ints) in cases {
            let changes = bench.vm().cpu.stats.privilege_changes;
            let soft = bench.vm().stats.software_interrupts;
            bench.run_system_calls(call, n).unwrap();
            // Two per round trip, one for the stub's iret to ring 3 and one
            // for the int 0x81 that ends the run.
            assert_eq!(bench.vm().cpu.stats.privilege_changes - changes, 2 * u64::from(n) + 2, "{call:?} x{n}");
            // Every int 0x80 plus the final int 0x81; sysenter is not an
            // interrupt.
            assert_eq!(bench.vm().stats.software_interrupts - soft, ints, "{call:?} x{n}");
            assert_eq!(bench.vm().cpu.cpl(), 0, "the run ends in the ring-0 finish handler");
        }

        // The timer: one IRQ 0 per scheduled interval, each a change to
        // ring 0 and, but for the last, an iret back to ring 3.
        let schedule = timer_schedule();
        let (irqs, changes) = (bench.vm().stats.interrupts, bench.vm().cpu.stats.privilege_changes);
        let samples = bench.run_timer(&schedule).unwrap();
        assert_eq!(samples.len(), schedule.len());
        assert_eq!(bench.vm().stats.interrupts - irqs, schedule.len() as u64);
        assert_eq!(bench.vm().cpu.stats.privilege_changes - changes, 2 * schedule.len() as u64);
        // A 25 ms interval takes longer than a 1 ms one, whatever the delay.
        for (i, (&t, &c)) in samples.iter().zip(&schedule).enumerate().skip(TIMER_WARMUP) {
            let shortest_long = samples.iter().zip(&schedule).filter(|&(_, &c)| c == TIMER_LONG).map(|(&t, _)| t).min().unwrap();
            if c == TIMER_SHORT {
                assert!(t < shortest_long, "sample {i}: {t} ticks for a short interval, {shortest_long} for a long one");
            }
        }
        let latency = timer_latency(&samples, &schedule).unwrap();
        assert!(latency.tsc_hz > 1e8 && latency.tsc_hz < 1e11, "{latency:?}");
        assert!(latency.median < Duration::from_millis(1), "{latency:?}");
    }

    #[test]
    fn timer_latency_recovers_a_known_delay_and_rejects_nonsense() {
        // A synthetic 2.5 GHz TSC and delays of 10 us (short) and 12 us
        // (long): the long delay must not leak into the short ones.
        let hz = 2.5e9;
        let schedule = timer_schedule();
        let samples: Vec<u32> = schedule
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let delay = if c == TIMER_LONG { 12e-6 } else { 10e-6 + (i % 3) as f64 * 1e-6 };
                ((f64::from(c) / PIT_HZ + delay) * hz) as u32
            })
            .collect();
        let got = timer_latency(&samples, &schedule).unwrap();
        assert!((got.median.as_secs_f64() - 11e-6).abs() < 0.3e-6, "{got:?}");
        assert!((got.tsc_hz - hz).abs() / hz < 1e-3, "{got:?}");
        assert!(got.max >= got.median);
        // (samples, schedule): wrong length, no long intervals, a TSC
        // that does not advance.
        let flat = vec![1000; schedule.len()];
        let shorts = vec![TIMER_SHORT; schedule.len()];
        let cases: [(&[u32], &[u16]); 3] =
            [(&samples[..10], &schedule), (&samples, &shorts), (&flat, &schedule)];
        for (samples, schedule) in cases {
            assert!(matches!(timer_latency(samples, schedule), Err(BenchError::Timer(_))));
        }
    }

    #[test]
    fn skipped_and_reported_rows_are_not_judged() {
        let skipped = skipped_row("no qemu".to_string(), Duration::from_micros(3), "QEMU", "not installed");
        let reported = Measurement { name: "vs qemu".to_string(), reference: Duration::from_micros(1), target: "report", ..skipped.clone() };
        let judged = Measurement { limit: 1.0 / 3.0, target: ">= 3x", name: "judged".to_string(), ..reported.clone() };
        // (row, skipped, verdict)
        for (m, is_skipped, verdict) in [(&skipped, true, "skipped"), (&reported, false, "reported"), (&judged, false, "not met")] {
            assert_eq!(m.skipped(), is_skipped, "{}", m.name);
            assert_eq!(m.verdict(), verdict, "{}", m.name);
        }
        let table = format_table(&[skipped, reported, judged]);
        let line = table.lines().find(|l| l.starts_with("no qemu")).unwrap();
        assert!(line.contains("- QEMU") && line.ends_with("skipped"), "{line}");
        assert!(table.contains("skipped: not installed"));
        assert!(table.lines().any(|l| l.starts_with("judged") && l.contains("(ratio <= 0.33)")), "{table}");
        assert_eq!(median(&[5, 1, 4, 2]), Some(2));
        assert_eq!(median::<u32>(&[]), None);
    }
}
