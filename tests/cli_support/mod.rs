//! Support for the tests of the `bt86` command itself (tests/cli.rs and
//! tests/bad_input.rs): running the binary with any arguments and keeping
//! everything it did (status, stdout, stderr, time taken), a scratch
//! directory per test, and, in [`tiny_kernel`], Multiboot kernels built
//! byte by byte.
//!
//! This module owns only process plumbing and test files. It must not
//! decide what a good message or status is; each test says that itself.
#![allow(dead_code)] // Each test crate uses a different subset.

pub mod tiny_kernel;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long one run of bt86 may take before the test kills it. Every run
/// in these tests finishes in well under a second; a run that reaches this
/// limit is a hang, and the test fails.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Everything one run of `bt86` left behind.
#[derive(Debug)]
pub struct Outcome {
    /// The exit status, 128 + the signal for a process killed by a signal
    /// (the shell's convention), or `None` if the test had to kill it.
    pub status: Option<i32>,
    /// What the guest wrote to COM1 (bt86 sends it to stdout).
    pub stdout: String,
    /// bt86's own messages and logs.
    pub stderr: String,
    /// Wall-clock time from start to exit.
    pub elapsed: Duration,
}

impl Outcome {
    /// The lines bt86 itself wrote on stderr (they start with "bt86: "),
    /// leaving out `log` records such as `[WARN ]` lines.
    pub fn messages(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("bt86: "))
            .collect()
    }

    /// A description of the run for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status {:?} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs the `bt86` binary built for these tests with `args` (stdin
/// closed) and returns what happened. A run that outlives [`HANG_LIMIT`]
/// is killed and reported with status `None`.
///
/// # Panics
/// If the binary cannot be started or waited for.
pub fn bt86<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bt86"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!("could not start bt86 ({cmd:?}): {e}"),
    };
    // Read both pipes on their own threads, so that a chatty run (a trace,
    // say) never blocks on a full pipe while we wait for it.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(exit_code(status)),
            Ok(None) if start.elapsed() >= HANG_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("could not wait for bt86: {e}"),
        }
    };
    let elapsed = start.elapsed();
    let text = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        let bytes = reader.and_then(|r| r.join().ok()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Outcome {
        status,
        stdout: text(out),
        stderr: text(err),
        elapsed,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A directory for one test's files under cargo's scratch directory for
/// integration tests, emptied first, so that tests running in parallel
/// never share a file and no run sees a stale one.
///
/// # Panics
/// If the directory cannot be made.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create the test directory {}: {e}", dir.display());
    }
    dir
}

/// Writes `bytes` to `dir/name` and returns the path.
///
/// # Panics
/// If the file cannot be written: the test cannot go on without it.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, bytes) {
        panic!("cannot write the test file {}: {e}", path.display());
    }
    path
}
