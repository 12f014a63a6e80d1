//! Timing whole processes: QEMU, and bt86 itself, run as commands.
//!
//! Some references can only be taken end to end: QEMU runs in its own
//! process, and the multitask guest is compared as a user would run it,
//! `bt86 run` against `qemu-system-i386`, boot included. This module finds
//! QEMU, writes guest images to temporary files, runs a command with a time
//! limit and returns its wall time, output and exit status. It interprets
//! nothing the guest prints; the benchmarks decide what to check.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

/// How long one external run may take before it is killed: far longer
/// than any benchmark run needs, so only a hung guest reaches it.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// QEMU's arguments after `-kernel FILE`: the reference platform of the
/// guest tests (COM1 on stdout, no display, isa-debug-exit at 0xF4).
pub const QEMU_ARGS: &[&str] =
    &["-serial", "stdio", "-display", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"];

/// `qemu-system-i386` as named by the `BT86_QEMU` environment variable, or
/// found on PATH; None when neither names a file.
pub fn find_qemu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BT86_QEMU") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("qemu-system-i386")).find(|p| p.is_file())
}

/// One finished external run.
#[derive(Clone, Debug)]
pub struct Run {
    pub wall: Duration,
    pub stdout: Vec<u8>,
    pub status: i32,
}

/// A guest image in a temporary file, removed when dropped.
pub struct TempImage {
    path: PathBuf,
}

impl TempImage {
    /// Writes `bytes` to a file named after `name` and this process.
    pub fn new(name: &str, bytes: &[u8]) -> Result<TempImage, BenchError> {
        let path = std::env::temp_dir().join(format!("bt86-bench-{name}-{}.elf", std::process::id()));
        std::fs::write(&path, bytes).map_err(|source| BenchError::TempFile { path: path.display().to_string(), source })?;
        Ok(TempImage { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `program args...` with stdin closed and returns its wall time
/// (from spawn to exit), its standard output and its exit status (128 +
/// the signal number if a signal ended it). Standard error is discarded.
pub fn time_command(program: &Path, args: &[&std::ffi::OsStr]) -> Result<Run, BenchError> {
    let what = || format!("{} {}", program.display(), args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let t0 = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| BenchError::Spawn { what: what(), source })?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if t0.elapsed() > RUN_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::External { what: what(), problem: format!("did not finish within {RUN_LIMIT:?} and was killed") });
            }
            // Polling every 100 us adds at most that much to a run that
            // takes tenths of a second.
            Ok(None) => std::thread::sleep(Duration::from_micros(100)),
            Err(source) => return Err(BenchError::Spawn { what: what(), source }),
        }
    };
    let wall = t0.elapsed();
    let stdout = reader.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let status = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(Run { wall, stdout, status })
}

/// Runs `elf` under QEMU with the reference arguments plus `extra`, and
/// fails unless QEMU exits with `want_status`.
pub fn run_qemu(qemu: &Path, elf: &Path, extra: &[&str], want_status: i32) -> Result<Run, BenchError> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["-kernel".as_ref(), elf.as_os_str()];
    args.extend(QEMU_ARGS.iter().chain(extra).map(|a| std::ffi::OsStr::new(*a)));
    let run = time_command(qemu, &args)?;
    if run.status != want_status {
        return Err(BenchError::External {
            what: format!("{} -kernel {}", qemu.display(), elf.display()),
            problem: format!(
                "exited with status {} instead of {want_status}; run the command by hand to see what the guest printed",
                run.status
            ),
        });
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_reports_its_output_status_and_time() {
        // (shell script, stdout, status)
        let cases: [(&str, &[u8], i32); 3] =
            [("printf abc", b"abc", 0), ("exit 33", b"", 33), ("sleep 0.05; printf x; exit 3", b"x", 3)];
        for (script, out, status) in cases {
            let run = time_command(Path::new("/bin/sh"), &["-c".as_ref(), script.as_ref()]).unwrap();
            assert_eq!((run.stdout.as_slice(), run.status), (out, status), "{script}");
        }
        let slow = time_command(Path::new("/bin/sh"), &["-c".as_ref(), "sleep 0.05".as_ref()]).unwrap();
        assert!(slow.wall >= Duration::from_millis(50), "{:?}", slow.wall);
        assert!(matches!(time_command(Path::new("/nonexistent/qemu"), &[]), Err(BenchError::Spawn { .. })));
    }
}
