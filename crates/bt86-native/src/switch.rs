//! The world switch: the only code that moves the CPU between the monitor
//! (64-bit Rust) and the guest (32-bit translated code), and the first
//! instructions of the fault handler.
//!
//! Three pieces of hand-written assembly, each instruction commented
//! because students read them line by line (brief §4.3):
//!
//! - `bt86_world_enter`, a 64-bit function in the bt86 binary: saves the
//!   host's callee-saved registers, stack pointer, FS/GS bases and
//!   selectors, makes the guest's x87/SSE state live, loads the guest's
//!   arithmetic flags, shadow selectors and registers, and far-jumps into
//!   32-bit code.
//! - the landing pad, 64-bit code that must sit below 4 GiB because a far
//!   jump from 32-bit code can only name a 32-bit offset. The binary holds
//!   a template, `bt86_landing_start..bt86_landing_end`, which the monitor
//!   copies into the stub page. Every exit, whether an exit stub or a fault
//!   redirected by the signal handler, arrives here in 64-bit mode with
//!   every guest register intact. It saves them in the VCPU page, puts the
//!   host's state back, and returns from `bt86_world_enter` as if it were
//!   an ordinary call. Segment loads are among the most expensive
//!   instructions here, so it restores only what 64-bit code depends on:
//!   SS, and the FS and GS *bases* (with wrfsbase/wrgsbase). DS, ES, FS and
//!   GS keep their shadow selectors while the monitor runs, which is
//!   harmless: 64-bit code ignores DS and ES, Linux preserves the FS/GS
//!   bases across context switches on FSGSBASE hosts, and `modify_ldt`
//!   reloads DS and ES itself when it changes the LDT under them.
//! - `bt86_signal_trampoline`, the handler the kernel calls for SIGSEGV,
//!   SIGBUS, SIGFPE, SIGILL and SIGTRAP: it restores the host FS base
//!   first, because the kernel does not, and Rust's thread-locals live
//!   there.
//!
//! Measured pitfall (brief §4.3): after a trip through compatibility mode
//! the upper halves of 64-bit registers may come back cleared, so
//! everything the landing pad needs is reloaded from memory.

use std::arch::global_asm;
use std::sync::atomic::AtomicU64;

use bt86_cpu::state::flags;
use bt86_translate::layout::{vcpu, MONITOR_BASE};

/// The monitor thread's FS base, read by the signal trampoline before it
/// calls any Rust code. Zero until a VM is created.
#[no_mangle]
pub static BT86_HOST_FSBASE: AtomicU64 = AtomicU64::new(0);

/// Offset of `uc_mcontext.gregs[REG_RIP]` in Linux's x86-64 `ucontext_t`.
pub const UC_RIP: usize = 40 + 8 * libc::REG_RIP as usize;

global_asm!(
    ".text",
    // ------------------------------------------------------------------
    // extern "sysv64" fn bt86_world_enter(vcpu: u64)   (rdi = VCPU page)
    // ------------------------------------------------------------------
    ".globl bt86_world_enter",
    ".type bt86_world_enter, @function",
    ".p2align 4",
    "bt86_world_enter:",
    "    push rbp",                              // The SysV ABI's callee-saved registers:
    "    push rbx",                              // the landing pad pops them again
    "    push r12",                              // before it returns to our caller.
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdi + {host_rsp}], rsp",           // Where the landing pad finds the host stack.
    "    rdfsbase rax",                          // Rust's thread-locals hang off FS; loading
    "    mov [rdi + {host_fsbase}], rax",        // a guest FS selector replaces the base.
    "    rdgsbase rax",                          // The same for GS, which becomes the
    "    mov [rdi + {host_gsbase}], rax",        // monitor's segment in guest mode.
    "    mov [rdi + {host_ss}], ss",             // The host's stack selector, restored on exit.
    "    fnstcw [rdi + {host_fcw}]",             // The x87 control word and MXCSR are
    "    stmxcsr [rdi + {host_mxcsr}]",          // callee-saved in the ABI; the rest is not.
    "    fxrstor [rdi + {guest_fx}]",            // The guest's x87/SSE registers go live.
    "    mov ax, ds",                            // Shadow selectors from the LDT: the guest's
    "    cmp ax, [rdi + {guest_ds}]",            // bases, limits truncated below the monitor.
    "    je 2f",                                 // DS and ES usually still hold them from the
    "    mov ds, [rdi + {guest_ds}]",            // last trip (modify_ldt reloads DS and ES
    "2:",                                        // itself when it rewrites their descriptors),
    "    mov ax, es",                            // and a segment load is expensive, so load
    "    cmp ax, [rdi + {guest_es}]",            // them only if they differ.
    "    je 3f",
    "    mov es, [rdi + {guest_es}]",
    "3:",
    "    mov eax, [rdi + {eflags}]",             // The guest's arithmetic flags and DF...
    "    and eax, {native_flags}",               // ...only those: IF, IOPL, TF, AC are virtual.
    "    or eax, 0x202",                         // Bit 1 is always set; IF stays the host's.
    "    push rax",
    "    popfq",                                 // Flags are live from here on.
    "    mov fs, [rdi + {guest_fs}]",            // FS base is now the guest's: no Rust past here.
    "    mov gs, [rdi + {guest_gs}]",            // GS = the monitor area, for gs:[...] in the TC.
    "    mov ss, [rdi + {guest_ss}]",            // The guest's stack segment...
    "    mov esp, [rdi + {gpr} + 16]",           // ...and stack pointer (zero-extends RSP).
    "    mov eax, [rdi + {gpr} + 0]",            // The guest's general-purpose registers,
    "    mov ecx, [rdi + {gpr} + 4]",            // all but EDI, which still points at the
    "    mov edx, [rdi + {gpr} + 8]",            // VCPU page for the far jump below.
    "    mov ebx, [rdi + {gpr} + 12]",
    "    mov ebp, [rdi + {gpr} + 20]",
    "    mov esi, [rdi + {gpr} + 24]",
    "    jmp fword ptr [rdi + {entry_farptr}]",  // Far jump (m16:32) into 32-bit code: the
                                                 // entry trampoline loads EDI and jumps to
                                                 // the translation unit.
    ".size bt86_world_enter, . - bt86_world_enter",
    // ------------------------------------------------------------------
    // The landing pad template, copied below 4 GiB into the stub page.
    // Entered in 64-bit mode from an exit stub's far jump, or from a fault
    // redirected by the signal handler, with every guest register live.
    // ------------------------------------------------------------------
    ".globl bt86_landing_start",
    ".globl bt86_landing_end",
    ".p2align 4",
    "bt86_landing_start:",
    "    .byte 0xA3",                            // mov [moffs64], eax: the one register we can
    "    .quad {base} + {gpr}",                  // store with no free register to address with.
    "    movabs rax, {base}",                    // RAX = the VCPU page (a 64-bit immediate:
                                                 // 0xFFC00000 does not fit a sign-extended disp32).
    "    mov [rax + {gpr} + 4], ecx",            // Save the guest's registers.
    "    mov [rax + {gpr} + 8], edx",
    "    mov [rax + {gpr} + 12], ebx",
    "    mov [rax + {gpr} + 16], esp",
    "    mov [rax + {gpr} + 20], ebp",
    "    mov [rax + {gpr} + 24], esi",
    "    mov [rax + {gpr} + 28], edi",
    "    mov rsp, [rax + {host_rsp}]",           // Back on the host stack.
    "    pushfq",                                // Capture the guest's arithmetic flags...
    "    pop rcx",
    "    mov [rax + {eflags}], ecx",             // ...into the VCPU page.
    "    cld",                                   // DF = 0, as the ABI demands. (TF and AC are
                                                 // never set natively: popf and iret are
                                                 // callouts.)
    "    mov ss, [rax + {host_ss}]",             // The host's stack selector.
                                                 // DS, ES, FS and GS keep the shadow selectors:
                                                 // 64-bit code ignores DS and ES, and what
                                                 // matters of FS and GS is their base:
    "    mov rcx, [rax + {host_fsbase}]",        // thread-locals work again,
    "    wrfsbase rcx",
    "    mov rcx, [rax + {host_gsbase}]",
    "    wrgsbase rcx",
    "    fxsave [rax + {guest_fx}]",             // The guest's x87/SSE state, for next time.
    "    fnclex",                                // No pending x87 exception for the host,
    "    emms",                                  // an empty x87 stack, as the ABI expects,
    "    fldcw [rax + {host_fcw}]",              // and the host's control word
    "    ldmxcsr [rax + {host_mxcsr}]",          // and MXCSR.
    "    pop r15",                               // The callee-saved registers pushed by
    "    pop r14",                               // bt86_world_enter.
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",                                   // Return to bt86_world_enter's caller.
    "bt86_landing_end:",
    // ------------------------------------------------------------------
    // extern "C" fn bt86_signal_trampoline(sig, info, ucontext)
    // The sa_sigaction of every fault handler bt86 installs.
    // ------------------------------------------------------------------
    ".globl bt86_signal_trampoline",
    ".type bt86_signal_trampoline, @function",
    ".p2align 4",
    "bt86_signal_trampoline:",
    "    push rbx",                              // Callee-saved, and realigns the stack to 16.
    "    rdfsbase rbx",                          // The interrupted code's FS base.
    "    mov rax, [rdx + {uc_rip}]",             // Was the interrupted code below 4 GiB, i.e.
    "    shr rax, 32",                           // translated code or the landing pad, where
    "    jnz 2f",                                // FS holds the guest's base?
    "    mov rax, [rip + BT86_HOST_FSBASE]",     // Then put the monitor thread's base back
    "    test rax, rax",                         // (if a VM has recorded it) before any Rust
    "    jz 2f",                                 // code touches a thread-local.
    "    wrfsbase rax",
    "2:",
    "    call {handler}",                        // rdi, rsi, rdx are still the kernel's args.
    "    wrfsbase rbx",                          // Give the interrupted code its base back (the
                                                 // landing pad resets it anyway on a redirect).
    "    pop rbx",
    "    ret",                                   // To the kernel's sa_restorer: sigreturn.
    ".size bt86_signal_trampoline, . - bt86_signal_trampoline",
    base = const MONITOR_BASE as u64,
    gpr = const vcpu::GPR,
    eflags = const vcpu::EFLAGS,
    entry_farptr = const vcpu::ENTRY_FARPTR,
    guest_ds = const vcpu::GUEST_DS,
    guest_es = const vcpu::GUEST_ES,
    guest_fs = const vcpu::GUEST_FS,
    guest_gs = const vcpu::GUEST_GS,
    guest_ss = const vcpu::GUEST_SS,
    host_ss = const vcpu::HOST_SS,
    host_fcw = const vcpu::HOST_FCW,
    host_mxcsr = const vcpu::HOST_MXCSR,
    host_rsp = const vcpu::HOST_RSP,
    host_fsbase = const vcpu::HOST_FSBASE,
    host_gsbase = const vcpu::HOST_GSBASE,
    guest_fx = const vcpu::GUEST_FX,
    native_flags = const flags::NATIVE,
    uc_rip = const UC_RIP,
    handler = sym crate::signals::bt86_signal_handler,
);

/// Records the calling thread's FS base for the signal trampoline.
pub fn record_host_fs_base() {
    let base: u64;
    // SAFETY: RDFSBASE only reads the FS base into a register; FSGSBASE
    // support is checked by `check_host` before any VM is built.
    unsafe { std::arch::asm!("rdfsbase {}", out(reg) base, options(nomem, nostack, preserves_flags)) };
    BT86_HOST_FSBASE.store(base, std::sync::atomic::Ordering::SeqCst);
}

/// The address of `bt86_signal_trampoline`, for `sigaction`.
pub fn trampoline_address() -> libc::sighandler_t {
    extern "C" {
        fn bt86_signal_trampoline();
    }
    bt86_signal_trampoline as *const () as libc::sighandler_t
}

extern "sysv64" {
    /// Enters translated code; returns after the next exit.
    ///
    /// # Safety
    /// `vcpu` must be the address of a fully set-up VCPU page: valid shadow
    /// selectors in the LDT, a far pointer to the entry trampoline, an
    /// entry target inside the TC, the landing pad copied into the stub
    /// page, and the fault handlers installed with an alternate signal
    /// stack on this thread.
    pub fn bt86_world_enter(vcpu: u64);
    static bt86_landing_start: u8;
    static bt86_landing_end: u8;
}

/// The bytes of the landing pad template.
pub fn landing_template() -> &'static [u8] {
    // SAFETY: both symbols are labels in this crate's global_asm, in the
    // same section, start before end; the bytes between them are code that
    // is never modified.
    unsafe {
        let start = std::ptr::addr_of!(bt86_landing_start);
        let end = std::ptr::addr_of!(bt86_landing_end);
        std::slice::from_raw_parts(start, end as usize - start as usize)
    }
}
