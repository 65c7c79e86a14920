//! Builders for the per-step tests, which read GIVEN (a store) / WHEN (an
//! event) / THEN (emitted events and state): a throwaway SQLite store seeded
//! with stock, sample orders and events, and the conservation check of ARCHITECTURE.md §7.8.
//!
//! Test support only: it panics on anything unexpected, with a message that
//! says what the test set up wrongly.
//!
//! Also shared by the tests of the other crates: a RabbitMQ vhost per test
//! (`broker`) and the body of `POST /orders` ([`order_body`]).

pub mod aws;
pub mod broker;
pub mod jwt;
pub mod kafka;
pub mod logs;
pub mod tls;

use std::sync::Arc;

use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use crate::contract::choreography::{CHOREOGRAPHY, Function};
use crate::contract::domain::{
    Address, AddressLine, CancelReason, Country, CustomerId, Item, OrderId, OrderStatus, Quantity, Sku, units_per_sku,
};
use crate::contract::events::{
    Event, EventType, InventoryInsufficient, InventoryRejected, InventoryReleased, InventoryReserved, OrderCancelled,
    OrderCreated, OrderDeadlineReached, OrderShipped, Payload, ReplenishmentFailed, ShipmentFailed, SkuUnits,
    StockReplenished,
};
use crate::step::{Ports, ShipCountries};
use crate::store::sqlite::SqliteStore;
use crate::store::{
    Commit, CommitOutcome, HistoryEntry, OrderRecord, Reservation, ReservationState, SeedStock, StockDelta, StockLevel,
    Store, Write,
};

pub fn sku(text: &str) -> Sku {
    Sku::parse(text).unwrap_or_else(|error| panic!("test SKU '{text}' {error}"))
}

pub fn item(sku_text: &str, quantity: i64) -> Item {
    let quantity = Quantity::parse(quantity).unwrap_or_else(|error| panic!("test quantity {error}"));
    Item { sku: sku(sku_text), quantity }
}

/// A valid address in `country` (two capital letters).
pub fn address(country: &str) -> Address {
    let line = |text: &str| AddressLine::parse(text).expect("sample address lines are valid");
    Address {
        name: line("Ada Lovelace"),
        line1: line("12 Analytical Row"),
        city: line("Paris"),
        postal_code: line("75001"),
        country: Country::parse(country).unwrap_or_else(|error| panic!("test country {error}")),
    }
}

/// An order for `items`, shipped to France.
pub fn order_created(items: Vec<Item>) -> OrderCreated {
    OrderCreated {
        customer_id: CustomerId::parse("customer-1").expect("sample customer id is valid"),
        items,
        shipping_address: address("FR"),
    }
}

/// A valid `POST /orders` body: `quantity` of `sku`, shipped to `country`
/// (the same customer and address as [`order_created`], but in `country`).
pub fn order_body(sku: &str, quantity: u64, country: &str) -> Value {
    json!({
        "customer_id": "customer-1",
        "items": [{"sku": sku, "quantity": quantity}],
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "12 Analytical Row",
            "city": "Paris",
            "postal_code": "75001",
            "country": country
        }
    })
}

/// `body` with one more line: `quantity` of `sku`.
pub fn with_item(mut body: Value, sku: &str, quantity: u64) -> Value {
    match body["items"].as_array_mut() {
        Some(items) => items.push(json!({"sku": sku, "quantity": quantity})),
        None => panic!("with_item needs a body with items, got {body}"),
    }
    body
}

/// An event about `order_id`, emitted by whichever function the choreography
/// table says emits its type (so `source` is what it would be in the saga).
pub fn event(order_id: OrderId, payload: Payload) -> Event {
    let event_type = payload.event_type();
    let emitter = CHOREOGRAPHY
        .iter()
        .find(|spec| spec.emits.contains(&event_type))
        .unwrap_or_else(|| panic!("nobody emits {event_type}"))
        .function;
    Event::new(emitter, order_id, None, payload)
}

/// A valid payload of `event_type`, about one unit of `SAMPLE-1` shipped to
/// France (the match is exhaustive: a new event type needs its sample here).
pub fn sample_payload(event_type: EventType) -> Payload {
    let items = vec![item("SAMPLE-1", 1)];
    let units = || vec![SkuUnits { sku: sku("SAMPLE-1"), units: 1 }];
    let detail = || format!("sample {event_type}");
    match event_type {
        EventType::OrderCreated => Payload::OrderCreated(order_created(items)),
        EventType::InventoryReserved => {
            Payload::InventoryReserved(InventoryReserved { items, shipping_address: address("FR") })
        }
        EventType::InventoryInsufficient => Payload::InventoryInsufficient(InventoryInsufficient {
            items,
            shipping_address: address("FR"),
            shortfall: units(),
            attempt: 1,
        }),
        EventType::InventoryRejected => {
            Payload::InventoryRejected(InventoryRejected { reason: CancelReason::UnknownSku, detail: detail() })
        }
        EventType::StockReplenished => Payload::StockReplenished(StockReplenished {
            items,
            shipping_address: address("FR"),
            replenished: units(),
            attempt: 1,
        }),
        EventType::ReplenishmentFailed => {
            Payload::ReplenishmentFailed(ReplenishmentFailed { reason: CancelReason::OutOfStock, detail: detail() })
        }
        EventType::OrderShipped => {
            Payload::OrderShipped(OrderShipped { items, tracking_number: "TRACK-SAMPLE".to_owned() })
        }
        EventType::ShipmentFailed => {
            Payload::ShipmentFailed(ShipmentFailed { items, detail: detail(), reason: CancelReason::ShipmentFailed })
        }
        EventType::InventoryReleased => {
            Payload::InventoryReleased(InventoryReleased { items, reason: CancelReason::ShipmentFailed })
        }
        EventType::OrderCancelled => {
            Payload::OrderCancelled(OrderCancelled { reason: CancelReason::ShipmentFailed, detail: detail() })
        }
        EventType::OrderDeadlineReached => {
            Payload::OrderDeadlineReached(OrderDeadlineReached { items, deadline: chrono::Utc::now() })
        }
    }
}

/// The payloads of emitted events, for comparing with what a step should emit.
pub fn payloads(events: &[Event]) -> Vec<&Payload> {
    events.iter().map(|event| &event.payload).collect()
}

/// The order record `create-order` stores for `created`: `PENDING`, with the
/// `order.created` entry in its history.
pub fn pending_order(created: &Event) -> OrderRecord {
    let Payload::OrderCreated(order) = &created.payload else {
        panic!("pending_order needs an order.created event, got {}", created.event_type());
    };
    OrderRecord {
        order_id: created.subject,
        status: OrderStatus::Pending,
        customer_id: order.customer_id.clone(),
        items: order.items.clone(),
        shipping_address: order.shipping_address.clone(),
        tracking_number: None,
        cancel_reason: None,
        history: vec![HistoryEntry::of(created)],
        placed_by: None,
        version: 0,
    }
}

/// GIVEN an order of `quantity` `sku_text` stored as `create-order` stores
/// it, but its `order.created` never published (lost); answers that event.
pub async fn given_lost_order(store: &dyn Store, sku_text: &str, quantity: i64) -> Event {
    let data = order_created(vec![item(sku_text, quantity)]);
    let created = Event::new(Function::CreateOrder, OrderId::new(), None, Payload::OrderCreated(data));
    let commit = Commit {
        function: Function::CreateOrder,
        key: created.id.to_string(),
        writes: vec![Write::Order(pending_order(&created))],
        emitted: vec![],
    };
    assert_eq!(store.commit(commit).await.expect("commit the lost order"), CommitOutcome::Committed);
    created
}

/// A SQLite store in its own temporary file, deleted when dropped.
pub struct TestStore {
    /// The store under test.
    pub store: Arc<SqliteStore>,
    /// Owns the directory holding the database file.
    _dir: TempDir,
}

impl TestStore {
    /// GIVEN a catalog of `(sku, available, max_replenish)`.
    pub async fn with_stock(catalog: &[(&str, u64, u64)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("choreo.db")).expect("open the test store");
        let catalog: Vec<SeedStock> = catalog
            .iter()
            .map(|&(text, available, max_replenish)| SeedStock { sku: sku(text), available, max_replenish })
            .collect();
        store.seed_if_empty(&catalog).await.expect("seed the test store");
        Self { store: Arc::new(store), _dir: dir }
    }

    /// Ports over this store, shipping everywhere but `AQ` (the default).
    pub fn ports(&self) -> Ports {
        self.ports_shipping_to(ShipCountries::default())
    }

    pub fn ports_shipping_to(&self, ship_countries: ShipCountries) -> Ports {
        Ports { store: Arc::clone(&self.store) as Arc<dyn Store>, ship_countries }
    }

    /// The stock of a SKU that must exist.
    pub async fn stock(&self, sku_text: &str) -> StockLevel {
        let mut levels = self.store.stock(&[sku(sku_text)]).await.expect("read stock");
        levels.pop().unwrap_or_else(|| panic!("SKU {sku_text} is not in the test catalog"))
    }

    /// GIVEN the order `created` started, stored as `create-order` stores it.
    pub async fn given_order(&self, created: &Event) -> OrderRecord {
        let order = pending_order(created);
        self.given(Function::CreateOrder, vec![Write::Order(order.clone())]).await;
        order
    }

    /// GIVEN `order_id` holds a reservation of `items`: their units moved
    /// from available to reserved, as `reserve-inventory` does.
    pub async fn given_reservation(&self, order_id: OrderId, items: &[Item]) -> Reservation {
        let units = units_per_sku(items);
        let skus: Vec<Sku> = units.keys().cloned().collect();
        let mut writes: Vec<Write> = Vec::new();
        for level in self.store.stock(&skus).await.expect("read stock") {
            let held = units[&level.sku];
            assert!(
                level.available >= held,
                "the test holds {held} of {} but only {} are available",
                level.sku,
                level.available
            );
            writes.push(Write::StockDelta(StockDelta::reserve(level.sku.clone(), held)));
        }
        assert_eq!(writes.len(), skus.len(), "a reserved SKU is not in the test catalog");
        let reservation =
            Reservation { order_id, items: items.to_vec(), state: ReservationState::Reserved, version: 0 };
        writes.push(Write::Reservation(reservation.clone()));
        self.given(Function::ReserveInventory, writes).await;
        reservation
    }

    /// Commits test setup under a key no event can have.
    async fn given(&self, function: Function, writes: Vec<Write>) {
        let commit = Commit { function, key: format!("testkit-{}", Uuid::new_v4()), writes, emitted: vec![] };
        let outcome = self.store.commit(commit).await.expect("commit the test setup");
        assert_eq!(outcome, CommitOutcome::Committed, "the test setup did not commit");
    }

    /// THEN, for every SKU: `available + reserved + shipped = seeded + replenished`.
    pub async fn assert_conserved(&self) {
        for level in self.store.all_stock().await.expect("read stock") {
            assert!(
                level.is_conserved(),
                "stock of {} is not conserved: available {} + reserved {} + shipped {} != seeded {} + replenished {}",
                level.sku,
                level.available,
                level.reserved,
                level.shipped,
                level.seeded,
                level.replenished
            );
        }
    }
}
