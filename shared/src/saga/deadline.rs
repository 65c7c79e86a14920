//! The saga-deadline sweeper (`Function::SagaDeadline` in the choreography
//! table): for each order still not terminal past its deadline it emits
//! `order.deadline_reached`, once, through the outbox. What follows is
//! decided by the steps (ARCHITECTURE.md §7.9): `ship-order` either shipped
//! already (the deadline changes nothing) or never will (`shipment.failed`,
//! timed_out), `settle-inventory` releases what is held and `order-status`
//! cancels with `timed_out`.
//!
//! Interleavings the sweeper itself keeps:
//! - It fires once per order: the processed record of `saga-deadline`
//!   under the order id is its memory, written in the same commit as the
//!   event (the outbox). Two sweeps at once (two hosts, overlapping passes)
//!   race on that key; the loser gets `Duplicate` and publishes nothing.
//! - A fired deadline whose publish fails stays in the outbox; the relay
//!   publishes it later, like any step's event.
//! - Once that record is pruned (retention), an order still open fires
//!   again with a new event; `ship-order` answers a second deadline from its
//!   shipment record (shipped, or the tombstone), so nothing changes twice.
//! - An order that turns terminal between the read and the commit gets a
//!   deadline anyway: `ship-order` and `order-status` ignore it (shipped or
//!   cancelled is final), `settle-inventory` finds nothing held.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::bus::{OutboxRef, Publisher, RelayError, publish_committed};
use crate::contract::choreography::Function;
use crate::contract::events::{Event, OrderDeadlineReached, Payload};
use crate::store::{Commit, CommitOutcome, OrderRecord, Store, StoreError, all_open_orders, created_at};

/// Environment variable with the saga deadline (`15m`, `900s`, `2h`, `500ms`).
pub const DEADLINE_VAR: &str = "CHOREO_SAGA_DEADLINE";

/// The saga deadline when [`DEADLINE_VAR`] is unset: far beyond any healthy
/// saga (milliseconds to seconds, a few retries), short enough that nobody
/// waits long on a stuck order.
pub const DEFAULT_SAGA_DEADLINE: Duration = Duration::from_secs(15 * 60);

const SWEEPER: Function = Function::SagaDeadline;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    #[error("{DEADLINE_VAR}: {0}")]
    Invalid(String),
}

/// Parses `500ms`, `90s`, `15m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("'{text}' is not a duration: use a number with ms, s, m, h or d, e.g. 15m");
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    let millis = number.parse::<u64>().ok().and_then(|n| n.checked_mul(millis_per_unit)).ok_or_else(invalid)?;
    Ok(Duration::from_millis(millis))
}

/// A saga deadline: a [`parse_duration`] of more than zero.
pub fn parse_deadline(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("'{}' is not a deadline: it must be more than zero", text.trim())),
        deadline => Ok(deadline),
    }
}

/// The deadline from [`DEADLINE_VAR`]'s value (unset or empty: the default).
pub fn deadline_from(value: Option<&str>) -> Result<Duration, DeadlineError> {
    match value.map(str::trim).filter(|value| !value.is_empty()) {
        None => Ok(DEFAULT_SAGA_DEADLINE),
        Some(text) => parse_deadline(text).map_err(DeadlineError::Invalid),
    }
}

/// How often `choreo up` sweeps: a quarter of the deadline, between 50 ms
/// and 30 s, so an order is cancelled soon after its deadline.
pub fn sweep_every(deadline: Duration) -> Duration {
    (deadline / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Orders open past their deadline.
    pub overdue: usize,
    /// Deadlines emitted by this sweep.
    pub fired: usize,
    /// Overdue orders whose deadline fired before (waiting on a step, or a
    /// dead letter: `choreo sagas stuck` shows them).
    pub fired_before: usize,
    /// Deadlines committed but not published (the relay publishes them), or
    /// orders the store failed on (the next sweep tries again).
    pub failed: usize,
}

/// One sweep: a deadline event for each order open past `deadline`, committed
/// to the outbox, then published through `publisher`.
pub async fn sweep_deadlines(
    store: &dyn Store,
    publisher: &dyn Publisher,
    deadline: Duration,
) -> Result<SweepReport, StoreError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::MAX);
    let overdue = all_open_orders(store, cutoff).await?;
    let mut report = SweepReport { overdue: overdue.len(), ..SweepReport::default() };
    for order in overdue {
        match fire(store, publisher, &order, deadline).await {
            Ok(true) => report.fired += 1,
            Ok(false) => report.fired_before += 1,
            Err(error) => {
                tracing::warn!(order_id = %order.order_id, %error, "saga deadline not delivered yet");
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// Fires the deadline of `order` unless it fired before; answers whether it fired now.
async fn fire(
    store: &dyn Store,
    publisher: &dyn Publisher,
    order: &OrderRecord,
    deadline: Duration,
) -> Result<bool, RelayError> {
    let key = order.order_id.to_string();
    if store.processed(SWEEPER, &key).await?.is_some() {
        return Ok(false);
    }
    let created = created_at(order.order_id).unwrap_or_else(Utc::now);
    let reached = OrderDeadlineReached {
        items: order.items.clone(),
        deadline: created + chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::MAX),
    };
    let event = Event::new(SWEEPER, order.order_id, None, Payload::OrderDeadlineReached(reached));
    let commit = Commit { function: SWEEPER, key: key.clone(), writes: vec![], emitted: vec![event.clone()] };
    match store.commit(commit).await? {
        CommitOutcome::Committed => {}
        // Another sweep fired it meanwhile (no writes: no conflict is possible).
        CommitOutcome::Duplicate(_) | CommitOutcome::Conflict => return Ok(false),
    }
    tracing::info!(order_id = %order.order_id, status = order.status.as_str(), "saga deadline reached");
    publish_committed(store, publisher, &OutboxRef { function: SWEEPER, key }, &[event]).await?;
    Ok(true)
}

/// Sweeps every [`sweep_every`] until `stop` resolves (`choreo up`, both buses).
pub async fn sweep_forever(
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    deadline: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(sweep_every(deadline)) => {}
            () = &mut stop => return,
        }
        match sweep_deadlines(&*store, &*publisher, deadline).await {
            Ok(report) if report.fired > 0 || report.failed > 0 => {
                tracing::info!(fired = report.fired, failed = report.failed, "saga deadline sweep");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "saga deadline sweep could not read the orders; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_parse_from_milliseconds_to_days() {
        assert_eq!(deadline_from(None), Ok(DEFAULT_SAGA_DEADLINE));
        assert_eq!(deadline_from(Some(" ")), Ok(DEFAULT_SAGA_DEADLINE));
        assert_eq!(deadline_from(Some("15m")), Ok(DEFAULT_SAGA_DEADLINE));
        assert_eq!(deadline_from(Some("900")), Ok(DEFAULT_SAGA_DEADLINE));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(deadline_from(Some("0s")).is_err());
        assert!(deadline_from(Some("soon")).is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO), "an age of zero is fine; a deadline of zero is not");
    }

    #[test]
    fn the_sweep_runs_often_enough_for_tiny_and_long_deadlines() {
        assert_eq!(sweep_every(Duration::from_millis(100)), Duration::from_millis(50));
        assert_eq!(sweep_every(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(sweep_every(DEFAULT_SAGA_DEADLINE), Duration::from_secs(30));
    }
}
