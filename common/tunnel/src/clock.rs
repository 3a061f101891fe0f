//! Feeds the caller's `now` into boringtun's clock.
//!
//! boringtun reads `Instant::now()` inside its timers, handshakes and rate limiter. Built with
//! its `mock-instant` feature, that clock is `mock_instant::MockClock`, a thread-local
//! duration that only moves when set. Every entry point of the cores calls [`sync`] first,
//! so boringtun sees exactly the `now` the caller passed, in production as in simulations.
//! The clock only ever moves forward: boringtun panics if time goes backwards.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mock_instant::MockClock;

/// The instant that maps to boringtun's clock reading `EPOCH_OFFSET`.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Room before the first `now` seen, so that callers (e.g. tests on other threads) whose
/// first instant is a little older than another's still map to distinct, increasing times.
const EPOCH_OFFSET: Duration = Duration::from_secs(3600);

/// Sets boringtun's clock on this thread to `now`, unless it already reads later.
pub(crate) fn sync(now: Instant) {
    let epoch = *EPOCH.get_or_init(|| now);
    let mapped = match now.checked_duration_since(epoch) {
        Some(after) => EPOCH_OFFSET + after,
        None => EPOCH_OFFSET.saturating_sub(epoch.duration_since(now)),
    };
    if mapped > MockClock::time() {
        MockClock::set_time(mapped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_forward() {
        let t0 = Instant::now();
        sync(t0 + Duration::from_secs(10));
        let a = MockClock::time();
        sync(t0);
        assert_eq!(MockClock::time(), a);
        sync(t0 + Duration::from_secs(11));
        assert_eq!(MockClock::time(), a + Duration::from_secs(1));
    }
}
