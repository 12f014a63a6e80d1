//! The virtual PC that a guest sees, minus the CPU: guest-physical memory,
//! the I/O-port bus, the devices on it, and the boot loaders.
//!
//! This crate owns everything a guest can reach through a physical address
//! or a port number. It knows nothing about the CPU's internals, the
//! translation cache or the host: RAM is handed to it as a mapping that the
//! native layer created, and every other crate reaches RAM and devices
//! through the [`Bus`] trait.
#![forbid(unsafe_code)]

pub mod addr;
pub mod bus;
pub mod devices;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod mmio;
pub mod ports;

pub use addr::GuestPhysAddr;
pub use bus::{Bus, IoSize};
pub use devices::ata::{AtaDrive, BlockBackend, DiskError, FileBackend, FlushHandle};
pub use loader::multiboot::{load_multiboot, BootInfo, LoadError, Module};
pub use machine::{Machine, MachineState};
pub use memory::{parse_ram_size, MemoryError, Ram};
pub use mmio::{MmioBus, MmioDevice, MmioError, MmioRange};
pub use ports::PowerState;
