//! The records each service owns, as steps read and write them. Every
//! versioned record carries the `version` it was read at (0: not stored yet);
//! the rules for writing them are on the port, `super`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract::domain::{Address, CancelReason, CustomerId, Item, OrderId, OrderStatus, Sku};
use crate::contract::events::Event;

/// Stock of one SKU (inventory service). `version` 0 means "not stored yet".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// The record's key.
    pub sku: Sku,
    /// Units present when the catalog was seeded; with `replenished` it is
    /// the right-hand side of the conservation rule.
    pub seeded: u64,
    /// Units free to reserve.
    pub available: u64,
    /// Units held for orders not yet shipped or released.
    pub reserved: u64,
    /// Units that left the warehouse.
    pub shipped: u64,
    /// Units the supplier delivered since seeding.
    pub replenished: u64,
    /// Largest shortfall the supplier will fill in one replenishment; 0 = discontinued.
    pub max_replenish: u64,
    /// The version read; a whole-level write applies only while it is still current.
    pub version: u64,
}

impl StockLevel {
    /// ARCHITECTURE.md §7.8: `available + reserved + shipped = seeded + replenished`.
    pub fn is_conserved(&self) -> bool {
        self.available + self.reserved + self.shipped == self.seeded + self.replenished
    }
}

/// A catalog entry of `infra/inventory.seed.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedStock {
    /// The catalog entry's SKU.
    pub sku: Sku,
    /// Units on the shelf when the store is seeded.
    pub available: u64,
    /// Largest shortfall the supplier fills at once; 0 = discontinued.
    pub max_replenish: u64,
}

impl SeedStock {
    /// The stock level a new catalog entry starts with (not stored yet).
    pub fn initial_level(&self) -> StockLevel {
        StockLevel {
            sku: self.sku.clone(),
            seeded: self.available,
            available: self.available,
            reserved: 0,
            shipped: 0,
            replenished: 0,
            max_replenish: self.max_replenish,
            version: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// Units moved from available to reserved.
    Reserved,
    /// Units left the warehouse: reserved → shipped.
    Shipped,
    /// Compensated: reserved → available.
    Released,
}

impl ReservationState {
    /// The stored name of the state (the same as its JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Shipped => "shipped",
            Self::Released => "released",
        }
    }

    /// The state a stored name stands for; `None` for a name no version wrote.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Reserved, Self::Shipped, Self::Released].into_iter().find(|state| state.as_str() == name)
    }
}

/// Units held for one order (inventory service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The order whose units are held (the record's key).
    pub order_id: OrderId,
    /// The reserved lines: what settling moves, checked against the settling event.
    pub items: Vec<Item>,
    /// Where the units are now; only a `Reserved` reservation can be settled.
    pub state: ReservationState,
    /// The version read (0: not stored yet); stops twin deliveries settling twice.
    pub version: u64,
}

/// One line of an order's saga history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The event's type, shown as `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the event was emitted.
    pub time: DateTime<Utc>,
    /// Which function emitted it.
    pub source: String,
    /// Lets a redelivered event be recognised and recorded once.
    pub event_id: Uuid,
    /// The trace context of a saga's first event (`order.created`), so the
    /// timeline can start from the order record; empty for the other lines
    /// and in records of older versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
    /// That event's parent span (see `Event::parent_span`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span: Option<String>,
}

impl HistoryEntry {
    pub fn of(event: &Event) -> Self {
        let starts_saga = event.causation_id.is_none();
        Self {
            event_type: event.event_type().as_str().to_owned(),
            time: event.time,
            source: event.source.clone(),
            event_id: event.id,
            // Only a saga's first events need it here (the timeline starts from
            // the order record); later ones are in the processed records, so the
            // order record does not grow by a trace per line.
            traceparent: if starts_saga { event.traceparent.clone() } else { String::new() },
            parent_span: event.parent_span.clone().filter(|_| starts_saga),
        }
    }
}

/// The order record (orders service), as `GET /orders/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// The record's key.
    pub order_id: OrderId,
    /// Where the saga stands; only ever moves forward.
    pub status: OrderStatus,
    /// Who ordered.
    pub customer_id: CustomerId,
    /// The order lines as placed.
    pub items: Vec<Item>,
    /// Where it goes.
    pub shipping_address: Address,
    /// Set once shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// Set once cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// Who placed it, when the API knows (ARCHITECTURE.md §14.4): the IAM
    /// caller's ARN, or `customer:<id>` for a JWT's customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_by: Option<String>,
    /// Sorted by event time, then id (v7 ids sort by creation), so the
    /// history reads causally even when events were delivered out of order.
    pub history: Vec<HistoryEntry>,
    /// The version read (0: not stored yet); kept out of the JSON body.
    #[serde(skip)]
    pub version: u64,
}

impl OrderRecord {
    pub fn record(&mut self, event: &Event) {
        if self.history.iter().all(|entry| entry.event_id != event.id) {
            self.history.push(HistoryEntry::of(event));
            self.history.sort_by_key(|entry| (entry.time, entry.event_id));
        }
    }
}

/// A parcel handed to the carrier (shipping service), or the tombstone of
/// an order whose saga deadline passed first and so never ships.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// The order (the record's key): its existence decides, once, whether
    /// the goods leave: shipped, or timed out and never shipped.
    pub order_id: OrderId,
    /// The carrier's number, also sent in `order.shipped`;
    /// [`Shipment::TIMED_OUT`] for a tombstone (no number is ever that).
    pub tracking_number: String,
    /// The version read (0: not stored yet).
    pub version: u64,
}

impl Shipment {
    /// The tracking number a tombstone holds. Kept in the same column so
    /// that both stores hold tombstones without a schema change; real
    /// numbers are `CHR` and hex digits.
    pub const TIMED_OUT: &'static str = "-timed-out-";

    /// The tombstone `ship-order` writes when the deadline wins the race
    /// (not stored yet): a later `inventory.reserved` must not ship.
    pub fn timed_out(order_id: OrderId) -> Self {
        Self { order_id, tracking_number: Self::TIMED_OUT.to_owned(), version: 0 }
    }

    /// Whether this record is a tombstone rather than a parcel.
    pub fn is_timed_out(&self) -> bool {
        self.tracking_number == Self::TIMED_OUT
    }
}

/// A relative change of one SKU's stock counters. Unlike the versioned
/// writes it is applied to whatever is stored when the commit runs (no
/// version check), so sagas on one popular SKU do not conflict with each
/// other; it only must not take a counter below zero. A delta that would, or
/// one of an unknown SKU, fails the whole commit with `Conflict` (the step
/// re-reads and decides again: a reservation may now be insufficient).
///
/// The constructors keep the conservation rule by construction: each one's
/// `available + reserved + shipped` change equals its `replenished` change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockDelta {
    /// The stock level it changes; an unknown SKU fails the commit.
    pub sku: Sku,
    /// Change of `available`.
    pub available: i64,
    /// Change of `reserved`.
    pub reserved: i64,
    /// Change of `shipped`.
    pub shipped: i64,
    /// Change of `replenished`.
    pub replenished: i64,
}

impl StockDelta {
    /// `units` go from available to reserved (`reserve-inventory`).
    pub fn reserve(sku: Sku, units: u64) -> Self {
        let units = signed(units);
        Self { sku, available: -units, reserved: units, shipped: 0, replenished: 0 }
    }

    /// `units` arrive from the supplier (`replenish-stock`).
    pub fn replenish(sku: Sku, units: u64) -> Self {
        let units = signed(units);
        Self { sku, available: units, reserved: 0, shipped: 0, replenished: units }
    }

    /// Reserved `units` leave the warehouse: reserved → shipped (`settle-inventory`).
    pub fn ship(sku: Sku, units: u64) -> Self {
        let units = signed(units);
        Self { sku, available: 0, reserved: -units, shipped: units, replenished: 0 }
    }

    /// Reserved `units` go back on the shelf: reserved → available (`settle-inventory`).
    pub fn release(sku: Sku, units: u64) -> Self {
        let units = signed(units);
        Self { sku, available: units, reserved: -units, shipped: 0, replenished: 0 }
    }

    /// Whether applying it keeps `available + reserved + shipped = seeded + replenished`.
    pub fn is_conserving(&self) -> bool {
        self.available + self.reserved + self.shipped == self.replenished
    }
}

fn signed(units: u64) -> i64 {
    // Unit counts are sums of 1..=1000 quantities: far below i64::MAX.
    i64::try_from(units).unwrap_or(i64::MAX)
}
