//! The Multiboot (version 0.6.96) boot protocol: loading a kernel image and
//! its modules into RAM and building the information structure it reads.
//!
//! This module owns the parsing of Multiboot kernel images (ELF32, or any
//! format through the header's address fields, the "a.out kludge") and the
//! layout of everything the loader places in RAM. It does not set CPU
//! registers: it returns them in [`BootInfo::cpu`] for the virtual CPU.
//!
//! bt86 places everything where QEMU 7.2's `-kernel` loader places it, so
//! that a guest sees the same addresses under both (measured with a guest
//! that printed its Multiboot information and CPU state under QEMU):
//! - the memory map at 0x9000 and the information structure at 0x9500;
//! - from the first page boundary after the kernel (relative to its lowest
//!   load address): the module list, then the module command lines, the
//!   kernel command line and the boot loader name;
//! - each module at the next page boundary after that.
//!
//! Every check happens before the first byte is written, so a kernel that is
//! refused leaves RAM untouched, and no input, however malformed, panics.

use std::ops::Range;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::{
    EI_CLASS, EI_DATA, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_386, SELFMAG,
};
use goblin::elf::program_header::{ProgramHeader, PF_X, PT_LOAD};
use goblin::elf::Elf;
use thiserror::Error;

use super::{pc_memory_map, EBDA_START, EXTENDED_MEMORY_START, FIRMWARE_TABLES_SIZE};
use crate::memory::{MemoryError, Ram, MONITOR_AREA_START, PAGE_SIZE};
use crate::GuestPhysAddr;

/// The magic number that starts a Multiboot header in the kernel image.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The magic number a Multiboot loader leaves in EAX for the kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie in the first 8192 bytes of the image, 4-byte aligned.
pub const HEADER_SEARCH_LIMIT: usize = 8192;
/// The largest header (48 bytes, with the video fields) must end within the
/// search limit, so QEMU starts no search at or after 8192 - 48.
const HEADER_SEARCH_END: usize = HEADER_SEARCH_LIMIT - 48;

/// Header flag 0: align modules on page boundaries. bt86 always does.
pub const HEADER_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag 1: the kernel wants the memory fields and map. Always given.
pub const HEADER_MEMORY_INFO: u32 = 1 << 1;
/// Header flag 2: the kernel wants a video mode. Not supported (nor by QEMU).
pub const HEADER_VIDEO_MODE: u32 = 1 << 2;
/// Header flag 16: the header's address fields say where to load the image.
pub const HEADER_ADDRESS_FIELDS: u32 = 1 << 16;

/// Where the memory map entries are written (QEMU's `ADDR_E820_MAP`).
pub const MMAP_ADDR: u32 = 0x9000;
/// Where the information structure is written; its address goes in EBX.
pub const INFO_ADDR: u32 = 0x9500;
/// The size of the information structure up to and including the VBE
/// fields, which bt86 leaves zero.
pub const INFO_SIZE: usize = 88;
/// The size of one module list entry.
const MODULE_ENTRY_SIZE: u32 = 16;
/// The size of one memory map entry, including its own `size` field.
const MMAP_ENTRY_SIZE: u32 = 24;

/// Information structure flag: `mem_lower` and `mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Information structure flag: `boot_device` is valid.
pub const INFO_BOOT_DEVICE: u32 = 1 << 1;
/// Information structure flag: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Information structure flag: `mods_count` and `mods_addr` are valid.
pub const INFO_MODULES: u32 = 1 << 3;
/// Information structure flag: `mmap_length` and `mmap_addr` are valid.
pub const INFO_MEMORY_MAP: u32 = 1 << 6;
/// Information structure flag: `boot_loader_name` is valid.
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;
/// The flags QEMU sets, and so bt86 (0x24F).
pub const INFO_FLAGS: u32 = INFO_MEMORY
    | INFO_BOOT_DEVICE
    | INFO_CMDLINE
    | INFO_MODULES
    | INFO_MEMORY_MAP
    | INFO_BOOT_LOADER_NAME;
/// The boot device QEMU reports: BIOS drive 0x80, no partition.
pub const BOOT_DEVICE: u32 = 0x8000_FFFF;
/// The boot loader name. It has the length of QEMU's "qemu", so every
/// address after it matches QEMU's layout.
pub const BOOT_LOADER_NAME: &str = "bt86";

/// Where QEMU's Multiboot option ROM keeps the GDT that is live when the
/// kernel starts. bt86 writes the same descriptors at the same address: it
/// lies in the [0xA0000, 0xF0000) hole that the memory map reports neither
/// as available nor reserved, so no guest reuses it by accident.
pub const BOOT_GDT_ADDR: u32 = 0x000C_B2B8;
/// The boot GDT as QEMU's option ROM builds it (measured with `sgdt`):
/// null, flat 4 GiB 32-bit code (0x08), flat 4 GiB data (0x10), and 16-bit
/// code and data with a 64 KiB limit (0x18, 0x20) that the ROM used on its
/// way from real mode.
pub const BOOT_GDT: [u64; 5] = [
    0x0000_0000_0000_0000,
    0x00CF_9A00_0000_FFFF,
    0x00CF_9300_0000_FFFF,
    0x0000_9E00_0000_FFFF,
    0x0000_9200_0000_FFFF,
];

/// The CPU state in which a Multiboot kernel starts, as measured under QEMU
/// 7.2 on the `pc` machine. The Multiboot specification (§3.2) fixes only
/// EAX, EBX, CS, DS-SS being flat 4 GiB segments, CR0.PE=1 and PG=0, and
/// EFLAGS.VM=IF=0; the other values are what QEMU's option ROM happens to
/// leave, and guests must not rely on them. bt86 reproduces them anyway so
/// that differential tests against QEMU compare like with like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// [`BOOTLOADER_MAGIC`].
    pub eax: u32,
    /// The information structure's address, [`INFO_ADDR`].
    pub ebx: u32,
    /// QEMU leaves the entry point here.
    pub ecx: u32,
    /// QEMU leaves a value here that varies with the RAM size; bt86 uses 0.
    pub edx: u32,
    pub esi: u32,
    pub edi: u32,
    pub ebp: u32,
    /// The option ROM's stack. Multiboot says ESP is undefined: a kernel
    /// must set up its own stack before it pushes anything.
    pub esp: u32,
    pub eip: u32,
    /// 0x00000006: reserved bit 1 and PF; IF clear.
    pub eflags: u32,
    /// 0x00000011: PE and ET.
    pub cr0: u32,
    /// CS selector (flat 32-bit code in the boot GDT).
    pub cs: u16,
    /// DS, ES, FS, GS and SS selector (flat data in the boot GDT).
    pub data_selector: u16,
    pub gdtr_base: u32,
    pub gdtr_limit: u16,
    /// The real-mode interrupt vector table, still in IDTR.
    pub idtr_base: u32,
    pub idtr_limit: u16,
}

/// The stack pointer QEMU's option ROM leaves.
pub const QEMU_ENTRY_ESP: u32 = 0x6F08;
/// QEMU leaves EDI pointing at 0x1000.
pub const QEMU_ENTRY_EDI: u32 = 0x1000;

/// A boot module (an initial RAM disk, say) and the string the kernel sees
/// with it. QEMU's `-initrd "file args"` gives the module the whole string
/// "file args"; bt86's command line does the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub cmdline: String,
    pub data: Vec<u8>,
}

/// Where one module ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedModule {
    /// First byte of the module in RAM (page-aligned).
    pub start: u32,
    /// One past the last byte, as `mod_end` says.
    pub end: u32,
    /// Address of the module's command line.
    pub cmdline_addr: u32,
}

/// What the loader did, and how the kernel must be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// The physical address to start at.
    pub entry: u32,
    /// [`BOOTLOADER_MAGIC`], for EAX.
    pub magic: u32,
    /// The information structure's address, for EBX.
    pub info_addr: u32,
    /// The lowest physical address the kernel occupies.
    pub kernel_start: u32,
    /// One past the highest physical address the kernel occupies (its BSS
    /// included).
    pub kernel_end: u32,
    /// The kernel command line's address.
    pub cmdline_addr: u32,
    pub modules: Vec<LoadedModule>,
    /// One past the last byte the loader wrote after the kernel (command
    /// lines and modules), rounded up to a page.
    pub boot_data_end: u32,
    /// Every register the kernel starts with.
    pub cpu: EntryState,
}

/// Why a kernel image or its modules could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("no Multiboot header in the first {searched} bytes of the kernel image (the magic {magic:#010x} at a 4-byte-aligned offset, with a valid checksum); link the kernel with a Multiboot header near its start", magic = HEADER_MAGIC)]
    NoHeader { searched: usize },

    #[error("the Multiboot header at file offset {offset:#x} has a bad checksum: magic + flags ({flags:#010x}) + checksum ({checksum:#010x}) must be 0 modulo 2^32; set checksum to {expected:#010x}", expected = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(*flags))]
    BadChecksum {
        offset: usize,
        flags: u32,
        checksum: u32,
    },

    #[error("the kernel image is not an ELF file and its Multiboot header (flags {flags:#010x}) lacks flag 16, the address fields, so nothing says where to load it; link the kernel as ELF32 or fill in the header's address fields")]
    NotElf { flags: u32 },

    #[error("the kernel image is a 64-bit ELF file; bt86, like QEMU (\"Cannot load x86-64 image, give a 32bit one\"), boots only 32-bit Multiboot kernels: build it with -m32 and link it with ld -m elf_i386")]
    Elf64,

    #[error(
        "the kernel's ELF headers cannot be read: {reason}; the image is damaged or not a kernel"
    )]
    BadElf { reason: String },

    #[error("the kernel is an ELF file for machine {machine} instead of Intel 80386 ({em_386}); build it for i386", em_386 = EM_386)]
    WrongMachine { machine: u16 },

    #[error("the kernel's ELF file has no loadable (PT_LOAD) segment with a non-zero size, so there is nothing to boot; check the linker script")]
    NoLoadableSegments,

    #[error("the kernel image is {file_len} bytes long but segment {index} wants its bytes [{start:#x}, {end:#x}) of the file; the image is truncated, rebuild or copy it again")]
    TruncatedSegment {
        index: usize,
        start: u64,
        end: u64,
        file_len: usize,
    },

    #[error("segment {index} of the kernel has more bytes in the file ({file_size:#x}) than in memory ({mem_size:#x}); the ELF file is damaged")]
    SegmentFileSizeTooLarge {
        index: usize,
        file_size: u64,
        mem_size: u64,
    },

    #[error("the Multiboot header at file offset {offset:#x} sets flag 16 but the image ends before its address fields do; the image is truncated")]
    TruncatedHeader { offset: usize },

    #[error("the Multiboot header's address fields are inconsistent: {reason} (header_addr {header_addr:#x}, load_addr {load_addr:#x}, load_end_addr {load_end_addr:#x}, bss_end_addr {bss_end_addr:#x}); fix them in the kernel's header")]
    BadAddressFields {
        reason: &'static str,
        header_addr: u32,
        load_addr: u32,
        load_end_addr: u32,
        bss_end_addr: u32,
    },

    #[error("the kernel wants physical memory [{start:#x}, {end:#x}), which reaches the monitor's area at {monitor:#x} and above; link the kernel at a lower physical address", monitor = MONITOR_AREA_START)]
    OverlapsMonitorArea { start: u64, end: u64 },

    #[error("the kernel spans {size:#x} bytes of physical memory but the VM has only {ram_size:#x} bytes of RAM; give the VM more memory with -m")]
    KernelTooLarge { size: u64, ram_size: u32 },

    #[error("the kernel wants physical memory [{start:#x}, {end:#x}), past the end of RAM at {ram_size:#x}; give the VM more memory with -m or link the kernel lower")]
    SegmentOutsideRam { start: u64, end: u64, ram_size: u32 },

    #[error("the kernel's entry point {entry:#x} is not inside any loaded segment, so it would start in memory the loader never filled; check the ELF entry address (or the header's entry_addr)")]
    EntryOutsideKernel { entry: u32 },

    #[error("module {index} ({cmdline:?}, {size:#x} bytes) would occupy [{start:#x}, {end:#x}), past the end of RAM at {ram_size:#x}; give the VM more memory with -m or use a smaller module")]
    ModuleTooLarge {
        index: usize,
        cmdline: String,
        size: usize,
        start: u64,
        end: u64,
        ram_size: u32,
    },

    #[error("the command lines and module list would end at {end:#x}, past the end of RAM at {ram_size:#x}; give the VM more memory with -m or shorten the command lines")]
    BootDataOutsideRam { end: u64, ram_size: u32 },

    #[error("writing the kernel into RAM failed: {0}")]
    Memory(#[from] MemoryError),
}

/// The Multiboot header fields the loader uses.
#[derive(Clone, Copy, Debug)]
struct Header {
    /// File offset of the magic number.
    offset: usize,
    flags: u32,
}

/// One piece of the kernel to copy into RAM.
#[derive(Clone, Debug)]
struct Segment {
    /// Physical load address.
    paddr: u32,
    /// Bytes of the image to copy there.
    file: Range<usize>,
    /// Bytes in memory; those past the file bytes are zeroed (the BSS).
    mem_size: u32,
}

impl Segment {
    fn end(&self) -> u64 {
        u64::from(self.paddr) + u64::from(self.mem_size)
    }
}

/// A kernel image, parsed and checked but not yet in RAM.
#[derive(Clone, Debug)]
struct Kernel {
    segments: Vec<Segment>,
    entry: u32,
}

/// Loads a Multiboot kernel `image` with command line `cmdline` and
/// `modules` into `ram`, writes the information structure, memory map and
/// boot GDT, and returns where everything went and the registers to start
/// the kernel with.
///
/// `cmdline` is the complete string the kernel sees. QEMU gives a kernel
/// "`<kernel path> <-append text>`"; [`qemu_cmdline`] builds the same.
pub fn load_multiboot(
    ram: &mut Ram,
    image: &[u8],
    cmdline: &str,
    modules: &[Module],
) -> Result<BootInfo, LoadError> {
    // `Ram` is at least MIN_RAM_SIZE (2 MiB), so the low-memory structures
    // below and the kernel area from 1 MiB always exist.
    let ram_size = ram.size();
    let header = find_header(image)?;
    if header.flags & HEADER_VIDEO_MODE != 0 {
        log::warn!("the kernel's Multiboot header asks for a video mode (flag 2); bt86, like QEMU, sets none");
    }
    let unknown =
        header.flags & 0xFFFF & !(HEADER_PAGE_ALIGN | HEADER_MEMORY_INFO | HEADER_VIDEO_MODE);
    if unknown != 0 {
        log::warn!("the kernel's Multiboot header sets required flags {unknown:#x} that bt86 does not know; booting anyway, as QEMU does");
    }
    let kernel = if header.flags & HEADER_ADDRESS_FIELDS != 0 {
        parse_address_fields(image, header)?
    } else {
        parse_elf(image, header)?
    };
    let (kernel_start, kernel_end) = check_kernel_placement(&kernel, ram_size)?;
    let layout = plan_boot_data(kernel_start, kernel_end, cmdline, modules, ram_size)?;

    // Everything is checked; from here on every write lies inside RAM.
    for segment in &kernel.segments {
        let file_bytes = &image[segment.file.clone()];
        ram.write(GuestPhysAddr(segment.paddr), file_bytes)?;
        let bss_start = segment.paddr + file_bytes.len() as u32;
        ram.fill(
            GuestPhysAddr(bss_start),
            (segment.mem_size as usize) - file_bytes.len(),
            0,
        )?;
    }
    for range in [
        MMAP_ADDR..INFO_ADDR + INFO_SIZE as u32,
        BOOT_GDT_ADDR..BOOT_GDT_ADDR + 8 * BOOT_GDT.len() as u32,
    ] {
        if u64::from(range.start) < u64::from(kernel_end)
            && u64::from(kernel_start) < u64::from(range.end)
        {
            log::warn!("the kernel occupies [{kernel_start:#x}, {kernel_end:#x}) and the loader's data at [{:#x}, {:#x}) overwrites part of it, as under QEMU", range.start, range.end);
        }
    }
    write_boot_data(ram, &layout, cmdline, modules)?;
    let mmap_length = write_memory_map(ram)?;
    write_info(ram, &layout, modules.len() as u32, mmap_length)?;
    write_boot_gdt(ram)?;

    Ok(BootInfo {
        entry: kernel.entry,
        magic: BOOTLOADER_MAGIC,
        info_addr: INFO_ADDR,
        kernel_start,
        kernel_end,
        cmdline_addr: layout.cmdline_addr,
        modules: layout.modules.clone(),
        boot_data_end: layout.end,
        cpu: entry_state(kernel.entry),
    })
}

/// The command line QEMU hands a Multiboot kernel started with
/// `-kernel <kernel_path> -append <append>`: the path, a space, then the
/// appended text (the space is there even when nothing is appended).
pub fn qemu_cmdline(kernel_path: &str, append: &str) -> String {
    format!("{kernel_path} {append}")
}

/// The registers for a kernel starting at `entry`.
fn entry_state(entry: u32) -> EntryState {
    EntryState {
        eax: BOOTLOADER_MAGIC,
        ebx: INFO_ADDR,
        ecx: entry,
        edx: 0,
        esi: 0,
        edi: QEMU_ENTRY_EDI,
        ebp: 0,
        esp: QEMU_ENTRY_ESP,
        eip: entry,
        eflags: 0x0000_0006,
        cr0: 0x0000_0011,
        cs: 0x08,
        data_selector: 0x10,
        gdtr_base: BOOT_GDT_ADDR,
        gdtr_limit: (8 * BOOT_GDT.len() - 1) as u16,
        idtr_base: 0,
        idtr_limit: 0x3FF,
    }
}

fn read_u32(image: &[u8], offset: usize) -> Option<u32> {
    let bytes = image.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Finds the first valid Multiboot header, as QEMU does: the first
/// 4-byte-aligned magic whose checksum holds. A magic with a bad checksum
/// is reported only if no valid header follows it.
fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    let mut first_bad = None;
    let mut offset = 0;
    while offset < HEADER_SEARCH_END && offset + 12 <= image.len() {
        if read_u32(image, offset) == Some(HEADER_MAGIC) {
            let flags = read_u32(image, offset + 4).unwrap_or(0);
            let checksum = read_u32(image, offset + 8).unwrap_or(0);
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                return Ok(Header { offset, flags });
            }
            first_bad.get_or_insert(LoadError::BadChecksum {
                offset,
                flags,
                checksum,
            });
        }
        offset += 4;
    }
    Err(first_bad.unwrap_or(LoadError::NoHeader {
        searched: image.len().min(HEADER_SEARCH_LIMIT),
    }))
}

/// Reads the kernel's layout from its ELF32 program headers: every PT_LOAD
/// segment goes at its physical address (p_paddr).
fn parse_elf(image: &[u8], header: Header) -> Result<Kernel, LoadError> {
    if image.len() < SELFMAG || &image[..SELFMAG] != ELFMAG {
        return Err(LoadError::NotElf {
            flags: header.flags,
        });
    }
    match image.get(EI_CLASS).copied() {
        Some(ELFCLASS32) => {}
        Some(ELFCLASS64) => return Err(LoadError::Elf64),
        class => {
            return Err(LoadError::BadElf {
                reason: format!("unknown ELF class {class:?}"),
            })
        }
    }
    if image.get(EI_DATA).copied() != Some(ELFDATA2LSB) {
        return Err(LoadError::BadElf {
            reason: "the file is not little-endian, as every x86 ELF file is".into(),
        });
    }
    let elf = Elf::parse_header(image).map_err(|e| LoadError::BadElf {
        reason: e.to_string(),
    })?;
    if elf.e_machine != EM_386 {
        return Err(LoadError::WrongMachine {
            machine: elf.e_machine,
        });
    }
    if elf.e_phnum > 0
        && usize::from(elf.e_phentsize)
            != ProgramHeader::size(Ctx::new(Container::Little, Endian::Little))
    {
        return Err(LoadError::BadElf {
            reason: format!(
                "program header entries are {} bytes, not 32",
                elf.e_phentsize
            ),
        });
    }
    let phoff = usize::try_from(elf.e_phoff).map_err(|_| LoadError::BadElf {
        reason: "program header offset too large".into(),
    })?;
    let ctx = Ctx::new(Container::Little, Endian::Little);
    let headers =
        ProgramHeader::parse(image, phoff, usize::from(elf.e_phnum), ctx).map_err(|e| {
            LoadError::BadElf {
                reason: format!("program headers: {e}"),
            }
        })?;

    // ELF entry points are virtual addresses. Like QEMU, translate one that
    // lies in an executable segment whose virtual and physical addresses
    // differ (a higher-half kernel loaded low).
    let e_entry = elf.e_entry;
    let mut entry = e_entry;
    let mut segments = Vec::new();
    for (index, ph) in headers.iter().enumerate() {
        if ph.p_type != PT_LOAD || ph.p_memsz == 0 {
            continue;
        }
        if ph.p_filesz > ph.p_memsz {
            return Err(LoadError::SegmentFileSizeTooLarge {
                index,
                file_size: ph.p_filesz,
                mem_size: ph.p_memsz,
            });
        }
        let file_end = ph
            .p_offset
            .checked_add(ph.p_filesz)
            .filter(|&end| end <= image.len() as u64);
        let Some(file_end) = file_end else {
            return Err(LoadError::TruncatedSegment {
                index,
                start: ph.p_offset,
                end: ph.p_offset.saturating_add(ph.p_filesz),
                file_len: image.len(),
            });
        };
        // ELF32 fields are 32 bits wide, so these conversions only fail for
        // a damaged file that goblin widened from garbage.
        let (Ok(paddr), Ok(mem_size)) = (u32::try_from(ph.p_paddr), u32::try_from(ph.p_memsz))
        else {
            return Err(LoadError::BadElf {
                reason: format!("segment {index} has addresses wider than 32 bits"),
            });
        };
        if ph.p_vaddr != ph.p_paddr
            && ph.p_flags & PF_X != 0
            && e_entry >= ph.p_vaddr
            && e_entry < ph.p_vaddr.saturating_add(ph.p_filesz)
        {
            entry = e_entry - ph.p_vaddr + ph.p_paddr;
        }
        segments.push(Segment {
            paddr,
            file: ph.p_offset as usize..file_end as usize,
            mem_size,
        });
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegments);
    }
    let entry = u32::try_from(entry).map_err(|_| LoadError::EntryOutsideKernel {
        entry: entry as u32,
    })?;
    Ok(Kernel { segments, entry })
}

/// Reads the kernel's layout from the header's address fields (flag 16,
/// Multiboot §3.1.3), with QEMU's checks: the image is copied from the file
/// offset that makes the header land at `header_addr`.
fn parse_address_fields(image: &[u8], header: Header) -> Result<Kernel, LoadError> {
    let field = |n: usize| read_u32(image, header.offset + 12 + 4 * n);
    let (Some(header_addr), Some(load_addr), Some(load_end_addr), Some(bss_end_addr), Some(entry)) =
        (field(0), field(1), field(2), field(3), field(4))
    else {
        return Err(LoadError::TruncatedHeader {
            offset: header.offset,
        });
    };
    let bad = |reason| LoadError::BadAddressFields {
        reason,
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
    };
    if header_addr < load_addr {
        return Err(bad("header_addr lies below load_addr"));
    }
    let header_distance = (header_addr - load_addr) as usize;
    if header_distance > header.offset {
        return Err(bad(
            "header_addr - load_addr is larger than the header's file offset",
        ));
    }
    let text_offset = header.offset - header_distance;
    let load_size = if load_end_addr != 0 {
        if load_end_addr < load_addr {
            return Err(bad("load_end_addr lies below load_addr"));
        }
        u64::from(load_end_addr - load_addr)
    } else {
        (image.len() - text_offset) as u64
    };
    let file_end = text_offset as u64 + load_size;
    if file_end > image.len() as u64 {
        return Err(LoadError::TruncatedSegment {
            index: 0,
            start: text_offset as u64,
            end: file_end,
            file_len: image.len(),
        });
    }
    let mem_size = if bss_end_addr != 0 {
        if u64::from(bss_end_addr) < u64::from(load_addr) + load_size {
            return Err(bad("bss_end_addr lies below load_end_addr"));
        }
        u64::from(bss_end_addr - load_addr)
    } else {
        load_size
    };
    let Ok(mem_size) = u32::try_from(mem_size) else {
        return Err(bad("the image does not fit in the 32-bit address space"));
    };
    if mem_size == 0 {
        return Err(LoadError::NoLoadableSegments);
    }
    Ok(Kernel {
        segments: vec![Segment {
            paddr: load_addr,
            file: text_offset..file_end as usize,
            mem_size,
        }],
        entry,
    })
}

/// Checks that the kernel fits in RAM below the monitor's area and that its
/// entry point lies in it; returns its [start, end) in physical memory.
fn check_kernel_placement(kernel: &Kernel, ram_size: u32) -> Result<(u32, u32), LoadError> {
    let start = kernel.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
    let end = kernel.segments.iter().map(Segment::end).max().unwrap_or(0);
    for segment in &kernel.segments {
        if segment.end() > u64::from(MONITOR_AREA_START) {
            return Err(LoadError::OverlapsMonitorArea {
                start: u64::from(segment.paddr),
                end: segment.end(),
            });
        }
    }
    let size = end - u64::from(start);
    if size > u64::from(ram_size) {
        return Err(LoadError::KernelTooLarge { size, ram_size });
    }
    for segment in &kernel.segments {
        if segment.end() > u64::from(ram_size) {
            return Err(LoadError::SegmentOutsideRam {
                start: u64::from(segment.paddr),
                end: segment.end(),
                ram_size,
            });
        }
    }
    let entry = u64::from(kernel.entry);
    if !kernel
        .segments
        .iter()
        .any(|s| u64::from(s.paddr) <= entry && entry < s.end())
    {
        return Err(LoadError::EntryOutsideKernel {
            entry: kernel.entry,
        });
    }
    // The end is at most the RAM size here, so it fits in 32 bits.
    Ok((start, end as u32))
}

/// Where the loader puts everything after the kernel.
#[derive(Clone, Debug)]
struct BootDataLayout {
    /// The module list.
    mods_addr: u32,
    /// Each module command line, then the kernel's, then the loader name.
    module_cmdline_addrs: Vec<u32>,
    cmdline_addr: u32,
    loader_name_addr: u32,
    modules: Vec<LoadedModule>,
    end: u32,
}

fn page_align(value: u64) -> u64 {
    value.div_ceil(u64::from(PAGE_SIZE)) * u64::from(PAGE_SIZE)
}

/// Lays out the module list, strings and modules exactly as QEMU's
/// `load_multiboot` does, relative to the kernel's lowest address.
fn plan_boot_data(
    kernel_start: u32,
    kernel_end: u32,
    cmdline: &str,
    modules: &[Module],
    ram_size: u32,
) -> Result<BootDataLayout, LoadError> {
    let base = u64::from(kernel_start);
    let ram = u64::from(ram_size);
    let mods_offset = page_align(u64::from(kernel_end - kernel_start));
    let strings_offset = mods_offset + u64::from(MODULE_ENTRY_SIZE) * modules.len() as u64;
    let strings_len: u64 = modules
        .iter()
        .map(|m| m.cmdline.len() as u64 + 1)
        .sum::<u64>()
        + cmdline.len() as u64
        + 1;
    let data_end = strings_offset + strings_len + BOOT_LOADER_NAME.len() as u64 + 1;
    if base + data_end > ram {
        return Err(LoadError::BootDataOutsideRam {
            end: base + data_end,
            ram_size,
        });
    }
    let mut next = strings_offset;
    let mut module_cmdline_addrs = Vec::with_capacity(modules.len());
    for module in modules {
        module_cmdline_addrs.push((base + next) as u32);
        next += module.cmdline.len() as u64 + 1;
    }
    let cmdline_addr = (base + next) as u32;
    let loader_name_addr = (base + strings_offset + strings_len) as u32;

    let mut offset = page_align(data_end);
    let mut loaded = Vec::with_capacity(modules.len());
    for (index, module) in modules.iter().enumerate() {
        let start = base + offset;
        let end = start + module.data.len() as u64;
        if end > ram {
            return Err(LoadError::ModuleTooLarge {
                index,
                cmdline: module.cmdline.clone(),
                size: module.data.len(),
                start,
                end,
                ram_size,
            });
        }
        loaded.push(LoadedModule {
            start: start as u32,
            end: end as u32,
            cmdline_addr: module_cmdline_addrs[index],
        });
        offset = page_align(offset + module.data.len() as u64);
    }
    // Everything above lies below the RAM size, so it fits in 32 bits; the
    // page-aligned end may touch the RAM size itself.
    Ok(BootDataLayout {
        mods_addr: (base + mods_offset) as u32,
        module_cmdline_addrs,
        cmdline_addr,
        loader_name_addr,
        modules: loaded,
        end: (base + offset).min(ram) as u32,
    })
}

/// Writes a NUL-terminated string.
fn write_c_string(ram: &mut Ram, addr: u32, text: &str) -> Result<(), MemoryError> {
    ram.write(GuestPhysAddr(addr), text.as_bytes())?;
    ram.write(GuestPhysAddr(addr + text.len() as u32), &[0])
}

fn write_u32s(ram: &mut Ram, addr: u32, values: &[u32]) -> Result<(), MemoryError> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    ram.write(GuestPhysAddr(addr), &bytes)
}

/// Writes the modules, their list entries and all strings.
fn write_boot_data(
    ram: &mut Ram,
    layout: &BootDataLayout,
    cmdline: &str,
    modules: &[Module],
) -> Result<(), MemoryError> {
    for (index, (module, placed)) in modules.iter().zip(&layout.modules).enumerate() {
        ram.write(GuestPhysAddr(placed.start), &module.data)?;
        write_c_string(ram, layout.module_cmdline_addrs[index], &module.cmdline)?;
        // mod_start, mod_end, string, reserved (Multiboot §3.3).
        let entry = layout.mods_addr + MODULE_ENTRY_SIZE * index as u32;
        write_u32s(
            ram,
            entry,
            &[placed.start, placed.end, placed.cmdline_addr, 0],
        )?;
    }
    write_c_string(ram, layout.cmdline_addr, cmdline)?;
    write_c_string(ram, layout.loader_name_addr, BOOT_LOADER_NAME)
}

/// Writes the memory map at [`MMAP_ADDR`] and returns its length in bytes.
/// Each entry is `size` (20, not counting itself), base and length as
/// 64-bit values, and the type (Multiboot §3.3).
fn write_memory_map(ram: &mut Ram) -> Result<u32, MemoryError> {
    let mut addr = MMAP_ADDR;
    for region in pc_memory_map(ram.size()) {
        let fields = [
            MMAP_ENTRY_SIZE - 4,
            region.base as u32,
            (region.base >> 32) as u32,
            region.len as u32,
            (region.len >> 32) as u32,
            region.kind as u32,
        ];
        write_u32s(ram, addr, &fields)?;
        addr += MMAP_ENTRY_SIZE;
    }
    Ok(addr - MMAP_ADDR)
}

/// Writes the Multiboot information structure at [`INFO_ADDR`] (Multiboot
/// §3.3): only the fields its flags announce, the rest zero.
fn write_info(
    ram: &mut Ram,
    layout: &BootDataLayout,
    mods_count: u32,
    mmap_length: u32,
) -> Result<(), MemoryError> {
    let ram_size = ram.size();
    // mem_lower is conventional memory below the EBDA, mem_upper the
    // available memory from 1 MiB up to the firmware tables, both in KiB.
    let mem_lower = EBDA_START / 1024;
    let mem_upper = ram_size.saturating_sub(FIRMWARE_TABLES_SIZE + EXTENDED_MEMORY_START) / 1024;
    let mut info = [0u32; INFO_SIZE / 4];
    info[0] = INFO_FLAGS;
    info[1] = mem_lower;
    info[2] = mem_upper;
    info[3] = BOOT_DEVICE;
    info[4] = layout.cmdline_addr;
    info[5] = mods_count;
    info[6] = layout.mods_addr;
    // Words 7-10 are the symbol table fields, left zero.
    info[11] = mmap_length;
    info[12] = MMAP_ADDR;
    // Words 13-15 are drives and the config table, left zero.
    info[16] = layout.loader_name_addr;
    write_u32s(ram, INFO_ADDR, &info)
}

fn write_boot_gdt(ram: &mut Ram) -> Result<(), MemoryError> {
    let bytes: Vec<u8> = BOOT_GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    ram.write(GuestPhysAddr(BOOT_GDT_ADDR), &bytes)
}

#[cfg(test)]
mod tests;
