//! Tests of the page walker: table-driven cases for each rule of SDM Vol.
//! 3A §4.3-4.8, its use by every linear access of the virtual CPU, the
//! control-register effects, and a property test against a reference
//! walker written separately from the SDM's text.
// Test tables are tuples by design: one row per case, read across.
#![allow(clippy::type_complexity)]

use super::*;
use crate::exec::tests::{guest, machine, run, SEL_CODE0, SEL_DATA0, SEL_TSS};
use crate::exec::Effect;
use crate::state::{gpr, SegReg, Selector};
use crate::test_bus::TestBus;
use entry::{A, D, P, PS, RW, US};
use proptest::prelude::*;

/// The page directory and page table of the table-driven cases.
const PD: u32 = 0x1000;
const PT: u32 = 0x2000;
/// The linear address translated: directory index 1, table index 3,
/// offset 0xABC.
const LIN: u32 = 0x0040_3ABC;
const PDE_AT: u32 = PD + 4;
const PTE_AT: u32 = PT + 3 * 4;

fn paged_cpu(wp: bool, pse: bool) -> Cpu {
    let mut cpu = Cpu::new();
    cpu.cr0 |= cr::CR0_PG | if wp { cr::CR0_WP } else { 0 };
    cpu.cr4 = if pse { cr::CR4_PSE } else { 0 };
    cpu.cr3 = PD;
    cpu
}

const SUP_R: PageAccess = PageAccess::read(false);
const SUP_W: PageAccess = PageAccess::write(false);
const USR_R: PageAccess = PageAccess::read(true);
const USR_W: PageAccess = PageAccess::write(true);
const USR_X: PageAccess = PageAccess::fetch(true);

/// What one row expects: the physical address and page size, or the #PF
/// error code.
type Outcome = Result<(u32, u32), u32>;

#[test]
fn walks_follow_the_sdm_rules() {
    let table = 0x2000 | P | RW | US; // a PDE that points at PT
    let page = 0x5000 | P | RW | US; // a PTE that maps 0x5000
    let big = 0x0080_0000 | P | RW | US | PS; // a PDE that maps 4 MiB at 8 MiB
    let ok4k = Ok((0x5ABC, PAGE_SIZE_4K));
    let ok4m = Ok((0x0080_3ABC, PAGE_SIZE_4M));
    // (what, PDE, PTE, CR0.WP, CR4.PSE, access, outcome, PDE after, PTE after)
    let cases: &[(&str, u32, u32, bool, bool, PageAccess, Outcome, u32, u32)] = &[
        ("4K read", table, page, false, false, SUP_R, ok4k, table | A, page | A),
        ("4K write sets D in the PTE only", table, page, false, false, SUP_W, ok4k, table | A, page | A | D),
        ("4K user read", table, page, true, false, USR_R, ok4k, table | A, page | A),
        ("4K user fetch", table, page, true, false, USR_X, ok4k, table | A, page | A),
        // Not present: P = 0 in the code, nothing is set.
        ("PDE not present", table & !P, page, false, false, SUP_R, Err(0), table & !P, page),
        ("PDE not present, user write", table & !P, page, false, false, USR_W, Err(6), table & !P, page),
        // The PDE was used to reach the PTE, so it is accessed (SDM §4.8).
        ("PTE not present", table, page & !P, false, false, SUP_W, Err(2), table | A, page & !P),
        ("PTE not present, user", table, page & !P, false, false, USR_R, Err(4), table | A, page & !P),
        // U/S: either entry can deny CPL 3.
        ("user read, supervisor PDE", table & !US, page, false, false, USR_R, Err(5), (table & !US) | A, page),
        ("user read, supervisor PTE", table, page & !US, false, false, USR_R, Err(5), table | A, page & !US),
        ("user fetch, supervisor PTE: no I/D", table, page & !US, false, false, USR_X, Err(5), table | A, page & !US),
        ("supervisor read of a user page", table, page, true, false, SUP_R, ok4k, table | A, page | A),
        // R/W: either entry can deny a user write.
        ("user write, read-only PTE", table, page & !RW, false, false, USR_W, Err(7), table | A, page & !RW),
        ("user write, read-only PDE", table & !RW, page, false, false, USR_W, Err(7), (table & !RW) | A, page),
        ("user read, read-only PTE", table, page & !RW, false, false, USR_R, ok4k, table | A, (page & !RW) | A),
        // WP decides supervisor writes to read-only pages.
        ("supervisor write, read-only, WP=0", table, page & !RW, false, false, SUP_W, ok4k, table | A, (page & !RW) | A | D),
        ("supervisor write, read-only PTE, WP=1", table, page & !RW, true, false, SUP_W, Err(3), table | A, page & !RW),
        ("supervisor write, read-only PDE, WP=1", table & !RW, page, true, false, SUP_W, Err(3), (table & !RW) | A, page),
        // 4 MiB pages: A and D go in the PDE; no PTE is read.
        ("4M read", big, 0, false, true, SUP_R, ok4m, big | A, 0),
        ("4M write", big, 0, false, true, USR_W, ok4m, big | A | D, 0),
        ("4M user read of a supervisor page", big & !US, 0, false, true, USR_R, Err(5), big & !US, 0),
        ("4M supervisor write, read-only, WP=1", big & !RW, 0, true, true, SUP_W, Err(3), big & !RW, 0),
        ("4M supervisor write, read-only, WP=0", big & !RW, 0, false, true, SUP_W, ok4m, (big & !RW) | A | D, 0),
        // Bits 21:13 of a 4 MiB PDE are reserved: RSVD with P set, and it
        // wins over a protection violation.
        ("4M reserved bit 13", big | 1 << 13, 0, false, true, SUP_R, Err(9), big | 1 << 13, 0),
        ("4M reserved bit 21, user write", big | 1 << 21, 0, false, true, USR_W, Err(15), big | 1 << 21, 0),
        ("4M reserved bit 17 and supervisor", (big & !US) | 1 << 17, 0, false, true, USR_R, Err(13), (big & !US) | 1 << 17, 0),
        ("4M reserved but not present", (big & !P) | 1 << 13, 0, false, true, SUP_R, Err(0), (big & !P) | 1 << 13, 0),
        // Bit 12 is PAT, not reserved, and not part of the frame.
        ("4M PAT bit", big | 1 << 12, 0, false, true, SUP_R, ok4m, big | 1 << 12 | A, 0),
        // Without CR4.PSE the PS bit is ignored: the PDE names a table.
        ("PS without CR4.PSE", table | PS, page, false, false, SUP_R, ok4k, table | PS | A, page | A),
        // Entries whose bits are already set are left alone.
        ("already accessed and dirty", table | A, page | A | D, false, false, SUP_W, ok4k, table | A, page | A | D),
    ];
    for &(what, pde, pte, wp, pse, access, outcome, pde_after, pte_after) in cases {
        let mut bus = TestBus::new(0x10000);
        bus.write_u32(PDE_AT, pde);
        bus.write_u32(PTE_AT, pte);
        let cpu = paged_cpu(wp, pse);
        let got = walk(&cpu, &mut bus, LinearAddr(LIN), access);
        let got = match got {
            Ok(w) => Ok((w.phys.0, w.page_size)),
            Err(Exception::PageFault { addr, code }) => {
                assert_eq!(addr, LIN, "{what}: the fault names the linear address");
                Err(code)
            }
            Err(other) => panic!("{what}: {other:?} is not a page fault"),
        };
        assert_eq!(got, outcome, "{what}");
        assert_eq!(bus.read_u32(PDE_AT), pde_after, "{what}: PDE after");
        assert_eq!(bus.read_u32(PTE_AT), pte_after, "{what}: PTE after");
    }
}

#[test]
fn a_walk_reports_the_page_and_the_entries_it_used() {
    let mut bus = TestBus::new(0x10000);
    bus.write_u32(PDE_AT, PT | P | RW | US);
    bus.write_u32(PTE_AT, 0x5000 | P | US | entry::G);
    let cpu = paged_cpu(true, true);
    let w = walk(&cpu, &mut bus, LinearAddr(LIN), USR_R).unwrap();
    assert_eq!(
        w,
        PageWalk {
            phys: GuestPhysAddr(0x5ABC),
            page_base: 0x0040_3000,
            page_size: PAGE_SIZE_4K,
            writable: false,
            user: true,
            // G is ignored: CR4.PGE is not in the model.
            global: false,
            dirty: false,
            // The walk itself set it.
            accessed: true,
            pde_addr: GuestPhysAddr(PDE_AT),
            pte_addr: Some(GuestPhysAddr(PTE_AT)),
        }
    );
    assert_eq!(w.phys_base(), GuestPhysAddr(0x5000));
    // A probe reports the A bit as the guest left it, and leaves it alone.
    bus.write_u32(PTE_AT, 0x5000 | P | US);
    assert!(!probe(&cpu, &mut bus, LinearAddr(LIN), USR_R).unwrap().accessed);
    assert_eq!(bus.read_u32(PTE_AT) & entry::A, 0);
    bus.write_u32(PTE_AT, 0x5000 | P | US | entry::A);
    assert!(probe(&cpu, &mut bus, LinearAddr(LIN), USR_R).unwrap().accessed);
    assert!(w.allows(USR_R, true));
    assert!(!w.allows(USR_W, false));
    assert!(!w.allows(SUP_W, true));
    assert!(w.allows(SUP_W, false));

    bus.write_u32(PDE_AT, 0x00C0_0000 | P | RW | PS | D);
    let w = walk(&cpu, &mut bus, LinearAddr(LIN), SUP_R).unwrap();
    assert_eq!((w.page_base, w.page_size, w.pte_addr), (0x0040_0000, PAGE_SIZE_4M, None));
    assert_eq!((w.phys_base(), w.writable, w.user, w.dirty), (GuestPhysAddr(0x00C0_0000), true, false, true));
}

/// A bus that records every write, to count the walker's updates.
struct LoggingBus {
    inner: TestBus,
    writes: Vec<(u32, Vec<u8>)>,
}

impl Bus for LoggingBus {
    fn read_phys(&mut self, addr: GuestPhysAddr, buf: &mut [u8]) {
        self.inner.read_phys(addr, buf)
    }
    fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]) {
        self.writes.push((addr.0, data.to_vec()));
        self.inner.write_phys(addr, data)
    }
    fn io_in(&mut self, port: u16, size: bt86_machine::IoSize) -> u32 {
        self.inner.io_in(port, size)
    }
    fn io_out(&mut self, port: u16, size: bt86_machine::IoSize, value: u32) {
        self.inner.io_out(port, size, value)
    }
}

#[test]
fn accessed_and_dirty_bits_are_written_once_and_in_order() {
    let pde = PT | P | RW;
    let pte = 0x5000 | P | RW;
    let entry_write = |addr: u32, value: u32| (addr, value.to_le_bytes().to_vec());
    // (what, accesses in order, the writes expected)
    let cases: &[(&str, &[PageAccess], Vec<(u32, Vec<u8>)>)] = &[
        (
            "read, read, write, write: A once per entry, then D once",
            &[SUP_R, SUP_R, SUP_W, SUP_W],
            vec![entry_write(PDE_AT, pde | A), entry_write(PTE_AT, pte | A), entry_write(PTE_AT, pte | A | D)],
        ),
        (
            "a first write sets A and D together, A no later than D",
            &[SUP_W, SUP_R, SUP_W],
            vec![entry_write(PDE_AT, pde | A), entry_write(PTE_AT, pte | A | D)],
        ),
    ];
    for (what, accesses, expected) in cases {
        let mut bus = LoggingBus { inner: TestBus::new(0x10000), writes: Vec::new() };
        bus.inner.write_u32(PDE_AT, pde);
        bus.inner.write_u32(PTE_AT, pte);
        let cpu = paged_cpu(false, false);
        for &access in accesses.iter() {
            walk(&cpu, &mut bus, LinearAddr(LIN), access).unwrap();
        }
        assert_eq!(&bus.writes, expected, "{what}");
    }
    // probe never writes, and reports what walk would.
    let mut bus = LoggingBus { inner: TestBus::new(0x10000), writes: Vec::new() };
    bus.inner.write_u32(PDE_AT, pde);
    bus.inner.write_u32(PTE_AT, pte);
    let cpu = paged_cpu(false, false);
    let probed = probe(&cpu, &mut bus, LinearAddr(LIN), SUP_W);
    assert!(bus.writes.is_empty());
    // ... except for the A bit the walk is about to set.
    let walked = walk(&cpu, &mut bus, LinearAddr(LIN), SUP_W);
    assert_eq!(probed.map(|w| PageWalk { accessed: true, ..w }), walked);
    bus.inner.write_u32(PTE_AT, 0);
    bus.writes.clear();
    assert_eq!(probe(&cpu, &mut bus, LinearAddr(LIN), USR_R), Err(Exception::PageFault { addr: LIN, code: 4 }));
    assert!(bus.writes.is_empty(), "a probe that faults sets no A bit either");
}

/// A paged CPU whose first 64 KiB of linear memory map identically
/// through one page table at 0xB000 (directory at 0xA000); `user_pages`
/// lists the page numbers CPL 3 may reach, and `read_only` the ones it
/// may not write.
fn identity_paged(cpu: &mut Cpu, bus: &mut TestBus, user_pages: &[u32], read_only: &[u32]) {
    const DIR: u32 = 0xA000;
    const TABLE: u32 = 0xB000;
    bus.write_u32(DIR, TABLE | P | RW | US);
    for page in 0..16 {
        let mut pte = (page << 12) | P | RW;
        if user_pages.contains(&page) {
            pte |= US;
        }
        if read_only.contains(&page) {
            pte &= !RW;
        }
        bus.write_u32(TABLE + 4 * page, pte);
    }
    cpu.cr3 = DIR;
    cpu.cr0 |= cr::CR0_PG | cr::CR0_WP;
}

fn pte_of(bus: &mut TestBus, page: u32) -> u32 {
    bus.read_u32(0xB000 + 4 * page)
}

#[test]
fn straddling_accesses_translate_both_pages_before_moving_data() {
    // (what, linear address, write?, second page present?, outcome)
    let cases: &[(&str, u32, bool, bool, Result<(), Exception>)] = &[
        ("write into a missing page", 0x3FFE, true, false, Err(Exception::PageFault { addr: 0x4000, code: 2 })),
        ("read from a missing page", 0x3FFE, false, false, Err(Exception::PageFault { addr: 0x4000, code: 0 })),
        ("write across two present pages", 0x3FFE, true, true, Ok(())),
    ];
    for &(what, lin, write, present, expected) in cases {
        let mut cpu = Cpu::new();
        let mut bus = TestBus::new(0x10000);
        identity_paged(&mut cpu, &mut bus, &[], &[]);
        if !present {
            bus.write_u32(0xB000 + 4 * 4, 0);
        }
        bus.ram[0x3FFC..0x4004].copy_from_slice(&[0x11; 8]);
        let data = [1, 2, 3, 4];
        let got = if write {
            cpu.write_linear(&mut bus, LinearAddr(lin), &data)
        } else {
            let mut buf = [0u8; 4];
            cpu.read_linear(&mut bus, LinearAddr(lin), &mut buf)
        };
        assert_eq!(got, expected, "{what}");
        let expected_bytes: &[u8] = if expected.is_ok() && write { &[0x11, 0x11, 1, 2, 3, 4, 0x11, 0x11] } else { &[0x11; 8] };
        assert_eq!(&bus.ram[0x3FFC..0x4004], expected_bytes, "{what}: memory");
        // The first page was translated, as hardware does, before the
        // second faulted: its A (and D for a write) are set.
        let first = pte_of(&mut bus, 3);
        assert_eq!(first & (A | D), if write { A | D } else { A }, "{what}: first page's PTE");
    }
}

#[test]
fn paging_off_ignores_the_page_tables() {
    let mut cpu = Cpu::new();
    let mut bus = TestBus::new(0x10000);
    cpu.cr3 = 0xA000; // an empty directory: everything would fault
    cpu.cr4 = cr::CR4_PSE;
    cpu.write_linear(&mut bus, LinearAddr(0x5000), &[7, 8]).unwrap();
    assert_eq!(&bus.ram[0x5000..0x5002], &[7, 8]);
    assert_eq!(cpu.translate(&mut bus, LinearAddr(0x1234_5678), USR_W), Ok(GuestPhysAddr(0x1234_5678)));
    cpu.cr0 |= cr::CR0_PG;
    assert_eq!(
        cpu.translate(&mut bus, LinearAddr(0x5000), USR_W),
        Err(Exception::PageFault { addr: 0x5000, code: 6 })
    );
}

#[test]
fn explicit_accesses_are_user_at_cpl3_and_system_accesses_never_are() {
    // (CPL, system access?, write?, outcome) on supervisor page 1.
    let cases: &[(u8, bool, bool, Result<(), Exception>)] = &[
        (3, false, false, Err(Exception::PageFault { addr: 0x1008, code: 5 })),
        (3, false, true, Err(Exception::PageFault { addr: 0x1008, code: 7 })),
        (3, true, false, Ok(())),
        (3, true, true, Ok(())),
        (0, false, false, Ok(())),
        (0, false, true, Ok(())),
    ];
    for &(cpl, system, write, expected) in cases {
        let (mut cpu, mut bus) = machine(cpl);
        identity_paged(&mut cpu, &mut bus, &[4, 7], &[]);
        let mut buf = [0u8; 8];
        let addr = LinearAddr(0x1008);
        let got = match (system, write) {
            (false, false) => cpu.read_linear(&mut bus, addr, &mut buf),
            (false, true) => cpu.write_linear(&mut bus, addr, &buf),
            (true, false) => cpu.read_system(&mut bus, addr, &mut buf),
            (true, true) => cpu.write_system(&mut bus, addr, &buf),
        };
        assert_eq!(got, expected, "CPL {cpl} system {system} write {write}");
    }
    // A CPL 3 fetch of a supervisor page faults without I/D.
    let (cpu, mut bus) = machine(3);
    let mut cpu = cpu;
    identity_paged(&mut cpu, &mut bus, &[4, 7], &[]);
    let mut buf = [0u8; 1];
    assert_eq!(cpu.fetch_linear(&mut bus, LinearAddr(0x1000), &mut buf), Err(Exception::PageFault { addr: 0x1000, code: 5 }));
    assert_eq!(cpu.fetch_linear(&mut bus, LinearAddr(0x4000), &mut buf), Ok(()));
}

/// `int 0x80` at CPL 3 with the GDT, IDT, TSS and ring-0 stack on
/// supervisor pages: every one of those accesses is implicit supervisor,
/// so the interrupt is delivered; a wrong privilege on any of them would
/// raise #PF instead.
#[test]
fn interrupts_from_cpl3_reach_supervisor_only_system_structures() {
    const TSS: u32 = 0x6000;
    const ESP0: u32 = 0x9000;
    for user_pages in [&[4u32, 7][..], &[4, 7, 1, 2, 6, 8]] {
        let (mut cpu, mut bus) = machine(3);
        bus.write_u32(TSS + 4, ESP0);
        bus.write_u16(TSS + 8, SEL_DATA0);
        cpu.tr = crate::state::Segment { selector: Selector(SEL_TSS), base: TSS, limit: 0x67, access: 0x008B };
        identity_paged(&mut cpu, &mut bus, user_pages, &[]);
        let got = run(&mut cpu, &mut bus, &[0xCD, 0x80]);
        assert_eq!(got, Ok(Effect::Continue), "user pages {user_pages:?}");
        assert_eq!((cpu.segment(SegReg::Cs).selector.0, cpu.eip), (SEL_CODE0, 0x7080));
        assert_eq!(cpu.gpr[gpr::ESP], ESP0 - 20);
        assert_eq!(bus.read_u32(ESP0 - 20), 0x4002, "the return EIP on the ring-0 stack");
        // The walker marked what it used: GDT, IDT, TSS and the new stack.
        for page in [1, 2, 6] {
            assert_eq!(pte_of(&mut bus, page) & A, A, "page {page} accessed");
        }
        assert_eq!(pte_of(&mut bus, 8) & (A | D), A | D, "the ring-0 stack page is dirty");
    }
    // The same interrupt with the ring-0 stack page missing faults on it,
    // as a supervisor write.
    let (mut cpu, mut bus) = machine(3);
    bus.write_u32(TSS + 4, ESP0);
    bus.write_u16(TSS + 8, SEL_DATA0);
    cpu.tr = crate::state::Segment { selector: Selector(SEL_TSS), base: TSS, limit: 0x67, access: 0x008B };
    identity_paged(&mut cpu, &mut bus, &[4, 7], &[]);
    bus.write_u32(0xB000 + 4 * 8, 0);
    let got = run(&mut cpu, &mut bus, &[0xCD, 0x80]);
    assert_eq!(got, guest(Exception::PageFault { addr: ESP0 - 20, code: 2 }));
    assert_eq!(cpu.segment(SegReg::Cs).selector.0 & 3, 3, "nothing committed");
}

#[test]
fn control_register_writes_report_their_effect_on_the_address_space() {
    let pe_et = cr::CR0_PE | cr::CR0_ET;
    let pg = cr::CR0_PG;
    let wp = cr::CR0_WP;
    let mov_cr0 = &[0x0F, 0x22, 0xC0][..]; // mov cr0, eax
    let mov_cr3 = &[0x0F, 0x22, 0xD8][..]; // mov cr3, eax
    let mov_cr4 = &[0x0F, 0x22, 0xE0][..]; // mov cr4, eax
    // (what, CR0 before, CR4 before, bytes, EAX, expected effect)
    let cases: &[(&str, u32, u32, &[u8], u32, Effect)] = &[
        ("PG on", pe_et, 0, mov_cr0, pe_et | pg, Effect::AddressSpaceChanged),
        ("PG off", pe_et | pg, 0, mov_cr0, pe_et, Effect::AddressSpaceChanged),
        ("PG and TS on: the wider effect wins", pe_et, 0, mov_cr0, pe_et | pg | cr::CR0_TS, Effect::AddressSpaceChanged),
        ("WP with paging on", pe_et | pg, 0, mov_cr0, pe_et | pg | wp, Effect::AddressSpaceChanged),
        ("WP with paging off", pe_et, 0, mov_cr0, pe_et | wp, Effect::TranslationModeChanged),
        ("TS with paging on", pe_et | pg, 0, mov_cr0, pe_et | pg | cr::CR0_TS, Effect::TranslationModeChanged),
        ("CR0 unchanged", pe_et | pg, 0, mov_cr0, pe_et | pg, Effect::Continue),
        ("CR3 with paging on, even the same value", pe_et | pg, 0, mov_cr3, 0, Effect::AddressSpaceChanged),
        ("CR3 with paging off", pe_et, 0, mov_cr3, 0x5000, Effect::Continue),
        ("PSE with paging on", pe_et | pg, 0, mov_cr4, cr::CR4_PSE, Effect::AddressSpaceChanged),
        ("PSE off with paging on", pe_et | pg, cr::CR4_PSE, mov_cr4, 0, Effect::AddressSpaceChanged),
        ("PSE with paging off", pe_et, 0, mov_cr4, cr::CR4_PSE, Effect::TranslationModeChanged),
        ("OSFXSR with paging on", pe_et | pg, 0, mov_cr4, cr::CR4_OSFXSR, Effect::TranslationModeChanged),
    ];
    for &(what, cr0, cr4, bytes, eax, expected) in cases {
        let (mut cpu, mut bus) = machine(0);
        cpu.cr0 = cr0;
        cpu.cr4 = cr4;
        cpu.gpr[gpr::EAX] = eax;
        assert_eq!(run(&mut cpu, &mut bus, bytes), Ok(expected), "{what}");
    }
    // Turning paging on takes effect at once: the next access walks.
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::EAX] = pe_et | pg;
    run(&mut cpu, &mut bus, mov_cr0).unwrap();
    assert_eq!(cpu.cr0, pe_et | pg);
    assert_eq!(cpu.read_u8(&mut bus, SegReg::Ds, 0x5000), Err(Exception::PageFault { addr: 0x5000, code: 0 }));
    // CR4.PGE stays out of the model.
    cpu.gpr[gpr::EAX] = cr::CR4_PGE;
    assert_eq!(run(&mut cpu, &mut bus, mov_cr4), guest(Exception::GeneralProtection(0)));
}

#[test]
fn invlpg_names_the_linear_address_of_its_operand() {
    // (what, CPL, paging on?, DS base, EAX, expected)
    let invlpg_eax = &[0x0F, 0x01, 0x38][..]; // invlpg [eax]
    let cases: &[(&str, u8, bool, u32, u32, Result<Effect, crate::exec::ExecError>)] = &[
        ("paging on", 0, true, 0, 0x1234_5678, Ok(Effect::InvalidatePage(LinearAddr(0x1234_5678)))),
        ("the segment base counts", 0, true, 0x1000, 0xFFFF_F800, Ok(Effect::InvalidatePage(LinearAddr(0x800)))),
        ("paging off: nothing to drop", 0, false, 0, 0x1234_5678, Ok(Effect::Continue)),
        ("privileged", 3, true, 0, 0x1234_5678, guest(Exception::GeneralProtection(0))),
    ];
    for &(what, cpl, paging, base, eax, ref expected) in cases {
        let (mut cpu, mut bus) = machine(cpl);
        if paging {
            cpu.cr0 |= cr::CR0_PG;
        }
        cpu.seg[SegReg::Ds as usize].base = base;
        cpu.gpr[gpr::EAX] = eax;
        let eip = cpu.eip;
        assert_eq!(&run(&mut cpu, &mut bus, invlpg_eax), expected, "{what}");
        let next = if expected.is_ok() { eip + 3 } else { eip };
        assert_eq!(cpu.eip, next, "{what}: EIP");
    }
}

// ---------------------------------------------------------------------
// The property test: `walk` against a reference walker.
// ---------------------------------------------------------------------

/// Physical memory of the property test: eight pages, so that random
/// entries often point at real tables (and at each other, and at the
/// directory itself).
const PROP_RAM: usize = 8 * 4096;

/// The reference walker, written from the text of SDM Vol. 3A §4.3 (the
/// walk), §4.6.1 (access rights), §4.7 (the error code) and §4.8 (A/D),
/// over plain bytes rather than a `Bus`, in a different shape from the
/// walker under test. Bytes beyond `mem` read as 0xFF and ignore writes,
/// as the test bus does. Returns (physical address, page size, R/W, U/S,
/// dirty, PDE address, PTE address) or the error code.
#[allow(clippy::type_complexity)]
fn reference_walk(
    mem: &mut [u8],
    (cr0, cr3, cr4): (u32, u32, u32),
    linear: u32,
    (write, user): (bool, bool),
    commit: bool,
) -> Result<(u32, u32, bool, bool, bool, u32, Option<u32>), u32> {
    fn load(mem: &[u8], at: u32) -> u32 {
        let byte = |i: u32| u32::from(mem.get((at + i) as usize).copied().unwrap_or(0xFF));
        byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24
    }
    fn store(mem: &mut [u8], at: u32, value: u32) {
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            if let Some(slot) = mem.get_mut(at as usize + i) {
                *slot = *b;
            }
        }
    }
    let bit = |v: u32, n: u32| (v >> n) & 1 == 1;
    // Figure 4-12: P is bit 0, W/R bit 1, U/S bit 2, RSVD bit 3.
    let code = |present: bool, rsvd: bool| {
        u32::from(present) | u32::from(write) << 1 | u32::from(user) << 2 | u32::from(rsvd) << 3
    };
    // §4.6.1, spelled out case by case. Supervisor reads: any page.
    // Supervisor writes: with WP = 0 any page, with WP = 1 only if R/W is
    // 1 in every entry. User reads: only if U/S is 1 in every entry. User
    // writes: U/S and R/W both 1 in every entry.
    let rights = |us: bool, rw: bool| match (user, write) {
        (false, false) => true,
        (false, true) => !bit(cr0, 16) || rw,
        (true, false) => us,
        (true, true) => us && rw,
    };

    // §4.3: the PDE's address is CR3[31:12] : linear[31:22] : 00.
    let pde_addr = (cr3 >> 12 << 12) + (linear >> 22) * 4;
    let pde = load(mem, pde_addr);
    if !bit(pde, 0) {
        return Err(code(false, false));
    }
    if bit(cr4, 4) && bit(pde, 7) {
        // A 4 MiB page; with MAXPHYADDR 32, bits 21:13 must be 0.
        if (13..=21).any(|n| bit(pde, n)) {
            return Err(code(true, true));
        }
        let (rw, us) = (bit(pde, 1), bit(pde, 2));
        if !rights(us, rw) {
            return Err(code(true, false));
        }
        let mut new = pde | 1 << 5;
        if write {
            new |= 1 << 6;
        }
        if commit && new != pde {
            store(mem, pde_addr, new);
        }
        let phys = (pde >> 22 << 22) + (linear % (4 << 20));
        return Ok((phys, 4 << 20, rw, us, bit(new, 6), pde_addr, None));
    }
    // §4.8: the PDE is used, so it is accessed, before the PTE is read.
    if commit && !bit(pde, 5) {
        store(mem, pde_addr, pde | 1 << 5);
    }
    let pde = pde | 1 << 5;
    // The PTE's address is PDE[31:12] : linear[21:12] : 00.
    let pte_addr = (pde >> 12 << 12) + ((linear >> 12) % 1024) * 4;
    let pte = load(mem, pte_addr);
    if !bit(pte, 0) {
        return Err(code(false, false));
    }
    let rw = bit(pde, 1) && bit(pte, 1);
    let us = bit(pde, 2) && bit(pte, 2);
    if !rights(us, rw) {
        return Err(code(true, false));
    }
    let mut new = pte | 1 << 5;
    if write {
        new |= 1 << 6;
    }
    if commit && new != pte {
        store(mem, pte_addr, new);
    }
    let phys = (pte >> 12 << 12) + linear % 4096;
    Ok((phys, 4096, rw, us, bit(new, 6), pde_addr, Some(pte_addr)))
}

/// One random 32-bit word of a page table: mostly entries that point at
/// one of the eight test pages (or at a 4 MiB frame) with random flag
/// bits, sometimes entirely random bits.
fn entry_word() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => (0u32..8, any::<u16>()).prop_map(|(frame, low)| frame << 12 | u32::from(low & 0x1FF)),
        2 => (0u32..4, any::<u16>()).prop_map(|(frame, low)| frame << 22 | u32::from(low & 0x1FF)),
        1 => any::<u32>(),
    ]
}

/// A random access: a linear address made of a directory index, a table
/// index and an offset (small indices are likelier, so accesses meet the
/// entries the strategy filled with pointers), and write/user/fetch flags.
fn access() -> impl Strategy<Value = (u32, bool, bool, bool)> {
    let index = prop_oneof![3 => 0u32..8, 1 => 0u32..1024];
    (index.clone(), index, 0u32..4096, any::<bool>(), any::<bool>(), any::<bool>())
        .prop_map(|(d, t, off, write, user, fetch)| (d << 22 | t << 12 | off, write && !fetch, user, fetch))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Random page tables over eight pages of memory, random CR0.WP,
    /// CR4.PSE and CR3, and a run of random accesses: every access gives
    /// the same fault (with the same error code) or the same translation
    /// under `walk` as under the reference, and leaves the same bytes in
    /// memory (the A and D bits). `probe` agrees with the reference run
    /// without writes and never changes memory.
    #[test]
    fn walk_agrees_with_the_reference_walker(
        hot in proptest::collection::vec(entry_word(), 64),
        cold in proptest::collection::vec((0..PROP_RAM as u32 / 4, entry_word()), 0..32),
        cr3_frame in 0u32..8,
        wp in any::<bool>(),
        pse in any::<bool>(),
        accesses in proptest::collection::vec(access(), 1..8),
    ) {
        // The first eight entries of every page are where the likelier
        // small indices land; a few more entries are scattered anywhere.
        // The rest of memory is zero: not-present entries.
        let mut bus = TestBus::new(PROP_RAM);
        for (i, w) in hot.iter().enumerate() {
            let (page, index) = (i as u32 / 8, i as u32 % 8);
            bus.write_u32(page * 4096 + index * 4, *w);
        }
        for &(index, w) in &cold {
            bus.write_u32(index * 4, w);
        }
        let mut mem = bus.ram.clone();
        let mut cpu = Cpu::new();
        cpu.cr0 |= cr::CR0_PG | if wp { cr::CR0_WP } else { 0 };
        cpu.cr4 = if pse { cr::CR4_PSE } else { 0 };
        cpu.cr3 = cr3_frame << 12;
        for (linear, write, user, fetch) in accesses {
            let access = PageAccess { write, user, fetch };
            let regs = (cpu.cr0, cpu.cr3, cpu.cr4);

            let before = bus.ram.clone();
            let probed = probe(&cpu, &mut bus, LinearAddr(linear), access);
            prop_assert_eq!(&bus.ram, &before, "probe wrote to memory");
            let expected_probe = reference_walk(&mut before.clone(), regs, linear, (write, user), false);
            prop_assert_eq!(flatten(probed, linear), expected_probe);

            let got = walk(&cpu, &mut bus, LinearAddr(linear), access);
            let expected = reference_walk(&mut mem, regs, linear, (write, user), true);
            prop_assert_eq!(flatten(got, linear), expected, "access {:#010x} {:?}", linear, access);
            prop_assert_eq!(&bus.ram, &mem, "A/D bits differ after {:#010x} {:?}", linear, access);
        }
    }
}

/// A walker result in the reference's shape; also checks that every
/// fault is a #PF naming the linear address.
#[allow(clippy::type_complexity)]
fn flatten(result: Result<PageWalk, Exception>, linear: u32) -> Result<(u32, u32, bool, bool, bool, u32, Option<u32>), u32> {
    match result {
        Ok(w) => {
            assert_eq!(w.page_base, linear & !(w.page_size - 1));
            Ok((w.phys.0, w.page_size, w.writable, w.user, w.dirty, w.pde_addr.0, w.pte_addr.map(|a| a.0)))
        }
        Err(Exception::PageFault { addr, code }) => {
            assert_eq!(addr, linear);
            Err(code)
        }
        Err(other) => panic!("{other:?} is not a page fault"),
    }
}
