//! A tiny in-memory [`Bus`] for unit tests: a flat vector of RAM starting at
//! physical address 0, a table of port values to read, and a log of every
//! port write. It owns nothing the real machine has (no devices, no MMIO);
//! tests use it to watch exactly what the virtual CPU did to memory and
//! ports.

use std::collections::HashMap;

use bt86_machine::{Bus, GuestPhysAddr, IoSize};

#[derive(Clone, Debug, Default)]
pub struct TestBus {
    pub ram: Vec<u8>,
    /// Values returned by `io_in`, per port; unlisted ports read all-ones.
    pub port_values: HashMap<u16, u32>,
    /// Every `io_in` in order: (port, size).
    pub port_reads: Vec<(u16, IoSize)>,
    /// Every `io_out` in order: (port, size, value).
    pub port_writes: Vec<(u16, IoSize, u32)>,
}

impl TestBus {
    /// A bus with `size` bytes of zeroed RAM.
    pub fn new(size: usize) -> TestBus {
        TestBus { ram: vec![0; size], ..TestBus::default() }
    }

    pub fn write_u16(&mut self, addr: u32, value: u16) {
        self.write_phys(GuestPhysAddr(addr), &value.to_le_bytes());
    }

    pub fn write_u32(&mut self, addr: u32, value: u32) {
        self.write_phys(GuestPhysAddr(addr), &value.to_le_bytes());
    }

    pub fn write_u64(&mut self, addr: u32, value: u64) {
        self.write_phys(GuestPhysAddr(addr), &value.to_le_bytes());
    }

    /// Writes `descriptors` as a GDT at `base` and points `cpu.gdtr` at it.
    pub fn install_gdt(&mut self, cpu: &mut crate::Cpu, base: u32, descriptors: &[u64]) {
        for (i, raw) in descriptors.iter().enumerate() {
            self.write_u64(base + 8 * i as u32, *raw);
        }
        cpu.gdtr = crate::state::DescriptorTable { base, limit: (descriptors.len() * 8 - 1) as u16 };
    }

    pub fn read_u16(&mut self, addr: u32) -> u16 {
        let mut b = [0; 2];
        self.read_phys(GuestPhysAddr(addr), &mut b);
        u16::from_le_bytes(b)
    }

    pub fn read_u32(&mut self, addr: u32) -> u32 {
        let mut b = [0; 4];
        self.read_phys(GuestPhysAddr(addr), &mut b);
        u32::from_le_bytes(b)
    }

    pub fn read_u64(&mut self, addr: u32) -> u64 {
        let mut b = [0; 8];
        self.read_phys(GuestPhysAddr(addr), &mut b);
        u64::from_le_bytes(b)
    }
}

impl Bus for TestBus {
    fn read_phys(&mut self, addr: GuestPhysAddr, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr.0 as usize + i;
            *b = self.ram.get(a).copied().unwrap_or(0xFF);
        }
    }

    fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = addr.0 as usize + i;
            if let Some(slot) = self.ram.get_mut(a) {
                *slot = *b;
            }
        }
    }

    fn io_in(&mut self, port: u16, size: IoSize) -> u32 {
        self.port_reads.push((port, size));
        self.port_values.get(&port).copied().unwrap_or(size.all_ones()) & size.all_ones()
    }

    fn io_out(&mut self, port: u16, size: IoSize, value: u32) {
        self.port_writes.push((port, size, value));
    }
}
