//! Measuring the host's own mechanisms, as yardsticks for the guest's.
//!
//! The benchmarks compare what bt86 charges for a guest operation with what
//! the host charges for the mechanism underneath it:
//!
//! - a guest system call round trip (ring 3 to ring 0 and back, through
//!   bt86's callouts) against one cheap, uncached Linux system call
//!   ([`host_syscall_round_trip`]);
//! - a hidden fault (a guest access to a page the shadow mappings do not
//!   have yet) against one bare host page-fault round trip: SIGSEGV, a
//!   handler that makes the page accessible, the access retried
//!   ([`host_fault_round_trip`]).
//!
//! This module owns no guest state and never touches the VM. The fault
//! measurement replaces the process's SIGSEGV handler for its duration and
//! puts the previous one back before it returns, so it must not run while
//! a VM runs on another thread (bt86 runs one VM per process, and
//! `bt86 bench` calls it between runs, on the VM's own thread).

use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::NativeError;

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

/// The size of the page the fault measurement protects and unprotects.
const PAGE: usize = 4096;

/// The page whose faults [`host_fault_round_trip`] claims (0 when no
/// measurement runs). The handler reads it, so it is an atomic.
static FAULT_PAGE: AtomicUsize = AtomicUsize::new(0);

/// Faults the handler resolved, counted so that a measurement in which
/// the accesses did not fault (or faulted twice) is refused.
static FAULTS_TAKEN: AtomicU64 = AtomicU64::new(0);

/// The SIGSEGV action that was installed before the measurement's own,
/// for faults that are not the measurement's. It points at a local of
/// [`host_fault_round_trip`] that outlives the handler's installation.
static PREVIOUS_SEGV: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

/// Only one fault measurement at a time: the SIGSEGV disposition and the
/// statics above belong to the whole process.
static MEASURING: Mutex<()> = Mutex::new(());

/// The SIGSEGV handler of the measurement. It does the least a monitor
/// could do for a hidden fault: one `mprotect` that makes the page
/// readable and writable, then it returns, and the kernel restarts the
/// faulting access (a #PF is a fault, reported before the instruction
/// completes: SDM Vol. 3A section 6.5). Everything it calls is
/// async-signal-safe (signal-safety(7) lists mprotect and sigaction).
extern "C" fn on_measured_fault(sig: libc::c_int, info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    let page = FAULT_PAGE.load(Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler,
    // and si_addr is defined for SIGSEGV.
    let addr = unsafe { (*info).si_addr() } as usize;
    if page != 0 && addr & !(PAGE - 1) == page {
        // SAFETY: `page` is the anonymous page that `host_fault_round_trip`
        // mapped and still owns (FAULT_PAGE is cleared before it is
        // unmapped); changing its protection affects nothing else.
        if unsafe { libc::mprotect(page as *mut libc::c_void, PAGE, libc::PROT_READ | libc::PROT_WRITE) } == 0 {
            FAULTS_TAKEN.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    // Not the measurement's fault (or the page could not be unprotected):
    // put the previous disposition back and return, so that the access
    // faults again into whoever handled it before, as bt86's own handler
    // does for faults that are not the guest's.
    let previous = PREVIOUS_SEGV.load(Ordering::SeqCst);
    // SAFETY: a non-null PREVIOUS_SEGV points at the saved action, alive
    // until after the measurement's handler is removed; sigaction with a
    // valid action pointer and a null old pointer only installs it.
    unsafe {
        if previous.is_null() {
            libc::signal(sig, libc::SIG_DFL);
        } else {
            libc::sigaction(sig, previous, std::ptr::null_mut());
        }
    }
}

/// An anonymous page, unmapped when dropped.
struct ScratchPage(*mut libc::c_void);

impl ScratchPage {
    fn new() -> Result<ScratchPage, NativeError> {
        // SAFETY: a fresh anonymous private mapping at an address the
        // kernel chooses; it replaces nothing, and the result is checked.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), PAGE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(NativeError::Map("page of the host fault measurement", io::Error::last_os_error()));
        }
        Ok(ScratchPage(p))
    }

    fn protect(&self, prot: libc::c_int) -> Result<(), NativeError> {
        // SAFETY: self.0 is our own page-aligned one-page mapping; no Rust
        // reference points into it, so no reference can observe the change.
        if unsafe { libc::mprotect(self.0, PAGE, prot) } != 0 {
            return Err(NativeError::Protect(io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for ScratchPage {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `ScratchPage::new` and nothing
        // uses it any more (the handler no longer claims it).
        unsafe { libc::munmap(self.0, PAGE) };
    }
}

/// The measurement's SIGSEGV handler, installed for as long as this lives;
/// dropping it puts the previous action back, on every path out.
struct InstalledHandler {
    previous: Box<libc::sigaction>,
}

impl InstalledHandler {
    fn install() -> Result<InstalledHandler, NativeError> {
        // SAFETY: an all-zero sigaction is a valid value; the handler, the
        // flags and an empty mask are set before it is used.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_measured_fault as *const () as libc::sighandler_t;
        // The same flags as the VM's own handlers (signals.rs): the
        // three-argument form, on the alternate stack if there is one, so
        // the kernel's delivery work is the same as for a hidden fault.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sa_mask is a field of the local value we own.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: an all-zero sigaction is a valid value for the kernel to
        // overwrite with the previous disposition.
        let mut previous: Box<libc::sigaction> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: query only (null new action): fills `previous`.
        if unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut *previous) } != 0 {
            return Err(NativeError::Signals(io::Error::last_os_error()));
        }
        // Publish the saved action before the handler can run.
        PREVIOUS_SEGV.store(&mut *previous, Ordering::SeqCst);
        // SAFETY: `action` is a live local; the previous action was saved
        // above, so the old pointer is not needed.
        if unsafe { libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut()) } != 0 {
            PREVIOUS_SEGV.store(std::ptr::null_mut(), Ordering::SeqCst);
            return Err(NativeError::Signals(io::Error::last_os_error()));
        }
        Ok(InstalledHandler { previous })
    }
}

impl Drop for InstalledHandler {
    fn drop(&mut self) {
        // SAFETY: `previous` is the action the kernel gave us in `install`;
        // putting it back is what it was saved for.
        unsafe { libc::sigaction(libc::SIGSEGV, &*self.previous, std::ptr::null_mut()) };
        PREVIOUS_SEGV.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

/// The cost of one host page-fault round trip, the floor under any hidden
/// fault (brief §4.5): a read of a `PROT_NONE` page raises SIGSEGV, the
/// handler makes the page readable and writable with `mprotect` and
/// returns, the read completes, and the page is made `PROT_NONE` again with
/// a second `mprotect` for the next iteration. Returns the mean time of
/// one such iteration over `iters` of them (at least one is made).
///
/// The handler is installed with `sigaction` (SA_SIGINFO | SA_ONSTACK, as
/// the VM's) for the duration of the call, and the previous SIGSEGV action
/// is restored before it returns, so a VM's handler survives. Faults
/// elsewhere in the process during the measurement go to that previous
/// handler. Do not call it while a VM runs on another thread.
pub fn host_fault_round_trip(iters: u32) -> Result<Duration, NativeError> {
    let iters = iters.max(1);
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let page = ScratchPage::new()?;
    // Touch the page once while it is accessible, so that it is backed by
    // a real frame: the timed faults are then protection faults on a
    // present page, as a hidden fault on a populated mapping is, and not
    // first-touch allocations.
    // SAFETY: the page is mapped readable and writable and 4096 bytes long.
    unsafe { page.0.cast::<u32>().write_volatile(1) };
    page.protect(libc::PROT_NONE)?;
    FAULTS_TAKEN.store(0, Ordering::SeqCst);
    FAULT_PAGE.store(page.0 as usize, Ordering::SeqCst);
    let handler = InstalledHandler::install();
    let result = handler.and_then(|handler| {
        let word = page.0.cast::<u32>();
        let t0 = Instant::now();
        for _ in 0..iters {
            // SAFETY: the page is mapped; while it is PROT_NONE the read
            // faults into `on_measured_fault`, which makes it readable and
            // returns, and the read is then retried and completes.
            std::hint::black_box(unsafe { word.read_volatile() });
            page.protect(libc::PROT_NONE)?;
        }
        let elapsed = t0.elapsed();
        drop(handler);
        Ok(elapsed)
    });
    FAULT_PAGE.store(0, Ordering::SeqCst);
    let elapsed = result?;
    let taken = FAULTS_TAKEN.load(Ordering::SeqCst);
    if taken != u64::from(iters) {
        return Err(NativeError::Internal(format!(
            "timing host page faults: {iters} protected reads took {taken} faults instead of one each; the measurement is void"
        )));
    }
    Ok(elapsed / iters)
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

    /// The tests that change the SIGSEGV disposition run one at a time.
    static SIGNAL_TESTS: Mutex<()> = Mutex::new(());

    fn current_segv_action() -> libc::sigaction {
        // SAFETY: an all-zero sigaction is a valid value for the kernel to
        // fill; a null new action only queries.
        let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `now` is a live local.
        assert_eq!(unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut now) }, 0);
        now
    }

    #[test]
    fn a_host_fault_round_trip_takes_a_plausible_time() {
        let _serial = SIGNAL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        // A signal delivery and two mprotect calls cost microseconds on
        // any host (about 8 us here, brief §4.5): far more than 100 ns,
        // which a loop whose reads never faulted would take, and far less
        // than a millisecond.
        let one = (0..3).map(|_| host_fault_round_trip(2000).unwrap()).min().unwrap();
        assert!(one > Duration::from_nanos(100) && one < Duration::from_millis(1), "one fault round trip took {one:?}");
        // The count of faults is checked inside; a thousand more
        // iterations must take longer in total than a handful.
        let few = (0..3).map(|_| host_fault_round_trip(5).unwrap() * 5).min().unwrap();
        let many = (0..3).map(|_| host_fault_round_trip(1000).unwrap() * 1000).min().unwrap();
        assert!(many > few * 10, "1000 faults took {many:?}, 5 faults {few:?}");
    }

    /// Stands in for a VM's fault handler; never runs.
    extern "C" fn stand_in(_sig: libc::c_int, _info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {}

    #[test]
    fn the_previous_segv_handler_is_restored() {
        let _serial = SIGNAL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let original = current_segv_action();
        // SAFETY: a zeroed sigaction filled in before use.
        let mut mine: libc::sigaction = unsafe { std::mem::zeroed() };
        mine.sa_sigaction = stand_in as *const () as libc::sighandler_t;
        mine.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `mine` is a live local and the handler is a valid
        // extern "C" function; no SIGSEGV is expected while it is in place
        // outside the measurement, which installs its own.
        assert_eq!(unsafe { libc::sigaction(libc::SIGSEGV, &mine, std::ptr::null_mut()) }, 0);
        let measured = host_fault_round_trip(100);
        let after = current_segv_action();
        // SAFETY: puts back the test process's own handler, saved above.
        assert_eq!(unsafe { libc::sigaction(libc::SIGSEGV, &original, std::ptr::null_mut()) }, 0);
        assert!(measured.is_ok(), "{measured:?}");
        assert_eq!(after.sa_sigaction, mine.sa_sigaction, "the stand-in handler was not put back");
        assert_eq!(after.sa_flags & (libc::SA_SIGINFO | libc::SA_ONSTACK), libc::SA_SIGINFO | libc::SA_ONSTACK);
        assert_eq!(current_segv_action().sa_sigaction, original.sa_sigaction);
    }
}
