//! The dead-letter queues: listed without removing, and replayed into
//! their function's work queue.

use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::consumer::{header_int, header_text};
use super::link::AmqpLink;
use super::topology::dead_letter_queue;
use super::{ATTEMPT_HEADER, ERROR_HEADER, FUNCTION_HEADER};
use crate::bus::PublishError;
use crate::contract::choreography::Function;

/// A message parked in a dead-letter queue.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadMessage {
    /// The function whose dead-letter queue holds it.
    pub function: String,
    /// The event id (AMQP `message_id`), for `choreo dlq replay --message-id`.
    pub message_id: Option<String>,
    /// The event type (AMQP `type`).
    pub event_type: Option<String>,
    /// The order (AMQP `correlation_id`), to look the saga up.
    pub order_id: Option<String>,
    /// Why it was parked (the `x-choreo-error` header).
    pub error: Option<String>,
    /// Attempts made (the `x-choreo-attempt` header).
    pub attempts: Option<i64>,
    /// The message as received (the CloudEvent), even when it is not valid UTF-8.
    pub body: String,
}

/// `properties` plus the bookkeeping headers of a retried or dead-lettered
/// copy: which attempt comes (or failed) last, the error, and the function.
pub(super) fn with_bookkeeping(
    properties: BasicProperties,
    attempt: u32,
    error: &str,
    function: Function,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempt)));
    headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(error.into()));
    headers.insert(FUNCTION_HEADER.into(), AMQPValue::LongString(function.name().into()));
    properties.with_headers(headers).with_delivery_mode(2)
}

/// Parks a message that can never be handled in `function`'s dead-letter
/// queue, with the bookkeeping headers; returns once the broker confirmed it.
pub async fn park_dead_letter(
    link: &AmqpLink,
    function: Function,
    body: Vec<u8>,
    properties: BasicProperties,
    attempt: u32,
    error: &str,
) -> Result<(), PublishError> {
    let properties = with_bookkeeping(properties, attempt, error, function);
    link.send_to_queue(&dead_letter_queue(function), body, properties).await
}

/// Reads (without removing) up to `limit` dead letters of each function.
pub async fn list_dead_letters(link: &AmqpLink, limit: usize) -> Result<Vec<DeadMessage>, lapin::Error> {
    let mut letters = Vec::new();
    for function in Function::consumers() {
        // Unacked gets return to the queue when this channel closes.
        let channel = link.channel().await?;
        for _ in 0..limit {
            let Some(message) =
                channel.basic_get(dead_letter_queue(function).as_str().into(), BasicGetOptions::default()).await?
            else {
                break;
            };
            letters.push(dead_message(function, &message.delivery));
        }
        let _ = channel.close(200, "listed".into()).await;
    }
    Ok(letters)
}

fn dead_message(function: Function, delivery: &lapin::message::Delivery) -> DeadMessage {
    DeadMessage {
        function: function.name().to_owned(),
        message_id: delivery.properties.message_id().as_ref().map(ShortString::to_string),
        event_type: delivery.properties.kind().as_ref().map(ShortString::to_string),
        order_id: delivery.properties.correlation_id().as_ref().map(ShortString::to_string),
        error: header_text(delivery, ERROR_HEADER),
        attempts: header_int(delivery, ATTEMPT_HEADER),
        body: String::from_utf8_lossy(&delivery.data).into_owned(),
    }
}

/// Sends dead letters back to their function's work queue (fresh attempt
/// count), optionally only the one with `message_id`. Answers how many.
pub async fn replay_dead_letters(
    link: &AmqpLink,
    function: Option<Function>,
    message_id: Option<&str>,
) -> Result<usize, ReplayError> {
    let mut replayed = 0;
    let functions: Vec<Function> = match function {
        Some(function) => vec![function],
        None => Function::consumers().collect(),
    };
    for function in functions {
        let queue = dead_letter_queue(function);
        let channel = link.channel().await?;
        // Only the letters there now: one that fails again while the consumers
        // run comes back to this queue behind them, and is not replayed twice.
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let present =
            channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await?.message_count();
        let mut kept = Vec::new();
        for _ in 0..present {
            let Some(message) = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await? else {
                break;
            };
            let delivery = message.delivery;
            let id = delivery.properties.message_id().as_ref().map(ShortString::to_string);
            if message_id.is_some_and(|wanted| id.as_deref() != Some(wanted)) {
                kept.push(delivery);
                continue;
            }
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(1));
            let properties = delivery.properties.clone().with_headers(headers);
            link.send_to_queue(&function.queue(), delivery.data.clone(), properties).await?;
            delivery.ack(BasicAckOptions::default()).await?;
            replayed += 1;
        }
        for delivery in kept {
            delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
        }
        let _ = channel.close(200, "replayed".into()).await;
    }
    Ok(replayed)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}
