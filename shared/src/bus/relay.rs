//! Publishing a committed step's events and settling its outbox entry, and
//! the relay that re-publishes entries a crash or an absent broker left behind.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::{Handover, OutboxRef, PublishError, Publisher};
use crate::contract::events::Event;
use crate::store::{Store, StoreError, prune_forever};

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
    if publish(publisher, origin, events).await? {
        store.mark_published(origin.function, &origin.key).await?;
    }
    Ok(())
}

/// The same for a step on the hot path, which need not wait for the mark
/// (see [`Store::mark_published_soon`]).
pub async fn publish_committed_soon(
    store: &dyn Store,
    publisher: &dyn Publisher,
    origin: &OutboxRef,
    events: &[Event],
) -> Result<(), RelayError> {
    if publish(publisher, origin, events).await? {
        store.mark_published_soon(origin.function, &origin.key).await?;
    }
    Ok(())
}

/// Publishes `events`; answers whether their outbox entry is the caller's to mark.
async fn publish(publisher: &dyn Publisher, origin: &OutboxRef, events: &[Event]) -> Result<bool, RelayError> {
    // A commit that emitted nothing is stored as published already.
    Ok(!events.is_empty() && publisher.publish(origin, events).await? == Handover::Confirmed)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Entries read per page of the outbox.
pub const RELAY_PAGE: usize = 100;

/// Transient failures in a row after which a sweep stops: the broker (or the
/// store) is away, and every further entry would wait for a timeout too.
const GIVE_UP_AFTER: usize = 3;

/// What one sweep of the outbox did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Entries handed to the bus (and settled, or left for the bus to settle).
    pub published: usize,
    /// Events in those entries.
    pub events: usize,
    /// Poison entries (unroutable, undecodable) taken out of the outbox for good.
    pub set_aside: usize,
    /// Entries that failed for a reason that may pass; the next sweep retries them.
    pub failed: usize,
    /// Whether the sweep stopped early after repeated transient failures.
    pub gave_up: bool,
}

impl RelayReport {
    /// Whether the sweep did or met anything worth a log line.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Re-publishes outbox entries older than `grace` (younger ones are still
/// being published by the step that wrote them), a page of [`RELAY_PAGE`] at
/// a time. Consumers are idempotent, so an event published twice is
/// harmless. Each entry stands alone: a poison entry is set aside (warn) and
/// the sweep goes on; a transient failure leaves the entry for the next
/// sweep (warn), and after a few in a row the sweep stops early. Only a page
/// that cannot be read is an error.
pub async fn relay_outbox(
    store: &dyn Store,
    publisher: &dyn Publisher,
    grace: Duration,
) -> Result<RelayReport, RelayError> {
    relay_outbox_paged(store, publisher, grace, RELAY_PAGE).await
}

/// [`relay_outbox`] with pages of `page_size` entries.
pub async fn relay_outbox_paged(
    store: &dyn Store,
    publisher: &dyn Publisher,
    grace: Duration,
    page_size: usize,
) -> Result<RelayReport, RelayError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    let mut report = RelayReport::default();
    let mut seen = HashSet::new();
    let mut after = None;
    let mut failures_in_a_row = 0;
    loop {
        let page = store.unpublished_page(cutoff, after, page_size.max(1)).await?;
        let mut new = 0;
        for bad in page.undecodable {
            if seen.insert((bad.function.clone(), bad.key.clone())) {
                new += 1;
                set_aside(store, &bad.function, &bad.key, &bad.reason, &mut report).await;
            }
        }
        for entry in page.entries {
            if !seen.insert((entry.function.name().to_owned(), entry.key.clone())) {
                continue;
            }
            new += 1;
            let origin = OutboxRef { function: entry.function, key: entry.key };
            match publish_committed(store, publisher, &origin, &entry.events).await {
                Ok(()) => {
                    failures_in_a_row = 0;
                    report.published += 1;
                    report.events += entry.events.len();
                }
                Err(RelayError::Publish(error @ PublishError::Unroutable { .. })) => {
                    failures_in_a_row = 0;
                    set_aside(store, origin.function.name(), &origin.key, &error.to_string(), &mut report).await;
                }
                Err(error) => {
                    report.failed += 1;
                    failures_in_a_row += 1;
                    tracing::warn!(function = %origin.function, key = %origin.key, %error, "outbox entry not published; the next sweep retries it");
                    if failures_in_a_row >= GIVE_UP_AFTER {
                        report.gave_up = true;
                        return Ok(report);
                    }
                }
            }
        }
        // `new == 0`: a store that hands back entries already seen would loop.
        match page.next {
            Some(next) if new > 0 => after = Some(next),
            _ => return Ok(report),
        }
    }
}

/// Takes a poison entry out of the outbox, saying so at warn.
async fn set_aside(store: &dyn Store, function: &str, key: &str, reason: &str, report: &mut RelayReport) {
    match store.set_aside(function, key, reason).await {
        Ok(()) => {
            report.set_aside += 1;
            tracing::warn!(function, key, reason, "outbox entry can never be published: set aside");
        }
        Err(error) => {
            report.failed += 1;
            tracing::warn!(function, key, reason, %error, "could not set a poison outbox entry aside; the next sweep retries");
        }
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

/// Re-publishes stranded outbox entries until `stop` turns true, and prunes
/// processed records past the store's retention meanwhile (hourly).
pub async fn relay_forever(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>, stop: watch::Receiver<bool>) {
    let mut prune_stop = stop.clone();
    let pruning = prune_forever(Arc::clone(&store), async move {
        let _ = prune_stop.wait_for(|stop| *stop).await;
    });
    tokio::join!(relay_loop(store, publisher, stop), pruning);
}

async fn relay_loop(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RELAY_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match relay_outbox(&*store, &*publisher, RELAY_GRACE).await {
            Ok(report) if report.is_empty() => {}
            Ok(report) if report.failed > 0 || report.set_aside > 0 => tracing::warn!(
                published = report.published,
                events = report.events,
                set_aside = report.set_aside,
                failed = report.failed,
                gave_up = report.gave_up,
                "outbox sweep"
            ),
            Ok(report) => tracing::info!(
                entries = report.published,
                events = report.events,
                "re-published events from the outbox"
            ),
            Err(error) => tracing::warn!(%error, "outbox relay could not read the outbox; trying again"),
        }
    }
}
