//! The admin web UI: server-rendered pages (askama templates compiled into the binary), the
//! view models they show, and the static CSS and JavaScript they load. The controller fills
//! the view models from its application services and serves the rendered HTML; this crate
//! does no IO.
//!
//! Pages never carry inline script or style: the strict Content-Security-Policy the
//! controller sends allows only the files under [`assets`].

pub mod assets;
mod format;
mod forms;
mod pager;
mod pages;

pub use askama::Template;
pub use format::{ago, datetime, duration_secs, expires_in, initials, short_key};
pub use forms::{FormErrors, FormValues};
pub use pager::{Pager, paginate};
pub use pages::*;

/// The product name shown in page titles.
pub const PRODUCT: &str = "Postern";
