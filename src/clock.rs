//! The one place that reads the wall clock. Everything else takes `now` as a parameter (or a
//! `Clock`), so expiry, leeway and back-off are tested exactly, without sleeping.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
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

/// A clock that says what it is told: for tests.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock stopped at `now` (Unix seconds).
    pub fn at(now: UnixSeconds) -> Self {
        Self(AtomicI64::new(now * 1000))
    }

    /// Moves the clock to `now` (Unix milliseconds).
    pub fn set_millis(&self, now: UnixMillis) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward by `millis`.
    pub fn advance_millis(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_millis(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst)
    }
}
