//! The memory window of QEMU's `pc-testdev`, a device that exists to test
//! emulators: 64 KiB of scratch registers at physical 0xFF00_0000 that read
//! back whatever was written to them.
//!
//! QEMU adds it to the `pc` machine with `-device pc-testdev` (QEMU's
//! hw/misc/pc-testdev.c, the "pc-testdev-iomem" region); it is not there by
//! default. bt86 offers the same window so that a guest which drives a
//! memory-mapped device (guests/mmio.c) prints the same bytes under both,
//! and the guest test can compare them. QEMU's device also has I/O ports
//! (0xE0-0xEB and 0x2000-0x2017: a scratch register, a page flush and IRQ
//! lines for KVM's unit tests); bt86 models only the memory window, and
//! those ports stay unassigned.
//!
//! Semantics, from QEMU's source and measured with guests/mmio.c under
//! qemu-system-i386 7.2: the window starts as zeroes; a write stores its
//! bytes and a read returns the bytes stored, at every width and offset,
//! aligned or not, like RAM. The window has no side effects, raises no
//! interrupt and never changes on its own, so the device is deterministic.
//!
//! This module owns the window's contents. It does not decide where the
//! window is mapped (the machine registers it at [`IOMEM_BASE`] on its
//! MMIO bus) and it never touches guest RAM or the host.

use thiserror::Error;

use crate::mmio::{MmioDevice, MmioError, MmioRange};
use crate::GuestPhysAddr;

/// Where QEMU maps the window: `memory_region_add_subregion(mem,
/// 0xff000000, &dev->iomem)` in hw/misc/pc-testdev.c.
pub const IOMEM_BASE: GuestPhysAddr = GuestPhysAddr(0xFF00_0000);

/// The window's length, QEMU's `IOMEM_LEN`: 64 KiB, sixteen pages.
pub const IOMEM_LEN: u32 = 0x1_0000;

/// The name of the device in QEMU (`-device pc-testdev`), also used as its
/// name on bt86's MMIO bus.
pub const NAME: &str = "pc-testdev";

/// The guest-visible state of the device: the window's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcTestdevState {
    /// Exactly [`IOMEM_LEN`] bytes; byte `i` is at `IOMEM_BASE + i`.
    pub iomem: Vec<u8>,
}

/// A snapshot that cannot be restored.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PcTestdevStateError {
    #[error(
        "cannot restore pc-testdev: its memory window holds {found} bytes, not {IOMEM_LEN}; \
         the snapshot is damaged or from another version of bt86"
    )]
    WrongLength { found: usize },
}

/// The memory window of `pc-testdev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcTestdev {
    iomem: Vec<u8>,
}

impl Default for PcTestdev {
    fn default() -> Self {
        PcTestdev::new()
    }
}

impl PcTestdev {
    /// The device as QEMU creates it: the window all zeroes (QEMU allocates
    /// the device zeroed).
    pub fn new() -> PcTestdev {
        PcTestdev {
            iomem: vec![0; IOMEM_LEN as usize],
        }
    }

    /// The range the window occupies on the physical bus. It is always
    /// valid (whole pages below 4 GiB); the `Result` only carries
    /// [`MmioRange::new`]'s checks through to the caller, which registers
    /// the range and must handle a refusal anyway.
    pub fn range() -> Result<MmioRange, MmioError> {
        MmioRange::new(IOMEM_BASE, u64::from(IOMEM_LEN))
    }

    /// The device's state, for a snapshot.
    pub fn state(&self) -> PcTestdevState {
        PcTestdevState {
            iomem: self.iomem.clone(),
        }
    }

    /// Puts the device back in a state taken with [`PcTestdev::state`]. On
    /// error the device is unchanged.
    pub fn restore(&mut self, state: &PcTestdevState) -> Result<(), PcTestdevStateError> {
        if state.iomem.len() != IOMEM_LEN as usize {
            return Err(PcTestdevStateError::WrongLength {
                found: state.iomem.len(),
            });
        }
        self.iomem.copy_from_slice(&state.iomem);
        Ok(())
    }

    /// The part of the window that `len` bytes at `offset` cover, as a
    /// byte range of `iomem`, clipped to the window. The bus never passes
    /// an access that leaves the window; clipping keeps a misuse from
    /// panicking all the same.
    fn span(&self, offset: u64, len: usize) -> std::ops::Range<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.iomem.len());
        let end = start.saturating_add(len).min(self.iomem.len());
        start..end
    }
}

impl MmioDevice for PcTestdev {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let span = self.span(offset, data.len());
        let n = span.len();
        data[..n].copy_from_slice(&self.iomem[span]);
        // Bytes past the window (never asked for by the bus) read as zero.
        data[n..].fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let span = self.span(offset, data.len());
        let n = span.len();
        self.iomem[span].copy_from_slice(&data[..n]);
    }

    /// The window's bytes, as they are.
    fn save_state(&self) -> Vec<u8> {
        self.iomem.clone()
    }

    fn check_state(&self, state: &[u8]) -> Result<(), String> {
        if state.len() == IOMEM_LEN as usize {
            Ok(())
        } else {
            Err(PcTestdevStateError::WrongLength { found: state.len() }.to_string())
        }
    }

    fn restore_state(&mut self, state: &[u8]) {
        if state.len() == self.iomem.len() {
            self.iomem.copy_from_slice(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_where_qemu_puts_it() {
        let range = PcTestdev::range().unwrap();
        assert_eq!(range.base(), GuestPhysAddr(0xFF00_0000));
        assert_eq!(range.len(), 0x1_0000);
        assert_eq!(range.end(), 0xFF01_0000);
    }

    #[test]
    fn it_starts_zeroed_and_reads_back_what_was_written_at_every_width() {
        let mut dev = PcTestdev::new();
        let mut buf = [0xEE; 8];
        dev.read(0xFFF8, &mut buf);
        assert_eq!(buf, [0; 8]);

        // (offset, bytes written), each then read back at the same width,
        // and the bytes around it untouched.
        let cases: &[(u64, &[u8])] = &[
            (0x0, &[0x11]),
            (0x2, &[0x22, 0x33]),
            (0x4, &[0x44, 0x55, 0x66, 0x77]),
            (0x8, &[1, 2, 3, 4, 5, 6, 7, 8]),
            (0xFFFC, &[0xDE, 0xAD, 0xBE, 0xEF]),
        ];
        for &(offset, data) in cases {
            dev.write(offset, data);
            let mut back = vec![0; data.len()];
            dev.read(offset, &mut back);
            assert_eq!(back, data, "offset {offset:#x}");
        }
        // A dword read sees the byte and word writes in little-endian order.
        let mut dword = [0; 4];
        dev.read(0, &mut dword);
        assert_eq!(u32::from_le_bytes(dword), 0x3322_0011);
        // Narrower reads see parts of wider writes.
        let mut word = [0; 2];
        dev.read(0xA, &mut word);
        assert_eq!(word, [3, 4]);
    }

    #[test]
    fn accesses_past_the_window_do_not_panic() {
        let mut dev = PcTestdev::new();
        dev.write(0xFFFE, &[1, 2, 3, 4]);
        let mut buf = [0xEE; 4];
        dev.read(0xFFFE, &mut buf);
        assert_eq!(buf, [1, 2, 0, 0]);
        dev.write(u64::MAX, &[9]);
        let mut far = [0xEE; 2];
        dev.read(u64::MAX, &mut far);
        assert_eq!(far, [0, 0]);
        assert_eq!(dev, {
            let mut want = PcTestdev::new();
            want.write(0xFFFE, &[1, 2]);
            want
        });
    }

    #[test]
    fn state_round_trips_and_a_bad_one_changes_nothing() {
        let mut dev = PcTestdev::new();
        dev.write(0x1234, &[0xAB, 0xCD]);
        let state = dev.state();
        let mut other = PcTestdev::new();
        other.restore(&state).unwrap();
        assert_eq!(other, dev);

        let bad = PcTestdevState { iomem: vec![1; 10] };
        assert_eq!(
            other.restore(&bad),
            Err(PcTestdevStateError::WrongLength { found: 10 })
        );
        assert_eq!(other, dev, "a failed restore changes nothing");
    }
}
