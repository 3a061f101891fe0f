//! The database side of the replicas' channel: a listening connection and a way to notify,
//! for the `cluster` shell, which never touches the store itself.

use super::kernel::{Result, Service};

/// The replicas' channel on this service's PostgreSQL database.
#[derive(Debug)]
pub struct ReplicaChannel {
    /// Receives the other replicas' notifications.
    pub listener: ReplicaListener,
    /// Sends this replica's.
    pub notifier: ReplicaNotifier,
}

/// Receives notifications on one channel.
#[derive(Debug)]
pub struct ReplicaListener(sqlx::postgres::PgListener);

impl ReplicaListener {
    /// The next notification's payload; `None` when the connection dropped (the next call
    /// reconnects, and what was sent meanwhile is lost).
    pub async fn recv(&mut self) -> Result<Option<String>> {
        Ok(self
            .0
            .try_recv()
            .await
            .map_err(store::StoreError::from)?
            .map(|n| n.payload().to_owned()))
    }
}

/// Sends notifications.
#[derive(Debug, Clone)]
pub struct ReplicaNotifier(store::Store);

impl ReplicaNotifier {
    /// Notifies every listener of `channel`.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        Ok(self.0.notify(channel, payload).await?)
    }
}

impl Service {
    /// Listens on `channel` of the PostgreSQL database; `None` on SQLite (one replica).
    pub async fn replica_channel(&self, channel: &str) -> Result<Option<ReplicaChannel>> {
        let Some(mut listener) = self.store.listener().await? else {
            return Ok(None);
        };
        listener
            .listen(channel)
            .await
            .map_err(store::StoreError::from)?;
        Ok(Some(ReplicaChannel {
            listener: ReplicaListener(listener),
            notifier: ReplicaNotifier(self.store.clone()),
        }))
    }

    /// How long a push waits for the gateway's acknowledgement.
    pub fn ack_timeout(&self) -> std::time::Duration {
        self.ack_timeout
    }
}
