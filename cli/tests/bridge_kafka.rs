//! `choreo bridge --kafka` with the real function binaries under `cargo
//! lambda watch`, on a Kafka-protocol broker of the test's own (tansu):
//! invoked with the CloudEvent (the bridge publishes what they answer) and
//! with the `KafkaEvent` a self-managed Kafka event source mapping sends
//! (the functions publish to Kafka themselves, as under `EventSource=SelfManagedKafka`).

mod common;

use std::time::Duration;

use choreo::bridge::{BridgeConfig, EventShape, InvokeTarget};
use common::bridge::{new_order, start_cargo_lambda_watch};
use common::kafka::{KafkaBroker, dead_letters, kafka_settings};
use common::{eventually, init_logging};
use shared::Function;
use shared::bus::DeliverySettings;
use shared::bus::kafka::KafkaLink;
use shared::contract::domain::{CancelReason, OrderStatus};
use shared::store::Store;
use shared::store::sqlite::SqliteStore;
use tokio::sync::watch;

async fn sagas_from_kafka_through_cargo_lambda_watch(shape: EventShape) {
    init_logging();
    // GIVEN a broker with the topics, a seeded SQLite file, and `cargo lambda watch`
    // serving the real functions with Kafka as their bus
    let broker = KafkaBroker::start();
    let kafka = kafka_settings(&broker, "bridge.");
    let settings =
        DeliverySettings { max_retries: 3, retry_base: Duration::from_millis(500), ..DeliverySettings::default() };
    let link = KafkaLink::new(kafka.clone(), "test-publisher");
    link.create_topics(&settings).await.expect("the topics are created");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("choreo.db");
    let store = SqliteStore::open(&db).expect("open the database");
    let catalog = choreo::up::parse_catalog("seed", choreo::up::DEFAULT_CATALOG).expect("the catalog");
    store.seed_if_empty(&catalog).await.expect("seed the catalog");
    let functions: Vec<&str> = Function::consumers().map(Function::name).collect();
    let env = [("CHOREO_DB", db.to_str().expect("a UTF-8 path")), ("KAFKA_BOOTSTRAP_SERVERS", &broker.bootstrap)];
    let watch = start_cargo_lambda_watch(dir.path(), &functions, &env).await;

    // AND the bridge consuming the functions' groups and invoking them
    let config = BridgeConfig {
        amqp_url: String::new(),
        kafka: Some(kafka),
        functions: Function::consumers().collect(),
        target: InvokeTarget::Lambda {
            endpoint: Some(watch.endpoint.clone()),
            function_prefix: String::new(),
            event_shape: shape,
        },
        settings,
        call_timeout: choreo::bridge::DEFAULT_CALL_TIMEOUT,
    };
    let (stop, stopped) = watch::channel(false);
    let bridge = tokio::spawn(choreo::bridge::run(config, stopped));

    // WHEN two orders are created (as create-order does) and their order.created published
    let mut order_ids = Vec::new();
    for (sku, quantity, country) in [("WIDGET-1", 2, "FR"), ("GADGET-2", 3, "AQ")] {
        let accepted =
            create_order::create(&store, new_order(sku, quantity, country), None).await.expect("the order is stored");
        link.publish_events(std::slice::from_ref(&accepted.event)).await.expect("publish order.created");
        order_ids.push(accepted.order_id);
    }

    // THEN the first ships and the second is cancelled (shipment_failed), stock conserved
    let (store_ref, process) = (&store, &watch.process);
    // The first invocation of each function waits for `cargo lambda watch` to start it.
    let saga = Duration::from_secs(240);
    for (order_id, status) in [(order_ids[0], OrderStatus::Shipped), (order_ids[1], OrderStatus::Cancelled)] {
        let order = eventually(&format!("order {order_id} {status:?}"), saga, || async move {
            let order = store_ref.order(order_id).await.map_err(|error| error.to_string())?;
            order.filter(|order| order.status == status).ok_or_else(|| process.log_tail())
        })
        .await;
        if status == OrderStatus::Cancelled {
            assert_eq!(order.cancel_reason, Some(CancelReason::ShipmentFailed), "{order:?}");
        }
    }
    eventually("every reservation settled", saga, || async {
        let levels = store_ref.all_stock().await.map_err(|error| error.to_string())?;
        let settled = levels.iter().all(|level| level.reserved == 0 && level.is_conserved());
        if settled { Ok(()) } else { Err(format!("{levels:?}")) }
    })
    .await;
    assert_eq!(dead_letters(&link).await, vec![], "{}", watch.process.log_tail());

    let _ = stop.send(true);
    let stopped = tokio::time::timeout(Duration::from_secs(30), bridge).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the bridge stops cleanly: {stopped:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_from_kafka_runs_sagas_through_cargo_lambda_watch_with_cloudevents() {
    sagas_from_kafka_through_cargo_lambda_watch(EventShape::CloudEvent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_from_kafka_runs_sagas_through_cargo_lambda_watch_as_self_managed_kafka_events() {
    sagas_from_kafka_through_cargo_lambda_watch(EventShape::Kafka).await;
}
