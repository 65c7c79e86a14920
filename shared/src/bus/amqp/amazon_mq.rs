//! Amazon MQ's view of an AMQP message: the `RabbitMqMessage` its event
//! source mapping hands a Lambda function, built from a delivery (the
//! bridge's `--event-shape amazon-mq` rehearses AWS with it), and the AMQP
//! properties read back from one (the Lambda host parks a record it can
//! never handle with the properties it came with).
//!
//! What Amazon MQ sends: `data` is the base64 body; `basicProperties` uses
//! the AMQP property names in camelCase, the timestamp as text
//! (`Mar 3, 2026, 10:15:02 AM`, UTC) and string headers as `{"bytes": [..]}`.

use aws_lambda_events::event::rabbitmq::{RabbitMqBasicProperties, RabbitMqEvent, RabbitMqMessage};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Value, json};

use super::ATTEMPT_HEADER;

/// `eventSource` of every Amazon MQ for RabbitMQ event.
pub const EVENT_SOURCE: &str = "aws:rmq";

/// Header in which quorum queues count how often a message was returned.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// How Amazon MQ writes `basicProperties.timestamp`.
const TIMESTAMP_FORMAT: &str = "%b %-d, %Y, %-I:%M:%S %p";

/// The key of a queue in `rmqMessagesByQueue`: `<queue>::<vhost>`.
pub fn queue_key(queue: &str, vhost: &str) -> String {
    format!("{queue}::{vhost}")
}

/// One invocation's worth of messages of one queue, as the event source
/// mapping of broker `event_source_arn` delivers them.
pub fn rabbitmq_event(
    event_source_arn: &str,
    queue: &str,
    vhost: &str,
    deliveries: &[&lapin::message::Delivery],
) -> RabbitMqEvent {
    let mut event = RabbitMqEvent::default();
    event.event_source = Some(EVENT_SOURCE.to_owned());
    event.event_source_arn = Some(event_source_arn.to_owned());
    event.messages_by_queue.insert(queue_key(queue, vhost), deliveries.iter().map(|d| rabbitmq_message(d)).collect());
    event
}

/// A delivery as Amazon MQ hands it to a function.
pub fn rabbitmq_message(delivery: &lapin::message::Delivery) -> RabbitMqMessage {
    let properties = &delivery.properties;
    let text = |value: &Option<ShortString>| value.as_ref().map(ShortString::to_string);
    let mut basic = RabbitMqBasicProperties::default();
    basic.content_type = text(properties.content_type());
    basic.content_encoding = text(properties.content_encoding());
    basic.headers = properties
        .headers()
        .as_ref()
        .map(|headers| headers.inner().iter().map(|(key, value)| (key.to_string(), to_json(value))).collect())
        .unwrap_or_default();
    basic.delivery_mode = properties.delivery_mode().unwrap_or(1);
    basic.priority = properties.priority().unwrap_or(0);
    basic.correlation_id = text(properties.correlation_id());
    basic.reply_to = text(properties.reply_to());
    basic.expiration = text(properties.expiration());
    basic.message_id = text(properties.message_id());
    basic.timestamp = properties.timestamp().and_then(|seconds| {
        let seconds = i64::try_from(seconds).ok()?;
        Some(chrono::DateTime::from_timestamp(seconds, 0)?.format(TIMESTAMP_FORMAT).to_string())
    });
    basic.type_ = text(properties.kind());
    basic.user_id = text(properties.user_id());
    basic.app_id = text(properties.app_id());
    basic.cluster_id = text(properties.cluster_id());
    basic.body_size = delivery.data.len() as u64;
    let mut message = RabbitMqMessage::default();
    message.basic_properties = basic;
    message.data = Some(BASE64.encode(&delivery.data));
    message.redelivered = delivery.redelivered;
    message
}

/// The AMQP properties to republish a `RabbitMqMessage` with (into its
/// dead-letter queue): those it came with, except `user_id`, which the
/// broker checks against the publishing connection's user, and
/// `expiration`, which would let a parked copy vanish.
pub fn amqp_properties(basic: &RabbitMqBasicProperties) -> BasicProperties {
    let short = |value: &Option<String>| value.as_deref().map(ShortString::from);
    let mut headers = FieldTable::default();
    for (key, value) in &basic.headers {
        headers.insert(key.as_str().into(), from_json(value));
    }
    let timestamp = basic.timestamp.as_deref().and_then(|text| {
        let parsed = chrono::NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT).ok()?;
        u64::try_from(parsed.and_utc().timestamp()).ok()
    });
    let mut properties = BasicProperties::default().with_headers(headers).with_delivery_mode(basic.delivery_mode);
    let fields = [
        (short(&basic.content_type), BasicProperties::with_content_type as fn(_, _) -> _),
        (short(&basic.content_encoding), BasicProperties::with_content_encoding),
        (short(&basic.correlation_id), BasicProperties::with_correlation_id),
        (short(&basic.reply_to), BasicProperties::with_reply_to),
        (short(&basic.message_id), BasicProperties::with_message_id),
        (short(&basic.type_), BasicProperties::with_type),
        (short(&basic.app_id), BasicProperties::with_app_id),
        (short(&basic.cluster_id), BasicProperties::with_cluster_id),
    ];
    for (value, with) in fields {
        if let Some(value) = value {
            properties = with(properties, value);
        }
    }
    if basic.priority != 0 {
        properties = properties.with_priority(basic.priority);
    }
    if let Some(timestamp) = timestamp {
        properties = properties.with_timestamp(timestamp);
    }
    properties
}

/// Which attempt at handling the message this is: the consumer runner's
/// `x-choreo-attempt` (a retried copy) or the quorum queue's return count.
pub fn attempt(basic: &RabbitMqBasicProperties) -> u32 {
    let number = |key: &str| basic.headers.get(key).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok());
    let counted = number(DELIVERY_COUNT_HEADER).map_or(1, |returns| returns.saturating_add(1));
    number(ATTEMPT_HEADER).unwrap_or(1).max(counted)
}

/// A header value as Amazon MQ writes it in JSON.
fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(flag) => json!(flag),
        AMQPValue::ShortShortInt(number) => json!(number),
        AMQPValue::ShortShortUInt(number) => json!(number),
        AMQPValue::ShortInt(number) => json!(number),
        AMQPValue::ShortUInt(number) => json!(number),
        AMQPValue::LongInt(number) => json!(number),
        AMQPValue::LongUInt(number) => json!(number),
        AMQPValue::LongLongInt(number) => json!(number),
        AMQPValue::Timestamp(number) => json!(number),
        AMQPValue::Float(number) => json!(number),
        AMQPValue::Double(number) => json!(number),
        AMQPValue::DecimalValue(decimal) => json!(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale))),
        AMQPValue::ShortString(text) => json!({"bytes": text.as_str().as_bytes()}),
        AMQPValue::LongString(text) => json!({"bytes": text.as_bytes()}),
        AMQPValue::ByteArray(bytes) => json!({"bytes": bytes.as_slice()}),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(to_json).collect()),
        AMQPValue::FieldTable(table) => {
            Value::Object(table.inner().iter().map(|(key, value)| (key.to_string(), to_json(value))).collect())
        }
        AMQPValue::Void => Value::Null,
    }
}

/// The AMQP value of a header as Amazon MQ wrote it.
fn from_json(value: &Value) -> AMQPValue {
    let bytes =
        value.get("bytes").and_then(Value::as_array).filter(|_| value.as_object().is_some_and(|o| o.len() == 1));
    if let Some(bytes) = bytes {
        let bytes: Vec<u8> =
            bytes.iter().filter_map(Value::as_u64).filter_map(|byte| u8::try_from(byte).ok()).collect();
        return AMQPValue::LongString(LongString::from(bytes));
    }
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(flag) => AMQPValue::Boolean(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => AMQPValue::LongLongInt(integer),
            None => AMQPValue::Double(number.as_f64().unwrap_or_default()),
        },
        Value::String(text) => AMQPValue::LongString(text.as_str().into()),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(items.iter().map(from_json).collect::<Vec<_>>())),
        Value::Object(map) => {
            let mut table = FieldTable::default();
            for (key, value) in map {
                table.insert(key.as_str().into(), from_json(value));
            }
            AMQPValue::FieldTable(table)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties() -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString("00-abc-def-01".into()));
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
        headers.insert("x-flag".into(), AMQPValue::Boolean(true));
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_correlation_id("order-1".into())
            .with_content_type("application/cloudevents+json".into())
            .with_type("order.created".into())
            .with_timestamp(1_772_532_902)
            .with_delivery_mode(2)
            .with_headers(headers)
    }

    #[test]
    fn amazon_mq_properties_read_back_as_the_amqp_properties_they_came_from() {
        let mut basic = RabbitMqBasicProperties::default();
        let original = properties();
        // What `rabbitmq_message` writes, minus the delivery it needs.
        let text = |value: &Option<ShortString>| value.as_ref().map(ShortString::to_string);
        basic.message_id = text(original.message_id());
        basic.correlation_id = text(original.correlation_id());
        basic.content_type = text(original.content_type());
        basic.type_ = text(original.kind());
        basic.delivery_mode = 2;
        basic.timestamp = Some("Mar 3, 2026, 10:15:02 AM".to_owned());
        basic.headers = original
            .headers()
            .as_ref()
            .map(|headers| headers.inner().iter().map(|(key, value)| (key.to_string(), to_json(value))).collect())
            .unwrap_or_default();
        assert_eq!(basic.headers["traceparent"], json!({"bytes": b"00-abc-def-01"}));

        let back = amqp_properties(&basic);

        assert_eq!(back, original);
        assert_eq!(attempt(&basic), 3);
    }

    #[test]
    fn the_attempt_counts_the_quorum_queue_returns() {
        let mut basic = RabbitMqBasicProperties::default();
        assert_eq!(attempt(&basic), 1);
        basic.headers.insert(DELIVERY_COUNT_HEADER.to_owned(), json!(2));
        assert_eq!(attempt(&basic), 3);
    }
}
