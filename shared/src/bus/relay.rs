//! Publishing a committed step's events and settling its outbox entry, and
//! the relay that re-publishes entries a crash or an absent broker left behind.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::{Handover, OutboxRef, PublishError, Publisher};
use crate::contract::events::Event;
use crate::store::{Store, StoreError};

/// How often, and after how long, the relay re-publishes events whose
/// first publish failed (the broker was away when an order was accepted).
const RELAY_EVERY: Duration = Duration::from_secs(2);
const RELAY_GRACE: Duration = Duration::from_secs(5);

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

/// Re-publishes stranded outbox entries until `stop` turns true.
pub async fn relay_forever(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RELAY_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match relay_outbox(&*store, &*publisher, RELAY_GRACE).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(events = sent, "re-published events from the outbox"),
            Err(error) => tracing::debug!(%error, "outbox relay will try again"),
        }
    }
}
