//! The saga deadline end to end (ARCHITECTURE.md §7.9): `choreo up` (the
//! embedded system) with a deadline of a few hundred milliseconds, its
//! sweeper running, every step real. A stuck saga is made by holding back
//! an event a step emitted (a lost message): the step runs directly on the
//! store and what it emits is kept, to be delivered after the deadline.
//! Each test checks the interleaving it names and that stock is conserved.

use std::sync::Arc;
use std::time::Duration;

use choreo::steps::step_for;
use choreo_e2e::{TestApp, default_catalog, spawn_app_with_deadline, stock};
use serde_json::Value;
use shared::bus::{OutboxRef, Publisher};
use shared::contract::events::{OrderCreated, OrderDeadlineReached};
use shared::step::{Ports, ShipCountries};
use shared::store::{Commit, CommitOutcome, Write};
use shared::testkit::{item, order_created, pending_order};
use shared::{Event, EventType, Function, Payload};

const DEADLINE: Duration = Duration::from_millis(300);

/// GIVEN an order accepted (its record stored) whose `order.created` was lost:
/// nothing delivered it. Answers the event, to deliver late.
async fn accepted_but_lost(app: &TestApp, sku: &str, quantity: i64) -> Event {
    let data: OrderCreated = order_created(vec![item(sku, quantity)]);
    let created =
        Event::new(Function::CreateOrder, shared::contract::domain::OrderId::new(), None, Payload::OrderCreated(data));
    let commit = Commit {
        function: Function::CreateOrder,
        key: created.id.to_string(),
        writes: vec![Write::Order(pending_order(&created))],
        emitted: vec![],
    };
    assert_eq!(app.store.commit(commit).await.expect("commit"), CommitOutcome::Committed);
    created
}

/// Runs `function`'s step on `event` against the app's store, as its host
/// would, but keeps what it emits instead of delivering it (held in flight).
async fn run_and_hold(app: &TestApp, function: Function, event: &Event) -> Vec<Event> {
    let step = step_for(function).expect("a consuming function");
    let ports = Ports { store: Arc::clone(&app.store), ship_countries: ShipCountries::default() };
    step.handle(event, &ports).await.expect("the step handles it")
}

/// Delivers `events` now, through the app's bus, and waits until every saga settles.
async fn deliver_late(app: &TestApp, events: &[Event]) {
    let origin = OutboxRef { function: Function::SagaDeadline, key: format!("late-{}", events[0].id) };
    app.bus.publish(&origin, events).await.expect("the bus takes them");
    app.settle().await;
}

/// Waits (up to 10 s) until the order is terminal; answers it.
async fn terminal(app: &TestApp, order_id: &str) -> Value {
    for _ in 0..200 {
        let order = app.order(order_id).await;
        if order["status"] == "SHIPPED" || order["status"] == "CANCELLED" {
            app.settle().await;
            return app.order(order_id).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {order_id} is still not terminal: {}", app.order(order_id).await);
}

fn assert_timed_out(order: &Value) {
    assert_eq!(
        (order["status"].as_str(), order["cancel_reason"].as_str()),
        (Some("CANCELLED"), Some("timed_out")),
        "{order}"
    );
    assert!(order.get("tracking_number").is_none_or(Value::is_null), "never both shipped and cancelled: {order}");
}

async fn units(app: &TestApp, sku: &str) -> (u64, u64, u64, u64) {
    let level = app.stock_of(sku).await;
    (level.available, level.reserved, level.shipped, level.replenished)
}

#[tokio::test]
async fn a_lost_order_created_is_cancelled_at_its_deadline_and_the_late_event_changes_nothing() {
    // GIVEN an order whose order.created was lost
    let app = spawn_app_with_deadline(&default_catalog(), DEADLINE).await;
    let created = accepted_but_lost(&app, "WIDGET-1", 2).await;
    let id = created.subject.to_string();

    // WHEN the deadline passes
    let order = terminal(&app, &id).await;

    // THEN it is cancelled as timed_out, with nothing held
    assert_timed_out(&order);
    assert_eq!(units(&app, "WIDGET-1").await, (100, 0, 0, 0));
    let shipment = app.store.shipment(created.subject).await.expect("read").expect("the tombstone");
    assert!(shipment.is_timed_out());

    // AND WHEN the lost order.created finally arrives (a redelivery), and the
    // deadline is delivered twice more (the same event, and a new one)
    deliver_late(&app, std::slice::from_ref(&created)).await;
    let fired = app.store.processed(Function::SagaDeadline, &id).await.expect("read").expect("the deadline fired");
    deliver_late(&app, &fired).await;
    let again = Event::new(
        Function::SagaDeadline,
        created.subject,
        None,
        Payload::OrderDeadlineReached(OrderDeadlineReached {
            items: vec![item("WIDGET-1", 2)],
            deadline: created.time,
        }),
    );
    deliver_late(&app, &[again]).await;

    // THEN it is still cancelled as timed_out, the late reservation was
    // released, nothing shipped, and stock is conserved
    assert_timed_out(&app.order(&id).await);
    assert_eq!(units(&app, "WIDGET-1").await, (100, 0, 0, 0));
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn the_deadline_before_a_shipment_in_flight_releases_and_nothing_ships() {
    // GIVEN an order reserved, its inventory.reserved still in flight to ship-order
    let app = spawn_app_with_deadline(&default_catalog(), DEADLINE).await;
    let created = accepted_but_lost(&app, "WIDGET-1", 3).await;
    let held = run_and_hold(&app, Function::ReserveInventory, &created).await;
    assert_eq!(held[0].event_type(), EventType::InventoryReserved);
    assert_eq!(units(&app, "WIDGET-1").await, (97, 3, 0, 0));

    // WHEN the deadline passes first
    let order = terminal(&app, &created.subject.to_string()).await;

    // THEN the reservation is released and the order cancelled as timed_out
    assert_timed_out(&order);
    assert_eq!(units(&app, "WIDGET-1").await, (100, 0, 0, 0));

    // AND WHEN the reservation reaches ship-order (and order-status) late
    deliver_late(&app, &held).await;

    // THEN nothing ships and nothing changes
    assert_timed_out(&app.order(&created.subject.to_string()).await);
    assert_eq!(units(&app, "WIDGET-1").await, (100, 0, 0, 0));
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn a_shipment_before_the_deadline_stands_and_the_deadline_changes_nothing() {
    // GIVEN an order that shipped (the normal path, long before its deadline)
    let app = spawn_app_with_deadline(&default_catalog(), Duration::from_secs(3600)).await;
    let body = choreo_e2e_body("WIDGET-1", 2);
    let order = app.place_and_settle(&body).await;
    assert_eq!(order["status"], "SHIPPED", "{order}");
    let id = order["order_id"].as_str().expect("an order id").to_owned();

    // WHEN its deadline is delivered anyway (the sweep read it just before it shipped)
    let subject = choreo_e2e::order_id(&id);
    let reached = OrderDeadlineReached { items: vec![item("WIDGET-1", 2)], deadline: chrono::Utc::now() };
    deliver_late(&app, &[Event::new(Function::SagaDeadline, subject, None, Payload::OrderDeadlineReached(reached))])
        .await;

    // THEN it stays shipped, its units shipped, nothing released
    let order = app.order(&id).await;
    assert_eq!((order["status"].as_str(), order.get("cancel_reason")), (Some("SHIPPED"), None), "{order}");
    assert_eq!(units(&app, "WIDGET-1").await, (98, 0, 2, 0));
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn a_replenishment_after_the_deadline_is_reserved_then_released() {
    // GIVEN an order for 10 of GADGET-2 (5 on the shelf): the shortfall was
    // replenished, but its stock.replenished is still in flight
    let app = spawn_app_with_deadline(&[stock("GADGET-2", 5, 50)], DEADLINE).await;
    let created = accepted_but_lost(&app, "GADGET-2", 10).await;
    let insufficient = run_and_hold(&app, Function::ReserveInventory, &created).await;
    assert_eq!(insufficient[0].event_type(), EventType::InventoryInsufficient);
    let replenished = run_and_hold(&app, Function::ReplenishStock, &insufficient[0]).await;
    assert_eq!(replenished[0].event_type(), EventType::StockReplenished);
    assert_eq!(units(&app, "GADGET-2").await, (10, 0, 0, 5));

    // WHEN the deadline passes first
    let order = terminal(&app, &created.subject.to_string()).await;
    assert_timed_out(&order);

    // AND the replenishment arrives after it: reserve-inventory reserves the 10
    deliver_late(&app, &replenished).await;

    // THEN that reservation was answered by ship-order's tombstone and
    // released: the order stays cancelled, the 10 units are free again
    assert_timed_out(&app.order(&created.subject.to_string()).await);
    assert_eq!(units(&app, "GADGET-2").await, (10, 0, 0, 5));
    let reservation = app.store.reservation(created.subject).await.expect("read").expect("the late reservation");
    assert_eq!(reservation.state, shared::store::ReservationState::Released);
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn a_stuck_saga_is_listed_with_what_it_waits_on_and_a_redrive_finishes_it() {
    // GIVEN a lost order.created, and a deadline far away
    let app = spawn_app_with_deadline(&default_catalog(), Duration::from_secs(3600)).await;
    let created = accepted_but_lost(&app, "WIDGET-1", 1).await;
    // (Open orders are listed by id, created before a millisecond: let the
    // order's millisecond pass, or a fast machine lists none.)
    tokio::time::sleep(Duration::from_millis(2)).await;

    // WHEN the stuck sagas are listed
    let stuck = choreo::sagas::stuck_progress(&*app.store, Duration::ZERO).await.expect("the store answers");

    // THEN this one waits on reserve-inventory, with order.created its last event
    let [saga] = stuck.as_slice() else { panic!("one stuck saga: {stuck:?}") };
    let line = choreo::sagas::describe(saga, &[]);
    assert_eq!((line.order_id.as_str(), line.status.as_str()), (created.subject.to_string().as_str(), "PENDING"));
    assert_eq!(line.waits_on, ["reserve-inventory"]);
    assert_eq!(line.last_event.map(|event| event.event_type), Some("order.created".to_owned()));

    // AND WHEN it is redriven through the store (the running system replays it)
    let handed = choreo::sagas::redrive(&*app.store, saga, &choreo::sagas::RedriveTo::Store).await.expect("redrive");
    assert_eq!(handed, 1);

    // THEN the saga finishes: shipped, and nothing is stuck any more
    let order = terminal(&app, &created.subject.to_string()).await;
    assert_eq!(order["status"], "SHIPPED", "{order}");
    let stuck = choreo::sagas::stuck_progress(&*app.store, Duration::ZERO).await.expect("the store answers");
    assert!(stuck.is_empty(), "{stuck:?}");
    app.assert_stock_conserved().await;
}

fn choreo_e2e_body(sku: &str, quantity: u64) -> Value {
    shared::testkit::order_body(sku, quantity, "FR")
}
