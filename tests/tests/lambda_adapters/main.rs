//! The Lambda hosting of every consuming function (ARCHITECTURE.md §11.3), driven the way
//! AWS drives it: `SqsEvent` and Amazon MQ `RabbitMqEvent` payloads read from
//! JSON fixtures shaped like what AWS sends (`tests/fixtures/`), a direct
//! CloudEvent as the bridge sends it, and payloads of no known shape.
//!
//! Each test gets a `LambdaHost` over a throwaway SQLite store and a real
//! `AmqpLink` to RabbitMQ at `AMQP_URL`, in a vhost of its own with the whole
//! topology declared, so every publish is confirmed and routed, and what a
//! function emitted is read back from the consumer queues.
//!
//! Fixtures keep the AWS envelope; what must match the test store is filled
//! in by `choreo_e2e::lambda_fixtures`.
//!
//! The five steps come from the function crates (dev-dependencies of this
//! crate): the very `Step` each function's `main` hands to
//! `shared::host::lambda::run`.

mod consumers;
mod kafka;

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lambda_events::event::rabbitmq::RabbitMqEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use choreo_e2e::lambda_fixtures::{decode, envelope};
use chrono::Utc;
use lambda_runtime::Diagnostic;
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use uuid::Uuid;

use consumers::{CATALOG, Consumer};

use lapin::types::FieldTable;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{
    ATTEMPT_HEADER, AmqpLink, CONTENT_TYPE, ERROR_HEADER, FUNCTION_HEADER, SAGA_ENDED_QUEUE, Topology,
    dead_letter_queue,
};
use shared::contract::domain::OrderId;
use shared::host::lambda::{Bus, Invocation, LambdaHost, PERMANENT_ERROR_TYPE, RETRYABLE_ERROR_TYPE};
use shared::store::Store;
use shared::testkit::TestStore;
use shared::testkit::broker::Vhost;
use shared::{Event, Function, Step, StepError};

// ---------------------------------------------------------------------------
// Fixtures (`choreo_e2e::lambda_fixtures`)

/// The key of a function's queue in `rmqMessagesByQueue` (`<queue>::<vhost>`).
fn rmq_key(function: Function) -> String {
    format!("{}::/", function.queue())
}

// ---------------------------------------------------------------------------
// Broker and host

/// A message as a queue holds it.
#[derive(Debug)]
struct Raw {
    data: Vec<u8>,
    message_id: Option<String>,
    headers: FieldTable,
}

impl Raw {
    fn text(&self, header: &str) -> Option<String> {
        self.headers.inner().get(header)?.as_long_string().map(ToString::to_string)
    }

    fn int(&self, header: &str) -> Option<i64> {
        self.headers.inner().get(header)?.as_long_long_int()
    }
}

/// A step hosted as on Lambda, with its store and its broker.
struct Host {
    host: LambdaHost,
    given: TestStore,
    link: Arc<AmqpLink>,
    /// Dropped last: deleting the vhost closes what is still connected.
    _vhost: Vhost,
}

impl Host {
    async fn new(step: Arc<dyn Step>) -> Self {
        let vhost = Vhost::new("lambda");
        let link = AmqpLink::new(&vhost.url, "lambda-adapters-test");
        link.declare(&Topology::derive(&DeliverySettings::default()))
            .await
            .unwrap_or_else(|error| panic!("declare the topology in vhost {}: {error}", vhost.name));
        let given = TestStore::with_stock(CATALOG).await;
        let host = LambdaHost { step, ports: given.ports(), bus: Some(Bus::Amqp(Arc::clone(&link))) };
        Self { host, given, link, _vhost: vhost }
    }

    async fn invoke(&self, payload: Value) -> Result<Value, StepError> {
        self.host.invoke(payload).await
    }

    /// Removes every message waiting in `queue`, as it is.
    async fn take_raw(&self, queue: &str) -> Vec<Raw> {
        let channel = self.link.channel().await.expect("a channel to read a queue");
        let mut messages = Vec::new();
        while let Some(message) =
            channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            let delivery = message.delivery;
            let properties = &delivery.properties;
            messages.push(Raw {
                message_id: properties.message_id().as_ref().map(ToString::to_string),
                headers: properties.headers().clone().unwrap_or_default(),
                data: delivery.data,
            });
        }
        let _ = channel.close(200, "read".into()).await;
        messages
    }

    /// Removes and decodes every message waiting in `queue`, checking each
    /// carries the AMQP properties of ARCHITECTURE.md §5.
    async fn take(&self, queue: &str) -> Vec<Event> {
        let channel = self.link.channel().await.expect("a channel to read back published events");
        let mut events = Vec::new();
        while let Some(message) =
            channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            let delivery = message.delivery;
            let event = Event::from_json(&delivery.data).expect("a published message is a CloudEvent");
            let properties = &delivery.properties;
            let text = |value: &Option<lapin::types::ShortString>| value.as_ref().map(|text| text.to_string());
            assert_eq!(delivery.routing_key.as_str(), event.event_type().as_str(), "routing key = type");
            assert_eq!(text(properties.message_id()), Some(event.id.to_string()), "message_id = id");
            assert_eq!(text(properties.correlation_id()), Some(event.subject.to_string()), "correlation_id = order");
            assert_eq!(text(properties.content_type()).as_deref(), Some(CONTENT_TYPE));
            assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
            events.push(event);
        }
        let _ = channel.close(200, "read".into()).await;
        events
    }

    /// THEN every committed event was confirmed by the broker and its outbox
    /// entry settled (nothing is left for a relay to re-publish).
    async fn assert_outbox_settled(&self) {
        let later = Utc::now() + chrono::Duration::days(1);
        let unpublished = self.given.store.unpublished(later).await.expect("read the outbox");
        assert!(unpublished.is_empty(), "events committed but not marked published: {unpublished:?}");
    }

    /// THEN `consumer` emitted exactly one event in reaction to each of
    /// `inputs`, and it reached the queue of the function that consumes it.
    async fn assert_published(&self, consumer: Consumer, inputs: &[Event]) {
        let (event_type, queue) = consumer.emits();
        let mut published: Vec<_> = self
            .take(&queue)
            .await
            .iter()
            .map(|event| (event.causation_id, event.subject, event.event_type()))
            .collect();
        published.sort();
        let mut expected: Vec<_> = inputs.iter().map(|input| (Some(input.id), input.subject, event_type)).collect();
        expected.sort();
        assert_eq!(
            published,
            expected,
            "{} should publish one {event_type} per handled event to {queue}",
            consumer.function()
        );
    }
}

// ---------------------------------------------------------------------------
// Scenarios run for every consuming function

/// WHEN an SQS batch of one valid record arrives, THEN no failure is
/// reported, the effect is stored and the emitted event is published.
async fn sqs_one_record(consumer: Consumer) {
    let host = Host::new(consumer.step()).await;
    let order_id = OrderId::new();
    consumer.given(&host.given, order_id).await;
    let body = consumer.body(order_id);

    let response = host.invoke(envelope("sqs-one-record.json", consumer.function(), &[&body])).await;

    assert_eq!(response.expect("an SQS invocation always answers"), json!({"batchItemFailures": []}));
    consumer.assert_effect(&host.given, &[order_id]).await;
    host.assert_published(consumer, &[decode(&body)]).await;
    host.assert_outbox_settled().await;
}

/// WHEN the middle record of three cannot be decoded, THEN exactly its
/// messageId is reported and the other two are handled.
async fn sqs_batch_with_one_undecodable_record(consumer: Consumer) {
    let host = Host::new(consumer.step()).await;
    let orders = [OrderId::new(), OrderId::new()];
    for order_id in orders {
        consumer.given(&host.given, order_id).await;
    }
    let bodies = orders.map(|order_id| consumer.body(order_id));
    let batch = envelope("sqs-three-records-one-undecodable.json", consumer.function(), &[&bodies[0], &bodies[1]]);
    let bad_message_id = batch["Records"][1]["messageId"].clone();
    assert!(decode_fails(&batch["Records"][1]["body"]), "the fixture's middle record must be undecodable");

    let response = host.invoke(batch).await.expect("an SQS invocation always answers");

    assert_eq!(response, json!({"batchItemFailures": [{"itemIdentifier": bad_message_id}]}));
    consumer.assert_effect(&host.given, &orders).await;
    host.assert_published(consumer, &bodies.each_ref().map(|body| decode(body))).await;
    host.assert_outbox_settled().await;
}

fn decode_fails(body: &Value) -> bool {
    Event::from_json(body.as_str().unwrap_or_default().as_bytes()).is_err()
}

/// WHEN an Amazon MQ batch of one message arrives, THEN it is handled,
/// stored and its emitted event published.
async fn rmq_one_message(consumer: Consumer) {
    let host = Host::new(consumer.step()).await;
    let order_id = OrderId::new();
    consumer.given(&host.given, order_id).await;
    let body = consumer.body(order_id);

    let response = host.invoke(envelope("rmq-one-message.json", consumer.function(), &[&body])).await;

    assert_eq!(response.expect("a handled batch answers Ok"), json!({"handled": 1, "dead_lettered": []}));
    consumer.assert_effect(&host.given, &[order_id]).await;
    host.assert_published(consumer, &[decode(&body)]).await;
    host.assert_outbox_settled().await;
}

/// WHEN one message of three is a poison message (JSON, but no CloudEvent),
/// THEN the invocation succeeds, the two others are handled, and the poison
/// one is in the function's dead-letter queue with its error (so it neither
/// blocks the queue nor is lost).
async fn rmq_batch_with_one_poison_message(consumer: Consumer) {
    let host = Host::new(consumer.step()).await;
    let orders = [OrderId::new(), OrderId::new()];
    for order_id in orders {
        consumer.given(&host.given, order_id).await;
    }
    let bodies = orders.map(|order_id| consumer.body(order_id));
    let batch = envelope("rmq-three-messages-one-poison.json", consumer.function(), &[&bodies[0], &bodies[1]]);
    let key = rmq_key(consumer.function());
    let poison_id = batch["rmqMessagesByQueue"][&key][1]["basicProperties"]["messageId"].clone();

    let poison = batch_data(&batch, &key, 1);

    let response = host.invoke(batch).await.expect("a poison message must not fail the invocation");

    assert_eq!(response["handled"], 2, "{response}");
    let dead_lettered = response["dead_lettered"].as_array().expect("a list of dead-lettered messages");
    let [reported] = &dead_lettered[..] else { panic!("exactly the poison message is dead-lettered: {response}") };
    assert_eq!((&reported["queue"], &reported["message_id"]), (&json!(key), &poison_id));
    let dead_queue = dead_letter_queue(consumer.function());
    assert_eq!(reported["dead_letter_queue"], json!(dead_queue));
    let error = reported["error"].as_str().unwrap_or_default();
    assert!(error.contains("not a CloudEvent"), "the report says why: {error}");
    let parked = host.take_raw(&dead_queue).await;
    let [parked] = &parked[..] else { panic!("exactly the poison message is in {dead_queue}: {parked:?}") };
    assert_eq!(parked.data, poison, "the dead letter is the message as it came");
    assert_eq!(parked.message_id.as_deref(), poison_id.as_str());
    assert_eq!(parked.text(ERROR_HEADER).as_deref(), Some(error), "the dead letter carries the error");
    assert_eq!(parked.text(FUNCTION_HEADER).as_deref(), Some(consumer.function().name()));
    assert_eq!(parked.int(ATTEMPT_HEADER), Some(1));
    let original = (parked.text("x-source"), parked.int("x-retries"));
    assert_eq!(original, (Some("legacy-shop".to_owned()), Some(2)), "the headers it came with are kept");
    consumer.assert_effect(&host.given, &orders).await;
    host.assert_published(consumer, &bodies.each_ref().map(|body| decode(body))).await;
    host.assert_outbox_settled().await;
}

/// The decoded body of message `index` of queue `key` in an Amazon MQ batch.
fn batch_data(batch: &Value, key: &str, index: usize) -> Vec<u8> {
    let data = batch["rmqMessagesByQueue"][key][index]["data"].as_str().expect("base64 data");
    BASE64.decode(data).expect("base64")
}

macro_rules! for_each_consumer {
    ($($module:ident => $consumer:expr,)*) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqs_record_is_handled_and_its_events_published() {
                sqs_one_record($consumer).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqs_batch_reports_only_the_undecodable_record() {
                sqs_batch_with_one_undecodable_record($consumer).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amazon_mq_message_is_handled_and_its_events_published() {
                rmq_one_message($consumer).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amazon_mq_poison_message_is_rejected_and_the_others_handled() {
                rmq_batch_with_one_poison_message($consumer).await;
            }
        }
    )*};
}

for_each_consumer! {
    reserve_inventory_lambda => Consumer::ReserveInventory,
    replenish_stock_lambda => Consumer::ReplenishStock,
    ship_order_lambda => Consumer::ShipOrder,
    settle_inventory_lambda => Consumer::SettleInventory,
    order_status_lambda => Consumer::OrderStatus,
}

// ---------------------------------------------------------------------------
// One function stands for all

/// WHEN the same event arrives twice in one SQS batch (published twice, so
/// two messages), THEN neither fails, the effect is applied once, and only
/// the first run's event is ever published (no second reaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_duplicate_record_is_handled_once() {
    let consumer = Consumer::ReserveInventory;
    let host = Host::new(consumer.step()).await;
    let order_id = OrderId::new();
    let body = consumer.body(order_id);

    let response = host.invoke(envelope("sqs-two-records.json", consumer.function(), &[&body, &body])).await;

    assert_eq!(response.expect("an SQS invocation always answers"), json!({"batchItemFailures": []}));
    consumer.assert_effect(&host.given, &[order_id]).await; // reserved 2 units, not 4
    let published = host.take(&Function::ShipOrder.queue()).await;
    let ids: BTreeSet<Uuid> = published.iter().map(|event| event.id).collect();
    assert_eq!(ids.len(), 1, "one reaction, possibly published again: {published:?}");
    assert_eq!(published[0].causation_id, Some(decode(&body).id));
    host.assert_outbox_settled().await;
}

/// WHEN an Amazon MQ event holds messages of two queues (a mapping may list
/// several, e.g. the dead-letter queue while an operator redrives it), THEN
/// every queue's messages are handled, not only the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_mq_messages_of_two_queues_are_all_handled() {
    let consumer = Consumer::ReserveInventory;
    let host = Host::new(consumer.step()).await;
    let orders = [OrderId::new(), OrderId::new()];
    let bodies = orders.map(|order_id| consumer.body(order_id));
    let batch = envelope("rmq-two-queues.json", consumer.function(), &[&bodies[0], &bodies[1]]);
    let queues = batch["rmqMessagesByQueue"].as_object().map(|queues| queues.len());
    assert_eq!(queues, Some(2), "the fixture holds two queues");

    let response = host.invoke(batch).await;

    assert_eq!(response.expect("a handled batch answers Ok"), json!({"handled": 2, "dead_lettered": []}));
    consumer.assert_effect(&host.given, &orders).await;
    host.assert_published(consumer, &bodies.each_ref().map(|body| decode(body))).await;
    host.assert_outbox_settled().await;
}

/// WHEN a message of an Amazon MQ batch fails in a way a retry can fix (the
/// order is not in the store yet), THEN the invocation fails, so the whole
/// batch comes back; the message handled meanwhile is not applied twice
/// when it does, and the retried one then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_mq_retryable_failure_fails_the_invocation() {
    let consumer = Consumer::OrderStatus;
    let host = Host::new(consumer.step()).await;
    let (known, missing) = (OrderId::new(), OrderId::new());
    consumer.given(&host.given, known).await;
    let bodies = [consumer.body(known), consumer.body(missing)];
    let batch = envelope("rmq-two-messages.json", consumer.function(), &[&bodies[0], &bodies[1]]);

    let error = host.invoke(batch.clone()).await.expect_err("a retryable failure fails the invocation");

    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains(&missing.to_string()), "the error names the order: {error}");
    assert_eq!(Diagnostic::from(error).error_type, RETRYABLE_ERROR_TYPE);
    let parked = host.take_raw(&dead_letter_queue(consumer.function())).await;
    assert!(parked.is_empty(), "a retryable failure is not dead-lettered by the function: {parked:?}");
    consumer.assert_effect(&host.given, &[known]).await;
    assert!(host.given.store.order(missing).await.expect("read").is_none());

    // The order's record becomes visible; Amazon MQ redelivers the batch.
    consumer.given(&host.given, missing).await;
    let response = host.invoke(batch).await;

    assert_eq!(response.expect("the retried batch succeeds"), json!({"handled": 2, "dead_lettered": []}));
    consumer.assert_effect(&host.given, &[known, missing]).await;
    let cancelled = host.take(SAGA_ENDED_QUEUE).await;
    let reactions: BTreeSet<_> = cancelled.iter().map(|event| (event.id, event.subject, event.causation_id)).collect();
    let causes: BTreeSet<_> = reactions.iter().map(|&(_, subject, cause)| (subject, cause)).collect();
    let expected: BTreeSet<_> = bodies.iter().map(|body| decode(body)).map(|e| (e.subject, Some(e.id))).collect();
    assert_eq!(causes, expected);
    assert_eq!(reactions.len(), 2, "one order.cancelled per order, however often published: {cancelled:?}");
    host.assert_outbox_settled().await;
}

/// WHEN a poison message arrives and the function cannot reach the broker
/// to dead-letter it, THEN the invocation fails with a retryable error, so
/// Amazon MQ redelivers the batch rather than the message being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_mq_poison_message_that_cannot_be_dead_lettered_fails_the_invocation() {
    let consumer = Consumer::ShipOrder;
    let given = TestStore::with_stock(CATALOG).await;
    let host = LambdaHost { step: consumer.step(), ports: given.ports(), bus: None };
    let batch = envelope("rmq-one-message.json", consumer.function(), &[r#"{"not":"a CloudEvent"}"#]);

    let error = host.invoke(batch).await.expect_err("nothing may be dropped");

    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("could not be dead-lettered"), "{error}");
    assert_eq!(Diagnostic::from(error).error_type, RETRYABLE_ERROR_TYPE);
}

/// WHEN one SQS record fails in a way a retry can fix, THEN only that record
/// goes back to SQS; the other is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_retryable_failure_reports_only_that_record() {
    let consumer = Consumer::OrderStatus;
    let host = Host::new(consumer.step()).await;
    let (known, missing) = (OrderId::new(), OrderId::new());
    consumer.given(&host.given, known).await;
    let bodies = [consumer.body(known), consumer.body(missing)];
    let batch = envelope("sqs-two-records.json", consumer.function(), &[&bodies[0], &bodies[1]]);
    let failed_id = batch["Records"][1]["messageId"].clone();

    let response = host.invoke(batch).await.expect("an SQS invocation always answers");

    assert_eq!(response, json!({"batchItemFailures": [{"itemIdentifier": failed_id}]}));
    consumer.assert_effect(&host.given, &[known]).await;
    host.assert_published(consumer, &[decode(&bodies[0])]).await;
}

/// WHEN the bridge invokes a function with a CloudEvent, THEN the emitted
/// events come back as a JSON array of CloudEvents for the bridge to
/// publish, the function publishes nothing itself, and a redelivery answers
/// the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_cloudevent_returns_the_emitted_events_and_publishes_nothing() {
    let consumer = Consumer::ShipOrder;
    let host = Host::new(consumer.step()).await;
    let order_id = OrderId::new();
    let body = consumer.body(order_id);
    let input = decode(&body);
    let payload: Value = serde_json::from_str(&body).expect("JSON");

    let answer = host.invoke(payload.clone()).await.expect("a direct invocation answers the emitted events");

    let array = answer.as_array().expect("a JSON array");
    assert_eq!(array.len(), 1, "{answer}");
    assert_eq!((&array[0]["specversion"], &array[0]["type"]), (&json!("1.0"), &json!("order.shipped")));
    let emitted: Vec<Event> = serde_json::from_value(answer.clone()).expect("CloudEvents");
    assert_eq!((emitted[0].subject, emitted[0].causation_id), (order_id, Some(input.id)));
    consumer.assert_effect(&host.given, &[order_id]).await;
    for queue in [Function::SettleInventory.queue(), Function::OrderStatus.queue()] {
        assert_eq!(host.take(&queue).await, vec![], "a direct invocation publishes nothing itself ({queue})");
    }
    host.assert_outbox_settled().await;

    let again = host.invoke(payload).await.expect("a redelivery answers too");
    assert_eq!(again, answer, "a redelivery answers the first run's events");
}

/// What a payload of no known shape is told.
const NO_SHAPE: &str = "neither a CloudEvent, an SqsEvent, a RabbitMqEvent nor a KafkaEvent";

/// WHEN the payload is none of the shapes, or a known shape that does not
/// parse, THEN a permanent error says what was expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_of_no_known_shape_is_a_permanent_error() {
    let host = Host::new(Consumer::ShipOrder.step()).await;
    let mut no_body_size =
        envelope("rmq-one-message.json", Function::ShipOrder, &[&Consumer::ShipOrder.body(OrderId::new())]);
    let key = rmq_key(Function::ShipOrder);
    let removed =
        no_body_size["rmqMessagesByQueue"][&key][0]["basicProperties"].as_object_mut().map(|p| p.remove("bodySize"));
    assert!(removed.is_some_and(|value| value.is_some()), "the fixture has a bodySize to remove");
    let cases = [
        (json!({"detail-type": "Scheduled Event", "source": "aws.events"}), NO_SHAPE),
        (json!("order.created"), NO_SHAPE),
        (json!({"Records": "none"}), "not a valid SqsEvent"),
        (no_body_size, "not a valid RabbitMqEvent"),
        (json!({"specversion": "1.0", "type": "order.teleported"}), "not a valid CloudEvent"),
    ];
    for (payload, expected) in cases {
        let error = host.invoke(payload.clone()).await.expect_err("not a payload a step can handle");
        assert!(!error.is_retryable(), "{payload}: {error}");
        assert!(error.to_string().contains(expected), "{payload}: '{error}' should say '{expected}'");
        assert_eq!(Diagnostic::from(error).error_type, PERMANENT_ERROR_TYPE);
    }
    assert_eq!(host.given.store.unpublished(Utc::now()).await.expect("read the outbox"), vec![], "nothing was handled");
}

/// The fixtures parse as the `aws_lambda_events` types AWS payloads are read
/// with, and survive a round trip through them.
#[test]
fn fixtures_parse_as_the_aws_event_types_and_round_trip() {
    let body = Consumer::ReserveInventory.body(OrderId::new());
    let function = Function::ReserveInventory;
    for name in ["sqs-one-record.json", "sqs-two-records.json", "sqs-three-records-one-undecodable.json"] {
        let payload = envelope(name, function, &[&body, &body]);
        let parsed: SqsEvent = serde_json::from_value(payload.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again: SqsEvent =
            serde_json::from_value(serde_json::to_value(&parsed).expect("serializes")).expect("parses");
        assert_eq!(again, parsed, "{name} round-trips");
        assert_eq!(parsed.records.len(), payload["Records"].as_array().map_or(0, Vec::len), "{name}");
        for record in &parsed.records {
            assert_eq!(record.event_source.as_deref(), Some("aws:sqs"), "{name}");
            assert!(record.message_id.as_deref().is_some_and(|id| !id.is_empty()), "{name}: a messageId");
            assert!(record.attributes.contains_key("ApproximateReceiveCount"), "{name}");
        }
        assert_eq!(parsed.records[0].body.as_deref(), Some(body.as_str()), "{name}: body is the CloudEvent text");
        assert!(matches!(Invocation::classify(payload), Ok(Invocation::Sqs(_))), "{name}");
    }
    for name in
        ["rmq-one-message.json", "rmq-two-messages.json", "rmq-three-messages-one-poison.json", "rmq-two-queues.json"]
    {
        let payload = envelope(name, function, &[&body, &body]);
        let parsed: RabbitMqEvent = serde_json::from_value(payload.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again: RabbitMqEvent =
            serde_json::from_value(serde_json::to_value(&parsed).expect("serializes")).expect("parses");
        assert_eq!(again, parsed, "{name} round-trips");
        assert_eq!(parsed.event_source.as_deref(), Some("aws:rmq"), "{name}");
        let first = &parsed.messages_by_queue[&rmq_key(function)][0];
        let data = BASE64.decode(first.data.as_deref().unwrap_or_default()).expect("base64 data");
        assert_eq!(data, body.as_bytes(), "{name}: data is the base64 of the CloudEvent");
        assert_eq!(first.basic_properties.body_size, body.len() as u64, "{name}");
        let traceparent = &first.basic_properties.headers["traceparent"]["bytes"];
        let bytes: Vec<u8> = serde_json::from_value(traceparent.clone()).expect("string headers come as byte arrays");
        assert!(String::from_utf8(bytes).is_ok_and(|text| text.starts_with("00-")), "{name}");
        assert!(matches!(Invocation::classify(payload), Ok(Invocation::RabbitMq(_))), "{name}");
    }
    let direct = serde_json::from_str(&body).expect("JSON");
    assert!(matches!(Invocation::classify(direct), Ok(Invocation::Direct(_))));
}
