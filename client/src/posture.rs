//! Posture reporting: the daemon collects the device's posture with the `posture` crate on a
//! blocking thread, and sends a report signed with the device key whenever anything
//! changed and at least every interval the controller asked for. Access requests carry the
//! latest report, signed afresh.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use model::{DeviceId, PostureReport};
use proto::device::{DeviceKey, SignedReport};

/// How often the daemon looks at the device's posture (changes are sent at once).
pub const COLLECT_EVERY: Duration = Duration::from_secs(2);

/// What one collection found, with why each check came out as it did.
pub type Collected = posture::Collected;

/// Collects, signs and decides when to send posture reports for one device.
#[derive(Debug)]
pub struct Reporter {
    key: DeviceKey,
    device: DeviceId,
    probe: posture::Probe,
    interval: Duration,
    last: Option<Collected>,
    last_sent: Option<(Instant, PostureReport)>,
    seq: u64,
}

/// Two reports say the same when only their collection time differs.
fn same(a: &PostureReport, b: &PostureReport) -> bool {
    PostureReport {
        collected_at: b.collected_at,
        ..a.clone()
    } == *b
}

impl Reporter {
    /// A reporter for `device`, looking for `processes`, sending at least every `interval`.
    pub fn new(
        key: DeviceKey,
        device: DeviceId,
        processes: Vec<String>,
        interval: Duration,
    ) -> Self {
        Self {
            key,
            device,
            probe: posture::Probe::system(env!("CARGO_PKG_VERSION"), processes),
            interval,
            last: None,
            last_sent: None,
            seq: 0,
        }
    }

    /// The probe settings, for a collection on a blocking thread.
    pub fn probe(&self) -> posture::Probe {
        self.probe.clone()
    }

    /// The latest collection, for `postern status`.
    pub fn latest(&self) -> Option<&Collected> {
        self.last.as_ref()
    }

    /// Records a collection; returns the signed report to send now, if one is due: the
    /// posture changed since the last report sent, or the interval passed.
    pub fn observe(&mut self, collected: Collected, now: Instant) -> Option<SignedReport> {
        let report = collected.report.clone();
        self.last = Some(collected);
        let due = match &self.last_sent {
            None => true,
            Some((at, sent)) => !same(sent, &report) || now.duration_since(*at) >= self.interval,
        };
        if !due {
            return None;
        }
        self.last_sent = Some((now, report.clone()));
        Some(self.sign(report))
    }

    /// The latest report signed afresh, to go with an access request.
    pub fn for_request(&mut self) -> Option<SignedReport> {
        let report = self.last.as_ref()?.report.clone();
        Some(self.sign(report))
    }

    /// Signs with a sequence number above every earlier one, also across restarts (the
    /// controller refuses a number it has seen): the wall clock in milliseconds, or one
    /// more than the last.
    fn sign(&mut self, report: PostureReport) -> SignedReport {
        let clock = u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0);
        self.seq = clock.max(self.seq + 1);
        self.key.sign_report(self.device, self.seq, report)
    }
}

/// Collects the device's posture on a blocking thread.
pub async fn collect(probe: posture::Probe) -> Option<Collected> {
    tokio::task::spawn_blocking(move || posture::collect_detailed(&probe, Timestamp::now()))
        .await
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::CheckState;

    fn collected(firewall: CheckState) -> Collected {
        let mut c = posture::collect_detailed(
            &posture::Probe {
                root: std::path::PathBuf::from("/nonexistent"),
                nft: None,
                nft_timeout: Duration::from_secs(1),
                required_processes: vec![],
                client_version: "0.1.0".into(),
            },
            Timestamp::now(),
        );
        c.report.firewall = firewall;
        c
    }

    #[test]
    fn reports_go_out_on_change_and_on_interval_only() {
        let key = DeviceKey::generate();
        let device = DeviceId::new();
        let mut r = Reporter::new(key.clone(), device, vec![], Duration::from_secs(30));
        let t0 = Instant::now();
        let first = r.observe(collected(CheckState::Pass), t0).unwrap();
        assert!(
            r.observe(collected(CheckState::Pass), t0 + Duration::from_secs(2))
                .is_none()
        );
        let changed = r
            .observe(collected(CheckState::Fail), t0 + Duration::from_secs(4))
            .unwrap();
        assert!(changed.seq > first.seq);
        assert!(
            r.observe(collected(CheckState::Fail), t0 + Duration::from_secs(6))
                .is_none()
        );
        let periodic = r
            .observe(collected(CheckState::Fail), t0 + Duration::from_secs(35))
            .unwrap();
        assert!(periodic.seq > changed.seq);
        let with_request = r.for_request().unwrap();
        assert!(with_request.seq > periodic.seq);
        let report = with_request
            .verify(
                &key.public_key(),
                device,
                Timestamp::now(),
                jiff::SignedDuration::from_mins(1),
            )
            .unwrap();
        assert_eq!(report.firewall, CheckState::Fail);
    }
}
