//! An ATA hard disk on the PC's primary IDE channel, driven by programmed
//! I/O (PIO): the command block at ports 0x1F0-0x1F7, the control block
//! (alternate status and device control) at 0x3F6, and IRQ 14.
//!
//! This module owns the channel's registers, the master drive's command
//! state machine and its 512-byte identify block, and the [`BlockBackend`]
//! trait through which the drive reads and writes its image. It does not
//! know which ports or IRQ the machine wires it to (`Machine` decides), it
//! never touches guest RAM (PIO moves every byte through the data port), and
//! it does not open files on its own: the caller hands it a backend, so that
//! a snapshot or VM-folder layer can swap the storage without touching the
//! device.
//!
//! The register map, status and error bits and the command protocols follow
//! ATA/ATAPI-6 (T13 1410D): the register descriptions of section 7, the PIO
//! data-in, PIO data-out and non-data protocols of section 9, and the
//! command descriptions of section 8. Where the standard leaves a choice, or
//! where QEMU's IDE model (hw/ide/core.c) is the better reference because
//! the same guest binary must behave the same under both, bt86 does what
//! QEMU 7.2 does:
//! - Sector I/O is synchronous, so BSY is never seen set except while SRST
//!   is held. A data block is ready (DRQ) as soon as the command is written.
//! - READ SECTORS raises the interrupt once per DRQ block, when the block
//!   is ready, and not again after the last one; WRITE SECTORS raises it
//!   after each block has been written, the last one included; IDENTIFY
//!   raises it when the block is ready; non-data commands when they
//!   complete (ATA-6 sections 9.5, 9.6, 9.7).
//! - An address past the end of the image, a CHS address with sector 0, and
//!   an I/O error of the host file all end the command with ABRT in the
//!   error register and ERR in the status register, and an interrupt. (The
//!   standard would say IDNF for the range errors; QEMU says ABRT, and
//!   guests cannot tell the two situations apart any other way.)
//! - A drive starts with READ/WRITE MULTIPLE enabled for 16 sectors per
//!   block (identify word 59 = 0x0110), and every reset restores that.
//! - Writes to the command block registers are ignored while BSY or DRQ is
//!   set; commands are ignored while BSY or DRQ is set, and always when the
//!   absent slave is selected. The slave's status and error registers read
//!   0, so that a driver probing for it finds nothing.
//! - A reading of the data register with byte width returns 0xFF; data
//!   reads outside a data-in phase return 0 and writes outside a data-out
//!   phase are ignored.
//! - With no drive attached at all, every register reads 0.
//! - The geometry (identify words 1, 3, 6) is QEMU's guess from the image:
//!   the CHS of the first partition of a DOS partition table that ends on a
//!   cylinder boundary with at most 16 heads, and otherwise 16 heads, 63
//!   sectors per track and as many cylinders as fit (2 to 16383).
//!
//! Where bt86 follows the standard rather than QEMU:
//! - INTRQ is the device's pending interrupt gated by nIEN, so setting
//!   nIEN masks a pending interrupt and clearing it lets the interrupt
//!   through (ATA-6 section 5.2.9). QEMU forgets an interrupt raised while
//!   nIEN is set.
//! - A soft reset (SRST) keeps the drive busy while SRST is set and
//!   completes when the host clears it (ATA-6 section 9.2). QEMU completes
//!   it shortly after SRST is set, whenever its event loop runs. Both then
//!   run the diagnostic: DRDY, error 0x01, the ATA signature in the command
//!   block, device 0 selected, and an interrupt unless nIEN is set.
//! - One set of command block registers serves both drives. QEMU keeps a
//!   copy per drive, which differs only in what the absent slave's
//!   registers read after a command on the master.
//!
//! Not modelled: LBA48 (the 0x24/0x34 commands and the HOB bit end with
//! ABRT or are ignored), DMA, ATAPI, SMART, power management beyond CHECK
//! POWER MODE, and a second drive.
//!
//! Durability: writes reach the backend (the host page cache, for a file)
//! before the command that made them completes. FLUSH CACHE calls
//! [`BlockBackend::flush`] (fdatasync for a file) before it completes, and
//! so does every write while the guest has turned the write cache off with
//! SET FEATURES 0x82. A read-only backend makes WRITE SECTORS and WRITE
//! MULTIPLE end at once with ABRT, before any data phase. QEMU has no
//! behaviour to copy here: it refuses to attach a read-only image as an IDE
//! hard disk at all ("Can't use a read-only drive").

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use super::IrqLine;
use crate::IoSize;

// Where a PC wires the primary channel (the ISA compatibility ports of the
// PIIX IDE function, which QEMU's `pc` machine has too).

/// The first port of the primary channel's command block.
pub const PRIMARY_BASE: u16 = 0x1F0;
/// The last port of the primary channel's command block.
pub const PRIMARY_LAST: u16 = 0x1F7;
/// The primary channel's control block: alternate status (read) and device
/// control (write).
pub const PRIMARY_CONTROL: u16 = 0x3F6;
/// The IRQ line of the primary channel, on the slave 8259A.
pub const PRIMARY_IRQ: u8 = 14;

// Command block register offsets from the base (ATA-6 section 7, table 14).

/// Data register: 16-bit (or 32-bit) PIO transfers.
pub const REG_DATA: u8 = 0;
/// Error register (read).
pub const REG_ERROR: u8 = 1;
/// Features register (write).
pub const REG_FEATURES: u8 = 1;
/// Sector count register.
pub const REG_SECTOR_COUNT: u8 = 2;
/// LBA low (bits 7:0), or the sector number in CHS addressing.
pub const REG_LBA_LOW: u8 = 3;
/// LBA mid (bits 15:8), or the cylinder's low byte.
pub const REG_LBA_MID: u8 = 4;
/// LBA high (bits 23:16), or the cylinder's high byte.
pub const REG_LBA_HIGH: u8 = 5;
/// Device register (drive/head): LBA bits 27:24 or the head, the drive
/// select bit and the LBA bit.
pub const REG_DEVICE: u8 = 6;
/// Status register (read; reading it clears the pending interrupt).
pub const REG_STATUS: u8 = 7;
/// Command register (write).
pub const REG_COMMAND: u8 = 7;

// Status register bits (ATA-6 section 7.15).

/// The device is busy; no other bit is valid.
pub const STATUS_BSY: u8 = 0x80;
/// The device is ready to accept commands.
pub const STATUS_DRDY: u8 = 0x40;
/// Device fault.
pub const STATUS_DF: u8 = 0x20;
/// Device seek complete (obsolete in ATA-6, still set by QEMU and by real
/// drives after a command that involves the media).
pub const STATUS_DSC: u8 = 0x10;
/// The device is ready to transfer a word of data.
pub const STATUS_DRQ: u8 = 0x08;
/// The previous command ended in an error; see the error register.
pub const STATUS_ERR: u8 = 0x01;

// Error register bits (ATA-6 section 7.9).

/// Uncorrectable data error.
pub const ERROR_UNC: u8 = 0x40;
/// ID not found: the address was out of range.
pub const ERROR_IDNF: u8 = 0x10;
/// Command aborted: unsupported, invalid parameters, or it could not be
/// executed.
pub const ERROR_ABRT: u8 = 0x04;
/// The error register's value after a reset or EXECUTE DEVICE DIAGNOSTIC:
/// device 0 passed, device 1 absent (ATA-6 section 8.11, table 13).
pub const DIAGNOSTIC_PASSED: u8 = 0x01;

// Device register bits (ATA-6 section 7.10).

/// Addresses are LBA rather than CHS.
pub const DEVICE_LBA: u8 = 0x40;
/// Selects device 1 (the slave).
pub const DEVICE_DEV: u8 = 0x10;
/// Bits 7 and 5, obsolete and set by convention (and by QEMU on every
/// write).
pub const DEVICE_OBSOLETE: u8 = 0xA0;

// Device control register bits (ATA-6 section 7.8).

/// Read back the high-order bytes of LBA48 registers (not modelled).
pub const CONTROL_HOB: u8 = 0x80;
/// Software reset of both devices.
pub const CONTROL_SRST: u8 = 0x04;
/// Interrupts disabled (INTRQ released) while set.
pub const CONTROL_NIEN: u8 = 0x02;

// Commands (ATA-6 section 8; the codes are table B.2).

pub const CMD_RECALIBRATE: u8 = 0x10;
pub const CMD_READ_SECTORS: u8 = 0x20;
pub const CMD_READ_SECTORS_NO_RETRY: u8 = 0x21;
pub const CMD_WRITE_SECTORS: u8 = 0x30;
pub const CMD_WRITE_SECTORS_NO_RETRY: u8 = 0x31;
pub const CMD_READ_VERIFY_SECTORS: u8 = 0x40;
pub const CMD_READ_VERIFY_SECTORS_NO_RETRY: u8 = 0x41;
pub const CMD_SEEK: u8 = 0x70;
pub const CMD_EXECUTE_DEVICE_DIAGNOSTIC: u8 = 0x90;
pub const CMD_INITIALIZE_DEVICE_PARAMETERS: u8 = 0x91;
pub const CMD_READ_MULTIPLE: u8 = 0xC4;
pub const CMD_WRITE_MULTIPLE: u8 = 0xC5;
pub const CMD_SET_MULTIPLE_MODE: u8 = 0xC6;
pub const CMD_CHECK_POWER_MODE: u8 = 0xE5;
pub const CMD_FLUSH_CACHE: u8 = 0xE7;
pub const CMD_IDENTIFY_DEVICE: u8 = 0xEC;
pub const CMD_SET_FEATURES: u8 = 0xEF;

/// SET FEATURES subcommand: enable the write cache.
pub const FEATURE_WRITE_CACHE_ON: u8 = 0x02;
/// SET FEATURES subcommand: disable the write cache (flushes it first).
pub const FEATURE_WRITE_CACHE_OFF: u8 = 0x82;
/// SET FEATURES subcommand: set the transfer mode from the sector count.
pub const FEATURE_SET_TRANSFER_MODE: u8 = 0x03;

/// Bytes in one sector.
pub const SECTOR_SIZE: usize = 512;
/// The largest READ/WRITE MULTIPLE block, in sectors (identify word 47).
pub const MAX_MULTIPLE: u8 = 16;
/// The largest sector count an LBA28 command can reach: sectors past this
/// exist in the image but no LBA28 address names them (ATA-6 section
/// 8.15.39, identify words 60-61).
pub const LBA28_MAX_SECTORS: u64 = 0x0FFF_FFFF;

/// The model string of identify words 27-46.
pub const MODEL: &str = "bt86 ATA disk";
/// The serial number of identify words 10-19. A VM has one disk, so a fixed
/// serial is unique where it matters.
pub const SERIAL: &str = "BT86-0001";

// ---------------------------------------------------------------------------
// Storage.

/// Where a drive keeps its sectors: an image file, or anything else that
/// can read and write bytes at an offset.
///
/// The drive only ever accesses whole sectors at multiples of 512. Reads
/// and writes are synchronous: when `write_at` returns, the data must be
/// visible to a later `read_at`, and it must survive the death of this
/// process (for a file: it is in the host's page cache). `flush` must make
/// every earlier write survive the death of the host (fdatasync).
pub trait BlockBackend: Send {
    /// The size of the image in bytes.
    fn len(&self) -> u64;

    /// Whether the image holds no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from the bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Stores `data` at `offset`.
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;

    /// Whether writes are refused. The drive then aborts write commands
    /// without calling `write_at`.
    fn is_read_only(&self) -> bool {
        false
    }

    /// A name for the image in messages, such as its path.
    fn describe(&self) -> String;

    /// A handle another thread can use to flush this backend while the
    /// drive is in use (on SIGINT, say), if the backend has one.
    fn flush_handle(&self) -> Option<FlushHandle> {
        None
    }
}

/// A handle that flushes a file-backed disk from any thread.
///
/// Writes go to the file as the guest issues them, so flushing the file
/// itself (not any buffer of the drive's) makes them durable. The handle
/// shares the open file, so it stays valid as long as anyone holds it.
#[derive(Clone, Debug)]
pub struct FlushHandle {
    file: Arc<File>,
}

impl FlushHandle {
    /// fdatasync(2) on the image: every write the guest saw complete is on
    /// the host's storage when this returns.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A disk image in a host file, accessed with positioned reads and writes
/// (pread/pwrite) so that no file offset is shared between threads.
#[derive(Debug)]
pub struct FileBackend {
    file: Arc<File>,
    path: String,
    len: u64,
    read_only: bool,
}

impl FileBackend {
    /// Opens the image at `path`, for reading only when `read_only`. The
    /// image must exist and be a non-empty whole number of 512-byte
    /// sectors; bt86 never creates or resizes a disk.
    pub fn open(path: &Path, read_only: bool) -> Result<FileBackend, DiskError> {
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: name.clone(),
                read_only,
                source,
            })?;
        let meta = file.metadata().map_err(|source| DiskError::Open {
            path: name.clone(),
            read_only,
            source,
        })?;
        if !meta.is_file() {
            return Err(DiskError::NotAFile { path: name });
        }
        check_size(&name, meta.len())?;
        Ok(FileBackend {
            file: Arc::new(file),
            path: name,
            len: meta.len(),
            read_only,
        })
    }
}

impl BlockBackend for FileBackend {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn describe(&self) -> String {
        self.path.clone()
    }

    fn flush_handle(&self) -> Option<FlushHandle> {
        Some(FlushHandle {
            file: Arc::clone(&self.file),
        })
    }
}

/// A disk image that cannot be used, or a disk operation of the host that
/// failed outside any guest command.
#[derive(Debug, Error)]
pub enum DiskError {
    #[error("cannot open the disk image {path}{}: {source}; check that the file exists and is {}", if *read_only { " (read-only)" } else { "" }, if *read_only { "readable" } else { "readable and writable, or add ,readonly" })]
    Open {
        path: String,
        read_only: bool,
        source: io::Error,
    },
    #[error("the disk image {path} is not a regular file; give the path of a raw disk image")]
    NotAFile { path: String },
    #[error(
        "the disk image {path} is empty; create one with, for example, `truncate -s 16M {path}`"
    )]
    Empty { path: String },
    #[error("the disk image {path} is {len} bytes, which is not a whole number of 512-byte sectors; resize it to a multiple of 512 (for example `truncate -s {rounded} {path}`)")]
    NotWholeSectors {
        path: String,
        len: u64,
        rounded: u64,
    },
    #[error("cannot read the partition table of the disk image {path}: {source}")]
    ReadMbr { path: String, source: io::Error },
    #[error("cannot flush the disk image {path} to the host's storage: {source}; the guest's last writes may not be durable")]
    Flush { path: String, source: io::Error },
}

/// Checks that an image of `len` bytes can be a disk.
fn check_size(path: &str, len: u64) -> Result<(), DiskError> {
    if len == 0 {
        return Err(DiskError::Empty {
            path: path.to_string(),
        });
    }
    if len % SECTOR_SIZE as u64 != 0 {
        return Err(DiskError::NotWholeSectors {
            path: path.to_string(),
            len,
            rounded: len.div_ceil(SECTOR_SIZE as u64) * SECTOR_SIZE as u64,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The drive.

/// A drive's cylinder/head/sector geometry (identify words 1, 3 and 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders, 1 to 16383.
    pub cylinders: u16,
    /// Heads, 1 to 16: the device register has four head bits.
    pub heads: u8,
    /// Sectors per track, 1 to 63.
    pub sectors: u8,
}

impl Geometry {
    /// The geometry QEMU gives a disk of `total_sectors` whose first sector
    /// is `mbr` (hw/block/hd-geometry.c): if the sector holds a DOS
    /// partition table whose first usable entry ends on a cylinder boundary
    /// with at most 16 heads, that entry's heads and sectors per track;
    /// otherwise 16 heads and 63 sectors per track. Cylinders are as many
    /// as fit, from 2 to 16383 for the standard geometry.
    pub fn guess(total_sectors: u64, mbr: &[u8; SECTOR_SIZE]) -> Geometry {
        match Self::partition_table_chs(total_sectors, mbr) {
            // A logical geometry with more than 16 heads means that a BIOS
            // translated it; the physical geometry is then the standard one.
            Some((cylinders, heads, sectors)) if heads <= 16 => Geometry {
                cylinders: cylinders as u16,
                heads: heads as u8,
                sectors,
            },
            _ => Geometry {
                cylinders: (total_sectors / (16 * 63)).clamp(2, 16383) as u16,
                heads: 16,
                sectors: 63,
            },
        }
    }

    /// The logical geometry a BIOS used to lay out a DOS partition table,
    /// as QEMU reads it, as (cylinders, heads, sectors per track): the
    /// first entry with sectors and a non-zero end head names the heads
    /// (end head + 1) and the sectors per track (end sector), assuming the
    /// partition ends on a cylinder boundary; the cylinders follow from
    /// the disk's size and must be 1 to 16383. None without the 0x55 0xAA
    /// signature or a usable entry.
    fn partition_table_chs(total_sectors: u64, mbr: &[u8; SECTOR_SIZE]) -> Option<(u64, u64, u8)> {
        if mbr[510] != 0x55 || mbr[511] != 0xAA {
            return None;
        }
        // Four 16-byte entries from offset 0x1BE: end head at byte 5, end
        // sector in bits 5:0 of byte 6, the sector count at bytes 12-15.
        mbr[0x1BE..0x1FE].chunks_exact(16).find_map(|entry| {
            let end_head = entry[5];
            let sectors = entry[6] & 63;
            let nr_sects = u32::from_le_bytes([entry[12], entry[13], entry[14], entry[15]]);
            if nr_sects == 0 || end_head == 0 || sectors == 0 {
                return None;
            }
            let heads = u64::from(end_head) + 1;
            let cylinders = total_sectors / (heads * u64::from(sectors));
            (1..=16383)
                .contains(&cylinders)
                .then_some((cylinders, heads, sectors))
        })
    }

    /// Sectors the geometry addresses (identify words 57-58).
    pub fn capacity(&self) -> u32 {
        u32::from(self.cylinders) * u32::from(self.heads) * u32::from(self.sectors)
    }
}

/// A hard disk: an image and what the drive derives from it once.
pub struct AtaDrive {
    backend: Box<dyn BlockBackend>,
    /// Whole sectors in the image.
    total_sectors: u64,
    geometry: Geometry,
    read_only: bool,
}

impl AtaDrive {
    /// A drive over `backend`. Reads the first sector to guess the
    /// geometry as QEMU does.
    pub fn new(backend: Box<dyn BlockBackend>) -> Result<AtaDrive, DiskError> {
        let name = backend.describe();
        check_size(&name, backend.len())?;
        let mut mbr = [0u8; SECTOR_SIZE];
        backend
            .read_at(&mut mbr, 0)
            .map_err(|source| DiskError::ReadMbr { path: name, source })?;
        let total_sectors = backend.len() / SECTOR_SIZE as u64;
        if total_sectors > LBA28_MAX_SECTORS {
            log::warn!(
                "the disk image {} has {total_sectors} sectors; LBA28 commands reach only the first {LBA28_MAX_SECTORS}",
                backend.describe()
            );
        }
        Ok(AtaDrive {
            read_only: backend.is_read_only(),
            geometry: Geometry::guess(total_sectors, &mbr),
            total_sectors,
            backend,
        })
    }

    /// Opens the image file at `path` (read-only when `read_only`) as a
    /// drive.
    pub fn open(path: &Path, read_only: bool) -> Result<AtaDrive, DiskError> {
        AtaDrive::new(Box::new(FileBackend::open(path, read_only)?))
    }

    /// Whole sectors in the image.
    pub fn total_sectors(&self) -> u64 {
        self.total_sectors
    }

    /// The CHS geometry the drive reports.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Whether write commands are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The image's name for messages.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// A handle to flush the image from another thread, if the backend
    /// has one.
    pub fn flush_handle(&self) -> Option<FlushHandle> {
        self.backend.flush_handle()
    }

    /// Makes every completed write durable.
    pub fn flush(&mut self) -> Result<(), DiskError> {
        self.backend.flush().map_err(|source| DiskError::Flush {
            path: self.backend.describe(),
            source,
        })
    }

    /// The 256-word IDENTIFY DEVICE block (ATA-6 section 8.15, table 20)
    /// with the drive's current settings.
    pub fn identify_block(&self, mult_sectors: u8, write_cache: bool) -> [u16; 256] {
        let mut w = [0u16; 256];
        let g = self.geometry;
        // Word 0: a non-removable ATA device.
        w[0] = 0x0040;
        w[1] = g.cylinders;
        w[3] = u16::from(g.heads);
        w[6] = u16::from(g.sectors);
        ata_string(&mut w[10..20], SERIAL);
        ata_string(&mut w[23..27], env!("CARGO_PKG_VERSION"));
        ata_string(&mut w[27..47], MODEL);
        // Word 47: READ/WRITE MULTIPLE supported, up to 16 sectors a block
        // (bits 15:8 are 0x80 by definition).
        w[47] = 0x8000 | u16::from(MAX_MULTIPLE);
        // Word 48: 32-bit data port accesses work (QEMU's reserved bit,
        // kept because guests written for QEMU test it).
        w[48] = 1;
        // Word 49: LBA supported (bit 9); IORDY supported (bit 11).
        w[49] = (1 << 11) | (1 << 9);
        // Word 53: words 54-58 and 64-70 are valid.
        w[53] = 0b011;
        w[54] = g.cylinders;
        w[55] = u16::from(g.heads);
        w[56] = u16::from(g.sectors);
        let chs = g.capacity();
        w[57] = chs as u16;
        w[58] = (chs >> 16) as u16;
        // Word 59: the current multiple setting is valid (bit 8) when one
        // is set.
        if mult_sectors != 0 {
            w[59] = 0x0100 | u16::from(mult_sectors);
        }
        let lba = self.total_sectors.min(LBA28_MAX_SECTORS) as u32;
        w[60] = lba as u16;
        w[61] = (lba >> 16) as u16;
        // Word 64: PIO modes 3 and 4; words 65-68: cycle times in ns.
        w[64] = 0x0003;
        w[65..=68].fill(120);
        // Word 80: ATA-4, ATA-5 and ATA-6 supported.
        w[80] = 0x0070;
        // Words 82-87: command sets. Bit 14 of words 83, 84 and 87 must be
        // one and bit 15 zero for them to be valid. Write cache (82/85 bit
        // 5) and FLUSH CACHE (83/86 bit 12).
        w[82] = 1 << 5;
        w[83] = (1 << 14) | (1 << 12);
        w[84] = 1 << 14;
        w[85] = if write_cache { 1 << 5 } else { 0 };
        w[86] = 1 << 12;
        w[87] = 1 << 14;
        // Word 255: the integrity word. The low byte is the signature
        // 0xA5 and the high byte makes all 512 bytes sum to 0 modulo 256
        // (ATA-6 section 8.15.61).
        w[255] = 0x00A5;
        let sum = w
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .fold(0u8, u8::wrapping_add);
        w[255] |= u16::from(0u8.wrapping_sub(sum)) << 8;
        w
    }
}

impl std::fmt::Debug for AtaDrive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtaDrive")
            .field("image", &self.backend.describe())
            .field("total_sectors", &self.total_sectors)
            .field("geometry", &self.geometry)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Stores `text` in identify words the ATA way: two characters a word, the
/// first in the high byte, padded with spaces (ATA-6 section 8.15.2).
fn ata_string(words: &mut [u16], text: &str) {
    let mut bytes = text.bytes().chain(std::iter::repeat(b' '));
    for w in words {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *w = u16::from_be_bytes([hi, lo]);
    }
}

// ---------------------------------------------------------------------------
// The channel.

/// What the data register is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transfer {
    /// No data phase: data reads return 0 and writes are ignored.
    #[default]
    None,
    /// The guest reads the IDENTIFY block.
    Identify,
    /// The guest reads a block of sectors; more may follow.
    Read,
    /// The guest writes a block of sectors; the drive stores it when the
    /// block is full.
    Write,
}

/// The complete guest-visible state of the channel, as plain data for
/// snapshots. The image's contents are not included: the image is its own
/// file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtaState {
    /// Features register (the last value written).
    pub features: u8,
    /// Sectors left in the current command; 256 stands for a count of 0
    /// written before an LBA28 command. Reads return the low byte.
    pub sector_count: u16,
    pub lba_low: u8,
    pub lba_mid: u8,
    pub lba_high: u8,
    /// Device register, with the obsolete bits 7 and 5 set.
    pub device: u8,
    /// The master's status register.
    pub status: u8,
    /// The master's error register.
    pub error: u8,
    /// Device control register (nIEN, SRST), as last written.
    pub device_control: u8,
    /// The device has an interrupt pending (INTRQ is this and not nIEN).
    pub irq_pending: bool,
    /// READ/WRITE MULTIPLE block size in sectors; 0 when disabled.
    pub mult_sectors: u8,
    /// The write cache is enabled (SET FEATURES 0x02/0x82).
    pub write_cache: bool,
    /// Sectors per DRQ block of the current command (1 or `mult_sectors`).
    pub block_sectors: u8,
    /// The data phase in progress.
    pub transfer: Transfer,
    /// The data phase's bytes; its length is the block's size.
    pub buffer: Vec<u8>,
    /// How many bytes of `buffer` the guest has moved so far.
    pub position: usize,
}

impl Default for AtaState {
    /// The state after power-on or a hardware reset, with QEMU's values:
    /// the drive ready, the diagnostic code in the error register and the
    /// ATA signature in the command block.
    fn default() -> Self {
        AtaState {
            features: 0,
            sector_count: 1,
            lba_low: 1,
            lba_mid: 0,
            lba_high: 0,
            device: DEVICE_OBSOLETE,
            status: STATUS_DRDY | STATUS_DSC,
            error: DIAGNOSTIC_PASSED,
            device_control: 0,
            irq_pending: false,
            mult_sectors: MAX_MULTIPLE,
            write_cache: true,
            block_sectors: 1,
            transfer: Transfer::None,
            buffer: Vec::new(),
            position: 0,
        }
    }
}

impl AtaState {
    /// Checks that a channel could be in this state, so that a caller
    /// restoring several devices can refuse a bad snapshot before changing
    /// any of them.
    pub fn check(&self) -> Result<(), AtaStateError> {
        let max = usize::from(MAX_MULTIPLE) * SECTOR_SIZE;
        if self.buffer.len() > max || self.position > self.buffer.len() {
            return Err(AtaStateError::BadBuffer {
                len: self.buffer.len(),
                position: self.position,
                max,
            });
        }
        if !valid_multiple(self.mult_sectors) {
            return Err(AtaStateError::BadMultiple(self.mult_sectors));
        }
        Ok(())
    }
}

/// A snapshot that no channel could be in.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AtaStateError {
    #[error("ATA snapshot has a {len}-byte transfer buffer at position {position}, but a data phase moves at most {max} bytes and the position must lie inside it; the snapshot is corrupt, take it again")]
    BadBuffer {
        len: usize,
        position: usize,
        max: usize,
    },
    #[error("ATA snapshot has a multiple-sector setting of {0}, but the drive allows 0 or a power of two up to 16; the snapshot is corrupt, take it again")]
    BadMultiple(u8),
}

/// The primary IDE channel with an optional master drive, driving the
/// interrupt line `I`.
pub struct Ata<I: IrqLine> {
    state: AtaState,
    drive: Option<AtaDrive>,
    irq: I,
}

impl<I: IrqLine> Ata<I> {
    /// A channel with no drive, in its reset state.
    pub fn new(irq: I) -> Self {
        let mut ata = Ata {
            state: AtaState::default(),
            drive: None,
            irq,
        };
        ata.update_irq();
        ata
    }

    /// Connects `drive` as the master, replacing any drive there, and
    /// resets the channel as power-on would.
    pub fn attach(&mut self, drive: AtaDrive) {
        self.drive = Some(drive);
        self.state = AtaState::default();
        self.update_irq();
    }

    /// The master drive, if one is attached.
    pub fn drive(&self) -> Option<&AtaDrive> {
        self.drive.as_ref()
    }

    /// The master drive, mutably.
    pub fn drive_mut(&mut self) -> Option<&mut AtaDrive> {
        self.drive.as_mut()
    }

    /// Makes every completed guest write durable (nothing to do without a
    /// drive).
    pub fn flush(&mut self) -> Result<(), DiskError> {
        match &mut self.drive {
            Some(drive) => drive.flush(),
            None => Ok(()),
        }
    }

    /// The interrupt line.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The interrupt line, mutably.
    pub fn irq_mut(&mut self) -> &mut I {
        &mut self.irq
    }

    /// The channel's complete state.
    pub fn state(&self) -> AtaState {
        self.state.clone()
    }

    /// Puts the registers and the data phase back as `state` has them,
    /// keeping the drive and the interrupt line. On error nothing changes.
    pub fn restore(&mut self, state: &AtaState) -> Result<(), AtaStateError> {
        state.check()?;
        self.state = state.clone();
        self.update_irq();
        Ok(())
    }

    /// Whether the guest addresses the (absent) slave.
    fn slave_selected(&self) -> bool {
        self.state.device & DEVICE_DEV != 0
    }

    /// The status the selected device shows: the master's, or 0 for an
    /// absent device, as QEMU reads it.
    fn selected_status(&self) -> u8 {
        if self.drive.is_none() || self.slave_selected() {
            0
        } else {
            self.state.status
        }
    }

    /// A byte read of command block register `offset` (0-7).
    pub fn read(&mut self, offset: u8) -> u8 {
        let s = &self.state;
        if offset == REG_DATA {
            // Data moves only at 16 or 32 bits; QEMU answers a byte read
            // with all-ones.
            return 0xFF;
        }
        if self.drive.is_none() {
            return 0;
        }
        match offset {
            REG_ERROR => {
                if self.slave_selected() {
                    0
                } else {
                    s.error
                }
            }
            REG_SECTOR_COUNT => s.sector_count as u8,
            REG_LBA_LOW => s.lba_low,
            REG_LBA_MID => s.lba_mid,
            REG_LBA_HIGH => s.lba_high,
            REG_DEVICE => s.device,
            _ => {
                // Reading the status register acknowledges the interrupt
                // (ATA-6 section 7.15); the alternate status does not.
                let status = self.selected_status();
                self.state.irq_pending = false;
                self.update_irq();
                status
            }
        }
    }

    /// A byte write of command block register `offset` (0-7).
    pub fn write(&mut self, offset: u8, value: u8) {
        if offset == REG_COMMAND {
            // Writing a command acknowledges a pending interrupt.
            self.state.irq_pending = false;
            self.update_irq();
            self.command(value);
            return;
        }
        // The command block is the device's while it is busy or
        // transferring data; QEMU drops such writes.
        if self.selected_status() & (STATUS_BSY | STATUS_DRQ) != 0 {
            return;
        }
        let s = &mut self.state;
        match offset {
            REG_FEATURES => s.features = value,
            REG_SECTOR_COUNT => s.sector_count = u16::from(value),
            REG_LBA_LOW => s.lba_low = value,
            REG_LBA_MID => s.lba_mid = value,
            REG_LBA_HIGH => s.lba_high = value,
            REG_DEVICE => s.device = value | DEVICE_OBSOLETE,
            // A byte write of the data register moves nothing.
            _ => {}
        }
    }

    /// The alternate status register: the status without acknowledging
    /// the interrupt.
    pub fn read_alt_status(&self) -> u8 {
        self.selected_status()
    }

    /// A write of the device control register.
    pub fn write_device_control(&mut self, value: u8) {
        let was_reset = self.state.device_control & CONTROL_SRST != 0;
        let reset = value & CONTROL_SRST != 0;
        self.state.device_control = value;
        if reset && !was_reset {
            // SRST asserted: the device stops whatever it was doing and is
            // busy until the host releases SRST (ATA-6 section 9.2).
            self.state.transfer = Transfer::None;
            self.state.buffer.clear();
            self.state.position = 0;
            self.state.status = STATUS_BSY | STATUS_DSC;
        } else if was_reset && !reset {
            self.soft_reset();
        }
        self.update_irq();
    }

    /// A 16- or 32-bit read of the data register (a byte read goes through
    /// [`Ata::read`]).
    pub fn read_data(&mut self, size: IoSize) -> u32 {
        let n = size.bytes() as usize;
        if self.drive.is_none()
            || self.slave_selected()
            || self.state.status & STATUS_DRQ == 0
            || !matches!(self.state.transfer, Transfer::Identify | Transfer::Read)
        {
            return 0;
        }
        let s = &mut self.state;
        let Some(bytes) = s.buffer.get(s.position..s.position + n) else {
            // A dword read of the last word: QEMU returns 0 and moves on
            // nothing.
            return 0;
        };
        let value = bytes
            .iter()
            .rev()
            .fold(0u32, |v, &b| (v << 8) | u32::from(b));
        s.position += n;
        if s.position == s.buffer.len() {
            self.end_of_block();
        }
        value
    }

    /// A 16- or 32-bit write of the data register.
    pub fn write_data(&mut self, size: IoSize, value: u32) {
        let n = size.bytes() as usize;
        if self.drive.is_none()
            || self.slave_selected()
            || self.state.status & STATUS_DRQ == 0
            || self.state.transfer != Transfer::Write
        {
            return;
        }
        let s = &mut self.state;
        let Some(bytes) = s.buffer.get_mut(s.position..s.position + n) else {
            return;
        };
        bytes.copy_from_slice(&value.to_le_bytes()[..n]);
        s.position += n;
        if s.position == s.buffer.len() {
            self.end_of_block();
        }
    }

    /// The guest has moved the last byte of a data block.
    fn end_of_block(&mut self) {
        self.state.status &= !STATUS_DRQ;
        match self.state.transfer {
            Transfer::Read => self.read_block(),
            Transfer::Write => self.write_block(),
            Transfer::Identify | Transfer::None => self.stop_transfer(),
        }
    }

    /// Ends the data phase: DRQ falls and the data register goes quiet.
    fn stop_transfer(&mut self) {
        self.state.transfer = Transfer::None;
        self.state.buffer.clear();
        self.state.position = 0;
        self.state.status &= !STATUS_DRQ;
    }

    /// Starts a data phase of `buffer` (DRQ rises).
    fn start_transfer(&mut self, transfer: Transfer, buffer: Vec<u8>) {
        self.state.transfer = transfer;
        self.state.buffer = buffer;
        self.state.position = 0;
        if self.state.status & STATUS_ERR == 0 {
            self.state.status |= STATUS_DRQ;
        }
    }

    /// The device has an interrupt for the host.
    fn raise_irq(&mut self) {
        self.state.irq_pending = true;
        self.update_irq();
    }

    /// INTRQ is the pending interrupt unless nIEN masks it.
    fn update_irq(&mut self) {
        let level = self.state.irq_pending && self.state.device_control & CONTROL_NIEN == 0;
        self.irq.set(level);
    }

    /// Ends the current command with ABRT (ATA-6 section 7.9) and
    /// interrupts the host.
    fn abort(&mut self) {
        self.stop_transfer();
        self.state.status = STATUS_DRDY | STATUS_ERR;
        self.state.error = ERROR_ABRT;
        self.raise_irq();
    }

    /// The completion of SRST, and of EXECUTE DEVICE DIAGNOSTIC: registers
    /// back to their reset values with the ATA signature, the multiple
    /// setting back to 16, device 0 selected, and the diagnostic result.
    /// The interrupt follows QEMU, which runs the diagnostic command.
    fn soft_reset(&mut self) {
        let keep = AtaState {
            device_control: self.state.device_control,
            write_cache: self.state.write_cache,
            ..AtaState::default()
        };
        self.state = keep;
        if self.drive.is_some() {
            self.raise_irq();
        }
    }

    /// The sector the command block addresses, or None for a CHS address
    /// with sector 0 (which names no sector).
    fn current_sector(&self, geometry: Geometry) -> Option<u64> {
        let s = &self.state;
        if s.device & DEVICE_LBA != 0 {
            Some(
                u64::from(s.device & 0x0F) << 24
                    | u64::from(s.lba_high) << 16
                    | u64::from(s.lba_mid) << 8
                    | u64::from(s.lba_low),
            )
        } else {
            // ATA-6 section 6.2.1: LBA = (cylinder * heads + head) *
            // sectors per track + sector - 1.
            let cylinder = u64::from(s.lba_high) << 8 | u64::from(s.lba_mid);
            let head = u64::from(s.device & 0x0F);
            let heads = u64::from(geometry.heads);
            let spt = u64::from(geometry.sectors);
            (u64::from(s.lba_low))
                .checked_sub(1)
                .map(|sector| (cylinder * heads + head) * spt + sector)
        }
    }

    /// Writes `sector` back into the command block in the addressing mode
    /// the command used, as QEMU does after each block.
    fn set_sector(&mut self, sector: u64, geometry: Geometry) {
        let s = &mut self.state;
        if s.device & DEVICE_LBA != 0 {
            s.device = (s.device & 0xF0) | ((sector >> 24) as u8 & 0x0F);
            s.lba_high = (sector >> 16) as u8;
            s.lba_mid = (sector >> 8) as u8;
            s.lba_low = sector as u8;
        } else {
            let per_cylinder = u64::from(geometry.heads) * u64::from(geometry.sectors);
            let cylinder = sector / per_cylinder;
            let rest = sector % per_cylinder;
            s.lba_high = (cylinder >> 8) as u8;
            s.lba_mid = cylinder as u8;
            s.device = (s.device & 0xF0) | ((rest / u64::from(geometry.sectors)) as u8 & 0x0F);
            s.lba_low = (rest % u64::from(geometry.sectors)) as u8 + 1;
        }
    }

    /// The first sector and the sector count of the next block, if the
    /// whole block lies inside the image.
    fn next_block(&self) -> Option<(u64, u64)> {
        let drive = self.drive.as_ref()?;
        let first = self.current_sector(drive.geometry)?;
        let count = u64::from(
            self.state
                .sector_count
                .min(u16::from(self.state.block_sectors)),
        );
        let end = first.checked_add(count)?;
        (end <= drive.total_sectors).then_some((first, count))
    }

    /// Loads the next block of a READ command and hands it to the guest,
    /// or ends the command when no sectors are left.
    fn read_block(&mut self) {
        self.state.status = STATUS_DRDY | STATUS_DSC;
        // Not required by ATA, but QEMU clears it because Windows wants it.
        self.state.error = 0;
        if self.state.sector_count == 0 {
            self.stop_transfer();
            return;
        }
        let Some((first, count)) = self.next_block() else {
            self.abort();
            return;
        };
        let Some(drive) = self.drive.as_mut() else {
            return;
        };
        let mut buffer = vec![0u8; count as usize * SECTOR_SIZE];
        if let Err(e) = drive
            .backend
            .read_at(&mut buffer, first * SECTOR_SIZE as u64)
        {
            log::error!(
                "disk image {}: reading sectors {first}..{} failed: {e}; the guest sees its command aborted",
                drive.backend.describe(),
                first + count
            );
            self.abort();
            return;
        }
        let geometry = drive.geometry;
        self.set_sector(first + count, geometry);
        self.state.sector_count -= count as u16;
        self.start_transfer(Transfer::Read, buffer);
        self.raise_irq();
    }

    /// Starts the data-out phase for the next block of a WRITE command.
    fn start_write_block(&mut self) {
        let count = self
            .state
            .sector_count
            .min(u16::from(self.state.block_sectors));
        self.start_transfer(Transfer::Write, vec![0u8; usize::from(count) * SECTOR_SIZE]);
    }

    /// Stores the block the guest has written, then asks for the next one
    /// or ends the command; the interrupt follows either way.
    fn write_block(&mut self) {
        self.state.status = STATUS_DRDY | STATUS_DSC;
        let Some((first, count)) = self.next_block() else {
            self.abort();
            return;
        };
        let buffer = std::mem::take(&mut self.state.buffer);
        let write_cache = self.state.write_cache;
        let Some(drive) = self.drive.as_mut() else {
            return;
        };
        let data = &buffer[..count as usize * SECTOR_SIZE];
        let result = drive
            .backend
            .write_at(data, first * SECTOR_SIZE as u64)
            .and_then(|()| {
                // With the write cache off, a write is complete only when
                // it is on the media (ATA-6 section 8.37.4, subcommand
                // 82h).
                if write_cache {
                    Ok(())
                } else {
                    drive.backend.flush()
                }
            });
        if let Err(e) = result {
            log::error!(
                "disk image {}: writing sectors {first}..{} failed: {e}; the guest sees its command aborted",
                drive.backend.describe(),
                first + count
            );
            self.abort();
            return;
        }
        let geometry = drive.geometry;
        self.set_sector(first + count, geometry);
        self.state.sector_count -= count as u16;
        if self.state.sector_count == 0 {
            self.stop_transfer();
        } else {
            self.start_write_block();
        }
        self.raise_irq();
    }

    /// Flushes the image for FLUSH CACHE or a write-cache disable, then
    /// completes the command.
    fn flush_command(&mut self) {
        let result = self.flush();
        match result {
            Ok(()) => self.complete(true),
            Err(e) => {
                log::error!("{e}; the guest sees FLUSH CACHE aborted");
                self.abort();
            }
        }
    }

    /// Completes a non-data command successfully: DRDY (and DSC when the
    /// command involves the media, as QEMU sets it) and an interrupt.
    fn complete(&mut self, dsc: bool) {
        self.state.status = STATUS_DRDY | if dsc { STATUS_DSC } else { 0 };
        self.raise_irq();
    }

    /// A write of the command register.
    fn command(&mut self, command: u8) {
        // Commands to a device that is not there go nowhere.
        let Some(drive) = &self.drive else { return };
        if self.slave_selected() {
            return;
        }
        // A busy device ignores new commands (ATA-6 section 7.4).
        if self.state.status & (STATUS_BSY | STATUS_DRQ) != 0 {
            return;
        }
        let read_only = drive.read_only;
        self.state.status = STATUS_DRDY;
        self.state.error = 0;
        // A sector count of 0 means 256 to every LBA28 and CHS command
        // (ATA-6 section 7.13).
        let count_256 = |s: &mut AtaState| {
            if s.sector_count == 0 {
                s.sector_count = 256;
            }
        };
        match command {
            CMD_IDENTIFY_DEVICE => {
                let Some(drive) = &self.drive else { return };
                let block = drive.identify_block(self.state.mult_sectors, self.state.write_cache);
                let bytes = block.iter().flat_map(|w| w.to_le_bytes()).collect();
                self.state.status = STATUS_DRDY | STATUS_DSC;
                self.start_transfer(Transfer::Identify, bytes);
                self.raise_irq();
            }
            CMD_READ_SECTORS | CMD_READ_SECTORS_NO_RETRY => {
                count_256(&mut self.state);
                self.state.block_sectors = 1;
                self.read_block();
            }
            CMD_READ_MULTIPLE => {
                if self.state.mult_sectors == 0 {
                    self.abort();
                    return;
                }
                count_256(&mut self.state);
                self.state.block_sectors = self.state.mult_sectors;
                self.read_block();
            }
            CMD_WRITE_SECTORS | CMD_WRITE_SECTORS_NO_RETRY | CMD_WRITE_MULTIPLE => {
                let block = if command == CMD_WRITE_MULTIPLE {
                    self.state.mult_sectors
                } else {
                    1
                };
                if read_only || block == 0 {
                    self.abort();
                    return;
                }
                count_256(&mut self.state);
                self.state.block_sectors = block;
                self.state.status = STATUS_DRDY | STATUS_DSC;
                // The first block of a PIO data-out command is requested
                // without an interrupt (ATA-6 section 9.6).
                self.start_write_block();
            }
            CMD_SET_MULTIPLE_MODE => {
                let n = self.state.sector_count as u8;
                if valid_multiple(n) {
                    self.state.mult_sectors = n;
                    self.complete(true);
                } else {
                    self.abort();
                }
            }
            CMD_FLUSH_CACHE => self.flush_command(),
            CMD_SET_FEATURES => self.set_features(),
            CMD_EXECUTE_DEVICE_DIAGNOSTIC => {
                // The same outcome as a soft reset, minus the reset of the
                // settings: QEMU's cmd_exec_dev_diagnostic.
                let s = &mut self.state;
                s.device &= 0xF0;
                s.sector_count = 1;
                s.lba_low = 1;
                s.lba_mid = 0;
                s.lba_high = 0;
                s.error = DIAGNOSTIC_PASSED;
                self.complete(true);
            }
            CMD_CHECK_POWER_MODE => {
                // 0xFF: the device is active or idle.
                self.state.sector_count = 0xFF;
                self.complete(true);
            }
            // Accepted without effect: the drive has no heads to move, and
            // its geometry is fixed (QEMU ignores INITIALIZE DEVICE
            // PARAMETERS too). READ VERIFY checks nothing.
            CMD_RECALIBRATE | CMD_SEEK | CMD_INITIALIZE_DEVICE_PARAMETERS => self.complete(true),
            CMD_READ_VERIFY_SECTORS | CMD_READ_VERIFY_SECTORS_NO_RETRY => {
                count_256(&mut self.state);
                self.complete(true);
            }
            _ => {
                log::debug!("ATA: command {command:#04x} is not supported; aborted");
                self.abort();
            }
        }
    }

    /// SET FEATURES: the subcommands QEMU accepts, ABRT for the others
    /// (ATA-6 section 8.37).
    fn set_features(&mut self) {
        match self.state.features {
            FEATURE_WRITE_CACHE_ON => {
                self.state.write_cache = true;
                self.complete(true);
            }
            FEATURE_WRITE_CACHE_OFF => {
                // Everything cached so far must reach the media first.
                self.state.write_cache = false;
                self.flush_command();
            }
            FEATURE_SET_TRANSFER_MODE => {
                // PIO default, PIO flow control, single- and multiword
                // DMA and Ultra DMA modes are accepted, as QEMU does; PIO
                // is what the drive does either way.
                match self.state.sector_count >> 3 {
                    0x00 | 0x01 | 0x02 | 0x04 | 0x08 => self.complete(true),
                    _ => self.abort(),
                }
            }
            // Power-on defaults, read look-ahead, power management and
            // acoustic management, and reserved NOPs.
            0xCC | 0x66 | 0xAA | 0x55 | 0x05 | 0x85 | 0x69 | 0x67 | 0x96 | 0x9A | 0x42 | 0xC2 => {
                self.complete(true)
            }
            _ => self.abort(),
        }
    }
}

/// A READ/WRITE MULTIPLE block size the drive accepts: 0 (disabled) or a
/// power of two up to 16.
fn valid_multiple(n: u8) -> bool {
    n == 0 || (n <= MAX_MULTIPLE && n.is_power_of_two())
}

#[cfg(test)]
mod tests;
