//! Measuring the host's own system call, as the yardstick for the guest's.
//!
//! The benchmarks compare a guest system call round trip (ring 3 to ring 0
//! and back, through bt86's callouts) with what the host kernel charges for
//! the same trip. This module times one cheap, uncached Linux system call
//! and nothing else: it owns no guest state and never touches the VM.

use std::time::{Duration, Instant};

/// Makes `iters` calls of `getppid(2)` and returns the time they took
/// together. getppid does almost nothing inside the kernel and, unlike
/// getpid, no C library caches its result, so each call is one full trip
/// into the host kernel and back: `syscall`, the kernel's entry and exit
/// paths, `sysret`.
pub fn host_syscall_round_trip(iters: u32) -> Duration {
    let t0 = Instant::now();
    for _ in 0..iters {
        // SAFETY: getppid takes no arguments, touches no memory of ours and
        // cannot fail (getppid(2)); black_box keeps the call in the loop.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    t0.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_calls_take_longer() {
        // Ten thousand system calls cannot take less time than ten; a
        // broken loop (optimised away, or stopped early) would.
        let few = (0..5).map(|_| host_syscall_round_trip(10)).min().unwrap();
        let many = (0..5).map(|_| host_syscall_round_trip(10_000)).min().unwrap();
        assert!(many > few * 10, "10000 calls took {many:?}, 10 calls {few:?}");
    }
}
