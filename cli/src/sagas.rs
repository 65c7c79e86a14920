//! `choreo sagas stuck|redrive` (ARCHITECTURE.md §7.9): which sagas have not
//! finished, what each waits on, and the cure for a lost message.
//!
//! Both read the configured store alone (`shared::saga::progress_of` follows
//! each saga through the processed records), so they work whatever hosts the
//! steps. `stuck` also says whether a dead letter holds the saga: RabbitMQ's
//! dead queues when a broker URL is given, else the dead letters `choreo up`
//! parked in the store. `redrive` hands each waiting event back: on RabbitMQ
//! it is published again (every consumer bound to its type gets it; those
//! that handled it already answer from their processed record); on the
//! in-process bus it is stored as a dead letter whose replay is requested at
//! once, which the running `choreo up` (or its next start) delivers to the
//! one function that waits. Steps are idempotent, so a redrive is safe.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use shared::Function;
use shared::bus::amqp::DeadMessage;
use shared::bus::{OutboxRef, PublishError, Publisher};
use shared::contract::domain::OrderId;
use shared::saga::{Progress, progress_of};
use shared::store::{Store, StoreError, StoredDeadLetter, all_open_orders, created_at};

/// The latest event of a saga, as `stuck` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastEvent {
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its id.
    pub id: String,
    /// When it was emitted.
    pub time: chrono::DateTime<Utc>,
    /// Who emitted it.
    pub source: String,
}

/// A dead letter that holds a saga.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeldBy {
    /// The function whose dead letters hold it.
    pub function: String,
    /// The event type of the letter.
    pub event_type: Option<String>,
    /// Why it was parked.
    pub error: Option<String>,
}

/// One line of `choreo sagas stuck`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StuckSaga {
    /// The order.
    pub order_id: String,
    /// Its status (never terminal here).
    pub status: String,
    /// Seconds since the order was created.
    pub age_seconds: i64,
    /// The latest event of the saga found in the records.
    pub last_event: Option<LastEvent>,
    /// The functions with an event of the saga they have not handled.
    pub waits_on: Vec<String>,
    /// The dead letters of this order, if any.
    pub dead_letters: Vec<HeldBy>,
}

/// Every open order older than `older_than`, with its progress.
pub async fn stuck_progress(store: &dyn Store, older_than: Duration) -> Result<Vec<Progress>, StoreError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let mut sagas = Vec::new();
    for order in all_open_orders(store, cutoff).await? {
        sagas.push(progress_of(store, order).await?);
    }
    Ok(sagas)
}

/// The saga of one order, whatever its status (`None`: no such order).
pub async fn progress_of_order(store: &dyn Store, order_id: OrderId) -> Result<Option<Progress>, StoreError> {
    match store.order(order_id).await? {
        Some(order) => Ok(Some(progress_of(store, order).await?)),
        None => Ok(None),
    }
}

/// What `stuck` prints of `progress`, with the `dead` letters of its order.
pub fn describe(progress: &Progress, dead: &[DeadMessage]) -> StuckSaga {
    let order_id = progress.order.order_id;
    let age = created_at(order_id).map(|created| (Utc::now() - created).num_seconds()).unwrap_or_default();
    let mut waits_on: Vec<String> = Vec::new();
    for waiting in &progress.waiting {
        let name = waiting.function.to_string();
        if !waits_on.contains(&name) {
            waits_on.push(name);
        }
    }
    let id = order_id.to_string();
    StuckSaga {
        order_id: id.clone(),
        status: progress.order.status.as_str().to_owned(),
        age_seconds: age,
        last_event: progress.last_event.as_ref().map(|event| LastEvent {
            event_type: event.event_type().to_string(),
            id: event.id.to_string(),
            time: event.time,
            source: event.source.clone(),
        }),
        waits_on,
        dead_letters: dead
            .iter()
            .filter(|letter| letter.order_id.as_deref() == Some(id.as_str()))
            .map(|letter| HeldBy {
                function: letter.function.clone(),
                event_type: letter.event_type.clone(),
                error: letter.error.clone(),
            })
            .collect(),
    }
}

/// Where `redrive` hands the waiting events.
pub enum RedriveTo<'a> {
    /// Published again to the broker (every consumer of the type gets it).
    Broker(&'a dyn Publisher),
    /// Requested as a dead-letter replay in the store, to the waiting function only.
    Store,
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Hands every event `progress` waits on back to its consumers; answers how many deliveries.
pub async fn redrive(store: &dyn Store, progress: &Progress, to: &RedriveTo<'_>) -> Result<usize, RedriveError> {
    let mut handed = 0;
    match to {
        RedriveTo::Broker(publisher) => {
            // One publish per event: the broker routes it to each consumer.
            let mut events: Vec<_> = progress.waiting.iter().map(|waiting| waiting.event.clone()).collect();
            events.dedup_by_key(|event| event.id);
            for event in &events {
                let origin = OutboxRef { function: Function::SagaDeadline, key: format!("redrive:{}", event.id) };
                publisher.publish(&origin, std::slice::from_ref(event)).await?;
                handed += progress.waiting.iter().filter(|waiting| waiting.event.id == event.id).count();
            }
        }
        RedriveTo::Store => {
            for waiting in &progress.waiting {
                let letter = StoredDeadLetter {
                    function: waiting.function,
                    event: waiting.event.clone(),
                    error: "redriven by choreo sagas redrive".to_owned(),
                    attempts: 0,
                };
                store.park_dead_letter(&letter).await?;
                let event_id = waiting.event.id.to_string();
                handed += store.replay_dead_letters(Some(waiting.function), Some(&event_id)).await?;
            }
        }
    }
    Ok(handed)
}
