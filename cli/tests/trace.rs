//! One saga seen end to end over RabbitMQ, as `choreo up --amqp` runs it,
//! and over Kafka, as `choreo up --kafka` does (ARCHITECTURE.md §14): GIVEN
//! the system on its own vhost (or broker), WHEN an order
//! that waits for a replenishment is placed in a caller's trace, THEN every
//! event of its saga is in that trace, each a child span of its cause, every
//! log line about it carries the trace, and `choreo order show --timeline`
//! prints one line per hop with the replenishment and the slowest hop marked.

mod common;

use std::collections::HashMap;
use std::process::Command;

use choreo::client::Client;
use common::kafka::{KafkaBroker, OnKafka, kafka_settings};
use common::{InProcess, SAGA_TIMEOUT, Scratch, Vhost, default_catalog, eventually, test_settings};
use shared::contract::domain::OrderId;
use shared::saga::saga_records;
use shared::store::Store;
use shared::testkit::logs::CapturedLogs;
use shared::testkit::order_body;

const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread")]
async fn amqp_one_order_is_one_trace_and_its_timeline_shows_every_hop() {
    // GIVEN choreo up --amqp, its log lines captured
    let logs = CapturedLogs::install();
    let vhost = Vhost::new("trace");
    let scratch = Scratch::new();
    let system = InProcess::start(&vhost, &scratch.db(), &default_catalog(), test_settings()).await;
    one_order_is_one_trace(&logs, &system.client, &*system.store).await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_one_order_is_one_trace_and_its_timeline_shows_every_hop() {
    // GIVEN choreo up --kafka, its log lines captured
    let logs = CapturedLogs::install();
    let broker = KafkaBroker::start();
    let scratch = Scratch::new();
    let kafka = kafka_settings(&broker, "choreo.");
    let system = OnKafka::start(kafka, &scratch.db(), &default_catalog(), test_settings()).await;
    one_order_is_one_trace(&logs, &system.client, &*system.store).await;
    system.shutdown().await;
}

async fn one_order_is_one_trace(logs: &CapturedLogs, client: &Client, store: &dyn Store) {
    // WHEN an order short of stock is placed in the caller's trace
    let response = reqwest::Client::new()
        .post(format!("{}/orders", client.base()))
        .header("traceparent", CALLER)
        .json(&order_body("GADGET-2", 10, "FR"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status().as_u16(), 202);
    let answered = response.headers().get("traceparent").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    let order_id = body["order_id"].as_str().expect("an order id").to_owned();
    assert_eq!(answered.as_deref().and_then(|header| header.get(3..35)), Some(CALLER_TRACE));
    let order = client.wait_terminal(&order_id, SAGA_TIMEOUT).await.expect("the saga ends");
    assert_eq!(order["status"], "SHIPPED");

    // THEN every event of the saga is in the caller's trace, each a child of its cause
    let id = OrderId::parse(&order_id).expect("a valid order id");
    let record = store.order(id).await.expect("the store answers").expect("the order exists");
    let records = saga_records(store, &record).await.expect("the records read");
    let events = records.events;
    assert_eq!(events.len(), 5, "the whole saga: {events:#?}");
    let spans: HashMap<_, _> = events.iter().map(|event| (event.id, event.span_id().to_owned())).collect();
    for event in &events {
        assert_eq!(event.trace_id(), CALLER_TRACE, "{}", event.event_type());
        let parent = event.causation_id.map_or(Some(CALLER_SPAN.to_owned()), |cause| spans.get(&cause).cloned());
        assert_eq!(event.parent_span, parent, "{}'s parent is its cause", event.event_type());
    }

    // AND one line per step (settle-inventory may still be running when the order reads SHIPPED), and every
    // log line about the order carries the trace
    let about_it = eventually("a line per step of the saga", SAGA_TIMEOUT, || async {
        let about_it: Vec<_> = logs.lines().into_iter().filter(|line| line.to_string().contains(&order_id)).collect();
        let steps = about_it.iter().filter(|line| line["target"] == "choreo::saga").count();
        if steps >= 8 { Ok(about_it) } else { Err(format!("{steps} step lines: {about_it:#?}")) }
    })
    .await;
    for line in &about_it {
        assert!(line.to_string().contains(CALLER_TRACE), "a line without the trace: {line}");
    }
    let steps = about_it.iter().filter(|line| line["target"] == "choreo::saga").count();
    assert_eq!(steps, 8, "one line per step, not more: {about_it:#?}");

    // AND a person sees the saga hop by hop with one command
    let shown = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["order", "show", &order_id, "--timeline", "--url", client.base()])
        .env("RUST_LOG", "warn")
        .output()
        .expect("choreo runs");
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.status.success(), "choreo order show failed: {}", String::from_utf8_lossy(&shown.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + events.len(), "a heading, then one line per hop:\n{text}");
    assert!(lines[0].contains(&order_id) && lines[0].contains("SHIPPED") && lines[0].contains(CALLER_TRACE));
    assert!(lines[1].contains("order.created"), "{text}");
    assert!(lines.iter().any(|line| line.contains("stock.replenished") && line.contains("by replenish-stock")));
    assert!(
        lines.iter().any(|line| line.contains("replenish-stock: emitted stock.replenished")),
        "consumers and outcomes are shown:\n{text}"
    );
    assert_eq!(lines.iter().filter(|line| line.ends_with(choreo::timeline::SLOWEST)).count(), 1, "{text}");
}
