//! "Every event delivered twice (and some out of order): same final state as
//! delivered once" (ARCHITECTURE.md §7.1).
//!
//! System A runs one saga of every kind normally. Its `processed` table holds
//! every event each step emitted (ARCHITECTURE.md §7.1: the emitted events are stored
//! with the key of what the step consumed), which gives the whole record.
//! System B starts from the same catalog with the same orders committed as
//! `create-order` committed them in A (same ids, same `order.created`), and is
//! then handed A's events directly, each to every consumer the choreography
//! table names, twice, in several orders. Its final state must equal A's, and
//! each of its steps must have decided what A's did.
//!
//! The check is shown to have teeth: a store that forgets processed events
//! (so steps are no longer idempotent) makes the same schedule end elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use choreo_e2e::{TestApp, spawn_app, stock};
use chrono::{DateTime, Utc};
use shared::bus::{OutboxRef, Publisher};
use shared::contract::choreography::consumers_of;
use shared::contract::domain::{CancelReason, OrderId, OrderStatus, Sku};
use shared::contract::events::EventType;
use shared::step::ShipCountries;
use shared::store::{
    Commit, CommitOutcome, HistoryEntry, OrderRecord, OutboxEntry, Reservation, ReservationState, SeedStock, Shipment,
    StockLevel, Store, StoreError, Write,
};
use shared::testkit::order_body;
use shared::{Event, Function, Payload, Ports};
use uuid::Uuid;

fn catalog() -> Vec<SeedStock> {
    vec![
        stock("WIDGET-1", 100, 500),
        stock("GADGET-2", 5, 50),
        stock("RELIC-9", 1, 0),
        stock("BOLT-7", 1000, 1000),
        stock("GIZMO-3", 2, 10),
    ]
}

/// One saga of every kind, each on its own SKU so that no two compete for
/// stock (their relative order then cannot matter).
async fn run_every_kind_of_saga() -> TestApp {
    let app = spawn_app(&catalog()).await;
    for body in [
        order_body("WIDGET-1", 2, "FR"),  // ships
        order_body("GADGET-2", 10, "FR"), // waits for 5 more, then ships
        order_body("RELIC-9", 5, "FR"),   // discontinued: out_of_stock
        order_body("GIZMO-3", 13, "FR"),  // short of more than max_replenish: out_of_stock
        order_body("BOLT-7", 20, "AQ"),   // shipment fails, stock released
        order_body("NOPE-404", 1, "FR"),  // unknown_sku
    ] {
        app.post_order(&body).await.order_id();
    }
    app.settle().await;
    app.assert_stock_conserved().await;
    app
}

// ------------------------------------------------------------- final state

/// What a saga leaves behind, without the parts that differ by construction
/// between two runs (record versions; the id and time of the `order.cancelled`
/// that B's order-status emits itself).
#[derive(Debug, PartialEq)]
struct FinalState {
    orders: BTreeMap<OrderId, OrderOutcome>,
    stock: Vec<(Sku, [u64; 6])>,
    reservations: BTreeMap<OrderId, Option<(ReservationState, String)>>,
    shipments: BTreeMap<OrderId, Option<String>>,
}

#[derive(Debug, PartialEq)]
struct OrderOutcome {
    status: OrderStatus,
    cancel_reason: Option<CancelReason>,
    tracking_number: Option<String>,
    /// (type, source, id of events that came from outside order-status).
    history: Vec<(String, String, Option<Uuid>)>,
}

async fn final_state(store: &dyn Store, order_ids: &[OrderId]) -> FinalState {
    let mut state = FinalState {
        orders: BTreeMap::new(),
        stock: store
            .all_stock()
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.sku, [l.seeded, l.available, l.reserved, l.shipped, l.replenished, l.max_replenish]))
            .collect(),
        reservations: BTreeMap::new(),
        shipments: BTreeMap::new(),
    };
    for &id in order_ids {
        let order = store.order(id).await.unwrap().unwrap_or_else(|| panic!("order {id} exists"));
        let own_source = Function::OrderStatus.source();
        let history = order
            .history
            .iter()
            .map(|entry| {
                let id = (entry.source != own_source).then_some(entry.event_id);
                (entry.event_type.clone(), entry.source.clone(), id)
            })
            .collect();
        let outcome = OrderOutcome {
            status: order.status,
            cancel_reason: order.cancel_reason,
            tracking_number: order.tracking_number,
            history,
        };
        state.orders.insert(id, outcome);
        let reservation = store.reservation(id).await.unwrap();
        state.reservations.insert(id, reservation.map(|r| (r.state, serde_json::to_string(&r.items).unwrap())));
        let shipment = store.shipment(id).await.unwrap();
        state.shipments.insert(id, shipment.map(|s| s.tracking_number));
    }
    state
}

/// What each step emitted per consumed event, by payload: (function, key) → payloads.
fn decisions(recorded: &[OutboxEntry]) -> BTreeMap<(Function, String), Vec<Payload>> {
    recorded
        .iter()
        .map(|entry| {
            let payloads = entry.events.iter().map(|event| event.payload.clone()).collect();
            ((entry.function, entry.key.clone()), payloads)
        })
        .collect::<BTreeMap<_, _>>()
}

// ------------------------------------------------------------- deliveries

/// One delivery: an event of A's to one of its consumers.
#[derive(Clone)]
struct Delivery {
    function: Function,
    event: Event,
    /// Steps from the saga's `order.created` (0) along `causation_id`.
    depth: usize,
}

/// Every event A emitted, once per consumer, in causal order.
fn deliveries(recorded: &[OutboxEntry]) -> Vec<Delivery> {
    let events: Vec<&Event> = recorded.iter().flat_map(|entry| &entry.events).collect();
    let by_id: HashMap<Uuid, &Event> = events.iter().map(|event| (event.id, *event)).collect();
    let depth = |event: &Event| {
        let (mut depth, mut cause) = (0, event.causation_id);
        while let Some(id) = cause {
            let event = by_id.get(&id).unwrap_or_else(|| panic!("the cause {id} was recorded"));
            (depth, cause) = (depth + 1, event.causation_id);
        }
        depth
    };
    let mut deliveries: Vec<Delivery> = events
        .iter()
        .flat_map(|event| {
            consumers_of(event.event_type()).map(|function| Delivery {
                function,
                event: (*event).clone(),
                depth: depth(event),
            })
        })
        .collect();
    deliveries.sort_by_key(|delivery| (delivery.depth, delivery.event.subject));
    deliveries
}

/// Hands one event to one step as a bus would: a `Retryable` failure is
/// tried again (the in-process bus's default number of attempts), a
/// `Permanent` one would be dead-lettered and is answered as an error.
async fn deliver(ports: &Ports, delivery: &Delivery) -> Result<Vec<Event>, String> {
    let step = choreo::steps::step_for(delivery.function).expect("every consumer has a step");
    let mut attempt = 1;
    loop {
        match step.handle(&delivery.event, ports).await {
            Ok(emitted) => return Ok(emitted),
            Err(error) if error.is_retryable() && attempt <= choreo_e2e::test_delivery().max_retries => attempt += 1,
            Err(error) => {
                let (function, event) = (delivery.function, &delivery.event);
                return Err(format!("{function} <- {} {}: {error}", event.event_type(), event.id));
            }
        }
    }
}

/// A deterministic shuffle (xorshift), so a failure can be replayed by seed.
fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
    items
}

/// The orders of a schedule; each delivery of A's events appears twice in it.
enum Schedule {
    /// Causal order, every delivery repeated at once.
    EachTwiceInARow,
    /// The first round in an order the choreography allows but A never saw:
    /// order-status and ship-order get their events before the inventory
    /// steps run and newest first, the sagas interleave in reverse; then
    /// every delivery again, shuffled.
    ReorderedThenShuffled { seed: u64 },
}

impl Schedule {
    fn plan(&self, deliveries: &[Delivery]) -> Vec<Delivery> {
        match self {
            Schedule::EachTwiceInARow => deliveries.iter().flat_map(|d| [d.clone(), d.clone()]).collect(),
            Schedule::ReorderedThenShuffled { seed } => {
                // Only the inventory service's steps depend on each other's
                // effects (a retry needs the replenished stock, a settlement
                // needs the reservation), so only they keep causal order.
                let inventory = [Function::ReserveInventory, Function::ReplenishStock, Function::SettleInventory];
                let (mut inventory, mut others): (Vec<Delivery>, Vec<Delivery>) =
                    deliveries.iter().cloned().partition(|d| inventory.contains(&d.function));
                others.sort_by_key(|d| (d.function != Function::OrderStatus, std::cmp::Reverse(d.depth)));
                inventory.sort_by_key(|d| (d.depth, std::cmp::Reverse(d.event.subject)));
                let mut plan = others;
                plan.append(&mut inventory);
                plan.extend(shuffled(deliveries.to_vec(), *seed));
                plan
            }
        }
    }
}

// ------------------------------------------------------------- system B

/// Commits A's orders in B exactly as `create-order` committed them in A:
/// same order id, same key, same `order.created` in the outbox.
/// (`create_order::create` would mint new order ids, which A's events do not name.)
async fn commit_orders_as_in(store: &dyn Store, recorded: &[OutboxEntry]) {
    for entry in recorded.iter().filter(|entry| entry.function == Function::CreateOrder) {
        let [event] = entry.events.as_slice() else { panic!("create-order emits one event per order") };
        let Payload::OrderCreated(created) = &event.payload else { panic!("create-order emits order.created") };
        let record = OrderRecord {
            order_id: event.subject,
            status: OrderStatus::Pending,
            customer_id: created.customer_id.clone(),
            items: created.items.clone(),
            shipping_address: created.shipping_address.clone(),
            tracking_number: None,
            cancel_reason: None,
            history: vec![HistoryEntry::of(event)],
            placed_by: None,
            version: 0,
        };
        let commit = Commit {
            function: Function::CreateOrder,
            key: entry.key.clone(),
            writes: vec![Write::Order(record)],
            emitted: entry.events.clone(),
        };
        assert_eq!(store.commit(commit).await.unwrap(), CommitOutcome::Committed);
        store.mark_published(Function::CreateOrder, &entry.key).await.unwrap();
    }
}

/// Replays A's record on a fresh system B with the given schedule, the steps
/// seeing B's store through `wrap` (`unchanged`, or a faulty wrapper); answers
/// B and whether every delivery was handled.
async fn replay(
    recorded: &[OutboxEntry],
    schedule: &Schedule,
    wrap: fn(Arc<dyn Store>) -> Arc<dyn Store>,
) -> (TestApp, Result<(), String>) {
    let b = spawn_app(&catalog()).await;
    commit_orders_as_in(&*b.store, recorded).await;
    let ports = Ports { store: wrap(Arc::clone(&b.store)), ship_countries: ShipCountries::default() };
    for delivery in schedule.plan(&deliveries(recorded)) {
        if let Err(error) = deliver(&ports, &delivery).await {
            return (b, Err(error));
        }
    }
    // Nothing went through B's bus: the events were handed to the steps directly.
    assert_eq!(b.bus.in_flight(), 0);
    (b, Ok(()))
}

fn unchanged(store: Arc<dyn Store>) -> Arc<dyn Store> {
    store
}

async fn assert_replay_matches(schedule: Schedule) {
    // GIVEN every kind of saga, run once on system A
    let a = run_every_kind_of_saga().await;
    let recorded = a.recorded();
    let ids: Vec<OrderId> = commit_ids(&recorded);
    let expected = final_state(&*a.store, &ids).await;
    // ships 5, waits-then-ships 8, out_of_stock 4 + 4, shipment_failed 5, unknown_sku 2
    assert_eq!(deliveries(&recorded).len(), 28, "the sagas produced the expected deliveries");

    // WHEN B gets each of A's events twice, in this schedule
    let (b, outcome) = replay(&recorded, &schedule, unchanged).await;
    outcome.expect("every delivery is handled");

    // THEN B ends exactly where A did
    assert_eq!(final_state(&*b.store, &ids).await, expected);
    b.assert_stock_conserved().await;
    // AND every step decided what it decided in A, and handled nothing else
    assert_eq!(decisions(&b.recorded()), decisions(&recorded));
}

fn commit_ids(recorded: &[OutboxEntry]) -> Vec<OrderId> {
    let mut ids: Vec<OrderId> = recorded
        .iter()
        .filter(|entry| entry.function == Function::CreateOrder)
        .flat_map(|entry| entry.events.iter().map(|event| event.subject))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn every_event_delivered_twice_in_a_row_ends_as_delivered_once() {
    assert_replay_matches(Schedule::EachTwiceInARow).await;
}

#[tokio::test]
async fn every_event_delivered_twice_and_out_of_order_ends_as_delivered_once() {
    // The schedule really is out of order: some event reaches a consumer
    // before the event that caused it has reached any.
    let recorded = run_every_kind_of_saga().await.recorded();
    let plan = Schedule::ReorderedThenShuffled { seed: 1 }.plan(&deliveries(&recorded));
    let first_seen = |id| plan.iter().position(|d| d.event.id == id);
    let early = plan
        .iter()
        .enumerate()
        .filter(|(at, d)| d.event.causation_id.and_then(first_seen).is_some_and(|cause| cause > *at));
    assert!(early.count() > 0, "the schedule delivers some effects before their causes");

    for seed in 1..=5 {
        assert_replay_matches(Schedule::ReorderedThenShuffled { seed }).await;
    }
}

#[tokio::test]
async fn the_record_covers_every_path_of_the_saga() {
    // The redelivery tests are only as good as what A recorded.
    let a = run_every_kind_of_saga().await;
    let mut seen: Vec<EventType> =
        a.recorded().iter().flat_map(|entry| &entry.events).map(|event| event.event_type()).collect();
    seen.sort();
    seen.dedup();
    // Except the saga deadline: these sagas end in milliseconds, so it never
    // fires; its redeliveries are tested in saga_deadline.rs and the step tests.
    let expected: Vec<EventType> =
        EventType::ALL.iter().copied().filter(|event_type| *event_type != EventType::OrderDeadlineReached).collect();
    assert_eq!(seen, expected, "every event type occurs in the recorded sagas");
    let ids = commit_ids(&a.recorded());
    let state = final_state(&*a.store, &ids).await;
    let mut outcomes: Vec<(OrderStatus, Option<CancelReason>)> =
        state.orders.values().map(|order| (order.status, order.cancel_reason)).collect();
    outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
    assert_eq!(
        outcomes,
        [
            (OrderStatus::Cancelled, Some(CancelReason::OutOfStock)),
            (OrderStatus::Cancelled, Some(CancelReason::OutOfStock)),
            (OrderStatus::Cancelled, Some(CancelReason::ShipmentFailed)),
            (OrderStatus::Cancelled, Some(CancelReason::UnknownSku)),
            (OrderStatus::Shipped, None),
            (OrderStatus::Shipped, None),
        ]
    );
}

#[tokio::test]
async fn republishing_every_event_through_the_bus_changes_nothing() {
    // GIVEN every kind of saga, finished
    let a = run_every_kind_of_saga().await;
    let recorded = a.recorded();
    let ids = commit_ids(&recorded);
    let expected = final_state(&*a.store, &ids).await;

    // WHEN the bus carries every batch again, twice, newest first
    for entry in recorded.iter().rev().chain(recorded.iter()) {
        let origin = OutboxRef { function: entry.function, key: entry.key.clone() };
        a.bus.publish(&origin, &entry.events).await.expect("the bus routes every event");
    }
    a.settle().await;

    // THEN nothing moved, and nothing new was processed
    assert_eq!(final_state(&*a.store, &ids).await, expected);
    assert_eq!(decisions(&a.recorded()), decisions(&recorded));
    assert!(a.unpublished().await.is_empty());
    a.assert_stock_conserved().await;
}

// ------------------------------------------------------------- a duplicate alongside its twin

/// Holds the first `stock` read until some commit has landed (or `release`),
/// so that one of two concurrent handlers reads its records across the
/// other's commit: the interleaving a redelivery racing its original gets.
struct InterleavingStore {
    inner: Arc<dyn Store>,
    armed: std::sync::atomic::AtomicBool,
    released: tokio::sync::watch::Sender<bool>,
}

impl InterleavingStore {
    fn new(inner: Arc<dyn Store>) -> Self {
        let (released, _) = tokio::sync::watch::channel(false);
        Self { inner, armed: std::sync::atomic::AtomicBool::new(true), released }
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

#[async_trait]
impl Store for InterleavingStore {
    async fn processed(&self, function: Function, key: &str) -> Result<Option<Vec<Event>>, StoreError> {
        self.inner.processed(function, key).await
    }
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let outcome = self.inner.commit(commit).await;
        if matches!(outcome, Ok(CommitOutcome::Committed)) {
            self.release();
        }
        outcome
    }
    async fn unpublished(&self, committed_before: DateTime<Utc>) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.unpublished(committed_before).await
    }
    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError> {
        self.inner.mark_published(function, key).await
    }
    async fn unpublished_page(
        &self,
        committed_before: DateTime<Utc>,
        after: Option<shared::store::OutboxCursor>,
        limit: usize,
    ) -> Result<shared::store::OutboxPage, StoreError> {
        self.inner.unpublished_page(committed_before, after, limit).await
    }
    async fn set_aside(&self, function: &str, key: &str, reason: &str) -> Result<(), StoreError> {
        self.inner.set_aside(function, key, reason).await
    }
    async fn prune_processed(&self) -> Result<usize, StoreError> {
        self.inner.prune_processed().await
    }
    async fn put_stock(&self, level: &StockLevel) -> Result<bool, StoreError> {
        self.inner.put_stock(level).await
    }
    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, StoreError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let mut released = self.released.subscribe();
            let _ = released.wait_for(|released| *released).await;
        }
        self.inner.stock(skus).await
    }
    async fn all_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.inner.all_stock().await
    }
    async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        self.inner.reservation(order_id).await
    }
    async fn seed_if_empty(&self, catalog: &[SeedStock]) -> Result<usize, StoreError> {
        self.inner.seed_if_empty(catalog).await
    }
    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        self.inner.order(order_id).await
    }
    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError> {
        self.inner.shipment(order_id).await
    }
}

#[tokio::test]
async fn a_duplicate_handled_alongside_its_twin_gets_the_first_runs_answer() {
    // GIVEN an order that shipped on A, and B brought by A's events up to
    // the point where settle-inventory is handed order.shipped
    let a = spawn_app(&catalog()).await;
    let widget = a.post_order(&order_body("WIDGET-1", 2, "FR")).await.order_id();
    a.settle().await;
    let recorded = a.recorded();
    let ids = commit_ids(&recorded);
    let b = spawn_app(&catalog()).await;
    commit_orders_as_in(&*b.store, &recorded).await;
    let ports = Ports { store: Arc::clone(&b.store), ship_countries: ShipCountries::default() };
    let (settlements, others): (Vec<Delivery>, Vec<Delivery>) =
        deliveries(&recorded).into_iter().partition(|d| d.function == Function::SettleInventory);
    for delivery in &others {
        deliver(&ports, delivery).await.expect("every delivery is handled");
    }
    let [shipped] = settlements.as_slice() else { panic!("one order.shipped to settle") };

    // WHEN settle-inventory handles it twice at once, one of the two reading
    // the stock after the other committed
    let store = Arc::new(InterleavingStore::new(Arc::clone(&b.store)));
    let ports = Ports { store: Arc::clone(&store) as Arc<dyn Store>, ship_countries: ShipCountries::default() };
    let handle = || async {
        let outcome = deliver(&ports, shipped).await;
        store.release();
        outcome
    };
    let (first, second) = tokio::join!(handle(), handle());

    // THEN both end with what the first run emitted (nothing): a duplicate
    // is not a permanent error, so it must not be dead-lettered
    assert_eq!(first.map(|events| events.len()), Ok(0), "order {widget}");
    assert_eq!(second.map(|events| events.len()), Ok(0), "order {widget}");
    // AND the units left once
    assert_eq!(final_state(&*b.store, &ids).await, final_state(&*a.store, &ids).await);
    b.assert_stock_conserved().await;
}

// ------------------------------------------------------------- the check has teeth

/// A store that forgets which events it processed: every commit gets a fresh
/// key, so a redelivered event is applied again. Steps run on it are no longer
/// idempotent.
struct ForgetfulStore(Arc<dyn Store>);

#[async_trait]
impl Store for ForgetfulStore {
    async fn processed(&self, _function: Function, _key: &str) -> Result<Option<Vec<Event>>, StoreError> {
        Ok(None)
    }
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let key = format!("{}#{}", commit.key, Uuid::now_v7());
        self.0.commit(Commit { key, ..commit }).await
    }
    async fn unpublished(&self, committed_before: DateTime<Utc>) -> Result<Vec<OutboxEntry>, StoreError> {
        self.0.unpublished(committed_before).await
    }
    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError> {
        self.0.mark_published(function, key).await
    }
    async fn unpublished_page(
        &self,
        committed_before: DateTime<Utc>,
        after: Option<shared::store::OutboxCursor>,
        limit: usize,
    ) -> Result<shared::store::OutboxPage, StoreError> {
        self.0.unpublished_page(committed_before, after, limit).await
    }
    async fn set_aside(&self, function: &str, key: &str, reason: &str) -> Result<(), StoreError> {
        self.0.set_aside(function, key, reason).await
    }
    async fn prune_processed(&self) -> Result<usize, StoreError> {
        self.0.prune_processed().await
    }
    async fn put_stock(&self, level: &StockLevel) -> Result<bool, StoreError> {
        self.0.put_stock(level).await
    }
    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, StoreError> {
        self.0.stock(skus).await
    }
    async fn all_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.0.all_stock().await
    }
    async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        self.0.reservation(order_id).await
    }
    async fn seed_if_empty(&self, catalog: &[SeedStock]) -> Result<usize, StoreError> {
        self.0.seed_if_empty(catalog).await
    }
    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        self.0.order(order_id).await
    }
    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError> {
        self.0.shipment(order_id).await
    }
}

fn forgetful(store: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(ForgetfulStore(store))
}

#[tokio::test]
async fn the_check_catches_steps_that_are_not_idempotent() {
    // GIVEN A's record
    let a = run_every_kind_of_saga().await;
    let recorded = a.recorded();
    let ids = commit_ids(&recorded);
    let expected = final_state(&*a.store, &ids).await;

    // WHEN B replays it twice on a store that forgets processed events
    let (b, outcome) = replay(&recorded, &Schedule::EachTwiceInARow, forgetful).await;

    // THEN the comparison the tests above make fails: B ended elsewhere
    outcome.expect("the steps still run on a forgetful store");
    let actual = final_state(&*b.store, &ids).await;
    assert_ne!(actual, expected, "redelivery without idempotency went unnoticed");
    // (the replenishment of GADGET-2 was applied once per delivery)
    let gadget = actual.stock.iter().find(|(sku, _)| sku.as_str() == "GADGET-2").unwrap();
    assert_eq!(gadget.1[4], 2 * 5, "replenished twice by 5");
}
