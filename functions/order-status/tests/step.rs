//! `order-status`, one behaviour per test: GIVEN an order record, WHEN the
//! saga reports progress or failure, THEN the events it emits and the
//! status, cancel reason and history it leaves.

use order_status::UpdateOrderStatus;
use shared::contract::domain::{CancelReason, OrderId, OrderStatus};
use shared::contract::events::{
    InventoryInsufficient, InventoryRejected, InventoryReleased, InventoryReserved, OrderCancelled, OrderShipped,
    ReplenishmentFailed, SkuUnits,
};
use shared::store::{OrderRecord, Store};
use shared::testkit::{TestStore, address, event, item, order_created, payloads, sku};
use shared::{Event, Payload, Step, StepError};

const TRACKING: &str = "CHR0123456789AB";

/// GIVEN a `PENDING` order for 2 of A, as `create-order` stored it.
async fn given_pending_order() -> (TestStore, Event) {
    let given = TestStore::with_stock(&[]).await;
    let created = event(OrderId::new(), Payload::OrderCreated(order_created(vec![item("A", 2)])));
    given.given_order(&created).await;
    (given, created)
}

async fn order(given: &TestStore, order_id: OrderId) -> OrderRecord {
    given.store.order(order_id).await.unwrap().expect("the order record")
}

/// The order's history as event types, in recorded order.
fn history(order: &OrderRecord) -> Vec<&str> {
    order.history.iter().map(|entry| entry.event_type.as_str()).collect()
}

fn reserved(order_id: OrderId) -> Event {
    event(
        order_id,
        Payload::InventoryReserved(InventoryReserved { items: vec![item("A", 2)], shipping_address: address("FR") }),
    )
}

fn insufficient(order_id: OrderId) -> Event {
    let shortfall = vec![SkuUnits { sku: sku("A"), units: 1 }];
    let data =
        InventoryInsufficient { items: vec![item("A", 2)], shipping_address: address("FR"), shortfall, attempt: 1 };
    event(order_id, Payload::InventoryInsufficient(data))
}

fn shipped(order_id: OrderId) -> Event {
    event(order_id, Payload::OrderShipped(OrderShipped { items: vec![item("A", 2)], tracking_number: TRACKING.into() }))
}

fn rejected(order_id: OrderId, reason: CancelReason, detail: &str) -> Event {
    event(order_id, Payload::InventoryRejected(InventoryRejected { reason, detail: detail.into() }))
}

fn replenishment_failed(order_id: OrderId) -> Event {
    let data = ReplenishmentFailed { reason: CancelReason::OutOfStock, detail: "A is discontinued".into() };
    event(order_id, Payload::ReplenishmentFailed(data))
}

fn released(order_id: OrderId) -> Event {
    let data = InventoryReleased { items: vec![item("A", 2)], reason: CancelReason::ShipmentFailed };
    event(order_id, Payload::InventoryReleased(data))
}

/// WHEN `failure` reaches a pending order, THEN it is cancelled for `reason`
/// and exactly one `order.cancelled` is emitted in reaction to it.
async fn assert_failure_cancels(failure: fn(OrderId) -> Event, reason: CancelReason, detail: &str) {
    let (given, created) = given_pending_order().await;
    let cause = failure(created.subject);

    let emitted = UpdateOrderStatus.handle(&cause, &given.ports()).await.unwrap();

    let [Payload::OrderCancelled(cancelled)] = &payloads(&emitted)[..] else {
        panic!("expected one order.cancelled, got {emitted:?}");
    };
    assert_eq!(cancelled, &OrderCancelled { reason, detail: detail.into() });
    assert_eq!((emitted[0].subject, emitted[0].causation_id), (created.subject, Some(cause.id)));
    assert_eq!(emitted[0].source, "/functions/order-status");
    let order = order(&given, created.subject).await;
    assert_eq!((order.status, order.cancel_reason), (OrderStatus::Cancelled, Some(reason)));
    assert_eq!(history(&order), ["order.created", cause.event_type().as_str(), "order.cancelled"]);
}

#[tokio::test]
async fn a_reservation_moves_the_order_to_reserved() {
    // GIVEN a pending order
    let (given, created) = given_pending_order().await;
    let cause = reserved(created.subject);

    // WHEN its inventory is reserved
    let emitted = UpdateOrderStatus.handle(&cause, &given.ports()).await.unwrap();

    // THEN nothing is emitted, the order is RESERVED and the event is in its history
    assert_eq!(emitted, []);
    let order = order(&given, created.subject).await;
    assert_eq!(order.status, OrderStatus::Reserved);
    assert_eq!(history(&order), ["order.created", "inventory.reserved"]);
    assert_eq!(order.history[1].event_id, cause.id);
    assert_eq!(order.history[1].source, "/functions/reserve-inventory");
}

#[tokio::test]
async fn a_shortfall_moves_the_order_to_awaiting_stock() {
    // GIVEN a pending order
    let (given, created) = given_pending_order().await;

    // WHEN its inventory is insufficient
    let emitted = UpdateOrderStatus.handle(&insufficient(created.subject), &given.ports()).await.unwrap();

    // THEN nothing is emitted and the order is AWAITING_STOCK
    assert_eq!(emitted, []);
    assert_eq!(order(&given, created.subject).await.status, OrderStatus::AwaitingStock);
}

#[tokio::test]
async fn an_order_awaiting_stock_is_reserved_once_stock_arrives() {
    // GIVEN an order awaiting stock
    let (given, created) = given_pending_order().await;
    UpdateOrderStatus.handle(&insufficient(created.subject), &given.ports()).await.unwrap();

    // WHEN the retried reservation succeeds
    UpdateOrderStatus.handle(&reserved(created.subject), &given.ports()).await.unwrap();

    // THEN the order is RESERVED
    let order = order(&given, created.subject).await;
    assert_eq!(order.status, OrderStatus::Reserved);
    assert_eq!(history(&order), ["order.created", "inventory.insufficient", "inventory.reserved"]);
}

#[tokio::test]
async fn a_shipped_order_is_shipped_with_its_tracking_number() {
    // GIVEN a reserved order
    let (given, created) = given_pending_order().await;
    UpdateOrderStatus.handle(&reserved(created.subject), &given.ports()).await.unwrap();

    // WHEN it ships
    let emitted = UpdateOrderStatus.handle(&shipped(created.subject), &given.ports()).await.unwrap();

    // THEN nothing is emitted, the order is SHIPPED and shows its tracking number
    assert_eq!(emitted, []);
    let order = order(&given, created.subject).await;
    assert_eq!((order.status, order.tracking_number.as_deref()), (OrderStatus::Shipped, Some(TRACKING)));
    assert_eq!(order.cancel_reason, None);
}

#[tokio::test]
async fn an_unknown_sku_cancels_the_order() {
    let unknown = |id| rejected(id, CancelReason::UnknownSku, "unknown SKU: A");
    assert_failure_cancels(unknown, CancelReason::UnknownSku, "unknown SKU: A").await;
}

#[tokio::test]
async fn running_out_of_stock_after_retries_cancels_the_order() {
    let short = |id| rejected(id, CancelReason::OutOfStock, "still short of A x1 after 3 replenishments");
    assert_failure_cancels(short, CancelReason::OutOfStock, "still short of A x1 after 3 replenishments").await;
}

#[tokio::test]
async fn a_failed_replenishment_cancels_the_order() {
    assert_failure_cancels(replenishment_failed, CancelReason::OutOfStock, "A is discontinued").await;
}

#[tokio::test]
async fn released_stock_after_a_failed_shipment_cancels_the_order() {
    assert_failure_cancels(
        released,
        CancelReason::ShipmentFailed,
        "the carrier could not ship it; the reserved stock was released",
    )
    .await;
}

fn timed_out(order_id: OrderId) -> Event {
    let data = InventoryReleased { items: vec![], reason: CancelReason::TimedOut };
    event(order_id, Payload::InventoryReleased(data))
}

#[tokio::test]
async fn the_saga_deadline_cancels_the_order_as_timed_out() {
    assert_failure_cancels(
        timed_out,
        CancelReason::TimedOut,
        "the saga deadline passed before it shipped; any reserved stock was released",
    )
    .await;
}

#[tokio::test]
async fn a_deadline_after_the_order_shipped_leaves_it_shipped() {
    // GIVEN an order that shipped just before its deadline
    let (given, created) = given_pending_order().await;
    UpdateOrderStatus.handle(&reserved(created.subject), &given.ports()).await.unwrap();
    UpdateOrderStatus.handle(&shipped(created.subject), &given.ports()).await.unwrap();

    // WHEN a timed-out release arrives anyway
    let emitted = UpdateOrderStatus.handle(&timed_out(created.subject), &given.ports()).await.unwrap();

    // THEN nothing is emitted: it is never both shipped and cancelled
    assert_eq!(emitted, []);
    let order = order(&given, created.subject).await;
    assert_eq!((order.status, order.cancel_reason), (OrderStatus::Shipped, None));
}

#[tokio::test]
async fn events_after_a_timeout_change_nothing() {
    // GIVEN an order cancelled by its deadline
    let (given, created) = given_pending_order().await;
    UpdateOrderStatus.handle(&timed_out(created.subject), &given.ports()).await.unwrap();

    // WHEN a late reservation, a second timed-out release and a late order.shipped arrive
    for late in [reserved(created.subject), timed_out(created.subject), shipped(created.subject)] {
        let emitted = UpdateOrderStatus.handle(&late, &given.ports()).await.unwrap();

        // THEN nothing is emitted and it stays cancelled as timed out
        assert_eq!(emitted, [], "on {}", late.event_type());
        let order = order(&given, created.subject).await;
        assert_eq!((order.status, order.cancel_reason), (OrderStatus::Cancelled, Some(CancelReason::TimedOut)));
        assert_eq!(order.tracking_number, None);
    }
}

#[tokio::test]
async fn late_progress_never_moves_a_shipped_order_backwards() {
    // GIVEN an order that has shipped (its order.shipped overtook the rest)
    let (given, created) = given_pending_order().await;
    let (late_reserved, late_insufficient) = (reserved(created.subject), insufficient(created.subject));
    UpdateOrderStatus.handle(&shipped(created.subject), &given.ports()).await.unwrap();

    // WHEN the earlier inventory.insufficient and inventory.reserved arrive late
    for late in [late_insufficient, late_reserved] {
        let emitted = UpdateOrderStatus.handle(&late, &given.ports()).await.unwrap();

        // THEN nothing is emitted and the order stays SHIPPED, tracking number kept
        assert_eq!(emitted, [], "on {}", late.event_type());
        let order = order(&given, created.subject).await;
        assert_eq!((order.status, order.tracking_number.as_deref()), (OrderStatus::Shipped, Some(TRACKING)));
    }
}

#[tokio::test]
async fn a_late_shortfall_never_moves_a_reserved_order_back_to_awaiting_stock() {
    // GIVEN a reserved order
    let (given, created) = given_pending_order().await;
    let late = insufficient(created.subject);
    UpdateOrderStatus.handle(&reserved(created.subject), &given.ports()).await.unwrap();

    // WHEN an earlier inventory.insufficient arrives late
    UpdateOrderStatus.handle(&late, &given.ports()).await.unwrap();

    // THEN the order stays RESERVED
    assert_eq!(order(&given, created.subject).await.status, OrderStatus::Reserved);
}

#[tokio::test]
async fn a_cancelled_order_is_cancelled_once() {
    // GIVEN an order cancelled for an unknown SKU
    let (given, created) = given_pending_order().await;
    UpdateOrderStatus
        .handle(&rejected(created.subject, CancelReason::UnknownSku, "unknown SKU: A"), &given.ports())
        .await
        .unwrap();

    // WHEN another failure, and a late order.shipped, arrive
    for late in [replenishment_failed(created.subject), released(created.subject), shipped(created.subject)] {
        let emitted = UpdateOrderStatus.handle(&late, &given.ports()).await.unwrap();

        // THEN nothing more is emitted and the first reason stands
        assert_eq!(emitted, [], "on {}", late.event_type());
        let order = order(&given, created.subject).await;
        assert_eq!((order.status, order.cancel_reason), (OrderStatus::Cancelled, Some(CancelReason::UnknownSku)));
        assert_eq!(order.tracking_number, None);
    }
    // and the history holds one order.cancelled
    let order = order(&given, created.subject).await;
    assert_eq!(history(&order).iter().filter(|&&event_type| event_type == "order.cancelled").count(), 1);
}

#[tokio::test]
async fn history_records_each_event_once_sorted_by_time() {
    // GIVEN a pending order, and its saga's events in the order they happened
    let (given, created) = given_pending_order().await;
    let (first, second) = (reserved(created.subject), shipped(created.subject));

    // WHEN they are delivered out of order, each twice
    for delivery in [&second, &first, &second, &first] {
        UpdateOrderStatus.handle(delivery, &given.ports()).await.unwrap();
    }

    // THEN each is recorded once, in the order they happened
    let order = order(&given, created.subject).await;
    let ids: Vec<_> = order.history.iter().map(|entry| entry.event_id).collect();
    assert_eq!(ids, [created.id, first.id, second.id]);
    assert_eq!(history(&order), ["order.created", "inventory.reserved", "order.shipped"]);
    assert!(order.history.is_sorted_by_key(|entry| entry.time));
}

#[tokio::test]
async fn a_duplicate_failure_returns_the_same_cancellation_and_records_it_once() {
    // GIVEN an order already cancelled by this replenishment.failed
    let (given, created) = given_pending_order().await;
    let cause = replenishment_failed(created.subject);
    let first = UpdateOrderStatus.handle(&cause, &given.ports()).await.unwrap();

    // WHEN the same replenishment.failed (same id) is delivered again
    let second = UpdateOrderStatus.handle(&cause, &given.ports()).await.unwrap();

    // THEN the very same order.cancelled (same id) comes back
    assert!(matches!(payloads(&first)[..], [Payload::OrderCancelled(_)]));
    assert_eq!(second, first);
    // and the history holds the failure and the cancellation once each, sorted by time
    let order = order(&given, created.subject).await;
    let ids: Vec<_> = order.history.iter().map(|entry| entry.event_id).collect();
    assert_eq!(ids, [created.id, cause.id, first[0].id]);
    assert!(order.history.is_sorted_by_key(|entry| entry.time));
}

#[tokio::test]
async fn an_unknown_order_is_retried_later() {
    // GIVEN no order record (create-order's write is not visible yet)
    let given = TestStore::with_stock(&[]).await;

    // WHEN an event about it arrives
    let result = UpdateOrderStatus.handle(&reserved(OrderId::new()), &given.ports()).await;

    // THEN the step asks for a retry
    assert!(matches!(result, Err(StepError::Retryable(_))), "{result:?}");
}

#[tokio::test]
async fn an_event_it_does_not_consume_is_a_permanent_error() {
    // GIVEN a pending order
    let (given, created) = given_pending_order().await;

    // WHEN its order.created is delivered to order-status
    let result = UpdateOrderStatus.handle(&created, &given.ports()).await;

    // THEN it is dead-lettered, not retried, and the order is untouched
    assert!(matches!(result, Err(StepError::Permanent(_))), "{result:?}");
    let order = order(&given, created.subject).await;
    assert_eq!((order.status, order.history.len()), (OrderStatus::Pending, 1));
}
