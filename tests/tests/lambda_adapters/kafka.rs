//! The consuming functions under Lambda's Kafka event sources (Amazon MSK,
//! self-managed Kafka): `KafkaEvent` payloads from fixtures shaped like what
//! AWS sends (several partitions of one topic per batch, base64 keys and
//! values, headers as byte arrays), a `LambdaHost` whose bus is a real
//! `KafkaLink` to a Kafka-protocol broker of the test's own (tansu,
//! `shared::testkit::kafka`) with every topic created, and what a function
//! published or parked read back from the topics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use choreo_e2e::lambda_fixtures::{decode, envelope};
use lambda_runtime::Diagnostic;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use shared::bus::DeliverySettings;
use shared::bus::amqp::DeadMessage;
use shared::bus::kafka::{KafkaLink, KafkaSettings, dead_letter_topic, event_topic, list_dead_records};
use shared::contract::domain::OrderId;
use shared::host::lambda::{Bus, DEAD_LETTERED_MESSAGE, Invocation, LambdaHost, RETRYABLE_ERROR_TYPE};
use shared::store::Store;
use shared::testkit::TestStore;
use shared::testkit::kafka::KafkaBroker;
use shared::testkit::logs::CapturedLogs;
use shared::{Event, StepError};

use super::consumers::{CATALOG, Consumer};

const MSK_ONE: &str = "kafka-msk-one-record.json";
/// Partition 0: slot 1, then a poison record (JSON, no CloudEvent); partition 5: slot 2.
const MSK_POISON: &str = "kafka-msk-three-records-two-partitions-one-poison.json";
/// Partition 1: slot 1; partition 2: slot 2.
const SELF_MANAGED: &str = "kafka-self-managed-two-partitions.json";
/// How long reading a topic back may wait on the broker.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A step hosted as on Lambda, with its store and its Kafka cluster.
struct Host {
    host: LambdaHost,
    given: TestStore,
    link: Arc<KafkaLink>,
    /// Dropped last: killing the broker ends what is still connected.
    broker: KafkaBroker,
}

impl Host {
    async fn new(consumer: Consumer) -> Self {
        let broker = KafkaBroker::start();
        // Few partitions: each is a fetch when reading back.
        let settings = KafkaSettings { partitions: 2, ..KafkaSettings::plaintext(&broker.bootstrap) };
        let link = KafkaLink::new(settings, "lambda-kafka-test");
        link.create_topics(&DeliverySettings::default())
            .await
            .unwrap_or_else(|error| panic!("create the topics: {error}\n{}", broker.log()));
        let given = TestStore::with_stock(CATALOG).await;
        let host = LambdaHost { step: consumer.step(), ports: given.ports(), bus: Some(Bus::Kafka(Arc::clone(&link))) };
        Self { host, given, link, broker }
    }

    async fn invoke(&self, payload: Value) -> Result<Value, StepError> {
        self.host.invoke(payload).await
    }

    /// Every event on `topic` so far, with its key, from the beginning.
    async fn read(&self, topic: &str) -> Vec<(String, Event)> {
        let (bootstrap, topic) = (self.broker.bootstrap.clone(), topic.to_owned());
        let read = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic)).await;
        read.expect("the reader ran").unwrap_or_else(|error| panic!("{error}\n{}", self.broker.log()))
    }

    async fn dead_letters(&self) -> Vec<DeadMessage> {
        list_dead_records(&self.link, 100).await.unwrap_or_else(|error| panic!("{error}\n{}", self.broker.log()))
    }

    /// THEN `consumer` published exactly one event in reaction to each of
    /// `inputs`, on its type's topic, keyed by its order.
    async fn assert_published(&self, consumer: Consumer, inputs: &[Event]) {
        let (event_type, _) = consumer.emits();
        let topic = event_topic(event_type);
        let mut published: Vec<_> = self
            .read(&topic)
            .await
            .into_iter()
            .map(|(key, event)| {
                assert_eq!(key, event.subject.to_string(), "a record's key is its order");
                (event.causation_id, event.subject, event.event_type())
            })
            .collect();
        published.sort();
        let mut expected: Vec<_> = inputs.iter().map(|input| (Some(input.id), input.subject, event_type)).collect();
        expected.sort();
        assert_eq!(published, expected, "{} should publish one {event_type} per handled event", consumer.function());
    }

    /// THEN every committed event was acknowledged and its outbox entry settled.
    async fn assert_outbox_settled(&self) {
        let later = chrono::Utc::now() + chrono::Duration::days(1);
        let unpublished = self.given.store.unpublished(later).await.expect("read the outbox");
        assert!(unpublished.is_empty(), "events committed but not marked published: {unpublished:?}");
    }
}

/// Reads `topic` from its low to its high watermarks, each partition.
fn read_topic(bootstrap: &str, topic: &str) -> Result<Vec<(String, Event)>, String> {
    let text = |error: rdkafka::error::KafkaError| format!("{topic}: {error}");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "lambda-kafka-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(text)?;
    let metadata = consumer.fetch_metadata(Some(topic), READ_TIMEOUT).map_err(text)?;
    let (mut start, mut remaining) = (TopicPartitionList::new(), Vec::new());
    for partition in metadata.topics().iter().flat_map(|described| described.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), READ_TIMEOUT).map_err(text)?;
        if low < high {
            start.add_partition_offset(topic, partition.id(), Offset::Offset(low)).map_err(text)?;
            remaining.push((partition.id(), high));
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&start).map_err(text)?;
    while !remaining.is_empty() {
        let message = consumer.poll(READ_TIMEOUT).ok_or(format!("{topic}: no record within {READ_TIMEOUT:?}"))?;
        let message = message.map_err(text)?;
        let (partition, offset) = (message.partition(), message.offset());
        remaining.retain(|(p, high)| !(*p == partition && offset + 1 >= *high));
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let event = Event::from_json(message.payload().unwrap_or_default()).map_err(|error| error.to_string())?;
        records.push((key, event));
    }
    Ok(records)
}

/// The records of partition `key` of a Kafka batch.
fn partition<'a>(batch: &'a Value, key: &str) -> &'a Vec<Value> {
    batch["records"][key].as_array().unwrap_or_else(|| panic!("the batch has a partition {key}: {batch}"))
}

// ---------------------------------------------------------------------------
// Scenarios run for every consuming function

/// WHEN an MSK batch holds two partitions, one of them with a poison record
/// (JSON, but no CloudEvent) after a good one, THEN the invocation
/// succeeds, both good records are handled and published, and the poison
/// one is on the function's dead-letter topic with its key, its value as it
/// came and its error (so it neither blocks its partition nor is lost).
async fn msk_batch_with_one_poison_record(consumer: Consumer) {
    let host = Host::new(consumer).await;
    let orders = [OrderId::new(), OrderId::new()];
    for order_id in orders {
        consumer.given(&host.given, order_id).await;
    }
    let bodies = orders.map(|order_id| consumer.body(order_id));
    let batch = envelope(MSK_POISON, consumer.function(), &[&bodies[0], &bodies[1]]);
    let topic = event_topic(decode(&bodies[0]).event_type());
    let poison = &partition(&batch, &format!("{topic}-0"))[1];
    let (poison_key, poison_value) =
        (BASE64.decode(poison["key"].as_str().unwrap_or_default()), poison["value"].clone());

    let response = host.invoke(batch.clone()).await.expect("a poison record must not fail the invocation");

    assert_eq!(response["handled"], 2, "{response}");
    let dead_topic = dead_letter_topic(consumer.function());
    let reported =
        json!([{"partition": format!("{topic}-0"), "offset": poison["offset"], "dead_letter_topic": dead_topic}]);
    let without_error: Vec<Value> = response["dead_lettered"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| json!({"partition": entry["partition"], "offset": entry["offset"], "dead_letter_topic": entry["dead_letter_topic"]}))
        .collect();
    assert_eq!(json!(without_error), reported, "exactly the poison record is dead-lettered: {response}");
    let error = response["dead_lettered"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("not a CloudEvent"), "the report says why: {error}");
    let letters = host.dead_letters().await;
    let [letter] = &letters[..] else { panic!("exactly the poison record is parked: {letters:?}") };
    assert_eq!(letter.function, consumer.function().name());
    let value = BASE64.decode(poison_value.as_str().unwrap_or_default()).expect("the fixture's value is base64");
    assert_eq!(letter.body.as_bytes(), value, "the dead letter is the record's value as it came");
    let key = poison_key.expect("the fixture's key is base64");
    assert_eq!(letter.order_id.as_deref().map(str::as_bytes), Some(&key[..]), "under the record's key");
    assert_eq!(letter.error.as_deref(), Some(error.as_str()), "the dead letter carries the error");
    consumer.assert_effect(&host.given, &orders).await;
    host.assert_published(consumer, &bodies.each_ref().map(|body| decode(body))).await;
    host.assert_outbox_settled().await;
}

macro_rules! for_each_consumer {
    ($($module:ident => $consumer:expr,)*) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn msk_poison_record_is_parked_and_the_others_handled() {
                msk_batch_with_one_poison_record($consumer).await;
            }
        }
    )*};
}

for_each_consumer! {
    reserve_inventory_on_kafka => Consumer::ReserveInventory,
    replenish_stock_on_kafka => Consumer::ReplenishStock,
    ship_order_on_kafka => Consumer::ShipOrder,
    settle_inventory_on_kafka => Consumer::SettleInventory,
    order_status_on_kafka => Consumer::OrderStatus,
}

// ---------------------------------------------------------------------------
// One function stands for all

/// WHEN a self-managed Kafka batch holds a record per partition, one of
/// them with a value that is not base64, THEN the other is handled and
/// published, and the undecodable one is parked with its value as it came
/// and logged as the template's dead-letter alarm counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_kafka_records_are_handled_and_an_undecodable_one_parked() {
    let logs = CapturedLogs::install();
    let consumer = Consumer::ReserveInventory;
    let host = Host::new(consumer).await;
    let orders = [OrderId::new(), OrderId::new()];
    let bodies = orders.map(|order_id| consumer.body(order_id));
    let mut batch = envelope(SELF_MANAGED, consumer.function(), &[&bodies[0], &bodies[1]]);
    let topic = event_topic(decode(&bodies[0]).event_type());
    batch["records"][format!("{topic}-2")][0]["value"] = json!("%% not base64 %%");

    let response = host.invoke(batch).await.expect("an undecodable record must not fail the invocation");

    assert_eq!(response["handled"], 1, "{response}");
    assert_eq!(response["dead_lettered"][0]["partition"], format!("{topic}-2"), "{response}");
    let letters = host.dead_letters().await;
    let [letter] = &letters[..] else { panic!("exactly the undecodable record is parked: {letters:?}") };
    assert_eq!(letter.body, "%% not base64 %%");
    assert!(letter.error.as_deref().is_some_and(|error| error.contains("not base64")), "{letter:?}");
    assert_eq!(letter.order_id.as_deref(), Some(orders[1].to_string().as_str()), "parked under its order");
    // The line the template's metric filter counts (`{ $.message = … }`, the `Function` dimension).
    let counted = logs.lines().into_iter().any(|line| {
        line["message"] == DEAD_LETTERED_MESSAGE
            && line["function"] == consumer.function().name()
            && line["partition"] == format!("{topic}-2")
    });
    assert!(counted, "no '{DEAD_LETTERED_MESSAGE}' line with its function was logged");
    consumer.assert_effect(&host.given, &orders[..1]).await;
    host.assert_published(consumer, &[decode(&bodies[0])]).await;
    host.assert_outbox_settled().await;
}

/// WHEN the first record of a partition fails in a way a retry can fix (the
/// order is not in the store yet), THEN the invocation fails so that the
/// mapping sends the batch again; that partition's later record (a poison
/// one) waits, so its order holds, while the other partition is handled.
/// WHEN the batch comes again after the order is there, THEN it succeeds:
/// the handled record is not applied twice, and the poison one is parked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_retryable_failure_fails_the_invocation_and_holds_its_partition() {
    let consumer = Consumer::OrderStatus;
    let host = Host::new(consumer).await;
    let (missing, known) = (OrderId::new(), OrderId::new());
    consumer.given(&host.given, known).await;
    let bodies = [consumer.body(missing), consumer.body(known)];
    let batch = envelope(MSK_POISON, consumer.function(), &[&bodies[0], &bodies[1]]);

    let error = host.invoke(batch.clone()).await.expect_err("a retryable failure fails the invocation");

    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains(&missing.to_string()), "the error names the order: {error}");
    assert_eq!(Diagnostic::from(error).error_type, RETRYABLE_ERROR_TYPE);
    let parked = host.dead_letters().await;
    assert!(parked.is_empty(), "the partition's later poison record waited: {parked:?}");
    consumer.assert_effect(&host.given, &[known]).await;
    host.assert_published(consumer, &[decode(&bodies[1])]).await;

    // The order's record becomes visible; the mapping sends the batch again.
    consumer.given(&host.given, missing).await;
    let response = host.invoke(batch).await.expect("the batch sent again succeeds");

    assert_eq!(response["handled"], 2, "{response}");
    assert_eq!(host.dead_letters().await.len(), 1, "the poison record is parked once");
    consumer.assert_effect(&host.given, &[known, missing]).await;
    let cancelled = host.read(&event_topic(consumer.emits().0)).await;
    let causes: BTreeSet<_> = cancelled.iter().map(|(_, event)| (event.subject, event.causation_id)).collect();
    let expected: BTreeSet<_> = bodies.iter().map(|body| decode(body)).map(|e| (e.subject, Some(e.id))).collect();
    assert_eq!(causes, expected, "one order.cancelled per order, however often published");
    host.assert_outbox_settled().await;
}

/// WHEN a record can never be handled and the function has no Kafka link
/// to park it with, THEN the invocation fails with a retryable error rather
/// than the record being dropped. (No broker needed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_poison_record_that_cannot_be_parked_fails_the_invocation() {
    let consumer = Consumer::ShipOrder;
    let given = TestStore::with_stock(CATALOG).await;
    let host = LambdaHost { step: consumer.step(), ports: given.ports(), bus: None };
    let mut batch = envelope(MSK_ONE, consumer.function(), &[&consumer.body(OrderId::new())]);
    let records = batch["records"].as_object_mut().expect("records by partition");
    let (_, partition) = records.iter_mut().next().expect("one partition");
    partition[0]["value"] = json!(BASE64.encode(r#"{"not":"a CloudEvent"}"#));

    let error = host.invoke(batch).await.expect_err("nothing may be dropped");

    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("could not be dead-lettered"), "{error}");
    assert_eq!(Diagnostic::from(error).error_type, RETRYABLE_ERROR_TYPE);
}

/// The Kafka fixtures parse as `KafkaEvent` and round-trip; each record's
/// value is the base64 of the CloudEvent and its key that of the order;
/// both event sources are told apart from every other shape, and a
/// `records` payload of another source is refused.
#[test]
fn kafka_fixtures_parse_as_kafka_events_and_are_classified() {
    let consumer = Consumer::ReserveInventory;
    let order_id = OrderId::new();
    let body = consumer.body(order_id);
    for (name, source) in [(MSK_ONE, "aws:kafka"), (MSK_POISON, "aws:kafka"), (SELF_MANAGED, "SelfManagedKafka")] {
        let payload = envelope(name, consumer.function(), &[&body, &body]);
        let parsed: KafkaEvent = serde_json::from_value(payload.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again: KafkaEvent =
            serde_json::from_value(serde_json::to_value(&parsed).expect("serializes")).expect("parses");
        assert_eq!(again, parsed, "{name} round-trips");
        assert_eq!(parsed.event_source.as_deref(), Some(source), "{name}");
        assert_eq!(parsed.event_source_arn.is_some(), source == "aws:kafka", "{name}: only MSK names its cluster");
        assert!(parsed.bootstrap_servers.as_deref().is_some_and(|servers| servers.contains(':')), "{name}");
        let topic = event_topic(decode(&body).event_type());
        for (key, records) in &parsed.records {
            for record in records {
                assert_eq!(key, &format!("{topic}-{}", record.partition), "{name}: keyed topic-partition");
                assert_eq!(record.topic.as_deref(), Some(topic.as_str()), "{name}");
            }
        }
        let first = &parsed.records[&format!("{topic}-{}", if source == "aws:kafka" { 0 } else { 1 })][0];
        let value = BASE64.decode(first.value.as_deref().unwrap_or_default()).expect("base64 value");
        assert_eq!(value, body.as_bytes(), "{name}: the value is the base64 of the CloudEvent");
        let key = BASE64.decode(first.key.as_deref().unwrap_or_default()).expect("base64 key");
        assert_eq!(key, order_id.to_string().as_bytes(), "{name}: the key is the base64 of the order id");
        let traceparent = first.headers.iter().find_map(|header| header.get("traceparent")).expect("a traceparent");
        let bytes: Vec<u8> = traceparent.iter().map(|byte| *byte as u8).collect();
        assert!(String::from_utf8(bytes).is_ok_and(|text| text.starts_with("00-")), "{name}");
        assert!(matches!(Invocation::classify(payload), Ok(Invocation::Kafka(_))), "{name}");
    }
    let mut other = envelope(MSK_ONE, consumer.function(), &[&body]);
    other["eventSource"] = json!("aws:kinesis");
    let refused = Invocation::classify(other).map(|_| ()).expect_err("not a Kafka mapping's payload");
    assert!(refused.to_string().contains("not a valid KafkaEvent"), "{refused}");
}
