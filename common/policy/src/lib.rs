//! The policy decision: given a user, their device and its latest posture report, how and
//! from where they signed in, the time, and the policies of a resource, decides whether
//! the user may reach the resource and until when, or tells why not in words a person can
//! act on. Also checks a posture report against a posture profile on its own, check by
//! check. Pure: no IO, no clock, no randomness; the caller passes `now` in.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod decision;
mod posture;
mod reason;
mod schedule;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod proptests;
/// An independent reference model of the decision, for property and model-based tests (the
/// controller's among them, with the `reference` feature).
#[cfg(any(test, feature = "reference"))]
#[allow(clippy::unwrap_used)]
pub mod reference;

pub use decision::{Decision, DecisionInput, decide};
pub use posture::{CheckResult, PostureCheck, PostureOutcome, check_posture};
pub use reason::{Reason, ReasonCode};
