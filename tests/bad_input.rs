//! Bad input to `bt86 run`: every file or option that cannot be booted must
//! be refused before the guest runs, with exit status 2, without a panic,
//! and with one line on stderr that says what went wrong, with what input,
//! and what to do about it (the house rule for error messages).
//!
//! The damaged kernels are built byte by byte by `cli_support::tiny_kernel`,
//! so each test breaks exactly one thing in an otherwise bootable image. A
//! control test boots the undamaged image, so a refusal is known to come
//! from the damage and not from the builder.

mod cli_support;

use std::ffi::OsString;
use std::path::Path;

use cli_support::tiny_kernel::{code, Class, Header, TinyKernel, MULTIBOOT_FLAGS, MULTIBOOT_MAGIC};
use cli_support::{bt86, scratch_dir, write_file, Outcome};

/// The status `bt86 run` exits with for bad input (see `bt86::status`).
const BAD_INPUT: i32 = 2;

/// The status with which a tiny kernel running [`code::debug_exit`]`(0x10)`
/// ends: isa-debug-exit turns the value v into (v << 1) | 1.
const TINY_PASS: i32 = 0x21;

/// Runs `bt86 run` with `args` and checks that it refused them properly:
/// status 2, no panic, no guest output, and exactly one line on stderr,
/// which names `input` (the file or value at fault) and contains every
/// phrase of `says` (what went wrong and what to do).
fn assert_refused(args: &[OsString], input: &str, says: &[&str]) -> Outcome {
    let mut full = vec![OsString::from("run")];
    full.extend_from_slice(args);
    let run = bt86(&full);
    let context = format!("bt86 {full:?}\n{}", run.describe());
    assert_eq!(
        run.status,
        Some(BAD_INPUT),
        "wrong exit status for bad input: {context}"
    );
    assert!(
        !run.stderr.contains("panicked"),
        "bt86 panicked on bad input: {context}"
    );
    assert!(
        run.stdout.is_empty(),
        "the guest ran although its input was bad: {context}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "the refusal is not exactly one line: {context}"
    );
    let line = lines[0];
    assert!(
        line.starts_with("bt86: "),
        "the message does not say who speaks: {context}"
    );
    assert!(
        line.contains(input),
        "the message does not name the input {input:?}: {context}"
    );
    for phrase in says {
        assert!(
            line.contains(phrase),
            "the message does not say {phrase:?}: {context}"
        );
    }
    run
}

/// The arguments `run KERNEL` plus `extra` for a kernel at `path`.
fn kernel_args(path: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
    args.push(path.as_os_str().to_owned());
    args
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The control: the undamaged tiny kernel boots and reaches its exit, so
/// every refusal below is caused by the one thing each test damages.
#[test]
fn undamaged_tiny_kernel_boots() {
    let dir = scratch_dir("bad_input_control");
    let path = TinyKernel::new(&code::debug_exit(0x10)).write(&dir, "good.elf");
    let run = bt86(&[OsString::from("run"), path.into_os_string()]);
    assert_eq!(run.status, Some(TINY_PASS), "{}", run.describe());
}

#[test]
fn text_file_is_refused() {
    let dir = scratch_dir("bad_input_text");
    let path = write_file(
        &dir,
        "notes.txt",
        "This is a shopping list, not a kernel.\n"
            .repeat(40)
            .as_bytes(),
    );
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &[
            "no Multiboot header",
            "link the kernel with a Multiboot header",
        ],
    );
}

/// A valid Multiboot header in a file that is not ELF and lacks the
/// header's address fields (flag 16): nothing says where to load it.
#[test]
fn multiboot_header_in_a_non_elf_file_is_refused() {
    let dir = scratch_dir("bad_input_raw");
    let mut image = Vec::new();
    for word in [
        MULTIBOOT_MAGIC,
        MULTIBOOT_FLAGS,
        0u32.wrapping_sub(MULTIBOOT_MAGIC)
            .wrapping_sub(MULTIBOOT_FLAGS),
    ] {
        image.extend_from_slice(&word.to_le_bytes());
    }
    image.extend_from_slice(&code::debug_exit(0x10));
    let path = write_file(&dir, "raw.bin", &image);
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &["not an ELF file", "ELF32"],
    );
}

/// An ELF64 file with a valid Multiboot header: a 64-bit kernel.
#[test]
fn elf64_kernel_is_refused() {
    let dir = scratch_dir("bad_input_elf64");
    let path = TinyKernel::new(&code::debug_exit(0x10))
        .class(Class::Elf64)
        .write(&dir, "k64.elf");
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &["64-bit ELF", "-m32", "elf_i386"],
    );
}

/// A real ELF64 program, this test's own executable, which has no
/// Multiboot header at all.
#[test]
fn host_program_is_refused() {
    let exe = std::env::current_exe().expect("the test knows its own path");
    assert_refused(
        &kernel_args(&exe, &[]),
        &exe.display().to_string(),
        &["no Multiboot header"],
    );
}

#[test]
fn elf32_without_multiboot_header_is_refused() {
    let dir = scratch_dir("bad_input_no_header");
    let path = TinyKernel::new(&code::debug_exit(0x10))
        .header(Header::Absent)
        .write(&dir, "plain.elf");
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &[
            "no Multiboot header",
            "link the kernel with a Multiboot header",
        ],
    );
}

/// The message gives the checksum that would make the header valid.
#[test]
fn bad_multiboot_checksum_is_refused() {
    let dir = scratch_dir("bad_input_checksum");
    let path = TinyKernel::new(&code::debug_exit(0x10))
        .header(Header::BadChecksum)
        .write(&dir, "sum.elf");
    let good = 0u32
        .wrapping_sub(MULTIBOOT_MAGIC)
        .wrapping_sub(MULTIBOOT_FLAGS);
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &["bad checksum", &format!("set checksum to {good:#010x}")],
    );
}

/// The program header promises more file bytes than the file has
/// (p_offset + p_filesz beyond the end), as when a copy was cut short.
#[test]
fn truncated_segment_is_refused() {
    let dir = scratch_dir("bad_input_truncated");
    let kernel = TinyKernel::new(&[0x90; 256]);
    let mut image = kernel.build();
    let cut = kernel.code_offset() + 16;
    image.truncate(cut);
    let path = write_file(&dir, "cut.elf", &image);
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &["truncated", &format!("{cut} bytes long")],
    );
}

/// The entry point lies far beyond the loaded segment and beyond RAM.
#[test]
fn entry_point_outside_ram_is_refused() {
    let dir = scratch_dir("bad_input_entry");
    let path = TinyKernel::new(&code::debug_exit(0x10))
        .entry(0x0900_0000)
        .write(&dir, "entry.elf");
    assert_refused(
        &kernel_args(&path, &["-m", "32"]),
        &path.display().to_string(),
        &["entry point 0x9000000", "check the ELF entry address"],
    );
}

/// A segment loaded at 16 MiB in a 4 MiB machine.
#[test]
fn segment_beyond_ram_is_refused() {
    let dir = scratch_dir("bad_input_beyond_ram");
    let kernel = TinyKernel::new(&code::debug_exit(0x10)).load_at(16 << 20);
    let path = kernel.write(&dir, "high.elf");
    assert_refused(
        &kernel_args(&path, &["-m", "4"]),
        &path.display().to_string(),
        &["past the end of RAM at 0x400000", "-m"],
    );
}

/// A BSS larger than the whole of RAM (a huge p_memsz).
#[test]
fn kernel_larger_than_ram_is_refused() {
    let dir = scratch_dir("bad_input_huge");
    let path = TinyKernel::new(&code::debug_exit(0x10))
        .bss(256 << 20)
        .write(&dir, "huge.elf");
    assert_refused(
        &kernel_args(&path, &["-m", "64"]),
        &path.display().to_string(),
        &[
            "only 0x4000000 bytes of RAM",
            "give the VM more memory with -m",
        ],
    );
}

#[test]
fn missing_kernel_is_refused() {
    let dir = scratch_dir("bad_input_missing");
    let path = dir.join("no-such-kernel.elf");
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &[
            "cannot read the kernel",
            "No such file",
            "check that the path",
        ],
    );
}

#[test]
fn empty_kernel_is_refused() {
    let dir = scratch_dir("bad_input_empty");
    let path = write_file(&dir, "empty.elf", &[]);
    assert_refused(
        &kernel_args(&path, &[]),
        &path.display().to_string(),
        &["is empty", "rebuild"],
    );
}

#[test]
fn directory_as_kernel_is_refused() {
    let dir = scratch_dir("bad_input_directory");
    assert_refused(
        &kernel_args(&dir, &[]),
        &dir.display().to_string(),
        &["cannot read the kernel", "directory", "check that the path"],
    );
}

/// Each bad `-m` value is refused and named; the message shows how QEMU
/// spells sizes. Sizes outside the supported range say so.
#[test]
fn bad_memory_sizes_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("abc", "write it like QEMU's -m"),
        ("12Q", "write it like QEMU's -m"),
        ("1.5.6", "write it like QEMU's -m"),
        ("", "write it like QEMU's -m"),
        ("0", "outside the range"),
        ("1", "outside the range"),
        ("5000", "outside the range"),
        ("99999999999999999999", "RAM size"),
    ];
    for &(value, says) in cases {
        // The demo guest would run if the size were accepted.
        assert_refused(
            &os(&["-m", value]),
            &format!("{value:?}"),
            &["RAM size", says],
        );
    }
}

#[test]
fn unknown_debug_item_is_refused() {
    assert_refused(
        &os(&["-d", "in_asm,tlb"]),
        "\"tlb\"",
        &["unknown -d item", "in_asm, out_asm, int or exec"],
    );
}

#[test]
fn missing_initrd_is_refused() {
    let dir = scratch_dir("bad_input_initrd");
    let path = dir.join("no-such-initrd.img");
    assert_refused(
        &os(&["--initrd", &path.display().to_string()]),
        &path.display().to_string(),
        &["cannot read the --initrd module", "No such file"],
    );
}

#[test]
fn bad_timeouts_are_refused() {
    for value in ["0", "-1", "inf", "NaN"] {
        assert_refused(
            &os(&[&format!("--timeout={value}")]),
            "--timeout",
            &["not a positive number of seconds"],
        );
    }
}

#[test]
fn unwritable_log_file_is_refused() {
    let dir = scratch_dir("bad_input_log");
    let path = dir.join("no-such-directory").join("log.txt");
    assert_refused(
        &os(&["-d", "int", "-D", &path.display().to_string()]),
        &path.display().to_string(),
        &[
            "cannot create the -D log file",
            "check that its directory exists",
        ],
    );
}

/// Command-line syntax errors come from the argument parser: status 2 as
/// well, and no panic, although the parser's message spans several lines.
#[test]
fn command_line_syntax_errors_exit_with_status_2() {
    let cases: &[&[&str]] = &[
        &["run", "--no-such-option"],
        &["run", "--timeout", "soon"],
        &["run", "-m"],
        &["run", "a.elf", "b.elf"],
        &["run", "a.elf", "-kernel", "b.elf"],
        &["no-such-command"],
        &[],
    ];
    for args in cases {
        let run = bt86(&os(args));
        assert_eq!(
            run.status,
            Some(BAD_INPUT),
            "bt86 {args:?}: {}",
            run.describe()
        );
        assert!(
            !run.stderr.contains("panicked"),
            "bt86 {args:?}: {}",
            run.describe()
        );
        assert!(
            run.stdout.is_empty(),
            "bt86 {args:?} ran a guest: {}",
            run.describe()
        );
    }
}
