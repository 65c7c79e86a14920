//! `relay-outbox`: one pass of the outbox relay per invocation, so that no
//! long-running process is needed on AWS. An EventBridge schedule (the
//! template's `RelaySchedule`, every minute by default) invokes it; each
//! pass publishes the outbox entries left unpublished for longer than the
//! grace period (`RELAY_GRACE_SECONDS`): a step publishes its own events
//! within moments, so only what a crash or an absent broker stranded is old
//! enough. Publishing an event twice is harmless (every consumer is
//! idempotent), so overlapping passes are safe.
//!
//! Each pass also runs the saga-deadline sweep (`shared::saga`, the
//! `saga-deadline` row of the choreography table, ARCHITECTURE.md §7.9):
//! orders still unfinished after `CHOREO_SAGA_DEADLINE` (15 minutes by
//! default) get their `order.deadline_reached`, so on AWS the deadline runs
//! on this function's schedule. Overlapping passes fire each deadline once
//! (the sweep's processed record per order).

use std::time::Duration;

use serde_json::{Value, json};
use shared::bus::{Publisher, RelayError, relay_outbox};
use shared::saga::{DEADLINE_VAR, DeadlineError, deadline_from, sweep_deadlines};
use shared::store::{Store, StoreError};

/// The function's name, as the SAM template and its binary call it.
pub const NAME: &str = "relay-outbox";

/// Environment variable with the grace period, in seconds.
pub const GRACE_VAR: &str = "RELAY_GRACE_SECONDS";

/// Grace period when [`GRACE_VAR`] is unset: long past any step's own
/// publish (bounded by the publish-confirm timeout), short enough that a
/// stranded order moves on within the next pass or two.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{GRACE_VAR}: '{0}' is not a whole number of seconds")]
    Grace(String),
    #[error(transparent)]
    Deadline(#[from] DeadlineError),
}

/// The saga deadline from [`DEADLINE_VAR`]'s value (unset or empty: 15 minutes).
pub fn saga_deadline_from(value: Option<&str>) -> Result<Duration, ConfigError> {
    Ok(deadline_from(value)?)
}

/// The environment variable the saga deadline is read from.
pub const SAGA_DEADLINE_VAR: &str = DEADLINE_VAR;

/// The grace period from [`GRACE_VAR`]'s value (unset or empty: [`DEFAULT_GRACE`]).
pub fn grace_from(value: Option<&str>) -> Result<Duration, ConfigError> {
    match value.map(str::trim).filter(|value| !value.is_empty()) {
        None => Ok(DEFAULT_GRACE),
        Some(text) => text.parse::<u64>().map(Duration::from_secs).map_err(|_| ConfigError::Grace(text.to_owned())),
    }
}

/// A pass that could not publish everything it found.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The broker or the store failed for some entries; they stay in the outbox.
    /// The deadline sweep could not read the open orders.
    #[error("saga deadline sweep: {0}")]
    Sweep(#[from] StoreError),
    #[error("{failed} outbox entries could not be published (gave up early: {gave_up}); the next pass retries them")]
    Incomplete {
        /// Entries left in the outbox by a transient failure.
        failed: usize,
        /// Whether the pass stopped after repeated failures.
        gave_up: bool,
    },
}

/// One pass: publishes what is stranded and answers a summary for the
/// invocation's result. Entries left behind by a transient failure fail the
/// invocation, so that the function's Errors alarm says the broker is away;
/// poison entries set aside do not (they are logged at warn by the relay).
pub async fn relay_once(store: &dyn Store, publisher: &dyn Publisher, grace: Duration) -> Result<Value, PassError> {
    let report = relay_outbox(store, publisher, grace).await?;
    if !report.is_empty() {
        tracing::info!(
            published = report.published,
            events = report.events,
            set_aside = report.set_aside,
            failed = report.failed,
            "outbox pass"
        );
    }
    if report.failed > 0 || report.gave_up {
        return Err(PassError::Incomplete { failed: report.failed, gave_up: report.gave_up });
    }
    Ok(json!({ "published": report.published, "events": report.events, "set_aside": report.set_aside }))
}

/// One whole invocation: the relay pass, then the saga-deadline sweep. A
/// deadline whose publish fails stays in the outbox for the next pass; only
/// a sweep that cannot read the orders fails the invocation (besides the
/// relay's own failures).
pub async fn pass_once(
    store: &dyn Store,
    publisher: &dyn Publisher,
    grace: Duration,
    deadline: Duration,
) -> Result<Value, PassError> {
    let relayed = relay_once(store, publisher, grace).await;
    let swept = sweep_deadlines(store, publisher, deadline).await?;
    if swept.fired > 0 || swept.failed > 0 {
        tracing::info!(fired = swept.fired, failed = swept.failed, overdue = swept.overdue, "saga deadline sweep");
    }
    let mut summary = relayed?;
    summary["deadlines_fired"] = json!(swept.fired);
    summary["overdue"] = json!(swept.overdue);
    Ok(summary)
}
