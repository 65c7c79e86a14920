//! The event contracts: every event type with its payload, declared once
//! (`declare_events!`), and the CloudEvents 1.0 envelope of ARCHITECTURE.md §5.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract::choreography::Function;
use crate::contract::domain::{Address, CancelReason, CustomerId, Item, OrderId, Sku};
use crate::contract::trace::TraceParent;

/// Declares the event list once: the `EventType` enum with its wire names,
/// `EventType::ALL`, and the `Payload` enum that pairs each type with its data.
macro_rules! declare_events {
    ($($variant:ident($data:ident) = $name:literal,)*) => {
        /// Routing key and CloudEvents `type` of an event.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $($variant,)* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(EventType::$variant),)* _ => None }
            }
        }

        /// An event's `data`, typed by its event type.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Payload { $($variant($data),)* }

        impl Payload {
            pub fn event_type(&self) -> EventType {
                match self { $(Payload::$variant(_) => EventType::$variant,)* }
            }

            fn to_data(&self) -> serde_json::Value {
                // Payloads are plain structs of strings and numbers: serializing cannot fail.
                match self { $(Payload::$variant(data) => serde_json::to_value(data).expect("payload serializes"),)* }
            }

            fn from_data(event_type: EventType, data: serde_json::Value) -> Result<Self, serde_json::Error> {
                match event_type { $(EventType::$variant => serde_json::from_value(data).map(Payload::$variant),)* }
            }
        }
    };
}

declare_events! {
    OrderCreated(OrderCreated) = "order.created",
    InventoryReserved(InventoryReserved) = "inventory.reserved",
    InventoryInsufficient(InventoryInsufficient) = "inventory.insufficient",
    InventoryRejected(InventoryRejected) = "inventory.rejected",
    StockReplenished(StockReplenished) = "stock.replenished",
    ReplenishmentFailed(ReplenishmentFailed) = "replenishment.failed",
    OrderShipped(OrderShipped) = "order.shipped",
    ShipmentFailed(ShipmentFailed) = "shipment.failed",
    InventoryReleased(InventoryReleased) = "inventory.released",
    OrderCancelled(OrderCancelled) = "order.cancelled",
    OrderDeadlineReached(OrderDeadlineReached) = "order.deadline_reached",
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Units of one SKU (a sum over order lines, so not bounded like `Quantity`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuUnits {
    /// The SKU concerned.
    pub sku: Sku,
    /// Units of it: missing (a shortfall) or delivered (a replenishment).
    pub units: u64,
}

/// Reservation attempt counter carried through insufficient → replenished → retry,
/// so no step needs to remember it (1 = the first try on `order.created`).
pub type Attempt = u32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// Who placed the order; the event carries the whole order the saga starts from.
    pub customer_id: CustomerId,
    /// The lines `reserve-inventory` reserves.
    pub items: Vec<Item>,
    /// Carried along so that no later step has to read the order record.
    pub shipping_address: Address,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    /// The reserved lines, which `ship-order` passes on for settling.
    pub items: Vec<Item>,
    /// Where `ship-order` delivers.
    pub shipping_address: Address,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryInsufficient {
    /// The whole order, so the retried reservation needs no order read.
    pub items: Vec<Item>,
    /// Carried on to the retried reservation and then to `ship-order`.
    pub shipping_address: Address,
    /// Units missing per SKU: what `replenish-stock` orders from the supplier.
    pub shortfall: Vec<SkuUnits>,
    /// The reservation attempt that fell short (1: the first).
    pub attempt: Attempt,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRejected {
    /// Why no reservation is possible; becomes the order's `cancel_reason`.
    pub reason: CancelReason,
    /// For people: which SKUs, and how short.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReplenished {
    /// The whole order, for the retried reservation.
    pub items: Vec<Item>,
    /// Carried on to the retried reservation.
    pub shipping_address: Address,
    /// Units the supplier delivered per SKU (the shortfall).
    pub replenished: Vec<SkuUnits>,
    /// The attempt that fell short; the retry is `attempt + 1`, capped.
    pub attempt: Attempt,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplenishmentFailed {
    /// Why (`out_of_stock`); becomes the order's `cancel_reason`.
    pub reason: CancelReason,
    /// For people: each refused SKU and why.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    /// The shipped lines: `settle-inventory` moves them from reserved to shipped.
    pub items: Vec<Item>,
    /// The carrier's number, shown on the order.
    pub tracking_number: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentFailed {
    /// The lines `settle-inventory` puts back on the shelf (the compensation).
    pub items: Vec<Item>,
    /// For people: why the carrier could not ship.
    pub detail: String,
    /// Why it will never ship, passed on to `inventory.released` and the
    /// order's `cancel_reason`: `shipment_failed` (the carrier) or
    /// `timed_out` (the saga deadline passed first). Absent in events of
    /// older versions, which only failed for the carrier.
    #[serde(default = "carrier_failure")]
    pub reason: CancelReason,
}

fn carrier_failure() -> CancelReason {
    CancelReason::ShipmentFailed
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReleased {
    /// The lines put back on the shelf.
    pub items: Vec<Item>,
    /// The failure that caused the release; becomes the order's `cancel_reason`.
    pub reason: CancelReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// Why the saga ended: the order's `cancel_reason`.
    pub reason: CancelReason,
    /// For people, from the step that failed.
    pub detail: String,
}

/// The saga deadline of an order passed while it was not terminal (emitted by
/// the `saga-deadline` sweeper, ARCHITECTURE.md §7.9). `ship-order`, the one
/// place that decides whether goods leave, settles the race with shipping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDeadlineReached {
    /// The order's lines, so that `shipment.failed` can name what to release.
    pub items: Vec<Item>,
    /// When the deadline passed: the order's creation plus the saga deadline.
    pub deadline: DateTime<Utc>,
}

/// A CloudEvent (ARCHITECTURE.md §5) with its data typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// UUID v7: unique, and sorts by creation time.
    pub id: Uuid,
    /// `/functions/<name>` of the emitter.
    pub source: String,
    /// The order the event is about.
    pub subject: OrderId,
    /// When it was emitted; orders the saga history.
    pub time: DateTime<Utc>,
    /// Id of the event this one reacts to; `None` for `order.created`.
    pub causation_id: Option<Uuid>,
    /// W3C trace context, inherited along the saga so one trace spans it;
    /// its span id is this event's own (the hop that emitted it).
    pub traceparent: String,
    /// The span this event's hop is a child of: its cause's span, or for
    /// `order.created` the caller's (CloudEvents extension `parentspan`).
    pub parent_span: Option<String>,
    /// The typed `data`; its variant is the event type.
    pub payload: Payload,
}

impl Event {
    /// A new event emitted by `emitter` in reaction to `cause` (or starting a
    /// saga in a new trace): the cause's trace, with a span of its own whose
    /// parent is the cause's span.
    pub fn new(emitter: Function, subject: OrderId, cause: Option<&Event>, payload: Payload) -> Self {
        let parent = match cause {
            // A cause from a producer that sent no valid trace context starts one.
            Some(cause) => TraceParent::parse(&cause.traceparent).unwrap_or_else(TraceParent::new_root),
            None => TraceParent::new_root(),
        };
        let mut event = Self::in_trace(emitter, subject, &parent, payload);
        event.causation_id = cause.map(|cause| cause.id);
        if cause.is_none() {
            // A trace of its own: nobody's child.
            event.parent_span = None;
        }
        event
    }

    /// The first event of a saga, in the caller's trace (`POST /orders`):
    /// a child span of the caller's.
    pub fn in_trace(emitter: Function, subject: OrderId, parent: &TraceParent, payload: Payload) -> Self {
        let id = Uuid::now_v7();
        // The span id is this event's own id, so a trace names its events.
        let span_id = &id.simple().to_string()[16..];
        Self {
            id,
            source: emitter.source(),
            subject,
            time: Utc::now(),
            causation_id: None,
            traceparent: format!("00-{}-{span_id}-{:02x}", parent.trace_id, parent.flags),
            parent_span: Some(parent.span_id.clone()),
            payload,
        }
    }

    /// The trace id of `traceparent` (empty when a producer sent none).
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The span id of `traceparent`: the hop that emitted this event.
    pub fn span_id(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or_default()
    }

    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // The wire struct holds only strings and JSON values: serializing cannot fail.
        serde_json::to_vec(&WireEvent::from(self)).expect("event serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        let wire: WireEvent = serde_json::from_slice(bytes).map_err(EventDecodeError::Envelope)?;
        Self::try_from(wire)
    }
}

/// Why a message could not be read as one of our events. Never worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("not a CloudEvent in JSON structured mode: {0}")]
    Envelope(serde_json::Error),
    #[error("unsupported CloudEvents specversion '{0}', expected '1.0'")]
    SpecVersion(String),
    #[error("unknown event type '{0}'")]
    UnknownType(String),
    #[error("subject '{0}' is not an order id")]
    Subject(String),
    #[error("data of '{event_type}' does not match its contract: {source}")]
    Data { event_type: EventType, source: serde_json::Error },
}

/// The CloudEvents JSON shape, field for field.
#[derive(Serialize, Deserialize)]
struct WireEvent {
    /// Always `1.0`; checked on the way in.
    specversion: String,
    /// `Event::id`.
    id: Uuid,
    /// `Event::source`.
    source: String,
    /// `type`: the event type's wire name, parsed on the way in.
    #[serde(rename = "type")]
    event_type: String,
    /// The order id as text, parsed on the way in.
    subject: String,
    /// `Event::time`.
    time: DateTime<Utc>,
    /// Always `application/json`; defaulted when a producer leaves it out.
    #[serde(default = "json_content_type")]
    datacontenttype: String,
    /// `Event::causation_id`; left out when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causationid: Option<Uuid>,
    /// `Event::traceparent`; empty when a producer sent none.
    #[serde(default)]
    traceparent: String,
    /// `Event::parent_span`; left out when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parentspan: Option<String>,
    /// The payload as JSON, typed by `type` on the way in.
    data: serde_json::Value,
}

fn json_content_type() -> String {
    "application/json".into()
}

impl From<&Event> for WireEvent {
    fn from(event: &Event) -> Self {
        Self {
            specversion: "1.0".into(),
            id: event.id,
            source: event.source.clone(),
            event_type: event.event_type().as_str().into(),
            subject: event.subject.to_string(),
            time: event.time,
            datacontenttype: json_content_type(),
            causationid: event.causation_id,
            traceparent: event.traceparent.clone(),
            parentspan: event.parent_span.clone(),
            data: event.payload.to_data(),
        }
    }
}

impl TryFrom<WireEvent> for Event {
    type Error = EventDecodeError;

    fn try_from(wire: WireEvent) -> Result<Self, Self::Error> {
        if wire.specversion != "1.0" {
            return Err(EventDecodeError::SpecVersion(wire.specversion));
        }
        let event_type = EventType::parse(&wire.event_type).ok_or(EventDecodeError::UnknownType(wire.event_type))?;
        let subject = OrderId::parse(&wire.subject).map_err(|_| EventDecodeError::Subject(wire.subject))?;
        let payload = Payload::from_data(event_type, wire.data)
            .map_err(|source| EventDecodeError::Data { event_type, source })?;
        Ok(Self {
            id: wire.id,
            source: wire.source,
            subject,
            time: wire.time,
            causation_id: wire.causationid,
            traceparent: wire.traceparent,
            parent_span: wire.parentspan,
            payload,
        })
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireEvent::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Event::try_from(WireEvent::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::domain::{Country, Quantity};

    fn cancelled() -> Event {
        Event::new(
            Function::OrderStatus,
            OrderId::new(),
            None,
            Payload::OrderCancelled(OrderCancelled { reason: CancelReason::OutOfStock, detail: "none left".into() }),
        )
    }

    #[test]
    fn the_envelope_round_trips_and_has_the_cloudevents_fields() {
        let event = cancelled();
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "order.cancelled");
        assert_eq!(json["source"], "/functions/order-status");
        assert_eq!(json["subject"], event.subject.to_string());
        assert_eq!(json["data"]["reason"], "out_of_stock");
        assert_eq!(Event::from_json(&event.to_json()).unwrap(), event);
    }

    #[test]
    fn a_caused_event_continues_the_trace() {
        let cause = cancelled();
        let effect = Event::new(Function::OrderStatus, cause.subject, Some(&cause), cause.payload.clone());
        assert_eq!(effect.causation_id, Some(cause.id));
        assert_eq!(effect.traceparent[..35], cause.traceparent[..35]);
        assert_ne!(effect.traceparent, cause.traceparent);
        assert_eq!(effect.traceparent.len(), 55);
        assert_eq!(effect.trace_id(), cause.trace_id());
        assert_eq!(effect.parent_span.as_deref(), Some(cause.span_id()));
        assert_eq!(Event::from_json(&effect.to_json()).unwrap(), effect);
    }

    #[test]
    fn a_saga_started_in_a_callers_trace_is_a_child_of_its_span() {
        let caller = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let root = cancelled();
        let event = Event::in_trace(Function::CreateOrder, OrderId::new(), &caller, root.payload);
        assert_eq!(event.trace_id(), caller.trace_id);
        assert_eq!(event.parent_span.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(event.span_id(), caller.span_id);
        assert!(event.traceparent.ends_with("-00"), "the caller's flags are kept: {}", event.traceparent);
        assert_eq!(cancelled().parent_span, None, "a saga of its own is nobody's child");
    }

    #[test]
    fn bad_messages_are_named_precisely() {
        let mut json: serde_json::Value = serde_json::from_slice(&cancelled().to_json()).unwrap();
        json["type"] = "order.teleported".into();
        let error = Event::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(matches!(error, EventDecodeError::UnknownType(ref name) if name == "order.teleported"));
        json["type"] = "order.shipped".into();
        let error = Event::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(matches!(error, EventDecodeError::Data { event_type: EventType::OrderShipped, .. }));
        assert!(matches!(Event::from_json(b"nope"), Err(EventDecodeError::Envelope(_))));
    }

    #[test]
    fn payload_fields_are_validated_on_the_way_in() {
        let item = Item { sku: Sku::parse("A-1").unwrap(), quantity: Quantity::parse(1).unwrap() };
        let event = Event::new(
            Function::ShipOrder,
            OrderId::new(),
            None,
            Payload::ShipmentFailed(ShipmentFailed {
                items: vec![item],
                detail: "no".into(),
                reason: CancelReason::ShipmentFailed,
            }),
        );
        let text = String::from_utf8(event.to_json()).unwrap().replace("\"A-1\"", "\"a 1\"");
        assert!(matches!(Event::from_json(text.as_bytes()), Err(EventDecodeError::Data { .. })));
        assert!(Country::parse("AQ").is_ok());
    }

    #[test]
    fn a_shipment_failed_of_an_older_version_failed_for_the_carrier() {
        let item = Item { sku: Sku::parse("A-1").unwrap(), quantity: Quantity::parse(1).unwrap() };
        let failed = ShipmentFailed { items: vec![item], detail: "no".into(), reason: CancelReason::TimedOut };
        let mut json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["reason"], "timed_out");
        json.as_object_mut().unwrap().remove("reason");
        let older: ShipmentFailed = serde_json::from_value(json).unwrap();
        assert_eq!(older.reason, CancelReason::ShipmentFailed);
    }
}
