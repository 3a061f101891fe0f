//! The control protocol between the controller and its gateways and clients: versioned
//! serde messages, their ALPN names ([`GATEWAY_ALPN`], [`CLIENT_ALPN`]) and their
//! length-prefixed framing on a QUIC stream ([`encode`], [`decode`]). No IO: callers hand in
//! and take out bytes, except the optional `stream` feature's reader of an async byte stream
//! (`stream::FrameReader`, on tokio), which the gateway, the client and the controller use.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes of JSON holding an
//! [`Envelope`]. A peer that speaks another major version is refused with
//! [`DecodeError::UnsupportedVersion`] rather than misread.

pub mod client;
pub mod device;
#[cfg(feature = "stream")]
pub mod stream;

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use model::{GatewayId, GrantId, PortRule, PresharedKey, WgKey};
use serde::{Deserialize, Serialize};

/// The ALPN protocol of the gateway control channel (gateway to controller).
pub const GATEWAY_ALPN: &[u8] = b"postern-control/1";

/// The ALPN protocol of the client control channel (client daemon to controller): see
/// [`client`].
pub const CLIENT_ALPN: &[u8] = b"postern-client/1";

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;

/// The largest frame accepted, in bytes (a full sync of many grants fits comfortably).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A message with the protocol version it was written in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<M> {
    /// The protocol version.
    pub v: u16,
    /// The message.
    pub msg: M,
}

/// Everything a gateway needs to serve one grant: the peer is the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSpec {
    /// The grant.
    pub id: GrantId,
    /// The device's per-application WireGuard public key (base64 on the wire).
    pub public_key: WgKey,
    /// The preshared key for this grant (base64 on the wire). Never logged.
    pub preshared_key: PresharedKey,
    /// The device's address inside the tunnel.
    pub tunnel_address: IpAddr,
    /// The destinations the grant reaches.
    pub addresses: Vec<IpNet>,
    /// The protocols and ports it reaches; empty means every TCP and UDP port and ICMP
    /// (see [`model::Admission`]).
    pub ports: Vec<PortRule>,
    /// When the gateway must drop it unless renewed.
    pub expires_at: Timestamp,
}

/// Messages from a gateway to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayMessage {
    /// First message of a fresh enrollment: the one-time token and the gateway's name.
    Enroll {
        /// The one-time token from `sites/{id}/gateway-tokens`. Never logged.
        token: String,
        /// The gateway's name.
        name: String,
    },
    /// First message of every later connection.
    Hello {
        /// The durable credential from enrollment. Never logged.
        credential: String,
        /// The gateway's WireGuard public key (base64).
        public_key: String,
        /// The UDP endpoint clients should use (`host:port`).
        endpoint: String,
    },
    /// The gateway applied everything up to `seq`.
    Ack {
        /// The sequence number acknowledged.
        seq: u64,
    },
}

/// Messages from the controller to a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControllerMessage {
    /// Enrollment succeeded: keep this credential for every later connection.
    Enrolled {
        /// The gateway's id.
        gateway_id: GatewayId,
        /// The durable credential. Never logged.
        credential: String,
    },
    /// The complete set of grants: converge to exactly this.
    FullSync {
        /// Sequence number to acknowledge.
        seq: u64,
        /// Every live grant of this gateway.
        grants: Vec<GrantSpec>,
    },
    /// One new or renewed grant.
    GrantAdded {
        /// Sequence number to acknowledge.
        seq: u64,
        /// The grant.
        grant: GrantSpec,
    },
    /// One grant to drop now, with its connection state.
    GrantRevoked {
        /// Sequence number to acknowledge.
        seq: u64,
        /// The grant.
        id: GrantId,
    },
    /// The connection is refused.
    Refused {
        /// Why, in words an operator can act on.
        reason: String,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The announced length exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The peer speaks another protocol version.
    #[error("the peer speaks protocol version {0}, this build speaks {VERSION}")]
    UnsupportedVersion(u16),
}

/// Encodes `msg` as one frame appended to `out`.
pub fn encode<M: Serialize>(msg: &M, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Serializing to a Vec only fails for maps with non-string keys, which no message has.
    let _ = serde_json::to_writer(&mut *out, &Envelope { v: VERSION, msg });
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Reads one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the message and the number of bytes it used.
pub fn decode<M: serde::de::DeserializeOwned>(
    buf: &[u8],
) -> Result<Option<(M, usize)>, DecodeError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME {
        return Err(DecodeError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Version {
        v: u16,
    }
    let Version { v } = serde_json::from_slice(body)?;
    if v != VERSION {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    let env: Envelope<M> = serde_json::from_slice(body)?;
    Ok(Some((env.msg, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> GrantSpec {
        GrantSpec {
            id: GrantId::new(),
            public_key: WgKey::from([7; 32]),
            preshared_key: PresharedKey::from([9; 32]),
            tunnel_address: "100.64.0.2".parse().unwrap(),
            addresses: vec!["10.0.5.20/32".parse().unwrap()],
            ports: vec!["tcp/22".parse().unwrap()],
            expires_at: "2026-11-25T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn round_trips_in_pieces() {
        let msgs = vec![
            ControllerMessage::FullSync {
                seq: 1,
                grants: vec![grant()],
            },
            ControllerMessage::GrantRevoked {
                seq: 2,
                id: GrantId::new(),
            },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            encode(m, &mut buf);
        }
        // A partial frame asks for more.
        assert!(decode::<ControllerMessage>(&buf[..3]).unwrap().is_none());
        assert!(decode::<ControllerMessage>(&buf[..10]).unwrap().is_none());
        let (first, used) = decode::<ControllerMessage>(&buf).unwrap().unwrap();
        let (second, used2) = decode::<ControllerMessage>(&buf[used..]).unwrap().unwrap();
        assert_eq!(vec![first, second], msgs);
        assert_eq!(used + used2, buf.len());
    }

    /// A message exactly as the controller writes it (keys as base64 text).
    const GRANT_ADDED: &str = concat!(
        r#"{"v":1,"msg":{"type":"grant_added","seq":2,"grant":{"#,
        r#""id":"01936a5e-8f00-7000-8000-000000000001","#,
        r#""public_key":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","#,
        r#""preshared_key":"CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=","#,
        r#""tunnel_address":"100.64.0.2","addresses":["10.0.5.20/32"],"ports":["tcp/22"],"#,
        r#""expires_at":"2026-11-25T10:00:00Z"}}}"#
    );

    fn frame(body: &str) -> Vec<u8> {
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(body.as_bytes());
        buf
    }

    #[test]
    fn typed_keys_keep_the_wire_format_byte_for_byte() {
        let (msg, _) = decode::<ControllerMessage>(&frame(GRANT_ADDED))
            .unwrap()
            .unwrap();
        let ControllerMessage::GrantAdded { grant, .. } = &msg else {
            panic!("{msg:?}");
        };
        assert_eq!(grant.public_key.to_bytes()[0], 0xc5);
        assert_eq!(grant.preshared_key, PresharedKey::from([9; 32]));
        let mut again = Vec::new();
        encode(&msg, &mut again);
        assert_eq!(again, frame(GRANT_ADDED));
    }

    #[test]
    fn a_malformed_key_is_a_malformed_message_that_does_not_show_the_key() {
        for (field, bad) in [("public_key", "c2VjcmV0"), ("preshared_key", "c2VjcmV0")] {
            let good = if field == "public_key" {
                "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
            } else {
                "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk="
            };
            let body = GRANT_ADDED.replace(good, bad);
            let err = decode::<ControllerMessage>(&frame(&body)).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, DecodeError::Malformed(_)), "{text}");
            assert!(text.contains("key: 6 bytes of base64"), "{text}");
            assert!(!text.contains(bad), "{text}");
        }
    }

    #[test]
    fn refuses_other_versions() {
        let body = br#"{"v":2,"msg":{"type":"ack","seq":1}}"#;
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(body);
        assert!(matches!(
            decode::<GatewayMessage>(&buf),
            Err(DecodeError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn refuses_oversized_and_malformed_frames() {
        let buf = u32::MAX.to_be_bytes();
        assert!(matches!(
            decode::<GatewayMessage>(&buf),
            Err(DecodeError::TooLarge(_))
        ));
        let body = br#"{"v":1,"msg":{"type":"launch_missiles"}}"#;
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(body);
        assert!(matches!(
            decode::<GatewayMessage>(&buf),
            Err(DecodeError::Malformed(_))
        ));
    }
}
