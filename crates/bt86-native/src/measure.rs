//! Measuring the world switch on its own.
//!
//! A callout costs one round trip through the world switch plus the work
//! the monitor does between exit and re-entry (decode the exit, run the
//! instruction on bt86-cpu, find the next unit). To know which of the two
//! dominates, the benchmarks need the first one alone: this module enters
//! the translation cache at the direct-return exit stub, which does nothing
//! but store its exit id and far-jump back, so a trip is exactly one
//! `bt86_world_enter` and one landing (brief §4.3). It owns no guest
//! semantics and changes no guest state: the guest registers go in and come
//! back out unchanged, and guest memory is never touched.

use std::time::{Duration, Instant};

use bt86_translate::layout::{vcpu, MONITOR_BASE};
use bt86_translate::ExitId;

use crate::{switch, NativeError, Vm};

impl Vm {
    /// Makes `count` bare world-switch round trips (64-bit monitor to
    /// 32-bit compatibility mode and straight back) and returns the time
    /// they took together. The first trip, through the ordinary entry path,
    /// sets up the shadow selectors and the guest registers in the VCPU
    /// page and is not timed; the timed ones repeat only the switch itself.
    pub fn time_world_switches(&mut self, count: u32) -> Result<Duration, NativeError> {
        let stub = self.translation_cache().direct_return().0;
        self.enter_at(stub)?;
        self.check_direct_return("the untimed first trip")?;
        let t0 = Instant::now();
        for _ in 0..count {
            // SAFETY: `enter_at` above has just entered and left through the
            // same VCPU page: the shadow selectors are installed and synced,
            // the far pointers and the landing pad are in place, the fault
            // handlers and this thread's alternate stack are installed (by
            // `Vm::new`), and ENTRY_TARGET still names the direct-return
            // stub inside the TC. The stub touches no guest register and no
            // guest memory, so the saved guest state stays valid.
            unsafe { switch::bt86_world_enter(u64::from(MONITOR_BASE)) };
        }
        let elapsed = t0.elapsed();
        self.check_direct_return("the timed trips")?;
        Ok(elapsed)
    }

    /// Confirms that the last exit came from the direct-return stub, so
    /// that a measurement never reports a trip that went somewhere else.
    fn check_direct_return(&self, what: &str) -> Result<(), NativeError> {
        let id = ExitId(self.space_ref().vcpu_read(vcpu::EXIT_ID));
        if id == ExitId::DIRECT_RETURN {
            Ok(())
        } else {
            Err(NativeError::Internal(format!(
                "timing the world switch: {what} ended with exit id {} instead of the direct-return stub; the measurement is void",
                id.0
            )))
        }
    }
}
