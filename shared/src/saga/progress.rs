//! Where a saga stands, read from the records alone: starting at its
//! `order.created` (rebuilt from the order record) and its deadline, each
//! event is followed to the functions that consume it (the choreography
//! table); a consumer's processed record under the event's id says it
//! handled the event and holds what it emitted, which is followed in turn.
//! A consumer with no such record is one the saga waits on. Records past
//! their retention are pruned, so for a saga older than that a handled event
//! reads as still waiting (ARCHITECTURE.md §7.1).

use std::collections::HashSet;

use crate::contract::choreography::{Function, consumers_of};
use crate::contract::events::{Event, EventType, OrderCreated, Payload};
use crate::store::{OrderRecord, Store, StoreError};

/// A delivery not handled yet: `function` has no processed record of `event`.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    /// The event not handled (what a redrive republishes).
    pub event: Event,
    /// The consumer that has not handled it.
    pub function: Function,
}

/// A saga's progress as the records tell it.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The order record, as `order-status` last wrote it.
    pub order: OrderRecord,
    /// The latest event of the saga found (by time, then id).
    pub last_event: Option<Event>,
    /// Deliveries the saga waits on, oldest event first.
    pub waiting: Vec<Waiting>,
}

/// The `order.created` of `order`, rebuilt from the record: the same id,
/// time, source and data as the event `create-order` published.
fn order_created(order: &OrderRecord) -> Option<Event> {
    let entry = order.history.iter().find(|entry| entry.event_type == EventType::OrderCreated.as_str())?;
    Some(Event {
        id: entry.event_id,
        source: entry.source.clone(),
        subject: order.order_id,
        time: entry.time,
        causation_id: None,
        traceparent: entry.traceparent.clone(),
        parent_span: entry.parent_span.clone(),
        payload: Payload::OrderCreated(OrderCreated {
            customer_id: order.customer_id.clone(),
            items: order.items.clone(),
            shipping_address: order.shipping_address.clone(),
        }),
    })
}

/// What the processed records tell of a saga: every event found, and for
/// each delivery the table prescribes, what its consumer emitted (`None`: no
/// record, so not handled yet). `progress_of` and the timeline read it.
#[derive(Clone, Debug, Default)]
pub struct SagaRecords {
    /// Every event of the saga found, in the order the walk met them.
    pub events: Vec<Event>,
    /// (event, consumer, what the consumer emitted if it handled it).
    pub deliveries: Vec<(Event, Function, Option<Vec<Event>>)>,
}

/// Walks `order`'s saga from its `order.created` and its deadline through
/// the processed records of each event's consumers (the choreography table).
pub async fn saga_records(store: &dyn Store, order: &OrderRecord) -> Result<SagaRecords, StoreError> {
    let mut pending: Vec<Event> = order_created(order).into_iter().collect();
    if let Some(deadline) = store.processed(Function::SagaDeadline, &order.order_id.to_string()).await? {
        pending.extend(deadline);
    }
    let mut seen = HashSet::new();
    let mut records = SagaRecords::default();
    while let Some(event) = pending.pop() {
        if !seen.insert(event.id) {
            continue;
        }
        for function in consumers_of(event.event_type()) {
            let emitted = store.processed(function, &event.id.to_string()).await?;
            if let Some(emitted) = &emitted {
                pending.extend(emitted.iter().cloned());
            }
            records.deliveries.push((event.clone(), function, emitted));
        }
        records.events.push(event);
    }
    Ok(records)
}

/// Follows `order`'s saga through the processed records.
pub async fn progress_of(store: &dyn Store, order: OrderRecord) -> Result<Progress, StoreError> {
    let records = saga_records(store, &order).await?;
    let mut waiting: Vec<Waiting> = records
        .deliveries
        .into_iter()
        .filter(|(_, _, emitted)| emitted.is_none())
        .map(|(event, function, _)| Waiting { event, function })
        .collect();
    waiting.sort_by_key(|waiting| (waiting.event.time, waiting.event.id, waiting.function));
    let last_event = records.events.into_iter().max_by_key(|event| (event.time, event.id));
    Ok(Progress { order, last_event, waiting })
}
