//! The broker topology, derived from the choreography table: declared at
//! start by every consumer and exported as `infra/rabbitmq/definitions.json`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

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

impl Topology {
    pub fn derive(settings: &DeliverySettings) -> Self {
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for function in Function::consumers() {
            queues.push(QueueSpec { name: function.queue(), arguments: vec![] });
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

    pub(super) async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
        for spec in &self.queues {
            let mut arguments = FieldTable::default();
            for (key, value) in &spec.arguments {
                let value = match value {
                    ArgValue::Int(number) => AMQPValue::LongLongInt(*number),
                    ArgValue::Text(text) => AMQPValue::LongString(text.as_str().into()),
                };
                arguments.insert((*key).into(), value);
            }
            channel.queue_declare(spec.name.as_str().into(), QueueDeclareOptions::durable(), arguments).await?;
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
    fn retry_delays_double() {
        let settings = DeliverySettings::default();
        assert_eq!(settings.retry_delay(1), Duration::from_secs(1));
        assert_eq!(settings.retry_delay(3), Duration::from_secs(4));
        let topology = Topology::derive(&settings);
        let third = topology.queues.iter().find(|queue| queue.name == retry_queue(Function::ShipOrder, 3)).unwrap();
        assert!(third.arguments.contains(&("x-message-ttl", ArgValue::Int(4000))));
    }
}
