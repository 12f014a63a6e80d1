//! Architectural exceptions: guest faults, never host errors.

use std::fmt;

/// An interrupt vector number, 0-255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vector(pub u8);

impl fmt::Display for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// An exception the guest must see (SDM Vol. 3A §6.15). Selector-carrying
/// variants hold the error code the processor would push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exception {
    /// #DE, vector 0.
    DivideError,
    /// #DB, vector 1 (a trap for single-step).
    Debug,
    /// #BP, vector 3 (a trap).
    Breakpoint,
    /// #OF, vector 4 (a trap).
    Overflow,
    /// #BR, vector 5.
    BoundRange,
    /// #UD, vector 6.
    InvalidOpcode,
    /// #NM, vector 7.
    DeviceNotAvailable,
    /// #DF, vector 8, error code 0.
    DoubleFault,
    /// #TS, vector 10.
    InvalidTss(u16),
    /// #NP, vector 11.
    SegmentNotPresent(u16),
    /// #SS, vector 12.
    StackFault(u16),
    /// #GP, vector 13.
    GeneralProtection(u16),
    /// #PF, vector 14: faulting linear address (for CR2) and error code.
    PageFault { addr: u32, code: u32 },
    /// #MF, vector 16.
    FloatingPoint,
    /// #AC, vector 17, error code 0.
    AlignmentCheck,
    /// #XM, vector 19.
    SimdFloatingPoint,
}

impl Exception {
    pub fn vector(&self) -> Vector {
        Vector(match self {
            Exception::DivideError => 0,
            Exception::Debug => 1,
            Exception::Breakpoint => 3,
            Exception::Overflow => 4,
            Exception::BoundRange => 5,
            Exception::InvalidOpcode => 6,
            Exception::DeviceNotAvailable => 7,
            Exception::DoubleFault => 8,
            Exception::InvalidTss(_) => 10,
            Exception::SegmentNotPresent(_) => 11,
            Exception::StackFault(_) => 12,
            Exception::GeneralProtection(_) => 13,
            Exception::PageFault { .. } => 14,
            Exception::FloatingPoint => 16,
            Exception::AlignmentCheck => 17,
            Exception::SimdFloatingPoint => 19,
        })
    }

    /// The error code pushed on the handler's stack, if this exception has one.
    pub fn error_code(&self) -> Option<u32> {
        match *self {
            Exception::DoubleFault | Exception::AlignmentCheck => Some(0),
            Exception::InvalidTss(c)
            | Exception::SegmentNotPresent(c)
            | Exception::StackFault(c)
            | Exception::GeneralProtection(c) => Some(u32::from(c)),
            Exception::PageFault { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Short mnemonic, as in the SDM: "#GP".
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Exception::DivideError => "#DE",
            Exception::Debug => "#DB",
            Exception::Breakpoint => "#BP",
            Exception::Overflow => "#OF",
            Exception::BoundRange => "#BR",
            Exception::InvalidOpcode => "#UD",
            Exception::DeviceNotAvailable => "#NM",
            Exception::DoubleFault => "#DF",
            Exception::InvalidTss(_) => "#TS",
            Exception::SegmentNotPresent(_) => "#NP",
            Exception::StackFault(_) => "#SS",
            Exception::GeneralProtection(_) => "#GP",
            Exception::PageFault { .. } => "#PF",
            Exception::FloatingPoint => "#MF",
            Exception::AlignmentCheck => "#AC",
            Exception::SimdFloatingPoint => "#XM",
        }
    }

    /// Whether the exception belongs to the "contributory" class used by the
    /// double-fault rules (SDM Vol. 3A Table 6-5).
    pub fn is_contributory(&self) -> bool {
        matches!(
            self,
            Exception::DivideError
                | Exception::InvalidTss(_)
                | Exception::SegmentNotPresent(_)
                | Exception::StackFault(_)
                | Exception::GeneralProtection(_)
        )
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_code() {
            Some(code) => write!(f, "{}({:#x})", self.mnemonic(), code),
            None => f.write_str(self.mnemonic()),
        }
    }
}
