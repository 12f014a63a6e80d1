//! The virtual CPU: its architectural state and the reference semantics of
//! every instruction the translator does not run natively.
//!
//! This crate owns what the guest believes about its processor: the real
//! values of EFLAGS.IF and IOPL, the segment registers with their hidden
//! descriptor caches, GDTR/IDTR/LDTR/TR, the control and debug registers, the
//! MSRs and CPUID. It executes privileged and sensitive instructions handed
//! to it as decoded `iced_x86::Instruction`s ("callouts"), and delivers
//! exceptions and interrupts through the guest's IDT. It never knows about
//! the host: memory and ports are reached only through [`bt86_machine::Bus`].
#![forbid(unsafe_code)]

pub mod state;
pub mod alu;
pub mod emulate;
pub mod exception;
pub mod memory;
pub mod paging;
pub mod descriptor;
pub mod segment;
pub mod interrupt;
pub mod tss;
pub mod transfer;
pub mod cpuid;
pub mod operand;
pub mod exec;
#[cfg(test)]
mod test_bus;

pub use exception::{Exception, Vector};
pub use state::{Cpu, DescriptorTable, ExecStats, LinearAddr, SegReg, Segment, Selector};
