//! The controller's HTTPS sign-in endpoints: the device authorization flow
//! (`/api/v1/device-auth`, `/api/v1/device-auth/token`) and enrollment with a key
//! (`/api/v1/devices/enroll`).

use std::time::Duration;

use jiff::Timestamp;
use model::{DeviceId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::tls::{self, Trust};

/// Why a sign-in request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The controller could not be reached or the connection failed.
    #[error("cannot reach the controller at {url}: {message}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What happened, with TLS advice when that was the cause.
        message: String,
    },
    /// The controller answered with an error.
    #[error("the controller refused: {message} ({code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The answer was not what the protocol says.
    #[error("unexpected answer from the controller: {0}")]
    Protocol(String),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The first answer of the device authorization flow.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuth {
    /// What the daemon polls with. Never logged.
    pub device_code: String,
    /// What the user enters.
    pub user_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// The same with the code filled in.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds between polls.
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_interval() -> u64 {
    5
}

/// A device session the controller issued.
#[derive(Clone, Deserialize)]
pub struct DeviceSession {
    /// The device.
    pub device_id: DeviceId,
    /// The user.
    pub user_id: UserId,
    /// Their name.
    #[serde(default)]
    pub user_name: String,
    /// The secret. Never logged.
    pub session: String,
    /// When it ends.
    pub session_expires_at: Timestamp,
}

impl std::fmt::Debug for DeviceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSession")
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What one poll of the token endpoint said.
#[derive(Debug)]
pub enum Poll {
    /// The user approved.
    Approved(Box<DeviceSession>),
    /// Not yet.
    Pending,
    /// Poll less often.
    SlowDown,
    /// The user refused.
    Denied,
    /// The codes expired.
    Expired,
}

/// A client for the controller's sign-in endpoints.
#[derive(Debug, Clone)]
pub struct Controller {
    base: String,
    http: reqwest::Client,
}

impl Controller {
    /// A client for the controller at `base` (`https://host:port`), trusting it as `trust`
    /// says.
    pub fn new(base: &str, trust: &Trust) -> Result<Self, HttpError> {
        let config = tls::client_config(trust, &[b"http/1.1"])?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), HttpError> {
        let url = format!("{}{path}", self.base);
        let res =
            self.http
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| HttpError::Unreachable {
                    url: self.base.clone(),
                    message: tls::explain(&e)
                        .map(str::to_owned)
                        .unwrap_or_else(|| error_chain(&e)),
                })?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(|e| HttpError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| {
                HttpError::Protocol(format!("{path} answered {status} with non-JSON text"))
            })?
        };
        Ok((status, value))
    }

    /// Starts the device authorization flow for the device key `public_key`.
    pub async fn device_auth(&self, public_key: &str, name: &str) -> Result<DeviceAuth, HttpError> {
        let (status, v) = self
            .post(
                "/api/v1/device-auth",
                json!({"public_key": public_key, "name": name}),
            )
            .await?;
        parse_ok(status, v)
    }

    /// Polls once for the outcome of the device authorization flow.
    pub async fn poll_token(&self, device_code: &str) -> Result<Poll, HttpError> {
        let (status, v) = self
            .post(
                "/api/v1/device-auth/token",
                json!({"device_code": device_code}),
            )
            .await?;
        if (200..300).contains(&status) {
            return parse_ok(status, v).map(|s| Poll::Approved(Box::new(s)));
        }
        match api_error(status, &v) {
            HttpError::Api { code, .. } if code == "authorization_pending" => Ok(Poll::Pending),
            HttpError::Api { code, .. } if code == "slow_down" => Ok(Poll::SlowDown),
            HttpError::Api { code, .. } if code == "access_denied" => Ok(Poll::Denied),
            HttpError::Api { code, .. } if code == "expired_token" => Ok(Poll::Expired),
            e => Err(e),
        }
    }

    /// Enrolls the device with an enrollment key.
    pub async fn enroll(
        &self,
        enrollment_key: &str,
        name: &str,
        public_key: &str,
    ) -> Result<DeviceSession, HttpError> {
        let (status, v) = self
            .post(
                "/api/v1/devices/enroll",
                json!({"enrollment_key": enrollment_key, "name": name, "public_key": public_key}),
            )
            .await?;
        parse_ok(status, v)
    }
}

fn parse_ok<T: serde::de::DeserializeOwned>(status: u16, v: Value) -> Result<T, HttpError> {
    if !(200..300).contains(&status) {
        return Err(api_error(status, &v));
    }
    serde_json::from_value(v).map_err(|e| HttpError::Protocol(e.to_string()))
}

/// The error of a `{"error":{"code","message"}}` body.
fn api_error(status: u16, v: &Value) -> HttpError {
    let e = &v["error"];
    HttpError::Api {
        status,
        code: e["code"].as_str().unwrap_or("unknown").to_owned(),
        message: e["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}")),
    }
}

/// An error and its sources, joined.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_read() {
        let v = json!({"error": {"code": "slow_down", "field": null, "message": "poll less"}});
        match api_error(400, &v) {
            HttpError::Api { code, message, .. } => {
                assert_eq!(code, "slow_down");
                assert_eq!(message, "poll less");
            }
            e => panic!("{e}"),
        }
        let e = api_error(502, &json!("gateway"));
        assert!(e.to_string().contains("HTTP 502"), "{e}");
    }

    #[test]
    fn sessions_parse_and_hide_the_secret() {
        let v = json!({"device_id": DeviceId::new(), "user_id": UserId::new(), "user_name": "Ann",
            "session": "s3cret", "session_expires_at": "2026-11-25T14:00:00Z"});
        let s: DeviceSession = parse_ok(200, v).unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(matches!(
            parse_ok::<DeviceSession>(200, json!({"x": 1})),
            Err(HttpError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_controller_is_named() {
        let c = Controller::new("https://127.0.0.1:9", &Trust::default()).unwrap();
        let e = c.device_auth("k", "n").await.unwrap_err().to_string();
        assert!(
            e.contains("cannot reach the controller at https://127.0.0.1:9"),
            "{e}"
        );
    }
}
