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

pub use addr::GuestPhysAddr;
pub use bus::{Bus, IoSize};
