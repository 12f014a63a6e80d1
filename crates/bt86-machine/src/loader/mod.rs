//! Boot loaders: putting a guest kernel, its command line and its modules
//! into RAM the way a PC's firmware and boot loader would, and describing
//! the machine's memory to the guest.
//!
//! This module owns the guest-visible memory map (what a BIOS would report
//! through INT 15h, E820h) and the boot protocols built on it. It writes
//! only to [`Ram`](crate::Ram) and never touches devices or the CPU: a loader
//! returns the register values the kernel expects, and the virtual CPU sets
//! them.

pub mod multiboot;

/// Start of the extended BIOS data area. SeaBIOS, which QEMU runs before a
/// Multiboot kernel, reserves [0x9FC00, 0xA0000) for it, so conventional
/// memory ends here: 639 KiB.
pub const EBDA_START: u32 = 0x9_FC00;
/// Start of the reserved system BIOS area, [0xF0000, 1 MiB).
pub const BIOS_AREA_START: u32 = 0xF_0000;
/// Start of extended memory, where kernels are loaded.
pub const EXTENDED_MEMORY_START: u32 = 0x10_0000;
/// The top of RAM that SeaBIOS keeps for its own tables (ACPI, SMBIOS)
/// and reports as reserved: the last 128 KiB, at every RAM size measured
/// (4 MiB to 3583 MiB).
pub const FIRMWARE_TABLES_SIZE: u32 = 128 << 10;
/// The BIOS ROM at the top of the 4 GiB space, [0xFFFC0000, 4 GiB). bt86
/// has no BIOS there (the monitor's area is), but it reports the same
/// reserved range so that a guest sees QEMU's map.
pub const BIOS_ROM_START: u32 = 0xFFFC_0000;

/// The kind of a memory region, with the E820 type numbers that the
/// Multiboot memory map also uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// RAM the guest may use freely (type 1).
    Available = 1,
    /// Anything else: firmware, ROM, device memory (type 2).
    Reserved = 2,
}

/// One entry of the guest-visible memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte of the region.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    pub kind: MemoryKind,
}

/// The memory map a guest with `ram_size` bytes of RAM is given, identical
/// to the E820 map that QEMU 7.2's `pc` machine reports through SeaBIOS
/// (measured with -m 4, 16, 32, 48, 100, 128, 1000, 1024, 3072 and 3583).
/// For 128 MiB:
///
/// | base | length | kind |
/// | --- | --- | --- |
/// | 0 | 0x9FC00 | available |
/// | 0x9FC00 | 0x400 | reserved (EBDA) |
/// | 0xF0000 | 0x10000 | reserved (BIOS) |
/// | 0x100000 | 0x7EE0000 | available |
/// | 0x7FE0000 | 0x20000 | reserved (firmware tables) |
/// | 0xFFFC0000 | 0x40000 | reserved (BIOS ROM) |
///
/// The hole [0xA0000, 0xF0000) holds VGA memory and option ROMs on a PC and
/// is in no entry. Regions that would be empty for a tiny RAM are left out.
pub fn pc_memory_map(ram_size: u32) -> Vec<MemoryRegion> {
    let ram = u64::from(ram_size);
    let tables_start = ram
        .saturating_sub(u64::from(FIRMWARE_TABLES_SIZE))
        .max(u64::from(EXTENDED_MEMORY_START));
    let region = |base: u64, end: u64, kind| MemoryRegion {
        base,
        len: end.saturating_sub(base),
        kind,
    };
    let map = [
        region(0, u64::from(EBDA_START), MemoryKind::Available),
        region(u64::from(EBDA_START), 0xA_0000, MemoryKind::Reserved),
        region(
            u64::from(BIOS_AREA_START),
            u64::from(EXTENDED_MEMORY_START),
            MemoryKind::Reserved,
        ),
        region(
            u64::from(EXTENDED_MEMORY_START),
            tables_start,
            MemoryKind::Available,
        ),
        region(tables_start, ram, MemoryKind::Reserved),
        region(u64::from(BIOS_ROM_START), 1 << 32, MemoryKind::Reserved),
    ];
    map.into_iter().filter(|r| r.len > 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryKind::{Available, Reserved};

    fn entry(base: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { base, len, kind }
    }

    #[test]
    fn memory_map_matches_qemu_measurements() {
        // (RAM size, length of the extended-memory entry, start of the
        // firmware tables) as QEMU reported them.
        let cases: &[(u32, u64, u64)] = &[
            (4 << 20, 0x2E_0000, 0x3E_0000),
            (48 << 20, 0x2EE_0000, 0x2FE_0000),
            (128 << 20, 0x7EE_0000, 0x7FE_0000),
            (1000 << 20, 0x3E6E_0000, 0x3E7E_0000),
            (3583 << 20, 0xDFDE_0000, 0xDFEE_0000),
        ];
        for &(ram, ext_len, tables) in cases {
            let expected = vec![
                entry(0, 0x9_FC00, Available),
                entry(0x9_FC00, 0x400, Reserved),
                entry(0xF_0000, 0x1_0000, Reserved),
                entry(0x10_0000, ext_len, Available),
                entry(tables, 0x2_0000, Reserved),
                entry(0xFFFC_0000, 0x4_0000, Reserved),
            ];
            assert_eq!(pc_memory_map(ram), expected, "RAM {ram:#x}");
        }
    }

    #[test]
    fn tiny_ram_gives_no_empty_or_inverted_regions() {
        for ram in [0, 0x1000, 0x10_0000, 0x11_0000, 0x12_0000] {
            for r in pc_memory_map(ram) {
                assert!(
                    r.len > 0 && r.base + r.len <= 1 << 32,
                    "RAM {ram:#x}: {r:?}"
                );
            }
        }
    }
}
