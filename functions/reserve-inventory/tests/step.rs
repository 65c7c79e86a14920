//! `reserve-inventory`, one behaviour per test: GIVEN stock, WHEN an event,
//! THEN the events it emits and the stock and reservation it leaves.

use reserve_inventory::{MAX_RESERVATION_RETRIES, ReserveInventory};
use shared::contract::domain::{CancelReason, Item, OrderId};
use shared::contract::events::{
    Attempt, InventoryInsufficient, InventoryRejected, InventoryReserved, OrderShipped, SkuUnits, StockReplenished,
};
use shared::store::{ReservationState, Store};
use shared::testkit::{TestStore, address, event, item, order_created, payloads, sku};
use shared::{Event, Payload, Step, StepError};

fn created(items: Vec<Item>) -> Event {
    event(OrderId::new(), Payload::OrderCreated(order_created(items)))
}

/// `stock.replenished` after replenishment number `attempt` of the order's items.
fn replenished(order_id: OrderId, items: Vec<Item>, attempt: Attempt) -> Event {
    let replenished = vec![SkuUnits { sku: items[0].sku.clone(), units: 1 }];
    let data = StockReplenished { items, shipping_address: address("FR"), replenished, attempt };
    event(order_id, Payload::StockReplenished(data))
}

fn short(sku_text: &str, units: u64) -> SkuUnits {
    SkuUnits { sku: sku(sku_text), units }
}

#[tokio::test]
async fn enough_stock_reserves_the_order() {
    // GIVEN 10 of A and 5 of B
    let given = TestStore::with_stock(&[("A", 10, 0), ("B", 5, 0)]).await;
    let items = vec![item("A", 3), item("B", 5)];
    let order = created(items.clone());

    // WHEN the order is created
    let emitted = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // THEN it is reserved, in reaction to the order
    let reserved = InventoryReserved { items: items.clone(), shipping_address: address("FR") };
    assert_eq!(payloads(&emitted), [&Payload::InventoryReserved(reserved)]);
    assert_eq!((emitted[0].subject, emitted[0].causation_id), (order.subject, Some(order.id)));
    assert_eq!(emitted[0].source, "/functions/reserve-inventory");
    // and the units moved from available to reserved
    let (a, b) = (given.stock("A").await, given.stock("B").await);
    assert_eq!((a.available, a.reserved), (7, 3));
    assert_eq!((b.available, b.reserved), (0, 5));
    // and the reservation is stored
    let reservation = given.store.reservation(order.subject).await.unwrap().expect("a reservation");
    assert_eq!((reservation.items, reservation.state), (items, ReservationState::Reserved));
    given.assert_conserved().await;
}

#[tokio::test]
async fn one_short_item_reserves_nothing_and_reports_the_exact_shortfall() {
    // GIVEN 5 of A, 1 of B and 10 of C
    let given = TestStore::with_stock(&[("A", 5, 10), ("B", 1, 10), ("C", 10, 10)]).await;
    // A on two lines (3 + 4 = 7 > 5), B short by 1, C plentiful
    let items = vec![item("A", 3), item("C", 2), item("B", 2), item("A", 4)];
    let order = created(items.clone());

    // WHEN the order is created
    let emitted = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // THEN the shortfall per SKU is reported, first attempt
    let insufficient = InventoryInsufficient {
        items,
        shipping_address: address("FR"),
        shortfall: vec![short("A", 2), short("B", 1)],
        attempt: 1,
    };
    assert_eq!(payloads(&emitted), [&Payload::InventoryInsufficient(insufficient)]);
    // and nothing at all is reserved, not even the plentiful C
    for (sku_text, available) in [("A", 5), ("B", 1), ("C", 10)] {
        let level = given.stock(sku_text).await;
        assert_eq!((level.available, level.reserved), (available, 0), "{sku_text}");
    }
    assert_eq!(given.store.reservation(order.subject).await.unwrap(), None);
    given.assert_conserved().await;
}

#[tokio::test]
async fn the_same_sku_on_two_lines_is_reserved_as_one_sum() {
    // GIVEN exactly 7 of A
    let given = TestStore::with_stock(&[("A", 7, 0)]).await;
    let order = created(vec![item("A", 3), item("A", 4)]);

    // WHEN an order wants 3 + 4 of A
    let emitted = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // THEN all 7 are reserved
    assert!(matches!(payloads(&emitted)[..], [Payload::InventoryReserved(_)]));
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved), (0, 7));
    given.assert_conserved().await;
}

#[tokio::test]
async fn an_unknown_sku_rejects_the_order_and_changes_nothing() {
    // GIVEN only A exists
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order = created(vec![item("A", 1), item("NOPE", 1)]);

    // WHEN an order names a SKU that does not exist
    let emitted = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // THEN it is rejected as unknown_sku, naming the SKU
    let [Payload::InventoryRejected(InventoryRejected { reason, detail })] = &payloads(&emitted)[..] else {
        panic!("expected one inventory.rejected, got {emitted:?}");
    };
    assert_eq!(*reason, CancelReason::UnknownSku);
    assert!(detail.contains("NOPE"), "{detail}");
    // and A is untouched, nothing reserved
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved), (10, 0));
    assert_eq!(given.store.reservation(order.subject).await.unwrap(), None);
}

#[tokio::test]
async fn a_retry_after_replenishment_reserves_when_stock_now_suffices() {
    // GIVEN 4 of A (the replenishment has arrived)
    let given = TestStore::with_stock(&[("A", 4, 10)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 4)];

    // WHEN stock.replenished (first replenishment) arrives
    let emitted = ReserveInventory.handle(&replenished(order_id, items.clone(), 1), &given.ports()).await.unwrap();

    // THEN the order is reserved
    let reserved = InventoryReserved { items, shipping_address: address("FR") };
    assert_eq!(payloads(&emitted), [&Payload::InventoryReserved(reserved)]);
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved), (0, 4));
    assert!(given.store.reservation(order_id).await.unwrap().is_some());
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_retry_still_short_asks_for_stock_again_with_the_next_attempt() {
    // GIVEN 1 of A
    let given = TestStore::with_stock(&[("A", 1, 10)]).await;
    let order_id = OrderId::new();
    let items = vec![item("A", 3)];

    // WHEN stock.replenished after the second replenishment arrives and A is still short
    let emitted = ReserveInventory.handle(&replenished(order_id, items.clone(), 2), &given.ports()).await.unwrap();

    // THEN it is the third attempt, short by 2, and nothing is reserved
    let insufficient =
        InventoryInsufficient { items, shipping_address: address("FR"), shortfall: vec![short("A", 2)], attempt: 3 };
    assert_eq!(payloads(&emitted), [&Payload::InventoryInsufficient(insufficient)]);
    assert_eq!(given.stock("A").await.reserved, 0);
}

#[tokio::test]
async fn still_short_after_three_retries_rejects_as_out_of_stock() {
    // GIVEN 1 of A
    let given = TestStore::with_stock(&[("A", 1, 10)]).await;
    let order_id = OrderId::new();

    // WHEN the third replenishment still leaves A short
    let last = replenished(order_id, vec![item("A", 3)], MAX_RESERVATION_RETRIES);
    let emitted = ReserveInventory.handle(&last, &given.ports()).await.unwrap();

    // THEN the order is rejected as out_of_stock, naming what is missing
    let [Payload::InventoryRejected(InventoryRejected { reason, detail })] = &payloads(&emitted)[..] else {
        panic!("expected one inventory.rejected, got {emitted:?}");
    };
    assert_eq!(*reason, CancelReason::OutOfStock);
    assert!(detail.contains("A x2"), "{detail}");
    // and nothing is reserved
    assert_eq!(given.stock("A").await.reserved, 0);
    assert_eq!(given.store.reservation(order_id).await.unwrap(), None);
}

#[tokio::test]
async fn an_absurd_attempt_number_is_rejected_not_a_crash() {
    // GIVEN 1 of A
    let given = TestStore::with_stock(&[("A", 1, 10)]).await;
    let order_id = OrderId::new();

    // WHEN a stock.replenished from outside claims attempt u32::MAX
    let absurd = replenished(order_id, vec![item("A", 3)], Attempt::MAX);
    let emitted = ReserveInventory.handle(&absurd, &given.ports()).await.unwrap();

    // THEN the retries count as exhausted: out_of_stock, nothing reserved
    let [Payload::InventoryRejected(InventoryRejected { reason, .. })] = &payloads(&emitted)[..] else {
        panic!("expected one inventory.rejected, got {emitted:?}");
    };
    assert_eq!(*reason, CancelReason::OutOfStock);
    assert_eq!(given.stock("A").await.reserved, 0);
}

#[tokio::test]
async fn an_order_already_holding_a_reservation_is_left_alone() {
    // GIVEN the order already holds 2 of A (8 left)
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let items = vec![item("A", 2)];
    let order = created(items.clone());
    given.given_reservation(order.subject, &items).await;

    // WHEN order.created is published again under a new id, or a stock.replenished arrives
    let again = event(order.subject, order.payload.clone());
    for late in [again, replenished(order.subject, items.clone(), 1)] {
        let emitted = ReserveInventory.handle(&late, &given.ports()).await.unwrap();

        // THEN nothing is emitted
        assert_eq!(emitted, [], "on {}", late.event_type());
    }
    // and nothing more is reserved
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved), (8, 2));
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_duplicate_delivery_returns_the_same_events_and_reserves_once() {
    // GIVEN 10 of A, and the order was already reserved once
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let order = created(vec![item("A", 4)]);
    let first = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // WHEN the same order.created (same id) is delivered again
    let second = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // THEN the very same events (same ids) come back
    assert_eq!(first.len(), 1);
    assert_eq!(second, first);
    // and the units were reserved once
    let a = given.stock("A").await;
    assert_eq!((a.available, a.reserved), (6, 4));
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_duplicate_of_a_shortfall_reports_the_same_event() {
    // GIVEN 1 of A, and the shortfall was already reported
    let given = TestStore::with_stock(&[("A", 1, 10)]).await;
    let order = created(vec![item("A", 3)]);
    let first = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // WHEN the same order.created is delivered again
    let second = ReserveInventory.handle(&order, &given.ports()).await.unwrap();

    // THEN the same inventory.insufficient (same id) comes back
    assert!(matches!(payloads(&first)[..], [Payload::InventoryInsufficient(_)]));
    assert_eq!(second, first);
}

#[tokio::test]
async fn an_event_it_does_not_consume_is_a_permanent_error() {
    // GIVEN any store
    let given = TestStore::with_stock(&[("A", 10, 0)]).await;
    let shipped = OrderShipped { items: vec![item("A", 1)], tracking_number: "CHR1".into() };

    // WHEN order.shipped is delivered to reserve-inventory
    let result = ReserveInventory.handle(&event(OrderId::new(), Payload::OrderShipped(shipped)), &given.ports()).await;

    // THEN it is dead-lettered, not retried, and nothing changed
    assert!(matches!(result, Err(StepError::Permanent(_))), "{result:?}");
    assert_eq!(given.stock("A").await.available, 10);
}
