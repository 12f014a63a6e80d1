//! Tiny Multiboot kernels built byte by byte, for the tests that need a
//! guest with one exact property: a kernel that spins forever, one that
//! writes a chosen value to isa-debug-exit, or a damaged image that the
//! loader must refuse with a clear message.
//!
//! This module owns only the ELF and Multiboot file formats, written out by
//! hand so that a reader can check every field against the specifications
//! (the System V ABI's ELF chapter, and the Multiboot 0.6.96 specification,
//! section 3.1). It must not run anything, and it knows nothing about how
//! bt86 loads a kernel beyond what those documents say.

use std::path::{Path, PathBuf};

/// Where a tiny kernel is loaded unless a test says otherwise: 1 MiB, the
/// first address above the PC's legacy hole, where Multiboot kernels
/// conventionally live.
pub const LOAD_ADDR: u32 = 0x0010_0000;

/// The magic number that starts a Multiboot header (Multiboot §3.1.1).
pub const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;

/// Header flags 0 and 1: align modules on pages, and pass the memory map.
/// Real kernels set these, and neither changes how the image is loaded.
pub const MULTIBOOT_FLAGS: u32 = 0x0000_0003;

/// `e_machine` of an ELF file for the Intel 80386.
const EM_386: u16 = 3;
/// `e_machine` of an ELF file for x86-64.
const EM_X86_64: u16 = 62;
/// `e_type` of an executable.
const ET_EXEC: u16 = 2;
/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// `p_flags`: readable, writable and executable.
const PF_RWX: u32 = 7;

/// What a tiny kernel carries in place of a Multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// A valid header: magic, flags and a checksum that makes their sum 0.
    Valid,
    /// The magic and flags of a valid header, but a checksum off by one, so
    /// the sum is not 0 modulo 2^32 (Multiboot §3.1.2).
    BadChecksum,
    /// Four zero words where the header would be: no magic anywhere.
    Absent,
}

/// The ELF class of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// ELF32 for the 80386: what a Multiboot loader boots.
    Elf32,
    /// ELF64 for x86-64: what a Multiboot loader must refuse.
    Elf64,
}

/// A kernel with one loadable segment that holds, in this order, the ELF
/// header, the one program header, the Multiboot header and the code. The
/// whole file is the segment, so the code's physical address is the load
/// address plus its file offset.
#[derive(Clone, Debug)]
pub struct TinyKernel {
    code: Vec<u8>,
    class: Class,
    header: Header,
    load_addr: u32,
    entry: Option<u64>,
    bss: u64,
}

impl TinyKernel {
    /// A valid ELF32 Multiboot kernel at [`LOAD_ADDR`] that starts
    /// executing `code`.
    pub fn new(code: &[u8]) -> Self {
        TinyKernel {
            code: code.to_vec(),
            class: Class::Elf32,
            header: Header::Valid,
            load_addr: LOAD_ADDR,
            entry: None,
            bss: 0,
        }
    }

    /// The same kernel with a different ELF class.
    pub fn class(mut self, class: Class) -> Self {
        self.class = class;
        self
    }

    /// The same kernel with a different Multiboot header.
    pub fn header(mut self, header: Header) -> Self {
        self.header = header;
        self
    }

    /// The same kernel loaded at physical (and virtual) address `addr`.
    pub fn load_at(mut self, addr: u32) -> Self {
        self.load_addr = addr;
        self
    }

    /// The same kernel with `e_entry` set to `addr` instead of the first
    /// byte of the code.
    pub fn entry(mut self, addr: u64) -> Self {
        self.entry = Some(addr);
        self
    }

    /// The same kernel with `bytes` of zeroed memory (BSS) after the file
    /// bytes: `p_memsz` exceeds `p_filesz` by this much.
    pub fn bss(mut self, bytes: u64) -> Self {
        self.bss = bytes;
        self
    }

    /// The file offset of the code: after the ELF header (52 or 64 bytes),
    /// one program header (32 or 56 bytes) and the 12-byte Multiboot
    /// header. Both sums are multiples of 4, as the Multiboot header's
    /// alignment requires (Multiboot §3.1.1).
    pub fn code_offset(&self) -> usize {
        self.multiboot_offset() + 12
    }

    /// The physical address of the first byte of the code.
    pub fn code_addr(&self) -> u32 {
        self.load_addr + self.code_offset() as u32
    }

    fn multiboot_offset(&self) -> usize {
        match self.class {
            Class::Elf32 => 52 + 32,
            Class::Elf64 => 64 + 56,
        }
    }

    /// The image, byte for byte.
    pub fn build(&self) -> Vec<u8> {
        let file_size = (self.code_offset() + self.code.len()) as u64;
        let mem_size = file_size + self.bss;
        let entry = self.entry.unwrap_or(u64::from(self.code_addr()));
        let addr = u64::from(self.load_addr);
        let mut image = Vec::new();

        // e_ident: the magic, the class, little-endian data (x86 is
        // little-endian), ELF version 1, the System V ABI, padding.
        image.extend_from_slice(b"\x7fELF");
        image.push(match self.class {
            Class::Elf32 => 1,
            Class::Elf64 => 2,
        });
        image.extend_from_slice(&[1, 1, 0]);
        image.extend_from_slice(&[0; 8]);
        match self.class {
            Class::Elf32 => {
                put16(&mut image, ET_EXEC);
                put16(&mut image, EM_386);
                put32(&mut image, 1); // e_version
                put32(&mut image, entry as u32); // e_entry
                put32(&mut image, 52); // e_phoff: right after this header
                put32(&mut image, 0); // e_shoff: no section headers
                put32(&mut image, 0); // e_flags
                put16(&mut image, 52); // e_ehsize
                put16(&mut image, 32); // e_phentsize
                put16(&mut image, 1); // e_phnum
                put16(&mut image, 40); // e_shentsize
                put16(&mut image, 0); // e_shnum
                put16(&mut image, 0); // e_shstrndx
                                      // The program header: the whole file is one segment.
                put32(&mut image, PT_LOAD);
                put32(&mut image, 0); // p_offset
                put32(&mut image, addr as u32); // p_vaddr
                put32(&mut image, addr as u32); // p_paddr
                put32(&mut image, file_size as u32); // p_filesz
                put32(&mut image, mem_size as u32); // p_memsz
                put32(&mut image, PF_RWX);
                put32(&mut image, 0x1000); // p_align
            }
            Class::Elf64 => {
                put16(&mut image, ET_EXEC);
                put16(&mut image, EM_X86_64);
                put32(&mut image, 1); // e_version
                put64(&mut image, entry); // e_entry
                put64(&mut image, 64); // e_phoff: right after this header
                put64(&mut image, 0); // e_shoff: no section headers
                put32(&mut image, 0); // e_flags
                put16(&mut image, 64); // e_ehsize
                put16(&mut image, 56); // e_phentsize
                put16(&mut image, 1); // e_phnum
                put16(&mut image, 64); // e_shentsize
                put16(&mut image, 0); // e_shnum
                put16(&mut image, 0); // e_shstrndx
                                      // The program header; ELF64 moves p_flags second.
                put32(&mut image, PT_LOAD);
                put32(&mut image, PF_RWX);
                put64(&mut image, 0); // p_offset
                put64(&mut image, addr); // p_vaddr
                put64(&mut image, addr); // p_paddr
                put64(&mut image, file_size); // p_filesz
                put64(&mut image, mem_size); // p_memsz
                put64(&mut image, 0x1000); // p_align
            }
        }
        debug_assert_eq!(image.len(), self.multiboot_offset());

        let checksum = 0u32
            .wrapping_sub(MULTIBOOT_MAGIC)
            .wrapping_sub(MULTIBOOT_FLAGS);
        match self.header {
            Header::Valid => {
                put32(&mut image, MULTIBOOT_MAGIC);
                put32(&mut image, MULTIBOOT_FLAGS);
                put32(&mut image, checksum);
            }
            Header::BadChecksum => {
                put32(&mut image, MULTIBOOT_MAGIC);
                put32(&mut image, MULTIBOOT_FLAGS);
                put32(&mut image, checksum.wrapping_add(1));
            }
            Header::Absent => image.extend_from_slice(&[0; 12]),
        }
        image.extend_from_slice(&self.code);
        image
    }

    /// Builds the image and writes it to `dir/name`, returning the path.
    ///
    /// # Panics
    /// If the file cannot be written: the test cannot go on without it.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        super::write_file(dir, name, &self.build())
    }
}

fn put16(image: &mut Vec<u8>, value: u16) {
    image.extend_from_slice(&value.to_le_bytes());
}

fn put32(image: &mut Vec<u8>, value: u32) {
    image.extend_from_slice(&value.to_le_bytes());
}

fn put64(image: &mut Vec<u8>, value: u64) {
    image.extend_from_slice(&value.to_le_bytes());
}

/// Machine code for the tiny kernels, a few instructions each, with the
/// encoding from the Intel SDM Vol. 2 beside each.
pub mod code {
    /// `jmp $` (EB FE, a short jump of -2 to itself): spins forever with no
    /// exit to the monitor once the translation is chained to itself.
    pub const SPIN: &[u8] = &[0xEB, 0xFE];

    /// `jmp $` after `cli` and after turning the PIT's periodic tick into a
    /// one-shot that has already fired (channel 0, mode 0, count 1): no
    /// device has anything left to do, so nothing but the run's own
    /// deadline can bring the guest back to the monitor.
    pub const SPIN_WITHOUT_DEVICES: &[u8] = &[
        0xFA, // cli
        0xB0, 0x30, 0xE6, 0x43, // mov al, 0x30; out 0x43, al
        0xB0, 0x01, 0xE6, 0x40, // mov al, 1; out 0x40, al
        0xB0, 0x00, 0xE6, 0x40, // mov al, 0; out 0x40, al
        0xEB, 0xFE, // jmp $
    ];

    /// `cli; hlt` (FA, F4): halts with interrupts disabled, for good.
    pub const CLI_HLT: &[u8] = &[0xFA, 0xF4];

    /// `sti; hlt` (FB, F4): halts waiting for an interrupt. STI delays
    /// interrupts by one instruction, so the HLT itself is reached.
    pub const STI_HLT: &[u8] = &[0xFB, 0xF4];

    /// `mov al, value; out 0xf4, al` (B0 ib, E6 ib), then `cli; hlt` in
    /// case the write did not end the machine: writes `value` to QEMU's
    /// isa-debug-exit device.
    pub fn debug_exit(value: u8) -> Vec<u8> {
        let mut code = vec![0xB0, value, 0xE6, 0xF4];
        code.extend_from_slice(CLI_HLT);
        code
    }

    /// `mov dx, 0x604; mov ax, 0x2000; out dx, ax` (66 BA iw, 66 B8 iw,
    /// 66 EF), then `cli; hlt`: sets SLP_EN in QEMU's ACPI PM1a control
    /// register, which powers the machine off.
    pub fn acpi_poweroff() -> Vec<u8> {
        let mut code = vec![0x66, 0xBA, 0x04, 0x06, 0x66, 0xB8, 0x00, 0x20, 0x66, 0xEF];
        code.extend_from_slice(CLI_HLT);
        code
    }
}
