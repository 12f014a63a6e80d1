//! Tests of the Multiboot loader, on kernel images built by hand here. The
//! expected addresses are the ones a guest printed under QEMU 7.2.

use super::*;
use crate::loader::{pc_memory_map, MemoryKind};
use crate::memory::MIN_RAM_SIZE;
use proptest::prelude::*;

const EM_X86_64: u16 = 62;

/// One program header and its bytes, for [`build_elf`].
#[derive(Clone)]
struct ElfSegment {
    p_type: u32,
    vaddr: u32,
    paddr: u32,
    data: Vec<u8>,
    mem_size: u32,
    flags: u32,
}

impl ElfSegment {
    /// A loadable segment at the same virtual and physical address.
    fn load(addr: u32, data: Vec<u8>, mem_size: u32) -> Self {
        ElfSegment {
            p_type: PT_LOAD,
            vaddr: addr,
            paddr: addr,
            data,
            mem_size,
            flags: PF_X | 4,
        }
    }
}

/// A minimal ELF32 executable: header, program headers, then each
/// segment's bytes in order.
fn build_elf(machine: u16, entry: u32, segments: &[ElfSegment]) -> Vec<u8> {
    let phoff = 52u32;
    let mut offset = phoff + 32 * segments.len() as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&[0x7F, b'E', b'L', b'F', ELFCLASS32, ELFDATA2LSB, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&phoff.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&52u16.to_le_bytes()); // e_ehsize
    out.extend_from_slice(&32u16.to_le_bytes()); // e_phentsize
    out.extend_from_slice(&(segments.len() as u16).to_le_bytes());
    out.extend_from_slice(&40u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(out.len(), 52);
    for s in segments {
        for field in [
            s.p_type,
            offset,
            s.vaddr,
            s.paddr,
            s.data.len() as u32,
            s.mem_size,
            s.flags,
            0x1000,
        ] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        offset += s.data.len() as u32;
    }
    for s in segments {
        out.extend_from_slice(&s.data);
    }
    out
}

/// A Multiboot header with `flags` and a valid checksum.
fn mb_header(flags: u32) -> Vec<u8> {
    let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
    [HEADER_MAGIC, flags, checksum]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Kernel text: a Multiboot header, then `hlt; jmp $-1` at +12 (the entry).
fn text() -> Vec<u8> {
    let mut t = mb_header(HEADER_MEMORY_INFO | HEADER_PAGE_ALIGN);
    t.extend_from_slice(&[0xF4, 0xEB, 0xFD]);
    t
}

/// The usual test kernel: text at 1 MiB, BSS of 0x3000 bytes after a page.
fn kernel() -> Vec<u8> {
    build_elf(
        EM_386,
        0x10_000C,
        &[
            ElfSegment::load(0x10_0000, text(), 0x1000),
            ElfSegment::load(0x10_1000, vec![1, 2, 3, 4], 0x3000),
        ],
    )
}

fn ram(size: u32) -> Ram {
    Ram::anonymous(size).unwrap()
}

fn read_u32_at(ram: &Ram, addr: u32) -> u32 {
    let mut b = [0u8; 4];
    ram.read(GuestPhysAddr(addr), &mut b).unwrap();
    u32::from_le_bytes(b)
}

fn read_c_string(ram: &Ram, addr: u32) -> String {
    let bytes = &ram.as_slice()[addr as usize..];
    let len = bytes.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(bytes[..len].to_vec()).unwrap()
}

#[test]
fn elf_segments_land_at_their_physical_addresses_with_bss_zeroed() {
    let mut r = ram(MIN_RAM_SIZE);
    // Dirty the BSS first: the loader must clear it, not rely on fresh RAM.
    r.fill(GuestPhysAddr(0x10_1000), 0x5000, 0xAA).unwrap();
    let info = load_multiboot(&mut r, &kernel(), "k", &[]).unwrap();
    assert_eq!(info.entry, 0x10_000C);
    assert_eq!(info.magic, 0x2BAD_B002);
    assert_eq!(info.info_addr, 0x9500);
    assert_eq!((info.kernel_start, info.kernel_end), (0x10_0000, 0x10_4000));
    assert_eq!(&r.as_slice()[0x10_000C..0x10_000F], &[0xF4, 0xEB, 0xFD]);
    assert_eq!(&r.as_slice()[0x10_1000..0x10_1004], &[1, 2, 3, 4]);
    assert!(
        r.as_slice()[0x10_1004..0x10_4000].iter().all(|&b| b == 0),
        "BSS cleared"
    );
    assert_eq!(
        r.as_slice()[0x10_4000],
        b'k',
        "the command line follows the kernel"
    );
    assert_eq!(info.boot_data_end, 0x10_5000);
    assert_eq!(
        r.as_slice()[0x10_5000],
        0xAA,
        "nothing written past the boot data"
    );
}

#[test]
fn info_layout_matches_qemu_with_modules() {
    // QEMU 7.2, -m 128, a kernel spanning [0x100000, 0x104bd8),
    // -append "hello world", -initrd "mod1.txt arg1 arg2,mod2.bin".
    let image = build_elf(
        EM_386,
        0x10_000C,
        &[ElfSegment::load(0x10_0000, text(), 0x4BD8)],
    );
    let modules = [
        Module {
            cmdline: "mod1.txt arg1 arg2".into(),
            data: b"module one\n".to_vec(),
        },
        Module {
            cmdline: "mod2.bin".into(),
            data: vec![0x5A; 5000],
        },
    ];
    let mut r = ram(128 << 20);
    let cmdline = qemu_cmdline("probe.elf", "hello world");
    let info = load_multiboot(&mut r, &image, &cmdline, &modules).unwrap();

    let expected_info: &[(u32, u32)] = &[
        (0, 0x24F),        // flags
        (4, 0x27F),        // mem_lower
        (8, 0x1_FB80),     // mem_upper
        (12, 0x8000_FFFF), // boot_device
        (16, 0x10_503C),   // cmdline
        (20, 2),           // mods_count
        (24, 0x10_5000),   // mods_addr
        (28, 0),
        (44, 0x90),      // mmap_length
        (48, 0x9000),    // mmap_addr
        (64, 0x10_5052), // boot_loader_name
    ];
    for &(offset, value) in expected_info {
        assert_eq!(
            read_u32_at(&r, 0x9500 + offset),
            value,
            "info offset {offset}"
        );
    }
    let expected_modules: &[(u32, u32, u32, &str)] = &[
        (0x10_6000, 0x10_600B, 0x10_5020, "mod1.txt arg1 arg2"),
        (0x10_7000, 0x10_8388, 0x10_5033, "mod2.bin"),
    ];
    for (i, &(start, end, string, text)) in expected_modules.iter().enumerate() {
        let entry = 0x10_5000 + 16 * i as u32;
        assert_eq!(
            [
                read_u32_at(&r, entry),
                read_u32_at(&r, entry + 4),
                read_u32_at(&r, entry + 8)
            ],
            [start, end, string]
        );
        assert_eq!(read_c_string(&r, string), text);
        assert_eq!(
            info.modules[i],
            LoadedModule {
                start,
                end,
                cmdline_addr: string
            }
        );
    }
    assert_eq!(&r.as_slice()[0x10_6000..0x10_600B], b"module one\n");
    assert!(r.as_slice()[0x10_7000..0x10_8388]
        .iter()
        .all(|&b| b == 0x5A));
    assert_eq!(read_c_string(&r, 0x10_503C), "probe.elf hello world");
    assert_eq!(read_c_string(&r, 0x10_5052), "bt86");
    assert_eq!(info.cmdline_addr, 0x10_503C);
    assert_eq!(info.boot_data_end, 0x10_9000);
}

#[test]
fn info_layout_matches_qemu_without_modules() {
    // QEMU 7.2 with no -initrd put the command line at the first page
    // after the kernel; mem_upper follows the RAM size.
    let image = build_elf(
        EM_386,
        0x10_000C,
        &[ElfSegment::load(0x10_0000, text(), 0x4BD8)],
    );
    let cases: &[(u32, u32)] = &[(4 << 20, 0xB80), (32 << 20, 0x7B80), (128 << 20, 0x1_FB80)];
    for &(ram_size, mem_upper) in cases {
        let mut r = ram(ram_size);
        let info = load_multiboot(&mut r, &image, &qemu_cmdline("probe.elf", ""), &[]).unwrap();
        assert_eq!(info.cmdline_addr, 0x10_5000);
        assert_eq!(read_c_string(&r, 0x10_5000), "probe.elf ");
        assert_eq!(read_u32_at(&r, 0x9500 + 20), 0, "mods_count");
        assert_eq!(read_u32_at(&r, 0x9500 + 8), mem_upper, "RAM {ram_size:#x}");
    }
}

#[test]
fn memory_map_in_ram_matches_the_pc_map() {
    let mut r = ram(48 << 20);
    load_multiboot(&mut r, &kernel(), "", &[]).unwrap();
    let map = pc_memory_map(48 << 20);
    assert_eq!(read_u32_at(&r, 0x9500 + 44), 24 * map.len() as u32);
    for (i, region) in map.iter().enumerate() {
        let e = 0x9000 + 24 * i as u32;
        let base = u64::from(read_u32_at(&r, e + 4)) | u64::from(read_u32_at(&r, e + 8)) << 32;
        let len = u64::from(read_u32_at(&r, e + 12)) | u64::from(read_u32_at(&r, e + 16)) << 32;
        assert_eq!(read_u32_at(&r, e), 20, "entry {i} size field");
        assert_eq!(
            (base, len, read_u32_at(&r, e + 20)),
            (region.base, region.len, region.kind as u32),
            "entry {i}"
        );
    }
    assert_eq!(map[3].kind, MemoryKind::Available);
}

#[test]
fn boot_gdt_and_entry_state_match_qemu() {
    let mut r = ram(MIN_RAM_SIZE);
    let info = load_multiboot(&mut r, &kernel(), "", &[]).unwrap();
    let cpu = info.cpu;
    assert_eq!(
        (cpu.eax, cpu.ebx, cpu.ecx, cpu.eip),
        (0x2BAD_B002, 0x9500, 0x10_000C, 0x10_000C)
    );
    assert_eq!(
        (cpu.cr0, cpu.eflags, cpu.cs, cpu.data_selector),
        (0x11, 0x6, 0x08, 0x10)
    );
    assert_eq!(
        (cpu.gdtr_base, cpu.gdtr_limit, cpu.idtr_base, cpu.idtr_limit),
        (0xC_B2B8, 0x27, 0, 0x3FF)
    );
    assert_eq!((cpu.esp, cpu.edi), (0x6F08, 0x1000));
    // The descriptors a guest read through sgdt under QEMU, as (high, low) words.
    let measured: [(u32, u32); 5] = [
        (0, 0),
        (0x00CF_9A00, 0x0000_FFFF),
        (0x00CF_9300, 0x0000_FFFF),
        (0x0000_9E00, 0x0000_FFFF),
        (0x0000_9200, 0x0000_FFFF),
    ];
    for (i, &(high, low)) in measured.iter().enumerate() {
        let addr = cpu.gdtr_base + 8 * i as u32;
        assert_eq!(
            (read_u32_at(&r, addr + 4), read_u32_at(&r, addr)),
            (high, low),
            "descriptor {i}"
        );
    }
}

#[test]
fn higher_half_entry_is_translated_to_its_physical_address() {
    let seg = ElfSegment {
        vaddr: 0xC010_0000,
        ..ElfSegment::load(0x10_0000, text(), 0x1000)
    };
    let image = build_elf(EM_386, 0xC010_000C, std::slice::from_ref(&seg));
    let mut r = ram(MIN_RAM_SIZE);
    assert_eq!(
        load_multiboot(&mut r, &image, "", &[]).unwrap().entry,
        0x10_000C
    );
    // Without the execute flag QEMU does not translate, and then the entry
    // lies outside the kernel.
    let image = build_elf(EM_386, 0xC010_000C, &[ElfSegment { flags: 4, ..seg }]);
    let err = load_multiboot(&mut ram(MIN_RAM_SIZE), &image, "", &[]).unwrap_err();
    assert!(
        matches!(err, LoadError::EntryOutsideKernel { entry: 0xC010_000C }),
        "{err}"
    );
}

/// A flat binary with address fields: 16 bytes of padding, the header at
/// file offset 16, code after it. Loaded at 0x200000 with a BSS to 0x203000.
fn aout_image(
    header_addr: u32,
    load_addr: u32,
    load_end: u32,
    bss_end: u32,
    entry: u32,
) -> Vec<u8> {
    let flags = HEADER_ADDRESS_FIELDS | HEADER_MEMORY_INFO;
    let mut image = vec![0x90; 16];
    image.extend(mb_header(flags));
    for field in [header_addr, load_addr, load_end, bss_end, entry] {
        image.extend_from_slice(&field.to_le_bytes());
    }
    image.extend_from_slice(&[0xF4; 20]);
    image
}

#[test]
fn address_fields_load_a_flat_image() {
    let image = aout_image(0x20_0010, 0x20_0000, 0, 0x20_3000, 0x20_0030);
    let mut r = ram(4 << 20);
    r.fill(GuestPhysAddr(0x20_0000), 0x3000, 0xAA).unwrap();
    let info = load_multiboot(&mut r, &image, "", &[]).unwrap();
    assert_eq!(info.entry, 0x20_0030);
    assert_eq!((info.kernel_start, info.kernel_end), (0x20_0000, 0x20_3000));
    assert_eq!(
        &r.as_slice()[0x20_0000..0x20_0000 + image.len()],
        &image[..]
    );
    assert!(r.as_slice()[0x20_0000 + image.len()..0x20_3000]
        .iter()
        .all(|&b| b == 0));
    // load_end_addr limits the bytes copied; the rest up to bss_end is zero.
    let image = aout_image(0x20_0010, 0x20_0000, 0x20_0030, 0, 0x20_002C);
    let mut r = ram(4 << 20);
    let info = load_multiboot(&mut r, &image, "", &[]).unwrap();
    assert_eq!(info.kernel_end, 0x20_0030);
    assert_eq!(r.as_slice()[0x20_0030], 0);
}

/// One refused image and the error it must give.
struct BadCase {
    name: &'static str,
    image: Vec<u8>,
    modules: Vec<Module>,
    ram_size: u32,
    expect: fn(&LoadError) -> bool,
}

fn bad(name: &'static str, image: Vec<u8>, expect: fn(&LoadError) -> bool) -> BadCase {
    BadCase {
        name,
        image,
        modules: Vec::new(),
        ram_size: 4 << 20,
        expect,
    }
}

fn bad_cases() -> Vec<BadCase> {
    let mut not_elf = vec![0u8; 64];
    not_elf[8..20].copy_from_slice(&mb_header(HEADER_MEMORY_INFO));

    let mut elf64 = kernel();
    elf64[EI_CLASS] = ELFCLASS64;
    elf64[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());

    let no_header = build_elf(
        EM_386,
        0x10_0000,
        &[ElfSegment::load(0x10_0000, vec![0xF4; 16], 16)],
    );

    let mut bad_checksum = kernel();
    let at = bad_checksum
        .windows(4)
        .position(|w| w == HEADER_MAGIC.to_le_bytes())
        .unwrap();
    bad_checksum[at + 8] ^= 1;

    let mut truncated = kernel();
    truncated.truncate(truncated.len() - 2);

    let mut big_filesz = text();
    big_filesz.resize(64, 0);

    let module = |size: usize| {
        vec![Module {
            cmdline: "initrd".into(),
            data: vec![0; size],
        }]
    };

    vec![
        bad("not ELF, no address fields", not_elf, |e| {
            matches!(e, LoadError::NotElf { .. })
        }),
        bad("64-bit ELF", elf64, |e| matches!(e, LoadError::Elf64)),
        bad(
            "no Multiboot header",
            no_header,
            |e| matches!(e, LoadError::NoHeader { searched } if *searched > 0),
        ),
        bad("bad checksum", bad_checksum, |e| {
            matches!(e, LoadError::BadChecksum { .. })
        }),
        bad("empty file", Vec::new(), |e| {
            matches!(e, LoadError::NoHeader { searched: 0 })
        }),
        bad(
            "wrong machine",
            build_elf(
                40,
                0x10_000C,
                &[ElfSegment::load(0x10_0000, text(), 0x1000)],
            ),
            |e| matches!(e, LoadError::WrongMachine { machine: 40 }),
        ),
        bad("truncated segment", truncated, |e| {
            matches!(e, LoadError::TruncatedSegment { index: 1, .. })
        }),
        bad(
            "file size above memory size",
            build_elf(
                EM_386,
                0x10_000C,
                &[ElfSegment::load(0x10_0000, big_filesz, 32)],
            ),
            |e| {
                matches!(
                    e,
                    LoadError::SegmentFileSizeTooLarge {
                        index: 0,
                        file_size: 64,
                        mem_size: 32
                    }
                )
            },
        ),
        bad(
            "no loadable segment",
            build_elf(
                EM_386,
                0x10_000C,
                &[ElfSegment {
                    p_type: 4,
                    ..ElfSegment::load(0x10_0000, text(), 0x1000)
                }],
            ),
            |e| matches!(e, LoadError::NoLoadableSegments),
        ),
        bad(
            "entry outside the kernel",
            build_elf(
                EM_386,
                0x10_2000,
                &[ElfSegment::load(0x10_0000, text(), 0x1000)],
            ),
            |e| matches!(e, LoadError::EntryOutsideKernel { entry: 0x10_2000 }),
        ),
        bad(
            "entry outside RAM",
            build_elf(
                EM_386,
                0x8000_0000,
                &[ElfSegment::load(0x10_0000, text(), 0x1000)],
            ),
            |e| matches!(e, LoadError::EntryOutsideKernel { entry: 0x8000_0000 }),
        ),
        bad(
            "kernel larger than RAM",
            build_elf(
                EM_386,
                0x10_000C,
                &[ElfSegment::load(0x10_0000, text(), 0x50_0000)],
            ),
            |e| {
                matches!(
                    e,
                    LoadError::KernelTooLarge {
                        size: 0x50_0000,
                        ram_size: 0x40_0000
                    }
                )
            },
        ),
        bad(
            "segment past the end of RAM",
            build_elf(
                EM_386,
                0x100_000C,
                &[ElfSegment::load(0x100_0000, text(), 0x1000)],
            ),
            |e| {
                matches!(
                    e,
                    LoadError::SegmentOutsideRam {
                        start: 0x100_0000,
                        ..
                    }
                )
            },
        ),
        bad(
            "segment in the monitor's area",
            build_elf(
                EM_386,
                0xFFBF_F00C,
                &[ElfSegment::load(0xFFBF_F000, text(), 0x2000)],
            ),
            |e| {
                matches!(
                    e,
                    LoadError::OverlapsMonitorArea {
                        start: 0xFFBF_F000,
                        end: 0xFFC0_1000
                    }
                )
            },
        ),
        bad(
            "segment wrapping past 4 GiB",
            build_elf(
                EM_386,
                0xFFFF_F00C,
                &[ElfSegment::load(0xFFFF_F000, text(), 0x2000)],
            ),
            |e| matches!(e, LoadError::OverlapsMonitorArea { .. }),
        ),
        BadCase {
            modules: module(0x30_0000),
            ..bad("module too large", kernel(), |e| {
                matches!(
                    e,
                    LoadError::ModuleTooLarge {
                        index: 0,
                        size: 0x30_0000,
                        start: 0x10_5000,
                        ..
                    }
                )
            })
        },
        bad(
            "address fields cut off",
            {
                let mut i = aout_image(0x20_0010, 0x20_0000, 0, 0, 0x20_0030);
                i.truncate(40);
                i
            },
            |e| matches!(e, LoadError::TruncatedHeader { offset: 16 }),
        ),
        bad(
            "header_addr below load_addr",
            aout_image(0x1F_0000, 0x20_0000, 0, 0, 0x20_0030),
            |e| matches!(e, LoadError::BadAddressFields { .. }),
        ),
        bad(
            "header_addr beyond its file offset",
            aout_image(0x20_0100, 0x20_0000, 0, 0, 0x20_0030),
            |e| matches!(e, LoadError::BadAddressFields { .. }),
        ),
        bad(
            "load_end_addr below load_addr",
            aout_image(0x20_0010, 0x20_0000, 0x10_0000, 0, 0x20_0030),
            |e| matches!(e, LoadError::BadAddressFields { .. }),
        ),
        bad(
            "bss_end_addr below load_end_addr",
            aout_image(0x20_0010, 0x20_0000, 0x20_0030, 0x20_0020, 0x20_0010),
            |e| matches!(e, LoadError::BadAddressFields { .. }),
        ),
        bad(
            "load_end_addr past the end of the file",
            aout_image(0x20_0010, 0x20_0000, 0x20_1000, 0, 0x20_0010),
            |e| matches!(e, LoadError::TruncatedSegment { .. }),
        ),
        bad(
            "address-field entry outside the image",
            aout_image(0x20_0010, 0x20_0000, 0, 0, 0x30_0000),
            |e| matches!(e, LoadError::EntryOutsideKernel { entry: 0x30_0000 }),
        ),
    ]
}

#[test]
fn bad_images_are_refused_with_their_own_error_and_leave_ram_untouched() {
    for case in bad_cases() {
        let mut r = ram(case.ram_size);
        let result = load_multiboot(&mut r, &case.image, "cmdline", &case.modules);
        let err = match result {
            Ok(info) => panic!("{}: loaded, entry {:#x}", case.name, info.entry),
            Err(err) => err,
        };
        assert!((case.expect)(&err), "{}: wrong error: {err:?}", case.name);
        let message = err.to_string();
        assert!(
            message.contains(';'),
            "{}: the message must say what to do: {message}",
            case.name
        );
        assert!(
            r.as_slice().iter().all(|&b| b == 0),
            "{}: RAM was written",
            case.name
        );
    }
}

#[test]
fn bad_checksum_before_a_good_header_is_skipped() {
    let mut image = vec![0u8; 16];
    image[..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    image.extend(aout_image(0x20_0020, 0x20_0000, 0, 0, 0x20_0040));
    let info = load_multiboot(&mut ram(4 << 20), &image, "", &[]).unwrap();
    assert_eq!(info.entry, 0x20_0040);
}

#[test]
fn header_beyond_the_search_window_is_not_found() {
    // QEMU starts no search at or after 8192 - 48.
    let cases: &[(usize, bool)] = &[(8140, true), (8144, false)];
    for &(offset, found) in cases {
        let mut image = vec![0u8; offset];
        image.extend(mb_header(0));
        image.resize(offset + 64, 0);
        assert_eq!(find_header(&image).is_ok(), found, "offset {offset}");
    }
}

#[test]
fn qemu_cmdline_prefixes_the_kernel_path() {
    assert_eq!(
        qemu_cmdline("guests/hello.elf", "a=1 b"),
        "guests/hello.elf a=1 b"
    );
    assert_eq!(qemu_cmdline("k", ""), "k ");
}

/// Valid images to mutate in the property tests.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        kernel(),
        aout_image(0x20_0010, 0x20_0000, 0, 0x20_3000, 0x20_0030),
        build_elf(
            EM_386,
            0xC010_000C,
            &[ElfSegment {
                vaddr: 0xC010_0000,
                ..ElfSegment::load(0x10_0000, text(), 0x1000)
            }],
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(image in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut r = ram(MIN_RAM_SIZE);
        let _ = load_multiboot(&mut r, &image, "", &[]);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        flags in any::<u32>(),
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut image = mb_header(flags);
        image.extend(tail);
        let mut r = ram(MIN_RAM_SIZE);
        let _ = load_multiboot(&mut r, &image, "", &[]);
    }

    #[test]
    fn mutated_valid_images_never_panic(
        seed in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        words in proptest::collection::vec((any::<prop::sample::Index>(), any::<u32>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        module_size in 0usize..0x2000,
        cmdline in "[ -~]{0,40}",
    ) {
        let mut image = seeds().swap_remove(seed);
        for (at, byte) in edits {
            let i = at.index(image.len());
            image[i] = byte;
        }
        // Whole-word edits reach header fields with plausible large values.
        for (at, word) in words {
            let i = at.index(image.len() / 4) * 4;
            image[i..i + 4].copy_from_slice(&word.to_le_bytes());
        }
        if let Some(cut) = cut {
            let len = cut.index(image.len() + 1);
            image.truncate(len);
        }
        let modules = [Module { cmdline: cmdline.clone(), data: vec![7; module_size] }];
        let mut r = ram(MIN_RAM_SIZE);
        if let Ok(info) = load_multiboot(&mut r, &image, &cmdline, &modules) {
            // Whatever loaded must be where the loader says it is.
            prop_assert!(info.kernel_start < info.kernel_end);
            prop_assert!(info.kernel_end <= r.size());
            prop_assert!(info.entry >= info.kernel_start && info.entry < info.kernel_end);
            prop_assert!(info.modules[0].end <= r.size());
        }
    }
}
