//! `choreo bridge --invoke lambda --event-shape amazon-mq|sqs` against
//! RabbitMQ (a fresh vhost per test) and a recording Invoke API: each message
//! reaches the function exactly as that AWS event source mapping would hand
//! it over; the bridge publishes nothing itself and acks once the invocation
//! succeeded; an SQS batch item failure goes through the runner's retries.
//! (`bridge_lambda.rs` runs the real functions under `cargo lambda watch`
//! with each shape.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::rabbitmq::RabbitMqEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use choreo::bridge::{BridgeConfig, EventShape, InvokeTarget};
use common::bridge::inventory_reserved;
use common::{Vhost, eventually, init_logging, queue_state};
use serde_json::{Value, json};
use shared::Function;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{Topology, dead_letter_queue, list_dead_letters, retry_queue};
use shared::host::lambda::Invocation;
use tokio::sync::watch;

/// Every call: (function name, payload).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;
/// How the recording Invoke API answers call number `n` (1-based) of a payload.
type Answer = Arc<dyn Fn(usize, &Value) -> Value + Send + Sync>;

#[derive(Clone)]
struct Recorder {
    calls: Calls,
    answer: Answer,
}

async fn invoke(State(recorder): State<Recorder>, Path(name): Path<String>, body: Bytes) -> String {
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut calls = recorder.calls.lock().expect("not poisoned");
    calls.push((name, payload.clone()));
    (recorder.answer)(calls.len(), &payload).to_string()
}

/// An Invoke API on a local port that records every call.
async fn recording_lambda(answer: Answer) -> (String, Calls, tokio::task::JoinHandle<()>) {
    let calls = Calls::default();
    let state = Recorder { calls: Arc::clone(&calls), answer };
    let router = Router::new().route("/2015-03-31/functions/{name}/invocations", post(invoke)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a local port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (endpoint, calls, server)
}

/// Runs a bridge of ship-order with `shape` until `calls` holds `expected`
/// calls, then stops it; answers the calls. Asserts the bridge acked the
/// message, dead-lettered nothing and published nothing itself.
async fn bridge_one_message(shape: EventShape, answer: Answer, expected: usize) -> (Vhost, Vec<(String, Value)>) {
    init_logging();
    let (endpoint, calls, server) = recording_lambda(answer).await;
    let vhost = Vhost::new("bridge-shapes");
    let settings =
        DeliverySettings { max_retries: 2, retry_base: Duration::from_millis(50), ..DeliverySettings::default() };
    let link = vhost.link("test-publisher");
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let config = BridgeConfig {
        amqp_url: vhost.url.clone(),
        kafka: None,
        functions: vec![Function::ShipOrder],
        target: InvokeTarget::Lambda { endpoint: Some(endpoint), function_prefix: String::new(), event_shape: shape },
        settings: settings.clone(),
        call_timeout: choreo::bridge::DEFAULT_CALL_TIMEOUT,
    };
    let (stop, stopped) = watch::channel(false);
    let bridge = tokio::spawn(choreo::bridge::run(config, stopped));

    let reserved = inventory_reserved("WIDGET-1", 1);
    link.publish_events(std::slice::from_ref(&reserved)).await.expect("publish inventory.reserved");
    let calls_ref = &calls;
    eventually("the invocations", Duration::from_secs(30), || async {
        let count = calls_ref.lock().expect("not poisoned").len();
        if count >= expected { Ok(()) } else { Err(format!("{count} calls so far")) }
    })
    .await;
    let _ = stop.send(true);
    let stopped = tokio::time::timeout(Duration::from_secs(30), bridge).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the bridge stops cleanly: {stopped:?}");
    server.abort();

    let mut queues = vec![Function::ShipOrder.queue()];
    queues.extend((1..=settings.max_retries).map(|retry| retry_queue(Function::ShipOrder, retry)));
    for queue in queues {
        assert_eq!(queue_state(&link, &queue).await, (0, 0), "{queue} is settled: messages, consumers");
    }
    assert_eq!(queue_state(&link, &dead_letter_queue(Function::ShipOrder)).await, (0, 0), "nothing dead-lettered");
    assert!(list_dead_letters(&link, 10).await.expect("list").is_empty());
    // What ship-order emits would reach settle-inventory: the bridge published nothing.
    assert_eq!(queue_state(&link, &Function::SettleInventory.queue()).await, (0, 0), "the bridge publishes nothing");
    link.close().await;

    let calls = calls.lock().expect("not poisoned").clone();
    assert_eq!(calls.len(), expected, "{calls:#?}");
    for (name, payload) in &calls {
        assert_eq!(name, Function::ShipOrder.name());
        let body = decoded_body(shape, payload, &vhost);
        let event = shared::Event::from_json(&body).expect("the message body is the CloudEvent");
        assert_eq!((event.id, event.event_type()), (reserved.id, reserved.event_type()));
    }
    (vhost, calls)
}

/// The CloudEvent text a payload of `shape` carries.
fn decoded_body(shape: EventShape, payload: &Value, vhost: &Vhost) -> Vec<u8> {
    match shape {
        EventShape::AmazonMq => {
            let key = format!("{}::{}", Function::ShipOrder.queue(), vhost.name);
            let data = payload["rmqMessagesByQueue"][&key][0]["data"].as_str().expect("base64 data under the key");
            BASE64.decode(data).expect("base64")
        }
        EventShape::Sqs => payload["Records"][0]["body"].as_str().expect("an SQS body").as_bytes().to_vec(),
        EventShape::CloudEvent => payload.to_string().into_bytes(),
        EventShape::Kafka => panic!("the kafka shape is refused over RabbitMQ (tested in bridge::tests)"),
    }
}

/// WHEN the bridge delivers a message with `--event-shape amazon-mq`, THEN
/// the function gets a `RabbitMqEvent` as Amazon MQ sends it: `aws:rmq`, the
/// broker's ARN, the message under `<queue>::<vhost>` with base64 data, its
/// AMQP properties (string headers as byte arrays) and `redelivered`; and a
/// success acks it without the bridge publishing anything.
#[tokio::test(flavor = "multi_thread")]
async fn amazon_mq_shape_is_the_rabbitmq_event_of_the_event_source_mapping() {
    let answer: Answer = Arc::new(|_, _| json!({"handled": 1, "dead_lettered": []}));

    let (vhost, calls) = bridge_one_message(EventShape::AmazonMq, answer, 1).await;

    let payload = &calls[0].1;
    assert_eq!(payload["eventSource"], "aws:rmq");
    assert!(payload["eventSourceArn"].as_str().is_some_and(|arn| arn.starts_with("arn:aws:mq:")), "{payload}");
    let queues = payload["rmqMessagesByQueue"].as_object().expect("rmqMessagesByQueue");
    let key = format!("{}::{}", Function::ShipOrder.queue(), vhost.name);
    assert_eq!(queues.keys().collect::<Vec<_>>(), vec![&key], "one queue, keyed <queue>::<vhost>");
    let message = &queues[&key][0];
    let body = decoded_body(EventShape::AmazonMq, payload, &vhost);
    let event = shared::Event::from_json(&body).expect("a CloudEvent");
    let properties = &message["basicProperties"];
    assert_eq!(properties["messageId"], json!(event.id.to_string()));
    assert_eq!(properties["correlationId"], json!(event.subject.to_string()));
    assert_eq!(properties["type"], "inventory.reserved");
    assert_eq!(properties["contentType"], "application/cloudevents+json");
    assert_eq!(properties["deliveryMode"], 2);
    assert_eq!(properties["bodySize"], json!(body.len()));
    let traceparent: Vec<u8> =
        serde_json::from_value(properties["headers"]["traceparent"]["bytes"].clone()).expect("header bytes");
    assert_eq!(String::from_utf8(traceparent).ok(), Some(event.traceparent.clone()));
    assert_eq!(message["redelivered"], false);
    let parsed: RabbitMqEvent = serde_json::from_value(payload.clone()).expect("an aws_lambda_events RabbitMqEvent");
    assert_eq!(parsed.messages_by_queue[&key].len(), 1);
    assert!(matches!(Invocation::classify(payload.clone()), Ok(Invocation::RabbitMq(_))));
}

/// WHEN the bridge delivers a message with `--event-shape sqs` and the
/// function reports it as a batch item failure, THEN it comes back through
/// the runner's retry queue (`ApproximateReceiveCount` 2), and once handled
/// it is acked; every payload is an `SqsEvent` record as SQS sends it.
#[tokio::test(flavor = "multi_thread")]
async fn sqs_shape_is_the_sqs_event_and_a_batch_item_failure_is_retried() {
    let answer: Answer = Arc::new(|call, payload| {
        let id = payload["Records"][0]["messageId"].clone();
        if call == 1 {
            json!({"batchItemFailures": [{"itemIdentifier": id}]})
        } else {
            json!({"batchItemFailures": []})
        }
    });

    let (_vhost, calls) = bridge_one_message(EventShape::Sqs, answer, 2).await;

    for (number, (_, payload)) in (1..).zip(&calls) {
        let records = payload["Records"].as_array().expect("Records");
        assert_eq!(records.len(), 1, "{payload}");
        let record = &records[0];
        assert_eq!(record["eventSource"], "aws:sqs");
        assert!(record["eventSourceARN"].as_str().is_some_and(|arn| arn.ends_with(":ship-order")), "{record}");
        assert!(record["messageId"].as_str().is_some_and(|id| !id.is_empty()), "{record}");
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], json!(number.to_string()), "{record}");
        assert_eq!(record["messageAttributes"]["type"]["stringValue"], "inventory.reserved");
        assert_eq!(record["messageAttributes"]["type"]["dataType"], "String");
        let parsed: SqsEvent = serde_json::from_value(payload.clone()).expect("an aws_lambda_events SqsEvent");
        assert_eq!(parsed.records.len(), 1);
        assert!(matches!(Invocation::classify(payload.clone()), Ok(Invocation::Sqs(_))));
    }
}
