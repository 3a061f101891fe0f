//! The shell that carries the replicas' messages: several controller replicas on one
//! PostgreSQL database tell each other of their changes through PostgreSQL itself
//! (`LISTEN`/`NOTIFY` on one channel), so that:
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
//! full resynchronisation of that replica's gateways and clients from the database. What
//! the messages mean lives in the bus (`bus::Cluster`); this module only moves them. On
//! SQLite there is one replica and it never starts.

use std::time::Duration;

use crate::app::{ReplicaChannel, Service};
use crate::bus::{
    CHANNEL, ControlEvent, Envelope, GATEWAYS_PER_MESSAGE, Message, PRESENCE_INTERVAL, PushRequest,
};

/// Why the replicas' channel could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database failed.
    #[error(transparent)]
    Service(#[from] crate::app::ServiceError),
}

/// Joins the other replicas on the service's PostgreSQL database: starts listening, the
/// publisher and the presence announcements. Does nothing on SQLite, or when started
/// already. Returns once this replica listens.
pub(crate) async fn start(service: &Service) -> Result<(), ClusterError> {
    let Some(channel) = service.replica_channel(CHANNEL).await? else {
        return Ok(());
    };
    let bus = service.bus().clone();
    let Some(mut outgoing) = bus.attach_replicas() else {
        return Ok(());
    };
    tracing::info!(replica = %bus.replicas().replica(), "joined the other controller replicas through PostgreSQL");
    let ReplicaChannel {
        mut listener,
        notifier,
    } = channel;

    // One publisher, so that this replica's messages arrive in the order it sent them.
    tokio::spawn(async move {
        while let Some(envelope) = outgoing.recv().await {
            let payload = match serde_json::to_string(&envelope) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a message for the other replicas");
                    continue;
                }
            };
            if let Err(e) = notifier.notify(CHANNEL, &payload).await {
                tracing::warn!(error = %e, "telling the other replicas failed");
            }
        }
    });

    let listening = service.clone();
    tokio::spawn(async move {
        let bus = listening.bus().clone();
        loop {
            match listener.recv().await {
                Ok(Some(payload)) => match serde_json::from_str::<Envelope>(&payload) {
                    Ok(envelope) => {
                        if let Some(push) = bus.receive(envelope) {
                            let service = listening.clone();
                            tokio::spawn(async move { push_for(&service, push).await });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable message from another replica")
                    }
                },
                Ok(None) => {
                    // The connection dropped: what was sent meanwhile is lost. The next
                    // call reconnects; then every link resynchronises from the database.
                    tracing::warn!("lost the connection to the other replicas; reconnecting");
                    let bus = bus.clone();
                    tokio::spawn(async move {
                        bus.emit(ControlEvent::Resync);
                        tokio::time::sleep(PRESENCE_INTERVAL).await;
                        bus.emit(ControlEvent::Resync);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listening for the other replicas");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRESENCE_INTERVAL);
        loop {
            every.tick().await;
            let held = bus.gateways().online();
            for chunk in held.chunks(GATEWAYS_PER_MESSAGE) {
                bus.replicas().publish(Message::Gateways {
                    online: chunk.to_vec(),
                });
            }
        }
    });
    Ok(())
}

/// Pushes a grant another replica issued to a gateway connected here, and tells that
/// replica when the gateway acknowledged it.
async fn push_for(service: &Service, push: PushRequest) {
    let PushRequest {
        from,
        grant,
        gateway,
    } = push;
    let spec = match service.grant_spec(grant).await {
        Ok(Some(spec)) => spec,
        Ok(None) => return, // revoked or expired meanwhile: the requester times out
        Err(e) => {
            tracing::warn!(%grant, error = %e, "reading a grant to push for another replica");
            return;
        }
    };
    let bus = service.bus();
    let Some(ack) = bus.gateways().push_grant(gateway, spec) else {
        return;
    };
    if let Ok(Ok(())) = tokio::time::timeout(service.ack_timeout(), ack).await {
        bus.replicas().acked(from, grant);
    }
}
