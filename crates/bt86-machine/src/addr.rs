//! Guest-physical addresses, kept apart from every other kind of address.

use std::fmt;

/// An address on the guest's physical bus (after segmentation and paging).
///
/// A `u32`, because bt86 models a 32-bit PC without PAE: the physical bus is
/// 4 GiB wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPhysAddr(pub u32);

impl GuestPhysAddr {
    /// The address `offset` bytes further on, wrapping at 4 GiB as the bus does.
    pub fn wrapping_add(self, offset: u32) -> Self {
        GuestPhysAddr(self.0.wrapping_add(offset))
    }

    /// The 4 KiB page frame number of this address.
    pub fn frame(self) -> u32 {
        self.0 >> 12
    }
}

impl fmt::Display for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}
