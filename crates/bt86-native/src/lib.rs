//! The monitor on Linux x86-64: everything that touches the host.
//!
//! This crate owns the host side of bt86 and is the only one with `unsafe`
//! code: the reservation of the low 4 GiB and the guest RAM mapping
//! ([`addrspace`]), the LDT shadow segments ([`ldt`]), the world switch in
//! assembly ([`switch`]), the fault handlers that turn signals into VM exits
//! ([`signals`]), and the run loop that ties them to the translator and
//! the virtual CPU ([`vm`]). Guest semantics belong to bt86-cpu, and code
//! generation to bt86-translate; this crate only moves the CPU between the
//! two worlds and decides what each exit means.
//!
//! One VM per process: it owns the process's low 4 GiB, its LDT and its
//! fault handlers.

pub mod addrspace;
pub mod direct;
pub mod ldt;
pub mod measure;
pub mod measure_host;
pub mod runctl;
pub mod shadow;
pub mod shutdown;
pub mod signals;
pub mod switch;
pub mod timer;
pub mod vm;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use bt86_machine::Ram;

pub use vm::{Counters, Exit, LogFlags, RunStats, Vm};
pub use runctl::{BreakAddr, Event, ExitView, InsnView, RunLimit, Stop, UnitView, WatchKind};

/// Host failures of the monitor. Each message says what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("bt86 needs an x86-64 Linux host; this is {0}")]
    UnsupportedHost(&'static str),
    #[error("this CPU or kernel does not offer FSGSBASE (rdfsbase/wrfsbase from user mode), which bt86's world switch needs; use Linux 5.9 or newer on a CPU with FSGSBASE")]
    NoFsGsBase,
    #[error("bt86 must be built as a position-independent executable so that its code lies above 4 GiB (it is at {0:#x}); build with the default Rust target settings")]
    NotPie(usize),
    #[error("cannot reserve the low 4 GiB of the address space for the guest: {0}; something is already mapped there (is vm.mmap_min_addr above 4096, or is bt86 loaded below 4 GiB?)")]
    Reserve(io::Error),
    #[error("cannot map the {0}: {1}")]
    Map(&'static str, io::Error),
    #[error("cannot install a 32-bit segment descriptor with modify_ldt: {0}; bt86 needs a kernel with CONFIG_MODIFY_LDT_SYSCALL and 32-bit compatibility mode")]
    Ldt(io::Error),
    #[error("cannot install the fault handlers: {0}")]
    Signals(io::Error),
    #[error("cannot create the host timer that interrupts running guest code: {0}")]
    Timer(io::Error),
    #[error("cannot change the protection of a guest page: {0}")]
    Protect(io::Error),
    #[error("cannot create the RAM file in {path}: {source}; set TMPDIR to a writable directory with room for the guest's RAM")]
    RamFile { path: String, source: io::Error },
    #[error("guest RAM: {0}")]
    Ram(#[from] bt86_machine::memory::MemoryError),
    #[error("guest RAM must be backed by a file (use bt86_native::create_ram)")]
    RamNotFileBacked,
    #[error("a VM is already running in this process; bt86 runs one VM per process")]
    AlreadyRunning,
    #[error("internal monitor error: {0}")]
    Internal(String),
}

/// Checks that this host can run bt86 at all.
pub fn check_host() -> Result<(), NativeError> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return Err(NativeError::UnsupportedHost(std::env::consts::OS));
    }
    // HWCAP2_FSGSBASE (bit 1) says the kernel lets user mode use
    // rdfsbase/wrfsbase.
    // SAFETY: getauxval only reads the auxiliary vector.
    let hwcap2 = unsafe { libc::getauxval(libc::AT_HWCAP2) };
    if hwcap2 & 2 == 0 {
        return Err(NativeError::NoFsGsBase);
    }
    let here = check_host as *const () as usize;
    if here < 1 << 32 {
        return Err(NativeError::NotPie(here));
    }
    Ok(())
}

/// Creates guest RAM of `size` bytes backed by a file in `dir`. The file is
/// unlinked at once: a VM folder format will keep it instead.
pub fn create_ram(size: u32, dir: &Path) -> Result<Ram, NativeError> {
    let path = dir.join(format!("bt86-ram-{}-{}", std::process::id(), size));
    let err = |source| NativeError::RamFile { path: path.display().to_string(), source };
    let file: File = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(err)?;
    let _ = std::fs::remove_file(&path);
    file.set_len(u64::from(size)).map_err(|source| NativeError::RamFile { path: path.display().to_string(), source })?;
    // SAFETY: the file was just created by us and unlinked, so no other
    // process can truncate it under the mapping; its length is `size`.
    let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| NativeError::Map("guest RAM file", e))?;
    Ok(Ram::from_mapping(file, map)?)
}
