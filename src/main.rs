//! The `bt86` command.
//!
//! `bt86 run [OPTIONS] [KERNEL]` boots a Multiboot kernel (or the built-in
//! demo guest) and runs it from the translation cache. Options that QEMU
//! users type by habit keep QEMU's meaning: `-m`, `-append`/`--append`,
//! `-initrd`, `-kernel`, `-d in_asm,out_asm,int,exec` and `-D FILE`.
//! `--gdb [HOST:PORT]`, `-s` and `-S` serve the guest to gdb, as QEMU's
//! options of the same names do (the stub is `bt86_debug::gdb`).
//! `bt86 bench` measures translated against native execution, translation
//! throughput, the cost of a callout, system calls from ring 3, timer
//! interrupt latency and the multitask guest (the last three against QEMU
//! when it is installed), and prints a table of ratios.

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bt86::{status, LogFlags, RunConfig};
use bt86_debug::gdb::{GdbError, GdbOptions, GdbOutcome};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bt86", version, about = "A binary-translating VMM for 32-bit x86 guests, built for teaching")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// The command line is parsed once per process; boxing `RunArgs` to even
// out the variants would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Boot a Multiboot kernel and run it natively from the translation cache.
    Run(RunCommand),
    /// Measure bt86 against native execution, a bare world switch, the
    /// host's system call and QEMU, and print a table of ratios and targets
    /// (about twenty seconds; a few without QEMU).
    Bench(BenchArgs),
    /// Debug a kernel: step through guest code and its translation, in a
    /// terminal UI. With --batch, commands come from FILE (or standard
    /// input) and the transcript goes to standard output.
    Debug(DebugArgs),
}

#[derive(Args)]
struct DebugArgs {
    /// Read debugger commands from FILE (or standard input without FILE, or
    /// with -) and print a plain-text transcript.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    batch: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// The compute guest whose kernels are timed (default: the built-in one).
    #[arg(long, value_name = "ELF")]
    compute: Option<PathBuf>,
    /// Timed repetitions of each measurement; the fastest counts.
    #[arg(long, value_name = "N", default_value_t = 5)]
    repeats: u32,
    /// Multiply the work of each measurement by this factor.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    scale: f64,
    /// The qemu-system-i386 to compare with (default: $BT86_QEMU, or the
    /// one on PATH).
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// Skip every comparison with QEMU.
    #[arg(long, conflicts_with = "qemu")]
    no_qemu: bool,
}

/// `bt86 run`: the machine's options, then the gdb stub's.
#[derive(Args)]
struct RunCommand {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    gdb: GdbArgs,
}

/// The gdb remote stub's options, spelled as QEMU spells them.
#[derive(Args)]
struct GdbArgs {
    /// Serve gdb's remote protocol on HOST:PORT (default 127.0.0.1:1234; port 0 picks a free port; QEMU's -gdb tcp::PORT works too) and stop the guest when gdb connects. When gdb detaches, the guest runs on to its end; if the connection is lost without a detach, bt86 stops the guest and exits with status 10; gdb's `kill` ends bt86 with status 12; a guest exit is reported to gdb with bt86's own exit status.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = bt86_debug::gdb::DEFAULT_ADDRESS)]
    gdb: Option<String>,
    /// Shorthand for --gdb 127.0.0.1:1234, as QEMU's -s.
    #[arg(short = 's', conflicts_with = "gdb")]
    gdb_default: bool,
    /// Hold the guest before its first instruction until gdb connects and continues it, as QEMU's -S (implies -s unless --gdb says where).
    #[arg(short = 'S')]
    wait_for_gdb: bool,
}

#[derive(Args)]
struct RunArgs {
    /// The Multiboot (v1) ELF kernel to boot. Without one, bt86 runs its
    /// built-in demo guest.
    kernel: Option<PathBuf>,
    /// The kernel, given as an option; also spelled -kernel, as in QEMU.
    #[arg(long = "kernel", value_name = "KERNEL", conflicts_with = "kernel")]
    kernel_opt: Option<PathBuf>,
    /// Guest RAM size, as QEMU's -m: a number of MiB, or with a K, M or G suffix.
    #[arg(short = 'm', value_name = "SIZE")]
    memory: Option<String>,
    /// The kernel command line (Multiboot cmdline); also spelled -append, as in QEMU.
    #[arg(long, value_name = "CMDLINE", default_value = "")]
    append: String,
    /// A file to pass as a Multiboot module (repeatable); also spelled -initrd, as in QEMU.
    #[arg(long, value_name = "FILE")]
    initrd: Vec<PathBuf>,
    /// A raw disk image for the master drive of the primary IDE channel
    /// (ports 0x1F0-0x1F7, IRQ 14); add ,readonly to refuse the guest's
    /// writes. Writes reach the file at once and are flushed when bt86 exits.
    #[arg(long, value_name = "FILE[,readonly]")]
    disk: Option<String>,
    /// Stop the guest after this many seconds (status 124).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Print the translator's and the monitor's counters after the run.
    #[arg(long)]
    stats: bool,
    /// Log each translation unit: guest disassembly beside the TC code,
    /// with the reason for every rewrite (same as -d in_asm,out_asm).
    #[arg(long)]
    trace: bool,
    /// Debug log items, as QEMU's -d: in_asm, out_asm, int, exec (comma-separated).
    #[arg(short = 'd', value_name = "ITEMS", value_delimiter = ',')]
    debug: Vec<String>,
    /// Write the debug log to FILE instead of standard error, as QEMU's -D.
    #[arg(short = 'D', value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Accepted for QEMU compatibility: COM1 always goes to standard output,
    /// so only `stdio` is allowed.
    #[arg(long, value_name = "stdio")]
    serial: Option<String>,
    /// Accepted for QEMU compatibility: bt86 has no display (`none`).
    #[arg(long, value_name = "none")]
    display: Option<String>,
    /// As QEMU's -device: bt86 always has `isa-debug-exit,iobase=0xf4,iosize=0x04`,
    /// and adds `pc-testdev` (its MMIO window at 0xFF000000) on request.
    #[arg(long, value_name = "DEVICE")]
    device: Vec<String>,
    /// Accepted for QEMU compatibility: bt86 never reboots; a triple fault
    /// ends the run (status 6).
    #[arg(long)]
    no_reboot: bool,
    /// Accepted for QEMU compatibility: bt86 has no display.
    #[arg(long)]
    nographic: bool,
}

/// QEMU's test device: bt86 models its 64 KiB memory window at 0xFF000000.
const PC_TESTDEV: &str = "pc-testdev";

/// Checks the QEMU options bt86 accepts only in the one form it implements,
/// so that a pasted QEMU command line either means the same thing or fails
/// with a clear message.
fn check_qemu_compat(args: &RunArgs) -> Result<(), String> {
    if let Some(s) = &args.serial {
        if s != "stdio" {
            return Err(format!("-serial {s}: bt86's COM1 always writes to standard output; use -serial stdio or leave it out"));
        }
    }
    if let Some(d) = &args.display {
        if d != "none" {
            return Err(format!("-display {d}: bt86 has no display; use -display none or leave it out"));
        }
    }
    for dev in &args.device {
        let normalized: Vec<&str> = dev.split(',').collect();
        let is_debug_exit = normalized.first() == Some(&"isa-debug-exit")
            && normalized[1..].iter().all(|p| matches!(*p, "iobase=0xf4" | "iobase=0xF4" | "iosize=0x04" | "iosize=4" | "iosize=0x4"));
        if !is_debug_exit && dev != PC_TESTDEV {
            return Err(format!(
                "-device {dev}: bt86 has no such device; it has isa-debug-exit,iobase=0xf4,iosize=0x04 always, and {PC_TESTDEV} on request"
            ));
        }
    }
    Ok(())
}

/// QEMU spells some options with one dash (`-kernel`, `-append`,
/// `-initrd`); accept them as their double-dash forms.
fn qemu_spellings(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| match a.as_str() {
        "-kernel" | "-append" | "-initrd" | "-serial" | "-display" | "-device" | "-no-reboot" | "-nographic" | "-gdb" => format!("-{a}"),
        _ => a,
    })
    .collect()
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let cli = Cli::parse_from(qemu_spellings(std::env::args()));
    let code = match cli.command {
        Command::Run(args) => run(args.run, args.gdb),
        Command::Bench(args) => bench(args),
        Command::Debug(args) => debug(args),
    };
    ExitCode::from((code & 0xFF) as u8)
}

fn run(args: RunArgs, gdb_args: GdbArgs) -> i32 {
    if let Err(message) = check_qemu_compat(&args) {
        eprintln!("bt86: {message}");
        return status::BAD_INPUT;
    }
    // The gdb socket is opened before the guest is built, so that a bad
    // address or a busy port fails as bad input at once.
    let gdb = match gdb_listener(&gdb_args) {
        Ok(gdb) => gdb,
        Err(e) => {
            eprintln!("bt86: {e}");
            return status::BAD_INPUT;
        }
    };
    let mut log = LogFlags::default();
    for item in &args.debug {
        match item.as_str() {
            "in_asm" => log.in_asm = true,
            "out_asm" => log.out_asm = true,
            "int" => log.int = true,
            "exec" => log.exec = true,
            other => {
                eprintln!("bt86: unknown -d item {other:?}; use in_asm, out_asm, int or exec");
                return status::BAD_INPUT;
            }
        }
    }
    if args.trace {
        log.in_asm = true;
        log.out_asm = true;
    }
    let timeout = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            eprintln!("bt86: --timeout {t} is not a positive number of seconds");
            return status::BAD_INPUT;
        }
        None => None,
    };
    let disk = match args.disk.as_deref().map(bt86::DiskConfig::parse).transpose() {
        Ok(disk) => disk,
        Err(message) => {
            eprintln!("bt86: {message}");
            return status::BAD_INPUT;
        }
    };
    // Before any other thread starts, so that all of them leave SIGINT and
    // SIGTERM to the watcher (see bt86_native::shutdown).
    if let Err(e) = bt86_native::shutdown::install() {
        eprintln!("bt86: warning: {e}; SIGINT and SIGTERM will end bt86 without flushing the disk");
    }
    let config = RunConfig {
        kernel: args.kernel.or(args.kernel_opt),
        memory: args.memory,
        append: args.append,
        modules: args.initrd,
        timeout,
        disk,
    };
    let serial: Box<dyn Write + Send> = Box::new(std::io::stdout());
    let mut vm = match bt86::build_vm(&config, serial) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("bt86: {e}");
            return e.status();
        }
    };
    if args.device.iter().any(|d| d == PC_TESTDEV) {
        if let Err(e) = vm.machine.add_pc_testdev() {
            eprintln!("bt86: -device {PC_TESTDEV}: {e}");
            return status::BAD_INPUT;
        }
    }
    if log != LogFlags::default() {
        let sink: Box<dyn Write + Send> = match &args.log_file {
            Some(path) => match File::create(path) {
                Ok(f) => Box::new(std::io::BufWriter::new(f)),
                Err(e) => {
                    eprintln!("bt86: cannot create the -D log file {}: {e}; check that its directory exists and is writable", path.display());
                    return status::BAD_INPUT;
                }
            },
            None => Box::new(std::io::stderr()),
        };
        vm.set_log(log, sink);
    }
    // Threads that end the process while the VM's thread runs guest code
    // flush the disk image through this handle first.
    let disk_flush = vm.machine.disk_flush_handle();
    {
        let disk_flush = disk_flush.clone();
        std::thread::spawn(move || loop {
            if let Some(signal) = bt86_native::shutdown::signal() {
                let _ = std::io::stdout().flush();
                flush_disk_before_exit(disk_flush.as_ref());
                eprintln!("bt86: stopped by signal {signal}");
                std::process::exit(bt86_native::shutdown::exit_status(signal));
            }
            std::thread::sleep(Duration::from_millis(10));
        });
    }
    if let Some(t) = timeout {
        vm.set_deadline(Instant::now() + t);
        // The run loop stops the guest at the deadline, even in chained
        // code (the host timer is armed for it); this watchdog is the last
        // resort should the monitor itself hang.
        let disk_flush = disk_flush.clone();
        std::thread::spawn(move || {
            std::thread::sleep(t + Duration::from_millis(200));
            let _ = std::io::stdout().flush();
            flush_disk_before_exit(disk_flush.as_ref());
            eprintln!("bt86: timeout: the guest was still running after {:.1} s", t.as_secs_f64());
            std::process::exit(status::TIMEOUT);
        });
    }
    let end = match gdb {
        None => RunEnd::Vm(vm.run()),
        Some((listener, options)) => run_with_gdb(&mut vm, listener, &options),
    };
    let _ = std::io::stdout().flush();
    // However the guest stopped, what it wrote must be durable.
    if let Err(e) = vm.machine.flush_disk() {
        eprintln!("bt86: {e}");
    }
    let code = match end {
        RunEnd::Status(code) => code,
        RunEnd::Vm(Ok(exit)) => {
            let (code, message) = bt86::describe_exit(&exit);
            if let Some(m) = message {
                eprintln!("bt86: {m} (exit status {code})");
            }
            code
        }
        RunEnd::Vm(Err(e)) => {
            eprintln!("bt86: {e}");
            status::MONITOR_ERROR
        }
    };
    if args.stats {
        eprint!("{}", bt86::stats::format(&vm.translation_cache().stats, &vm.stats, &vm.cpu.stats));
    }
    code
}

/// `bt86 debug --batch`: a scripted debugging session on the kernel.
fn debug(args: DebugArgs) -> i32 {
    let Some(mut batch) = args.batch else {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
            return debug_tui(args);
        }
        eprintln!("bt86: debug: the terminal UI needs a terminal on standard input and output; for scripts and pipes use `bt86 debug --batch [FILE] KERNEL`");
        return status::BAD_INPUT;
    };
    if let Err(message) = check_qemu_compat(&args.run) {
        eprintln!("bt86: {message}");
        return status::BAD_INPUT;
    }
    let mut kernel = args.run.kernel.or(args.run.kernel_opt);
    // `--batch KERNEL` with commands on standard input: clap gave the
    // kernel to --batch, whose value is optional. An ELF file is never a
    // command script, so take it back.
    if kernel.is_none() && std::fs::read(&batch).is_ok_and(|b| b.starts_with(b"\x7fELF")) {
        kernel = Some(std::mem::replace(&mut batch, PathBuf::from("-")));
    }
    let disk = match args.run.disk.as_deref().map(bt86::DiskConfig::parse).transpose() {
        Ok(disk) => disk,
        Err(message) => {
            eprintln!("bt86: {message}");
            return status::BAD_INPUT;
        }
    };
    let script: Box<dyn std::io::BufRead> = if batch.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match File::open(&batch) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("bt86: cannot read the debugger script {}: {e}; check the path", batch.display());
                return status::BAD_INPUT;
            }
        }
    };
    let config = RunConfig { kernel, memory: args.run.memory, append: args.run.append, modules: args.run.initrd, timeout: None, disk };
    let vm = match bt86::build_vm(&config, Box::new(std::io::stdout())) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("bt86: {e}");
            return e.status();
        }
    };
    let mut session = bt86_debug::Session::new(vm);
    let image = match &config.kernel {
        Some(path) => std::fs::read(path).unwrap_or_default(),
        None => bt86::DEMO_GUEST.to_vec(),
    };
    session.set_symbols(bt86_debug::Symbols::from_elf(&image));
    let mut script = script;
    let outcome = bt86_debug::run_batch(&mut session, &mut script, &mut std::io::stdout());
    let _ = session.vm.machine.flush_disk();
    match outcome {
        Ok(outcome) => outcome.exit.map_or(0, |exit| bt86::describe_exit(&exit).0),
        Err(e) => {
            eprintln!("bt86: debug: {e}");
            status::MONITOR_ERROR
        }
    }
}

/// `bt86 debug KERNEL` on a terminal: the terminal UI (`bt86_debug::tui`).
/// The guest's COM1 output goes to a panel of the UI rather than over the
/// screen.
fn debug_tui(args: DebugArgs) -> i32 {
    if let Err(message) = check_qemu_compat(&args.run) {
        eprintln!("bt86: {message}");
        return status::BAD_INPUT;
    }
    let disk = match args.run.disk.as_deref().map(bt86::DiskConfig::parse).transpose() {
        Ok(disk) => disk,
        Err(message) => {
            eprintln!("bt86: {message}");
            return status::BAD_INPUT;
        }
    };
    let kernel = args.run.kernel.or(args.run.kernel_opt);
    let config = RunConfig { kernel, memory: args.run.memory, append: args.run.append, modules: args.run.initrd, timeout: None, disk };
    let serial = bt86_debug::tui::SerialCapture::new();
    let vm = match bt86::build_vm(&config, Box::new(serial.clone())) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("bt86: {e}");
            return e.status();
        }
    };
    let mut session = bt86_debug::Session::new(vm);
    let (title, image) = match &config.kernel {
        Some(path) => (path.display().to_string(), std::fs::read(path).unwrap_or_default()),
        None => ("the demo guest".to_string(), bt86::DEMO_GUEST.to_vec()),
    };
    let symbols = bt86_debug::Symbols::from_elf(&image);
    session.set_symbols(symbols.clone());
    let result = bt86_debug::tui::run(&mut session, symbols, Some(serial), &title);
    let _ = session.vm.machine.flush_disk();
    match result {
        // As in batch mode: the guest's status if it ended, else 0.
        Ok(finished) => finished.map_or(0, |exit| bt86::describe_exit(&exit).0),
        Err(e) => {
            eprintln!("bt86: debug: {e}");
            status::MONITOR_ERROR
        }
    }
}

/// How `bt86 run` ended.
enum RunEnd {
    /// The run loop returned: the guest's exit, or a monitor failure.
    Vm(Result<bt86::Exit, bt86_native::NativeError>),
    /// A gdb session ended the run with this status, already explained.
    Status(i32),
}

/// The socket for `--gdb`, `-s` or `-S`, if one was asked for, with the
/// stub's options.
fn gdb_listener(args: &GdbArgs) -> Result<Option<(TcpListener, GdbOptions)>, GdbError> {
    let address = match (&args.gdb, args.gdb_default || args.wait_for_gdb) {
        (Some(text), _) => text.as_str(),
        (None, true) => bt86_debug::gdb::DEFAULT_ADDRESS,
        (None, false) => return Ok(None),
    };
    let listener = bt86_debug::gdb::listen(bt86_debug::gdb::parse_address(address)?)?;
    let options = GdbOptions { wait_for_client: args.wait_for_gdb, exit_status: |exit| bt86::describe_exit(exit).0 };
    Ok(Some((listener, options)))
}

/// Runs the guest under the gdb stub (see `bt86_debug::gdb` for what each
/// end of a session means).
fn run_with_gdb(vm: &mut bt86::Vm, listener: TcpListener, options: &GdbOptions) -> RunEnd {
    match bt86_debug::gdb::serve(vm, listener, options) {
        Ok(GdbOutcome::Exited(exit)) => RunEnd::Vm(Ok(exit)),
        Ok(GdbOutcome::Detached) => {
            eprintln!("bt86: {}", GdbOutcome::Detached);
            RunEnd::Vm(vm.run())
        }
        Ok(outcome) => {
            eprintln!("bt86: {outcome}");
            RunEnd::Status(outcome.status().unwrap_or(status::MONITOR_ERROR))
        }
        Err(GdbError::Monitor(e)) => RunEnd::Vm(Err(e)),
        Err(e) => {
            eprintln!("bt86: {e}");
            RunEnd::Status(status::MONITOR_ERROR)
        }
    }
}

/// Makes the guest's disk writes durable before another thread than the
/// VM's ends the process. A failure is reported, since the exit goes on.
fn flush_disk_before_exit(handle: Option<&bt86_machine::FlushHandle>) {
    if let Some(handle) = handle {
        if let Err(e) = handle.flush() {
            eprintln!("bt86: cannot flush the disk image to the host's storage: {e}; the guest's last writes may not be durable");
        }
    }
}

fn bench(args: BenchArgs) -> i32 {
    if args.repeats == 0 || !(args.scale.is_finite() && args.scale > 0.0) {
        eprintln!("bt86: bench needs --repeats of at least 1 and a positive --scale (got {} and {})", args.repeats, args.scale);
        return status::BAD_INPUT;
    }
    let qemu = if args.no_qemu { None } else { args.qemu.or_else(bt86::bench::external::find_qemu) };
    let options = bt86::bench::BenchOptions {
        compute_guest: args.compute,
        repeats: args.repeats,
        scale: args.scale,
        qemu,
        // The multitask row times `bt86 run` as a user runs it: this very
        // program, in a child process.
        bt86_command: std::env::current_exe().ok(),
    };
    match bt86::bench::run_all(&options) {
        Ok(rows) => {
            print!("{}", bt86::bench::format_table(&rows));
            0
        }
        Err(e) => {
            eprintln!("bt86: bench: {e}");
            match e {
                bt86::bench::BenchError::Build(e) => e.status(),
                bt86::bench::BenchError::ReadGuest { .. }
                | bt86::bench::BenchError::Elf { .. }
                | bt86::bench::BenchError::MissingKernel(_)
                | bt86::bench::BenchError::Spawn { .. } => {
                    status::BAD_INPUT
                }
                _ => status::MONITOR_ERROR,
            }
        }
    }
}
