//! `ship-order`, one behaviour per test: GIVEN the countries served, WHEN
//! `inventory.reserved` or `order.deadline_reached`, THEN the events it emits
//! and the shipment (or tombstone) it stores. The deadline interleavings are
//! the ones listed in `src/lib.rs`.

use shared::contract::domain::{CancelReason, OrderId};
use shared::contract::events::{InventoryReserved, OrderDeadlineReached, OrderShipped, ShipmentFailed};
use shared::step::ShipCountries;
use shared::store::Store;
use shared::testkit::{TestStore, address, event, item, payloads};
use shared::{Event, Payload, Step, StepError};
use ship_order::ShipOrder;

/// `inventory.reserved` for an order of 2 of A to `country`.
fn reserved(country: &str) -> Event {
    let data = InventoryReserved { items: vec![item("A", 2)], shipping_address: address(country) };
    event(OrderId::new(), Payload::InventoryReserved(data))
}

/// The tracking number of the one `order.shipped` among `emitted`.
fn tracking_number(emitted: &[Event]) -> &str {
    let [Payload::OrderShipped(OrderShipped { items, tracking_number })] = &payloads(emitted)[..] else {
        panic!("expected one order.shipped, got {emitted:?}");
    };
    assert_eq!(items, &[item("A", 2)]);
    tracking_number
}

#[tokio::test]
async fn an_order_to_a_served_country_ships_with_a_tracking_number() {
    // GIVEN the default countries (everywhere but AQ)
    let given = TestStore::with_stock(&[]).await;
    let cause = reserved("FR");

    // WHEN a reserved order to France arrives
    let emitted = ShipOrder.handle(&cause, &given.ports()).await.unwrap();

    // THEN it ships, in reaction to the reservation, with a tracking number
    let tracking = tracking_number(&emitted);
    assert!(tracking.starts_with("CHR") && tracking.len() > 3, "{tracking}");
    assert_eq!((emitted[0].subject, emitted[0].causation_id), (cause.subject, Some(cause.id)));
    assert_eq!(emitted[0].source, "/functions/ship-order");
    // and the shipment is stored under that number
    let shipment = given.store.shipment(cause.subject).await.unwrap().expect("a shipment");
    assert_eq!(shipment.tracking_number, tracking);
}

#[tokio::test]
async fn antarctica_is_not_served_by_default() {
    // GIVEN the default countries
    let given = TestStore::with_stock(&[]).await;
    let cause = reserved("AQ");

    // WHEN a reserved order to Antarctica arrives
    let emitted = ShipOrder.handle(&cause, &given.ports()).await.unwrap();

    // THEN shipment fails, returning the items for compensation
    let [Payload::ShipmentFailed(ShipmentFailed { items, detail, reason })] = &payloads(&emitted)[..] else {
        panic!("expected one shipment.failed, got {emitted:?}");
    };
    assert_eq!(items, &[item("A", 2)]);
    assert_eq!(*reason, CancelReason::ShipmentFailed);
    assert!(detail.contains("AQ"), "{detail}");
    // and nothing was handed to the carrier
    assert_eq!(given.store.shipment(cause.subject).await.unwrap(), None);
}

#[tokio::test]
async fn an_explicit_country_list_ships_only_there() {
    // GIVEN SHIP_COUNTRIES=FR,DE
    let given = TestStore::with_stock(&[]).await;
    let ports = given.ports_shipping_to(ShipCountries::parse("FR,DE").unwrap());
    let (to_us, to_de) = (reserved("US"), reserved("DE"));

    // WHEN reserved orders to the US and to Germany arrive
    let us = ShipOrder.handle(&to_us, &ports).await.unwrap();
    let de = ShipOrder.handle(&to_de, &ports).await.unwrap();

    // THEN the US one fails and stores nothing
    assert!(matches!(payloads(&us)[..], [Payload::ShipmentFailed(_)]), "{us:?}");
    assert_eq!(given.store.shipment(to_us.subject).await.unwrap(), None);
    // and the German one ships
    assert!(tracking_number(&de).starts_with("CHR"));
    assert!(given.store.shipment(to_de.subject).await.unwrap().is_some());
}

#[tokio::test]
async fn a_duplicate_delivery_returns_the_same_tracking_number_and_ships_once() {
    // GIVEN the order was already shipped for this event
    let given = TestStore::with_stock(&[]).await;
    let cause = reserved("FR");
    let first = ShipOrder.handle(&cause, &given.ports()).await.unwrap();

    // WHEN the same inventory.reserved (same id) is delivered again
    let second = ShipOrder.handle(&cause, &given.ports()).await.unwrap();

    // THEN the very same order.shipped (same id, same tracking number) comes back
    assert_eq!(second, first);
    assert_eq!(tracking_number(&second), tracking_number(&first));
    // and the shipment was written once
    let shipment = given.store.shipment(cause.subject).await.unwrap().expect("a shipment");
    assert_eq!((shipment.tracking_number.as_str(), shipment.version), (tracking_number(&first), 1));
}

#[tokio::test]
async fn a_second_reservation_event_for_a_shipped_order_ships_nothing_more() {
    // GIVEN the order was already shipped
    let given = TestStore::with_stock(&[]).await;
    let cause = reserved("FR");
    let first = ShipOrder.handle(&cause, &given.ports()).await.unwrap();

    // WHEN another inventory.reserved for the same order (a new id) arrives
    let again = event(cause.subject, cause.payload.clone());
    let emitted = ShipOrder.handle(&again, &given.ports()).await.unwrap();

    // THEN nothing is emitted and the first shipment stands
    assert_eq!(emitted, []);
    let shipment = given.store.shipment(cause.subject).await.unwrap().expect("a shipment");
    assert_eq!((shipment.tracking_number.as_str(), shipment.version), (tracking_number(&first), 1));
}

#[tokio::test]
async fn an_event_it_does_not_consume_is_a_permanent_error() {
    // GIVEN any store
    let given = TestStore::with_stock(&[]).await;
    let failed =
        ShipmentFailed { items: vec![item("A", 1)], detail: "no".into(), reason: CancelReason::ShipmentFailed };

    // WHEN shipment.failed is delivered to ship-order
    let result = ShipOrder.handle(&event(OrderId::new(), Payload::ShipmentFailed(failed)), &given.ports()).await;

    // THEN it is dead-lettered, not retried
    assert!(matches!(result, Err(StepError::Permanent(_))), "{result:?}");
}

// ------------------------------------------------------------ saga deadline

/// `order.deadline_reached` for the order of `reserved`.
fn deadline_of(reserved: &Event) -> Event {
    let data = OrderDeadlineReached { items: vec![item("A", 2)], deadline: reserved.time };
    event(reserved.subject, Payload::OrderDeadlineReached(data))
}

/// The one `shipment.failed` among `emitted`, which must be for the deadline.
fn assert_timed_out(emitted: &[Event]) {
    let [Payload::ShipmentFailed(ShipmentFailed { items, reason, .. })] = &payloads(emitted)[..] else {
        panic!("expected one shipment.failed, got {emitted:?}");
    };
    assert_eq!((items.as_slice(), *reason), (&[item("A", 2)][..], CancelReason::TimedOut));
}

#[tokio::test]
async fn a_deadline_after_the_order_shipped_changes_nothing() {
    // GIVEN the order shipped (inventory.reserved won the race)
    let given = TestStore::with_stock(&[]).await;
    let cause = reserved("FR");
    let shipped = ShipOrder.handle(&cause, &given.ports()).await.unwrap();

    // WHEN its deadline arrives
    let emitted = ShipOrder.handle(&deadline_of(&cause), &given.ports()).await.unwrap();

    // THEN nothing is emitted: the order completes as shipped
    assert_eq!(emitted, []);
    let shipment = given.store.shipment(cause.subject).await.unwrap().expect("the shipment");
    assert_eq!(shipment.tracking_number, tracking_number(&shipped));
    assert!(!shipment.is_timed_out());
}

#[tokio::test]
async fn a_deadline_before_the_reservation_arrives_means_it_never_ships() {
    // GIVEN the deadline reached ship-order first (a shipment still in flight,
    // or a reservation a late stock.replenished will make)
    let given = TestStore::with_stock(&[]).await;
    let cause = reserved("FR");
    let deadline = ShipOrder.handle(&deadline_of(&cause), &given.ports()).await.unwrap();

    // WHEN the reservation arrives after it
    let late = ShipOrder.handle(&cause, &given.ports()).await.unwrap();

    // THEN the deadline failed the shipment, for the order's lines
    assert_timed_out(&deadline);
    // AND the late reservation is answered with shipment.failed too, so that
    // its units are released, and nothing ships
    assert_timed_out(&late);
    assert_eq!(late[0].causation_id, Some(cause.id));
    let shipment = given.store.shipment(cause.subject).await.unwrap().expect("a tombstone");
    assert!(shipment.is_timed_out(), "{shipment:?}");
}

#[tokio::test]
async fn a_deadline_that_fires_twice_fails_the_shipment_once() {
    // GIVEN the deadline already failed the order's shipment
    let given = TestStore::with_stock(&[]).await;
    let cause = reserved("FR");
    let first = deadline_of(&cause);
    let emitted = ShipOrder.handle(&first, &given.ports()).await.unwrap();

    // WHEN the same deadline is redelivered, and another one (a second sweep) arrives
    let redelivered = ShipOrder.handle(&first, &given.ports()).await.unwrap();
    let second = ShipOrder.handle(&deadline_of(&cause), &given.ports()).await.unwrap();

    // THEN the redelivery gets the same event back, the second deadline nothing
    assert_eq!(redelivered, emitted);
    assert_eq!(second, []);
    // AND the tombstone was written once
    let shipment = given.store.shipment(cause.subject).await.unwrap().expect("a tombstone");
    assert_eq!((shipment.is_timed_out(), shipment.version), (true, 1));
}

#[tokio::test]
async fn a_deadline_and_a_reservation_at_once_decide_one_way_only() {
    for _ in 0..20 {
        // GIVEN a reserved order whose deadline passes at the same moment
        let given = TestStore::with_stock(&[]).await;
        let cause = reserved("FR");
        let deadline = deadline_of(&cause);

        // WHEN both reach ship-order concurrently
        let ports = given.ports();
        let (shipping, timing_out) =
            tokio::join!(ShipOrder.handle(&cause, &ports), ShipOrder.handle(&deadline, &ports));
        let (shipping, timing_out) = (shipping.unwrap(), timing_out.unwrap());

        // THEN exactly one decision stands: shipped (the deadline emits
        // nothing) or timed out (both answer shipment.failed), never both
        let shipment = given.store.shipment(cause.subject).await.unwrap().expect("a decision");
        if shipment.is_timed_out() {
            assert_timed_out(&shipping);
            assert_timed_out(&timing_out);
        } else {
            assert_eq!(tracking_number(&shipping), shipment.tracking_number);
            assert_eq!(timing_out, []);
        }
    }
}
