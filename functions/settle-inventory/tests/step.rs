//! `settle-inventory`, one behaviour per test: GIVEN a reservation, WHEN the
//! order shipped or its shipment failed, THEN the events it emits and where
//! the reserved units went.

use settle_inventory::SettleInventory;
use shared::contract::domain::{CancelReason, Item, OrderId};
use shared::contract::events::{InventoryReleased, InventoryReserved, OrderShipped, ShipmentFailed};
use shared::store::{ReservationState, Store};
use shared::testkit::{TestStore, address, event, item, payloads};
use shared::{Event, Payload, Step, StepError};

fn shipped(order_id: OrderId, items: Vec<Item>) -> Event {
    event(order_id, Payload::OrderShipped(OrderShipped { items, tracking_number: "CHR0123456789AB".into() }))
}

/// `shipment.failed` for the saga deadline (ship-order's answer to `order.deadline_reached`).
fn timed_out(order_id: OrderId, items: Vec<Item>) -> Event {
    let reason = CancelReason::TimedOut;
    event(order_id, Payload::ShipmentFailed(ShipmentFailed { items, detail: "deadline".into(), reason }))
}

fn shipment_failed(order_id: OrderId, items: Vec<Item>) -> Event {
    let reason = CancelReason::ShipmentFailed;
    event(order_id, Payload::ShipmentFailed(ShipmentFailed { items, detail: "we do not ship to AQ".into(), reason }))
}

async fn reservation_state(given: &TestStore, order_id: OrderId) -> ReservationState {
    given.store.reservation(order_id).await.unwrap().expect("a reservation").state
}

#[tokio::test]
async fn a_shipped_order_moves_its_units_from_reserved_to_shipped() {
    // GIVEN an order holds 3 of A and 2 of B
    let given = TestStore::with_stock(&[("A", 10, 0), ("B", 5, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 3), item("B", 2)];
    given.given_reservation(order_id, &items).await;

    // WHEN the order ships
    let emitted = SettleInventory.handle(&shipped(order_id, items), &given.ports()).await.unwrap();

    // THEN nothing is emitted
    assert_eq!(emitted, []);
    // and the units left the warehouse
    let (a, b) = (given.stock("A").await, given.stock("B").await);
    assert_eq!((a.available, a.reserved, a.shipped), (7, 0, 3));
    assert_eq!((b.available, b.reserved, b.shipped), (3, 0, 2));
    assert_eq!(reservation_state(&given, order_id).await, ReservationState::Shipped);
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_failed_shipment_returns_exactly_the_reserved_units() {
    // GIVEN two orders hold A: this one 3 (on two lines), another one 2
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let (order_id, other) = (OrderId::new(), OrderId::new());
    let items = vec![item("A", 1), item("A", 2)];
    given.given_reservation(order_id, &items).await;
    given.given_reservation(other, &[item("A", 2)]).await;
    let cause = shipment_failed(order_id, items.clone());

    // WHEN this order's shipment fails
    let emitted = SettleInventory.handle(&cause, &given.ports()).await.unwrap();

    // THEN inventory.released reports the compensation
    let released = InventoryReleased { items, reason: CancelReason::ShipmentFailed };
    assert_eq!(payloads(&emitted), [&Payload::InventoryReleased(released)]);
    assert_eq!((emitted[0].subject, emitted[0].causation_id), (order_id, Some(cause.id)));
    // and exactly its 3 units are back on the shelf; the other order still holds 2
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (8, 2, 0));
    assert_eq!(reservation_state(&given, order_id).await, ReservationState::Released);
    assert_eq!(reservation_state(&given, other).await, ReservationState::Reserved);
    given.assert_conserved().await;
}

#[tokio::test]
async fn an_already_settled_reservation_is_left_alone() {
    // GIVEN the order already shipped (its reservation is settled)
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 3)];
    given.given_reservation(order_id, &items).await;
    SettleInventory.handle(&shipped(order_id, items.clone()), &given.ports()).await.unwrap();

    // WHEN a shipment.failed (or another order.shipped) for it arrives
    for late in [shipment_failed(order_id, items.clone()), shipped(order_id, items.clone())] {
        let emitted = SettleInventory.handle(&late, &given.ports()).await.unwrap();

        // THEN nothing is emitted
        assert_eq!(emitted, [], "on {}", late.event_type());
    }
    // and the stock stays as shipped
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (7, 0, 3));
    assert_eq!(reservation_state(&given, order_id).await, ReservationState::Shipped);
    given.assert_conserved().await;
}

#[tokio::test]
async fn settling_an_order_without_a_reservation_is_a_permanent_error() {
    // GIVEN the order holds no reservation
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;

    // WHEN its order.shipped arrives
    let result = SettleInventory.handle(&shipped(OrderId::new(), vec![item("A", 1)]), &given.ports()).await;

    // THEN it is dead-lettered, not retried, and the stock is untouched
    assert!(matches!(result, Err(StepError::Permanent(_))), "{result:?}");
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (10, 0, 0));
}

#[tokio::test]
async fn a_duplicate_shipment_failure_returns_the_same_events_and_releases_once() {
    // GIVEN the order held 4 of A and its failed shipment was already settled
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 4)];
    given.given_reservation(order_id, &items).await;
    let cause = shipment_failed(order_id, items);
    let first = SettleInventory.handle(&cause, &given.ports()).await.unwrap();

    // WHEN the same shipment.failed (same id) is delivered again
    let second = SettleInventory.handle(&cause, &given.ports()).await.unwrap();

    // THEN the very same inventory.released (same id) comes back
    assert!(matches!(payloads(&first)[..], [Payload::InventoryReleased(_)]));
    assert_eq!(second, first);
    // and the units were returned once
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved), (10, 0));
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_duplicate_order_shipped_settles_once() {
    // GIVEN the order held 4 of A and it already shipped
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 4)];
    given.given_reservation(order_id, &items).await;
    let cause = shipped(order_id, items);
    SettleInventory.handle(&cause, &given.ports()).await.unwrap();

    // WHEN the same order.shipped (same id) is delivered again
    let second = SettleInventory.handle(&cause, &given.ports()).await.unwrap();

    // THEN nothing is emitted and the units were shipped once
    assert_eq!(second, []);
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (6, 0, 4));
    given.assert_conserved().await;
}

#[tokio::test]
async fn an_event_it_does_not_consume_is_a_permanent_error() {
    // GIVEN any store
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let reserved = InventoryReserved { items: vec![item("A", 1)], shipping_address: address("FR") };

    // WHEN inventory.reserved is delivered to settle-inventory
    let result =
        SettleInventory.handle(&event(OrderId::new(), Payload::InventoryReserved(reserved)), &given.ports()).await;

    // THEN it is dead-lettered, not retried
    assert!(matches!(result, Err(StepError::Permanent(_))), "{result:?}");
}

// ------------------------------------------------------------ saga deadline

#[tokio::test]
async fn a_timed_out_order_gets_its_reserved_units_back() {
    // GIVEN an order holds 3 of A when its deadline passes
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 3)];
    given.given_reservation(order_id, &items).await;

    // WHEN ship-order's shipment.failed (timed_out) arrives
    let emitted = SettleInventory.handle(&timed_out(order_id, items.clone()), &given.ports()).await.unwrap();

    // THEN the units are released and the release says why
    let released = InventoryReleased { items, reason: CancelReason::TimedOut };
    assert_eq!(payloads(&emitted), [&Payload::InventoryReleased(released)]);
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (10, 0, 0));
    assert_eq!(reservation_state(&given, order_id).await, ReservationState::Released);
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_timed_out_order_with_nothing_reserved_is_cancelled_all_the_same() {
    // GIVEN an order that holds no reservation (still waiting for stock)
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();

    // WHEN its deadline's shipment.failed arrives
    let emitted = SettleInventory.handle(&timed_out(order_id, vec![item("A", 3)]), &given.ports()).await.unwrap();

    // THEN nothing is released, but inventory.released (no lines) carries
    // the cancellation on to order-status
    let released = InventoryReleased { items: vec![], reason: CancelReason::TimedOut };
    assert_eq!(payloads(&emitted), [&Payload::InventoryReleased(released)]);
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (10, 0, 0));
}

#[tokio::test]
async fn a_reservation_made_after_the_deadline_is_released_by_the_late_failure() {
    // GIVEN the deadline found nothing reserved, then a late stock.replenished
    // let reserve-inventory reserve 3 of A after all
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 3)];
    SettleInventory.handle(&timed_out(order_id, items.clone()), &given.ports()).await.unwrap();
    given.given_reservation(order_id, &items).await;
    assert_eq!(given.stock("A").await.reserved, 3);

    // WHEN ship-order answers that reservation with shipment.failed (its tombstone)
    let emitted = SettleInventory.handle(&timed_out(order_id, items.clone()), &given.ports()).await.unwrap();

    // THEN the late reservation is released: stock is conserved and free again
    assert!(matches!(payloads(&emitted)[..], [Payload::InventoryReleased(_)]), "{emitted:?}");
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (10, 0, 0));
    assert_eq!(reservation_state(&given, order_id).await, ReservationState::Released);
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_second_timed_out_failure_releases_nothing_more() {
    // GIVEN the deadline released the order's 3 units
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 3)];
    given.given_reservation(order_id, &items).await;
    SettleInventory.handle(&timed_out(order_id, items.clone()), &given.ports()).await.unwrap();

    // WHEN another shipment.failed (timed_out) arrives (the deadline fired
    // twice, or a late inventory.reserved met the tombstone)
    let emitted = SettleInventory.handle(&timed_out(order_id, items), &given.ports()).await.unwrap();

    // THEN only the cancellation is repeated, nothing is released twice
    let released = InventoryReleased { items: vec![], reason: CancelReason::TimedOut };
    assert_eq!(payloads(&emitted), [&Payload::InventoryReleased(released)]);
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (10, 0, 0));
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_timed_out_failure_after_the_order_shipped_changes_nothing() {
    // GIVEN the order shipped (its reservation is settled as shipped)
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 3)];
    given.given_reservation(order_id, &items).await;
    SettleInventory.handle(&shipped(order_id, items.clone()), &given.ports()).await.unwrap();

    // WHEN a shipment.failed (timed_out) arrives anyway
    let emitted = SettleInventory.handle(&timed_out(order_id, items), &given.ports()).await.unwrap();

    // THEN nothing is emitted and the units stay shipped
    assert_eq!(emitted, []);
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved, a.shipped), (7, 0, 3));
    given.assert_conserved().await;
}
