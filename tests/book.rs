//! The book's commands are tests: every `console` block in `book/src` is run
//! with trycmd and its output compared with what the book prints.
//!
//! This test owns only the harness. It builds the guest programs into
//! `guests/build/` (the paths a student types), registers the programs a
//! block may run, and hands the chapters to trycmd. It must not change what
//! the book says; when bt86's output changes on purpose, regenerate the
//! blocks with `TRYCMD=overwrite cargo test --test book` and review the
//! diff.
//!
//! How trycmd reads a chapter (it treats `.md` files like `.trycmd` files):
//! - only fenced blocks marked `console` (or with no language at all) are
//!   run, so every other block in the book carries a language (`sh`,
//!   `text`, ...);
//! - `$ ` starts a command, split like a shell would split it but run
//!   without a shell (no pipes, no redirections, no globbing);
//! - `? N` on the next line is the expected exit status (default 0);
//! - the lines that follow are standard output and standard error together,
//!   in the order the program wrote them;
//! - `...` alone on a line matches any lines, `[..]` any text in a line.
//!
//! Commands run in the current directory of the test process, which cargo
//! sets to the package root: the repository root. That is why the book's
//! commands read `bt86 run guests/build/probe.elf`, exactly what a student
//! types at the root. (A chapter `X.md` with a sibling directory `X.in/`
//! would instead run in that directory; the book has none.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs, other than `bt86`, that a `console` block may run. They are
/// looked up on `PATH`; each is part of every Debian or Ubuntu system that
/// can build bt86, except QEMU (see [`register_qemu`]).
const HOST_TOOLS: &[&str] = &["head", "grep"];

#[test]
fn book_console_blocks_match_real_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    build_guests(root);
    // Lab 1 writes its trace to target/, where git ignores it. The
    // directory exists after any cargo build, unless CARGO_TARGET_DIR
    // points elsewhere.
    std::fs::create_dir_all(root.join("target"))
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.join("target").display()));

    let cases = trycmd::TestCases::new();
    cases
        .register_bin("bt86", PathBuf::from(env!("CARGO_BIN_EXE_bt86")))
        // The book shows bt86's default log level; a RUST_LOG left in the
        // environment must not add lines to its output.
        .env("RUST_LOG", "warn")
        // Runs under QEMU's TCG and whole guests in a debug build take a
        // few seconds; a hung guest must fail the test, not stall it.
        .timeout(std::time::Duration::from_secs(120));
    for tool in HOST_TOOLS {
        match find_on_path(tool) {
            Some(path) => {
                cases.register_bin(*tool, path);
            }
            None => panic!(
                "the book's console blocks run `{tool}`, which is not on PATH; \
                 install coreutils and grep (Debian: `sudo apt-get install coreutils grep`)"
            ),
        }
    }
    register_qemu(&cases);

    // trycmd skips, without failing, a command whose program it does not
    // know, and a glob that matches nothing passes without checking
    // anything. Neither may happen silently.
    let commands = console_commands(&root.join("book/src"));
    assert!(
        !commands.is_empty(),
        "found no commands in ```console blocks under book/src; the book test would check nothing"
    );
    for (file, line, program) in &commands {
        assert!(
            program == "bt86"
                || program == "qemu-system-i386"
                || HOST_TOOLS.contains(&program.as_str()),
            "{}:{line}: a console block runs `{program}`, which tests/book.rs does not register; \
             use bt86, qemu-system-i386 or one of {HOST_TOOLS:?}, or mark the block `sh`",
            file.display()
        );
    }
    cases.case(root.join("book/src/**/*.md"));
}

/// Every command line (`$ ...`) of every ```console block in the Markdown
/// files under `dir`, as (file, line number, program name). Leading
/// `NAME=value` words set environment variables, as in trycmd.
fn console_commands(dir: &Path) -> Vec<(PathBuf, usize, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            found.extend(console_commands(&path));
            continue;
        }
        if path.extension() != Some(std::ffi::OsStr::new("md")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut in_console = false;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_end();
            if trimmed.starts_with("```") {
                in_console = !in_console && trimmed == "```console";
            } else if in_console {
                if let Some(command) = line.strip_prefix("$ ") {
                    let program = command
                        .split_whitespace()
                        .find(|w| !w.contains('='))
                        .unwrap_or("");
                    found.push((path.clone(), i + 1, program.to_string()));
                }
            }
        }
    }
    found
}

/// Builds the guests into `guests/build/` with `make -C guests`, as
/// the Getting started chapter tells a student to.
fn build_guests(root: &Path) {
    let status = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(root.join("guests"))
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "could not run `make -C guests` to build the book's guests ({e}); \
                 install GNU make, gcc and binutils (Debian: `sudo apt-get install make gcc binutils`)"
            )
        });
    assert!(
        status.success(),
        "`make -C guests` failed ({status}); read the compiler messages above. The guests \
         need a C compiler that accepts -m32 and GNU ld with elf_i386 support"
    );
}

/// Registers `qemu-system-i386` (or the program named by `BT86_QEMU`, as in
/// the differential tests). Without it, the QEMU steps are skipped rather
/// than failed, and the test says so: QEMU is optional for a developer,
/// and `.ci/run` installs it.
fn register_qemu(cases: &trycmd::TestCases) {
    let qemu = std::env::var_os("BT86_QEMU")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| find_on_path("qemu-system-i386"));
    match qemu {
        Some(path) => {
            cases.register_bin("qemu-system-i386", path);
        }
        None => {
            eprintln!(
                "skipped: the book's qemu-system-i386 commands, because QEMU was not found on \
                 PATH (nor BT86_QEMU set); install it (Debian: `sudo apt-get install \
                 qemu-system-x86`) to check them"
            );
            cases.register_bin("qemu-system-i386", trycmd::schema::Bin::Ignore);
        }
    }
}

/// The first executable file called `name` in a directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
