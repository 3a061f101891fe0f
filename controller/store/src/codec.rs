//! How values are stored in columns: times as BIGINT milliseconds, flags as BIGINT, ids as
//! TEXT, structures as JSON in TEXT.

use jiff::Timestamp;
use serde::Serialize;

use crate::StoreError;

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn opt_ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(ms)
}

/// A stored millisecond time.
pub(crate) fn ts(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A stored optional millisecond time.
pub(crate) fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(ts)
}

/// A stored id, or a clear error naming the table.
pub(crate) fn id<T: std::str::FromStr>(table: &'static str, s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt {
        table,
        message: format!("bad id `{s}`"),
    })
}

pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    // Serializing our own model types to JSON cannot fail: they hold no maps with
    // non-string keys and no failing Serialize impls.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}
