//! Virtual time as the timer devices see it: nanoseconds since the VM
//! started, and the conversions between them and the ticks of a device's
//! input clock.
//!
//! This module owns only arithmetic. It never reads a clock: the run loop
//! passes the current virtual time to `Machine::advance_to`, and every
//! device computes its counters from that number, so a test can drive a
//! device through an hour of guest time in microseconds of host time, and
//! the same inputs always give the same interrupts.
//!
//! Counting ticks from a fixed origin (the moment a counter was loaded)
//! rather than adding up rounded intervals keeps long runs exact: after
//! one second of virtual time a 1 193 182 Hz clock has ticked exactly
//! 1 193 182 times, whether the time arrived in one step or a million.

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// How many whole ticks of a `hz` clock fit in `ns` nanoseconds (rounded
/// down, because a tick counts only once it has happened).
pub fn ticks_in(ns: u64, hz: u64) -> u64 {
    let ticks = u128::from(ns) * u128::from(hz) / u128::from(NANOS_PER_SEC);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The first time, in nanoseconds from the same origin, at which `ticks`
/// ticks of a `hz` clock have happened: the inverse of [`ticks_in`],
/// rounded up so that `ticks_in(nanos_for_ticks(n, hz), hz) >= n`.
/// Saturates at `u64::MAX` (about 584 years) rather than wrapping.
pub fn nanos_for_ticks(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return u64::MAX;
    }
    let hz = u128::from(hz);
    let ns = (u128::from(ticks) * u128::from(NANOS_PER_SEC)).div_ceil(hz);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_nanos_are_inverse_at_the_boundary() {
        // (clock, ticks): the PIT's input clock, the RTC's crystal, and a
        // clock that divides a second evenly.
        let cases: &[(u64, u64)] = &[
            (1_193_182, 1),
            (1_193_182, 11_932),
            (1_193_182, 1_193_182),
            (32_768, 32),
            (32_768, 16_384),
            (1000, 7),
        ];
        for &(hz, n) in cases {
            let t = nanos_for_ticks(n, hz);
            assert_eq!(ticks_in(t, hz), n, "{n} ticks of {hz} Hz at {t} ns");
            assert_eq!(ticks_in(t - 1, hz), n - 1, "one ns earlier");
        }
    }

    #[test]
    fn one_second_holds_exactly_the_clock_rate() {
        for hz in [1_193_182u64, 32_768, 1] {
            assert_eq!(ticks_in(NANOS_PER_SEC, hz), hz);
            assert_eq!(ticks_in(NANOS_PER_SEC - 1, hz), hz - 1);
        }
    }

    #[test]
    fn huge_times_saturate_instead_of_wrapping() {
        assert_eq!(nanos_for_ticks(u64::MAX, 1), u64::MAX);
        assert_eq!(nanos_for_ticks(1, 0), u64::MAX);
        assert_eq!(
            ticks_in(u64::MAX, 1_193_182),
            u64::MAX / NANOS_PER_SEC * 1_193_182 + ticks_in(u64::MAX % NANOS_PER_SEC, 1_193_182)
        );
    }
}
