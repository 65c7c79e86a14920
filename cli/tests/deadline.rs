//! The saga deadline and `choreo sagas` over RabbitMQ (ARCHITECTURE.md §7.9),
//! as `choreo up --amqp` runs them (and the deadline over Kafka): the sweeper in the process, the deadline
//! event routed by the broker to ship-order, every step real. A stuck saga is
//! an order whose `order.created` was lost (stored, never published).

mod common;

use std::sync::Arc;
use std::time::Duration;

use choreo::sagas::{RedriveTo, describe, redrive, stuck_progress};
use choreo::up::{AmqpSystem, KafkaSystem};
use common::kafka::{KafkaBroker, kafka_settings};
use common::{SAGA_TIMEOUT, Scratch, Vhost, default_catalog, eventually, init_logging, test_settings, up_config};
use shared::bus::Publisher;
use shared::contract::domain::{CancelReason, OrderId, OrderStatus, Sku};
use shared::store::{OrderRecord, Store};
use shared::testkit::{given_lost_order, item};
use shared::{Event, Function, Payload};

async fn start(vhost: &Vhost, scratch: &Scratch, deadline: Duration) -> AmqpSystem {
    init_logging();
    let config = up_config(&scratch.db(), &default_catalog(), test_settings());
    AmqpSystem::start_with_deadline(config, &vhost.url, deadline).await.expect("choreo up --amqp starts")
}

async fn terminal(store: &dyn Store, order_id: OrderId) -> OrderRecord {
    eventually("the saga ends", SAGA_TIMEOUT, || async {
        let order = store.order(order_id).await.map_err(|error| error.to_string())?.ok_or("no order")?;
        if order.status.is_terminal() { Ok(order) } else { Err(format!("{:?}", order.status)) }
    })
    .await
}

async fn widget(store: &dyn Store) -> (u64, u64, u64) {
    let level = store.stock(&[Sku::parse("WIDGET-1").expect("a SKU")]).await.expect("read").remove(0);
    assert!(level.is_conserved(), "{level:?}");
    (level.available, level.reserved, level.shipped)
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_order_stuck_past_its_deadline_is_cancelled_and_a_late_redrive_changes_nothing() {
    // GIVEN choreo up --amqp with a 300 ms saga deadline
    let (vhost, scratch) = (Vhost::new("deadline"), Scratch::new());
    let system = start(&vhost, &scratch, Duration::from_millis(300)).await;
    let publisher = Arc::clone(&system.link) as Arc<dyn Publisher>;
    stuck_past_its_deadline(&*Arc::clone(&system.store), &*publisher).await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_an_order_stuck_past_its_deadline_is_cancelled_and_a_late_redrive_changes_nothing() {
    // GIVEN choreo up --kafka with a 300 ms saga deadline
    let (broker, scratch) = (KafkaBroker::start(), Scratch::new());
    let config = up_config(&scratch.db(), &default_catalog(), test_settings());
    let kafka = kafka_settings(&broker, "choreo.");
    let system = KafkaSystem::start(config, kafka, Duration::from_millis(300)).await.expect("choreo up --kafka starts");
    let publisher = Arc::clone(&system.link) as Arc<dyn Publisher>;
    stuck_past_its_deadline(&*Arc::clone(&system.store), &*publisher).await;
    system.shutdown().await;
}

/// GIVEN a lost order.created on a system whose deadline is short, WHEN it
/// passes, THEN the order is cancelled as timed_out, and a redrive through
/// `bus` afterwards changes nothing.
async fn stuck_past_its_deadline(store: &dyn Store, bus: &dyn Publisher) {
    let created = given_lost_order(store, "WIDGET-1", 2).await;

    // WHEN the deadline passes
    let order = terminal(store, created.subject).await;

    // THEN the order is cancelled as timed_out, nothing held
    assert_eq!((order.status, order.cancel_reason), (OrderStatus::Cancelled, Some(CancelReason::TimedOut)));
    assert_eq!(widget(store).await, (100, 0, 0));

    // AND WHEN its saga is redriven through the broker (the lost event arrives at last)
    let progress = shared::saga::progress_of(store, order).await.expect("progress");
    assert_eq!(
        progress.waiting.iter().map(|waiting| waiting.function).collect::<Vec<_>>(),
        [Function::ReserveInventory]
    );
    let handed = redrive(store, &progress, &RedriveTo::Broker(bus)).await.expect("redrive");
    assert_eq!(handed, 1);

    // THEN reserve-inventory reserves, ship-order's tombstone answers, the
    // units come back, and the order stays cancelled as timed_out
    eventually("the late reservation is released", SAGA_TIMEOUT, || async {
        let reservation = store.reservation(created.subject).await.map_err(|error| error.to_string())?;
        match reservation {
            Some(held) if held.state == shared::store::ReservationState::Released => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(widget(store).await, (100, 0, 0));
    let order = store.order(created.subject).await.expect("read").expect("the order");
    assert_eq!((order.status, order.cancel_reason), (OrderStatus::Cancelled, Some(CancelReason::TimedOut)));
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_a_stuck_saga_is_listed_and_a_redrive_through_the_broker_finishes_it() {
    // GIVEN choreo up --amqp with a far deadline, and a lost order.created
    let (vhost, scratch) = (Vhost::new("stuck"), Scratch::new());
    let system = start(&vhost, &scratch, Duration::from_secs(3600)).await;
    let created = given_lost_order(&*system.store, "WIDGET-1", 2).await;
    // (Open orders are listed by id, created before a millisecond: let the
    // order's millisecond pass, or a fast machine lists none.)
    tokio::time::sleep(Duration::from_millis(2)).await;

    // WHEN the stuck sagas are listed
    let stuck = stuck_progress(&*system.store, Duration::ZERO).await.expect("the store answers");

    // THEN it waits on reserve-inventory, its last event order.created, no dead letter
    let [saga] = stuck.as_slice() else { panic!("one stuck saga: {stuck:?}") };
    let line = describe(saga, &[]);
    assert_eq!(line.waits_on, ["reserve-inventory"]);
    assert_eq!(line.last_event.map(|event| event.id), Some(created.id.to_string()));
    assert!(line.dead_letters.is_empty());

    // AND WHEN it is redriven through the broker, THEN it ships
    redrive(&*system.store, saga, &RedriveTo::Broker(&*system.link)).await.expect("redrive");
    let order = terminal(&*system.store, created.subject).await;
    assert_eq!(order.status, OrderStatus::Shipped, "{order:?}");
    // settle-inventory takes order.shipped beside order-status, so the stock
    // may settle just after the order reads shipped.
    let store = &*system.store;
    eventually("the reservation settled as shipped", SAGA_TIMEOUT, || async {
        match widget(store).await {
            (98, 0, 2) => Ok(()),
            other => Err(format!("(available, reserved, shipped) = {other:?}")),
        }
    })
    .await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_sagas_stuck_names_the_dead_letter_holding_a_saga() {
    // GIVEN a lost order.created, and a shipment.failed for that order which
    // settle-inventory dead-letters (it holds no reservation)
    let (vhost, scratch) = (Vhost::new("stuck-dead"), Scratch::new());
    let system = start(&vhost, &scratch, Duration::from_secs(3600)).await;
    let created = given_lost_order(&*system.store, "WIDGET-1", 2).await;
    let failed = shared::contract::events::ShipmentFailed {
        items: vec![item("WIDGET-1", 2)],
        detail: "a test".to_owned(),
        reason: CancelReason::ShipmentFailed,
    };
    let poison = Event::new(Function::ShipOrder, created.subject, Some(&created), Payload::ShipmentFailed(failed));
    system.link.publish_events(std::slice::from_ref(&poison)).await.expect("published");
    let dead = eventually("the dead letter is parked", SAGA_TIMEOUT, || async {
        let letters =
            shared::bus::amqp::list_dead_letters(&system.link, 100).await.map_err(|error| error.to_string())?;
        if letters.is_empty() { Err("no dead letter yet".to_owned()) } else { Ok(letters) }
    })
    .await;

    // WHEN the stuck sagas are listed with the broker's dead letters
    let stuck = stuck_progress(&*system.store, Duration::ZERO).await.expect("the store answers");
    let [saga] = stuck.as_slice() else { panic!("one stuck saga: {stuck:?}") };
    let line = describe(saga, &dead);

    // THEN the dead letter of settle-inventory is named as holding it
    assert_eq!(line.dead_letters.len(), 1, "{line:?}");
    assert_eq!(line.dead_letters[0].function, "settle-inventory");
    assert_eq!(line.dead_letters[0].event_type.as_deref(), Some("shipment.failed"));
    assert!(line.dead_letters[0].error.as_deref().is_some_and(|error| error.contains("no reservation")), "{line:?}");
    system.shutdown().await;
}
