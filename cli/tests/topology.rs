//! `infra/rabbitmq/definitions.json` is the generator's output
//! (`Topology::derive` of the choreography table, default queue settings),
//! and RabbitMQ reads it as the runner means it: imported into a vhost it
//! yields exactly the queues, arguments and bindings the file lists, the
//! same ones `AmqpLink::declare` creates, and the runner can declare its
//! topology over an imported one without any argument conflict.
//!
//! After changing the choreography or the queue settings, refresh the file
//! with `cargo run -p choreo -- topology > infra/rabbitmq/definitions.json`
//! (or run this test with `UPDATE_DEFINITIONS=1`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Scratch, Vhost, eventually};
use lapin::message::Delivery;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::Value;
use shared::Function;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, DeclareError, Topology, dead_letter_queue, retry_queue};
use shared::contract::choreography::EXCHANGE;
use shared::testkit::broker::rabbitmqctl;

const DEFINITIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/rabbitmq/definitions.json");

fn generated() -> Value {
    Topology::derive(&DeliverySettings::default()).definitions_json("/")
}

/// What `choreo topology` prints.
fn pretty(definitions: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(definitions).expect("definitions serialize"))
}

/// The committed file; with `UPDATE_DEFINITIONS` set, first rewritten from the generator.
fn committed() -> Value {
    if std::env::var_os("UPDATE_DEFINITIONS").is_some() {
        let aside = format!("{DEFINITIONS}.{:?}.tmp", std::thread::current().id());
        std::fs::write(&aside, pretty(&generated())).expect("write definitions.json");
        std::fs::rename(&aside, DEFINITIONS).expect("replace definitions.json");
    }
    let text =
        std::fs::read_to_string(DEFINITIONS).unwrap_or_else(|error| panic!("cannot read {DEFINITIONS}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{DEFINITIONS} is not JSON: {error}"))
}

const STALE: &str =
    "infra/rabbitmq/definitions.json is stale: run `cargo run -p choreo -- topology > infra/rabbitmq/definitions.json`";

#[test]
fn the_committed_definitions_are_the_generated_topology() {
    assert!(committed() == generated(), "{STALE}");
}

#[test]
fn choreo_topology_prints_the_committed_definitions() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .arg("topology")
        .env("RUST_LOG", "warn")
        .output()
        .expect("choreo topology runs");
    assert!(output.status.success(), "choreo topology failed: {}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("choreo topology prints JSON");
    assert!(printed == committed(), "{STALE}");
    // `--vhost` only changes the vhost of each object.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["topology", "--vhost", "orders"])
        .output()
        .expect("choreo topology runs");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("choreo topology prints JSON");
    assert_eq!(printed, Topology::derive(&DeliverySettings::default()).definitions_json("orders"));
}

#[test]
fn the_definitions_name_one_exchange_and_every_function_queue() {
    let definitions = committed();
    let exchanges = definitions["exchanges"].as_array().expect("exchanges");
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0]["name"], EXCHANGE);
    assert_eq!(exchanges[0]["type"], "topic");
    assert_eq!(exchanges[0]["durable"], true);
    let queues = queues_of(&definitions);
    for function in shared::Function::consumers() {
        assert!(queues.contains_key(&function.queue()), "{} has no queue", function.name());
        assert!(queues.contains_key(&shared::bus::amqp::dead_letter_queue(function)), "{} has no DLQ", function.name());
    }
    let everything_durable = definitions["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .all(|queue| queue["durable"] == true && queue["auto_delete"] == false && queue["vhost"] == "/");
    assert!(everything_durable, "every queue is durable, kept, and in the default vhost");
}

/// Queue name → its arguments, from a definitions file.
fn queues_of(definitions: &Value) -> BTreeMap<String, Value> {
    definitions["queues"]
        .as_array()
        .expect("definitions list queues")
        .iter()
        .map(|queue| (queue["name"].as_str().expect("a queue name").to_owned(), queue["arguments"].clone()))
        .collect()
}

/// `(queue, routing key)` of each binding from the exchange, from a definitions file.
fn bindings_of(definitions: &Value) -> BTreeSet<(String, String)> {
    definitions["bindings"]
        .as_array()
        .expect("definitions list bindings")
        .iter()
        .map(|binding| {
            assert_eq!(binding["source"], EXCHANGE);
            assert_eq!(binding["destination_type"], "queue");
            let text = |field: &str| binding[field].as_str().expect("binding fields are strings").to_owned();
            (text("destination"), text("routing_key"))
        })
        .collect()
}

/// What the broker holds in `vhost`: queue name → arguments (as a JSON
/// object, like the definitions file) and the bindings of the exchange.
struct Listed {
    queues: BTreeMap<String, Value>,
    bindings: BTreeSet<(String, String)>,
}

fn list(vhost: &Vhost) -> Listed {
    let json = |args: &[&str]| -> Vec<Value> {
        let mut command = vec![args[0], "-q", "-p", &vhost.name, "--formatter", "json"];
        command.extend_from_slice(&args[1..]);
        serde_json::from_str(&rabbitmqctl(&command)).expect("rabbitmqctl prints JSON")
    };
    let queues = json(&["list_queues", "name", "durable", "auto_delete", "arguments"])
        .into_iter()
        .map(|queue| {
            assert_eq!(queue["durable"], true, "{queue}");
            assert_eq!(queue["auto_delete"], false, "{queue}");
            // [[key, type, value], ...] → {key: value}
            let arguments: serde_json::Map<String, Value> = queue["arguments"]
                .as_array()
                .expect("arguments")
                .iter()
                .map(|argument| (argument[0].as_str().expect("an argument key").to_owned(), argument[2].clone()))
                .collect();
            (queue["name"].as_str().expect("a queue name").to_owned(), Value::Object(arguments))
        })
        .collect();
    let bindings = json(&["list_bindings", "source_name", "destination_name", "destination_kind", "routing_key"])
        .into_iter()
        .filter(|binding| binding["source_name"] == EXCHANGE)
        .map(|binding| {
            assert_eq!(binding["destination_kind"], "queue", "{binding}");
            let text = |field: &str| binding[field].as_str().expect("binding fields are strings").to_owned();
            (text("destination_name"), text("routing_key"))
        })
        .collect();
    let exchanges = json(&["list_exchanges", "name", "type", "durable"]);
    let exchange = exchanges.iter().find(|exchange| exchange["name"] == EXCHANGE).expect("the exchange exists");
    assert_eq!(exchange["type"], "topic");
    assert_eq!(exchange["durable"], true);
    Listed { queues, bindings }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_definitions_import_into_rabbitmq_as_the_runner_declares_them() {
    let definitions = committed();
    let (queues, bindings) = (queues_of(&definitions), bindings_of(&definitions));

    // GIVEN the committed file, aimed at a fresh vhost
    let imported = Vhost::new("import");
    let text = serde_json::to_string(&definitions)
        .expect("serialize")
        .replace(r#""vhost":"/""#, &format!(r#""vhost":"{}""#, imported.name));
    let scratch = Scratch::new();
    let file = scratch.dir.path().join("definitions.json");
    std::fs::write(&file, text).expect("write the definitions");

    // WHEN RabbitMQ imports it (the import finishes in the background)
    rabbitmqctl(&["import_definitions", file.to_str().expect("a UTF-8 path")]);
    // (bindings are imported last: once they are all there, so is the rest)
    eventually("the import creating every binding", Duration::from_secs(60), || async {
        let listed = rabbitmqctl(&["list_bindings", "-q", "-p", &imported.name, "--formatter", "json", "source_name"]);
        let listed: Vec<Value> = serde_json::from_str(&listed).expect("rabbitmqctl prints JSON");
        let count = listed.iter().filter(|binding| binding["source_name"] == EXCHANGE).count();
        if count == bindings.len() { Ok(()) } else { Err(format!("{count} bindings so far")) }
    })
    .await;
    let listed = list(&imported);

    // THEN the vhost holds exactly the file's queues, arguments and bindings
    assert_eq!(listed.queues, queues);
    assert_eq!(listed.bindings, bindings);

    // AND the runner declares its topology over it without a conflict
    let link = AmqpLink::new(&imported.url, "test-topology");
    link.declare(&Topology::derive(&DeliverySettings::default()))
        .await
        .expect("the runner's declare agrees with the file");
    link.close().await;
    let again = list(&imported);
    assert_eq!((again.queues, again.bindings), (queues.clone(), bindings.clone()), "declaring added nothing");

    // AND declaring into an empty vhost builds the very same topology
    let declared = Vhost::new("declare");
    let link = AmqpLink::new(&declared.url, "test-topology");
    link.declare(&Topology::derive(&DeliverySettings::default())).await.expect("declare into an empty vhost");
    link.close().await;
    let fresh = list(&declared);
    assert_eq!((fresh.queues, fresh.bindings), (queues, bindings));
}

/// A message published to `queue` of `vhost` and confirmed.
async fn publish_confirmed(link: &AmqpLink, queue: &str, body: &[u8]) {
    let channel = link.channel().await.expect("a channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let confirm = channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, BasicProperties::default())
        .await
        .expect("publish");
    assert!(confirm.await.expect("a confirm").is_ack(), "the broker took the message");
    let _ = channel.close(200, "published".into()).await;
}

/// The next message of `queue`, waiting a little for a quorum queue to hand
/// a returned message out again.
async fn get(channel: &Channel, queue: &str) -> Option<Delivery> {
    for _ in 0..50 {
        if let Some(message) = channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("basic.get") {
            return Some(message.delivery);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// WHEN a work queue's message is rejected (returned to the queue) as often
/// as the delivery limit (`--max-retries`) allows, THEN it is still in the
/// work queue; on one more return the broker dead-letters it into
/// `choreo.<function>.dead`, where it lands with its body and `x-death`.
#[tokio::test(flavor = "multi_thread")]
async fn a_work_queue_message_returned_past_the_delivery_limit_is_dead_lettered() {
    let vhost = Vhost::new("delivery-limit");
    let settings = DeliverySettings { max_retries: 2, ..DeliverySettings::default() };
    let link = vhost.link("test-delivery-limit");
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let (work, dead) = (Function::ShipOrder.queue(), dead_letter_queue(Function::ShipOrder));
    publish_confirmed(&link, &work, b"poison").await;
    let channel = link.channel().await.expect("a channel");

    for delivery in 1..=settings.max_retries + 1 {
        let message = get(&channel, &work).await.unwrap_or_else(|| panic!("delivery {delivery} is in {work}"));
        assert_eq!(message.data, b"poison");
        assert!(get_none(&channel, &dead).await, "nothing is dead-lettered before the limit (delivery {delivery})");
        message.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("reject with requeue");
    }

    let parked = get(&channel, &dead).await.expect("the message is dead-lettered after the last return");
    assert_eq!(parked.data, b"poison");
    let headers = parked.properties.headers().clone().unwrap_or_default();
    let deaths = headers.inner().get("x-death").and_then(|value| value.as_array()).expect("an x-death header");
    let death = deaths.as_slice()[0].as_field_table().expect("an x-death entry");
    assert_eq!(death.inner().get("queue").and_then(|q| q.as_long_string()).map(|q| q.to_string()), Some(work.clone()));
    assert!(get_none(&channel, &work).await, "the work queue no longer holds it");
    let _ = channel.close(200, "done".into()).await;
    link.close().await;
}

/// Whether `queue` is empty right now.
async fn get_none(channel: &Channel, queue: &str) -> bool {
    channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.expect("basic.get").is_none()
}

/// GIVEN a broker holding a work queue as an older choreo declared it
/// (classic, no arguments) and a retry queue of other retry settings, WHEN
/// the topology is declared, THEN the error names both queues with the
/// commands that migrate them, and `choreo up --amqp` and `choreo bridge`
/// say the same; AND after those commands the topology declares cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn queues_declared_with_other_arguments_get_the_commands_that_migrate_them() {
    let vhost = Vhost::new("mismatch");
    let link = vhost.link("test-mismatch");
    let (work, retry) = (Function::ShipOrder.queue(), retry_queue(Function::ShipOrder, 1));
    let channel = link.channel().await.expect("a channel");
    channel
        .queue_declare(work.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
        .await
        .expect("old");
    let mut ttl = FieldTable::default();
    ttl.insert("x-message-ttl".into(), AMQPValue::LongLongInt(999));
    channel.queue_declare(retry.as_str().into(), QueueDeclareOptions::durable(), ttl).await.expect("old retry");
    let _ = channel.close(200, "old".into()).await;

    let error = link.declare(&Topology::derive(&DeliverySettings::default())).await.expect_err("a mismatch");

    match &error {
        DeclareError::Mismatch { vhost: named, queues } => {
            assert_eq!((named, queues), (&vhost.name, &vec![work.clone(), retry.clone()]));
        }
        DeclareError::Amqp(error) => panic!("expected a mismatch, got {error}"),
    }
    let text = error.to_string();
    let deletes: Vec<&str> =
        text.lines().map(str::trim).filter(|line| line.starts_with("rabbitmqctl delete_queue")).collect();
    assert_eq!(deletes.len(), 2, "one delete per queue: {text}");
    assert!(text.contains("choreo-migrate-ship-order"), "{text}");
    assert!(text.contains("choreo dlq replay --function ship-order"), "{text}");

    let scratch = Scratch::new();
    let db = scratch.db().to_string_lossy().into_owned();
    for (command, args) in [("up", vec!["--port", "0", "--db", &db]), ("bridge", vec!["--invoke", "lambda"])] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
            .arg(command)
            .args(["--amqp", &vhost.url])
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("choreo runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "choreo {command} must not start: {stderr}");
        assert!(
            stderr.contains(&format!("rabbitmqctl delete_queue -p '{}' {work}", vhost.name)),
            "{command}: {stderr}"
        );
    }

    for line in deletes {
        let command = line.split('#').next().unwrap_or(line);
        let args: Vec<&str> = command.split_whitespace().skip(1).map(|arg| arg.trim_matches('\'')).collect();
        rabbitmqctl(&args);
    }
    link.declare(&Topology::derive(&DeliverySettings::default())).await.expect("declares cleanly once migrated");
    link.close().await;
}
