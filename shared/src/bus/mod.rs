//! The publishing port: how emitted events reach the topic exchange; the
//! outbox relay that re-publishes what a crash left unpublished; and the bus
//! adapters, RabbitMQ (`amqp`) and the in-process bus of `choreo up`.

pub mod amqp;
mod delivery;
pub mod inprocess;
#[cfg(feature = "kafka")]
pub mod kafka;
mod relay;

use async_trait::async_trait;

use crate::contract::choreography::Function;
use crate::contract::events::Event;

pub use self::delivery::{
    DEFAULT_CONCURRENCY, DEFAULT_PREFETCH, DeliverySettings, IN_PROCESS_CONCURRENCY, ObserveFn, StepObserver,
};
pub use self::relay::{
    RELAY_PAGE, RelayError, RelayReport, publish_committed, publish_committed_soon, relay_forever, relay_outbox,
    relay_outbox_paged,
};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No queue is bound for the routing key: a topology error, never retried silently.
    #[error("event {event_type} ({event_id}) is unroutable: no queue is bound to it")]
    Unroutable { event_type: String, event_id: String },
    /// The broker is away or refused the message (nack): try again later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// The outbox entry a batch of events was committed under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRef {
    /// The function that committed the events.
    pub function: Function,
    /// The commit's key (the consumed event's id, or the idempotency key) naming the entry.
    pub key: String,
}

/// When a publisher considers events safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// The broker holds them durably (publisher confirms): the caller marks the outbox entry.
    Confirmed,
    /// The bus marks the outbox entry itself once every consumer has handled
    /// them (the in-process bus, which keeps nothing across a restart).
    Deferred,
}

/// Publishes events to the topic exchange. Returns once the bus has accepted
/// every one of them; an unroutable event is an error, not a silent drop.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    async fn publish(&self, origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError>;

    /// Whether a new saga can be taken on now. A bounded bus that is full
    /// answers `false`, so that HTTP refuses an order (503) before storing
    /// it; a broker applies its own flow control, so the default is `true`.
    fn has_room(&self) -> bool {
        true
    }
}

/// The publisher of a process with no broker configured: every publish fails
/// as unavailable, so committed events wait in the outbox for a relay.
pub struct NoBroker;

#[async_trait]
impl Publisher for NoBroker {
    async fn publish(&self, _origin: &OutboxRef, _events: &[Event]) -> Result<Handover, PublishError> {
        Err(PublishError::Unavailable("no broker is configured (set AMQP_URL)".to_owned()))
    }
}
