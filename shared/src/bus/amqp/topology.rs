//! The broker topology, derived from the choreography table: declared at
//! start by every consumer and exported as `infra/rabbitmq/definitions.json`.

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::link::AmqpLink;
use super::migration::{DeclareError, is_precondition_failed};
use super::{SAGA_ENDED_MAX_LENGTH, SAGA_ENDED_QUEUE};
use crate::bus::DeliverySettings;
use crate::contract::choreography::{EXCHANGE, Function, TERMINAL_EVENTS};

pub fn retry_queue(function: Function, retry: u32) -> String {
    format!("{}.retry.{retry}", function.queue())
}

pub fn dead_letter_queue(function: Function) -> String {
    format!("{}.dead", function.queue())
}

/// Everything to declare, derived from the choreography table. Used both to
/// declare the topology and to export `infra/rabbitmq/definitions.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// Every queue with its arguments: work, retry, dead-letter and saga-ended queues.
    pub queues: Vec<QueueSpec>,
    /// `(queue, routing key)` pairs on the `choreo.events` exchange.
    pub bindings: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    /// `choreo.<function>`, `.retry.N`, `.dead`, or `choreo.saga-ended`.
    pub name: String,
    /// `x-` arguments: integers or strings.
    pub arguments: Vec<(&'static str, ArgValue)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    Int(i64),
    Text(String),
}

/// A work queue is a quorum queue, so that the broker itself bounds
/// redeliveries: a message returned to it (a nack with requeue, a consumer
/// gone, an Amazon MQ invocation that failed) `max_retries` times is
/// dead-lettered into `choreo.<function>.dead` on the next return, at least
/// once (`reject-publish` is what at-least-once dead-lettering requires).
fn work_queue_arguments(function: Function, settings: &DeliverySettings) -> Vec<(&'static str, ArgValue)> {
    vec![
        ("x-queue-type", ArgValue::Text("quorum".into())),
        ("x-delivery-limit", ArgValue::Int(i64::from(settings.max_retries))),
        ("x-dead-letter-exchange", ArgValue::Text(String::new())),
        ("x-dead-letter-routing-key", ArgValue::Text(dead_letter_queue(function))),
        ("x-dead-letter-strategy", ArgValue::Text("at-least-once".into())),
        ("x-overflow", ArgValue::Text("reject-publish".into())),
    ]
}

impl Topology {
    pub fn derive(settings: &DeliverySettings) -> Self {
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for function in Function::consumers() {
            queues.push(QueueSpec { name: function.queue(), arguments: work_queue_arguments(function, settings) });
            for event in function.spec().consumes {
                bindings.push((function.queue(), event.as_str().to_owned()));
            }
            for retry in 1..=settings.max_retries {
                let ttl = i64::try_from(settings.retry_delay(retry).as_millis()).unwrap_or(i64::MAX);
                queues.push(QueueSpec {
                    name: retry_queue(function, retry),
                    arguments: vec![
                        ("x-message-ttl", ArgValue::Int(ttl)),
                        ("x-dead-letter-exchange", ArgValue::Text(String::new())),
                        ("x-dead-letter-routing-key", ArgValue::Text(function.queue())),
                    ],
                });
            }
            queues.push(QueueSpec { name: dead_letter_queue(function), arguments: vec![] });
        }
        queues.push(QueueSpec {
            name: SAGA_ENDED_QUEUE.to_owned(),
            arguments: vec![
                ("x-max-length", ArgValue::Int(i64::from(SAGA_ENDED_MAX_LENGTH))),
                ("x-overflow", ArgValue::Text("drop-head".into())),
            ],
        });
        for event in TERMINAL_EVENTS {
            bindings.push((SAGA_ENDED_QUEUE.to_owned(), event.as_str().to_owned()));
        }
        Self { queues, bindings }
    }

    /// The RabbitMQ management plugin's definitions format (importable with
    /// `rabbitmqadmin import` or `load_definitions`).
    pub fn definitions_json(&self, vhost: &str) -> serde_json::Value {
        let arguments = |spec: &QueueSpec| {
            let map: serde_json::Map<String, serde_json::Value> = spec
                .arguments
                .iter()
                .map(|(key, value)| {
                    let value = match value {
                        ArgValue::Int(number) => serde_json::json!(number),
                        ArgValue::Text(text) => serde_json::json!(text),
                    };
                    ((*key).to_owned(), value)
                })
                .collect();
            serde_json::Value::Object(map)
        };
        serde_json::json!({
            "exchanges": [{
                "name": EXCHANGE, "vhost": vhost, "type": "topic", "durable": true,
                "auto_delete": false, "internal": false, "arguments": {}
            }],
            "queues": self.queues.iter().map(|spec| serde_json::json!({
                "name": spec.name, "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": arguments(spec)
            })).collect::<Vec<_>>(),
            "bindings": self.bindings.iter().map(|(queue, key)| serde_json::json!({
                "source": EXCHANGE, "vhost": vhost, "destination": queue, "destination_type": "queue",
                "routing_key": key, "arguments": {}
            })).collect::<Vec<_>>(),
        })
    }

    /// Declares everything on the broker of `link`. Every queue is tried, so
    /// that a mismatch names all the queues to migrate, not the first one.
    pub(super) async fn declare(&self, link: &AmqpLink, vhost: &str) -> Result<(), DeclareError> {
        let mut channel = link.channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
        let mut mismatched = Vec::new();
        for spec in &self.queues {
            let mut arguments = FieldTable::default();
            for (key, value) in &spec.arguments {
                let value = match value {
                    ArgValue::Int(number) => AMQPValue::LongLongInt(*number),
                    ArgValue::Text(text) => AMQPValue::LongString(text.as_str().into()),
                };
                arguments.insert((*key).into(), value);
            }
            match channel.queue_declare(spec.name.as_str().into(), QueueDeclareOptions::durable(), arguments).await {
                Ok(_) => {}
                Err(error) if is_precondition_failed(&error) => {
                    mismatched.push(spec.name.clone());
                    // The broker closes a channel that fails a declare.
                    channel = link.channel().await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if !mismatched.is_empty() {
            let _ = channel.close(200, "mismatch".into()).await;
            return Err(DeclareError::Mismatch { vhost: vhost.to_owned(), queues: mismatched });
        }
        for (queue, key) in &self.bindings {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    EXCHANGE.into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn topology_binds_every_consumed_type_and_every_terminal_event() {
        let topology = Topology::derive(&DeliverySettings::default());
        for function in Function::consumers() {
            for event in function.spec().consumes {
                assert!(topology.bindings.contains(&(function.queue(), event.as_str().to_owned())));
            }
            assert!(topology.queues.iter().any(|queue| queue.name == dead_letter_queue(function)));
            assert!(topology.queues.iter().any(|queue| queue.name == retry_queue(function, 5)));
            assert!(!topology.queues.iter().any(|queue| queue.name == retry_queue(function, 6)));
        }
        let terminal = topology.bindings.iter().filter(|(queue, _)| queue == SAGA_ENDED_QUEUE).count();
        assert_eq!(terminal, TERMINAL_EVENTS.len());
    }

    #[test]
    fn work_queues_are_quorum_queues_that_dead_letter_into_the_dead_queue_after_the_retries() {
        let settings = DeliverySettings { max_retries: 3, ..DeliverySettings::default() };
        let topology = Topology::derive(&settings);
        for function in Function::consumers() {
            let work = topology.queues.iter().find(|queue| queue.name == function.queue()).expect("a work queue");
            let text = |value: &str| ArgValue::Text(value.to_owned());
            assert_eq!(
                work.arguments,
                vec![
                    ("x-queue-type", text("quorum")),
                    ("x-delivery-limit", ArgValue::Int(3)),
                    ("x-dead-letter-exchange", text("")),
                    ("x-dead-letter-routing-key", text(&dead_letter_queue(function))),
                    ("x-dead-letter-strategy", text("at-least-once")),
                    ("x-overflow", text("reject-publish")),
                ]
            );
            let retry = topology.queues.iter().find(|queue| queue.name == retry_queue(function, 1)).expect("retry 1");
            assert!(retry.arguments.contains(&("x-dead-letter-routing-key", text(&function.queue()))));
        }
    }

    #[test]
    fn retry_delays_double() {
        let settings = DeliverySettings::default();
        assert_eq!(settings.retry_delay(1), Duration::from_secs(1));
        assert_eq!(settings.retry_delay(3), Duration::from_secs(4));
        let topology = Topology::derive(&settings);
        let third = topology.queues.iter().find(|queue| queue.name == retry_queue(Function::ShipOrder, 3)).unwrap();
        assert!(third.arguments.contains(&("x-message-ttl", ArgValue::Int(4000))));
    }
}
