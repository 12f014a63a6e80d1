//! SIGINT and SIGTERM: a request to stop, recorded for the monitor to act on.
//!
//! This module owns the process's handling of the two signals with which a
//! user or a service manager asks bt86 to stop. It does not stop anything
//! itself and knows nothing about the VM: it records which signal came, and
//! the caller (the run loop, or for now a thread of the `bt86` command)
//! flushes the disk and exits.
//!
//! Why no signal handler: a process-directed signal is delivered to any
//! thread that does not block it, and the VM's thread spends its time in
//! guest code, in 32-bit compatibility mode, on the guest's stack, with
//! the guest's FS base. A handler that ran there would have to restore the
//! host's state first, as the fault handlers in `signals` do, and could
//! only set a flag. Instead [`install`] blocks both signals in the calling
//! thread, so that every thread created after it (the VM's, the watchdog)
//! inherits the block, and one thread of its own waits for them with
//! sigwait(2) and records them as ordinary Rust code. The signals then
//! never interrupt guest code at all.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::NativeError;

/// The signal that asked bt86 to stop (SIGINT or SIGTERM), or 0.
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// Whether [`install`] already ran in this process.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The set {SIGINT, SIGTERM}.
fn stop_signals() -> Result<libc::sigset_t, NativeError> {
    // SAFETY: an all-zero sigset_t is a valid value to initialise; sigemptyset
    // then defines its contents.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t owned by this frame, and
    // the signal numbers are valid.
    let ok = unsafe {
        libc::sigemptyset(&mut set) == 0
            && libc::sigaddset(&mut set, libc::SIGINT) == 0
            && libc::sigaddset(&mut set, libc::SIGTERM) == 0
    };
    if ok {
        Ok(set)
    } else {
        Err(NativeError::Signals(io::Error::last_os_error()))
    }
}

/// Starts recording SIGINT and SIGTERM instead of letting them kill the
/// process. Call it early in `main`, before any other thread starts:
/// threads that already exist keep the default action and would still be
/// killed. Calling it again does nothing.
pub fn install() -> Result<(), NativeError> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let set = stop_signals()?;
    // SAFETY: `set` is a valid sigset_t and the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        INSTALLED.store(false, Ordering::SeqCst);
        return Err(NativeError::Signals(io::Error::from_raw_os_error(rc)));
    }
    // The waiter inherits the block, as sigwait requires.
    std::thread::Builder::new()
        .name("bt86-signals".to_string())
        .spawn(move || loop {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is a valid sigset_t copied into this thread,
            // `signal` a writable int, and both signals are blocked here.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc == 0 {
                REQUESTED.store(signal, Ordering::SeqCst);
            }
        })
        .map_err(NativeError::Signals)?;
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst) != 0
}

/// The signal that asked bt86 to stop, if one did (the last one, if both).
pub fn signal() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The exit status a process stopped by `signal` reports by the shell's
/// convention, 128 + the signal number: 130 for SIGINT, 143 for SIGTERM.
pub fn exit_status(signal: i32) -> i32 {
    128 + signal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_the_shell() {
        assert_eq!(exit_status(libc::SIGINT), 130);
        assert_eq!(exit_status(libc::SIGTERM), 143);
    }

    // Delivery itself is tested end to end in the root package's
    // tests/disk.rs, which sends SIGINT and SIGTERM to a running `bt86`: in
    // this test process the harness's threads predate `install` and would
    // take a process-directed signal with its default, fatal action.
}
