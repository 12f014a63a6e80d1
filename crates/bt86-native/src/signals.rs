//! Faults in translated code become VM exits.
//!
//! Translated code raises real faults: #GP when it touches the monitor
//! area past a truncated segment limit, #PF on unmapped guest addresses or
//! write-protected code pages, #DE, #UD, #MF, #XM (brief §4.5). Linux turns
//! them into SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGTRAP. The handler runs
//! on an alternate stack (the interrupted ESP is a guest stack), starts with
//! the assembly prologue in [`crate::switch`] that restores the host FS
//! base, and then only *records* the fault and rewrites the saved context
//! so that sigreturn lands in the 64-bit landing pad. All real work happens
//! afterwards, in ordinary Rust, in the run loop.
//!
//! Like Wasmtime's handler, it claims only faults of its own code: those
//! raised while the CPU ran 32-bit code under the TC's code selector.
//! Anything else is a host bug: the previous handler is
//! put back and the fault repeats into it, so a crash in the monitor still
//! crashes loudly.

use std::io;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

use bt86_translate::layout::{vcpu, MONITOR_BASE, STUB_PAGE};
use bt86_translate::{ExitId, TranslationCache};

use crate::ldt::{CODE_SELECTOR, HOST_CODE64_SELECTOR};
use crate::{timer, NativeError};

/// The signals a guest instruction can raise on the host.
const FAULT_SIGNALS: [libc::c_int; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGTRAP];

/// The handlers that were installed before bt86's, restored for faults
/// that are not the guest's.
static mut PREVIOUS: [Option<libc::sigaction>; 5] = [None; 5];

/// The translation cache of the running VM, published for the timer
/// signal's boundary check while the CPU is on the guest side (the monitor
/// does not touch the cache then), null otherwise.
pub static ASYNC_TC: AtomicPtr<TranslationCache> = AtomicPtr::new(std::ptr::null_mut());
static INSTALL: Once = Once::new();

/// Size of each thread's alternate signal stack.
const ALT_STACK_SIZE: usize = 256 * 1024;

/// Installs the fault handlers (once per process).
pub fn install() -> Result<(), NativeError> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        for (i, &sig) in FAULT_SIGNALS.iter().enumerate() {
            // SAFETY: a zeroed sigaction is a valid starting point; we set
            // the handler, flags and an empty mask before passing it on.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = crate::switch::trampoline_address();
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: sa_mask is a field of the local value we own.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: an all-zero sigaction is a valid value to be
            // overwritten by the kernel.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live locals; the kernel reads
            // `action` and writes the previous disposition into `old`.
            let installed = unsafe { libc::sigaction(sig, &action, &mut old) };
            if installed != 0 {
                result = Err(NativeError::Signals(io::Error::last_os_error()));
                return;
            }
            // SAFETY: PREVIOUS is written only here, inside call_once,
            // before any handler can read it.
            unsafe { (*std::ptr::addr_of_mut!(PREVIOUS))[i] = Some(old) };
        }
        // The host timer: SA_RESTART so that the monitor's own system calls
        // resume transparently when it fires while the monitor runs.
        // SAFETY: as above, a zeroed sigaction filled in before use.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = crate::switch::trampoline_address();
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        // SAFETY: sa_mask is a field of the local value we own.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is a live local; the old action is not needed.
        if unsafe { libc::sigaction(timer::TIMER_SIGNAL, &action, std::ptr::null_mut()) } != 0 {
            result = Err(NativeError::Signals(io::Error::last_os_error()));
        }
    });
    result
}

/// Gives the calling thread an alternate signal stack, if it has none.
pub fn ensure_alt_stack() -> Result<(), NativeError> {
    // SAFETY: an all-zero stack_t is a valid value for the kernel to fill.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only queries the current one into `cur`.
    let queried = unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) };
    if queried == 0 && cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= ALT_STACK_SIZE {
        return Ok(());
    }
    // SAFETY: an anonymous private mapping; its address is checked below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(NativeError::Signals(io::Error::last_os_error()));
    }
    let st = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: ALT_STACK_SIZE };
    // SAFETY: `st` describes the mapping made above, which stays mapped for
    // the life of the thread (it is deliberately never unmapped).
    if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
        return Err(NativeError::Signals(io::Error::last_os_error()));
    }
    Ok(())
}

/// The host timer fired: stop the guest at an instruction boundary, or try
/// again shortly. While the monitor itself runs there is nothing to do: the
/// run loop looks at the devices' deadlines before every entry.
fn timer_signal(gregs: &mut [libc::greg_t; 23], rip: u64, cs: u64) {
    if !timer::IN_GUEST.load(Ordering::SeqCst) {
        return;
    }
    let tc = ASYNC_TC.load(Ordering::SeqCst);
    let boundary = if cs == u64::from(CODE_SELECTOR) && !tc.is_null() && rip < 1 << 32 {
        // SAFETY: ASYNC_TC points at the VM's translation cache while
        // IN_GUEST is set, and the monitor does not modify the cache while
        // the CPU runs guest code; `boundary_at` only reads it.
        unsafe { (*tc).boundary_at(rip as u32) }
    } else {
        None
    };
    if boundary.is_none() {
        // Inside a rewritten sequence, or in the world switch itself.
        timer::retry_from_handler();
        return;
    }
    let page = MONITOR_BASE as usize as *mut u8;
    // SAFETY: as for faults: the VCPU page is mapped read/write for the
    // life of the VM and only this thread uses it.
    unsafe {
        page.add(vcpu::FAULT_RIP as usize).cast::<u64>().write_volatile(rip);
        page.add(vcpu::EXIT_ID as usize).cast::<u32>().write_volatile(ExitId::ASYNC.0);
    }
    redirect_to_landing(gregs);
}

/// Rewrites the interrupted context so that sigreturn resumes in the
/// landing pad, in 64-bit mode, with every guest register as it was.
/// CSGSFS packs CS in its low 16 bits.
fn redirect_to_landing(gregs: &mut [libc::greg_t; 23]) {
    gregs[libc::REG_RIP as usize] = i64::from(LANDING);
    let csgsfs = gregs[libc::REG_CSGSFS as usize] as u64;
    gregs[libc::REG_CSGSFS as usize] = ((csgsfs & !0xFFFF) | u64::from(HOST_CODE64_SELECTOR)) as i64;
}

/// Where the landing pad is copied: the start of the stub page.
pub const LANDING: u32 = MONITOR_BASE + STUB_PAGE;

/// Called by `bt86_signal_trampoline` with the host FS base restored.
///
/// # Safety
/// Called only by the kernel, through the trampoline, with valid `info`
/// and `uc` pointers for a signal that is being delivered.
pub unsafe extern "C" fn bt86_signal_handler(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers.
    let uc = unsafe { &mut *(uc as *mut libc::ucontext_t) };
    let gregs = &mut uc.uc_mcontext.gregs;
    let rip = gregs[libc::REG_RIP as usize] as u64;
    let cs = gregs[libc::REG_CSGSFS as usize] as u64 & 0xFFFF;
    // Ours if the CPU was running 32-bit code under the TC's code selector:
    // translated code, or guest code called directly by a benchmark.
    if sig == timer::TIMER_SIGNAL {
        timer_signal(gregs, rip, cs);
        return;
    }
    if cs == u64::from(CODE_SELECTOR) {
        let trapno = gregs[libc::REG_TRAPNO as usize] as u32;
        let err = gregs[libc::REG_ERR as usize] as u32;
        let addr = if sig == libc::SIGSEGV || sig == libc::SIGBUS {
            // SAFETY: si_addr is valid for SIGSEGV and SIGBUS.
            unsafe { (*info).si_addr() as u64 }
        } else {
            0
        };
        let page = MONITOR_BASE as usize as *mut u8;
        // SAFETY: the VCPU page is mapped read/write at MONITOR_BASE for
        // the life of the VM, and only this thread uses it; the offsets are
        // inside the page and suitably aligned.
        unsafe {
            page.add(vcpu::FAULT_TRAPNO as usize).cast::<u32>().write_volatile(trapno);
            page.add(vcpu::FAULT_ERR as usize).cast::<u32>().write_volatile(err);
            page.add(vcpu::FAULT_ADDR as usize).cast::<u64>().write_volatile(addr);
            page.add(vcpu::FAULT_RIP as usize).cast::<u64>().write_volatile(rip);
            page.add(vcpu::EXIT_ID as usize).cast::<u32>().write_volatile(ExitId::FAULT.0);
        }
        // Resume in the landing pad with every guest register as the fault
        // left it.
        redirect_to_landing(gregs);
        return;
    }
    // Not a guest fault: give the signal back to whoever had it before.
    let i = FAULT_SIGNALS.iter().position(|&s| s == sig).unwrap_or(0);
    // SAFETY: PREVIOUS was filled by `install` before this handler could
    // run; restoring a saved sigaction is what it is for. Returning then
    // re-executes the faulting instruction under the previous disposition.
    unsafe {
        match (*std::ptr::addr_of!(PREVIOUS))[i] {
            Some(old) => {
                libc::sigaction(sig, &old, std::ptr::null_mut());
            }
            None => {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}
