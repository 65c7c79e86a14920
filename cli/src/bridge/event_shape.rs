//! `--event-shape`: what a `--invoke lambda` invocation carries. Besides the
//! CloudEvent the functions answer directly, the bridge can hand each message
//! over exactly as an AWS event source mapping would (an Amazon MQ
//! `RabbitMqEvent`, an `SqsEvent`, a `KafkaEvent`), so that under `cargo lambda watch` the
//! functions run the adapter code they run on AWS and publish their own
//! events; the bridge then publishes nothing and acks once the invocation
//! succeeded.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lambda_events::encodings::MillisecondTimestamp;
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shared::bus::amqp::amazon_mq;
use shared::{Event, Function, StepError};

use super::lambda::emitted_events;
use super::sqs::{SQS_ID_ATTRIBUTE, SQS_SUBJECT_ATTRIBUTE, SQS_TYPE_ATTRIBUTE};

/// The region and account the rehearsed ARNs name: a local stand-in.
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";

/// What each invocation carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EventShape {
    /// The CloudEvent; the function answers what it emitted and the bridge publishes it.
    #[default]
    #[value(name = "cloudevent")]
    CloudEvent,
    /// A `RabbitMqEvent`, as Amazon MQ's event source mapping sends; the function publishes.
    AmazonMq,
    /// An `SqsEvent`, as an SQS event source mapping sends; the function publishes.
    Sqs,
    /// A `KafkaEvent`, as a self-managed Kafka event source mapping sends (`--kafka` only); the function publishes.
    Kafka,
}

/// Where the rehearsed event source mapping reads from.
#[derive(Clone, Debug)]
pub struct EventSource {
    /// The broker's virtual host (`rmqMessagesByQueue` keys are `<queue>::<vhost>`).
    pub vhost: String,
    /// Prepended to a function's name to name its SQS queue, as the template does.
    pub function_prefix: String,
    /// The Kafka cluster a `KafkaEvent` names (`--kafka`).
    pub bootstrap_servers: String,
}

impl EventSource {
    /// `eventSourceArn` of the Amazon MQ broker.
    fn broker_arn(&self) -> String {
        format!("arn:aws:mq:{REGION}:{ACCOUNT}:broker:choreo:b-00000000-0000-4000-8000-000000000000")
    }

    /// `eventSourceARN` of `function`'s SQS queue.
    fn queue_arn(&self, function: Function) -> String {
        format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}{}", self.function_prefix, function.name())
    }
}

/// The payload of one invocation for `delivery` of `function`'s queue.
pub fn payload(
    shape: EventShape,
    source: &EventSource,
    function: Function,
    event: &Event,
    delivery: &lapin::message::Delivery,
    attempt: u32,
) -> Result<Vec<u8>, StepError> {
    let encode =
        |value: Result<Vec<u8>, serde_json::Error>| value.map_err(|error| StepError::Permanent(error.to_string()));
    match shape {
        EventShape::CloudEvent => Ok(event.to_json()),
        EventShape::AmazonMq => {
            let batch = amazon_mq::rabbitmq_event(&source.broker_arn(), &function.queue(), &source.vhost, &[delivery]);
            encode(serde_json::to_vec(&batch))
        }
        EventShape::Sqs => encode(serde_json::to_vec(&sqs_event(source, function, event, delivery, attempt))),
        EventShape::Kafka => encode(serde_json::to_vec(&kafka_event(source, event))),
    }
}

/// A batch of one record, as a self-managed Kafka mapping hands a function
/// a record of `event`'s topic: key and value base64, headers as bytes.
pub fn kafka_event(source: &EventSource, event: &Event) -> KafkaEvent {
    let topic = shared::bus::kafka::event_topic(event.event_type());
    let bytes = |text: &str| text.bytes().map(|byte| byte as i8).collect::<Vec<i8>>();
    let mut record = KafkaRecord::default();
    record.topic = Some(topic.clone());
    record.timestamp = MillisecondTimestamp(chrono::Utc::now());
    record.timestamp_type = Some("CREATE_TIME".to_owned());
    record.key = Some(BASE64.encode(event.subject.to_string()));
    record.value = Some(BASE64.encode(event.to_json()));
    record.headers = vec![HashMap::from([("traceparent".to_owned(), bytes(&event.traceparent))])];
    let mut batch = KafkaEvent::default();
    batch.event_source = Some(shared::host::lambda::SELF_MANAGED_KAFKA_EVENT_SOURCE.to_owned());
    batch.bootstrap_servers = Some(source.bootstrap_servers.clone());
    batch.records = HashMap::from([(format!("{topic}-0"), vec![record])]);
    batch
}

/// A batch of one record, as SQS hands a function its queue's message.
fn sqs_event(
    source: &EventSource,
    function: Function,
    event: &Event,
    delivery: &lapin::message::Delivery,
    attempt: u32,
) -> SqsEvent {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis()).to_string();
    let message_id = uuid::Uuid::new_v4().to_string();
    let attribute = |value: String| {
        let mut attribute = SqsMessageAttribute::default();
        attribute.string_value = Some(value);
        attribute.data_type = Some("String".to_owned());
        attribute
    };
    let mut record = SqsMessage::default();
    record.receipt_handle = Some(format!("choreo-bridge-{message_id}"));
    record.message_id = Some(message_id);
    record.body = Some(String::from_utf8_lossy(&delivery.data).into_owned());
    record.attributes = HashMap::from([
        ("ApproximateReceiveCount".to_owned(), attempt.to_string()),
        ("SentTimestamp".to_owned(), now.clone()),
        ("SenderId".to_owned(), "choreo-bridge".to_owned()),
        ("ApproximateFirstReceiveTimestamp".to_owned(), now),
    ]);
    record.message_attributes = HashMap::from([
        (SQS_TYPE_ATTRIBUTE.to_owned(), attribute(event.event_type().as_str().to_owned())),
        (SQS_ID_ATTRIBUTE.to_owned(), attribute(event.id.to_string())),
        (SQS_SUBJECT_ATTRIBUTE.to_owned(), attribute(event.subject.to_string())),
    ]);
    record.event_source = Some("aws:sqs".to_owned());
    record.event_source_arn = Some(source.queue_arn(function));
    record.aws_region = Some(REGION.to_owned());
    let mut batch = SqsEvent::default();
    batch.records = vec![record];
    batch
}

/// What a successful invocation's answer means for the runner: the events
/// the bridge must publish (CloudEvent shape), or none (the function
/// published them). An SQS batch item failure is a retry, as SQS would make.
pub fn outcome(shape: EventShape, function: Function, name: &str, answer: &[u8]) -> Result<Vec<Event>, StepError> {
    match shape {
        EventShape::CloudEvent => {
            emitted_events(function, answer).map_err(|error| StepError::Permanent(format!("{name}: {error}")))
        }
        EventShape::AmazonMq | EventShape::Kafka => Ok(vec![]),
        EventShape::Sqs => {
            let response: SqsBatchResponse = serde_json::from_slice(answer).map_err(|error| {
                StepError::Retryable(format!("{name}: the answer is not an SQS batch response: {error}"))
            })?;
            if response.batch_item_failures.is_empty() {
                Ok(vec![])
            } else {
                Err(StepError::Retryable(format!("{name} reported its SQS record as a batch item failure")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sqs_batch_item_failure_is_a_retry_and_an_empty_answer_publishes_nothing() {
        let failed = br#"{"batchItemFailures":[{"itemIdentifier":"m-1"}]}"#;
        assert!(outcome(EventShape::Sqs, Function::ShipOrder, "ship-order", failed).is_err_and(|e| e.is_retryable()));
        let handled = br#"{"batchItemFailures":[]}"#;
        assert_eq!(outcome(EventShape::Sqs, Function::ShipOrder, "ship-order", handled).ok(), Some(vec![]));
        let answer = br#"{"handled":1,"dead_lettered":[]}"#;
        assert_eq!(outcome(EventShape::AmazonMq, Function::ShipOrder, "ship-order", answer).ok(), Some(vec![]));
        assert!(outcome(EventShape::CloudEvent, Function::ShipOrder, "ship-order", b"{}").is_err());
    }

    #[test]
    fn the_arns_name_the_broker_and_the_function_queue() {
        let source = EventSource {
            vhost: "/".to_owned(),
            function_prefix: "choreo-".to_owned(),
            bootstrap_servers: String::new(),
        };
        assert!(source.broker_arn().starts_with("arn:aws:mq:us-east-1:000000000000:broker:"));
        assert_eq!(source.queue_arn(Function::ShipOrder), "arn:aws:sqs:us-east-1:000000000000:choreo-ship-order");
    }
}
