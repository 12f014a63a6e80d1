//! Unit tests of the ATA channel, driving its registers the way a guest's
//! PIO driver does: select, program the command block, write the command,
//! wait for DRQ or the interrupt, move the data through the data register,
//! read the status.

use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::IrqLatch;

/// What a test backend shares with the test after the drive took it.
#[derive(Default)]
struct Disk {
    bytes: Vec<u8>,
    flushes: usize,
    fail_reads: bool,
    fail_writes: bool,
}

/// A backend in memory whose contents, flush count and failures the test
/// controls.
struct TestBackend {
    disk: Arc<Mutex<Disk>>,
    read_only: bool,
}

impl BlockBackend for TestBackend {
    fn len(&self) -> u64 {
        self.disk.lock().unwrap().bytes.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let disk = self.disk.lock().unwrap();
        if disk.fail_reads {
            return Err(io::Error::other("injected read failure"));
        }
        let start = offset as usize;
        buf.copy_from_slice(&disk.bytes[start..start + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut disk = self.disk.lock().unwrap();
        if disk.fail_writes {
            return Err(io::Error::other("injected write failure"));
        }
        let start = offset as usize;
        disk.bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.disk.lock().unwrap().flushes += 1;
        Ok(())
    }
    fn is_read_only(&self) -> bool {
        self.read_only
    }
    fn describe(&self) -> String {
        "test disk".to_string()
    }
}

/// The byte at `offset` of sector `sector` in the test images: different
/// in every sector and at every offset, so a wrong sector or a shifted
/// word shows.
fn pattern(sector: u64, offset: usize) -> u8 {
    (sector.wrapping_mul(31) as usize ^ offset.wrapping_mul(7) ^ (offset >> 8)) as u8
}

fn image(sectors: u64) -> Vec<u8> {
    (0..sectors)
        .flat_map(|s| (0..SECTOR_SIZE).map(move |o| pattern(s, o)))
        .collect()
}

/// A channel with a drive over `bytes`, as the guest finds it after the
/// firmware: interrupts enabled (nIEN clear).
fn channel(bytes: Vec<u8>, read_only: bool) -> (Ata<IrqLatch>, Arc<Mutex<Disk>>) {
    let disk = Arc::new(Mutex::new(Disk {
        bytes,
        ..Disk::default()
    }));
    let backend = TestBackend {
        disk: Arc::clone(&disk),
        read_only,
    };
    let mut ata = Ata::new(IrqLatch::default());
    ata.attach(AtaDrive::new(Box::new(backend)).unwrap());
    (ata, disk)
}

/// The guest side: a few lines of a PIO driver.
trait Driver {
    fn set_lba(&mut self, lba: u32, count: u8);
    fn set_chs(&mut self, cylinder: u16, head: u8, sector: u8, count: u8);
    fn status(&mut self) -> u8;
    fn pio_read_sector(&mut self) -> Vec<u8>;
    fn pio_write_sector(&mut self, data: &[u8]);
    fn line(&self) -> bool;
}

impl Driver for Ata<IrqLatch> {
    fn set_lba(&mut self, lba: u32, count: u8) {
        self.write(REG_DEVICE, 0xE0 | ((lba >> 24) as u8 & 0x0F));
        self.write(REG_SECTOR_COUNT, count);
        self.write(REG_LBA_LOW, lba as u8);
        self.write(REG_LBA_MID, (lba >> 8) as u8);
        self.write(REG_LBA_HIGH, (lba >> 16) as u8);
    }
    fn set_chs(&mut self, cylinder: u16, head: u8, sector: u8, count: u8) {
        self.write(REG_DEVICE, 0xA0 | (head & 0x0F));
        self.write(REG_SECTOR_COUNT, count);
        self.write(REG_LBA_LOW, sector);
        self.write(REG_LBA_MID, cylinder as u8);
        self.write(REG_LBA_HIGH, (cylinder >> 8) as u8);
    }
    fn status(&mut self) -> u8 {
        self.read(REG_STATUS)
    }
    /// Reads one sector with 16-bit `in`s.
    fn pio_read_sector(&mut self) -> Vec<u8> {
        (0..SECTOR_SIZE / 2)
            .flat_map(|_| (self.read_data(IoSize::Word) as u16).to_le_bytes())
            .collect()
    }
    fn pio_write_sector(&mut self, data: &[u8]) {
        for pair in data.chunks_exact(2) {
            self.write_data(
                IoSize::Word,
                u32::from(u16::from_le_bytes([pair[0], pair[1]])),
            );
        }
    }
    fn line(&self) -> bool {
        self.irq().level()
    }
}

/// The expected bytes of `count` sectors from `first` in the test image.
fn sectors(first: u64, count: u64) -> Vec<u8> {
    (first..first + count)
        .flat_map(|s| (0..SECTOR_SIZE).map(move |o| pattern(s, o)))
        .collect()
}

#[test]
fn identify_block_describes_the_disk() {
    // (image sectors, expected cylinders/heads/sectors per track)
    let cases: &[(u64, (u16, u8, u8))] = &[
        (2048, (2, 16, 63)),
        (16 * 63 * 100, (100, 16, 63)),
        (16 * 63 * 100 + 5, (100, 16, 63)),
        (64, (2, 16, 63)),
    ];
    for &(total, (c, h, s)) in cases {
        let (mut ata, _) = channel(vec![0; total as usize * SECTOR_SIZE], false);
        ata.write(REG_DEVICE, 0xA0);
        ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
        assert!(ata.line(), "IDENTIFY interrupts when its block is ready");
        assert_eq!(ata.read_alt_status(), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
        assert!(ata.line(), "the alternate status does not acknowledge");
        assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
        assert!(!ata.line(), "the status register acknowledges");
        let bytes = ata.pio_read_sector();
        let w: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(
            ata.status(),
            STATUS_DRDY | STATUS_DSC,
            "DRQ fell after 256 words"
        );
        assert!(!ata.line(), "no interrupt after the data");
        let ctx = format!("{total} sectors");
        assert_eq!(w[0], 0x0040, "{ctx}");
        assert_eq!((w[1], w[3], w[6]), (c, u16::from(h), u16::from(s)), "{ctx}");
        assert_eq!(
            (w[54], w[55], w[56]),
            (c, u16::from(h), u16::from(s)),
            "{ctx}"
        );
        let chs = u32::from(c) * u32::from(h) * u32::from(s);
        assert_eq!(u32::from(w[57]) | u32::from(w[58]) << 16, chs, "{ctx}");
        assert_eq!(u64::from(w[60]) | u64::from(w[61]) << 16, total, "{ctx}");
        assert_eq!(w[47], 0x8010, "{ctx}");
        assert_eq!(w[59], 0x0110, "{ctx}");
        assert_ne!(w[49] & (1 << 9), 0, "LBA supported");
        assert_eq!(w[83] & 0xC000, 0x4000, "word 83 valid");
        assert_ne!(w[83] & (1 << 12), 0, "FLUSH CACHE supported");
        assert_eq!(w[255] & 0xFF, 0xA5);
        assert_eq!(
            bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)),
            0,
            "checksum"
        );
        // ATA strings hold the first character in the high byte.
        let model: Vec<u8> = w[27..47].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(String::from_utf8(model).unwrap().trim_end(), MODEL);
        let serial: Vec<u8> = w[10..20].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(String::from_utf8(serial).unwrap().trim_end(), SERIAL);
        let firmware: Vec<u8> = w[23..27].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(
            String::from_utf8(firmware).unwrap().trim_end(),
            env!("CARGO_PKG_VERSION")
        );
    }
}

/// A first sector with a DOS partition table whose first entry ends at
/// `end_head` and `end_sector` and holds `nr_sects` sectors.
fn mbr(end_head: u8, end_sector: u8, nr_sects: u32) -> [u8; SECTOR_SIZE] {
    let mut m = [0u8; SECTOR_SIZE];
    m[0x1BE + 5] = end_head;
    m[0x1BE + 6] = end_sector;
    m[0x1BE + 12..0x1BE + 16].copy_from_slice(&nr_sects.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

#[test]
fn geometry_is_guessed_as_qemu_does() {
    let blank = [0u8; SECTOR_SIZE];
    let mut no_signature = mbr(15, 63, 1000);
    no_signature[511] = 0;
    /// Total sectors, the first sector, and the expected geometry.
    type Case = (u64, [u8; SECTOR_SIZE], (u16, u8, u8));
    let cases: &[Case] = &[
        (2048, blank, (2, 16, 63)),
        (32768, blank, (32, 16, 63)),
        // Cylinders stop at 16383 (an 8 GiB disk and larger).
        (16 * 63 * 20000, blank, (16383, 16, 63)),
        // A partition table laid out with 4 heads of 32 sectors.
        (32768, mbr(3, 32, 1000), (256, 4, 32)),
        // The end-sector byte's top bits belong to the cylinder.
        (32768, mbr(3, 0xC0 | 32, 1000), (256, 4, 32)),
        // 255 heads: a translating BIOS; the standard geometry stays.
        (32768, mbr(254, 63, 1000), (32, 16, 63)),
        // Empty entries and a missing signature are ignored.
        (32768, mbr(3, 32, 0), (32, 16, 63)),
        (32768, mbr(0, 32, 1000), (32, 16, 63)),
        (32768, no_signature, (32, 16, 63)),
    ];
    for (total, first, (c, h, s)) in cases {
        let g = Geometry::guess(*total, first);
        assert_eq!(
            g,
            Geometry {
                cylinders: *c,
                heads: *h,
                sectors: *s
            },
            "{total} sectors"
        );
    }
}

#[test]
fn read_sectors_interrupts_once_per_sector() {
    // (first LBA, count written to the register, sectors read)
    let cases: &[(u32, u8, u64)] = &[
        (0, 1, 1),
        (5, 3, 3),
        (2047, 1, 1),
        (100, 0, 256),
        (1792, 0, 256),
    ];
    for &(lba, count, n) in cases {
        let (mut ata, _) = channel(image(2048), false);
        ata.set_lba(lba, count);
        ata.write(REG_COMMAND, CMD_READ_SECTORS);
        let mut data = Vec::new();
        for i in 0..n {
            assert!(ata.line(), "LBA {lba}: interrupt for sector {i}");
            assert_eq!(
                ata.status(),
                STATUS_DRDY | STATUS_DSC | STATUS_DRQ,
                "LBA {lba} sector {i}"
            );
            assert!(!ata.line());
            data.extend(ata.pio_read_sector());
        }
        assert!(!ata.line(), "no interrupt after the last sector");
        assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC);
        assert!(
            data == sectors(u64::from(lba), n),
            "LBA {lba} count {count}: data differs"
        );
        // The command block now names the sector after the last one read.
        let next = u64::from(lba) + n;
        assert_eq!(ata.read(REG_LBA_LOW), next as u8);
        assert_eq!(ata.read(REG_LBA_MID), (next >> 8) as u8);
        assert_eq!(ata.read(REG_SECTOR_COUNT), 0);
        assert_eq!(ata.read(REG_ERROR), 0);
    }
}

#[test]
fn chs_addresses_map_to_the_same_sectors() {
    // 2048 sectors: 2 cylinders, 16 heads, 63 sectors per track.
    // (cylinder, head, sector, LBA)
    let cases: &[(u16, u8, u8, u64)] = &[
        (0, 0, 1, 0),
        (0, 0, 63, 62),
        (0, 1, 1, 63),
        (0, 15, 63, 1007),
        (1, 0, 1, 1008),
        (1, 3, 7, 1008 + 3 * 63 + 6),
    ];
    for &(c, h, s, lba) in cases {
        let (mut ata, _) = channel(image(2048), false);
        ata.set_chs(c, h, s, 2);
        ata.write(REG_COMMAND, CMD_READ_SECTORS_NO_RETRY);
        ata.status();
        let mut data = ata.pio_read_sector();
        ata.status();
        data.extend(ata.pio_read_sector());
        assert!(data == sectors(lba, 2), "C/H/S {c}/{h}/{s}: data differs");
        // The registers advance in CHS, across a track boundary if need be.
        let next = lba + 2;
        let (nc, rest) = (next / 1008, next % 1008);
        assert_eq!(ata.read(REG_LBA_LOW), (rest % 63) as u8 + 1, "{c}/{h}/{s}");
        assert_eq!(
            ata.read(REG_DEVICE) & 0x0F,
            (rest / 63) as u8,
            "{c}/{h}/{s}"
        );
        assert_eq!(ata.read(REG_LBA_MID), nc as u8, "{c}/{h}/{s}");
        assert_eq!(ata.read(REG_DEVICE), 0xA0 | (rest / 63) as u8);
    }
}

#[test]
fn write_sectors_interrupts_after_every_sector() {
    // (LBA or None for the CHS form below, count)
    for &(lba, count) in &[(10u32, 1u8), (300, 4), (2040, 8)] {
        let (mut ata, disk) = channel(image(2048), false);
        ata.set_lba(lba, count);
        ata.write(REG_COMMAND, CMD_WRITE_SECTORS);
        let mut written = Vec::new();
        for i in 0..count {
            assert!(
                !ata.line() || i > 0,
                "no interrupt before the first block of a write"
            );
            assert_eq!(ata.read_alt_status(), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
            let block: Vec<u8> = (0..SECTOR_SIZE).map(|o| (o as u8) ^ i ^ 0x5A).collect();
            ata.pio_write_sector(&block);
            written.extend(block);
            assert!(ata.line(), "LBA {lba}: interrupt after sector {i}");
            ata.status();
        }
        assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC);
        let disk = disk.lock().unwrap();
        let start = lba as usize * SECTOR_SIZE;
        assert!(
            disk.bytes[start..start + written.len()] == written[..],
            "LBA {lba}"
        );
        // The neighbours are untouched.
        assert!(disk.bytes[..start] == image(2048)[..start]);
        let end = start + written.len();
        assert!(disk.bytes[end..] == image(2048)[end..]);
        assert_eq!(disk.flushes, 0, "the write cache is on: no flush per write");
    }
}

#[test]
fn write_with_chs_and_a_count_of_256() {
    let (mut ata, disk) = channel(image(2048), false);
    // Cylinder 0, head 2, sector 5: LBA 2 * 63 + 4 = 130.
    ata.set_chs(0, 2, 5, 0);
    ata.write(REG_COMMAND, CMD_WRITE_SECTORS);
    let mut interrupts = 0;
    for i in 0..256u32 {
        ata.pio_write_sector(&[i as u8; SECTOR_SIZE]);
        interrupts += u32::from(ata.line());
        ata.status();
    }
    assert_eq!(interrupts, 256);
    assert_eq!(ata.status() & STATUS_DRQ, 0);
    let disk = disk.lock().unwrap();
    for i in 0..256usize {
        let at = (130 + i) * SECTOR_SIZE;
        assert!(
            disk.bytes[at..at + SECTOR_SIZE]
                .iter()
                .all(|&b| b == i as u8),
            "sector {i}"
        );
    }
    assert!(disk.bytes[386 * SECTOR_SIZE..] == image(2048)[386 * SECTOR_SIZE..]);
}

#[test]
fn dword_data_accesses_move_two_words() {
    let (mut ata, disk) = channel(image(64), false);
    ata.set_lba(3, 1);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    let data: Vec<u8> = (0..SECTOR_SIZE / 4)
        .flat_map(|_| ata.read_data(IoSize::Dword).to_le_bytes())
        .collect();
    assert!(data == sectors(3, 1));
    assert_eq!(ata.read_alt_status() & STATUS_DRQ, 0);

    ata.set_lba(4, 1);
    ata.write(REG_COMMAND, CMD_WRITE_SECTORS);
    for i in 0..SECTOR_SIZE as u32 / 4 {
        ata.write_data(IoSize::Dword, 0x0403_0201u32.wrapping_mul(i + 1));
    }
    let expected: Vec<u8> = (0..SECTOR_SIZE as u32 / 4)
        .flat_map(|i| 0x0403_0201u32.wrapping_mul(i + 1).to_le_bytes())
        .collect();
    assert!(disk.lock().unwrap().bytes[4 * SECTOR_SIZE..5 * SECTOR_SIZE] == expected[..]);
}

#[test]
fn read_multiple_moves_blocks_of_the_multiple_setting() {
    let (mut ata, _) = channel(image(2048), false);
    // (SET MULTIPLE count, accepted)
    for &(n, ok) in &[(3u8, false), (32, false), (4, true)] {
        ata.write(REG_SECTOR_COUNT, n);
        ata.write(REG_COMMAND, CMD_SET_MULTIPLE_MODE);
        let expected = if ok {
            STATUS_DRDY | STATUS_DSC
        } else {
            STATUS_DRDY | STATUS_ERR
        };
        assert_eq!(ata.status(), expected, "SET MULTIPLE {n}");
    }
    ata.set_lba(40, 10);
    ata.write(REG_COMMAND, CMD_READ_MULTIPLE);
    let mut data = Vec::new();
    let mut blocks = 0;
    while ata.read_alt_status() & STATUS_DRQ != 0 {
        assert!(ata.line());
        ata.status();
        blocks += 1;
        while ata.read_alt_status() & STATUS_DRQ != 0 && data.len() < 10 * SECTOR_SIZE {
            data.extend((ata.read_data(IoSize::Word) as u16).to_le_bytes());
            if data.len() % (4 * SECTOR_SIZE) == 0 {
                break;
            }
        }
    }
    assert_eq!(blocks, 3, "blocks of 4, 4 and 2 sectors");
    assert!(data == sectors(40, 10));
    // IDENTIFY reports the setting in word 59.
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    let id = ata.pio_read_sector();
    assert_eq!(u16::from_le_bytes([id[118], id[119]]), 0x0104);
}

#[test]
fn errors_abort_with_abrt_and_interrupt() {
    // (what, setup and command, registers before the command)
    type Setup = fn(&mut Ata<IrqLatch>);
    let cases: &[(&str, Setup)] = &[
        ("unknown command", |a| a.write(REG_COMMAND, 0xEE)),
        ("LBA48 command", |a| {
            a.set_lba(0, 1);
            a.write(REG_COMMAND, 0x24)
        }),
        ("read past the end", |a| {
            a.set_lba(2048, 1);
            a.write(REG_COMMAND, CMD_READ_SECTORS)
        }),
        ("read far past the end", |a| {
            a.set_lba(0x0FFF_FFFF, 1);
            a.write(REG_COMMAND, CMD_READ_SECTORS)
        }),
        ("CHS sector 0", |a| {
            a.set_chs(0, 0, 0, 1);
            a.write(REG_COMMAND, CMD_READ_SECTORS)
        }),
        ("SET FEATURES with an unknown subcommand", |a| {
            a.write(REG_FEATURES, 0x77);
            a.write(REG_COMMAND, CMD_SET_FEATURES)
        }),
    ];
    for (what, setup) in cases {
        let (mut ata, _) = channel(image(2048), false);
        setup(&mut ata);
        assert!(ata.line(), "{what}: interrupt");
        assert_eq!(ata.status(), STATUS_DRDY | STATUS_ERR, "{what}");
        assert_eq!(ata.read(REG_ERROR), ERROR_ABRT, "{what}");
        assert_eq!(ata.read_data(IoSize::Word), 0, "{what}: no data phase");
        // The next command clears the error.
        ata.write(REG_COMMAND, CMD_RECALIBRATE);
        assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC, "{what}: recovered");
        assert_eq!(ata.read(REG_ERROR), 0, "{what}");
    }
}

#[test]
fn a_read_that_runs_off_the_end_aborts_at_the_missing_sector() {
    let (mut ata, _) = channel(image(2048), false);
    ata.set_lba(2047, 2);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    assert!(ata.pio_read_sector() == sectors(2047, 1));
    assert!(ata.line());
    assert_eq!(ata.status(), STATUS_DRDY | STATUS_ERR);
    assert_eq!(ata.read(REG_ERROR), ERROR_ABRT);
}

#[test]
fn host_io_errors_abort_the_command() {
    let (mut ata, disk) = channel(image(64), false);
    disk.lock().unwrap().fail_reads = true;
    ata.set_lba(1, 1);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    assert_eq!(ata.status(), STATUS_DRDY | STATUS_ERR);
    disk.lock().unwrap().fail_writes = true;
    ata.set_lba(1, 1);
    ata.write(REG_COMMAND, CMD_WRITE_SECTORS);
    ata.pio_write_sector(&[0xAB; SECTOR_SIZE]);
    assert!(ata.line());
    assert_eq!(ata.status(), STATUS_DRDY | STATUS_ERR);
    assert_eq!(ata.read(REG_ERROR), ERROR_ABRT);
    assert!(
        disk.lock().unwrap().bytes == image(64),
        "nothing was written"
    );
}

#[test]
fn a_read_only_disk_aborts_writes_before_the_data_phase() {
    let (mut ata, disk) = channel(image(64), true);
    for command in [
        CMD_WRITE_SECTORS,
        CMD_WRITE_SECTORS_NO_RETRY,
        CMD_WRITE_MULTIPLE,
    ] {
        ata.set_lba(2, 1);
        ata.write(REG_COMMAND, command);
        assert!(ata.line(), "{command:#x}");
        assert_eq!(
            ata.status(),
            STATUS_DRDY | STATUS_ERR,
            "{command:#x}: no DRQ"
        );
        assert_eq!(ata.read(REG_ERROR), ERROR_ABRT);
        ata.pio_write_sector(&[0xAB; SECTOR_SIZE]);
    }
    assert!(disk.lock().unwrap().bytes == image(64));
    // Reads and flushes still work.
    ata.set_lba(2, 1);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    assert!(ata.pio_read_sector() == sectors(2, 1));
    ata.write(REG_COMMAND, CMD_FLUSH_CACHE);
    assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn flush_cache_and_the_write_cache_setting_reach_the_backend() {
    let (mut ata, disk) = channel(image(64), false);
    ata.write(REG_COMMAND, CMD_FLUSH_CACHE);
    assert!(ata.line());
    assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC);
    assert_eq!(disk.lock().unwrap().flushes, 1);
    // Turning the cache off flushes, and every later write is flushed.
    ata.write(REG_FEATURES, FEATURE_WRITE_CACHE_OFF);
    ata.write(REG_COMMAND, CMD_SET_FEATURES);
    assert_eq!(ata.status(), STATUS_DRDY | STATUS_DSC);
    assert_eq!(disk.lock().unwrap().flushes, 2);
    ata.set_lba(5, 2);
    ata.write(REG_COMMAND, CMD_WRITE_SECTORS);
    ata.pio_write_sector(&[1; SECTOR_SIZE]);
    ata.pio_write_sector(&[2; SECTOR_SIZE]);
    assert_eq!(disk.lock().unwrap().flushes, 4);
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    let id = ata.pio_read_sector();
    assert_eq!(
        u16::from_le_bytes([id[170], id[171]]) & (1 << 5),
        0,
        "word 85: cache off"
    );
    ata.write(REG_FEATURES, FEATURE_WRITE_CACHE_ON);
    ata.write(REG_COMMAND, CMD_SET_FEATURES);
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    let id = ata.pio_read_sector();
    assert_ne!(
        u16::from_le_bytes([id[170], id[171]]) & (1 << 5),
        0,
        "word 85: cache on"
    );
}

#[test]
fn non_data_commands_complete_with_an_interrupt() {
    // (command, features, status after)
    let cases: &[(u8, u8, u8)] = &[
        (CMD_RECALIBRATE, 0, STATUS_DRDY | STATUS_DSC),
        (
            CMD_INITIALIZE_DEVICE_PARAMETERS,
            0,
            STATUS_DRDY | STATUS_DSC,
        ),
        (CMD_SEEK, 0, STATUS_DRDY | STATUS_DSC),
        (CMD_SET_FEATURES, 0xAA, STATUS_DRDY | STATUS_DSC),
        (
            CMD_SET_FEATURES,
            FEATURE_SET_TRANSFER_MODE,
            STATUS_DRDY | STATUS_DSC,
        ),
        (CMD_READ_VERIFY_SECTORS, 0, STATUS_DRDY | STATUS_DSC),
        (CMD_EXECUTE_DEVICE_DIAGNOSTIC, 0, STATUS_DRDY | STATUS_DSC),
        (0x11, 0, STATUS_DRDY | STATUS_ERR),
    ];
    for &(command, features, status) in cases {
        let (mut ata, _) = channel(image(64), false);
        ata.write(REG_FEATURES, features);
        ata.write(REG_SECTOR_COUNT, 0x0C);
        ata.write(REG_COMMAND, command);
        assert!(ata.line(), "{command:#x}");
        assert_eq!(ata.status(), status, "{command:#x}");
    }
    let (mut ata, _) = channel(image(64), false);
    ata.write(REG_COMMAND, CMD_CHECK_POWER_MODE);
    assert_eq!(ata.read(REG_SECTOR_COUNT), 0xFF, "active or idle");
}

#[test]
fn nien_masks_the_line_but_keeps_the_interrupt_pending() {
    let (mut ata, _) = channel(image(64), false);
    ata.write_device_control(CONTROL_NIEN);
    ata.write(REG_COMMAND, CMD_RECALIBRATE);
    assert!(!ata.line(), "masked");
    assert!(ata.state().irq_pending);
    ata.write_device_control(0);
    assert!(ata.line(), "unmasking lets the pending interrupt through");
    ata.write_device_control(CONTROL_NIEN);
    assert!(!ata.line());
    ata.status();
    ata.write_device_control(0);
    assert!(!ata.line(), "the status read acknowledged it");
    // Writing a command acknowledges too.
    ata.write(REG_COMMAND, CMD_RECALIBRATE);
    assert!(ata.line());
    ata.write(REG_FEATURES, 0x99);
    ata.write(REG_COMMAND, CMD_SET_FEATURES);
    assert!(ata.line(), "the abort interrupts again");
    ata.write(REG_COMMAND, CMD_RECALIBRATE);
    ata.read_alt_status();
    assert!(ata.line());
}

#[test]
fn soft_reset_restores_the_signature_and_settings() {
    let (mut ata, _) = channel(image(2048), false);
    ata.write(REG_SECTOR_COUNT, 2);
    ata.write(REG_COMMAND, CMD_SET_MULTIPLE_MODE);
    ata.set_lba(0x123, 3);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    ata.status();
    assert_eq!(ata.read_alt_status() & STATUS_DRQ, STATUS_DRQ);
    ata.write_device_control(CONTROL_SRST | CONTROL_NIEN);
    assert_eq!(
        ata.read_alt_status(),
        STATUS_BSY | STATUS_DSC,
        "busy while SRST is held"
    );
    assert_eq!(ata.read_data(IoSize::Word), 0, "the transfer was cancelled");
    ata.write(REG_LBA_LOW, 0x77);
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    ata.write_device_control(CONTROL_NIEN);
    assert!(!ata.line(), "nIEN masks the reset's interrupt");
    let regs: Vec<u8> = (1..=7).map(|r| ata.read(r)).collect();
    assert_eq!(
        regs,
        vec![
            DIAGNOSTIC_PASSED,
            1,
            1,
            0,
            0,
            0xA0,
            STATUS_DRDY | STATUS_DSC
        ],
        "error, count, LBA low/mid/high, device, status"
    );
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    let id = ata.pio_read_sector();
    assert_eq!(
        u16::from_le_bytes([id[118], id[119]]),
        0x0110,
        "multiple back to 16"
    );
    // Without nIEN the reset interrupts, as QEMU's diagnostic does.
    ata.write_device_control(CONTROL_SRST);
    ata.write_device_control(0);
    assert!(ata.line());
}

#[test]
fn the_absent_slave_reads_zero_and_ignores_commands() {
    let (mut ata, _) = channel(image(64), false);
    ata.write(REG_DEVICE, 0xB0);
    assert_eq!(ata.status(), 0);
    assert_eq!(ata.read_alt_status(), 0);
    assert_eq!(ata.read(REG_ERROR), 0);
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    assert!(!ata.line());
    assert_eq!(ata.read_data(IoSize::Word), 0);
    ata.write(REG_DEVICE, 0xA0);
    assert_eq!(
        ata.status(),
        STATUS_DRDY | STATUS_DSC,
        "the master did nothing"
    );
}

#[test]
fn without_a_drive_every_register_reads_zero() {
    let mut ata = Ata::new(IrqLatch::default());
    ata.write(REG_SECTOR_COUNT, 5);
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    let regs: Vec<u8> = (1..=7).map(|r| ata.read(r)).collect();
    assert_eq!(regs, vec![0; 7]);
    assert_eq!(ata.read(REG_DATA), 0xFF, "a byte read of the data register");
    assert_eq!(ata.read_data(IoSize::Word), 0);
    assert!(!ata.line());
    assert!(ata.flush().is_ok());
}

#[test]
fn register_writes_are_ignored_during_a_data_phase() {
    let (mut ata, _) = channel(image(64), false);
    ata.set_lba(1, 1);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    ata.write(REG_LBA_LOW, 9);
    ata.write(REG_DEVICE, 0xB0);
    ata.write(REG_COMMAND, CMD_IDENTIFY_DEVICE);
    assert!(
        ata.pio_read_sector() == sectors(1, 1),
        "the read went on undisturbed"
    );
    assert_eq!(ata.read(REG_LBA_LOW), 2);
}

#[test]
fn snapshot_mid_transfer_resumes_exactly() {
    let (mut ata, _) = channel(image(64), false);
    ata.write_device_control(CONTROL_NIEN);
    ata.set_lba(7, 2);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    let first: Vec<u16> = (0..100)
        .map(|_| ata.read_data(IoSize::Word) as u16)
        .collect();
    let state = ata.state();

    let (mut other, _) = channel(image(64), false);
    other.restore(&state).unwrap();
    assert_eq!(other.state(), state);
    let mut data: Vec<u8> = first.iter().flat_map(|w| w.to_le_bytes()).collect();
    data.extend((100..256).flat_map(|_| (other.read_data(IoSize::Word) as u16).to_le_bytes()));
    other.status();
    data.extend(other.pio_read_sector());
    assert!(data == sectors(7, 2));

    let mut bad = state.clone();
    bad.position = bad.buffer.len() + 1;
    assert!(matches!(
        ata.restore(&bad),
        Err(AtaStateError::BadBuffer { .. })
    ));
    let mut bad = state.clone();
    bad.mult_sectors = 3;
    assert_eq!(ata.restore(&bad), Err(AtaStateError::BadMultiple(3)));
    assert_eq!(ata.state(), state, "a failed restore changes nothing");
}

/// A fresh path in the system's temporary directory.
fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("bt86-ata-{}-{name}", std::process::id()))
}

#[test]
fn file_backend_refuses_unusable_images() {
    let missing = temp_path("missing.img");
    let err = FileBackend::open(&missing, false).unwrap_err();
    assert!(matches!(err, DiskError::Open { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    // (size in bytes, refused)
    for (len, refused) in [
        (0u64, true),
        (1000, true),
        (511, true),
        (512, false),
        (1024, false),
    ] {
        let path = temp_path(&format!("size-{len}.img"));
        std::fs::write(&path, vec![0u8; len as usize]).unwrap();
        let result = FileBackend::open(&path, true);
        let _ = std::fs::remove_file(&path);
        assert_eq!(result.is_err(), refused, "{len} bytes");
        if let Err(e) = result {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            if len == 1000 {
                assert!(text.contains("whole number of 512-byte sectors"), "{text}");
                assert!(text.contains("1024"), "the message suggests a size: {text}");
            }
        }
    }
}

#[test]
fn file_backend_reads_writes_and_flushes_in_place() {
    let path = temp_path("rw.img");
    std::fs::write(&path, image(16)).unwrap();
    let mut ata = Ata::new(IrqLatch::default());
    ata.attach(AtaDrive::open(&path, false).unwrap());
    let handle = ata
        .drive()
        .and_then(AtaDrive::flush_handle)
        .expect("a file has a flush handle");
    ata.set_lba(3, 1);
    ata.write(REG_COMMAND, CMD_READ_SECTORS);
    assert!(ata.pio_read_sector() == sectors(3, 1));
    ata.set_lba(4, 1);
    ata.write(REG_COMMAND, CMD_WRITE_SECTORS);
    ata.pio_write_sector(&[0xC3; SECTOR_SIZE]);
    // The write is in the file as soon as the command completed.
    let on_disk = std::fs::read(&path).unwrap();
    assert!(on_disk[4 * SECTOR_SIZE..5 * SECTOR_SIZE]
        .iter()
        .all(|&b| b == 0xC3));
    assert!(on_disk[5 * SECTOR_SIZE..] == image(16)[5 * SECTOR_SIZE..]);
    handle.flush().unwrap();
    ata.flush().unwrap();
    drop(ata);
    let _ = std::fs::remove_file(&path);
}
