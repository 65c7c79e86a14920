//! `choreo bridge --invoke sqs` (the built binary) against moto's SQS
//! (`moto_server`, PyPI `moto[server]`, started on a free port per test) and
//! RabbitMQ (a fresh vhost per test): every event lands, intact, in the SQS
//! queue of each function that consumes it, the input is acked, and SIGTERM
//! stops the bridge cleanly with exit code 0.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use choreo::bridge::{SQS_ID_ATTRIBUTE, SQS_SUBJECT_ATTRIBUTE, SQS_TYPE_ATTRIBUTE, sqs_url_env_var};
use common::bridge::{Spawned, free_port, inventory_reserved, order_created, port_open};
use common::{Vhost, eventually, init_logging, queue_state};
use serde_json::Value;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{Topology, dead_letter_queue, retry_queue};
use shared::testkit::aws::local_sdk_config;
use shared::{Event, Function};
use tempfile::TempDir;

/// Retry settings given to the bridge, so the test declares the same topology.
fn settings() -> DeliverySettings {
    DeliverySettings { max_retries: 2, retry_base: Duration::from_millis(100), ..DeliverySettings::default() }
}

/// moto's server on a free port, stopped when dropped.
struct Moto {
    url: String,
    _process: Spawned,
}

async fn start_moto(dir: &TempDir) -> Moto {
    let port = free_port();
    let mut command = Command::new("moto_server");
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let process = Spawned::start("moto_server (pip install 'moto[server]')", command, &dir.path().join("moto.log"));
    eventually("moto_server to listen", Duration::from_secs(60), || async {
        port_open(port).then_some(()).ok_or_else(|| process.log_tail())
    })
    .await;
    Moto { url: format!("http://127.0.0.1:{port}"), _process: process }
}

/// `choreo bridge` with these arguments, env cleaned of anything that could
/// point it elsewhere (the local-endpoint defaults of the bridge are used).
fn bridge_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_choreo"));
    command.arg("bridge").args(args).env("RUST_LOG", "info");
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SQS",
        "CHOREO_AWS_ENDPOINT",
        "CHOREO_FUNCTION_PREFIX",
        "CHOREO_INVOKE",
        "CHOREO_MAX_RETRIES",
        "CHOREO_RETRY_DELAY_MS",
    ] {
        command.env_remove(name);
    }
    for function in Function::consumers() {
        command.env_remove(sqs_url_env_var(function));
    }
    command
}

/// A message as the function's SQS event source would hand it over.
#[derive(Debug)]
struct Received {
    body: Value,
    attributes: BTreeMap<String, String>,
    /// The `AWSTraceHeader` system attribute: the saga's trace in X-Ray form.
    trace_header: Option<String>,
}

/// Takes (receives and deletes) what `url` holds now.
async fn take(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Received> {
    let output = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::AwsTraceHeader)
        .send()
        .await
        .unwrap_or_else(|error| panic!("receive from {url}: {}", aws_sdk_sqs::error::DisplayErrorContext(&error)));
    let mut taken = Vec::new();
    for message in output.messages() {
        let body = serde_json::from_str(message.body().unwrap_or_default()).expect("the body is JSON");
        let attributes = message
            .message_attributes()
            .map(|attributes| {
                attributes
                    .iter()
                    .map(|(name, value)| (name.clone(), value.string_value().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let trace_header = message
            .attributes()
            .and_then(|system| system.get(&aws_sdk_sqs::types::MessageSystemAttributeName::AwsTraceHeader))
            .cloned();
        taken.push(Received { body, attributes, trace_header });
        sqs.delete_message()
            .queue_url(url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await
            .expect("delete a received message");
    }
    taken
}

fn assert_is(received: &Received, event: &Event) {
    let sent: Value = serde_json::from_slice(&event.to_json()).expect("an event is JSON");
    assert_eq!(received.body, sent, "the CloudEvent arrives intact");
    assert_eq!(received.attributes.get(SQS_TYPE_ATTRIBUTE).map(String::as_str), Some(event.event_type().as_str()));
    assert_eq!(received.attributes.get(SQS_ID_ATTRIBUTE), Some(&event.id.to_string()));
    assert_eq!(received.attributes.get(SQS_SUBJECT_ATTRIBUTE), Some(&event.subject.to_string()));
    // The function's invocation continues the saga's trace (ARCHITECTURE.md §14.1).
    let trace = shared::contract::trace::TraceParent::parse(&event.traceparent).expect("events carry a trace");
    let expected = trace.with_span(event.span_id().to_owned()).to_xray();
    assert_eq!(received.trace_header.as_deref(), Some(expected.as_str()), "the X-Ray trace header");
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_forwards_each_event_to_the_sqs_queue_of_every_consumer_then_stops_cleanly_on_sigterm() {
    init_logging();
    // GIVEN one SQS queue per consuming function in moto, a vhost with the topology
    let dir = tempfile::tempdir().expect("a temporary directory");
    let moto = start_moto(&dir).await;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk_config(&moto.url).await);
    let mut queue_urls = BTreeMap::new();
    for function in Function::consumers() {
        let created = sqs
            .create_queue()
            .queue_name(format!("choreo-{}", function.name()))
            .send()
            .await
            .unwrap_or_else(|error| panic!("create a queue: {}", aws_sdk_sqs::error::DisplayErrorContext(&error)));
        queue_urls.insert(function, created.queue_url().expect("a queue URL").to_owned());
    }
    let vhost = Vhost::new("bridge-sqs");
    let link = vhost.link("test-publisher");
    link.declare(&Topology::derive(&settings())).await.expect("declare the topology");

    // AND the bridge, given some queue URLs as flags and the others as variables
    let retries = settings().max_retries.to_string();
    let url_flags: Vec<String> = [Function::ReserveInventory, Function::ShipOrder]
        .iter()
        .map(|function| format!("{}={}", function.name(), queue_urls[function]))
        .collect();
    let mut args = vec!["--invoke", "sqs", "--endpoint", &moto.url, "--amqp", &vhost.url];
    args.extend(["--max-retries", &retries, "--retry-delay-ms", "100"]);
    for flag in &url_flags {
        args.extend(["--sqs-queue-url", flag]);
    }
    let mut command = bridge_command(&args);
    for function in [Function::ReplenishStock, Function::SettleInventory, Function::OrderStatus] {
        command.env(sqs_url_env_var(function), &queue_urls[&function]);
    }
    let mut bridge = Spawned::start("choreo bridge --invoke sqs", command, &dir.path().join("bridge.log"));

    // WHEN an event with one consumer and an event with two are published
    let created = order_created("WIDGET-1", 2, "FR");
    let reserved = inventory_reserved("BOLT-7", 3);
    link.publish_events(&[created.clone(), reserved.clone()]).await.expect("publish the events");

    // THEN each lands in the queue of each function that consumes it, intact
    let expected: BTreeMap<Function, Vec<&Event>> = BTreeMap::from([
        (Function::ReserveInventory, vec![&created]),
        (Function::ShipOrder, vec![&reserved]),
        (Function::OrderStatus, vec![&reserved]),
    ]);
    let received: Mutex<BTreeMap<Function, Vec<Received>>> = Mutex::default();
    eventually("every event in the SQS queue of each of its consumers", Duration::from_secs(60), || async {
        for (&function, url) in &queue_urls {
            let taken = take(&sqs, url).await;
            received.lock().expect("not poisoned").entry(function).or_default().extend(taken);
        }
        let received = received.lock().expect("not poisoned");
        let count = |function: &Function| received.get(function).map_or(0, Vec::len);
        expected
            .iter()
            .all(|(function, events)| count(function) >= events.len())
            .then_some(())
            .ok_or_else(|| bridge.log_tail())
    })
    .await;
    let received = received.into_inner().expect("not poisoned");
    for function in Function::consumers() {
        let wanted = expected.get(&function).cloned().unwrap_or_default();
        let got = received.get(&function).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), wanted.len(), "{function} got {got:#?}");
        for (message, event) in got.iter().zip(wanted) {
            assert_is(message, event);
        }
    }

    // WHEN the bridge gets SIGTERM
    assert!(bridge.is_running(), "the bridge runs until it is stopped\n{}", bridge.log_tail());
    bridge.signal("TERM");

    // THEN it exits 0, having acked every input (nothing left, nothing retried or dead)
    let status = bridge.exit_within(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|status| status.success()), "exit status {status:?}\n{}", bridge.log_tail());
    for function in Function::consumers() {
        let mut queues = vec![function.queue(), dead_letter_queue(function)];
        queues.extend((1..=settings().max_retries).map(|retry| retry_queue(function, retry)));
        for queue in queues {
            let (messages, consumers) = queue_state(&link, &queue).await;
            assert_eq!((messages, consumers), (0, 0), "{queue}: messages, consumers\n{}", bridge.log_tail());
        }
    }
    // AND nothing more reached SQS
    for (&function, url) in &queue_urls {
        assert!(take(&sqs, url).await.is_empty(), "{function} got a duplicate");
    }
    link.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_refuses_to_start_without_the_queue_url_of_every_bridged_function() {
    // GIVEN only ship-order's queue URL
    let dir = tempfile::tempdir().expect("a temporary directory");
    let command = bridge_command(&[
        "--invoke",
        "sqs",
        "--amqp",
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "--sqs-queue-url",
        "ship-order=http://127.0.0.1:1/000000000000/ship-order",
    ]);
    let mut bridge = Spawned::start("choreo bridge", command, &dir.path().join("missing.log"));

    // THEN it stops at once, naming each missing function and how to give its URL
    let status = bridge.exit_within(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|status| !status.success()), "exit status {status:?}\n{}", bridge.log_tail());
    let output = std::fs::read_to_string(&bridge.log).expect("the bridge's output");
    for function in Function::consumers().filter(|function| *function != Function::ShipOrder) {
        assert!(output.contains(function.name()), "{function} is not named:\n{output}");
        assert!(output.contains(&sqs_url_env_var(function)), "{function}'s variable is not named:\n{output}");
    }
    assert!(!output.contains("CHOREO_SQS_URL_SHIP_ORDER"), "ship-order has its URL:\n{output}");

    // AND bridging only ship-order needs only that URL: it gets as far as the
    // broker, and says clearly that it cannot reach it
    let command = bridge_command(&[
        "--invoke",
        "sqs",
        "--functions",
        "ship-order",
        "--amqp",
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "--sqs-queue-url",
        "ship-order=http://127.0.0.1:1/000000000000/ship-order",
    ]);
    let mut bridge = Spawned::start("choreo bridge", command, &dir.path().join("broker.log"));
    let status = bridge.exit_within(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|status| !status.success()), "exit status {status:?}\n{}", bridge.log_tail());
    let output = std::fs::read_to_string(&bridge.log).expect("the bridge's output");
    assert!(output.contains("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"), "{output}");
}
