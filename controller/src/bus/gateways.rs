//! Which gateways have a control connection up, and the way into each connection's task.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use model::GatewayId;
use proto::GrantSpec;
use tokio::sync::{mpsc, oneshot};

/// What the rest of the controller asks of a gateway's connection task.
pub(crate) enum Command {
    /// Push a new grant; `ack` resolves once the gateway acknowledged it, and is dropped
    /// unresolved when it cannot be (the grant was revoked first, the connection ended).
    Add {
        grant: GrantSpec,
        ack: oneshot::Sender<()>,
    },
    /// Refuse the gateway with `reason` and close the connection.
    Close { reason: String },
}

#[derive(Debug)]
struct Session {
    conn: u64,
    commands: mpsc::UnboundedSender<Command>,
}

/// The gateways whose control connection is up, in memory.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<GatewayId, Session>>,
    next_conn: AtomicU64,
}

impl Registry {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<GatewayId, Session>> {
        // A panic while holding this lock leaves the map consistent: every change is one
        // insert or remove.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `gateway`'s new connection the current one, closing an older one; returns the
    /// connection's number and the commands for it.
    pub(crate) fn register(&self, gateway: GatewayId) -> (u64, mpsc::UnboundedReceiver<Command>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (commands, rx) = mpsc::unbounded_channel();
        let old = self.sessions().insert(gateway, Session { conn, commands });
        if let Some(old) = old {
            let _ = old.commands.send(Command::Close {
                reason: "replaced by a newer connection of the same gateway".into(),
            });
        }
        (conn, rx)
    }

    /// Forgets connection `conn` of `gateway`; false when a newer one replaced it.
    pub(crate) fn unregister(&self, gateway: GatewayId, conn: u64) -> bool {
        let mut sessions = self.sessions();
        if sessions.get(&gateway).is_some_and(|s| s.conn == conn) {
            sessions.remove(&gateway);
            true
        } else {
            false
        }
    }

    /// Whether `gateway` has a control connection up.
    pub(crate) fn is_online(&self, gateway: GatewayId) -> bool {
        self.sessions().contains_key(&gateway)
    }

    /// The gateways whose control connection is up here.
    pub(crate) fn online(&self) -> Vec<GatewayId> {
        self.sessions().keys().copied().collect()
    }

    /// Pushes a grant to `gateway`; `None` when it is not connected.
    pub(crate) fn push_grant(
        &self,
        gateway: GatewayId,
        grant: GrantSpec,
    ) -> Option<oneshot::Receiver<()>> {
        let (ack, rx) = oneshot::channel();
        let sessions = self.sessions();
        let session = sessions.get(&gateway)?;
        session.commands.send(Command::Add { grant, ack }).ok()?;
        Some(rx)
    }

    /// Forgets `gateway`'s connection here at once (it connected to another replica) and
    /// closes it, telling it why; nothing more is pushed to it meanwhile.
    pub(crate) fn hand_over(&self, gateway: GatewayId, reason: &str) {
        if let Some(session) = self.sessions().remove(&gateway) {
            let _ = session.commands.send(Command::Close {
                reason: reason.to_owned(),
            });
        }
    }

    /// Closes `gateway`'s connection, telling it why.
    pub(crate) fn close(&self, gateway: GatewayId, reason: &str) {
        if let Some(session) = self.sessions().get(&gateway) {
            let _ = session.commands.send(Command::Close {
                reason: reason.to_owned(),
            });
        }
    }
}
