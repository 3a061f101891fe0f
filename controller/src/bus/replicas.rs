//! This replica's view of the other controller replicas on the same PostgreSQL database:
//! the messages replicas tell each other, which gateways are held elsewhere (presence), and
//! the acknowledgements awaited from pushes made through another replica. No IO: the
//! `cluster` shell carries the envelopes over `LISTEN`/`NOTIFY` and hands received ones to
//! [`Cluster::receive`].
//!
//! On SQLite there is one replica and nothing is ever attached: publishing does nothing and
//! no gateway is held elsewhere.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use model::{DeviceId, GatewayId, Grant, GrantId, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use super::events::ControlEvent;
use super::gateways::Registry;

/// The PostgreSQL notification channel of the replicas.
pub(crate) const CHANNEL: &str = "postern_cluster";

/// How often a replica announces the gateways it holds.
pub(crate) const PRESENCE_INTERVAL: Duration = Duration::from_secs(2);

/// PostgreSQL refuses notification payloads of 8000 bytes or more; presence announcements
/// are split into messages of at most this many gateways.
pub(crate) const GATEWAYS_PER_MESSAGE: usize = 100;

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Message {
    /// A grant was revoked: its gateway and its device must hear of it.
    Revoked { grant: Box<Grant> },
    /// Device sessions ended (sign-out, a disabled user or device).
    SessionsEnded {
        device: Option<DeviceId>,
        user: Option<UserId>,
        reason: String,
    },
    /// The sender holds these gateways' control connections (renewed periodically).
    Gateways { online: Vec<GatewayId> },
    /// A gateway just connected to the sender: any older connection elsewhere must close.
    Connected { gateway: GatewayId },
    /// The sender's connection of a gateway ended.
    Disconnected { gateway: GatewayId },
    /// To the gateway's replica: push this (committed) grant and answer `Acked`.
    Push { grant: GrantId, gateway: GatewayId },
    /// The gateway acknowledged a grant pushed for the addressee.
    Acked { grant: GrantId },
    /// Close a gateway's connection (it was disabled or deleted).
    Close { gateway: GatewayId, reason: String },
}

/// A message with its sender and, when it is for one replica only, its addressee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) from: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) to: Option<Uuid>,
    #[serde(flatten)]
    pub(crate) message: Message,
}

/// A grant another replica asks this one to push to a gateway connected here: the caller
/// reads the grant, pushes it and answers [`Message::Acked`] to `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushRequest {
    pub(crate) from: Uuid,
    pub(crate) grant: GrantId,
    pub(crate) gateway: GatewayId,
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    replica: Uuid,
    heard: Instant,
}

/// This replica's view of the others, and its way to reach them.
#[derive(Debug)]
pub(crate) struct Cluster {
    replica: Uuid,
    outbox: OnceLock<mpsc::UnboundedSender<Envelope>>,
    /// Gateways connected to other replicas.
    elsewhere: Mutex<HashMap<GatewayId, Holder>>,
    /// Grants pushed through another replica, waiting for the gateway's acknowledgement.
    acks: Mutex<HashMap<GrantId, oneshot::Sender<()>>>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            replica: Uuid::new_v4(),
            outbox: OnceLock::new(),
            elsewhere: Mutex::default(),
            acks: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every change under these locks is a single insert or remove.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// Whether the bus runs (a PostgreSQL store, started).
    pub(crate) fn is_running(&self) -> bool {
        self.outbox.get().is_some()
    }

    /// Tells every other replica.
    pub(crate) fn publish(&self, message: Message) {
        self.send(None, message);
    }

    fn send(&self, to: Option<Uuid>, message: Message) {
        if let Some(outbox) = self.outbox.get() {
            let _ = outbox.send(Envelope {
                from: self.replica,
                to,
                message,
            });
        }
    }

    /// The replica holding `gateway`'s connection, if another one does (and said so
    /// recently).
    pub(crate) fn holder(&self, gateway: GatewayId) -> Option<Uuid> {
        let mut elsewhere = lock(&self.elsewhere);
        let holder = *elsewhere.get(&gateway)?;
        if holder.heard.elapsed() > PRESENCE_INTERVAL * 3 {
            elsewhere.remove(&gateway);
            return None;
        }
        Some(holder.replica)
    }

    /// Asks `replica` to push `grant` to `gateway`; the receiver resolves when the gateway
    /// acknowledged it, and is dropped when the bus is not running.
    pub(crate) fn push(
        &self,
        replica: Uuid,
        grant: GrantId,
        gateway: GatewayId,
    ) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.is_running() {
            lock(&self.acks).insert(grant, tx);
            self.send(Some(replica), Message::Push { grant, gateway });
        }
        rx
    }

    /// Forgets a push whose acknowledgement is no longer awaited.
    pub(crate) fn forget_push(&self, grant: GrantId) {
        lock(&self.acks).remove(&grant);
    }

    /// This replica's id.
    pub(crate) fn replica(&self) -> Uuid {
        self.replica
    }

    /// Starts sending: what is published from now on comes out of the returned receiver, in
    /// order. `None` when attached already.
    pub(crate) fn attach(&self) -> Option<mpsc::UnboundedReceiver<Envelope>> {
        let (outbox, outgoing) = mpsc::unbounded_channel();
        self.outbox.set(outbox).ok()?;
        Some(outgoing)
    }

    /// Answers `replica` that the gateway acknowledged `grant`.
    pub(crate) fn acked(&self, replica: Uuid, grant: GrantId) {
        self.send(Some(replica), Message::Acked { grant });
    }

    /// Applies a message from another replica: re-emits revocations and ended sessions on
    /// `events`, records presence, closes or hands over gateway connections in `gateways`.
    /// A request to push a grant is returned for the caller to serve.
    pub(crate) fn receive(
        &self,
        envelope: Envelope,
        events: &broadcast::Sender<ControlEvent>,
        gateways: &Registry,
    ) -> Option<PushRequest> {
        let Envelope { from, to, message } = envelope;
        if from == self.replica || to.is_some_and(|to| to != self.replica) {
            return None;
        }
        tracing::debug!(%from, ?message, "from another replica");
        match message {
            Message::Revoked { grant } => {
                let _ = events.send(ControlEvent::GrantRevoked(*grant));
            }
            Message::SessionsEnded {
                device,
                user,
                reason,
            } => {
                let _ = events.send(ControlEvent::SessionsEnded {
                    device,
                    user,
                    reason,
                });
            }
            Message::Gateways { online } => {
                let heard = Instant::now();
                let mut elsewhere = lock(&self.elsewhere);
                for gateway in online {
                    elsewhere.insert(
                        gateway,
                        Holder {
                            replica: from,
                            heard,
                        },
                    );
                }
            }
            Message::Connected { gateway } => {
                lock(&self.elsewhere).insert(
                    gateway,
                    Holder {
                        replica: from,
                        heard: Instant::now(),
                    },
                );
                gateways.hand_over(
                    gateway,
                    "replaced by a newer connection of the same gateway (to another replica)",
                );
            }
            Message::Disconnected { gateway } => {
                let mut elsewhere = lock(&self.elsewhere);
                if elsewhere.get(&gateway).is_some_and(|h| h.replica == from) {
                    elsewhere.remove(&gateway);
                }
            }
            Message::Push { grant, gateway } => {
                return Some(PushRequest {
                    from,
                    grant,
                    gateway,
                });
            }
            Message::Acked { grant } => {
                if let Some(ack) = lock(&self.acks).remove(&grant) {
                    let _ = ack.send(());
                }
            }
            Message::Close { gateway, reason } => gateways.close(gateway, &reason),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_stay_small() {
        let grant = Grant {
            id: GrantId::new(),
            device_id: DeviceId::new(),
            user_id: UserId::new(),
            resource_id: model::ResourceId::new(),
            policy_id: model::PolicyId::new(),
            gateway_id: GatewayId::new(),
            public_key: "k".repeat(44),
            tunnel_address: "100.64.0.9".parse().unwrap(),
            created_at: jiff::Timestamp::now(),
            expires_at: jiff::Timestamp::now(),
            revoked_at: Some(jiff::Timestamp::now()),
        };
        let full = Envelope {
            from: Uuid::new_v4(),
            to: None,
            message: Message::Gateways {
                online: (0..GATEWAYS_PER_MESSAGE)
                    .map(|_| GatewayId::new())
                    .collect(),
            },
        };
        for envelope in [
            Envelope {
                from: Uuid::new_v4(),
                to: Some(Uuid::new_v4()),
                message: Message::Revoked {
                    grant: Box::new(grant),
                },
            },
            full,
        ] {
            let text = serde_json::to_string(&envelope).unwrap();
            assert!(text.len() < 8000, "{} bytes", text.len());
            assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
        }
    }

    #[test]
    fn unread_messages_are_errors_not_panics() {
        for bad in [
            "",
            "{}",
            r#"{"from":"not-a-uuid","type":"acked","grant":"x"}"#,
            r#"{"from":"00000000-0000-0000-0000-000000000000","type":"reboot"}"#,
        ] {
            assert!(serde_json::from_str::<Envelope>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presence_expires() {
        let c = Cluster::default();
        let g = GatewayId::new();
        let other = Uuid::new_v4();
        lock(&c.elsewhere).insert(
            g,
            Holder {
                replica: other,
                heard: Instant::now(),
            },
        );
        assert_eq!(c.holder(g), Some(other));
        lock(&c.elsewhere).insert(
            g,
            Holder {
                replica: other,
                heard: Instant::now() - PRESENCE_INTERVAL * 4,
            },
        );
        assert_eq!(c.holder(g), None);
        assert!(lock(&c.elsewhere).is_empty());
    }

    #[test]
    fn without_the_bus_nothing_is_sent_or_awaited() {
        let c = Cluster::default();
        assert!(!c.is_running());
        c.publish(Message::Acked {
            grant: GrantId::new(),
        });
        let mut rx = c.push(Uuid::new_v4(), GrantId::new(), GatewayId::new());
        assert!(rx.try_recv().is_err());
        assert!(lock(&c.acks).is_empty());
    }
}
