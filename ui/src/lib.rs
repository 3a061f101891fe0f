//! The admin web UI: server-rendered pages, view models and static assets that the
//! controller mounts on its HTTPS port. No IO of its own.
//!
//! The pages arrive with the web UI issue; until then the controller serves only the REST
//! API, and this crate holds the shared product name used in page titles.

/// The product name shown in page titles.
pub const PRODUCT: &str = "Postern";
