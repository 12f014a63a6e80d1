//! bt86: a binary-translating virtual machine monitor for 32-bit x86 guests.
//!
//! This is the facade the `bt86` command and the tests use. It holds no VMM
//! logic: it loads a kernel into a [`Machine`] (bt86-machine), builds the
//! virtual CPU's boot state (bt86-cpu), hands both to a [`Vm`] (bt86-native,
//! which translates with bt86-translate), and maps how the run ended to a
//! process exit status.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bt86_cpu::Cpu;
pub use bt86_machine::Machine;
pub use bt86_native::{Exit, LogFlags, RunStats, Vm};

pub mod bench;
pub mod stats;

/// The demo guest built into the binary: `bt86 run` with no kernel runs it.
pub const DEMO_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guests/demo.elf"));

/// Process exit statuses of `bt86 run`. The guest's own statuses come from
/// QEMU's isa-debug-exit, `(value << 1) | 1`, which is always odd; bt86's
/// own are even, so the two never collide.
pub mod status {
    /// The guest powered off through ACPI (port 0x604), as QEMU exits.
    pub const POWER_OFF: i32 = 0;
    /// Bad command line or bad input: a kernel that cannot be loaded.
    pub const BAD_INPUT: i32 = 2;
    /// This host cannot run bt86 (or the monitor could not set up).
    pub const HOST_UNSUPPORTED: i32 = 3;
    /// The guest halted and nothing can ever wake it.
    pub const HALTED: i32 = 4;
    /// A triple fault shut the virtual CPU down.
    pub const TRIPLE_FAULT: i32 = 6;
    /// The monitor met something it cannot do (an internal limit or bug).
    pub const MONITOR_ERROR: i32 = 8;
    /// `--timeout` expired, as timeout(1) reports.
    pub const TIMEOUT: i32 = 124;
}

/// Guest RAM when `-m` is not given: 128 MiB, QEMU's default for `pc`.
pub const DEFAULT_RAM_SIZE: u32 = 128 << 20;

/// Everything `bt86 run` needs to build a VM.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// The Multiboot kernel; `None` runs the built-in demo guest.
    pub kernel: Option<PathBuf>,
    /// RAM size as for QEMU's `-m` ("128", "128M", "1G").
    pub memory: Option<String>,
    /// The kernel command line.
    pub append: String,
    /// Files passed as Multiboot modules, in order.
    pub modules: Vec<PathBuf>,
    pub timeout: Option<Duration>,
    /// The disk image for the primary IDE channel's master (`--disk`).
    pub disk: Option<DiskConfig>,
}

/// A disk image as `--disk FILE[,readonly]` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    /// Writes are refused: the guest's write commands end with ABRT.
    pub read_only: bool,
}

impl DiskConfig {
    /// Parses the argument of `--disk`: a path, optionally followed by
    /// `,readonly`. A path that itself ends in `,readonly` cannot be
    /// named; any other comma belongs to the path.
    pub fn parse(arg: &str) -> Result<DiskConfig, String> {
        let (path, read_only) = match arg.strip_suffix(",readonly") {
            Some(path) => (path, true),
            None => (arg, false),
        };
        if path.is_empty() {
            return Err(format!("--disk {arg:?} names no file; give the path of a raw disk image, optionally followed by ,readonly"));
        }
        Ok(DiskConfig { path: PathBuf::from(path), read_only })
    }
}

/// A failure before the guest runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the {what} {path}: {source}; check that the path names a readable file")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("the kernel file {path} is empty; give the path of a Multiboot ELF kernel (a build that stopped half-way can leave an empty file: rebuild it)")]
    EmptyKernel { path: String },
    #[error("{path}: {source}")]
    Load { path: String, source: bt86_machine::LoadError },
    #[error("{0}")]
    Memory(#[from] bt86_machine::memory::MemoryError),
    #[error("{0}")]
    Native(#[from] bt86_native::NativeError),
    #[error("--disk: {0}")]
    Disk(#[from] bt86_machine::DiskError),
}

impl Error {
    /// The exit status for this error.
    pub fn status(&self) -> i32 {
        match self {
            Error::Native(_) => status::HOST_UNSUPPORTED,
            _ => status::BAD_INPUT,
        }
    }
}

/// Reads a whole input file; `what` names its role ("kernel", "--initrd
/// module") so that the message says which of the user's files failed.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read { what, path: path.display().to_string(), source })
}

/// Builds a VM with the kernel loaded and the CPU at its entry point.
pub fn build_vm(config: &RunConfig, serial: bt86_machine::machine::SerialOutput) -> Result<Vm, Error> {
    let ram_size = match &config.memory {
        Some(text) => bt86_machine::memory::parse_ram_size(text)?,
        None => DEFAULT_RAM_SIZE,
    };
    let (name, image) = match &config.kernel {
        Some(path) => (path.display().to_string(), read("kernel", path)?),
        None => ("the demo guest".to_string(), DEMO_GUEST.to_vec()),
    };
    // The loader would only say that it found no Multiboot header in 0
    // bytes; an empty file deserves a message of its own.
    if image.is_empty() {
        return Err(Error::EmptyKernel { path: name });
    }
    // QEMU passes the kernel's file name as the first word of the command
    // line; so does bt86, so guests see the same string.
    let cmdline_name = config.kernel.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "demo".to_string());
    let cmdline = bt86_machine::loader::multiboot::qemu_cmdline(&cmdline_name, &config.append);
    let modules = config
        .modules
        .iter()
        .map(|p| {
            Ok(bt86_machine::Module { cmdline: p.display().to_string(), data: read("--initrd module", p)? })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // Validate the kernel before touching the host: bad input must fail
    // the same way on any machine.
    let mut scratch = bt86_machine::Ram::anonymous(ram_size)?;
    bt86_machine::load_multiboot(&mut scratch, &image, &cmdline, &modules)
        .map_err(|source| Error::Load { path: name.clone(), source })?;
    drop(scratch);
    let disk = match &config.disk {
        Some(d) => Some(bt86_machine::AtaDrive::open(&d.path, d.read_only)?),
        None => None,
    };

    let ram = bt86_native::create_ram(ram_size, &std::env::temp_dir())?;
    let mut machine = Machine::new(ram, serial);
    // The RTC shows the host's time of day, as QEMU's does by default.
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(bt86_machine::machine::DEFAULT_WALL_CLOCK, |d| d.as_secs() as i64);
    machine.set_wall_clock(unix_now);
    if let Some(drive) = disk {
        machine.attach_disk(drive);
    }
    let boot = bt86_machine::load_multiboot(machine.ram_mut(), &image, &cmdline, &modules)
        .map_err(|source| Error::Load { path: name, source })?;
    Vm::new(machine, entry_cpu(&boot.cpu)).map_err(Error::from)
}

/// The virtual CPU as a Multiboot loader leaves it: the state QEMU's
/// loader hands a kernel, register for register, so a guest that looks
/// sees the same machine under both.
fn entry_cpu(entry: &bt86_machine::loader::multiboot::EntryState) -> Cpu {
    use bt86_cpu::state::gpr;
    use bt86_cpu::{DescriptorTable, SegReg, Segment};
    let mut cpu = Cpu::new();
    cpu.gpr[gpr::EAX] = entry.eax;
    cpu.gpr[gpr::EBX] = entry.ebx;
    cpu.gpr[gpr::ECX] = entry.ecx;
    cpu.gpr[gpr::EDX] = entry.edx;
    cpu.gpr[gpr::ESI] = entry.esi;
    cpu.gpr[gpr::EDI] = entry.edi;
    cpu.gpr[gpr::EBP] = entry.ebp;
    cpu.gpr[gpr::ESP] = entry.esp;
    cpu.eip = entry.eip;
    cpu.eflags = entry.eflags;
    cpu.cr0 = entry.cr0;
    // Flat 4 GiB segments, DPL 0: code execute/read, data read/write, both
    // accessed, 32-bit, page granular.
    for reg in SegReg::ALL {
        let seg = if reg == SegReg::Cs {
            Segment::flat(entry.cs, 0xC09B)
        } else {
            Segment::flat(entry.data_selector, 0xC093)
        };
        cpu.set_segment(reg, seg);
    }
    cpu.gdtr = DescriptorTable { base: entry.gdtr_base, limit: entry.gdtr_limit };
    cpu.idtr = DescriptorTable { base: entry.idtr_base, limit: entry.idtr_limit };
    cpu
}

/// The exit status and the message (if any) for how a run ended.
pub fn describe_exit(exit: &Exit) -> (i32, Option<String>) {
    match exit {
        Exit::GuestExit(s) => (*s, None),
        // A halted CPU's EIP already points past the hlt, where an
        // interrupt would resume it (SDM Vol. 2A, HLT). HLT is the one-byte
        // opcode F4 with no operands, so the hlt itself is one byte earlier
        // (a redundant prefix would make it start earlier still, which no
        // compiler emits); the messages name the hlt's own address.
        Exit::Halted { eip, interrupts_enabled: false } => (
            status::HALTED,
            Some(format!(
                "the guest halted with interrupts disabled (hlt at EIP {:#010x} after cli); nothing can wake it, so the run ends",
                eip.wrapping_sub(1)
            )),
        ),
        Exit::Halted { eip, interrupts_enabled: true } => (
            status::HALTED,
            Some(format!(
                "the guest halted waiting for an interrupt (hlt at EIP {:#010x} with interrupts enabled), but no device will ever raise one; the run ends",
                eip.wrapping_sub(1)
            )),
        ),
        Exit::Shutdown(s) => (status::TRIPLE_FAULT, Some(format!("{s}; the virtual CPU shut down"))),
        Exit::Unsupported(what) => (status::MONITOR_ERROR, Some(format!("monitor error: {what}"))),
        Exit::Timeout => (status::TIMEOUT, Some("timeout: the guest was still running".to_string())),
        Exit::StepLimit => (status::MONITOR_ERROR, Some("step limit reached".to_string())),
    }
}
