//! The one door through which the CPU reaches memory and devices.

use crate::GuestPhysAddr;

/// Width of one I/O-port access, as encoded by `in`/`out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoSize {
    Byte = 1,
    Word = 2,
    Dword = 4,
}

impl IoSize {
    /// Number of bytes transferred.
    pub fn bytes(self) -> u32 {
        self as u32
    }

    /// The all-ones value an unclaimed port returns at this width.
    pub fn all_ones(self) -> u32 {
        match self {
            IoSize::Byte => 0xFF,
            IoSize::Word => 0xFFFF,
            IoSize::Dword => 0xFFFF_FFFF,
        }
    }
}

/// Guest-physical memory and I/O ports, as the virtual CPU sees them.
///
/// Implemented by `Machine`. The virtual CPU (bt86-cpu) and the translator
/// (bt86-translate, to fetch guest code) use only this trait, so they can be
/// tested against a small in-memory bus.
pub trait Bus {
    /// Reads `buf.len()` bytes of guest-physical memory starting at `addr`.
    /// Addresses backed by neither RAM nor a device read as the unassigned
    /// bus does under QEMU's `pc` machine.
    fn read_phys(&mut self, addr: GuestPhysAddr, buf: &mut [u8]);
    /// Writes `data` to guest-physical memory at `addr`. Writes to
    /// unassigned addresses are dropped.
    fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]);
    /// An `in` from `port`. Unclaimed ports read all-ones.
    fn io_in(&mut self, port: u16, size: IoSize) -> u32;
    /// An `out` to `port`. Writes to unclaimed ports are ignored.
    fn io_out(&mut self, port: u16, size: IoSize, value: u32);
}
