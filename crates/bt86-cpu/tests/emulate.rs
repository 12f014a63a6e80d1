//! Table-driven tests of `bt86_cpu::emulate`: each case decodes real
//! instruction bytes with iced-x86 in 32-bit mode, runs them against a fresh
//! CPU and a small RAM-only bus, and compares the whole CPU state and the
//! whole RAM with what the SDM says the instruction does. Anything a case
//! does not list must stay exactly as it was, and a faulting case must
//! leave everything (except EIP's advance, which it must not make) as it was.

use bt86_cpu::emulate::{emulate, emulate_iteration, EmulateError};
use bt86_cpu::state::{flags, gpr};
use bt86_cpu::{Cpu, Exception, SegReg, Segment, Selector};
use bt86_machine::{Bus, GuestPhysAddr, IoSize};
use iced_x86::{Decoder, DecoderOptions};

/// A guest-physical bus that is just RAM: `RAM_SIZE` bytes at address 0.
/// Reads beyond it return all-ones and writes are dropped, as on an
/// unassigned part of a PC's bus.
struct TestBus {
    ram: Vec<u8>,
}

const RAM_SIZE: usize = 0x10000;

impl Bus for TestBus {
    fn read_phys(&mut self, addr: GuestPhysAddr, buf: &mut [u8]) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte = *self.ram.get(addr.0 as usize + i).unwrap_or(&0xFF);
        }
    }
    fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            if let Some(slot) = self.ram.get_mut(addr.0 as usize + i) {
                *slot = *byte;
            }
        }
    }
    fn io_in(&mut self, _port: u16, size: IoSize) -> u32 {
        size.all_ones()
    }
    fn io_out(&mut self, _port: u16, _size: IoSize, _value: u32) {}
}

/// Where the emulated instruction "is". The bytes are never fetched from
/// the bus: the monitor hands `emulate` an instruction it already decoded.
const EIP: u32 = 0x8000;

/// Access rights (in `lar` layout): present, DPL 0, 32-bit, 4 KiB
/// granularity; read/write data, read-only data, execute/read code.
const DATA_RW: u16 = 0xC093;
const DATA_RO: u16 = 0xC091;
const CODE_RX: u16 = 0xC09B;

const fn segment(selector: u16, base: u32, limit: u32, access: u16) -> Segment {
    Segment {
        selector: Selector(selector),
        base,
        limit,
        access,
    }
}

/// What a case expects `emulate` to return.
#[derive(Debug)]
enum Want {
    /// Success: EIP moves to the next instruction.
    Done,
    /// A guest exception: EIP stays.
    Fault(Exception),
    /// Not emulated: nothing changes.
    Unsupported,
}

struct Case {
    name: &'static str,
    code: &'static [u8],
    /// Registers before, as (index in `Cpu::gpr`, value).
    regs: &'static [(usize, u32)],
    /// EFLAGS before; bit 1 is always set.
    eflags: u32,
    /// Segment registers that differ from the flat defaults.
    segs: Vec<(SegReg, Segment)>,
    /// RAM contents before, as (physical address, bytes).
    mem: &'static [(u32, &'static [u8])],
    want: Want,
    /// Registers after, where they differ from before.
    want_regs: &'static [(usize, u32)],
    /// The six status flags after, or `None` when they must not change.
    want_status: Option<u32>,
    /// RAM after, where it differs from before.
    want_mem: &'static [(u32, &'static [u8])],
}

/// A case with every field at "nothing set, nothing changes".
const BASE: Case = Case {
    name: "",
    code: &[],
    regs: &[],
    eflags: 0,
    segs: Vec::new(),
    mem: &[],
    want: Want::Done,
    want_regs: &[],
    want_status: None,
    want_mem: &[],
};

const EAX: usize = gpr::EAX;
const ECX: usize = gpr::ECX;
const EDX: usize = gpr::EDX;
const EBX: usize = gpr::EBX;
const ESP: usize = gpr::ESP;
const EBP: usize = gpr::EBP;
const ESI: usize = gpr::ESI;
const EDI: usize = gpr::EDI;
const CF: u32 = flags::CF;
const PF: u32 = flags::PF;
const AF: u32 = flags::AF;
const ZF: u32 = flags::ZF;
const SF: u32 = flags::SF;
const DF: u32 = flags::DF;
const OF: u32 = flags::OF;
const GP0: Exception = Exception::GeneralProtection(0);

fn cases() -> Vec<Case> {
    vec![
        // ----- Moves, and the segment overrides that bring them here -----
        Case {
            name: "mov eax, gs:[0x10] (moffs) reads through the guest's GS base",
            code: &[0x65, 0xA1, 0x10, 0x00, 0x00, 0x00],
            segs: vec![(SegReg::Gs, segment(0x18, 0x1000, 0xFFFF, DATA_RW))],
            mem: &[(0x1010, &[0x44, 0x33, 0x22, 0x11]), (0x10, &[0xEE; 4])],
            want_regs: &[(EAX, 0x1122_3344)],
            ..BASE
        },
        Case {
            name: "mov ecx, gs:[esi + edi*4 + 8]",
            code: &[0x65, 0x8B, 0x4C, 0xBE, 0x08],
            regs: &[(ESI, 0x100), (EDI, 0x3)],
            segs: vec![(SegReg::Gs, segment(0x18, 0x2000, 0xFFFF, DATA_RW))],
            mem: &[(0x2114, &[0x78, 0x56, 0x34, 0x12])],
            want_regs: &[(ECX, 0x1234_5678)],
            ..BASE
        },
        Case {
            name: "mov eax, cs:[ebx] reads a readable code segment",
            code: &[0x2E, 0x8B, 0x03],
            regs: &[(EBX, 0x20)],
            segs: vec![(SegReg::Cs, segment(0x10, 0x3000, 0xFFFF, CODE_RX))],
            mem: &[(0x3020, &[0xEF, 0xBE, 0xAD, 0xDE])],
            want_regs: &[(EAX, 0xDEAD_BEEF)],
            ..BASE
        },
        Case {
            name: "mov cs:[ebx], eax: code segments are not writable (#GP(0))",
            code: &[0x2E, 0x89, 0x03],
            regs: &[(EAX, 1), (EBX, 0x20)],
            want: Want::Fault(GP0),
            ..BASE
        },
        Case {
            name: "mov [ebx], eax past the DS limit: #GP(0), nothing changes",
            code: &[0x89, 0x03],
            regs: &[(EAX, 0x1234_5678), (EBX, 0xFFE)],
            segs: vec![(SegReg::Ds, segment(0x18, 0, 0xFFF, DATA_RW))],
            want: Want::Fault(GP0),
            ..BASE
        },
        Case {
            name: "mov [0x10], al: a moffs store into guest page 0",
            code: &[0xA2, 0x10, 0x00, 0x00, 0x00],
            regs: &[(EAX, 0x1234_56AB)],
            want_mem: &[(0x10, &[0xAB])],
            ..BASE
        },
        Case {
            name: "mov byte [eax], 0x7f",
            code: &[0xC6, 0x00, 0x7F],
            regs: &[(EAX, 0x40)],
            mem: &[(0x40, &[0, 0x55])],
            want_mem: &[(0x40, &[0x7F, 0x55])],
            ..BASE
        },
        Case {
            name: "mov ax, [bx + si + 2] (16-bit addressing ignores the upper halves)",
            code: &[0x66, 0x67, 0x8B, 0x40, 0x02],
            regs: &[(EAX, 0xAAAA_AAAA), (EBX, 0xABCD_0100), (ESI, 0x7777_0020)],
            mem: &[(0x122, &[0x34, 0x12])],
            want_regs: &[(EAX, 0xAAAA_1234)],
            ..BASE
        },
        Case {
            name: "mov al, [bx + si + 2] wraps at 64 KiB",
            code: &[0x67, 0x8A, 0x40, 0x02],
            regs: &[(EBX, 0xFFFE), (ESI, 0x0001)],
            mem: &[(0x0001, &[0x5A])],
            want_regs: &[(EAX, 0x5A)],
            ..BASE
        },
        Case {
            name: "mov al, [bp + di] defaults to SS",
            code: &[0x67, 0x8A, 0x03],
            regs: &[(EBP, 0x10), (EDI, 0x1)],
            segs: vec![(SegReg::Ss, segment(0x18, 0x4000, 0xFFFF, DATA_RW))],
            mem: &[(0x4011, &[0x99]), (0x11, &[0x11])],
            want_regs: &[(EAX, 0x99)],
            ..BASE
        },
        Case {
            name: "movzx eax, byte gs:[ebx]",
            code: &[0x65, 0x0F, 0xB6, 0x03],
            regs: &[(EAX, 0xFFFF_FFFF), (EBX, 4)],
            segs: vec![(SegReg::Gs, segment(0x18, 0x1000, 0xFFFF, DATA_RW))],
            mem: &[(0x1004, &[0x80])],
            want_regs: &[(EAX, 0x80)],
            ..BASE
        },
        Case {
            name: "movsx ecx, word [ebx]",
            code: &[0x0F, 0xBF, 0x0B],
            regs: &[(EBX, 0x100)],
            mem: &[(0x100, &[0xFE, 0xFF])],
            want_regs: &[(ECX, 0xFFFF_FFFE)],
            ..BASE
        },
        // ----- Arithmetic and logic ------------------------------------
        Case {
            name: "add [ebx + 4], eax overflows into the sign bit",
            code: &[0x01, 0x43, 0x04],
            regs: &[(EAX, 1), (EBX, 0x100)],
            mem: &[(0x104, &[0xFF, 0xFF, 0xFF, 0x7F])],
            want_mem: &[(0x104, &[0, 0, 0, 0x80])],
            want_status: Some(OF | SF | AF | PF),
            ..BASE
        },
        Case {
            name: "sub dword [ebx], 1 (imm8 form) borrows",
            code: &[0x83, 0x2B, 0x01],
            regs: &[(EBX, 0x100)],
            want_mem: &[(0x100, &[0xFF; 4])],
            want_status: Some(CF | SF | AF | PF),
            ..BASE
        },
        Case {
            name: "add dword [ebx], -1 (imm8 sign-extended) carries to zero",
            code: &[0x83, 0x03, 0xFF],
            regs: &[(EBX, 0x100)],
            mem: &[(0x100, &[1, 0, 0, 0])],
            want_mem: &[(0x100, &[0, 0, 0, 0])],
            want_status: Some(CF | ZF | PF | AF),
            ..BASE
        },
        Case {
            name: "adc eax, [ebx] adds the carry",
            code: &[0x13, 0x03],
            regs: &[(EAX, 0x10), (EBX, 0x100)],
            eflags: CF,
            mem: &[(0x100, &[0x0F, 0, 0, 0])],
            want_regs: &[(EAX, 0x20)],
            want_status: Some(AF),
            ..BASE
        },
        Case {
            name: "cmp byte [ebx], 0x80 changes only the flags",
            code: &[0x80, 0x3B, 0x80],
            regs: &[(EBX, 0x100)],
            mem: &[(0x100, &[0x7F])],
            want_status: Some(CF | OF | SF | PF),
            ..BASE
        },
        Case {
            name: "test [ebx], ecx",
            code: &[0x85, 0x0B],
            regs: &[(EBX, 0x100), (ECX, 0x8000_0001)],
            eflags: CF | OF | AF,
            mem: &[(0x100, &[0, 0, 0xF0, 0xF0])],
            want_status: Some(SF | PF),
            ..BASE
        },
        Case {
            name: "add [ebx], eax through a read-only DS faults before reading",
            code: &[0x01, 0x03],
            regs: &[(EAX, 1), (EBX, 0x100)],
            segs: vec![(SegReg::Ds, segment(0x18, 0, 0xFFFF, DATA_RO))],
            want: Want::Fault(GP0),
            ..BASE
        },
        Case {
            name: "inc word [ebx] keeps CF",
            code: &[0x66, 0xFF, 0x03],
            regs: &[(EBX, 0x100)],
            eflags: CF,
            mem: &[(0x100, &[0xFF, 0xFF, 0xAA])],
            want_mem: &[(0x100, &[0, 0, 0xAA])],
            want_status: Some(CF | ZF | PF | AF),
            ..BASE
        },
        Case {
            name: "neg dword [ebx]",
            code: &[0xF7, 0x1B],
            regs: &[(EBX, 0x100)],
            mem: &[(0x100, &[5, 0, 0, 0])],
            want_mem: &[(0x100, &[0xFB, 0xFF, 0xFF, 0xFF])],
            want_status: Some(CF | SF | AF),
            ..BASE
        },
        Case {
            name: "not byte [ebx] leaves every flag alone",
            code: &[0xF6, 0x13],
            regs: &[(EBX, 0x100)],
            eflags: CF | PF | AF | ZF | SF | OF,
            mem: &[(0x100, &[0x0F])],
            want_mem: &[(0x100, &[0xF0])],
            ..BASE
        },
        // ----- Shifts and rotates ---------------------------------------
        Case {
            name: "shl dword [ebx], 4",
            code: &[0xC1, 0x23, 0x04],
            regs: &[(EBX, 0x100)],
            mem: &[(0x100, &[0x78, 0x56, 0x34, 0x12])],
            want_mem: &[(0x100, &[0x80, 0x67, 0x45, 0x23])],
            want_status: Some(CF | AF | OF),
            ..BASE
        },
        Case {
            name: "sar byte [ebx], cl masks the count to 5 bits",
            code: &[0xD2, 0x3B],
            regs: &[(EBX, 0x100), (ECX, 0x23)],
            mem: &[(0x100, &[0x81])],
            want_mem: &[(0x100, &[0xF0])],
            want_status: Some(SF | PF | AF),
            ..BASE
        },
        Case {
            name: "rcr word [ebx], 1 rotates CF in",
            code: &[0x66, 0xD1, 0x1B],
            regs: &[(EBX, 0x100)],
            eflags: CF | ZF,
            mem: &[(0x100, &[0x01, 0x00])],
            want_mem: &[(0x100, &[0x00, 0x80])],
            want_status: Some(CF | ZF | OF),
            ..BASE
        },
        Case {
            name: "shl dword [ebx], cl with CL = 32 changes nothing",
            code: &[0xD3, 0x23],
            regs: &[(EBX, 0x100), (ECX, 32)],
            eflags: CF | SF,
            mem: &[(0x100, &[1, 2, 3, 4])],
            ..BASE
        },
        // ----- Bit tests -------------------------------------------------
        Case {
            name: "bts [ebx], eax with bit 35 sets bit 3 of the next dword",
            code: &[0x0F, 0xAB, 0x03],
            regs: &[(EAX, 35), (EBX, 0x100)],
            eflags: CF | ZF,
            want_mem: &[(0x104, &[0x08])],
            want_status: Some(ZF),
            ..BASE
        },
        Case {
            name: "bt [ebx], eax with bit -1 tests bit 31 of the dword below",
            code: &[0x0F, 0xA3, 0x03],
            regs: &[(EAX, 0xFFFF_FFFF), (EBX, 0x100)],
            mem: &[(0xFC, &[0, 0, 0, 0x80])],
            want_status: Some(CF),
            ..BASE
        },
        Case {
            name: "btr dword [ebx], 33 takes the immediate modulo 32",
            code: &[0x0F, 0xBA, 0x33, 0x21],
            regs: &[(EBX, 0x100)],
            mem: &[(0x100, &[0x03])],
            want_mem: &[(0x100, &[0x01])],
            want_status: Some(CF),
            ..BASE
        },
        Case {
            name: "btc word [ebx], ax with bit 17 flips bit 1 of the next word",
            code: &[0x66, 0x0F, 0xBB, 0x03],
            regs: &[(EAX, 17), (EBX, 0x100)],
            mem: &[(0x102, &[0x02])],
            want_mem: &[(0x102, &[0x00])],
            want_status: Some(CF),
            ..BASE
        },
        // ----- Exchanges --------------------------------------------------
        Case {
            name: "xchg [ebx], eax",
            code: &[0x87, 0x03],
            regs: &[(EAX, 0x1111_1111), (EBX, 0x100)],
            mem: &[(0x100, &[0x22; 4])],
            want_regs: &[(EAX, 0x2222_2222)],
            want_mem: &[(0x100, &[0x11; 4])],
            ..BASE
        },
        Case {
            name: "xadd [ebx], ecx",
            code: &[0x0F, 0xC1, 0x0B],
            regs: &[(EBX, 0x100), (ECX, 2)],
            mem: &[(0x100, &[0xFF; 4])],
            want_regs: &[(ECX, 0xFFFF_FFFF)],
            want_mem: &[(0x100, &[1, 0, 0, 0])],
            want_status: Some(CF | AF),
            ..BASE
        },
        Case {
            name: "cmpxchg [ebx], ecx when equal stores ECX",
            code: &[0x0F, 0xB1, 0x0B],
            regs: &[(EAX, 7), (EBX, 0x100), (ECX, 9)],
            mem: &[(0x100, &[7, 0, 0, 0])],
            want_mem: &[(0x100, &[9, 0, 0, 0])],
            want_status: Some(ZF | PF),
            ..BASE
        },
        Case {
            name: "cmpxchg [ebx], ecx when different loads EAX",
            code: &[0x0F, 0xB1, 0x0B],
            regs: &[(EAX, 5), (EBX, 0x100), (ECX, 9)],
            mem: &[(0x100, &[7, 0, 0, 0])],
            want_regs: &[(EAX, 7)],
            want_status: Some(CF | SF | AF),
            ..BASE
        },
        Case {
            name: "cmpxchg8b [esi] when equal stores ECX:EBX",
            code: &[0x0F, 0xC7, 0x0E],
            regs: &[
                (EAX, 0x2222_2222),
                (EDX, 0x1111_1111),
                (EBX, 0x4444_4444),
                (ECX, 0x3333_3333),
                (ESI, 0x100),
            ],
            mem: &[(0x100, &[0x22, 0x22, 0x22, 0x22, 0x11, 0x11, 0x11, 0x11])],
            want_mem: &[(0x100, &[0x44, 0x44, 0x44, 0x44, 0x33, 0x33, 0x33, 0x33])],
            want_status: Some(ZF),
            ..BASE
        },
        Case {
            name: "cmpxchg8b [esi] when different loads EDX:EAX and clears only ZF",
            code: &[0x0F, 0xC7, 0x0E],
            regs: &[(EAX, 0), (EDX, 0), (ESI, 0x100)],
            eflags: ZF | CF,
            mem: &[(0x100, &[1, 2, 3, 4, 5, 6, 7, 8])],
            want_regs: &[(EAX, 0x0403_0201), (EDX, 0x0807_0605)],
            want_status: Some(CF),
            ..BASE
        },
        // ----- Conditions and addresses ----------------------------------
        Case {
            name: "setne byte [ebx]",
            code: &[0x0F, 0x95, 0x03],
            regs: &[(EBX, 0x100)],
            mem: &[(0x100, &[0xAA])],
            want_mem: &[(0x100, &[0x01])],
            ..BASE
        },
        Case {
            name: "cmovz eax, [ebx] with ZF set moves",
            code: &[0x0F, 0x44, 0x03],
            regs: &[(EBX, 0x100)],
            eflags: ZF,
            mem: &[(0x100, &[0x78, 0x56, 0x34, 0x12])],
            want_regs: &[(EAX, 0x1234_5678)],
            ..BASE
        },
        Case {
            name: "cmovz eax, [ebx] with ZF clear still reads, and faults",
            code: &[0x0F, 0x44, 0x03],
            regs: &[(EBX, 0x2000)],
            segs: vec![(SegReg::Ds, segment(0x18, 0, 0xFFF, DATA_RW))],
            want: Want::Fault(GP0),
            ..BASE
        },
        Case {
            name: "lea eax, gs:[ebx + ecx*8 + 0x10] ignores the segment",
            code: &[0x65, 0x8D, 0x44, 0xCB, 0x10],
            regs: &[(EBX, 0xFFFF_FFF0), (ECX, 2)],
            segs: vec![(SegReg::Gs, segment(0x18, 0x1000, 0, DATA_RW))],
            want_regs: &[(EAX, 0x10)],
            ..BASE
        },
        Case {
            name: "lea ax, [bx + si] keeps EAX's upper half",
            code: &[0x66, 0x67, 0x8D, 0x00],
            regs: &[(EAX, 0xCCCC_CCCC), (EBX, 0x1_8000), (ESI, 0x8001)],
            want_regs: &[(EAX, 0xCCCC_0001)],
            ..BASE
        },
        // ----- Multiply and divide -----------------------------------------
        Case {
            name: "mul dword [ebx] into EDX:EAX",
            code: &[0xF7, 0x23],
            regs: &[(EAX, 0x8000_0000), (EBX, 0x100)],
            mem: &[(0x100, &[4, 0, 0, 0])],
            want_regs: &[(EAX, 0), (EDX, 2)],
            want_status: Some(CF | OF),
            ..BASE
        },
        Case {
            name: "imul eax, [ebx], -3",
            code: &[0x6B, 0x03, 0xFD],
            regs: &[(EBX, 0x100)],
            eflags: ZF | CF,
            mem: &[(0x100, &[5, 0, 0, 0])],
            want_regs: &[(EAX, 0xFFFF_FFF1)],
            want_status: Some(ZF),
            ..BASE
        },
        Case {
            name: "imul word [ebx] into DX:AX",
            code: &[0x66, 0xF7, 0x2B],
            regs: &[(EAX, 0xAAAA_FFFF), (EDX, 0xBBBB_BBBB), (EBX, 0x100)],
            mem: &[(0x100, &[0x00, 0x01])],
            want_regs: &[(EAX, 0xAAAA_FF00), (EDX, 0xBBBB_FFFF)],
            want_status: Some(0),
            ..BASE
        },
        Case {
            name: "div dword [ebx] by zero: #DE, nothing changes",
            code: &[0xF7, 0x33],
            regs: &[(EAX, 10), (EBX, 0x100)],
            want: Want::Fault(Exception::DivideError),
            ..BASE
        },
        Case {
            name: "div byte [ebx] with a quotient over 255: #DE",
            code: &[0xF6, 0x33],
            regs: &[(EAX, 0x0200), (EBX, 0x100)],
            mem: &[(0x100, &[2])],
            want: Want::Fault(Exception::DivideError),
            ..BASE
        },
        Case {
            name: "idiv byte [ebx]: -100 / 7",
            code: &[0xF6, 0x3B],
            regs: &[(EAX, 0xFF9C), (EBX, 0x100)],
            eflags: ZF | CF,
            mem: &[(0x100, &[7])],
            want_regs: &[(EAX, 0xFEF2)],
            want_status: Some(CF | AF),
            ..BASE
        },
        // ----- The stack ----------------------------------------------------
        Case {
            name: "push dword [ebx]",
            code: &[0xFF, 0x33],
            regs: &[(EBX, 0x100), (ESP, 0x9000)],
            mem: &[(0x100, &[0xEF, 0xBE, 0xAD, 0xDE])],
            want_regs: &[(ESP, 0x8FFC)],
            want_mem: &[(0x8FFC, &[0xEF, 0xBE, 0xAD, 0xDE])],
            ..BASE
        },
        Case {
            name: "push -2 (imm8 sign-extended)",
            code: &[0x6A, 0xFE],
            regs: &[(ESP, 0x9000)],
            want_regs: &[(ESP, 0x8FFC)],
            want_mem: &[(0x8FFC, &[0xFE, 0xFF, 0xFF, 0xFF])],
            ..BASE
        },
        Case {
            name: "push word 0x1234 moves ESP by 2",
            code: &[0x66, 0x68, 0x34, 0x12],
            regs: &[(ESP, 0x9000)],
            want_regs: &[(ESP, 0x8FFE)],
            want_mem: &[(0x8FFE, &[0x34, 0x12])],
            ..BASE
        },
        Case {
            name: "pop dword [esp + 4] addresses with the incremented ESP",
            code: &[0x8F, 0x44, 0x24, 0x04],
            regs: &[(ESP, 0x9000)],
            mem: &[(0x9000, &[0x44, 0x33, 0x22, 0x11])],
            want_regs: &[(ESP, 0x9004)],
            want_mem: &[(0x9008, &[0x44, 0x33, 0x22, 0x11])],
            ..BASE
        },
        Case {
            name: "pop dword [ebx] past the DS limit puts ESP back",
            code: &[0x8F, 0x03],
            regs: &[(ESP, 0x9000), (EBX, 0x2000)],
            segs: vec![(SegReg::Ds, segment(0x18, 0, 0xFFF, DATA_RW))],
            want: Want::Fault(GP0),
            ..BASE
        },
        Case {
            name: "push dword [ebx] below the SS limit: #SS(0)",
            code: &[0xFF, 0x33],
            regs: &[(EBX, 0x100), (ESP, 0)],
            segs: vec![(SegReg::Ss, segment(0x18, 0, 0xFFFF, DATA_RW))],
            want: Want::Fault(Exception::StackFault(0)),
            ..BASE
        },
        // ----- Strings -------------------------------------------------------
        Case {
            name: "rep movsb, DF = 0",
            code: &[0xF3, 0xA4],
            regs: &[(ESI, 0x100), (EDI, 0x200), (ECX, 5)],
            mem: &[(0x100, b"hello")],
            want_regs: &[(ESI, 0x105), (EDI, 0x205), (ECX, 0)],
            want_mem: &[(0x200, b"hello")],
            ..BASE
        },
        Case {
            name: "rep movsb, DF = 1 copies downwards",
            code: &[0xF3, 0xA4],
            regs: &[(ESI, 0x104), (EDI, 0x204), (ECX, 5)],
            eflags: DF,
            mem: &[(0x100, b"hello")],
            want_regs: &[(ESI, 0xFF), (EDI, 0x1FF), (ECX, 0)],
            want_mem: &[(0x200, b"hello")],
            ..BASE
        },
        Case {
            name: "rep movsb with a GS source",
            code: &[0xF3, 0x65, 0xA4],
            regs: &[(ESI, 0x10), (EDI, 0x200), (ECX, 3)],
            segs: vec![(SegReg::Gs, segment(0x18, 0x1000, 0xFFFF, DATA_RW))],
            mem: &[(0x1010, b"abc"), (0x10, b"xyz")],
            want_regs: &[(ESI, 0x13), (EDI, 0x203), (ECX, 0)],
            want_mem: &[(0x200, b"abc")],
            ..BASE
        },
        Case {
            name: "rep stosd, DF = 0",
            code: &[0xF3, 0xAB],
            regs: &[(EAX, 0xA1B2_C3D4), (EDI, 0x300), (ECX, 3)],
            want_regs: &[(EDI, 0x30C), (ECX, 0)],
            want_mem: &[(
                0x300,
                &[
                    0xD4, 0xC3, 0xB2, 0xA1, 0xD4, 0xC3, 0xB2, 0xA1, 0xD4, 0xC3, 0xB2, 0xA1,
                ],
            )],
            ..BASE
        },
        Case {
            name: "rep stosd, DF = 1",
            code: &[0xF3, 0xAB],
            regs: &[(EAX, 0xA1B2_C3D4), (EDI, 0x308), (ECX, 3)],
            eflags: DF,
            want_regs: &[(EDI, 0x2FC), (ECX, 0)],
            want_mem: &[(
                0x300,
                &[
                    0xD4, 0xC3, 0xB2, 0xA1, 0xD4, 0xC3, 0xB2, 0xA1, 0xD4, 0xC3, 0xB2, 0xA1,
                ],
            )],
            ..BASE
        },
        Case {
            name: "rep stosd with ECX = 0 does nothing but move EIP",
            code: &[0xF3, 0xAB],
            regs: &[(EAX, 0xFFFF_FFFF), (EDI, 0x300)],
            ..BASE
        },
        Case {
            name: "rep movsd faulting on its third element keeps the first two",
            code: &[0xF3, 0xA5],
            regs: &[(ESI, 0x100), (EDI, 0x200), (ECX, 4)],
            segs: vec![(SegReg::Es, segment(0x18, 0, 0x207, DATA_RW))],
            mem: &[(
                0x100,
                &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            )],
            want: Want::Fault(GP0),
            want_regs: &[(ESI, 0x108), (EDI, 0x208), (ECX, 2)],
            want_mem: &[(0x200, &[1, 2, 3, 4, 5, 6, 7, 8])],
            ..BASE
        },
        Case {
            name: "repe cmpsb stops at the first difference",
            code: &[0xF3, 0xA6],
            regs: &[(ESI, 0x100), (EDI, 0x200), (ECX, 10)],
            mem: &[(0x100, b"abcX"), (0x200, b"abcY")],
            want_regs: &[(ESI, 0x104), (EDI, 0x204), (ECX, 6)],
            want_status: Some(CF | SF | AF | PF),
            ..BASE
        },
        Case {
            name: "repne scasb finds the terminating zero",
            code: &[0xF2, 0xAE],
            regs: &[(EDI, 0x200), (ECX, 10)],
            mem: &[(0x200, b"ab\0")],
            want_regs: &[(EDI, 0x203), (ECX, 7)],
            want_status: Some(ZF | PF),
            ..BASE
        },
        Case {
            name: "lodsw keeps EAX's upper half",
            code: &[0x66, 0xAD],
            regs: &[(EAX, 0x1234_0000), (ESI, 0x100)],
            mem: &[(0x100, &[0xCD, 0xAB])],
            want_regs: &[(EAX, 0x1234_ABCD), (ESI, 0x102)],
            ..BASE
        },
        Case {
            name: "movsb with 16-bit addressing wraps SI and keeps the upper halves",
            code: &[0x67, 0xA4],
            regs: &[(ESI, 0xABCD_FFFF), (EDI, 0x1234_0010)],
            mem: &[(0xFFFF, &[0x77])],
            want_regs: &[(ESI, 0xABCD_0000), (EDI, 0x1234_0011)],
            want_mem: &[(0x10, &[0x77])],
            ..BASE
        },
        // ----- Not emulated ------------------------------------------------------
        Case {
            name: "mov eax, cr0 is a callout",
            code: &[0x0F, 0x20, 0xC0],
            want: Want::Unsupported,
            ..BASE
        },
        Case {
            name: "mov gs, ax is a callout",
            code: &[0x8E, 0xE8],
            want: Want::Unsupported,
            ..BASE
        },
        Case {
            name: "in al, dx is a callout",
            code: &[0xEC],
            want: Want::Unsupported,
            ..BASE
        },
        Case {
            name: "mov [ebx], gs is a callout",
            code: &[0x8C, 0x2B],
            regs: &[(EBX, 0x100)],
            want: Want::Unsupported,
            ..BASE
        },
    ]
}

/// Builds the state a case starts from.
fn initial_state(case: &Case) -> (Cpu, TestBus) {
    let mut cpu = Cpu::new();
    cpu.eip = EIP;
    cpu.eflags = flags::RESERVED1 | case.eflags;
    for &(index, value) in case.regs {
        cpu.gpr[index] = value;
    }
    for &(reg, seg) in &case.segs {
        cpu.seg[reg as usize] = seg;
    }
    let mut bus = TestBus {
        ram: vec![0; RAM_SIZE],
    };
    for &(addr, bytes) in case.mem {
        bus.ram[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
    }
    (cpu, bus)
}

#[test]
fn emulated_instructions_match_the_sdm() {
    let mut failures = Vec::new();
    for case in cases() {
        let (mut cpu, mut bus) = initial_state(&case);
        let mut decoder = Decoder::with_ip(32, case.code, u64::from(EIP), DecoderOptions::NONE);
        let insn = decoder.decode();
        assert!(
            !insn.is_invalid() && insn.len() == case.code.len(),
            "{}: the bytes {:02x?} do not decode to exactly one instruction",
            case.name,
            case.code
        );

        // The expected state: the initial one plus what the case lists.
        let (mut want_cpu, mut want_bus) = initial_state(&case);
        for &(index, value) in case.want_regs {
            want_cpu.gpr[index] = value;
        }
        if let Some(status) = case.want_status {
            want_cpu.eflags = (want_cpu.eflags & !flags::STATUS) | status;
        }
        for &(addr, bytes) in case.want_mem {
            want_bus.ram[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
        }

        let result = emulate(&mut cpu, &mut bus, &insn);
        let result_ok = match (&case.want, &result) {
            (Want::Done, Ok(())) => {
                want_cpu.eip = EIP + case.code.len() as u32;
                true
            }
            (Want::Fault(want), Err(EmulateError::Exception(got))) => want == got,
            (Want::Unsupported, Err(EmulateError::Unsupported { eip, .. })) => *eip == EIP,
            _ => false,
        };
        if !result_ok {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                case.name, case.want, result
            ));
            continue;
        }
        if cpu != want_cpu {
            failures.push(format!(
                "{}: CPU state differs\n  gpr    {:08x?} (expected {:08x?})\n  eflags {:#x} (expected {:#x})\n  eip    {:#x} (expected {:#x})",
                case.name, cpu.gpr, want_cpu.gpr, cpu.eflags, want_cpu.eflags, cpu.eip, want_cpu.eip
            ));
        }
        if let Some(at) = (0..RAM_SIZE).find(|&i| bus.ram[i] != want_bus.ram[i]) {
            failures.push(format!(
                "{}: RAM differs first at {at:#x}: {:02x?} (expected {:02x?})",
                case.name,
                &bus.ram[at..(at + 8).min(RAM_SIZE)],
                &want_bus.ram[at..(at + 8).min(RAM_SIZE)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} emulation cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The error messages say what went wrong and where, so that a monitor can
/// print them as they are.
#[test]
fn unsupported_instructions_name_themselves() {
    let mut cpu = Cpu::new();
    cpu.eip = EIP;
    let mut bus = TestBus {
        ram: vec![0; RAM_SIZE],
    };
    let insn = Decoder::with_ip(
        32,
        &[0x0F, 0x01, 0x10],
        u64::from(EIP),
        DecoderOptions::NONE,
    )
    .decode();
    let err = emulate(&mut cpu, &mut bus, &insn).expect_err("lgdt is not emulated here");
    let message = err.to_string();
    assert!(
        message.contains("Lgdt") && message.contains("0x00008000"),
        "unhelpful message: {message}"
    );
    assert_eq!(
        EmulateError::from(Exception::DivideError),
        EmulateError::Exception(Exception::DivideError)
    );
}

/// Single-stepping a repeated string instruction runs one iteration per
/// step, with EIP at the instruction until the last one (SDM Vol. 3A
/// §17.3.1.4): for every repeated string case of the table that completes,
/// `emulate_iteration` called until it reports completion must take one
/// call per element (and one for a zero count), keep EIP in place until
/// then, and end in exactly the state `emulate` reaches in one go.
#[test]
fn string_instructions_step_one_iteration_at_a_time() {
    let mut checked = 0;
    for case in cases() {
        let insn = Decoder::with_ip(32, case.code, u64::from(EIP), DecoderOptions::NONE).decode();
        let repeated = insn.is_string_instruction() && (insn.has_rep_prefix() || insn.has_repne_prefix());
        if !repeated || !matches!(case.want, Want::Done) {
            continue;
        }
        let (mut whole_cpu, mut whole_bus) = initial_state(&case);
        emulate(&mut whole_cpu, &mut whole_bus, &insn).expect(case.name);
        let (mut cpu, mut bus) = initial_state(&case);
        let count = cpu.gpr[ECX];
        let mut calls = 0u32;
        loop {
            calls += 1;
            let before = cpu.gpr[ECX];
            let done = emulate_iteration(&mut cpu, &mut bus, &insn).expect(case.name);
            if done {
                break;
            }
            assert_eq!(cpu.eip, EIP, "{}: EIP moved before the last iteration", case.name);
            assert_eq!(cpu.gpr[ECX], before.wrapping_sub(1), "{}: one element per iteration", case.name);
            assert!(calls <= count, "{}: more iterations than elements", case.name);
        }
        let elements = count - cpu.gpr[ECX];
        assert_eq!(calls, elements.max(1), "{}: one call per element", case.name);
        assert_eq!(cpu.eip, insn.next_ip() as u32, "{}: EIP after the last iteration", case.name);
        assert_eq!((cpu.gpr, cpu.eflags), (whole_cpu.gpr, whole_cpu.eflags), "{}: registers", case.name);
        assert!(bus.ram == whole_bus.ram, "{}: memory differs from the whole emulation", case.name);
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} repeated string cases in the table");
}
