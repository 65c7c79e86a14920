//! The publishing port: how emitted events reach the topic exchange, and the
//! outbox relay that re-publishes what a crash left unpublished.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::choreography::Function;
use crate::events::Event;
use crate::ports::{Store, StoreError};

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
    pub function: Function,
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
}

/// Publishes a committed step's events and settles its outbox entry.
pub async fn publish_committed(
    store: &dyn Store,
    publisher: &dyn Publisher,
    origin: &OutboxRef,
    events: &[Event],
) -> Result<(), RelayError> {
    // A commit that emitted nothing is stored as published already.
    if events.is_empty() || publisher.publish(origin, events).await? == Handover::Deferred {
        return Ok(());
    }
    store.mark_published(origin.function, &origin.key).await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Re-publishes outbox entries older than `grace` (younger ones are still
/// being published by the step that wrote them). Consumers are idempotent,
/// so an event published twice is harmless. Answers how many events it sent.
pub async fn relay_outbox(store: &dyn Store, publisher: &dyn Publisher, grace: Duration) -> Result<usize, RelayError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    let mut sent = 0;
    for entry in store.unpublished(cutoff).await? {
        let origin = OutboxRef { function: entry.function, key: entry.key };
        publish_committed(store, publisher, &origin, &entry.events).await?;
        sent += entry.events.len();
    }
    Ok(sent)
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

impl From<RelayError> for crate::StepError {
    /// An unroutable event is a topology error that no retry fixes; anything
    /// else (broker away, store busy) may pass.
    fn from(error: RelayError) -> Self {
        match error {
            RelayError::Publish(PublishError::Unroutable { .. }) => Self::Permanent(error.to_string()),
            other => Self::Retryable(other.to_string()),
        }
    }
}
