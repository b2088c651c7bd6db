//! The clock port: where "now" comes from.
//!
//! Timestamps decide visibility, leases and `position_at`; injecting the clock
//! lets tests move time by hand instead of sleeping.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Converts a [`SystemTime`]; times before the epoch become negative.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    /// Converts to a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }

    /// How long after `earlier` this is; zero when it is not after it.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0).unsigned_abs())
    }

    /// This timestamp moved forward by `d` (saturating).
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-21T10:00:00.000001Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_micros(self.to_system_time())
        )
    }
}

impl std::str::FromStr for Timestamp {
    type Err = humantime::TimestampError;
    /// Parses RFC 3339 (`2026-11-21T10:00:00Z`, fractional seconds optional).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_rfc3339_weak(s).map(Self::from_system_time)
    }
}

/// A future that completes when a clock reaches a time.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the current time comes from, and how to wait for a time.
///
/// Visibility timeouts, delays and long polls wait on the clock rather than
/// on the runtime's timer, so a test that moves a [`ManualClock`] moves them
/// too.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes once [`Clock::now`] is at or after `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;
}

/// The operating system's wall clock; waits on the tokio timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        Box::pin(async move {
            // Sleep, then re-check: the wall clock may be stepped meanwhile.
            loop {
                let left = deadline.duration_since(SystemClock.now());
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left).await;
            }
        })
    }
}

/// A clock that moves only when told to; for tests.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::{Clock, ManualClock, Timestamp};
/// let clock = ManualClock::new(Timestamp::from_micros(10));
/// clock.advance(Duration::from_micros(5));
/// assert_eq!(clock.now(), Timestamp::from_micros(15));
/// ```
///
/// Sleepers wake when the clock is moved past their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<watch::Sender<Timestamp>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(Timestamp::EPOCH)
    }
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(watch::Sender::new(start)))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.send_modify(|t| *t = t.saturating_add(d));
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.borrow()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let mut time = self.0.subscribe();
        Box::pin(async move {
            // The sender lives as long as this receiver's clock, so
            // `wait_for` fails only if the clock is gone: then never wake.
            if time.wait_for(|now| *now >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_through_rfc3339() {
        let t = Timestamp::from_micros(1_763_719_200_123_456);
        let text = t.to_string();
        assert_eq!(text, "2025-11-21T10:00:00.123456Z");
        assert_eq!(text.parse::<Timestamp>().unwrap(), t);
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_moved_past_their_deadline() {
        let c = ManualClock::new(Timestamp::from_micros(0));
        let sleeper = tokio::spawn(c.sleep_until(Timestamp::from_micros(1_000)));
        c.advance(Duration::from_micros(999));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        c.advance(Duration::from_micros(1));
        sleeper.await.unwrap();
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(Timestamp::from_micros(100));
        assert_eq!(c.now(), c.now());
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now().as_micros(), 1_000_100);
    }
}
