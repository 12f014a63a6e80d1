//! Helpers shared by the integration tests: where the guest programs are,
//! and how to run one under QEMU (the reference) or under bt86, each with a
//! time limit, capturing the bytes the guest wrote to COM1 and the exit
//! status.
//!
//! This module owns only process plumbing. It must not interpret guest
//! output; each test decides what to compare.
#![allow(dead_code)] // Every test crate uses a different subset.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long one guest may run before the harness kills it. The slowest
/// guest (hostile) takes about five seconds under QEMU's TCG.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The status reported for a run that was killed because it hit
/// [`TIMEOUT`]. Real exit statuses are never negative.
pub const TIMED_OUT: i32 = -1;

/// The status with which the conformance guests (probe, exceptions,
/// compute, hostile) report success: they write 0x10 to isa-debug-exit,
/// and the machine exits with (0x10 << 1) | 1.
pub const GUEST_PASS: i32 = 33;

/// The QEMU command line that defines the reference platform: the guest as
/// a Multiboot kernel, COM1 on stdout, no display, isa-debug-exit at port
/// 0xF4, and no reboot on a triple fault.
pub const QEMU_ARGS: &[&str] = &[
    "-serial",
    "stdio",
    "-display",
    "none",
    "-device",
    "isa-debug-exit,iobase=0xf4,iosize=0x04",
    "-no-reboot",
];

/// The path of a guest built by the root build script, e.g. `guest("probe")`
/// is `$OUT_DIR/guests/probe.elf`.
pub fn guest(name: &str) -> PathBuf {
    Path::new(env!("OUT_DIR"))
        .join("guests")
        .join(format!("{name}.elf"))
}

/// Finds `qemu-system-i386` (or the program named by the `BT86_QEMU`
/// environment variable). When it is missing, prints why the calling test
/// is skipped and returns `None`.
pub fn qemu() -> Option<PathBuf> {
    let found = qemu_path();
    if found.is_none() {
        eprintln!(
            "skipped: qemu-system-i386 was not found on PATH (nor BT86_QEMU set); \
             install it (Debian: `sudo apt-get install qemu-system-x86`) to compare \
             bt86 with QEMU"
        );
    }
    found
}

fn qemu_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BT86_QEMU") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("qemu-system-i386"))
        .find(|p| p.is_file())
}

/// Runs `elf` under QEMU with the reference command line plus `extra_args`
/// and returns what the guest wrote to COM1 and QEMU's exit status
/// ([`TIMED_OUT`] if it had to be killed).
///
/// # Panics
/// If QEMU is not installed; call [`qemu`] first to skip instead.
pub fn run_qemu(elf: &Path, extra_args: &[&str]) -> (Vec<u8>, i32) {
    let Some(qemu) = qemu_path() else {
        panic!(
            "run_qemu needs qemu-system-i386; call common::qemu() first to skip when it is missing"
        );
    };
    let mut cmd = Command::new(qemu);
    cmd.arg("-kernel").arg(elf).args(QEMU_ARGS).args(extra_args);
    run_with_timeout(cmd, "qemu-system-i386")
}

/// Runs `bt86 run [extra_args] ELF` (the binary built for these tests) and
/// returns what the guest wrote to COM1 and bt86's exit status
/// ([`TIMED_OUT`] if it had to be killed).
pub fn run_bt86(elf: &Path, extra_args: &[&str]) -> (Vec<u8>, i32) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bt86"));
    cmd.arg("run").args(extra_args).arg(elf);
    run_with_timeout(cmd, "bt86")
}

/// Runs `cmd` with stdin closed, collecting stdout; kills it after
/// [`TIMEOUT`]. Anything it writes to stderr is passed through to the
/// test's own stderr, where `cargo test` shows it for failing tests.
fn run_with_timeout(mut cmd: Command, what: &str) -> (Vec<u8>, i32) {
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("could not start {what} ({cmd:?}): {e}"),
    };
    // Read both pipes on their own threads, so that a chatty child never
    // blocks on a full pipe while we wait for it.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });

    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break exit_code(status),
            Ok(None) if start.elapsed() >= TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("{what} did not finish within {TIMEOUT:?} and was killed");
                break TIMED_OUT;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("could not wait for {what}: {e}"),
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !err.is_empty() {
        eprintln!("--- {what} stderr ---\n{}", String::from_utf8_lossy(&err));
    }
    (out, status)
}

/// The exit code, or 128 + the signal number for a process killed by a
/// signal (the shell's convention).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// gdb, or the program `BT86_GDB` names; `None` after printing why the
/// test is skipped, saying it was needed `to` do what.
pub fn gdb(to: &str) -> Option<PathBuf> {
    let found = match std::env::var_os("BT86_GDB") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join("gdb")).find(|p| p.is_file())),
    };
    if found.is_none() {
        eprintln!("skipped: gdb was not found on PATH (nor BT86_GDB set); install it (Debian: `sudo apt-get install gdb`) to {to}");
    }
    found
}

/// Runs guest `name` under QEMU with `qemu_args` and under bt86 with
/// `bt86_args` (usually the same) and fails with a readable diff unless
/// the bytes on COM1 and the exit status are identical, and the reference
/// run passed. Returns the output, or `None` (after saying why) when QEMU
/// is missing.
pub fn compare_with_qemu(name: &str, qemu_args: &[&str], bt86_args: &[&str]) -> Option<Vec<u8>> {
    qemu()?;
    let elf = guest(name);
    let (want, want_status) = run_qemu(&elf, qemu_args);
    assert_eq!(
        want_status,
        GUEST_PASS,
        "the reference run failed: guest {name} {qemu_args:?} under QEMU exited with {want_status}, \
         not {GUEST_PASS}; its output was:\n{}",
        String::from_utf8_lossy(&want)
    );
    let (got, got_status) = run_bt86(&elf, bt86_args);
    if got != want || got_status != want_status {
        panic!(
            "guest {name} {bt86_args:?}: bt86 differs from QEMU (exit status: QEMU {want_status}, \
             bt86 {got_status})\n{}",
            diff("qemu", &want, "bt86", &got)
        );
    }
    Some(got)
}

/// A readable line-by-line comparison of two outputs: common lines are
/// shown once, differing lines as `-` (expected) and `+` (actual) pairs.
/// Bytes that are not UTF-8 are shown escaped.
pub fn diff(expected_name: &str, expected: &[u8], actual_name: &str, actual: &[u8]) -> String {
    let e: Vec<String> = split_lines(expected);
    let a: Vec<String> = split_lines(actual);
    let mut text = format!("--- {expected_name}\n+++ {actual_name}\n");
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => text.push_str(&format!(" {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    text.push_str(&format!("-{x}\n"));
                }
                if let Some(y) = y {
                    text.push_str(&format!("+{y}\n"));
                }
            }
        }
    }
    text
}

fn split_lines(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return vec!["(no output)".to_string()];
    }
    // A final newline ends the last line; it does not start another one.
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes
        .split(|&b| b == b'\n')
        .map(|line| line.escape_ascii().to_string())
        .collect()
}

/// A serial output a test can read after an in-process VM wrote to it
/// (for tests that build the VM with `bt86::build_vm` rather than run the
/// binary).
#[derive(Clone, Default)]
#[allow(dead_code)] // not every test binary that includes this module uses it
pub struct SharedBuf(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A child process that is killed if the test ends without waiting for
/// it, with its output collected in the background.
pub struct Process {
    pub child: Child,
    what: &'static str,
    stdout: Option<thread::JoinHandle<String>>,
    /// Standard error, a line at a time, as the process writes it.
    pub stderr: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `cmd` with standard input closed and its output piped.
    pub fn spawn(mut cmd: Command, what: &'static str) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {what} ({cmd:?}): {e}"));
        let mut out = child.stdout.take().expect("piped");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let (tx, stderr) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().expect("piped"));
        thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, what, stdout: Some(stdout), stderr }
    }

    /// Waits for the process to end, killing it after [`TIMEOUT`], and
    /// returns its status ([`TIMED_OUT`] if it was killed), standard output
    /// and standard error.
    pub fn finish(mut self) -> (i32, String, String) {
        let start = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code().unwrap_or(-1),
                Ok(None) if start.elapsed() > TIMEOUT => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    eprintln!("{} did not finish within {TIMEOUT:?} and was killed", self.what);
                    break TIMED_OUT;
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("could not wait for {}: {e}", self.what),
            }
        };
        let stdout = self.stdout.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        // The reader thread ends at end of file, which the process's exit
        // brings: wait for every line rather than take what has arrived.
        let stderr: Vec<String> = self.stderr.iter().collect();
        (status, stdout, stderr.join("\n"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A test that panicked while this process ran must not leave it
        // behind; after finish() it has already been reaped.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
