//! The host timer that brings a running guest back to the monitor.
//!
//! Chained translation units can run for ever without an exit: a guest
//! spinning in `1: jmp 1b` never returns to the run loop on its own. Yet
//! its timer interrupt must arrive (brief §4.7). So before entering the
//! translation cache the run loop arms a one-shot POSIX timer for the next
//! device deadline, aimed at this thread with `SIGEV_THREAD_ID`. When it
//! fires while guest code runs, the signal handler either redirects the
//! guest to the landing pad, if it stopped exactly at a guest instruction
//! boundary, or re-arms the timer a few microseconds later and lets the
//! guest go on to a boundary.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::NativeError;

/// The signal the host timer raises.
pub const TIMER_SIGNAL: libc::c_int = libc::SIGALRM;

/// How long the handler waits before trying again when the guest was not
/// at an instruction boundary.
pub const RETRY_NS: u64 = 20_000;

/// True while the CPU is on the guest side of the world switch (set just
/// before entering, cleared just after the exit).
pub static IN_GUEST: AtomicBool = AtomicBool::new(false);

/// The `timer_t` of the running VM, for the handler's re-arm.
static TIMER: AtomicUsize = AtomicUsize::new(0);

/// A one-shot CLOCK_MONOTONIC timer that signals the creating thread.
pub struct HostTimer {
    id: libc::timer_t,
}

impl HostTimer {
    /// Creates the timer for the calling thread.
    pub fn new() -> Result<HostTimer, NativeError> {
        // SAFETY: a zeroed sigevent is a valid value; the fields that matter
        // are set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = TIMER_SIGNAL;
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: both pointers are to live locals; the kernel writes the
        // new timer's id into `id`.
        let r = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id) };
        if r != 0 {
            return Err(NativeError::Timer(io::Error::last_os_error()));
        }
        TIMER.store(id as usize, Ordering::SeqCst);
        Ok(HostTimer { id })
    }

    /// Fires once, `ns` nanoseconds from now (at least 1 ns).
    pub fn arm_in(&self, ns: u64) {
        arm(self.id, ns);
    }

    /// Cancels a pending expiry.
    pub fn disarm(&self) {
        arm(self.id, 0);
    }
}

impl Drop for HostTimer {
    fn drop(&mut self) {
        TIMER.store(0, Ordering::SeqCst);
        // SAFETY: `id` is the timer this object created and nobody else
        // deletes it.
        unsafe { libc::timer_delete(self.id) };
    }
}

/// timer_settime with a relative one-shot expiry; 0 disarms.
fn arm(id: libc::timer_t, ns: u64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long },
    };
    // SAFETY: `id` is a live timer (see `TIMER`); timer_settime only reads
    // `spec` and is async-signal-safe.
    unsafe { libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) };
}

/// From the signal handler: try again in [`RETRY_NS`].
pub fn retry_from_handler() {
    let id = TIMER.load(Ordering::SeqCst);
    if id != 0 {
        arm(id as libc::timer_t, RETRY_NS);
    }
}
