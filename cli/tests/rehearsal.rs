//! The local rehearsal of the deployed shape: the code paths AWS runs, on
//! this machine, with nothing stood in for but AWS's own services.
//!
//! - DynamoDB is moto's server (`scripts/with-moto`): the functions run on
//!   the DynamoDB store, its tables created from the template's table list
//!   and seeded by `choreo stock import` (the README's seeding step);
//! - the broker speaks only TLS to everyone: a TLS endpoint in front of the
//!   test broker, with a CA the test makes (`AMQP_CA_FILE`), `amqps://` URLs;
//! - the real function binaries run under `cargo lambda watch`, and the real
//!   `choreo bridge` binary invokes them with the exact payloads of Amazon
//!   MQ's and SQS's event-source mappings (`--event-shape`), so each function
//!   runs its AWS adapter and publishes its own events;
//! - orders come in and are read through the HTTP functions' URLs, and the
//!   `relay-outbox` function is invoked as its schedule invokes it.
//!
//! Each test: every path of the saga ends as the rules say with the stock
//! conserved; an event a function cannot handle lands in its dead queue with
//! the error; an order whose events were committed but never published (a
//! stranded outbox entry) moves on after one run of the relay function, and
//! a poison outbox entry beside it is set aside without stopping it.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use choreo::client::Client;
use common::bridge::{Spawned, new_order, start_cargo_lambda_watch, workspace_root};
use common::{Vhost, eventually, init_logging};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use shared::EventType;
use shared::Function;
use shared::bus::amqp::{AmqpLink, CONTENT_TYPE, dead_letter_queue, list_dead_letters};
use shared::contract::domain::OrderId;
use shared::store::Store;
use shared::store::dynamodb::DynamoStore;
use shared::testkit::aws::{local_sdk_config, moto_url};
use shared::testkit::tls::TlsTerminator;
use shared::testkit::{order_body, sample_payload};

/// How long one saga may take here (generous: 2 cores, cold functions).
const SAGA: Duration = Duration::from_secs(120);

/// The five paths of the saga: (sku, quantity, country, status, cancel_reason,
/// the SKU's final (available, reserved, shipped, replenished)).
type Path = (&'static str, u64, &'static str, &'static str, Option<&'static str>, Option<(u64, u64, u64, u64)>);
const PATHS: [Path; 5] = [
    ("WIDGET-1", 2, "FR", "SHIPPED", None, Some((98, 0, 2, 0))),
    ("GADGET-2", 10, "FR", "SHIPPED", None, Some((0, 0, 10, 5))),
    ("RELIC-9", 5, "FR", "CANCELLED", Some("out_of_stock"), Some((1, 0, 0, 0))),
    ("BOLT-7", 3, "AQ", "CANCELLED", Some("shipment_failed"), Some((1000, 0, 0, 0))),
    ("NOPE-1", 1, "FR", "CANCELLED", Some("unknown_sku"), None),
];

#[tokio::test(flavor = "multi_thread")]
async fn rehearsal_with_amazon_mq_payloads() {
    rehearse("amazon-mq").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rehearsal_with_sqs_payloads() {
    rehearse("sqs").await;
}

async fn rehearse(event_shape: &str) {
    init_logging();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let moto = moto_url();
    let prefix = format!("rehearsal-{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let aws_env = [
        ("CHOREO_STORE", "dynamodb"),
        ("CHOREO_TABLE_PREFIX", prefix.as_str()),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];

    // GIVEN the DynamoDB tables, created and seeded as the README says
    let seeded = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .current_dir(workspace_root())
        .args(["stock", "import", "--create-tables", "infra/inventory.seed.json"])
        .envs(aws_env)
        .output()
        .expect("run choreo stock import");
    assert!(seeded.status.success(), "choreo stock import failed: {}", String::from_utf8_lossy(&seeded.stderr));
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&local_sdk_config(&moto).await), prefix.clone());
    assert_eq!(store.all_stock().await.expect("read the stock").len(), 5, "the seed catalog has 5 SKUs");

    // AND a broker reachable over TLS only, with a CA of the test's own
    let vhost = Vhost::new("rehearsal");
    let tls = TlsTerminator::start_for_local_broker();
    let amqps = tls.url("guest:guest", &vhost.name);
    let ca_file = tls.ca_file.to_str().expect("a UTF-8 path").to_owned();
    let amqp_env = [("AMQP_URL", amqps.as_str()), ("AMQP_CA_FILE", ca_file.as_str())];

    // AND the real functions under `cargo lambda watch`, on that store and broker
    // Scheduled rows (saga-deadline) have no binary: the relay hosts them.
    let mut functions: Vec<&str> = Function::all().filter(|f| !f.is_scheduled()).map(Function::name).collect();
    functions.push(relay_outbox::NAME);
    let mut env: Vec<(&str, &str)> = aws_env.into_iter().chain(amqp_env).collect();
    env.push((relay_outbox::GRACE_VAR, "0")); // every stranded entry is old enough
    let watch = start_cargo_lambda_watch(dir.path(), &functions, &env).await;

    // AND the bridge handing each message over as the event source mapping would
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_choreo"));
    bridge.args([
        "bridge",
        "--invoke",
        "lambda",
        "--endpoint",
        &watch.endpoint,
        "--event-shape",
        event_shape,
        "--max-retries",
        "2",
        "--retry-delay-ms",
        "300",
    ]);
    bridge.envs(aws_env).envs(amqp_env).env("RUST_LOG", "info");
    let mut bridge = Spawned::start("choreo bridge", bridge, &dir.path().join("bridge.log"));
    // The test itself inspects the broker over its plain port: only what it checks speaks TLS.
    let link = vhost.link("rehearsal-test");
    let context = || format!("{}\n--- bridge\n{}", watch.process.log_tail(), bridge.log_tail());
    eventually("the bridge to consume every queue over TLS", SAGA, || async {
        let mut idle = Vec::new();
        for function in Function::consumers() {
            if consumers(&link, &function.queue()).await != Some(1) {
                idle.push(function.name());
            }
        }
        if idle.is_empty() { Ok(()) } else { Err(format!("not consumed yet: {idle:?}\n{}", context())) }
    })
    .await;
    assert!(tls.handshakes() > 0, "nothing spoke TLS to the broker");

    // WHEN an order of every path comes in through create-order's function URL
    let orders = Client::new(&format!("{}/lambda-url/create-order", watch.endpoint));
    let queries = Client::new(&format!("{}/lambda-url/order-query", watch.endpoint));
    let mut placed = Vec::new();
    for path in PATHS {
        let (sku, quantity, country, ..) = path;
        let order_id = eventually("create-order to accept an order", SAGA, || async {
            orders.create_order(&order_body(sku, quantity, country), None).await.map_err(|error| error.to_string())
        })
        .await;
        placed.push((order_id, path));
    }

    // THEN every saga ends as its rules say, read through order-query's URL
    for (order_id, (sku, _, _, status, reason, _)) in &placed {
        let order = terminal(&queries, order_id, &context).await;
        assert_eq!(order["status"], *status, "{sku}: {order:#}");
        assert_eq!(order["cancel_reason"].as_str(), *reason, "{sku}: {order:#}");
    }
    // AND the stock settles at exactly these levels, conserved
    for (_, (sku, _, _, _, _, levels)) in &placed {
        let Some(levels) = *levels else { continue };
        eventually(&format!("{sku} at {levels:?}"), SAGA, || async {
            let now = queries.inventory(sku).await.map_err(|error| error.to_string())?;
            let now = ["available", "reserved", "shipped", "replenished"].map(|key| now[key].as_u64().unwrap_or(0));
            if now == [levels.0, levels.1, levels.2, levels.3] { Ok(()) } else { Err(format!("{now:?}")) }
        })
        .await;
    }
    for level in store.all_stock().await.expect("read the stock") {
        assert!(level.is_conserved(), "{level:?}");
    }

    // WHEN ship-order is handed an event it does not consume (a permanent
    // error: its adapter, not the bridge, must park it)
    let stray = shared::testkit::event(OrderId::new(), sample_payload(EventType::OrderCancelled));
    let channel = link.channel().await.expect("a channel");
    channel
        .basic_publish(
            "".into(),
            Function::ShipOrder.queue().as_str().into(),
            BasicPublishOptions::default(),
            &stray.to_json(),
            BasicProperties::default()
                .with_message_id(stray.id.to_string().into())
                .with_content_type(CONTENT_TYPE.into())
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
    let stray_id = stray.id.to_string();
    // THEN it lands in ship-order's dead queue, with the error that put it there
    let dead = eventually("the stray event in choreo.ship-order.dead", SAGA, || async {
        let letters = list_dead_letters(&link, 10).await.map_err(|error| error.to_string())?;
        letters
            .into_iter()
            .find(|letter| letter.message_id.as_deref() == Some(stray_id.as_str()))
            .ok_or_else(|| format!("not yet\n{}", context()))
    })
    .await;
    assert_eq!(
        dead.function,
        Function::ShipOrder.name(),
        "{dead:?} (queue {})",
        dead_letter_queue(Function::ShipOrder)
    );
    // (Amazon MQ: the function parks it with its error at once; SQS: the
    // function reports a batch item failure, which carries no reason, and the
    // record is dead-lettered once its receives are spent, as SQS's redrive does.)
    let error = dead.error.as_deref().unwrap_or_default();
    let expected = if event_shape == "sqs" { "batch item failure" } else { "does not consume order.cancelled" };
    assert!(error.contains(expected), "the error is not recorded: {dead:?}");

    // WHEN an order is committed but its order.created never published (the
    // broker was away), beside a poison outbox entry nobody can decode
    let stranded = create_order::create(&store, new_order("WIDGET-1", 1, "FR"), None).await.expect("store the order");
    put_poison_outbox_entry(&moto, &prefix).await;
    // AND the relay function runs once, as its schedule runs it
    let lambda = aws_sdk_lambda::Client::new(&local_sdk_config(&watch.endpoint).await);
    let scheduled = br#"{"version":"0","source":"aws.events","detail-type":"Scheduled Event","detail":{}}"#;
    let answer = lambda
        .invoke()
        .function_name(relay_outbox::NAME)
        .payload(scheduled.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|error| panic!("invoke relay-outbox: {error:?}\n{}", context()));
    let report: Value = serde_json::from_slice(answer.payload().map(|blob| blob.as_ref()).unwrap_or_default())
        .expect("the relay answers JSON");
    // THEN it published the stranded entry and set the poison one aside
    assert_eq!(answer.function_error(), None, "{report}");
    assert!(report["published"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["set_aside"].as_u64(), Some(1), "{report}");
    // AND the stranded order ships
    let order = terminal(&queries, &stranded.order_id.to_string(), &context).await;
    assert_eq!(order["status"], "SHIPPED", "{order:#}");

    // AND the bridge stops cleanly on SIGTERM
    bridge.signal("TERM");
    let exit = bridge.exit_within(Duration::from_secs(30)).await;
    assert!(exit.is_some_and(|status| status.success()), "bridge exit {exit:?}\n{}", bridge.log_tail());
    link.close().await;
}

/// Consumers of `queue`; `None` while it is not declared.
async fn consumers(link: &AmqpLink, queue: &str) -> Option<u32> {
    let channel = link.channel().await.ok()?;
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await.ok()?;
    let _ = channel.close(200, "inspected".into()).await;
    Some(declared.consumer_count())
}

/// The order once terminal, read through order-query's function URL.
async fn terminal(queries: &Client, order_id: &str, context: &impl Fn() -> String) -> Value {
    eventually(&format!("order {order_id} terminal"), SAGA, || async {
        let order = queries.order(order_id).await.map_err(|error| error.to_string())?;
        match order["status"].as_str() {
            Some("SHIPPED" | "CANCELLED") => Ok(order),
            _ => Err(format!("{order}\n{}", context())),
        }
    })
    .await
}

/// A processed record in the outbox whose events cannot be decoded: the
/// relay must set it aside and carry on with the others.
async fn put_poison_outbox_entry(moto: &str, prefix: &str) {
    let client = aws_sdk_dynamodb::Client::new(&local_sdk_config(moto).await);
    let committed_at = chrono::Utc::now().timestamp_millis() - 60_000;
    let item: HashMap<String, AttributeValue> = [
        ("pk", AttributeValue::S("ship-order#poison-entry".into())),
        ("function", AttributeValue::S("ship-order".into())),
        ("key", AttributeValue::S("poison-entry".into())),
        ("emitted", AttributeValue::S("[{\"this is\": \"no event\"}]".into())),
        ("published", AttributeValue::Bool(false)),
        ("committed_at", AttributeValue::N(committed_at.to_string())),
        ("outbox", AttributeValue::S("pending".into())),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    client
        .put_item()
        .table_name(format!("{prefix}processed"))
        .set_item(Some(item))
        .send()
        .await
        .expect("put a poison outbox entry");
}
