//! The one place that reads the wall clock. Everything else takes `now` as a parameter (or a
//! `Clock`), so expiry, leeway and back-off are tested exactly, without sleeping.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Seconds since the Unix epoch, the unit of JWT `iat`/`exp`.
pub type UnixSeconds = i64;
/// Milliseconds since the Unix epoch, the unit of login back-off.
pub type UnixMillis = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time in Unix milliseconds.
    fn now_millis(&self) -> UnixMillis;

    /// The current time in Unix seconds.
    fn now(&self) -> UnixSeconds {
        self.now_millis().div_euclid(1000)
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> UnixMillis {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to: tests hand it to the app, then step over back-off
/// delays, expiries and staleness instead of sleeping.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock stopped at `now` (Unix seconds).
    pub fn at(now: UnixSeconds) -> Self {
        Self(AtomicI64::new(now.saturating_mul(1000)))
    }

    /// A clock stopped at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self(AtomicI64::new(SystemClock.now_millis()))
    }

    /// Moves the clock to `now` (Unix milliseconds).
    pub fn set_millis(&self, now: UnixMillis) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_700_000_000);
        assert_eq!(clock.now(), 1_700_000_000);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_millis(), 1_700_000_001_500);
        assert_eq!(clock.now(), 1_700_000_001);
        clock.set_millis(-1);
        assert_eq!(clock.now(), -1, "seconds round down, also before 1970");
    }
}
