//! What every saga step shares: its error type, the ports it is handed, and
//! the idempotent read–decide–commit loop (ARCHITECTURE.md §6, §7.1).

mod ship_countries;

use std::future::Future;
use std::sync::Arc;

use crate::contract::choreography::Function;
use crate::contract::events::{Event, Payload};
use crate::store::{Commit, CommitOutcome, Store, StoreError, Write};

pub use self::ship_countries::ShipCountries;

/// Why a step could not handle an event, and so what its host should do.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step may succeed later (store or broker unavailable): retry with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Retrying cannot help (malformed or impossible input): dead-letter it.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl StepError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Retryable(error.to_string()),
            StoreError::Corrupt(_) => Self::Permanent(error.to_string()),
        }
    }
}

/// Everything a step needs from outside its pure logic.
#[derive(Clone)]
pub struct Ports {
    /// Where the step reads its service's records and commits its effect.
    pub store: Arc<dyn Store>,
    /// Where `ship-order` delivers (`SHIP_COUNTRIES`); the other steps ignore it.
    pub ship_countries: ShipCountries,
}

/// What a step decided for one event, committed atomically by `run_idempotent`.
#[derive(Debug, Default)]
pub struct Decision {
    /// Writes to the step's own service's records, each at the version it read.
    pub writes: Vec<Write>,
    /// The events it emits (built with `reaction`); stored with the commit as its outbox entry.
    pub emit: Vec<Event>,
}

/// A saga step: one Lambda function's pure core. Hosts (the embedded bus,
/// the bridge, the Lambda adapters) only ever call `handle`.
#[async_trait::async_trait]
pub trait Step: Send + Sync + 'static {
    fn function(&self) -> Function;
    async fn handle(&self, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError>;
}

/// Builds an event emitted by `function` in reaction to `cause`.
pub fn reaction(function: Function, cause: &Event, payload: Payload) -> Event {
    Event::new(function, cause.subject, Some(cause), payload)
}

/// How often a step re-reads after a version conflict before giving up with a
/// retryable error (the bus then retries later).
const MAX_CONFLICTS: u32 = 100;

/// Runs `decide` (read records, decide) and commits its outcome atomically
/// with the event's id. A duplicate gets the first run's events back and
/// changes nothing; a conflict re-reads and decides again.
pub async fn run_idempotent<F, Fut>(
    function: Function,
    event: &Event,
    store: &dyn Store,
    mut decide: F,
) -> Result<Vec<Event>, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Decision, StepError>>,
{
    let key = event.id.to_string();
    // No separate "seen it?" read: `commit` checks the key in the same
    // transaction as the writes, and answers a duplicate with the first run's
    // events (deciding again on a duplicate is harmless: nothing of it is kept).
    for conflicts in 0..MAX_CONFLICTS {
        if conflicts > 0 {
            // Steps racing for one hot record (a popular SKU) would otherwise
            // collide again in lockstep: wait a little, randomly, growing.
            let ceiling_us = 200u64 << conflicts.min(5);
            let jitter_us = u64::from(uuid::Uuid::new_v4().as_u128() as u16) % ceiling_us;
            tokio::time::sleep(std::time::Duration::from_micros(jitter_us)).await;
        }
        let decision = decide().await?;
        let emitted = decision.emit;
        let commit = Commit { function, key: key.clone(), writes: decision.writes, emitted: emitted.clone() };
        match store.commit(commit).await? {
            CommitOutcome::Committed => return Ok(emitted),
            CommitOutcome::Duplicate(first_run) => {
                crate::telemetry::step::note_duplicate();
                tracing::debug!(%function, event_id = %event.id, "duplicate event: returning the first run's events");
                return Ok(first_run);
            }
            CommitOutcome::Conflict => continue,
        }
    }
    Err(StepError::Retryable(format!("{function}: records kept changing under event {}", event.id)))
}

/// The error for an event delivered to a function that does not consume it.
pub fn not_consumed(function: Function, event: &Event) -> StepError {
    StepError::Permanent(format!("{function} does not consume {} events", event.event_type()))
}
