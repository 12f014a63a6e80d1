//! The ring benchmark guest: system calls and timer interrupts, written as
//! machine code by the harness.
//!
//! The benchmarks of issue 3 need a guest with a user and a kernel: a GDT
//! with ring-0 and ring-3 code and data, a TSS whose SS0:ESP0 gives the
//! kernel its stack, an IDT with a DPL-3 gate for `int 0x80`, the SYSENTER
//! MSRs, and the PIC and PIT programmed for one-shot timer interrupts. This
//! module builds all of it as bytes for one 20 KiB area of guest memory, so
//! that exactly the same instructions run in-process under bt86 (at any
//! address above the compute guest) and under QEMU (wrapped in a Multiboot
//! ELF by [`multiboot_elf`]). It owns only the bytes and their layout; it
//! never runs anything and holds no VMM logic.
//!
//! ```text
//! area + 0x0000  GDT, GDTR and IDTR images, TSS, IDT   (written by the CPU too)
//! area + 0x1000  code: handlers, ring-3 loops, entry stubs
//! area + 0x2000  data: timer samples, the PIT schedule, variables
//! area + 0x3000  ring-0 stack (ESP0 and SYSENTER_ESP: top at area + 0x4000)
//! area + 0x4000  ring-3 stack (top at area + 0x5000)
//! ```
//!
//! Code, data and stacks sit on separate pages: bt86 write-protects pages
//! that hold translated code, and a store to one of them would be taken
//! for self-modifying code.

use bt86_cpu::descriptor::{encode_gate, encode_segment};

/// Bytes of guest memory the area takes.
pub const AREA_SIZE: u32 = 0x5000;

const GDT: u32 = 0x0000;
const GDTR: u32 = 0x0040;
const IDTR: u32 = 0x0048;
const TSS: u32 = 0x0080;
const IDT: u32 = 0x0400;
const CODE: u32 = 0x1000;
const SAMPLES: u32 = 0x2000;
const SCHEDULE: u32 = 0x2400;
const T0: u32 = 0x2800;
const INDEX: u32 = 0x2804;
const ITERATIONS: u32 = 0x2808;
const SAMPLE_COUNT: u32 = 0x280C;
const KSTACK_TOP: u32 = 0x4000;
const USTACK_TOP: u32 = 0x5000;

/// The most timer samples one run can take (the samples array holds
/// 256 u32 and the schedule 256 u16).
pub const MAX_SAMPLES: usize = 256;

/// Selectors of the benchmark's GDT. SYSENTER and SYSEXIT derive every
/// selector from IA32_SYSENTER_CS, so the four code and data descriptors
/// must sit in this order (SDM Vol. 2B SYSENTER, SYSEXIT).
pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_CS: u16 = 0x18 | 3;
pub const USER_DS: u16 = 0x20 | 3;
pub const TSS_SELECTOR: u16 = 0x28;

/// The vector the PIC's IRQ 0 is remapped to, clear of the exceptions.
pub const TIMER_VECTOR: u8 = 0x20;
/// The system call the benchmark loops on.
pub const SYSCALL_VECTOR: u8 = 0x80;
/// The system call that ends a run.
pub const FINISH_VECTOR: u8 = 0x81;

/// The value written to isa-debug-exit when a run ends well, so QEMU exits
/// with status (0x10 << 1) | 1 = 33, and the one written when an exception
/// reached the guest's kernel (status 35).
pub const PASS_CODE: u8 = 0x10;
pub const FAULT_CODE: u8 = 0x11;

/// How a run ends: in-process under bt86 the harness wants the VM back,
/// so the guest halts with interrupts off; under QEMU the guest must end
/// the process, so it writes its samples to COM1 and its status to
/// isa-debug-exit first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Halt,
    DebugExit,
}

/// The three things the guest can do, each from its own entry stub at CPL 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Ring 3 loops on `int 0x80`; the handler is a bare `iret`.
    Int80,
    /// Ring 3 loops on `sysenter`; the handler is a bare `sysexit`.
    Sysenter,
    /// Ring 3 spins on `jmp $` while the PIT interrupts it; the handler
    /// reads the TSC and arms the next one-shot interval.
    Timer,
}

/// The built guest: its code page and the addresses the harness needs.
#[derive(Clone, Debug)]
pub struct RingGuest {
    /// The guest address of the area.
    pub base: u32,
    finish: Finish,
    code: Vec<u8>,
    entry_int80: u32,
    entry_sysenter: u32,
    entry_timer: u32,
    int80_handler: u32,
    sysenter_handler: u32,
    irq0_handler: u32,
    finish_handler: u32,
    fault_handler: u32,
    /// EIP after the `hlt` of a finished run.
    pub finished_eip: u32,
    /// EIP after the `hlt` of the exception handler.
    pub faulted_eip: u32,
}

/// A tiny assembler: bytes at a known guest address. Every instruction is
/// written out by hand beside its mnemonic where it is used, so a reader
/// can check the encodings against the SDM's opcode tables (Vol. 2).
struct Asm {
    origin: u32,
    bytes: Vec<u8>,
}

impl Asm {
    fn here(&self) -> u32 {
        self.origin + self.bytes.len() as u32
    }
    fn b(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
    fn d(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// `op` followed by a rel32 to `target`, measured from the end of the
    /// instruction.
    fn rel32(&mut self, op: &[u8], target: u32) {
        self.b(op);
        let next = self.here() + 4;
        self.d(target.wrapping_sub(next));
    }
    /// `op` followed by a rel8 to `target` (which must be near).
    fn rel8(&mut self, op: u8, target: u32) {
        let next = self.here() + 2;
        let rel = target.wrapping_sub(next) as i32;
        debug_assert!((-128..=127).contains(&rel), "rel8 out of range");
        self.b(&[op, rel as u8]);
    }
    /// `mov al, value` then `out port, al`.
    fn outb(&mut self, port: u8, value: u8) {
        self.b(&[0xB0, value, 0xE6, port]);
    }
}

impl RingGuest {
    /// Lays the guest out at guest address `base` (page aligned).
    pub fn build(base: u32, finish: Finish) -> RingGuest {
        let at = |off: u32| base + off;
        let mut a = Asm { origin: at(CODE), bytes: Vec::new() };

        // Every exception: stop, so that a broken run is reported rather
        // than timed. No exception is expected.
        let fault_handler = a.here();
        if finish == Finish::DebugExit {
            a.outb(0xF4, FAULT_CODE); // mov al, 0x11; out 0xf4, al
        }
        a.b(&[0xFA, 0xF4]); // cli; hlt
        let faulted_eip = a.here();
        a.rel8(0xEB, faulted_eip - 1); // jmp back to the hlt

        // int 0x81, and the timer handler after the last sample.
        let finish_handler = a.here();
        if finish == Finish::DebugExit {
            a.b(&[0xBE]); // mov esi, samples
            a.d(at(SAMPLES));
            a.b(&[0x8B, 0x0D]); // mov ecx, [index]
            a.d(at(INDEX));
            a.b(&[0xC1, 0xE1, 0x02]); // shl ecx, 2: bytes, not samples
            a.b(&[0x66, 0xBA, 0xF8, 0x03]); // mov dx, 0x3f8 (COM1 THR)
            a.b(&[0xF3, 0x6E]); // rep outsb: the samples, raw, to COM1
            a.outb(0xF4, PASS_CODE); // mov al, 0x10; out 0xf4, al
        }
        a.b(&[0xFA, 0xF4]); // cli; hlt
        let finished_eip = a.here();
        a.rel8(0xEB, finished_eip - 1); // jmp back to the hlt

        // Arms the next one-shot interval and returns to ring 3. EDI is
        // the index of the sample about to be taken; a ring-3 interrupt
        // frame is on the stack.
        let arm = a.here();
        a.b(&[0x0F, 0xB7, 0x0C, 0x7D]); // movzx ecx, word [schedule + edi*2]
        a.d(at(SCHEDULE));
        // PIT control word 0x30: channel 0, low byte then high byte,
        // mode 0 (interrupt on terminal count), binary. In mode 0 the
        // count starts once both bytes are written, and OUT rises (IRQ 0)
        // when it reaches zero (8254 data sheet, mode 0).
        a.outb(0x43, 0x30); // mov al, 0x30; out 0x43, al
        a.b(&[0x88, 0xC8, 0xE6, 0x40]); // mov al, cl; out 0x40, al
        a.b(&[0x88, 0xE8, 0xE6, 0x40]); // mov al, ch; out 0x40, al
        a.b(&[0x0F, 0x31]); // rdtsc: the interval starts now
        a.b(&[0xA3]); // mov [t0], eax
        a.d(at(T0));
        a.b(&[0xCF]); // iret (to the ring-3 spin)

        // IRQ 0, through an interrupt gate: IF is clear until the iret.
        let irq0_handler = a.here();
        a.b(&[0x0F, 0x31]); // rdtsc: first thing, so the sample is the latency
        a.b(&[0x2B, 0x05]); // sub eax, [t0]
        a.d(at(T0));
        a.b(&[0x8B, 0x3D]); // mov edi, [index]
        a.d(at(INDEX));
        a.b(&[0x89, 0x04, 0xBD]); // mov [samples + edi*4], eax
        a.d(at(SAMPLES));
        a.b(&[0x47]); // inc edi
        a.b(&[0x89, 0x3D]); // mov [index], edi
        a.d(at(INDEX));
        a.outb(0x20, 0x20); // non-specific EOI to the master PIC (OCW2)
        a.b(&[0x3B, 0x3D]); // cmp edi, [sample_count]
        a.d(at(SAMPLE_COUNT));
        a.rel32(&[0x0F, 0x82], arm); // jb arm
        a.rel32(&[0xE9], finish_handler); // jmp finish

        // The system call handlers do nothing but return: the benchmark
        // measures the transitions themselves.
        let int80_handler = a.here();
        a.b(&[0xCF]); // iret
        let sysenter_handler = a.here();
        a.b(&[0x0F, 0x35]); // sysexit: EIP = EDX, ESP = ECX, CPL 3

        // Ring 3: ESI counts the iterations.
        let user_int80 = a.here();
        a.b(&[0xCD, SYSCALL_VECTOR]); // int 0x80
        a.b(&[0x4E]); // dec esi
        a.rel8(0x75, user_int80); // jnz user_int80
        a.b(&[0xCD, FINISH_VECTOR]); // int 0x81

        let user_sysenter = a.here();
        a.b(&[0x89, 0xE1]); // mov ecx, esp: where sysexit puts ESP back
        let after = a.here() + 5 + 2;
        a.b(&[0xBA]); // mov edx, after: where sysexit resumes
        a.d(after);
        a.b(&[0x0F, 0x34]); // sysenter
        debug_assert_eq!(a.here(), after);
        a.b(&[0x4E]); // dec esi
        a.rel8(0x75, user_sysenter); // jnz user_sysenter
        a.b(&[0xCD, FINISH_VECTOR]); // int 0x81

        let user_spin = a.here();
        a.rel8(0xEB, user_spin); // jmp $

        // Entry stubs, at CPL 0 with interrupts off, as a Multiboot
        // loader (or the harness) leaves the CPU.
        let prologue = |a: &mut Asm| {
            a.b(&[0xBC]); // mov esp, kernel stack top
            a.d(at(KSTACK_TOP));
            a.b(&[0x0F, 0x01, 0x15]); // lgdt [gdtr]
            a.d(at(GDTR));
            a.b(&[0x0F, 0x01, 0x1D]); // lidt [idtr]
            a.d(at(IDTR));
            a.b(&[0x66, 0xB8]); // mov ax, TSS selector
            a.b(&TSS_SELECTOR.to_le_bytes());
            a.b(&[0x0F, 0x00, 0xD8]); // ltr ax
            // Ring-3 data in DS, ES, FS and GS already, so that the iret
            // to ring 3 has no data segment to null (SDM Vol. 2A IRET).
            a.b(&[0x66, 0xB8]); // mov ax, USER_DS
            a.b(&USER_DS.to_le_bytes());
            a.b(&[0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xE0, 0x8E, 0xE8]); // mov ds/es/fs/gs, ax
            for (msr, value) in [(0x174u32, u32::from(KERNEL_CS)), (0x175, at(KSTACK_TOP)), (0x176, sysenter_handler)] {
                a.b(&[0xB9]); // mov ecx, IA32_SYSENTER_{CS,ESP,EIP}
                a.d(msr);
                a.b(&[0xB8]); // mov eax, value
                a.d(value);
                a.b(&[0x31, 0xD2, 0x0F, 0x30]); // xor edx, edx; wrmsr
            }
            a.b(&[0x8B, 0x35]); // mov esi, [iterations]
            a.d(at(ITERATIONS));
        };
        // The frame an iret to ring 3 pops: EIP, CS, EFLAGS, ESP, SS,
        // pushed in the reverse order (SDM Vol. 3A §6.12.1, Figure 6-4).
        let frame = |a: &mut Asm, eflags: u32, eip: u32| {
            for value in [u32::from(USER_DS), at(USTACK_TOP), eflags, u32::from(USER_CS), eip] {
                a.b(&[0x68]); // push imm32
                a.d(value);
            }
        };

        let entry_int80 = a.here();
        prologue(&mut a);
        frame(&mut a, 0x0000_0002, user_int80); // IF clear
        a.b(&[0xCF]); // iret

        let entry_sysenter = a.here();
        prologue(&mut a);
        frame(&mut a, 0x0000_0002, user_sysenter);
        a.b(&[0xCF]); // iret

        let entry_timer = a.here();
        prologue(&mut a);
        // Remap the PIC pair to vectors 0x20 and 0x28 (ICW1-ICW4), then
        // unmask IRQ 0 alone (OCW1).
        for (port, value) in [
            (0x20, 0x11),
            (0x21, TIMER_VECTOR),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, TIMER_VECTOR + 8),
            (0xA1, 0x02),
            (0xA1, 0x01),
            (0x21, 0xFE),
            (0xA1, 0xFF),
        ] {
            a.outb(port, value);
        }
        a.b(&[0x31, 0xFF]); // xor edi, edi: sample 0
        a.b(&[0x89, 0x3D]); // mov [index], edi
        a.d(at(INDEX));
        frame(&mut a, 0x0000_0202, user_spin); // IF set
        a.rel32(&[0xE9], arm); // jmp arm

        debug_assert!(a.bytes.len() <= 0x1000, "the code must fit its page");
        RingGuest {
            base,
            finish,
            code: a.bytes,
            entry_int80,
            entry_sysenter,
            entry_timer,
            int80_handler,
            sysenter_handler,
            irq0_handler,
            finish_handler,
            fault_handler,
            finished_eip,
            faulted_eip,
        }
    }

    /// How this guest ends a run.
    pub fn finish(&self) -> Finish {
        self.finish
    }

    /// The guest address of an entry stub.
    pub fn entry(&self, entry: Entry) -> u32 {
        match entry {
            Entry::Int80 => self.entry_int80,
            Entry::Sysenter => self.entry_sysenter,
            Entry::Timer => self.entry_timer,
        }
    }

    /// The guest address of the ring-0 handler each entry's loop calls:
    /// the `iret`, the `sysexit`, or the IRQ 0 handler.
    pub fn handler(&self, entry: Entry) -> u32 {
        match entry {
            Entry::Int80 => self.int80_handler,
            Entry::Sysenter => self.sysenter_handler,
            Entry::Timer => self.irq0_handler,
        }
    }

    /// The guest address of the timer samples (u32 TSC deltas).
    pub fn samples_address(&self) -> u32 {
        self.base + SAMPLES
    }

    /// The whole area: tables, code, data with `iterations` for the
    /// system call loops and `schedule` (PIT counts, one per timer sample,
    /// at most [`MAX_SAMPLES`]) for the timer, zeroed stacks.
    pub fn image(&self, iterations: u32, schedule: &[u16]) -> Vec<u8> {
        let mut img = vec![0u8; AREA_SIZE as usize];
        let put = |img: &mut Vec<u8>, off: u32, bytes: &[u8]| {
            img[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
        };
        let at = |off: u32| self.base + off;
        // Flat 4 GiB segments (limit 0xFFFFF, G): present, S, 32-bit.
        let gdt: [u64; 6] = [
            0,
            encode_segment(0, 0xF_FFFF, 0xC09A), // 0x08: ring-0 code, execute/read
            encode_segment(0, 0xF_FFFF, 0xC092), // 0x10: ring-0 data, read/write
            encode_segment(0, 0xF_FFFF, 0xC0FA), // 0x18: ring-3 code
            encode_segment(0, 0xF_FFFF, 0xC0F2), // 0x20: ring-3 data
            encode_segment(at(TSS), 103, 0x0089), // 0x28: available 32-bit TSS
        ];
        for (i, d) in gdt.iter().enumerate() {
            put(&mut img, GDT + 8 * i as u32, &d.to_le_bytes());
        }
        put(&mut img, GDTR, &((8 * gdt.len() - 1) as u16).to_le_bytes());
        put(&mut img, GDTR + 2, &at(GDT).to_le_bytes());
        let idt_entries = u32::from(FINISH_VECTOR) + 1;
        put(&mut img, IDTR, &((8 * idt_entries - 1) as u16).to_le_bytes());
        put(&mut img, IDTR + 2, &at(IDT).to_le_bytes());
        // TSS: ESP0 at offset 4, SS0 at 8; the I/O map base (offset 0x66)
        // past the limit means no I/O bitmap (SDM Vol. 3A §8.2.1, §19.5.2).
        put(&mut img, TSS + 4, &at(KSTACK_TOP).to_le_bytes());
        put(&mut img, TSS + 8, &u32::from(KERNEL_DS).to_le_bytes());
        put(&mut img, TSS + 0x66, &104u16.to_le_bytes());
        // IDT: 0xE is a 32-bit interrupt gate, 0xF a trap gate (SDM Vol. 3A
        // §6.11). The system calls need DPL 3 or ring 3 gets #GP.
        for v in 0..32 {
            put(&mut img, IDT + 8 * v, &encode_gate(0xE, KERNEL_CS, self.fault_handler, 0, true).to_le_bytes());
        }
        let gates = [
            (TIMER_VECTOR, 0xE, self.irq0_handler, 0),
            (SYSCALL_VECTOR, 0xF, self.int80_handler, 3),
            (FINISH_VECTOR, 0xE, self.finish_handler, 3),
        ];
        for (v, kind, handler, dpl) in gates {
            put(&mut img, IDT + 8 * u32::from(v), &encode_gate(kind, KERNEL_CS, handler, dpl, true).to_le_bytes());
        }
        put(&mut img, CODE, &self.code);
        let schedule = &schedule[..schedule.len().min(MAX_SAMPLES)];
        for (i, count) in schedule.iter().enumerate() {
            put(&mut img, SCHEDULE + 2 * i as u32, &count.to_le_bytes());
        }
        put(&mut img, ITERATIONS, &iterations.max(1).to_le_bytes());
        put(&mut img, SAMPLE_COUNT, &(schedule.len() as u32).max(1).to_le_bytes());
        img
    }
}

/// Where [`multiboot_elf`] loads its area: 4 KiB above 1 MiB, after the
/// page that holds the ELF and Multiboot headers.
pub const ELF_LOAD_ADDRESS: u32 = 0x10_0000;
pub const ELF_AREA_BASE: u32 = ELF_LOAD_ADDRESS + 0x1000;

/// Wraps an area image built for [`ELF_AREA_BASE`] in a Multiboot v1 ELF
/// kernel that starts at `entry`: one loadable segment, the file itself,
/// at 1 MiB. The Multiboot header's flags are 0, so the loader takes the
/// addresses from the ELF program header (Multiboot spec §3.1.1).
pub fn multiboot_elf(area: &[u8], entry: u32) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    let size = (f.len() + area.len()) as u32;
    let mut w = |off: usize, bytes: &[u8]| f[off..off + bytes.len()].copy_from_slice(bytes);
    // ELF header (System V ABI, Intel386 supplement): 32-bit, little
    // endian, executable, EM_386, one program header right after it.
    w(0, &[0x7F, b'E', b'L', b'F', 1, 1, 1]);
    w(16, &2u16.to_le_bytes()); // e_type: ET_EXEC
    w(18, &3u16.to_le_bytes()); // e_machine: EM_386
    w(20, &1u32.to_le_bytes()); // e_version
    w(24, &entry.to_le_bytes()); // e_entry
    w(28, &52u32.to_le_bytes()); // e_phoff
    w(40, &52u16.to_le_bytes()); // e_ehsize
    w(42, &32u16.to_le_bytes()); // e_phentsize
    w(44, &1u16.to_le_bytes()); // e_phnum
    // Program header: PT_LOAD of the whole file at 1 MiB, RWX.
    let ph = 52;
    w(ph, &1u32.to_le_bytes()); // p_type
    w(ph + 4, &0u32.to_le_bytes()); // p_offset
    w(ph + 8, &ELF_LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    w(ph + 12, &ELF_LOAD_ADDRESS.to_le_bytes()); // p_paddr
    w(ph + 16, &size.to_le_bytes()); // p_filesz
    w(ph + 20, &size.to_le_bytes()); // p_memsz
    w(ph + 24, &7u32.to_le_bytes()); // p_flags
    w(ph + 28, &0x1000u32.to_le_bytes()); // p_align
    // Multiboot header: magic, flags, checksum (the three sum to 0), in
    // the first 8 KiB and 4-byte aligned.
    let magic = 0x1BAD_B002u32;
    w(84, &magic.to_le_bytes());
    w(88, &0u32.to_le_bytes());
    w(92, &0u32.wrapping_sub(magic).to_le_bytes());
    f.extend_from_slice(area);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the code page with iced-x86 and returns the text of every
    /// instruction, so that the hand encodings are checked by a decoder
    /// that knows nothing of this file.
    fn disassemble(guest: &RingGuest) -> Vec<(u32, String)> {
        use iced_x86::Formatter as _;
        let mut decoder = iced_x86::Decoder::with_ip(32, &guest.code, u64::from(guest.base + CODE), 0);
        let mut fmt = iced_x86::IntelFormatter::new();
        let mut out = Vec::new();
        for insn in &mut decoder {
            let mut text = String::new();
            fmt.format(&insn, &mut text);
            out.push((insn.ip32(), text));
        }
        out
    }

    #[test]
    fn the_hand_encodings_decode_to_the_intended_instructions() {
        let guest = RingGuest::build(0x20_0000, Finish::DebugExit);
        let code = disassemble(&guest);
        let at = |addr: u32| code.iter().find(|(ip, _)| *ip == addr).map(|(_, t)| t.clone());
        assert!(code.iter().all(|(_, t)| !t.contains("??")), "undecodable bytes: {code:?}");
        // (address, expected instruction)
        let cases = [
            (guest.handler(Entry::Int80), "iretd".to_string()),
            (guest.handler(Entry::Sysenter), "sysexit".to_string()),
            (guest.handler(Entry::Timer), "rdtsc".to_string()),
            (guest.finished_eip - 1, "hlt".to_string()),
            (guest.faulted_eip - 1, "hlt".to_string()),
            (guest.entry_int80, "mov esp,204000h".to_string()),
        ];
        for (addr, want) in cases {
            assert_eq!(at(addr).as_deref(), Some(want.as_str()), "at {addr:#x}");
        }
        let text: Vec<&str> = code.iter().map(|(_, t)| t.as_str()).collect();
        for want in [
            "int 80h",
            "int 81h",
            "sysenter",
            "lgdt [200040h]",
            "lidt [200048h]",
            "ltr ax",
            "movzx ecx,word ptr [edi*2+202400h]",
            "mov [edi*4+202000h],eax",
            "rep outsb dx,[esi]",
            "wrmsr",
        ] {
            assert!(text.contains(&want), "no `{want}` in {text:#?}");
        }
        // The Halt variant neither dumps its samples nor writes isa-debug-exit.
        let halt = RingGuest::build(0x20_0000, Finish::Halt);
        assert!(!disassemble(&halt).iter().any(|(_, t)| t.starts_with("rep outsb") || t == "out 0F4h,al"));
    }

    #[test]
    fn the_tables_describe_rings_0_and_3() {
        use bt86_cpu::descriptor::Descriptor;
        let guest = RingGuest::build(0x30_0000, Finish::Halt);
        let img = guest.image(7, &[100, 200]);
        let qword = |off: u32| u64::from_le_bytes(img[off as usize..off as usize + 8].try_into().unwrap());
        let dword = |off: u32| u32::from_le_bytes(img[off as usize..off as usize + 4].try_into().unwrap());
        // (selector, DPL)
        for (sel, dpl) in [(KERNEL_CS, 0), (KERNEL_DS, 0), (USER_CS, 3), (USER_DS, 3), (TSS_SELECTOR, 0)] {
            let d = Descriptor::parse(qword(GDT + u32::from(sel & !7)));
            assert!(d.is_present(), "selector {sel:#x}");
            assert_eq!(d.dpl(), dpl, "selector {sel:#x}");
        }
        let gate = |v: u8| qword(IDT + 8 * u32::from(v));
        // The gate's DPL decides whether ring 3 may use `int n`.
        assert_eq!((gate(SYSCALL_VECTOR) >> 45) & 3, 3);
        assert_eq!((gate(TIMER_VECTOR) >> 45) & 3, 0);
        let offset = |g: u64| ((g & 0xFFFF) | ((g >> 32) & 0xFFFF_0000)) as u32;
        assert_eq!(offset(gate(SYSCALL_VECTOR)), guest.int80_handler);
        assert_eq!(offset(gate(13)), guest.fault_handler);
        assert_eq!(dword(TSS + 4), 0x30_0000 + KSTACK_TOP);
        assert_eq!(dword(ITERATIONS), 7);
        assert_eq!(dword(SAMPLE_COUNT), 2);
        assert_eq!(&img[SCHEDULE as usize..SCHEDULE as usize + 4], &[100, 0, 200, 0]);
    }

    #[test]
    fn the_elf_wrapper_is_a_multiboot_kernel() {
        let guest = RingGuest::build(ELF_AREA_BASE, Finish::DebugExit);
        let elf_bytes = multiboot_elf(&guest.image(3, &[]), guest.entry(Entry::Int80));
        let elf = goblin::elf::Elf::parse(&elf_bytes).expect("a valid ELF");
        assert_eq!(elf.entry as u32, guest.entry(Entry::Int80));
        assert_eq!(elf.program_headers.len(), 1);
        assert_eq!(elf.program_headers[0].p_paddr as u32, ELF_LOAD_ADDRESS);
        // The loader finds the header by its magic and checks the sum.
        let mut ram = bt86_machine::Ram::anonymous(16 << 20).unwrap();
        let boot = bt86_machine::load_multiboot(&mut ram, &elf_bytes, "ring", &[]).expect("bt86's loader accepts it");
        assert_eq!(boot.cpu.eip, guest.entry(Entry::Int80));
        let mut code = [0u8; 4];
        ram.read(bt86_machine::GuestPhysAddr(ELF_AREA_BASE + CODE), &mut code).unwrap();
        assert_eq!(code, guest.code[..4]);
    }
}
