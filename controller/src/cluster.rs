//! Several controller replicas on one PostgreSQL database, told of each other's changes
//! through PostgreSQL itself (`LISTEN`/`NOTIFY` on one channel), so that:
//!
//! - a revocation or an ended session on one replica reaches the gateways and clients
//!   connected to every other one (within the same second: a notification is one round
//!   trip through the database);
//! - an access request on one replica can be served by a gateway connected to another: the
//!   request's replica asks the gateway's replica to push the grant, which answers with the
//!   gateway's acknowledgement;
//! - every replica knows which gateways are online anywhere (each one announces the
//!   gateways it holds every [`PRESENCE_INTERVAL`]; an announcement not renewed for three
//!   intervals expires), and a gateway that reconnects to another replica closes its old
//!   connection.
//!
//! A notification lost while a replica's listening connection was down is made good by a
//! full resynchronisation of that replica's gateways and clients from the database.
//!
//! On SQLite there is one replica and the bus is never started: publishing does nothing and
//! no gateway is held elsewhere.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use model::{DeviceId, GatewayId, Grant, GrantId, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::service::{ControlEvent, Service};
use crate::store::StoreError;

/// The PostgreSQL notification channel of the replicas.
pub(crate) const CHANNEL: &str = "postern_cluster";

/// How often a replica announces the gateways it holds.
pub(crate) const PRESENCE_INTERVAL: Duration = Duration::from_secs(2);

/// PostgreSQL refuses notification payloads of 8000 bytes or more; presence announcements
/// are split into messages of at most this many gateways.
const GATEWAYS_PER_MESSAGE: usize = 100;

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
    from: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<Uuid>,
    #[serde(flatten)]
    message: Message,
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
}

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Listening failed.
    #[error("listening for the other replicas: {0}")]
    Listen(#[from] sqlx::Error),
}

impl Service {
    /// Joins the other replicas on this store's PostgreSQL database: starts listening, the
    /// publisher and the presence announcements. Does nothing on SQLite, or when started
    /// already. Returns once this replica listens.
    pub async fn start_cluster(&self) -> Result<(), ClusterError> {
        let Some(mut listener) = self.store.listener().await? else {
            return Ok(());
        };
        listener.listen(CHANNEL).await?;
        let (outbox, mut outgoing) = mpsc::unbounded_channel::<Envelope>();
        if self.cluster.outbox.set(outbox).is_err() {
            return Ok(());
        }
        tracing::info!(replica = %self.cluster.replica, "joined the other controller replicas through PostgreSQL");

        // One publisher, so that this replica's messages arrive in the order it sent them.
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(envelope) = outgoing.recv().await {
                let payload = match serde_json::to_string(&envelope) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "encoding a message for the other replicas");
                        continue;
                    }
                };
                if let Err(e) = store.notify(CHANNEL, &payload).await {
                    tracing::warn!(error = %e, "telling the other replicas failed");
                }
            }
        });

        let service = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match serde_json::from_str::<Envelope>(n.payload()) {
                        Ok(envelope) => service.on_cluster_message(envelope),
                        Err(e) => {
                            tracing::warn!(error = %e, "an unreadable message from another replica")
                        }
                    },
                    Ok(None) => {
                        // The connection dropped: what was sent meanwhile is lost. The next
                        // call reconnects; then every link resynchronises from the database.
                        tracing::warn!("lost the connection to the other replicas; reconnecting");
                        let events = service.events.clone();
                        tokio::spawn(async move {
                            let _ = events.send(ControlEvent::Resync);
                            tokio::time::sleep(PRESENCE_INTERVAL).await;
                            let _ = events.send(ControlEvent::Resync);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for the other replicas");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });

        let service = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRESENCE_INTERVAL);
            loop {
                every.tick().await;
                let held = service.gateways.online();
                for chunk in held.chunks(GATEWAYS_PER_MESSAGE) {
                    service.cluster.publish(Message::Gateways {
                        online: chunk.to_vec(),
                    });
                }
            }
        });
        Ok(())
    }

    fn on_cluster_message(&self, envelope: Envelope) {
        let Envelope { from, to, message } = envelope;
        if from == self.cluster.replica || to.is_some_and(|to| to != self.cluster.replica) {
            return;
        }
        tracing::debug!(%from, ?message, "from another replica");
        match message {
            Message::Revoked { grant } => {
                let _ = self.events.send(ControlEvent::GrantRevoked(*grant));
            }
            Message::SessionsEnded {
                device,
                user,
                reason,
            } => {
                let _ = self.events.send(ControlEvent::SessionsEnded {
                    device,
                    user,
                    reason,
                });
            }
            Message::Gateways { online } => {
                let heard = Instant::now();
                let mut elsewhere = lock(&self.cluster.elsewhere);
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
                lock(&self.cluster.elsewhere).insert(
                    gateway,
                    Holder {
                        replica: from,
                        heard: Instant::now(),
                    },
                );
                self.gateways.hand_over(
                    gateway,
                    "replaced by a newer connection of the same gateway (to another replica)",
                );
            }
            Message::Disconnected { gateway } => {
                let mut elsewhere = lock(&self.cluster.elsewhere);
                if elsewhere.get(&gateway).is_some_and(|h| h.replica == from) {
                    elsewhere.remove(&gateway);
                }
            }
            Message::Push { grant, gateway } => {
                let service = self.clone();
                tokio::spawn(async move { service.push_for(from, grant, gateway).await });
            }
            Message::Acked { grant } => {
                if let Some(ack) = lock(&self.cluster.acks).remove(&grant) {
                    let _ = ack.send(());
                }
            }
            Message::Close { gateway, reason } => self.gateways.close(gateway, &reason),
        }
    }

    /// Pushes a grant another replica issued to a gateway connected here, and tells that
    /// replica when the gateway acknowledged it.
    async fn push_for(&self, replica: Uuid, grant: GrantId, gateway: GatewayId) {
        let spec = match self.grant_spec(grant).await {
            Ok(Some(spec)) => spec,
            Ok(None) => return, // revoked or expired meanwhile: the requester times out
            Err(e) => {
                tracing::warn!(%grant, error = %e, "reading a grant to push for another replica");
                return;
            }
        };
        let Some(ack) = self.gateways.push_grant(gateway, spec) else {
            return;
        };
        if let Ok(Ok(())) = tokio::time::timeout(self.ack_timeout, ack).await {
            self.cluster.send(Some(replica), Message::Acked { grant });
        }
    }

    /// Whether `gateway`'s control connection is up, here or at another replica.
    pub(crate) fn gateway_is_online(&self, gateway: GatewayId) -> bool {
        self.gateways.is_online(gateway) || self.cluster.holder(gateway).is_some()
    }

    /// Closes `gateway`'s connection wherever it is.
    pub(crate) fn close_gateway(&self, gateway: GatewayId, reason: &str) {
        self.gateways.close(gateway, reason);
        self.cluster.publish(Message::Close {
            gateway,
            reason: reason.to_owned(),
        });
    }

    /// Tells the other replicas that `gateway` connected here.
    pub(crate) fn gateway_connected_here(&self, gateway: GatewayId) {
        self.cluster.publish(Message::Connected { gateway });
    }

    /// Tells the other replicas that `gateway`'s connection here ended.
    pub(crate) fn gateway_disconnected_here(&self, gateway: GatewayId) {
        self.cluster.publish(Message::Disconnected { gateway });
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
