//! Paging benchmarks (issue 4): what shadow page tables cost.
//!
//! With CR0.PG set, bt86 keeps the host's mappings of the low 4 GiB in
//! step with the guest's page tables (bt86-native's `shadow` module). Its
//! costs show up in four places, each measured here with the `pagebench`
//! guest (`guests/pagebench.c`), which runs one micro-benchmark chosen on
//! its Multiboot command line, `mode=MODE n=N`:
//!
//! - **Guest-visible paging operations**: a guest #PF round trip (`pf`), a
//!   PTE write followed by `invlpg` (`invlpg`), and a CR3 switch (`cr3`),
//!   each per operation under bt86 and under QEMU, reported without a
//!   target.
//! - **A hidden fault** (`hidden`): a guest read of a page that the guest's
//!   tables map but the host does not yet, which the guest never sees,
//!   against one bare host SIGSEGV round trip
//!   ([`bt86_native::measure_host::host_fault_round_trip`]) measured in the
//!   same run.
//! - **Address spaces** (`fork`): a thousand created, run at CPL 3 and
//!   destroyed, under bt86 and under QEMU.
//!
//! Every figure is a difference of two runs of the same mode, `n = N` and
//! `n = 0`: the second does all the setup (boot, page tables, turning
//! paging on) and no iterations, so the difference is the iterations'
//! cost alone. bt86 runs the guest in this process and times `Vm::run`
//! only; QEMU is timed as a process, boot to exit, with N large enough
//! that the iterations dwarf the jitter of its start-up. The counters of
//! the in-process runs (`Vm::stats`) say what one iteration costs in exits.
//!
//! Like the rest of [`crate::bench`], this module drives public APIs only,
//! holds no VMM logic and asserts no timing.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::external::{self, TempImage};
use super::{median, skipped_row, BenchError, BenchOptions, Measurement, NO_QEMU};
use crate::{Exit, RunConfig, RunStats};

/// The pagebench guest, as the build script built it.
pub const PAGEBENCH_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guests/pagebench.elf"));

/// The exit status of a pagebench run that did its work: EXIT_PASS (0x10)
/// through isa-debug-exit, `(0x10 << 1) | 1`.
pub const PASS_STATUS: i32 = 33;

/// The longest an in-process run may take before it is stopped: far more
/// than any benchmark run needs, so only a hung guest reaches it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// One micro-benchmark of the pagebench guest (see `guests/pagebench.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A guest #PF round trip: read a not-present page, the handler sets P
    /// and returns, the read is retried; then P cleared and `invlpg`.
    PageFault,
    /// Re-point a PTE, `invlpg`, read through it.
    Invlpg,
    /// Write CR3 (alternately two page directories), read one page.
    Cr3,
    /// Read a page of a 64 MiB region whose tables never change: under
    /// bt86, a hidden fault whenever the page is not mapped yet.
    Hidden,
    /// Create an address space, run a tiny program in it at CPL 3,
    /// destroy it.
    Fork,
}

impl Mode {
    pub const ALL: [Mode; 5] = [Mode::PageFault, Mode::Invlpg, Mode::Cr3, Mode::Hidden, Mode::Fork];

    /// The name on the guest's command line (`mode=NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::PageFault => "pf",
            Mode::Invlpg => "invlpg",
            Mode::Cr3 => "cr3",
            Mode::Hidden => "hidden",
            Mode::Fork => "fork",
        }
    }

    /// The guest's command line for `n` iterations.
    pub fn append(self, n: u32) -> String {
        format!("mode={} n={n}", self.name())
    }

    /// What one iteration is, for the table.
    fn operation(self) -> &'static str {
        match self {
            Mode::PageFault => "guest #PF round trip",
            Mode::Invlpg => "PTE write + invlpg",
            Mode::Cr3 => "CR3 switch",
            Mode::Hidden => "hidden fault",
            Mode::Fork => "address space",
        }
    }
}

/// One in-process run of the pagebench guest.
#[derive(Clone, Debug)]
pub struct GuestRun {
    /// The time `Vm::run` took, boot to exit.
    pub time: Duration,
    /// The monitor's counters at the end of the run.
    pub stats: RunStats,
    /// The checksum the guest printed over what its iterations read.
    pub checksum: u32,
}

/// A serial sink that keeps what the guest writes, for the checksum line.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("the serial capture's lock is poisoned"))?.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Finds the line `pagebench: mode=MODE n=N checksum=0xHEX ...` in what the
/// guest printed and returns the checksum; None if the guest did not
/// report finishing exactly this run.
pub fn parse_checksum(output: &[u8], mode: Mode, n: u32) -> Option<u32> {
    let text = String::from_utf8_lossy(output);
    let prefix = format!("pagebench: mode={} n={n} checksum=0x", mode.name());
    let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?;
    let hex: String = line.chars().take_while(char::is_ascii_hexdigit).collect();
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(&hex, 16).ok()
}

/// The pagebench guest written to a temporary file (the facade loads
/// kernels from files), from which every run, in process or under QEMU,
/// is made.
pub struct PageBench {
    image: TempImage,
}

impl PageBench {
    /// Writes the built-in pagebench guest to a temporary file.
    pub fn new() -> Result<PageBench, BenchError> {
        Ok(PageBench { image: TempImage::new("pagebench", PAGEBENCH_GUEST)? })
    }

    /// The guest's file.
    pub fn path(&self) -> &Path {
        self.image.path()
    }

    /// Runs `mode` with `n` iterations in a fresh VM in this process and
    /// times `Vm::run` alone (building the VM is not timed). Only one VM
    /// exists per process, so no other may be alive during the call.
    pub fn run(&self, mode: Mode, n: u32) -> Result<GuestRun, BenchError> {
        let config = RunConfig { kernel: Some(self.path().to_path_buf()), append: mode.append(n), ..RunConfig::default() };
        let serial = Capture::default();
        let mut vm = crate::build_vm(&config, Box::new(serial.clone()))?;
        vm.set_deadline(Instant::now() + RUN_LIMIT);
        let t0 = Instant::now();
        let exit = vm.run()?;
        let time = t0.elapsed();
        let output = serial.0.lock().map(|o| o.clone()).unwrap_or_default();
        let what = || format!("pagebench `{}` under bt86 (in process)", mode.append(n));
        if exit != Exit::GuestExit(PASS_STATUS) {
            return Err(BenchError::External {
                what: what(),
                problem: format!(
                    "ended with {exit:?} instead of exit status {PASS_STATUS}; run `bt86 run --append \"{}\" guests/build/pagebench.elf` to see why",
                    mode.append(n)
                ),
            });
        }
        let checksum = parse_checksum(&output, mode, n).ok_or_else(|| BenchError::External {
            what: what(),
            problem: "did not print its checksum line; the guest and the benchmark disagree about its output".to_string(),
        })?;
        Ok(GuestRun { time, stats: vm.stats.clone(), checksum })
    }

    /// Runs `mode` with `n` iterations under QEMU and returns the wall
    /// time of the process, boot to exit, and the checksum it printed.
    pub fn run_qemu(&self, qemu: &Path, mode: Mode, n: u32) -> Result<(Duration, u32), BenchError> {
        let append = mode.append(n);
        let run = external::run_qemu(qemu, self.path(), &["-append", &append], PASS_STATUS)?;
        let checksum = parse_checksum(&run.stdout, mode, n).ok_or_else(|| BenchError::External {
            what: format!("{} -kernel {} -append \"{append}\"", qemu.display(), self.path().display()),
            problem: "did not print the guest's checksum line".to_string(),
        })?;
        Ok((run.wall, checksum))
    }

    /// The cost of one hidden fault, as the `hidden` row measures it:
    /// `(T(reads) - T(0)) / (hidden faults(reads) - hidden faults(0))`,
    /// from one run of each, in process. Returns the cost and the number
    /// of hidden faults the reads took.
    pub fn hidden_fault_cost(&self, reads: u32) -> Result<(Duration, u64), BenchError> {
        let base = self.run(Mode::Hidden, 0)?;
        let run = self.run(Mode::Hidden, reads)?;
        let faults = run.stats.shadow.hidden_faults.saturating_sub(base.stats.shadow.hidden_faults);
        Ok((per_unit(run.time, base.time, faults), faults))
    }
}

/// `(with - without) / count`, zero when the difference or the count is.
fn per_unit(with: Duration, without: Duration, count: u64) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(with.saturating_sub(without).as_secs_f64() / count as f64)
}

/// The iteration counts of one mode: N for the in-process bt86 runs and
/// for QEMU. QEMU's are larger, so that the iterations take a few tenths of
/// a second against its start-up jitter of a few tens of milliseconds;
/// bt86's take a tenth of a second or more, against the jitter of the
/// guest's own set-up (the `hidden` mode's first touch of 64 MiB of RAM
/// varies by tens of milliseconds), and keep the whole paging part under
/// twenty seconds. `--scale` can shrink them to a fifth, no further.
fn counts(mode: Mode, options: &BenchOptions) -> (u32, u32) {
    let (bt86, qemu) = match mode {
        Mode::PageFault => (5_000, 200_000),
        Mode::Invlpg => (10_000, 2_000_000),
        Mode::Cr3 => (5_000, 100_000),
        Mode::Hidden => (HIDDEN_READS, 0),
        // The row is about a thousand address spaces; QEMU makes more, and
        // its time is scaled back to a thousand.
        Mode::Fork => (FORK_SPACES, 4_000),
    };
    (options.scaled(bt86, bt86 / 5), options.scaled(qemu, qemu / 5))
}

/// Reads of the `hidden` row: twelve sweeps of the guest's 16384-page
/// region, some twelve thousand hidden faults.
pub const HIDDEN_READS: u32 = 196_608;

/// The address spaces of the `fork` row.
pub const FORK_SPACES: u32 = 1000;

/// The medians of `runs` in-process runs of `mode` with `n` iterations and
/// with none, interleaved so that a slow patch of the host touches both;
/// with the counters of one run of each.
fn bt86_pair(bench: &PageBench, mode: Mode, n: u32, runs: u32) -> Result<(Duration, Duration, RunStats, RunStats), BenchError> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let (mut stats_with, mut stats_without) = (RunStats::default(), RunStats::default());
    for _ in 0..runs.max(1) {
        let base = bench.run(mode, 0)?;
        let run = bench.run(mode, n)?;
        without.push(base.time);
        with.push(run.time);
        stats_without = base.stats;
        stats_with = run.stats;
    }
    let (with, without) = (median(&with).unwrap_or_default(), median(&without).unwrap_or_default());
    if with <= without {
        return Err(BenchError::External {
            what: format!("pagebench `{}` under bt86 (in process)", mode.append(n)),
            problem: format!("took {with:?}, no longer than the {without:?} of the same guest with n=0; use a larger --scale"),
        });
    }
    Ok((with, without, stats_with, stats_without))
}

/// The same for QEMU: the medians of the processes' wall times.
fn qemu_pair(bench: &PageBench, qemu: &Path, mode: Mode, n: u32, runs: u32) -> Result<(Duration, Duration), BenchError> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        without.push(bench.run_qemu(qemu, mode, 0)?.0);
        with.push(bench.run_qemu(qemu, mode, n)?.0);
    }
    let (with, without) = (median(&with).unwrap_or_default(), median(&without).unwrap_or_default());
    if with <= without {
        return Err(BenchError::External {
            what: format!("{} on pagebench `{}`", qemu.display(), mode.append(n)),
            problem: format!("took {with:?}, no longer than the {without:?} of the same guest with n=0; use a larger --scale"),
        });
    }
    Ok((with, without))
}

/// What one iteration costs in exits and shadow work: the difference of
/// the counters of a run with `n` iterations and one with none, per
/// iteration.
pub fn exits_per_iteration(with: &RunStats, without: &RunStats, n: u32) -> String {
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / f64::from(n.max(1));
    let exits = per(with.exits.values().sum(), without.exits.values().sum());
    let callouts = per(with.exits.get("callout"), without.exits.get("callout"));
    let faults = per(with.exits.get("memory-fault"), without.exits.get("memory-fault"));
    let hidden = per(with.shadow.hidden_faults, without.shadow.hidden_faults);
    let guest = per(with.exceptions.values().sum(), without.exceptions.values().sum());
    let mmaps = per(with.shadow.map_calls, without.shadow.map_calls);
    let flushes = per(with.shadow.flushes, without.shadow.flushes);
    let drops = per(with.shadow.invlpg_drops, without.shadow.invlpg_drops);
    format!(
        "{exits:.1} exits per iteration ({callouts:.1} callouts, {faults:.1} host page faults: {hidden:.1} hidden, \
         {guest:.1} guest exceptions delivered); {mmaps:.1} mmap calls, {flushes:.1} shadow flushes, {drops:.1} pages dropped by invlpg"
    )
}

/// The row of one guest-visible operation (`pf`, `invlpg`, `cr3`): its cost
/// under bt86 against QEMU, reported without a target.
fn measure_operation(bench: &PageBench, mode: Mode, options: &BenchOptions) -> Result<Measurement, BenchError> {
    let (n, qemu_n) = counts(mode, options);
    let runs = options.process_repeats();
    let (with, without, s_with, s_without) = bt86_pair(bench, mode, n, runs)?;
    let bt86 = per_unit(with, without, u64::from(n));
    let name = format!("{} ({})", mode.operation(), mode.name());
    let exits = exits_per_iteration(&s_with, &s_without, n);
    let Some(qemu) = &options.qemu else {
        let mut row = skipped_row(name, bt86, "QEMU", NO_QEMU);
        row.note = format!("{}; bt86: {exits}", row.note);
        return Ok(row);
    };
    let (q_with, q_without) = qemu_pair(bench, qemu, mode, qemu_n, runs)?;
    Ok(Measurement {
        name,
        bt86,
        reference: per_unit(q_with, q_without, u64::from(qemu_n)),
        reference_name: "QEMU",
        limit: f64::INFINITY,
        target: "report",
        note: format!(
            "(T(N) - T(0)) / N, medians of {runs} runs, N = {n} in process under bt86 and {qemu_n} under QEMU (process wall time); bt86: {exits}"
        ),
    })
}

/// The `hidden` row: one hidden fault against one bare host SIGSEGV round
/// trip, both measured here.
fn measure_hidden(bench: &PageBench, options: &BenchOptions) -> Result<Measurement, BenchError> {
    let (n, _) = counts(Mode::Hidden, options);
    let runs = options.process_repeats();
    let (with, without, s_with, s_without) = bt86_pair(bench, Mode::Hidden, n, runs)?;
    let faults = s_with.shadow.hidden_faults.saturating_sub(s_without.shadow.hidden_faults);
    let bt86 = per_unit(with, without, faults);
    let mut host = Vec::new();
    for _ in 0..options.repeats.max(1) {
        host.push(bt86_native::measure_host::host_fault_round_trip(2000)?);
    }
    let host = median(&host).unwrap_or_default();
    let pages = s_with.shadow.pages_mapped.saturating_sub(s_without.shadow.pages_mapped);
    let mmaps = s_with.shadow.map_calls.saturating_sub(s_without.shadow.map_calls);
    let per_fault = |x: u64| x as f64 / faults.max(1) as f64;
    Ok(Measurement {
        name: format!("hidden fault (hidden, {n} reads)"),
        bt86,
        reference: host,
        reference_name: "host SIGSEGV",
        limit: 3.0,
        target: "<= 3x one host SIGSEGV round trip",
        note: format!(
            "(T(N) - T(0)) / (hidden faults(N) - hidden faults(0)) = {faults} hidden faults, medians of {runs} runs, each mapping {:.1} pages in {:.2} mmap calls; \
             reference: SIGSEGV on a PROT_NONE page, a handler that mprotects it and returns, and mprotect back, median of {} x 2000",
            per_fault(pages),
            per_fault(mmaps),
            options.repeats.max(1)
        ),
    })
}

/// The `fork` row: a thousand address spaces under bt86 against QEMU.
fn measure_fork(bench: &PageBench, options: &BenchOptions) -> Result<Measurement, BenchError> {
    let (n, qemu_n) = counts(Mode::Fork, options);
    let runs = options.process_repeats();
    let (with, without, s_with, s_without) = bt86_pair(bench, Mode::Fork, n, runs)?;
    // The time of a thousand address spaces, whatever N was.
    let per_thousand = |with: Duration, without: Duration, n: u32| per_unit(with, without, u64::from(n)) * FORK_SPACES;
    let bt86 = per_thousand(with, without, n);
    let name = format!("{FORK_SPACES} address spaces (fork)");
    let exits = exits_per_iteration(&s_with, &s_without, n);
    let Some(qemu) = &options.qemu else {
        let mut row = skipped_row(name, bt86, "QEMU", NO_QEMU);
        row.note = format!("{}; bt86: {exits}", row.note);
        return Ok(row);
    };
    let (q_with, q_without) = qemu_pair(bench, qemu, Mode::Fork, qemu_n, runs)?;
    Ok(Measurement {
        name,
        bt86,
        reference: per_thousand(q_with, q_without, qemu_n),
        reference_name: "QEMU",
        limit: 5.0,
        target: "<= 5x QEMU",
        note: format!(
            "each: a page directory and table built, CR3 switched to it, a CPL-3 program run to int 0x80, CR3 switched back, frames freed; \
             (T(N) - T(0)) x {FORK_SPACES} / N, medians of {runs} runs, N = {n} in process under bt86 and {qemu_n} under QEMU; bt86: {exits}"
        ),
    })
}

/// Runs every paging row, bt86 and its references side by side. Builds
/// VMs of its own, one at a time, so no other VM may be alive.
pub fn measure_paging(options: &BenchOptions) -> Result<Vec<Measurement>, BenchError> {
    let bench = PageBench::new()?;
    let mut rows = Vec::new();
    for mode in [Mode::PageFault, Mode::Invlpg, Mode::Cr3] {
        rows.push(measure_operation(&bench, mode, options)?);
    }
    rows.push(measure_hidden(&bench, options)?);
    rows.push(measure_fork(&bench, options)?);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_line_is_found_only_for_its_own_mode_and_count() {
        let out = b"booting\npagebench: mode=pf n=20 checksum=0x0000abcd frames in use=1\n";
        // (mode, n, expected)
        let cases: [(Mode, u32, Option<u32>); 4] = [
            (Mode::PageFault, 20, Some(0xabcd)),
            (Mode::PageFault, 2, None),
            (Mode::Invlpg, 20, None),
            (Mode::PageFault, 200, None),
        ];
        for (mode, n, want) in cases {
            assert_eq!(parse_checksum(out, mode, n), want, "{mode:?} n={n}");
        }
        assert_eq!(parse_checksum(b"pagebench: mode=pf n=20 checksum=0x12\n", Mode::PageFault, 20), None);
        assert_eq!(parse_checksum(b"", Mode::Fork, 0), None);
    }

    #[test]
    fn a_per_unit_cost_subtracts_the_empty_run() {
        // (with, without, count, expected)
        let ms = Duration::from_millis;
        let cases = [
            (ms(30), ms(10), 20, ms(1)),
            (ms(10), ms(30), 20, Duration::ZERO),
            (ms(30), ms(10), 0, Duration::ZERO),
            (ms(1010), ms(10), 1000, ms(1)),
        ];
        for (with, without, count, want) in cases {
            let got = per_unit(with, without, count);
            assert!(got.abs_diff(want) < Duration::from_nanos(2), "{with:?} - {without:?} over {count}: {got:?}");
        }
    }

    #[test]
    fn modes_name_themselves_as_the_guest_expects() {
        let names: Vec<String> = Mode::ALL.iter().map(|m| m.append(7)).collect();
        assert_eq!(names, ["mode=pf n=7", "mode=invlpg n=7", "mode=cr3 n=7", "mode=hidden n=7", "mode=fork n=7"]);
    }

    /// A PageBench with the VM lock held; None (after saying why) on a
    /// host that cannot run bt86.
    fn page_bench() -> Option<(std::sync::MutexGuard<'static, ()>, PageBench)> {
        let guard = super::super::tests::VM_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bench = PageBench::new().unwrap_or_else(|e| panic!("{e}"));
        match bench.run(Mode::PageFault, 0) {
            Ok(_) => Some((guard, bench)),
            Err(BenchError::Build(e)) if e.status() == crate::status::HOST_UNSUPPORTED => {
                eprintln!("skipped: this host cannot run bt86: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn each_guest_page_fault_iteration_delivers_one_pf() {
        let Some((_lock, bench)) = page_bench() else { return };
        let base = bench.run(Mode::PageFault, 0).unwrap();
        let run = bench.run(Mode::PageFault, 50).unwrap();
        let pf = |r: &GuestRun| r.stats.exceptions.get("#PF");
        assert_eq!(pf(&run) - pf(&base), 50, "{:?}", run.stats.exceptions);
        // Every iteration drops the page with invlpg and maps it again.
        let drops = run.stats.shadow.invlpg_drops - base.stats.shadow.invlpg_drops;
        assert_eq!(drops, 50);
        assert_ne!(run.checksum, base.checksum);
    }

    #[test]
    fn hidden_reads_take_hidden_faults_that_the_guest_never_sees() {
        let Some((_lock, bench)) = page_bench() else { return };
        let base = bench.run(Mode::Hidden, 0).unwrap();
        let run = bench.run(Mode::Hidden, 4096).unwrap();
        let faults = run.stats.shadow.hidden_faults - base.stats.shadow.hidden_faults;
        // 4096 reads of distinct pages: at least one fault per group that
        // a fill maps at once, at most one per read.
        assert!((64..=4096).contains(&faults), "{faults} hidden faults for 4096 reads");
        assert_eq!(run.stats.exceptions.values().sum::<u64>(), base.stats.exceptions.values().sum::<u64>());
        let (cost, measured) = bench.hidden_fault_cost(4096).unwrap();
        assert_eq!(measured, faults);
        assert!(cost > Duration::ZERO);
    }

    #[test]
    fn exit_counts_are_per_iteration_differences() {
        let mut with = RunStats::default();
        let mut without = RunStats::default();
        for _ in 0..30 {
            with.exits.bump("callout");
        }
        for _ in 0..10 {
            with.exits.bump("memory-fault");
        }
        without.exits.bump("callout");
        with.shadow.hidden_faults = 12;
        without.shadow.hidden_faults = 2;
        let text = exits_per_iteration(&with, &without, 10);
        assert!(text.starts_with("3.9 exits per iteration (2.9 callouts, 1.0 host page faults: 1.0 hidden"), "{text}");
    }
}
