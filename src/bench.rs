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
//!
//! `bt86 bench` runs all three with [`run_all`] and prints [`format_table`];
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
        let mut bench = BenchVm { vm, kernels, stub, callout_loop, stack_top };
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
    /// The largest acceptable `bt86 / reference`.
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
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { compute_guest: None, repeats: 5, scale: 1.0 }
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
}

/// Times `f` `repeats` times and returns the fastest run.
fn best_of<T>(repeats: u32, mut f: impl FnMut() -> Result<T, BenchError>) -> Result<(Duration, T), BenchError> {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let value = f()?;
        let elapsed = t0.elapsed();
        if best.as_ref().map_or(true, |(b, _)| elapsed < *b) {
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
        if best.map_or(true, |(b, _, _)| elapsed < b) {
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
                format!("{} {}", format_duration(m.reference), m.reference_name),
                format!("{:.2}x", m.ratio()),
                format!("{} (ratio <= {:.2})", m.target, m.limit),
                if m.met() { "met" } else { "not met" }.to_string(),
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
                assert!(tc.lookup(start, Mode::default()).is_some(), "{}: no unit at {start:#x}", guest.name);
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

    /// One test for everything that needs the VM, because a process can
    /// hold only one VM at a time and tests run in parallel threads.
    #[test]
    fn translated_and_native_calls_agree_with_an_independent_answer() {
        let mut bench = match BenchVm::new() {
            Ok(b) => b,
            Err(BenchError::Build(e)) if e.status() == crate::status::HOST_UNSUPPORTED => {
                eprintln!("skipped: this host cannot run bt86: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
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
}
