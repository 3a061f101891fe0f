//! The policy decision. Pure: no IO, no clock.
