//! The controller's in-memory fan-out, below the application services: the broadcast of
//! control events that gateway and client links subscribe to, the registry of gateways
//! whose control connection is up at this replica, this replica's view of the others
//! (presence, awaited acknowledgements), and one [`Bus::push_grant`] that delivers a grant
//! to a gateway here or through the replica that holds it. No IO of its own: the `control`
//! shell drives the connections, the `cluster` shell carries the replicas' messages. It
//! imports nothing from the application services, the shells or the store.

mod events;
mod gateways;
mod replicas;

use std::sync::Arc;

use model::{DeviceId, GatewayId, Grant, GrantId, UserId};
use proto::GrantSpec;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use events::ControlEvent;
pub(crate) use gateways::{Command, Registry};
pub(crate) use replicas::{
    CHANNEL, Cluster, Envelope, GATEWAYS_PER_MESSAGE, Message, PRESENCE_INTERVAL, PushRequest,
};

/// The fan-out: events, the gateways connected here, the other replicas.
#[derive(Debug, Clone)]
pub(crate) struct Bus {
    events: broadcast::Sender<ControlEvent>,
    /// Wakes the timer that ends grants when an earlier deadline may exist.
    deadlines: Arc<tokio::sync::Notify>,
    gateways: Arc<Registry>,
    replicas: Arc<Cluster>,
}

impl Bus {
    /// A bus whose event channel holds `capacity` events before a slow receiver lags.
    pub(crate) fn new(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity);
        Self {
            events,
            deadlines: Arc::default(),
            gateways: Arc::default(),
            replicas: Arc::default(),
        }
    }

    /// Tells the timer that a grant's deadline may now be earlier than it waits for.
    pub(crate) fn deadline_changed(&self) {
        self.deadlines.notify_one();
    }

    /// Resolves when [`Bus::deadline_changed`] was called since the last time.
    pub(crate) async fn deadline_moved(&self) {
        self.deadlines.notified().await;
    }

    /// Subscribes to control events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ControlEvent> {
        self.events.subscribe()
    }

    /// Emits `event` at this replica only.
    pub(crate) fn emit(&self, event: ControlEvent) {
        // No subscriber is not an error: nothing is connected yet.
        let _ = self.events.send(event);
    }

    /// A grant was revoked: its gateway and device hear of it here and at every replica.
    pub(crate) fn revoked(&self, grant: Grant) {
        self.emit(ControlEvent::GrantRevoked(grant.clone()));
        self.replicas.publish(Message::Revoked {
            grant: Box::new(grant),
        });
    }

    /// Device sessions ended: connected clients hear of it here and at every replica.
    pub(crate) fn sessions_ended(
        &self,
        device: Option<DeviceId>,
        user: Option<UserId>,
        reason: &str,
    ) {
        self.emit(ControlEvent::SessionsEnded {
            device,
            user,
            reason: reason.to_owned(),
        });
        self.replicas.publish(Message::SessionsEnded {
            device,
            user,
            reason: reason.to_owned(),
        });
    }

    /// The registry of gateways connected to this replica.
    pub(crate) fn gateways(&self) -> &Registry {
        &self.gateways
    }

    /// Whether `gateway`'s control connection is up, here or at another replica.
    pub(crate) fn gateway_is_online(&self, gateway: GatewayId) -> bool {
        self.gateways.is_online(gateway) || self.replicas.holder(gateway).is_some()
    }

    /// Closes `gateway`'s connection wherever it is.
    pub(crate) fn close_gateway(&self, gateway: GatewayId, reason: &str) {
        self.gateways.close(gateway, reason);
        self.replicas.publish(Message::Close {
            gateway,
            reason: reason.to_owned(),
        });
    }

    /// Tells the other replicas that `gateway` connected here.
    pub(crate) fn gateway_connected_here(&self, gateway: GatewayId) {
        self.replicas.publish(Message::Connected { gateway });
    }

    /// Tells the other replicas that `gateway`'s connection here ended.
    pub(crate) fn gateway_disconnected_here(&self, gateway: GatewayId) {
        self.replicas.publish(Message::Disconnected { gateway });
    }

    /// Delivers a committed grant to its gateway, connected here or at another replica
    /// (which pushes it and relays the acknowledgement). The receiver resolves once the
    /// gateway acknowledged it; `None` when the gateway is connected nowhere. Call
    /// [`Bus::forget_push`] once the acknowledgement is no longer awaited.
    pub(crate) fn push_grant(
        &self,
        gateway: GatewayId,
        grant: GrantSpec,
    ) -> Option<oneshot::Receiver<()>> {
        let id = grant.id;
        match self.gateways.push_grant(gateway, grant) {
            Some(ack) => Some(ack),
            None => self
                .replicas
                .holder(gateway)
                .map(|replica| self.replicas.push(replica, id, gateway)),
        }
    }

    /// Forgets an acknowledgement awaited through another replica.
    pub(crate) fn forget_push(&self, grant: GrantId) {
        self.replicas.forget_push(grant);
    }

    /// This replica's view of the others.
    pub(crate) fn replicas(&self) -> &Cluster {
        &self.replicas
    }

    /// Starts carrying messages to the other replicas: what is published from now on comes
    /// out of the returned receiver. `None` when started already.
    pub(crate) fn attach_replicas(&self) -> Option<mpsc::UnboundedReceiver<Envelope>> {
        self.replicas.attach()
    }

    /// Applies a message from another replica; returns a push it asks of this one.
    pub(crate) fn receive(&self, envelope: Envelope) -> Option<PushRequest> {
        self.replicas
            .receive(envelope, &self.events, &self.gateways)
    }
}
