//! A saga's full timeline (ARCHITECTURE.md §14.3), for `GET
//! /orders/{order_id}/timeline` and `choreo order show --timeline`: every
//! event found by walking the processed records (`progress::saga_records`,
//! the same walk `choreo sagas stuck` makes), in causal order, each with the
//! function that produced it, the gap since its cause, and every consumer
//! the table sends it to with what became of it: what it emitted, the
//! delivery notes (duplicate, retried, dead-lettered), or still waiting.
//! Read only when asked for: nothing of it costs a step anything.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::progress::saga_records;
use crate::contract::choreography::Function;
use crate::contract::domain::{OrderId, OrderStatus};
use crate::contract::events::Event;
use crate::store::{DeliveryNote, DeliveryOutcome, OrderRecord, Store, StoreError};

/// What a consumer has not done yet shows as this outcome.
pub const WAITING: &str = "waiting";

/// The timeline of one order's saga.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The order.
    pub order_id: OrderId,
    /// Where its saga stands.
    pub status: OrderStatus,
    /// The saga's trace (W3C trace id; on AWS also the X-Ray trace).
    pub trace_id: String,
    /// Every event of the saga, causes before effects, then by time.
    pub hops: Vec<Hop>,
}

/// One event of the saga and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it was emitted, RFC 3339 in UTC with microseconds.
    pub time: String,
    /// The function that emitted it.
    pub producer: String,
    /// The event it reacts to; absent for the saga's first events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_id: Option<Uuid>,
    /// Its span in the saga's trace.
    pub span_id: String,
    /// The span it is a child of: its cause's, or the caller's for `order.created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Milliseconds between its cause and it: the time this hop took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_ms: Option<f64>,
    /// Every function the table sends it to, and what became of the delivery.
    pub consumers: Vec<Consumption>,
}

/// One consumer of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Consumption {
    /// The consuming function.
    pub function: String,
    /// What became of its deliveries, in order: `retried`, `dead-lettered`,
    /// `emitted <types>` (or `emitted nothing`), `duplicate`; `waiting` when
    /// it has not handled the event yet.
    pub outcomes: Vec<String>,
}

/// The timeline of `order`'s saga, from the processed records and the delivery notes.
pub async fn timeline_of(store: &dyn Store, order: &OrderRecord) -> Result<Timeline, StoreError> {
    let records = saga_records(store, order).await?;
    let notes = store.delivery_notes(order.order_id).await?;
    let mut consumers: HashMap<Uuid, Vec<Consumption>> = HashMap::new();
    for (event, function, emitted) in &records.deliveries {
        let outcomes = outcomes(event.id, *function, emitted.as_deref(), &notes);
        consumers.entry(event.id).or_default().push(Consumption { function: function.name().to_owned(), outcomes });
    }
    let times: HashMap<Uuid, DateTime<Utc>> = records.events.iter().map(|event| (event.id, event.time)).collect();
    let ordered = causal_order(records.events);
    // Every event of a saga carries one trace id; the first that has one names it.
    let trace_id = ordered.iter().map(Event::trace_id).find(|id| !id.is_empty()).unwrap_or_default().to_owned();
    let hops = ordered
        .into_iter()
        .map(|event| {
            let gap_ms = event.causation_id.and_then(|cause| times.get(&cause)).map(|cause_time| {
                (event.time - *cause_time).num_microseconds().map_or(f64::MAX, |micros| micros as f64 / 1000.0)
            });
            Hop {
                event_id: event.id,
                event_type: event.event_type().as_str().to_owned(),
                time: event.time.to_rfc3339_opts(SecondsFormat::Micros, true),
                producer: event.source.strip_prefix("/functions/").unwrap_or(&event.source).to_owned(),
                cause_id: event.causation_id,
                span_id: event.span_id().to_owned(),
                parent_span_id: event.parent_span.clone(),
                gap_ms,
                consumers: consumers.remove(&event.id).unwrap_or_default(),
            }
        })
        .collect::<Vec<_>>();
    Ok(Timeline { order_id: order.order_id, status: order.status, trace_id, hops })
}

/// What became of `function`'s deliveries of event `event_id`.
fn outcomes(event_id: Uuid, function: Function, emitted: Option<&[Event]>, notes: &[DeliveryNote]) -> Vec<String> {
    let noted = |duplicates: bool| {
        notes
            .iter()
            .filter(move |note| note.event_id == event_id && note.function == function)
            .filter(move |note| (note.outcome == DeliveryOutcome::Duplicate) == duplicates)
            .map(|note| note.outcome.as_str().to_owned())
    };
    // Failures come before the run that handled it; duplicates after.
    let mut outcomes: Vec<String> = noted(false).collect();
    match emitted {
        Some([]) => outcomes.push("emitted nothing".to_owned()),
        Some(events) => {
            let names: Vec<&str> = events.iter().map(|event| event.event_type().as_str()).collect();
            outcomes.push(format!("emitted {}", names.join(", ")));
        }
        // A dead letter is where it stopped; otherwise it is still to come.
        None if outcomes.last().is_some_and(|last| last == DeliveryOutcome::DeadLettered.as_str()) => {}
        None => outcomes.push(WAITING.to_owned()),
    }
    outcomes.extend(noted(true));
    outcomes
}

/// Causes before their effects; among the events whose causes are placed,
/// the earliest first (by time, then id).
fn causal_order(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|event| (event.time, event.id));
    let present: std::collections::HashSet<Uuid> = events.iter().map(|event| event.id).collect();
    let mut placed = std::collections::HashSet::new();
    let mut ordered = Vec::with_capacity(events.len());
    while !events.is_empty() {
        // A cause outside the saga's records (pruned, or foreign) does not hold its effect back.
        let ready = events
            .iter()
            .position(|event| {
                event.causation_id.is_none_or(|cause| placed.contains(&cause) || !present.contains(&cause))
            })
            .unwrap_or(0);
        let event = events.remove(ready);
        placed.insert(event.id);
        ordered.push(event);
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::domain::{CancelReason, OrderId};
    use crate::contract::events::{OrderCancelled, Payload};

    fn event(cause: Option<&Event>, at_ms: i64) -> Event {
        let payload = Payload::OrderCancelled(OrderCancelled { reason: CancelReason::OutOfStock, detail: "-".into() });
        let mut event = Event::new(Function::OrderStatus, OrderId::new(), cause, payload);
        event.time = DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap();
        event
    }

    fn note(event: &Event, outcome: DeliveryOutcome) -> DeliveryNote {
        let function = Function::ShipOrder;
        DeliveryNote {
            order_id: event.subject,
            event_id: event.id,
            function,
            outcome,
            detail: String::new(),
            at: event.time,
        }
    }

    #[test]
    fn causes_come_before_their_effects_even_when_clocks_disagree() {
        let root = event(None, 1_000);
        // Emitted on a machine whose clock is behind the cause's.
        let effect = event(Some(&root), 900);
        let other_root = event(None, 950);
        let ids: Vec<Uuid> = causal_order(vec![effect.clone(), other_root.clone(), root.clone()])
            .into_iter()
            .map(|event| event.id)
            .collect();
        assert_eq!(ids, [other_root.id, root.id, effect.id]);
    }

    #[test]
    fn outcomes_put_failures_first_duplicates_last_and_say_what_is_still_to_come() {
        let cause = event(None, 0);
        let emitted = [event(Some(&cause), 1)];
        let notes = [note(&cause, DeliveryOutcome::Duplicate), note(&cause, DeliveryOutcome::Retried)];
        let handled = outcomes(cause.id, Function::ShipOrder, Some(&emitted), &notes);
        assert_eq!(handled, ["retried", "emitted order.cancelled", "duplicate"]);
        assert_eq!(outcomes(cause.id, Function::ShipOrder, Some(&[]), &[]), ["emitted nothing"]);
        assert_eq!(outcomes(cause.id, Function::ShipOrder, None, &notes[1..]), ["retried", WAITING]);
        let parked = [note(&cause, DeliveryOutcome::DeadLettered)];
        assert_eq!(outcomes(cause.id, Function::ShipOrder, None, &parked), ["dead-lettered"]);
        // Another function's notes are not this one's.
        assert_eq!(outcomes(cause.id, Function::SettleInventory, None, &parked), [WAITING]);
    }
}
