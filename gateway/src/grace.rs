//! How long the gateway serves its grants without its controller: the controller grace
//! (`--controller-grace`), sans IO. The data plane owns one [`Grace`], tells it when a full
//! sync from the controller was applied ([`contact`](Grace::contact)) and when the control
//! link was lost ([`lost`](Grace::lost)), passing `now`; it sleeps until
//! [`deadline`](Grace::deadline) and then asks [`poll`](Grace::poll) whether to drop every
//! grant.
//!
//! The gateway is *in contact* from a full sync until the connection that carried it ends;
//! at any other time it is *out of contact*, and it starts out of contact (a gateway that
//! starts and never reaches its controller drops whatever it holds after the grace too).
//! Connecting is not contact: a connection that says hello but never delivers a full sync
//! does not stop the clock, so neither a flapping link nor a controller that accepts but
//! never syncs can keep stale grants alive. Once the grace has run out the grants are
//! dropped once; the next full sync restores exactly the controller's set.

use std::time::{Duration, Instant};

/// The default `--controller-grace`.
pub const DEFAULT_CONTROLLER_GRACE: Duration = Duration::from_secs(10 * 60);

/// The controller grace clock. See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Grace {
    grace: Duration,
    /// Since when the gateway is out of contact; `None` while in contact.
    lost_at: Option<Instant>,
    /// Whether the grace of the current outage has run out (the grants were dropped).
    expired: bool,
}

impl Grace {
    /// A clock for `grace`, out of contact since `now`.
    pub(crate) fn new(grace: Duration, now: Instant) -> Self {
        Self {
            grace,
            lost_at: Some(now),
            expired: false,
        }
    }

    /// The configured grace.
    pub(crate) fn grace(&self) -> Duration {
        self.grace
    }

    /// A full sync from the controller was applied: in contact, the clock stops. Returns
    /// whether the grace had run out before (the grants had been dropped).
    pub(crate) fn contact(&mut self) -> bool {
        self.lost_at = None;
        std::mem::take(&mut self.expired)
    }

    /// The control link is gone (or a connection ended before its full sync). The clock
    /// starts at `now` if the gateway was in contact; an outage already under way keeps its
    /// start.
    pub(crate) fn lost(&mut self, now: Instant) {
        if self.lost_at.is_none() {
            self.lost_at = Some(now);
        }
    }

    /// Whether the gateway is in contact with the controller.
    #[cfg(test)]
    pub(crate) fn in_contact(&self) -> bool {
        self.lost_at.is_none()
    }

    /// Whether the grace of the current outage has run out.
    pub(crate) fn expired(&self) -> bool {
        self.expired
    }

    /// When the grace runs out: `None` while in contact, once it has run out for this outage,
    /// or if it is too long to be represented.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.expired {
            return None;
        }
        self.lost_at?.checked_add(self.grace)
    }

    /// Whether the grants must be dropped now: true exactly once per outage, at or after its
    /// deadline.
    pub(crate) fn poll(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(deadline) if now >= deadline => {
                self.expired = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_gateway_that_never_reaches_its_controller_drops_after_the_grace() {
        let t0 = Instant::now();
        let mut g = Grace::new(10 * S, t0);
        assert!(!g.in_contact());
        assert_eq!(g.deadline(), Some(t0 + 10 * S));
        assert!(!g.poll(t0));
        assert!(!g.poll(t0 + 10 * S - Duration::from_millis(1)));
        assert!(g.poll(t0 + 10 * S));
        assert!(g.expired());
        // Once per outage.
        assert_eq!(g.deadline(), None);
        assert!(!g.poll(t0 + 100 * S));
    }

    #[test]
    fn contact_stops_the_clock_and_loss_restarts_it() {
        let t0 = Instant::now();
        let mut g = Grace::new(10 * S, t0);
        assert!(!g.contact());
        assert!(g.in_contact());
        assert_eq!(g.deadline(), None);
        assert!(!g.poll(t0 + 1000 * S));

        let lost = t0 + 1000 * S;
        g.lost(lost);
        assert_eq!(g.deadline(), Some(lost + 10 * S));
        // Further losses (reconnects that fail before a full sync) keep the outage's start.
        g.lost(lost + 5 * S);
        g.lost(lost + 9 * S);
        assert_eq!(g.deadline(), Some(lost + 10 * S));
        assert!(!g.poll(lost + 9 * S));
        assert!(g.poll(lost + 10 * S));

        // The next full sync reports that the grants had been dropped, once.
        assert!(g.contact());
        assert!(!g.expired());
        assert!(!g.contact());

        // A new outage gets a full grace again.
        let again = lost + 50 * S;
        g.lost(again);
        assert!(!g.poll(again + 9 * S));
        assert!(g.poll(again + 10 * S));
    }

    #[test]
    fn a_short_outage_keeps_the_grants() {
        let t0 = Instant::now();
        let mut g = Grace::new(10 * S, t0);
        g.contact();
        g.lost(t0 + S);
        assert!(!g.poll(t0 + 10 * S));
        g.contact();
        assert!(!g.poll(t0 + 11 * S));
        assert!(!g.poll(t0 + 1000 * S));
    }

    #[test]
    fn zero_drops_at_once() {
        let t0 = Instant::now();
        let mut g = Grace::new(Duration::ZERO, t0);
        assert!(g.poll(t0));
        g.contact();
        let lost = t0 + 3 * S;
        g.lost(lost);
        assert_eq!(g.deadline(), Some(lost));
        assert!(g.poll(lost));
    }

    #[test]
    fn an_unrepresentable_grace_never_runs_out() {
        let t0 = Instant::now();
        let mut g = Grace::new(Duration::MAX, t0);
        assert_eq!(g.deadline(), None);
        assert!(!g.poll(t0 + 1_000_000 * S));
    }
}
