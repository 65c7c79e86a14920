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

/// Follows `order`'s saga through the processed records.
pub async fn progress_of(store: &dyn Store, order: OrderRecord) -> Result<Progress, StoreError> {
    let mut pending: Vec<Event> = order_created(&order).into_iter().collect();
    if let Some(deadline) = store.processed(Function::SagaDeadline, &order.order_id.to_string()).await? {
        pending.extend(deadline);
    }
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    let mut waiting = Vec::new();
    while let Some(event) = pending.pop() {
        if !seen.insert(event.id) {
            continue;
        }
        for function in consumers_of(event.event_type()) {
            match store.processed(function, &event.id.to_string()).await? {
                Some(emitted) => pending.extend(emitted),
                None => waiting.push(Waiting { event: event.clone(), function }),
            }
        }
        events.push(event);
    }
    waiting.sort_by_key(|waiting| (waiting.event.time, waiting.event.id, waiting.function));
    let last_event = events.into_iter().max_by_key(|event| (event.time, event.id));
    Ok(Progress { order, last_event, waiting })
}
