//! Guest RAM: one contiguous mapping that starts at guest-physical address 0.
//!
//! This module owns the bytes of guest RAM and the rules for how large RAM
//! may be. It does not create file-backed mappings (that needs `unsafe`
//! `MmapMut::map_mut`, and `unsafe` lives only in bt86-native), it does not
//! map RAM into the guest's view of the address space (bt86-native does), and
//! it knows nothing about devices: `Machine` decides what an address that is
//! not RAM means.
//!
//! Every access is bounds-checked and returns a [`MemoryError`] instead of
//! panicking, because the addresses come from the guest or from a kernel
//! image, and neither may crash the monitor.

use std::fs::File;

use memmap2::MmapMut;
use thiserror::Error;

use crate::GuestPhysAddr;

/// The first address of the monitor's area. bt86 maps guest-physical RAM at
/// the same host addresses while paging is off, and keeps
/// [0xFFC0_0000, 4 GiB) for its own VCPU page, translation cache and stubs,
/// so no guest RAM may ever reach it.
pub const MONITOR_AREA_START: u32 = 0xFFC0_0000;

/// The largest RAM bt86 accepts: 3 GiB.
///
/// RAM must end below [`MONITOR_AREA_START`], and a PC also needs a hole below
/// 4 GiB for device memory (the IOAPIC at 0xFEC0_0000, the LAPIC at
/// 0xFEE0_0000, PCI windows). QEMU's `pc` machine draws the same line: with
/// 3.5 GiB of RAM or more it keeps only 3 GiB below 4 GiB and moves the rest
/// above 4 GiB, which a 32-bit guest without PAE cannot reach.
pub const MAX_RAM_SIZE: u32 = 3 << 30;

// RAM must never reach the monitor's area; checked when the crate compiles.
const _: () = assert!(MAX_RAM_SIZE <= MONITOR_AREA_START);

/// The smallest RAM bt86 accepts: 2 MiB, so that the kernel area starting at
/// 1 MiB exists beside the 128 KiB that the PC firmware map reserves at the
/// top of RAM.
pub const MIN_RAM_SIZE: u32 = 2 << 20;

/// RAM sizes are whole 4 KiB pages, because RAM is mapped page by page.
pub const PAGE_SIZE: u32 = 4096;

/// What went wrong with guest RAM on the host side.
#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("a RAM access of {len} bytes at guest-physical {addr} runs past the end of RAM ({size:#x} bytes); check the address before accessing RAM")]
    OutOfRange {
        addr: GuestPhysAddr,
        len: usize,
        size: u32,
    },

    #[error("cannot create {size:#x} bytes of anonymous RAM: {source}; try a smaller -m value")]
    Map { size: u32, source: std::io::Error },

    #[error("a RAM mapping of {len:#x} bytes is not a whole number of 4 KiB pages between {min:#x} and {max:#x} bytes; map a size that `parse_ram_size` accepts", min = MIN_RAM_SIZE, max = MAX_RAM_SIZE)]
    BadMappingSize { len: usize },

    #[error("cannot flush guest RAM to its backing file: {0}; check free disk space")]
    Flush(std::io::Error),

    #[error("RAM size {text:?} is not a number with an optional K, M or G suffix; write it like QEMU's -m: 128, 128M, 1G or 65536K")]
    SizeSyntax { text: String },

    #[error("RAM size {text:?} is {bytes:#x} bytes, outside the range bt86 supports ({min} MiB to {max} MiB); choose a size in that range", min = MIN_RAM_SIZE >> 20, max = MAX_RAM_SIZE >> 20)]
    SizeRange { text: String, bytes: u64 },
}

/// Guest RAM: `size()` bytes mapped at guest-physical address 0.
///
/// The mapping is either anonymous (tests) or backed by a file that the
/// native layer created, so that a suspended VM is a folder of files.
pub struct Ram {
    map: MmapMut,
    file: Option<File>,
    size: u32,
}

impl std::fmt::Debug for Ram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ram")
            .field("size", &format_args!("{:#x}", self.size))
            .field("file_backed", &self.file.is_some())
            .finish()
    }
}

impl Ram {
    /// Anonymous, zero-filled RAM of `size` bytes. Used by tests and tools
    /// that do not need a VM folder; it uses the safe `MmapMut::map_anon`.
    pub fn anonymous(size: u32) -> Result<Ram, MemoryError> {
        check_mapping_size(size as usize)?;
        let map =
            MmapMut::map_anon(size as usize).map_err(|source| MemoryError::Map { size, source })?;
        Ok(Ram {
            map,
            file: None,
            size,
        })
    }

    /// RAM over a file-backed mapping that the native layer created with
    /// `MmapMut::map_mut` (which is `unsafe`, so it cannot be done here).
    /// The file is kept open for as long as the RAM lives.
    pub fn from_mapping(file: File, map: MmapMut) -> Result<Ram, MemoryError> {
        let size = check_mapping_size(map.len())?;
        Ok(Ram {
            map,
            file: Some(file),
            size,
        })
    }

    /// The size of RAM in bytes; RAM covers [0, size).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The file behind this RAM, if it is file-backed.
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// True if `len` bytes starting at `addr` all lie inside RAM.
    pub fn contains(&self, addr: GuestPhysAddr, len: usize) -> bool {
        self.range(addr, len).is_ok()
    }

    /// Copies `buf.len()` bytes of RAM starting at `addr` into `buf`.
    pub fn read(&self, addr: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let range = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.map[range]);
        Ok(())
    }

    /// Copies `data` into RAM starting at `addr`.
    pub fn write(&mut self, addr: GuestPhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        let range = self.range(addr, data.len())?;
        self.map[range].copy_from_slice(data);
        Ok(())
    }

    /// Sets `len` bytes of RAM starting at `addr` to `byte` (the loaders use
    /// it to clear a kernel's BSS).
    pub fn fill(&mut self, addr: GuestPhysAddr, len: usize, byte: u8) -> Result<(), MemoryError> {
        let range = self.range(addr, len)?;
        self.map[range].fill(byte);
        Ok(())
    }

    /// All of RAM as bytes, index 0 being guest-physical address 0.
    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }

    /// All of RAM as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Writes dirty pages back to the backing file (a no-op for anonymous
    /// RAM), as a suspend must before it copies the VM folder.
    pub fn flush(&self) -> Result<(), MemoryError> {
        self.map.flush().map_err(MemoryError::Flush)
    }

    /// The byte range of the mapping for an access, or the error that says
    /// why it does not fit. Computed in `u64` so that no sum can overflow.
    fn range(
        &self,
        addr: GuestPhysAddr,
        len: usize,
    ) -> Result<std::ops::Range<usize>, MemoryError> {
        let start = u64::from(addr.0);
        let end = start.saturating_add(len as u64);
        if end > u64::from(self.size) {
            return Err(MemoryError::OutOfRange {
                addr,
                len,
                size: self.size,
            });
        }
        Ok(start as usize..end as usize)
    }
}

/// Checks a mapping length against the RAM limits and returns it as `u32`.
fn check_mapping_size(len: usize) -> Result<u32, MemoryError> {
    match u32::try_from(len) {
        Ok(size) if (MIN_RAM_SIZE..=MAX_RAM_SIZE).contains(&size) && size % PAGE_SIZE == 0 => {
            Ok(size)
        }
        _ => Err(MemoryError::BadMappingSize { len }),
    }
}

/// Parses a RAM size the way QEMU's `-m` option does: a plain number means
/// MiB; a suffix K, M or G (either case, optionally followed by B) scales by
/// KiB, MiB or GiB; a B suffix alone means bytes. The result is rounded up to
/// a whole 4 KiB page (QEMU also rounds silently) and must lie between
/// [`MIN_RAM_SIZE`] and [`MAX_RAM_SIZE`].
pub fn parse_ram_size(text: &str) -> Result<u32, MemoryError> {
    let syntax = || MemoryError::SizeSyntax {
        text: text.to_string(),
    };
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(syntax());
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 20,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "b" => 0,
        _ => return Err(syntax()),
    };
    // Digits beyond u64 are certainly out of range; report them as such.
    let out_of_range = |bytes| MemoryError::SizeRange {
        text: text.to_string(),
        bytes,
    };
    let number: u64 = digits.parse().map_err(|_| out_of_range(u64::MAX))?;
    let bytes = number
        .checked_shl(shift)
        .filter(|b| b >> shift == number)
        .ok_or_else(|| out_of_range(u64::MAX))?;
    let rounded = bytes.div_ceil(u64::from(PAGE_SIZE)) * u64::from(PAGE_SIZE);
    if rounded < u64::from(MIN_RAM_SIZE) || rounded > u64::from(MAX_RAM_SIZE) {
        return Err(out_of_range(bytes));
    }
    Ok(rounded as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ram_size_accepts_qemu_spellings() {
        let cases: &[(&str, u32)] = &[
            ("128", 128 << 20),
            ("128M", 128 << 20),
            ("128m", 128 << 20),
            ("128MB", 128 << 20),
            ("1G", 1 << 30),
            ("3g", 3 << 30),
            ("65536k", 64 << 20),
            ("2097152B", 2 << 20),
            // Rounded up to a whole page, as QEMU rounds silently.
            ("2097153b", (2 << 20) + 4096),
            (" 48M ", 48 << 20),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_ram_size(text).unwrap(), expected, "input {text:?}");
        }
    }

    #[test]
    fn parse_ram_size_rejects_bad_input() {
        let syntax = ["", "M", "12X", "1.5G", "-5", "0x100", "12 M", "1T"];
        for text in syntax {
            assert!(
                matches!(parse_ram_size(text), Err(MemoryError::SizeSyntax { .. })),
                "input {text:?}"
            );
        }
        let range = [
            "1",
            "0",
            "64k",
            "4G",
            "3073M",
            "99999999999999999999999",
            "18446744073709551615G",
        ];
        for text in range {
            assert!(
                matches!(parse_ram_size(text), Err(MemoryError::SizeRange { .. })),
                "input {text:?}"
            );
        }
    }

    #[test]
    fn max_ram_stays_below_the_monitor_area() {
        assert_eq!(parse_ram_size("3072M").unwrap(), MAX_RAM_SIZE);
    }

    #[test]
    fn anonymous_ram_reads_back_what_was_written() {
        let mut ram = Ram::anonymous(MIN_RAM_SIZE).unwrap();
        assert_eq!(ram.size(), MIN_RAM_SIZE);
        assert!(ram.file().is_none());
        ram.write(GuestPhysAddr(0x1000), b"bt86").unwrap();
        let mut buf = [0u8; 6];
        ram.read(GuestPhysAddr(0xFFF), &mut buf).unwrap();
        assert_eq!(&buf, b"\0bt86\0");
        assert_eq!(&ram.as_slice()[0x1000..0x1004], b"bt86");
        ram.as_mut_slice()[0x2000] = 7;
        ram.fill(GuestPhysAddr(0x1001), 2, 0xAA).unwrap();
        ram.read(GuestPhysAddr(0x1000), &mut buf[..4]).unwrap();
        assert_eq!(&buf[..4], &[b'b', 0xAA, 0xAA, b'6']);
        assert_eq!(ram.as_slice()[0x2000], 7);
    }

    #[test]
    fn accesses_past_the_end_fail_without_touching_ram() {
        let mut ram = Ram::anonymous(MIN_RAM_SIZE).unwrap();
        let end = MIN_RAM_SIZE;
        let cases: &[(u32, usize, bool)] = &[
            (end - 4, 4, true),
            (end - 4, 5, false),
            (end, 0, true),
            (end, 1, false),
            (u32::MAX, 1, false),
            (u32::MAX, usize::MAX, false),
            (0, MIN_RAM_SIZE as usize, true),
        ];
        for &(addr, len, ok) in cases {
            assert_eq!(
                ram.contains(GuestPhysAddr(addr), len),
                ok,
                "addr {addr:#x} len {len}"
            );
            assert_eq!(
                ram.fill(GuestPhysAddr(addr), len, 0x55).is_ok(),
                ok,
                "fill {addr:#x} len {len}"
            );
        }
        // A refused access must leave RAM exactly as it was.
        ram.fill(GuestPhysAddr(end - 4), 4, 0x11).unwrap();
        let mut big = vec![0xEEu8; 8];
        assert!(matches!(
            ram.read(GuestPhysAddr(end - 4), &mut big),
            Err(MemoryError::OutOfRange { len: 8, .. })
        ));
        assert_eq!(
            big,
            vec![0xEE; 8],
            "a refused read must not fill the buffer"
        );
        assert!(ram.write(GuestPhysAddr(end - 4), &big).is_err());
        assert!(ram.fill(GuestPhysAddr(end - 4), 5, 0xEE).is_err());
        let mut tail = [0u8; 4];
        ram.read(GuestPhysAddr(end - 4), &mut tail).unwrap();
        assert_eq!(tail, [0x11; 4]);
    }

    #[test]
    fn mappings_of_unsupported_sizes_are_refused() {
        for size in [0u32, 4096, MIN_RAM_SIZE + 1] {
            assert!(
                matches!(
                    Ram::anonymous(size),
                    Err(MemoryError::BadMappingSize { .. })
                ),
                "size {size:#x}"
            );
        }
    }
}
