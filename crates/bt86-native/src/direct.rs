//! Running guest code directly, without translation.
//!
//! Benchmarks compare translated execution with the same code run natively
//! in compatibility mode, and the differential tests compare register and
//! memory results of the two. Both need the reference: this module calls a
//! guest function at its guest address through the same world switch, with
//! guest RAM made executable for the duration. Only unprivileged code may be
//! called this way: nothing checks it, which is exactly why guests never run
//! like this.

use bt86_translate::layout::vcpu;
use bt86_translate::ExitId;

use crate::{NativeError, Vm};

/// How a direct call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectOutcome {
    /// The code returned to the return stub.
    Returned,
    /// The code faulted: host trap number and the guest address (RIP).
    Faulted { trapno: u32, eip: u32 },
}

impl Vm {
    /// Calls the guest code at `eip` natively with the current guest
    /// registers, after pushing a return address that leads back here.
    /// Making RAM executable drops the write protection of code pages, so
    /// this also discards every translation.
    pub fn call_direct(&mut self, eip: u32) -> Result<DirectOutcome, NativeError> {
        self.flush_translations()?;
        self.prepare_direct_call()?;
        self.space_mut().set_ram_executable(true).map_err(NativeError::Protect)?;
        let result = self.enter_at(eip);
        self.space_mut().set_ram_executable(false).map_err(NativeError::Protect)?;
        result?;
        let id = ExitId(self.space_ref().vcpu_read(vcpu::EXIT_ID));
        Ok(if id == ExitId::DIRECT_RETURN {
            DirectOutcome::Returned
        } else {
            let trapno = self.space_ref().vcpu_read(vcpu::FAULT_TRAPNO);
            let eip = self.space_ref().vcpu_read_u64(vcpu::FAULT_RIP) as u32;
            DirectOutcome::Faulted { trapno, eip }
        })
    }
}
