//! Differential tests for memory virtualization: bt86 against QEMU on the
//! guests that turn paging on.
//!
//! - `pagetest`: page-table semantics, one line per check (Accessed and
//!   Dirty bits, CR0.WP, U/S and R/W at CPL 0 and 3, #PF error codes and
//!   CR2, 4 MiB pages, CR3 switches, invlpg, mappings at 0, 0xFFC00000 and
//!   0xFFFFF000, self-modifying code including the running block).
//! - `paging`: a kernel that loads three user programs from a disk image
//!   into separate address spaces, grows their heaps on page faults, runs a
//!   tiny JIT, and writes a result file back to the disk.
//! - `pagebench`: the memory-virtualization micro-benchmarks, run here with
//!   small iteration counts so that their checksums can be checked.
//!
//! Each guest prints deterministic text to COM1 and exits through
//! isa-debug-exit; bt86 must print the same bytes and exit with the same
//! status as QEMU, and leave the same disk image behind. The `qemu_*`
//! tests check the reference half alone, against values the Intel SDM
//! fixes or that are recomputed here, so that a broken guest is told apart
//! from a broken monitor. Every comparison with QEMU is skipped, with a
//! message, when qemu-system-i386 is not installed.

mod common;

use std::path::{Path, PathBuf};

use common::{compare_with_qemu, diff, guest, qemu, run_bt86, run_qemu, GUEST_PASS};

// ---------------------------------------------------------------------
// pagetest
// ---------------------------------------------------------------------

/// Runs `name` with `args` under bt86 alone, for when QEMU is missing, and
/// fails unless it passes.
fn run_bt86_passing(name: &str, args: &[&str]) -> Vec<u8> {
    let (out, status) = run_bt86(&guest(name), args);
    assert_eq!(
        status,
        GUEST_PASS,
        "guest {name} {args:?} under bt86 exited with {status}; output:\n{}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// bt86 prints what QEMU prints, which is [`PAGETEST_LINES`] (checked
/// against bt86 alone when QEMU is missing).
#[test]
fn pagetest_matches_qemu() {
    let out =
        compare_with_qemu("pagetest", &[], &[]).unwrap_or_else(|| run_bt86_passing("pagetest", &[]));
    let mut want = PAGETEST_LINES.join("\n");
    want.push('\n');
    if out != want.as_bytes() {
        panic!(
            "pagetest under bt86 did not print the expected lines\n{}",
            diff("expected", want.as_bytes(), "bt86", &out)
        );
    }
}

/// Every line pagetest must print. Each follows from the Intel SDM and the
/// layout the guest chose: frame n of the test pool is physical
/// 0x00400000 + n * 0x1000 and word k of it starts as
/// 0x5A000000 | n << 16 | k; the 4 MiB page at physical 0x00C00000 starts
/// with 0x0C000000 + offset in each word of its first 16 KiB.
const PAGETEST_LINES: &[&str] = &[
    "pagetest: paging on, CR0.PG=1 CR4.PSE=1 CR0.WP=0",
    // SDM Vol. 3A 4.8: a read sets A in the PDE and the PTE, a write sets D
    // in the PTE (in the PDE for a 4 MiB page); nothing sets D on a PDE
    // that points to a page table.
    "-- accessed and dirty bits",
    "read: value 0x5a0e0000, PDE 2 flags 0x027, PTE 0x0040e023",
    "write: PDE 2 flags 0x027, PTE 0x0040e063",
    "A and D cleared, invlpg: PTE 0x0040e003",
    "read: value 0x00000ad0, PTE 0x0040e023",
    "write: PTE 0x0040e063",
    "cleared again, a write first: PTE 0x0040e063",
    "4 MiB page read: value 0x0c000100, PDE 0x00c000a3",
    "4 MiB page write: PDE 0x00c000e3, other PDE 0x00c00083",
    // SDM Vol. 3A 4.6.1: with WP=0 supervisor writes ignore R/W; with WP=1
    // they fault with P=1, W=1 (error code 3), CR2 the address written.
    "-- CR0.WP",
    "CR0.WP=0",
    "WP=0: supervisor write to read-only supervisor page: written",
    "  read back 0x11110000, PTE 0x0040d061",
    "WP=0: supervisor write to read-only user page: written",
    "WP=0: supervisor write through a read-only PDE: written",
    "CR0.WP=1",
    "WP=1: supervisor write to read-only supervisor page: #PF(0x0003) CR2=0x0080400c",
    "  word unchanged: 0x5a0d0003",
    "WP=1: supervisor write to read-only user page: #PF(0x0003) CR2=0x00013010",
    "WP=1: supervisor write through a read-only PDE: #PF(0x0003) CR2=0x01400010",
    "WP=1: supervisor read of the read-only page: value 0x11110000",
    "CR0.WP=0",
    // SDM Vol. 3A 4.6 and 4.7: error code bits P (protection), W (write),
    // U (CPL 3); the rights are the stricter of the PDE's and the PTE's.
    "-- U/S and R/W, user pages below every supervisor page",
    "read of a read-only user page at CPL 3: value 0x5a040000",
    "write to a read-only user page at CPL 3: #PF(0x0007) CR2=0x00013024",
    "read of a not-present page at CPL 3: #PF(0x0004) CR2=0x00014124",
    "write to a not-present page at CPL 3: #PF(0x0006) CR2=0x00014128",
    "read of a not-present page at CPL 0: #PF(0x0000) CR2=0x00014abc",
    "write to a not-present page at CPL 0: #PF(0x0002) CR2=0x00014ac0",
    "read of kernel code at CPL 3: #PF(0x0005) CR2=0x00100000",
    "write to kernel code at CPL 3: #PF(0x0007) CR2=0x00100010",
    "read of page 0 (supervisor) at CPL 3: #PF(0x0005) CR2=0x00000010",
    "read, PTE user but PDE supervisor at CPL 3: #PF(0x0005) CR2=0x01000040",
    "write, PTE writable but PDE read-only at CPL 3: #PF(0x0007) CR2=0x01400044",
    "read, PTE writable but PDE read-only at CPL 3: value 0x5a190000",
    "write to its own stack page at CPL 3: written",
    "  the kernel reads 0x00005555 there",
    // The layout a monitor cannot protect by cutting user segments short
    // at the lowest supervisor page.
    "-- U/S, a user page above a supervisor page",
    "kernel writes the supervisor page 0x00800000: written",
    "kernel reads it back: value 0x5e5e0001",
    "read of the user page 0x00900000 at CPL 3: value 0x5a110000",
    "write to the user page at CPL 3: written",
    "  the kernel reads 0x00000be0 there",
    "read of the supervisor page at CPL 3: #PF(0x0005) CR2=0x00800030",
    "write to the supervisor page at CPL 3: #PF(0x0007) CR2=0x00800034",
    "kernel reads the supervisor page again: value 0x5e5e0001",
    "read of the user page again at CPL 3: value 0x00000be0",
    "call into the user page at CPL 3: value 0x0c0de003",
    "call into the supervisor page at CPL 3: #PF(0x0005) CR2=0x00800800",
    "kernel call 1 into the supervisor page: value 0x0c0de000",
    "kernel call 2 into the supervisor page: value 0x0c0de000",
    "kernel call 3 into the supervisor page: value 0x0c0de000",
    "call into the supervisor page after the kernel's at CPL 3: #PF(0x0005) CR2=0x00800800",
    // SDM Vol. 3A 6.5: #PF is a fault, so IRET retries the access.
    "-- #PF handler repairs the PTE and returns",
    "read of a not-present page at CPL 0: 1 fault(s), #PF(0x0000) CR2=0x00803010 at CPL 0, then value 0x5a0c0004, PTE 0x0040c023",
    "write to a read-only page with WP=1 at CPL 0: 1 fault(s), #PF(0x0003) CR2=0x00804020 at CPL 0, then value 0x00003030, PTE 0x0040d063",
    "read of a not-present user page at CPL 3: 1 fault(s), #PF(0x0004) CR2=0x00901040 at CPL 3, then value 0x5a120010, PTE 0x00412027",
    "write to a read-only user page at CPL 3: 1 fault(s), #PF(0x0007) CR2=0x00902044 at CPL 3, then value 0x00004040, PTE 0x00413067",
    // SDM Vol. 3A 4.3: a PDE with PS=1 maps 4 MiB from bits 31:22.
    "-- 4 MiB pages aliasing one physical page, and a 4 KiB alias",
    "read 0x40003000: 0x0c003000",
    "written through 0x40003004, read through 0x40403004: 0x12345678, through 0x00805004: 0x12345678",
    "written through 0x00805008, read through 0x40003008: 0x9abcdef0, through 0x40403008: 0x9abcdef0",
    "last word written through 0x407ffffc, read through 0x403ffffc: 0xe0e0e0e0",
    // The same linear addresses hold different data and code in each space.
    "-- CR3 switches between two address spaces",
    "round 1: space A data 0x5a140000 code returns 0xa; space B data 0x5a150000 code returns 0xb",
    "round 2: space A data 0x5a140000 code returns 0xa; space B data 0x5a150000 code returns 0xb",
    "round 3: space A data 0x5a140000 code returns 0xa; space B data 0x5a150000 code returns 0xb",
    "written in B, read in A: 0x5a140001; B's frame holds 0xbbbb0004",
    "after rewriting A's code: A returns 0xaa, B returns 0xb",
    // SDM Vol. 2A INVLPG: the next access walks the new PTE.
    "-- invlpg after changing a PTE",
    "PTE 0x0040f023: 0x5a0f0000",
    "PTE 0x00410023, invlpg: 0x5a100000",
    "PTE 0x0040f023, invlpg: 0x5a0f0000",
    "PTE 0x00410023, invlpg: 0x5a100000",
    "PTE 0x0040f023, invlpg: 0x5a0f0000",
    "written through it: F(15) holds 0x15151515, F(16) holds 0x5a100004",
    // Page 0 and the top 4 MiB are ordinary pages to the guest.
    "-- mappings at 0, 0xFFC00000 and 0xFFFFF000",
    "0x00000000: first word 0x5a000000; wrote +0xffc and +0x200, read back 0xf00d0000 0xf00d0100, frame holds 0xf00d0000 0xf00d0100",
    "0x00000000: code at +0x400 returns 0xc0de0000, at +0xff0 0xc0de0100, patched 0xc0de0200",
    "0xffc00000: first word 0x5a1e0000; wrote +0xffc and +0x200, read back 0xf00d0001 0xf00d0101, frame holds 0xf00d0001 0xf00d0101",
    "0xffc00000: code at +0x400 returns 0xc0de0001, at +0xff0 0xc0de0101, patched 0xc0de0201",
    "0xfffff000: first word 0x5a1f0000; wrote +0xffc and +0x200, read back 0xf00d0002 0xf00d0102, frame holds 0xf00d0002 0xf00d0102",
    "0xfffff000: code at +0x400 returns 0xc0de0002, at +0xff0 0xc0de0102, patched 0xc0de0202",
    "the byte at 0xffffffff: 0xf0",
    "written through the frame's alias, read at 0x00000020: 0x00c0ffee",
    // SDM Vol. 3A 8.1.3: a store into code, even the next instruction,
    // takes effect before that code runs.
    "-- a page mapped to physical memory with nothing behind it",
    "read 0xe0000010: 0x00000000",
    "after a write: 0x00000000; PTE flags 0x063",
    "byte 0x00, word 0x0000",
    "-- self-modifying code",
    "written through 0x00801000, run through 0x00802000: 0x5101, patched 0x5102; the other way 0x5103, 0x5103",
    "patched immediate: 0x11111111, then 0x33333333, then 0x44444444",
    "store into the running block, run 1: next immediate 0x22222222, next opcode gives 0xffffffff, loop sum 10",
    "store into the running block, run 2: next immediate 0x22222222, next opcode gives 0xffffffff, loop sum 10",
    "pagetest: done",
];

/// pagetest under QEMU alone prints exactly [`PAGETEST_LINES`] and passes.
/// This passes without a working monitor.
#[test]
fn qemu_pagetest_prints_what_the_sdm_says() {
    if qemu().is_none() {
        return;
    }
    let (out, status) = run_qemu(&guest("pagetest"), &[]);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        status, GUEST_PASS,
        "pagetest under QEMU exited with {status}; output:\n{text}"
    );
    let mut want = PAGETEST_LINES.join("\n");
    want.push('\n');
    if text != want {
        panic!(
            "pagetest under QEMU did not print the expected lines\n{}",
            diff("expected", want.as_bytes(), "qemu", &out)
        );
    }
}

// ---------------------------------------------------------------------
// paging: user programs from a disk image, and the result file
// ---------------------------------------------------------------------

const SECTOR: usize = 512;

/// The disk image the guests' build makes from the user programs
/// (guests/user/image.S). Tests run on copies, because the guest writes.
fn paging_image() -> PathBuf {
    Path::new(env!("OUT_DIR"))
        .join("guests")
        .join("paging-disk.img")
}

/// A fresh directory for one test's images, under Cargo's scratch space
/// for integration tests.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("paging-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// A NUL-padded name field.
fn name_at(bytes: &[u8], at: usize) -> String {
    let field = &bytes[at..at + 16];
    let end = field.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// FNV-1a, as the guest computes it.
fn fnv(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The directory in sector 0 of the image: the program names and where
/// the result area is.
struct Directory {
    names: Vec<String>,
    result_lba: usize,
    result_sectors: usize,
}

fn parse_directory(image: &[u8]) -> Directory {
    assert_eq!(&image[..8], b"BT86DIR1", "the image has no directory");
    let count = le32(image, 8) as usize;
    Directory {
        names: (0..count).map(|i| name_at(image, 32 + 32 * i)).collect(),
        result_lba: le32(image, 12) as usize,
        result_sectors: le32(image, 16) as usize,
    }
}

/// What the kernel records for one program in the result file.
#[derive(Debug, PartialEq)]
struct ProgramResult {
    name: String,
    /// 1 if it ended with SYS_EXIT, 0 if an exception ended it.
    exited: u32,
    /// The exit status, or the exception vector.
    status: u32,
    /// The #PF error code and CR2 of a fatal page fault.
    error: u32,
    cr2: u32,
    /// Heap pages the kernel mapped on page faults.
    heap_faults: u32,
    /// Everything the program wrote with SYS_WRITE.
    text: String,
}

/// Reads the result file: a header sector ("BT86RES1", count, sectors,
/// then 48-byte entries), and each program's output from the sector the
/// entry names. Checks each output's FNV-1a and that the rest of the
/// result area is still zero.
fn parse_results(what: &str, image: &[u8], dir: &Directory) -> Vec<ProgramResult> {
    let area = &image[dir.result_lba * SECTOR..(dir.result_lba + dir.result_sectors) * SECTOR];
    assert_eq!(
        &area[..8],
        b"BT86RES1",
        "{what}: the result area holds no result file"
    );
    let count = le32(area, 8) as usize;
    let sectors = le32(area, 12) as usize;
    assert!(
        sectors >= 1 && sectors <= dir.result_sectors,
        "{what}: the result file claims {sectors} sectors"
    );
    assert!(
        area[sectors * SECTOR..].iter().all(|&b| b == 0),
        "{what}: the result area holds data beyond the {sectors} sectors of the result file"
    );
    (0..count)
        .map(|i| {
            let e = 16 + 48 * i;
            let (text_sector, text_len, text_fnv) = (
                le32(area, e + 36) as usize,
                le32(area, e + 40) as usize,
                le32(area, e + 44),
            );
            let text = &area[text_sector * SECTOR..text_sector * SECTOR + text_len];
            let name = name_at(area, e);
            assert_eq!(
                fnv(text),
                text_fnv,
                "{what}: the output of {name} in the result file does not match its checksum"
            );
            ProgramResult {
                name,
                exited: le32(area, e + 16),
                status: le32(area, e + 20),
                error: le32(area, e + 24),
                cr2: le32(area, e + 28),
                heap_faults: le32(area, e + 32),
                text: String::from_utf8_lossy(text).into_owned(),
            }
        })
        .collect()
}

/// The output of the jit program, recomputed: Horner's rule in wrapping
/// 32-bit arithmetic, and sum(k * i, i = 1..n) = k n (n + 1) / 2.
fn jit_output() -> String {
    let poly = |c: &[i32], x: i32| {
        c[1..]
            .iter()
            .fold(c[0], |acc, &ci| acc.wrapping_mul(x).wrapping_add(ci))
    };
    let values = |c: &[i32]| {
        (0..=5)
            .map(|x| format!(" {}", poly(c, x)))
            .collect::<String>()
    };
    let mut s = format!("jit: 3x^2 + 2x + 1 at x = 0..5:{}\n", values(&[3, 2, 1]));
    s += &format!(
        "jit: x^3 - 4x + 7 (compiled over the first) at x = 0..5:{}\n",
        values(&[1, 0, -4, 7])
    );
    for k in [7u32, 11, 12, 13] {
        let sums: String = (0..=5u32)
            .map(|n| format!(" {}", k * n * (n + 1) / 2))
            .collect();
        s += &format!("jit: sum of {k}*i for i = 1..n at n = 0..5:{sums}\n");
    }
    s + "jit: done\n"
}

/// The size of the primes program's sieve (LIMIT in guests/user/primes.c).
const PRIMES_LIMIT: u32 = 60000;

/// The output of the primes program, recomputed by trial division.
fn primes_output() -> String {
    let primes: Vec<u32> = (2..PRIMES_LIMIT)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .collect();
    let sum = primes.iter().fold(0u32, |s, &p| s.wrapping_add(p));
    format!(
        "primes: sieve of {PRIMES_LIMIT} bytes on the heap\n\
         primes: {} primes below {PRIMES_LIMIT}, sum {sum}, largest {}\n\
         primes: done\n",
        primes.len(),
        primes.last().expect("there are primes")
    )
}

/// The output of the wild program: it sums i * 3 + 1 over every 256th
/// word of two heap pages, then dies writing to the kernel.
fn wild_output() -> String {
    let sum: u32 = (0..2 * 4096 / 4).step_by(256).map(|i| i * 3 + 1).sum();
    format!(
        "wild: wrote and read back two heap pages, sum {sum}\n\
         wild: now writing to the kernel at 0x00100000\n"
    )
}

/// The result file the guest must write, program by program.
fn expected_results() -> Vec<ProgramResult> {
    vec![
        // One heap page, taken by sbrk and faulted in by the first write
        // of code into it.
        ProgramResult {
            name: "jit".into(),
            exited: 1,
            status: 0,
            error: 0,
            cr2: 0,
            heap_faults: 1,
            text: jit_output(),
        },
        // One fault per page of the sieve.
        ProgramResult {
            name: "primes".into(),
            exited: 1,
            status: 0,
            error: 0,
            cr2: 0,
            heap_faults: PRIMES_LIMIT.div_ceil(4096),
            text: primes_output(),
        },
        // A user-mode write to a present supervisor page: #PF (vector 14)
        // with P, W and U set (SDM Vol. 3A 4.7), CR2 the address.
        ProgramResult {
            name: "wild".into(),
            exited: 0,
            status: 14,
            error: 7,
            cr2: 0x0010_0000,
            heap_faults: 2,
            text: wild_output(),
        },
    ]
}

/// Fails unless the lines of `part` appear in `text` in order.
fn assert_lines_in_order(what: &str, text: &str, part: &str) {
    let mut rest = text;
    for line in part.lines() {
        let line = format!("{line}\n");
        match rest.find(&line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => panic!("{what} did not print {line:?} (in order); output:\n{text}"),
        }
    }
}

/// Everything one run of the paging guest must have done: its exit
/// status, its serial output, and the image it left (`before` is the image
/// it started from).
fn check_paging_run(what: &str, out: &[u8], status: i32, before: &[u8], after: &[u8]) {
    let text = String::from_utf8_lossy(out);
    assert_eq!(
        status, GUEST_PASS,
        "{what}: paging exited with {status}; output:\n{text}"
    );
    let expected = expected_results();
    for p in &expected {
        assert_lines_in_order(what, &text, &p.text);
    }
    assert_lines_in_order(
        what,
        &text,
        "kernel: wild killed: #PF(0x0007) CR2=0x00100000 (a protection fault)\n\
         kernel: jit exited with status 0 after 1 heap faults\n\
         kernel: primes exited with status 0 after 15 heap faults\n\
         kernel: frames still in use: 0\n\
         paging: done\n",
    );

    assert_eq!(after.len(), before.len(), "{what}: the image changed size");
    let dir = parse_directory(before);
    assert_eq!(dir.names, ["jit", "primes", "wild"]);
    let area = dir.result_lba * SECTOR..(dir.result_lba + dir.result_sectors) * SECTOR;
    if let Some(i) = (0..before.len()).find(|i| !area.contains(i) && before[*i] != after[*i]) {
        panic!(
            "{what}: the guest changed sector {} of the image, outside the result area",
            i / SECTOR
        );
    }
    let results = parse_results(what, after, &dir);
    assert_eq!(results, expected, "{what}: the result file");
}

/// The paging guest under QEMU alone: the reference run is right. This
/// passes without a working monitor.
#[test]
fn qemu_paging_writes_the_expected_results() {
    if qemu().is_none() {
        return;
    }
    let dir = scratch("qemu");
    let original = std::fs::read(paging_image()).expect("the guests' build made the image");
    let img = dir.join("qemu.img");
    std::fs::write(&img, &original).unwrap();
    let drive = format!(
        "file={},format=raw,if=ide,index=0,media=disk",
        path_arg(&img)
    );
    let (out, status) = run_qemu(&guest("paging"), &["-drive", &drive]);
    check_paging_run(
        "QEMU",
        &out,
        status,
        &original,
        &std::fs::read(&img).unwrap(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// bt86 prints what QEMU prints, and leaves the same image behind, which
/// holds the results recomputed here.
#[test]
fn paging_matches_qemu_and_writes_the_expected_results() {
    let dir = scratch("compare");
    let original = std::fs::read(paging_image()).expect("the guests' build made the image");
    let elf = guest("paging");

    let bt86_img = dir.join("bt86.img");
    std::fs::write(&bt86_img, &original).unwrap();
    let (out, status) = run_bt86(&elf, &["--disk", path_arg(&bt86_img)]);
    let after = std::fs::read(&bt86_img).unwrap();

    if qemu().is_some() {
        let qemu_img = dir.join("qemu.img");
        std::fs::write(&qemu_img, &original).unwrap();
        let drive = format!(
            "file={},format=raw,if=ide,index=0,media=disk",
            path_arg(&qemu_img)
        );
        let (want, want_status) = run_qemu(&elf, &["-drive", &drive]);
        assert_eq!(
            want_status,
            GUEST_PASS,
            "the reference run failed: QEMU exited with {want_status}; output:\n{}",
            String::from_utf8_lossy(&want)
        );
        if out != want || status != want_status {
            panic!(
                "paging: bt86 differs from QEMU (exit status: QEMU {want_status}, bt86 {status})\n{}",
                diff("qemu", &want, "bt86", &out)
            );
        }
        let want_image = std::fs::read(&qemu_img).unwrap();
        if let Some(i) = (0..after.len()).find(|&i| after.get(i) != want_image.get(i)) {
            panic!(
                "paging: the image bt86 left differs from QEMU's first in sector {}",
                i / SECTOR
            );
        }
    }
    check_paging_run("bt86", &out, status, &original, &after);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------
// pagebench
// ---------------------------------------------------------------------

/// Pages in the hidden-fault region of pagebench (64 MiB).
const HIDDEN_PAGES: u32 = 16384;

/// The line pagebench must print for `mode` and `n`, with the checksum
/// recomputed from what each iteration reads (see guests/pagebench.c) and
/// the frames the mode keeps from its pool.
fn pagebench_line(mode: &str, n: u32) -> String {
    let (checksum, frames) = match mode {
        // Each read gives the frame's tag 0x00F00F00, and each read faults
        // once.
        "pf" => (n.wrapping_mul(0x00F0_0F00).wrapping_add(n), 1),
        // The PTE points at the frame holding 2, then 1, then 2, ...
        "invlpg" => (
            (0..n).fold(0u32, |s, i| {
                s.wrapping_mul(3)
                    .wrapping_add(if i % 2 == 0 { 2 } else { 1 })
            }),
            2,
        ),
        // CR3 names the space whose page holds 0xB, then 0xA, then 0xB, ...
        "cr3" => (
            (0..n).fold(0u32, |s, i| {
                s.wrapping_mul(5)
                    .wrapping_add(if i % 2 == 0 { 0xB } else { 0xA })
            }),
            2,
        ),
        // Page p of the region holds p; the sweep starts over every
        // HIDDEN_PAGES reads. The region's 16 page tables stay allocated.
        "hidden" => (
            (0..n).fold(0u32, |s, i| s.wrapping_add(i % HIDDEN_PAGES)),
            16,
        ),
        // Page i of the scattered region maps frame (7919 i mod 16384) of
        // the hidden region, whose first word is that index; the region's
        // 256 page tables stay allocated.
        "scatter" => (
            (0..n).fold(0u32, |s, i| s.wrapping_mul(31).wrapping_add(i.wrapping_mul(7919) % HIDDEN_PAGES)),
            256,
        ),
        // Child i exits with status 3i + 1 and leaves 3i + 1 in its data
        // page; every frame is freed.
        "fork" => ((0..n).fold(0u32, |s, i| s.wrapping_add(2 * (3 * i + 1))), 0),
        _ => panic!("no such pagebench mode: {mode}"),
    };
    format!("pagebench: mode={mode} n={n} checksum=0x{checksum:08x} frames in use={frames}\n")
}

/// Every mode with a small count, and the baseline (n=0) of two.
const PAGEBENCH_RUNS: &[(&str, u32)] = &[
    ("pf", 200),
    ("invlpg", 200),
    ("cr3", 200),
    ("hidden", 20000),
    // 70000 pages, each its own host mapping under bt86: more than Linux
    // allows a process (65530), unless the monitor drops its mappings in
    // time.
    ("scatter", 70000),
    ("fork", 50),
    ("hidden", 0),
    ("fork", 0),
];

#[test]
fn qemu_pagebench_prints_the_recomputed_checksums() {
    if qemu().is_none() {
        return;
    }
    for &(mode, n) in PAGEBENCH_RUNS {
        let append = format!("mode={mode} n={n}");
        let (out, status) = run_qemu(&guest("pagebench"), &["-append", &append]);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(
            status, GUEST_PASS,
            "pagebench {append} under QEMU exited with {status}: {text}"
        );
        assert_eq!(
            text,
            pagebench_line(mode, n),
            "pagebench {append} under QEMU"
        );
    }
}

/// bt86 prints what QEMU prints, which is the recomputed line (checked
/// against bt86 alone when QEMU is missing).
#[test]
fn pagebench_matches_qemu() {
    for &(mode, n) in PAGEBENCH_RUNS {
        let append = format!("mode={mode} n={n}");
        let args = ["-append", append.as_str()];
        let out = compare_with_qemu("pagebench", &args, &args)
            .unwrap_or_else(|| run_bt86_passing("pagebench", &args));
        assert_eq!(
            String::from_utf8_lossy(&out),
            pagebench_line(mode, n),
            "pagebench {append} under bt86"
        );
    }
}

#[test]
fn pagebench_rejects_an_unknown_mode_like_qemu() {
    if qemu().is_none() {
        return;
    }
    let args = ["-append", "mode=swap n=5"];
    let (want, want_status) = run_qemu(&guest("pagebench"), &args);
    assert_eq!(want_status, 35, "QEMU: {}", String::from_utf8_lossy(&want));
    assert!(String::from_utf8_lossy(&want).contains("unknown mode 'swap'"));
    let (got, got_status) = run_bt86(&guest("pagebench"), &args);
    assert_eq!((got, got_status), (want, want_status));
}
