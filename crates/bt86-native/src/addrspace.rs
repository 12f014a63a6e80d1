//! The host address space of a VM: the low 4 GiB reserved for the guest,
//! guest RAM mapped at its guest addresses, and the monitor area at the top.
//!
//! Guest linear address X is host address X (brief §4.1), so IDENT memory
//! operands need no rewriting. At start bt86 reserves [4 KiB, 4 GiB) with
//! `PROT_NONE`; guest accesses that land on a part nothing is mapped into
//! fault, and the monitor emulates them. Linux keeps page 0 unmappable
//! (`vm.mmap_min_addr`), so guest page 0 is always emulated.
//!
//! The monitor area is a 4 MiB shared-memory object mapped twice: once at
//! [`MONITOR_BASE`] where translated code runs and reads `gs:[...]`, and once
//! at an address the kernel picks, writable, through which the translator
//! writes code. The executable view is never writable except the VCPU page,
//! which translated code itself writes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::ptr::NonNull;

use bt86_translate::layout::{MONITOR_BASE, MONITOR_SIZE, STUB_PAGE, TC_START};
use bt86_translate::MonitorMemory;

use crate::NativeError;

const PAGE: usize = 4096;
/// Where the reservation starts: Linux refuses mappings below
/// `vm.mmap_min_addr`, 4096 on these hosts.
const LOW: usize = PAGE;
const FOUR_GIB: usize = 1 << 32;

/// The reservation of the low 4 GiB, with RAM and the monitor area in it.
/// Dropping it unmaps everything.
pub struct AddressSpace {
    ram_size: u32,
    ram_fd: i32,
    monitor_alias: NonNull<u8>,
}

impl AddressSpace {
    /// Reserves [4 KiB, 4 GiB), maps `ram` (a file of `ram_size` bytes) at
    /// guest-physical = host address, and creates the monitor area.
    pub fn new(ram: &File, ram_size: u32) -> Result<AddressSpace, NativeError> {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: if
        // any part of [4 KiB, 4 GiB) is in use the call fails with EEXIST,
        // and nothing of ours is touched. PROT_NONE + MAP_NORESERVE commits
        // no memory.
        let base = unsafe {
            libc::mmap(
                LOW as *mut libc::c_void,
                FOUR_GIB - LOW,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED || base as usize != LOW {
            let err = io::Error::last_os_error();
            if base != libc::MAP_FAILED {
                // An old kernel that ignores MAP_FIXED_NOREPLACE put it elsewhere.
                // SAFETY: `base` is the mapping the call above just created.
                unsafe { libc::munmap(base, FOUR_GIB - LOW) };
            }
            return Err(NativeError::Reserve(err));
        }
        let mut space = AddressSpace { ram_size, ram_fd: ram.as_raw_fd(), monitor_alias: NonNull::dangling() };
        space.map_ram(ram)?;
        space.map_monitor()?;
        Ok(space)
    }

    fn map_ram(&mut self, ram: &File) -> Result<(), NativeError> {
        debug_assert_eq!(ram.as_raw_fd(), self.ram_fd);
        self.map_identity().map_err(|e| NativeError::Map("guest RAM", e))
    }

    /// Maps guest RAM at its physical addresses, read-write: the layout
    /// while the guest runs with paging off.
    pub fn map_identity(&mut self) -> io::Result<()> {
        let pages = self.ram_size / PAGE as u32 - 1;
        self.map_frames(1, 1, pages, true)
    }

    /// Maps `count` guest frames starting at `frame` at guest-linear pages
    /// starting at `page`, read-only or read-write: a shadow mapping (brief
    /// §4.6), or the identity layout of RAM. One `mmap` call, however many
    /// pages: frames that follow each other in RAM are mapped as one run.
    pub fn map_frames(&mut self, page: u32, frame: u32, count: u32, writable: bool) -> io::Result<()> {
        let (addr, len) = self.guest_range(page, count)?;
        let end = u64::from(frame) + u64::from(count);
        if end * PAGE as u64 > u64::from(self.ram_size) {
            return Err(io::Error::other(format!("frames {frame:#x}+{count} lie outside guest RAM")));
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // No MAP_POPULATE: it enters the pages one by one through the slow
        // path of get_user_pages, and measured twice as slow here as
        // leaving them to the first touch, where the kernel's fault-around
        // maps up to 16 pages of the file at once.
        // SAFETY: `guest_range` checked that the target lies inside our own
        // reservation and below the monitor area, so MAP_FIXED replaces
        // only guest mappings this object owns, which no Rust reference
        // points into (the machine reaches RAM through its own mapping).
        // The file holds ram_size bytes, which covers the range (checked).
        let p = unsafe {
            libc::mmap(addr, len, prot, libc::MAP_SHARED | libc::MAP_FIXED, self.ram_fd, (frame as usize * PAGE) as libc::off_t)
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes every mapping from `count` guest-linear pages starting at
    /// `page`, leaving the reservation's `PROT_NONE` behind.
    pub fn unmap_pages(&mut self, page: u32, count: u32) -> io::Result<()> {
        let (addr, len) = self.guest_range(page, count)?;
        // SAFETY: as in `map_frames`, the range is guest space inside our
        // reservation; an anonymous PROT_NONE NORESERVE mapping commits no
        // memory and restores the reservation as it was made.
        let p = unsafe {
            libc::mmap(
                addr,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes every guest mapping below the monitor area.
    pub fn unmap_guest(&mut self) -> io::Result<()> {
        self.unmap_pages(1, (MONITOR_BASE as usize / PAGE) as u32 - 1)
    }

    /// Makes `count` mapped guest-linear pages from `page` read-only or
    /// read-write.
    pub fn protect_pages(&mut self, page: u32, count: u32, writable: bool) -> io::Result<()> {
        let (addr, len) = self.guest_range(page, count)?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: the range is guest space inside our reservation (checked);
        // changing its protection cannot affect memory Rust code holds
        // references to.
        let r = unsafe { libc::mprotect(addr, len, prot) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The host range of `count` guest-linear pages from `page`, which must
    /// lie in [4 KiB, MONITOR_BASE).
    fn guest_range(&self, page: u32, count: u32) -> io::Result<(*mut libc::c_void, usize)> {
        let start = page as usize * PAGE;
        let end = start + count as usize * PAGE;
        if count == 0 || start < LOW || end > MONITOR_BASE as usize {
            return Err(io::Error::other(format!("pages {page:#x}+{count} are not guest space")));
        }
        Ok((start as *mut libc::c_void, end - start))
    }

    fn map_monitor(&mut self) -> Result<(), NativeError> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it
        // returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"bt86-monitor".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(NativeError::Map("monitor area", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor we own; File closes it on drop.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(u64::from(MONITOR_SIZE)).map_err(|e| NativeError::Map("monitor area", e))?;
        let map = |addr: usize, offset: u32, len: u32, prot: i32, fixed: bool| -> Result<*mut u8, NativeError> {
            let flags = libc::MAP_SHARED | if fixed { libc::MAP_FIXED } else { 0 };
            // SAFETY: fixed mappings target the monitor area inside our own
            // reservation; the non-fixed alias lets the kernel choose. The
            // memfd is MONITOR_SIZE bytes long, covering offset + len.
            let p = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, prot, flags, fd, offset as libc::off_t) };
            if p == libc::MAP_FAILED {
                Err(NativeError::Map("monitor area", io::Error::last_os_error()))
            } else {
                Ok(p as *mut u8)
            }
        };
        let base = MONITOR_BASE as usize;
        // The VCPU page: read and written by translated code through gs:.
        map(base, 0, STUB_PAGE, libc::PROT_READ | libc::PROT_WRITE, true)?;
        // The stub page, the IB table and the TC: executable and readable,
        // never writable at this address.
        map(base + STUB_PAGE as usize, STUB_PAGE, MONITOR_SIZE - STUB_PAGE, libc::PROT_READ | libc::PROT_EXEC, true)?;
        let alias = map(0, 0, MONITOR_SIZE, libc::PROT_READ | libc::PROT_WRITE, false)?;
        self.monitor_alias = NonNull::new(alias).ok_or(NativeError::Map("monitor area", io::Error::other("null alias")))?;
        let _ = TC_START;
        Ok(())
    }

    pub fn ram_size(&self) -> u32 {
        self.ram_size
    }

    /// Write access to the monitor area, for the translator and the world
    /// switch setup.
    pub fn monitor(&mut self) -> MonitorView<'_> {
        MonitorView { space: self }
    }

    /// Makes guest RAM executable (for running guest code directly, without
    /// translation, as a reference) or not.
    pub fn set_ram_executable(&mut self, exec: bool) -> io::Result<()> {
        let prot = libc::PROT_READ | libc::PROT_WRITE | if exec { libc::PROT_EXEC } else { 0 };
        // SAFETY: the range is the guest RAM mapping this object created.
        let r = unsafe { libc::mprotect(LOW as *mut libc::c_void, self.ram_size as usize - LOW, prot) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes guest page `page` (a frame number inside RAM) read-only or
    /// writable again, for self-modifying-code detection.
    pub fn protect_page(&mut self, page: u32, writable: bool) -> io::Result<()> {
        let addr = (page as usize) * PAGE;
        if addr < LOW || addr + PAGE > self.ram_size as usize {
            return Ok(());
        }
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: the page lies inside the guest RAM mapping we created;
        // changing its protection cannot affect memory Rust code holds
        // references to (the machine reaches RAM through its own mapping).
        let r = unsafe { libc::mprotect(addr as *mut libc::c_void, PAGE, prot) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads a u32 field of the VCPU page.
    pub fn vcpu_read(&self, offset: u32) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.alias_slice(offset, 4));
        u32::from_le_bytes(b)
    }

    pub fn vcpu_read_u64(&self, offset: u32) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.alias_slice(offset, 8));
        u64::from_le_bytes(b)
    }

    /// Writes into the monitor area at `offset` (through the writable alias).
    pub fn monitor_write(&mut self, offset: u32, bytes: &[u8]) {
        self.alias_slice_mut(offset, bytes.len()).copy_from_slice(bytes);
    }

    pub fn vcpu_write(&mut self, offset: u32, bytes: &[u8]) {
        self.alias_slice_mut(offset, bytes.len()).copy_from_slice(bytes);
    }

    /// Reads `len` bytes of the monitor area (for disassembling the TC).
    pub fn monitor_bytes(&self, offset: u32, len: usize) -> &[u8] {
        self.alias_slice(offset, len)
    }

    fn alias_slice(&self, offset: u32, len: usize) -> &[u8] {
        assert!(offset as usize + len <= MONITOR_SIZE as usize, "monitor access out of range");
        // SAFETY: the alias maps MONITOR_SIZE bytes for the life of `self`;
        // the range is checked above. Translated code writes the same memory
        // only while the guest runs, never while the monitor holds this slice.
        unsafe { std::slice::from_raw_parts(self.monitor_alias.as_ptr().add(offset as usize), len) }
    }

    fn alias_slice_mut(&mut self, offset: u32, len: usize) -> &mut [u8] {
        assert!(offset as usize + len <= MONITOR_SIZE as usize, "monitor access out of range");
        // SAFETY: as in `alias_slice`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.monitor_alias.as_ptr().add(offset as usize), len) }
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // SAFETY: both ranges are mappings this object created; nothing
        // refers to them after drop (the machine's RAM view is separate).
        unsafe {
            libc::munmap(self.monitor_alias.as_ptr() as *mut libc::c_void, MONITOR_SIZE as usize);
            libc::munmap(LOW as *mut libc::c_void, FOUR_GIB - LOW);
        }
        let _ = self.ram_fd;
    }
}

/// The translator's door into the monitor area.
pub struct MonitorView<'a> {
    space: &'a mut AddressSpace,
}

impl MonitorMemory for MonitorView<'_> {
    fn write(&mut self, offset: u32, bytes: &[u8]) {
        self.space.alias_slice_mut(offset, bytes.len()).copy_from_slice(bytes);
    }
}
