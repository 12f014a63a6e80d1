//! Guest memory as the virtual CPU sees it: segmentation, then paging,
//! then the physical bus.
//!
//! This module owns the two steps between an instruction's operand and the
//! bus: the segment check that turns `seg:offset` into a linear address
//! (Intel SDM Vol. 3A §3.4 and §5.3-5.4), and the linear-to-physical step
//! behind [`Cpu::read_linear`] / [`Cpu::write_linear`] and their system and
//! fetch variants, which are the only place that turns a linear address
//! into a physical one. With CR0.PG clear that step is the identity (§4.1);
//! with it set, every piece goes through the page walker in `paging.rs`.
//! This module also decides *who* makes each access for paging's U/S check
//! (§4.6): an explicit access is a user access at CPL 3, and the system
//! variants are supervisor accesses at any CPL. It does not load segment
//! registers (that is `segment.rs`) and never touches the host: all memory
//! is reached through [`Bus`].

use bt86_machine::{Bus, GuestPhysAddr};

use crate::exception::Exception;
use crate::paging::{self, PageAccess};
use crate::state::{cr, Cpu, LinearAddr, SegReg, Segment};
use crate::state::gpr;

/// The kind of access an instruction makes through a segment. It decides
/// which segment types are acceptable (SDM Vol. 3A §5.4.1): data may be
/// read from any data segment or readable code segment, written only to
/// writable data segments, and code is fetched only from code segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
    Execute,
}

/// The size of a page, the unit in which linear accesses are split so that
/// each piece is translated on its own. A 4 MiB page is split the same way;
/// its pieces simply land next to each other.
const PAGE_SIZE: u32 = paging::PAGE_SIZE_4K;

/// Who makes a linear access, as paging's U/S check sees it (SDM Vol. 3A
/// §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Privilege {
    /// An explicit access by the instruction: a user access at CPL 3,
    /// a supervisor access at CPL 0-2.
    Current,
    /// An implicit access to a system structure (GDT, LDT, IDT, TSS, the
    /// stack of an inner ring during a privilege change): always a
    /// supervisor access, whatever the CPL.
    Supervisor,
}

/// The exception a failed segment check raises: #SS(0) for accesses through
/// SS, #GP(0) for every other segment register (SDM Vol. 3A §6.15,
/// "Interrupt 12" and "Interrupt 13").
fn segment_fault(seg: SegReg) -> Exception {
    if seg == SegReg::Ss {
        Exception::StackFault(0)
    } else {
        Exception::GeneralProtection(0)
    }
}

/// Whether a cached segment allows `access` at all, ignoring the limit.
fn type_allows(segment: &Segment, access: Access) -> bool {
    match access {
        Access::Read => segment.is_readable(),
        Access::Write => segment.is_writable(),
        Access::Execute => segment.is_code(),
    }
}

/// Whether the hidden part `segment` allows an access of `len` bytes at
/// `offset`: the checks of [`Cpu::linear_address`] without choosing the
/// exception. Inter-privilege transfers use it on the stack segment they
/// are about to load, whose faults carry that segment's selector.
pub fn segment_allows(segment: &Segment, offset: u32, len: u32, access: Access) -> bool {
    // A null selector leaves the register "unusable" (access rights 0);
    // any reference through it faults (SDM Vol. 3A §3.4.2).
    segment.access != 0
        && segment.is_present()
        && type_allows(segment, access)
        && segment.contains(offset, len.max(1))
}

impl Cpu {
    /// Checks an access of `len` bytes at `seg:offset` against the hidden
    /// part of the segment register and returns the linear address.
    ///
    /// The checks are those the processor makes on every memory reference
    /// (SDM Vol. 3A §5.3 limit checking, §5.4 type checking): the segment
    /// must be usable (a null selector was not loaded), its type must allow
    /// the access, and every byte must lie within the limit, which for an
    /// expand-down segment means above it. Failures raise #GP(0), or #SS(0)
    /// when the segment is SS. Privilege is not checked here: it was checked
    /// when the segment register was loaded (§5.6).
    pub fn linear_address(
        &self,
        seg: SegReg,
        offset: u32,
        len: u32,
        access: Access,
    ) -> Result<LinearAddr, Exception> {
        let segment = self.segment(seg);
        if !segment_allows(segment, offset, len, access) {
            return Err(segment_fault(seg));
        }
        // The linear address space is 32 bits wide and wraps (Vol. 3A §3.4).
        Ok(LinearAddr(segment.base.wrapping_add(offset)))
    }

    /// Reads `buf.len()` bytes at `seg:offset` after the segment checks.
    pub fn read_virt(
        &self,
        bus: &mut dyn Bus,
        seg: SegReg,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<(), Exception> {
        let addr = self.linear_address(seg, offset, len_u32(buf.len()), Access::Read)?;
        self.read_linear(bus, addr, buf)
    }

    /// Writes `data` at `seg:offset` after the segment checks.
    pub fn write_virt(
        &self,
        bus: &mut dyn Bus,
        seg: SegReg,
        offset: u32,
        data: &[u8],
    ) -> Result<(), Exception> {
        let addr = self.linear_address(seg, offset, len_u32(data.len()), Access::Write)?;
        self.write_linear(bus, addr, data)
    }

    /// Reads linear memory as the instruction itself does: a user access
    /// when CPL = 3. The access is split at page boundaries and every piece
    /// translated before any byte moves, so that an access straddling two
    /// pages faults on the right one and a fault reads nothing.
    pub fn read_linear(&self, bus: &mut dyn Bus, addr: LinearAddr, buf: &mut [u8]) -> Result<(), Exception> {
        self.read_with(bus, addr, buf, Access::Read, Privilege::Current)
    }

    /// Writes linear memory as the instruction itself does; see
    /// [`Cpu::read_linear`]. Every page is translated (with its permission
    /// check) before the first byte is written, so a fault on the second
    /// page of a straddling write leaves the data of the first untouched.
    /// The walk of the first page has then set its Accessed and Dirty bits,
    /// as the processor does (SDM Vol. 3A §4.8).
    pub fn write_linear(&self, bus: &mut dyn Bus, addr: LinearAddr, data: &[u8]) -> Result<(), Exception> {
        self.write_with(bus, addr, data, Privilege::Current)
    }

    /// Reads a system structure (GDT, LDT, IDT, TSS): a supervisor access
    /// even at CPL 3 (SDM Vol. 3A §4.6, "implicit supervisor-mode
    /// accesses").
    pub fn read_system(&self, bus: &mut dyn Bus, addr: LinearAddr, buf: &mut [u8]) -> Result<(), Exception> {
        self.read_with(bus, addr, buf, Access::Read, Privilege::Supervisor)
    }

    /// Writes a system structure (a descriptor's Accessed or Busy bit) or
    /// the stack of the inner ring that an interrupt or call gate switches
    /// to: a supervisor access even while CPL is still 3.
    pub fn write_system(&self, bus: &mut dyn Bus, addr: LinearAddr, data: &[u8]) -> Result<(), Exception> {
        self.write_with(bus, addr, data, Privilege::Supervisor)
    }

    /// Reads guest code at `addr` as an instruction fetch at the current
    /// CPL, for the translator and the emulator. A fetch needs only read
    /// permission in 32-bit paging, and its #PF never has I/D set.
    pub fn fetch_linear(&self, bus: &mut dyn Bus, addr: LinearAddr, buf: &mut [u8]) -> Result<(), Exception> {
        self.read_with(bus, addr, buf, Access::Execute, Privilege::Current)
    }

    /// Whether paging is on (CR0.PG).
    pub fn paging_enabled(&self) -> bool {
        self.cr0 & cr::CR0_PG != 0
    }

    /// Whether an explicit access made now is a user-mode access for
    /// paging: exactly when CPL = 3 (SDM Vol. 3A §4.6).
    pub fn is_user_access(&self) -> bool {
        self.cpl() == 3
    }

    /// Translates one linear address: the identity with CR0.PG clear (SDM
    /// Vol. 3A §4.1.1), otherwise [`paging::walk`], which sets the
    /// Accessed and Dirty bits the access earns.
    pub fn translate(&self, bus: &mut dyn Bus, addr: LinearAddr, access: PageAccess) -> Result<GuestPhysAddr, Exception> {
        if self.paging_enabled() {
            paging::walk(self, bus, addr, access).map(|w| w.phys)
        } else {
            Ok(GuestPhysAddr(addr.0))
        }
    }

    fn read_with(
        &self,
        bus: &mut dyn Bus,
        addr: LinearAddr,
        buf: &mut [u8],
        access: Access,
        privilege: Privilege,
    ) -> Result<(), Exception> {
        // With paging off, linear is physical: one piece, no allocation
        // (the common case for every callout and interrupt frame).
        if !self.paging_enabled() {
            bus.read_phys(GuestPhysAddr(addr.0), buf);
            return Ok(());
        }
        let pieces = self.translate_range(bus, addr, len_u32(buf.len()), access, privilege)?;
        let mut done = 0usize;
        for (phys, len) in pieces {
            let len = len as usize;
            bus.read_phys(phys, &mut buf[done..done + len]);
            done += len;
        }
        Ok(())
    }

    fn write_with(&self, bus: &mut dyn Bus, addr: LinearAddr, data: &[u8], privilege: Privilege) -> Result<(), Exception> {
        if !self.paging_enabled() {
            bus.write_phys(GuestPhysAddr(addr.0), data);
            return Ok(());
        }
        let pieces = self.translate_range(bus, addr, len_u32(data.len()), Access::Write, privilege)?;
        let mut done = 0usize;
        for (phys, len) in pieces {
            let len = len as usize;
            bus.write_phys(phys, &data[done..done + len]);
            done += len;
        }
        Ok(())
    }

    /// Reads a byte at `seg:offset`.
    pub fn read_u8(&self, bus: &mut dyn Bus, seg: SegReg, offset: u32) -> Result<u8, Exception> {
        let mut b = [0u8; 1];
        self.read_virt(bus, seg, offset, &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian word at `seg:offset`.
    pub fn read_u16(&self, bus: &mut dyn Bus, seg: SegReg, offset: u32) -> Result<u16, Exception> {
        let mut b = [0u8; 2];
        self.read_virt(bus, seg, offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian doubleword at `seg:offset`.
    pub fn read_u32(&self, bus: &mut dyn Bus, seg: SegReg, offset: u32) -> Result<u32, Exception> {
        let mut b = [0u8; 4];
        self.read_virt(bus, seg, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a byte at `seg:offset`.
    pub fn write_u8(
        &self,
        bus: &mut dyn Bus,
        seg: SegReg,
        offset: u32,
        value: u8,
    ) -> Result<(), Exception> {
        self.write_virt(bus, seg, offset, &[value])
    }

    /// Writes a little-endian word at `seg:offset`.
    pub fn write_u16(
        &self,
        bus: &mut dyn Bus,
        seg: SegReg,
        offset: u32,
        value: u16,
    ) -> Result<(), Exception> {
        self.write_virt(bus, seg, offset, &value.to_le_bytes())
    }

    /// Writes a little-endian doubleword at `seg:offset`.
    pub fn write_u32(
        &self,
        bus: &mut dyn Bus,
        seg: SegReg,
        offset: u32,
        value: u32,
    ) -> Result<(), Exception> {
        self.write_virt(bus, seg, offset, &value.to_le_bytes())
    }

    /// Reads a doubleword of linear memory at the current privilege.
    pub fn read_linear_u32(&self, bus: &mut dyn Bus, addr: LinearAddr) -> Result<u32, Exception> {
        let mut b = [0u8; 4];
        self.read_linear(bus, addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a quadword of linear memory at the current privilege.
    pub fn read_linear_u64(&self, bus: &mut dyn Bus, addr: LinearAddr) -> Result<u64, Exception> {
        let mut b = [0u8; 8];
        self.read_linear(bus, addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads one descriptor or gate (a quadword of a system table) as a
    /// supervisor access; see [`Cpu::read_system`].
    pub fn read_system_u64(&self, bus: &mut dyn Bus, addr: LinearAddr) -> Result<u64, Exception> {
        let mut b = [0u8; 8];
        self.read_system(bus, addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The stack pointer as the stack's address size sees it: ESP for a
    /// 32-bit stack segment (SS.B = 1), SP for a 16-bit one (SDM Vol. 3A
    /// §3.4.5, the B flag).
    pub fn stack_pointer(&self) -> u32 {
        let esp = self.gpr[gpr::ESP];
        if self.segment(SegReg::Ss).is_32bit() {
            esp
        } else {
            esp & 0xFFFF
        }
    }

    /// Replaces the stack pointer, touching only SP on a 16-bit stack: the
    /// upper half of ESP is preserved there, as on hardware.
    pub fn set_stack_pointer(&mut self, sp: u32) {
        if self.segment(SegReg::Ss).is_32bit() {
            self.gpr[gpr::ESP] = sp;
        } else {
            self.gpr[gpr::ESP] = (self.gpr[gpr::ESP] & 0xFFFF_0000) | (sp & 0xFFFF);
        }
    }

    /// The stack pointer after moving it by `delta` bytes, wrapped at the
    /// stack's address size.
    pub fn stack_pointer_plus(&self, delta: i32) -> u32 {
        let sp = self.stack_pointer().wrapping_add(delta as u32);
        if self.segment(SegReg::Ss).is_32bit() {
            sp
        } else {
            sp & 0xFFFF
        }
    }

    /// Pushes the low `size` bytes (2 or 4) of `value` on SS:ESP.
    ///
    /// The write happens before ESP changes, so a #SS or #PF leaves ESP as
    /// it was (SDM Vol. 2B PUSH: "If a fault occurs, ESP is unchanged").
    /// Any size other than 2 or 4 is treated as 4.
    pub fn push(&mut self, bus: &mut dyn Bus, value: u32, size: u32) -> Result<(), Exception> {
        let size: u32 = if size == 2 { 2 } else { 4 };
        let new_sp = self.stack_pointer_plus(-(size as i32));
        let bytes = value.to_le_bytes();
        self.write_virt(bus, SegReg::Ss, new_sp, &bytes[..size as usize])?;
        self.set_stack_pointer(new_sp);
        Ok(())
    }

    /// Pops `size` bytes (2 or 4) from SS:ESP, zero-extended.
    pub fn pop(&mut self, bus: &mut dyn Bus, size: u32) -> Result<u32, Exception> {
        let value = self.peek_stack(bus, 0, size)?;
        let size: i32 = if size == 2 { 2 } else { 4 };
        self.set_stack_pointer(self.stack_pointer_plus(size));
        Ok(value)
    }

    /// Reads `size` bytes (2 or 4) at SS:(ESP + `offset`) without moving
    /// ESP. Far returns and `iret` read their whole frame this way before
    /// committing anything, so that a fault part-way leaves ESP untouched.
    pub fn peek_stack(&self, bus: &mut dyn Bus, offset: u32, size: u32) -> Result<u32, Exception> {
        let addr = self.stack_pointer_plus(offset as i32);
        if size == 2 {
            Ok(u32::from(self.read_u16(bus, SegReg::Ss, addr)?))
        } else {
            self.read_u32(bus, SegReg::Ss, addr)
        }
    }

    /// Splits `len` bytes at `addr` into pieces that do not cross a page
    /// and translates each one, in address order, before the caller moves
    /// any data.
    fn translate_range(
        &self,
        bus: &mut dyn Bus,
        addr: LinearAddr,
        len: u32,
        access: Access,
        privilege: Privilege,
    ) -> Result<Vec<(GuestPhysAddr, u32)>, Exception> {
        let page_access = PageAccess {
            write: access == Access::Write,
            user: privilege == Privilege::Current && self.is_user_access(),
            fetch: access == Access::Execute,
        };
        let mut pieces = Vec::with_capacity(2);
        let mut linear = addr.0;
        let mut left = len;
        while left > 0 {
            let in_page = PAGE_SIZE - (linear % PAGE_SIZE);
            let chunk = left.min(in_page);
            pieces.push((self.translate(bus, LinearAddr(linear), page_access)?, chunk));
            // The linear address space wraps at 4 GiB.
            linear = linear.wrapping_add(chunk);
            left -= chunk;
        }
        Ok(pieces)
    }
}

/// Buffer lengths in this crate are at most a few bytes; anything that does
/// not fit in 32 bits is clamped, which makes the segment check fail rather
/// than wrap.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // one tuple per table row
mod tests {
    use super::*;
    use crate::state::Selector;
    use crate::test_bus::TestBus;

    fn seg(base: u32, limit: u32, access: u16) -> Segment {
        Segment { selector: Selector(0x10), base, limit, access }
    }

    #[test]
    fn segment_checks() {
        use Access::*;
        let data = seg(0x1000, 0xFFF, 0x4093);
        let read_only = seg(0x1000, 0xFFF, 0x4091);
        let exec_only = seg(0, 0xFFFF_FFFF, 0xC099);
        let readable_code = seg(0, 0xFFFF_FFFF, 0xC09B);
        // Expand-down, 16-bit: valid offsets are limit+1 ..= 0xFFFF.
        let down16 = seg(0x2000, 0x0FFF, 0x0097);
        let unusable = Segment { selector: Selector(0), base: 0, limit: 0, access: 0 };
        // (reg, segment, offset, len, access, expected)
        let cases: &[(SegReg, Segment, u32, u32, Access, Result<u32, Exception>)] = &[
            (SegReg::Ds, data, 0xFFC, 4, Read, Ok(0x1FFC)),
            (SegReg::Ds, data, 0xFFD, 4, Read, Err(Exception::GeneralProtection(0))),
            (SegReg::Ss, data, 0xFFD, 4, Write, Err(Exception::StackFault(0))),
            (SegReg::Ds, read_only, 0, 1, Write, Err(Exception::GeneralProtection(0))),
            (SegReg::Ds, read_only, 0, 1, Read, Ok(0x1000)),
            (SegReg::Cs, exec_only, 0x10, 4, Read, Err(Exception::GeneralProtection(0))),
            (SegReg::Cs, exec_only, 0x10, 4, Execute, Ok(0x10)),
            (SegReg::Cs, readable_code, 0x10, 4, Read, Ok(0x10)),
            (SegReg::Cs, readable_code, 0x10, 4, Write, Err(Exception::GeneralProtection(0))),
            (SegReg::Ds, data, 0, 4, Execute, Err(Exception::GeneralProtection(0))),
            (SegReg::Es, down16, 0x0FFF, 1, Read, Err(Exception::GeneralProtection(0))),
            (SegReg::Es, down16, 0x1000, 4, Write, Ok(0x3000)),
            (SegReg::Es, down16, 0xFFFE, 4, Write, Err(Exception::GeneralProtection(0))),
            (SegReg::Fs, unusable, 0, 1, Read, Err(Exception::GeneralProtection(0))),
            (SegReg::Ss, unusable, 0, 1, Read, Err(Exception::StackFault(0))),
            // Offsets wrap at 4 GiB only within a flat segment's limit.
            (SegReg::Cs, readable_code, 0xFFFF_FFFE, 4, Read, Err(Exception::GeneralProtection(0))),
        ];
        for &(reg, segment, offset, len, access, expected) in cases {
            let mut cpu = Cpu::new();
            cpu.seg[reg as usize] = segment;
            let got = cpu.linear_address(reg, offset, len, access).map(|a| a.0);
            assert_eq!(got, expected, "{reg:?} {segment:?} offset {offset:#x} len {len} {access:?}");
        }
    }

    #[test]
    fn push_and_pop_honour_the_stack_size() {
        let mut bus = TestBus::new(0x2_0000);
        // (SS.B, initial ESP, value, size, ESP after push, address written)
        let cases: &[(bool, u32, u32, u32, u32, u32)] = &[
            (true, 0x8000, 0xDEAD_BEEF, 4, 0x7FFC, 0x7FFC),
            (true, 0x8000, 0xBEEF, 2, 0x7FFE, 0x7FFE),
            // A 16-bit stack wraps SP within 64 KiB and keeps ESP's top half.
            (false, 0xABCD_0000, 0x1234_5678, 2, 0xABCD_FFFE, 0xFFFE),
        ];
        for &(big, esp, value, size, esp_after, addr) in cases {
            let mut cpu = Cpu::new();
            let access = if big { 0xC093 } else { 0x0093 };
            cpu.seg[SegReg::Ss as usize] = seg(0, if big { 0xFFFF_FFFF } else { 0xFFFF }, access);
            cpu.gpr[gpr::ESP] = esp;
            cpu.push(&mut bus, value, size).unwrap();
            assert_eq!(cpu.gpr[gpr::ESP], esp_after);
            let mask = if size == 2 { 0xFFFF } else { 0xFFFF_FFFF };
            let mut b = [0u8; 4];
            bus.read_phys(GuestPhysAddr(addr), &mut b[..size as usize]);
            assert_eq!(u32::from_le_bytes(b), value & mask);
            assert_eq!(cpu.pop(&mut bus, size).unwrap(), value & mask);
            assert_eq!(cpu.gpr[gpr::ESP], esp);
        }
    }

    #[test]
    fn failed_push_leaves_esp() {
        let mut bus = TestBus::new(0x1000);
        let mut cpu = Cpu::new();
        cpu.seg[SegReg::Ss as usize] = seg(0, 0xFFF, 0x4093);
        cpu.gpr[gpr::ESP] = 2;
        assert_eq!(cpu.push(&mut bus, 1, 4), Err(Exception::StackFault(0)));
        assert_eq!(cpu.gpr[gpr::ESP], 2);
    }

    #[test]
    fn accesses_split_at_pages_and_reach_the_bus() {
        let mut bus = TestBus::new(0x3000);
        let cpu = Cpu::new();
        cpu.write_linear(&mut bus, LinearAddr(0xFFE), &[1, 2, 3, 4]).unwrap();
        assert_eq!(&bus.ram[0xFFE..0x1002], &[1, 2, 3, 4]);
        let mut buf = [0u8; 4];
        cpu.read_virt(&mut bus, SegReg::Ds, 0xFFE, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
    }
}
