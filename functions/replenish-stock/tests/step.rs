//! `replenish-stock`, one behaviour per test: GIVEN stock and its
//! `max_replenish`, WHEN `inventory.insufficient`, THEN the events it emits
//! and the stock it leaves.

use replenish_stock::ReplenishStock;
use shared::contract::domain::{CancelReason, OrderId};
use shared::contract::events::{
    InventoryInsufficient, InventoryReserved, ReplenishmentFailed, SkuUnits, StockReplenished,
};
use shared::testkit::{TestStore, address, event, item, payloads, sku};
use shared::{Event, Payload, Step, StepError};

fn short(sku_text: &str, units: u64) -> SkuUnits {
    SkuUnits { sku: sku(sku_text), units }
}

/// `inventory.insufficient` for an order of one unit per short SKU, on its second attempt.
fn insufficient(shortfall: Vec<SkuUnits>) -> Event {
    let items = shortfall.iter().map(|short| item(short.sku.as_str(), 1)).collect();
    let data = InventoryInsufficient { items, shipping_address: address("FR"), shortfall, attempt: 2 };
    event(OrderId::new(), Payload::InventoryInsufficient(data))
}

/// The one `replenishment.failed` among `emitted`, checked to be `out_of_stock`; its detail.
fn failed_detail(emitted: &[Event]) -> &str {
    let [Payload::ReplenishmentFailed(ReplenishmentFailed { reason, detail })] = &payloads(emitted)[..] else {
        panic!("expected one replenishment.failed, got {emitted:?}");
    };
    assert_eq!(*reason, CancelReason::OutOfStock);
    detail
}

#[tokio::test]
async fn a_shortfall_within_max_replenish_is_delivered() {
    // GIVEN 1 of A, 0 of B; the supplier delivers up to 5 of each
    let given = TestStore::with_stock(&[("A", 1, 5), ("B", 0, 5)]).await;
    let shortfall = vec![short("A", 5), short("B", 2)];
    let cause = insufficient(shortfall.clone());

    // WHEN the order is short 5 of A and 2 of B
    let emitted = ReplenishStock.handle(&cause, &given.ports()).await.unwrap();

    // THEN stock.replenished carries the order on, with the same attempt
    let Payload::InventoryInsufficient(wanted) = &cause.payload else { unreachable!() };
    let replenished = StockReplenished {
        items: wanted.items.clone(),
        shipping_address: address("FR"),
        replenished: shortfall,
        attempt: 2,
    };
    assert_eq!(payloads(&emitted), [&Payload::StockReplenished(replenished)]);
    assert_eq!((emitted[0].subject, emitted[0].causation_id), (cause.subject, Some(cause.id)));
    // and available and replenished rose by the shortfall
    let (a, b) = (given.stock("A").await, given.stock("B").await);
    assert_eq!((a.available, a.replenished), (6, 5));
    assert_eq!((b.available, b.replenished), (2, 2));
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_shortfall_above_max_replenish_fails_and_changes_nothing() {
    // GIVEN the supplier delivers at most 5 of A
    let given = TestStore::with_stock(&[("A", 0, 5)]).await;

    // WHEN the order is short 6 of A
    let emitted = ReplenishStock.handle(&insufficient(vec![short("A", 6)]), &given.ports()).await.unwrap();

    // THEN replenishment fails as out_of_stock
    let detail = failed_detail(&emitted);
    assert!(detail.contains("A is short 6 units"), "{detail}");
    // and no stock arrived
    let a = given.stock("A").await;
    assert_eq!((a.available, a.replenished), (0, 0));
}

#[tokio::test]
async fn a_discontinued_sku_is_never_replenished() {
    // GIVEN A is discontinued (max_replenish 0)
    let given = TestStore::with_stock(&[("A", 0, 0)]).await;

    // WHEN the order is short 1 of A
    let emitted = ReplenishStock.handle(&insufficient(vec![short("A", 1)]), &given.ports()).await.unwrap();

    // THEN replenishment fails, saying why
    let detail = failed_detail(&emitted);
    assert!(detail.contains("A is discontinued"), "{detail}");
    let a = given.stock("A").await;
    assert_eq!((a.available, a.replenished), (0, 0));
}

#[tokio::test]
async fn one_refused_sku_means_nothing_is_replenished() {
    // GIVEN A can be replenished, B cannot (at most 1)
    let given = TestStore::with_stock(&[("A", 0, 10), ("B", 0, 1)]).await;

    // WHEN the order is short 3 of A and 2 of B
    let emitted =
        ReplenishStock.handle(&insufficient(vec![short("A", 3), short("B", 2)]), &given.ports()).await.unwrap();

    // THEN replenishment fails, naming B
    let detail = failed_detail(&emitted);
    assert!(detail.contains("B is short 2 units") && !detail.contains("A "), "{detail}");
    // and not even A was replenished: all or nothing
    for sku_text in ["A", "B"] {
        let level = given.stock(sku_text).await;
        assert_eq!((level.available, level.replenished), (0, 0), "{sku_text}");
    }
    given.assert_conserved().await;
}

#[tokio::test]
async fn a_duplicate_delivery_returns_the_same_events_and_replenishes_once() {
    // GIVEN A was already replenished by 4 for this event
    let given = TestStore::with_stock(&[("A", 0, 10)]).await;
    let cause = insufficient(vec![short("A", 4)]);
    let first = ReplenishStock.handle(&cause, &given.ports()).await.unwrap();

    // WHEN the same inventory.insufficient (same id) is delivered again
    let second = ReplenishStock.handle(&cause, &given.ports()).await.unwrap();

    // THEN the very same stock.replenished (same id) comes back
    assert!(matches!(payloads(&first)[..], [Payload::StockReplenished(_)]));
    assert_eq!(second, first);
    // and the supplier delivered once
    let a = given.stock("A").await;
    assert_eq!((a.available, a.replenished), (4, 4));
    given.assert_conserved().await;
}

#[tokio::test]
async fn an_event_it_does_not_consume_is_a_permanent_error() {
    // GIVEN any store
    let given = TestStore::with_stock(&[("A", 0, 10)]).await;
    let reserved = InventoryReserved { items: vec![item("A", 1)], shipping_address: address("FR") };

    // WHEN inventory.reserved is delivered to replenish-stock
    let result =
        ReplenishStock.handle(&event(OrderId::new(), Payload::InventoryReserved(reserved)), &given.ports()).await;

    // THEN it is dead-lettered, not retried
    assert!(matches!(result, Err(StepError::Permanent(_))), "{result:?}");
}

#[tokio::test]
async fn a_shortfall_summing_past_u64_is_a_permanent_error_and_changes_nothing() {
    // GIVEN A can be replenished
    let given = TestStore::with_stock(&[("A", 0, 5)]).await;

    // WHEN a malformed event names A twice, u64::MAX units then 1 more
    let result = ReplenishStock.handle(&insufficient(vec![short("A", u64::MAX), short("A", 1)]), &given.ports()).await;

    // THEN it is a permanent error naming the overflow (not a wrap to 0 units)
    let Err(StepError::Permanent(message)) = &result else { panic!("expected a permanent error, got {result:?}") };
    assert!(
        message.contains("inventory.insufficient is malformed") && message.contains("of A adds up to more than"),
        "{message}"
    );
    // and no stock arrived
    let a = given.stock("A").await;
    assert_eq!((a.available, a.replenished), (0, 0));
}
