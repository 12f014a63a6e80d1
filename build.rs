//! Build script of the root package: builds the guest programs in `guests/`.
//!
//! It runs `make -C guests O=$OUT_DIR/guests`, so that the `bt86` binary can
//! embed the demo guest with
//! `include_bytes!(concat!(env!("OUT_DIR"), "/guests/demo.elf"))` and the
//! integration tests find every guest in `$OUT_DIR/guests/`. It owns nothing
//! else: the guests' own build rules live in `guests/Makefile`, and this
//! script must not compile anything itself.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a reader needs to install when the guest build cannot run.
const INSTALL_HINT: &str = "the guests need GNU make, a C compiler that \
    accepts -m32 and GNU ld with elf_i386 support; on Debian or Ubuntu run \
    `sudo apt-get install make gcc binutils` (and gcc-multilib if `cc -m32` \
    cannot find its headers)";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest_dir.join("guests");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests");

    // Rebuild when any guest source changes, but not when a developer's own
    // `make -C guests` writes into guests/build.
    println!("cargo:rerun-if-changed=build.rs");
    watch_sources(&guests);

    let status = Command::new("make")
        .arg("-s")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(&guests)
        .arg(format!("O={}", out_dir.display()))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the guest programs failed (`make -C {} O={}` exited with {s}); \
             read the compiler messages above; {INSTALL_HINT}",
            guests.display(),
            out_dir.display()
        ),
        Err(e) => panic!("could not run `make` to build the guest programs ({e}); {INSTALL_HINT}"),
    }
}

/// Emits `rerun-if-changed` for everything in `guests/` except the `build`
/// output directory of a manual `make -C guests`. A directory named in
/// `rerun-if-changed` is scanned recursively by cargo, so `guests/` itself
/// is not named; its files and subdirectories are.
fn watch_sources(guests: &Path) {
    let Ok(entries) = fs::read_dir(guests) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "build") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
