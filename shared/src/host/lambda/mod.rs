//! Lambda hosting of a saga step (ARCHITECTURE.md §11.3): one handler that accepts each
//! way a step can be invoked.
//!
//! - a CloudEvent, invoked directly by the bridge: the emitted events are
//!   returned and the bridge publishes them;
//! - an `SqsEvent`: each record handled alone, failures answered with
//!   `SqsBatchResponse` so one bad record never fails the batch;
//! - a `RabbitMqEvent` (Amazon MQ): base64 bodies from one or more queues;
//!   a record that can never be handled is parked in the dead-letter queue;
//! - a `KafkaEvent` (Amazon MSK, self-managed Kafka; `kafka.rs`): base64
//!   values from several partitions of one topic; a record that can never be
//!   handled is parked on the dead-letter topic.
//!
//! For the last three the function publishes its emitted events itself, on
//! the [`Bus`] the environment names.

mod bus;
mod kafka;

use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::rabbitmq::{RabbitMqEvent, RabbitMqMessage};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

pub use self::bus::{Bus, BusKind};
pub use self::kafka::{DEAD_LETTERED_MESSAGE, MSK_EVENT_SOURCE, SELF_MANAGED_KAFKA_EVENT_SOURCE};
use crate::bus::amqp::{amazon_mq, dead_letter_queue, park_dead_letter};
use crate::bus::{OutboxRef, publish_committed_soon};
use crate::contract::events::Event;
use crate::telemetry::run_step;
use crate::{Ports, Step, StepError};

/// Error types the bridge reads from a failed Invoke to choose retry or dead letter.
pub const RETRYABLE_ERROR_TYPE: &str = "choreo.Retryable";
pub const PERMANENT_ERROR_TYPE: &str = "choreo.Permanent";

impl From<StepError> for Diagnostic {
    fn from(error: StepError) -> Self {
        let error_type = if error.is_retryable() { RETRYABLE_ERROR_TYPE } else { PERMANENT_ERROR_TYPE };
        Diagnostic { error_type: error_type.to_owned(), error_message: error.to_string() }
    }
}

/// The shapes a step can be invoked with.
#[derive(Debug)]
pub enum Invocation {
    Direct(Box<Event>),
    Sqs(SqsEvent),
    RabbitMq(RabbitMqEvent),
    Kafka(KafkaEvent),
}

impl Invocation {
    /// Tells the shapes apart by their distinguishing keys.
    pub fn classify(payload: Value) -> Result<Self, StepError> {
        let permanent =
            |shape: &str, error: serde_json::Error| StepError::Permanent(format!("not a valid {shape}: {error}"));
        if payload.get("Records").is_some() {
            serde_json::from_value(payload).map(Self::Sqs).map_err(|error| permanent("SqsEvent", error))
        } else if payload.get("rmqMessagesByQueue").is_some() {
            serde_json::from_value(payload).map(Self::RabbitMq).map_err(|error| permanent("RabbitMqEvent", error))
        } else if payload.get("records").is_some() {
            // Only the Kafka mappings send `records` (lower case; SQS's are `Records`).
            let source = payload.get("eventSource").and_then(Value::as_str).unwrap_or_default().to_owned();
            if ![MSK_EVENT_SOURCE, SELF_MANAGED_KAFKA_EVENT_SOURCE].contains(&source.as_str()) {
                return Err(StepError::Permanent(format!(
                    "not a valid KafkaEvent: eventSource is '{source}', not {MSK_EVENT_SOURCE} or {SELF_MANAGED_KAFKA_EVENT_SOURCE}"
                )));
            }
            serde_json::from_value(payload).map(Self::Kafka).map_err(|error| permanent("KafkaEvent", error))
        } else if payload.get("specversion").is_some() {
            serde_json::from_value(payload)
                .map(|event| Self::Direct(Box::new(event)))
                .map_err(|error| permanent("CloudEvent", error))
        } else {
            Err(StepError::Permanent(
                "the payload is neither a CloudEvent, an SqsEvent, a RabbitMqEvent nor a KafkaEvent".to_owned(),
            ))
        }
    }
}

/// A step with everything it needs while the Lambda container is warm.
pub struct LambdaHost {
    /// The function's step.
    pub step: Arc<dyn Step>,
    /// Built once per container and reused while it is warm.
    pub ports: Ports,
    /// The bus SQS, Amazon MQ and Kafka invocations publish what they emit
    /// to, and Amazon MQ or Kafka records that can never be handled are
    /// parked on (each on its own bus); `None` when the environment names none.
    pub bus: Option<Bus>,
}

impl LambdaHost {
    /// Handles one invocation and answers what Lambda should return.
    pub async fn invoke(&self, payload: Value) -> Result<Value, StepError> {
        match Invocation::classify(payload)? {
            Invocation::Direct(event) => {
                let emitted = run_step(&*self.step, &event, &self.ports).await?;
                // The bridge publishes these and acks only after its confirms;
                // a lost answer means a redelivery, which returns them again.
                self.ports.store.mark_published(self.step.function(), &event.id.to_string()).await?;
                Ok(serde_json::to_value(emitted).map_err(|error| StepError::Permanent(error.to_string()))?)
            }
            Invocation::Sqs(batch) => {
                let response = self.handle_sqs(batch).await;
                Ok(serde_json::to_value(response).map_err(|error| StepError::Permanent(error.to_string()))?)
            }
            Invocation::RabbitMq(batch) => self.handle_rabbitmq(batch).await,
            Invocation::Kafka(batch) => self.handle_kafka(batch).await,
        }
    }

    /// Handles the event and publishes what it emits.
    async fn handle_and_publish(&self, event: &Event) -> Result<usize, StepError> {
        let publisher = self.bus.as_ref().map(Bus::publisher).ok_or_else(|| {
            StepError::Retryable(
                "no bus is set (AMQP_URL, AMQP_SECRET_ARN or KAFKA_BOOTSTRAP_SERVERS): this function cannot publish \
                 the events it emits"
                    .to_owned(),
            )
        })?;
        let emitted = run_step(&*self.step, event, &self.ports).await?;
        let origin = OutboxRef { function: self.step.function(), key: event.id.to_string() };
        publish_committed_soon(&*self.ports.store, &*publisher, &origin, &emitted).await.map_err(StepError::from)?;
        Ok(emitted.len())
    }

    /// Every record on its own; the failed ones go back to SQS (then its DLQ).
    pub async fn handle_sqs(&self, batch: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in batch.records {
            let id = record.message_id.clone().unwrap_or_default();
            let outcome = match Event::from_json(record.body.as_deref().unwrap_or_default().as_bytes()) {
                Ok(event) => self.handle_and_publish(&event).await,
                Err(error) => Err(StepError::Permanent(error.to_string())),
            };
            if let Err(error) = outcome {
                tracing::error!(message_id = %id, %error, "SQS record failed; SQS will redeliver it or dead-letter it");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Amazon MQ mappings have no partial batch response. A retryable
    /// failure fails the invocation: the broker redelivers the batch (what
    /// was handled is deduplicated) and the work queue's delivery limit bounds
    /// how often before it dead-letters the message. A permanent failure
    /// parks that record in the function's dead-letter queue (confirmed, with
    /// the consumer runner's headers) and the rest of the batch goes on; if it
    /// cannot be parked, the invocation fails so that nothing is dropped.
    pub async fn handle_rabbitmq(&self, batch: RabbitMqEvent) -> Result<Value, StepError> {
        let (mut handled, mut dead_lettered) = (0usize, Vec::new());
        let mut retry = None;
        for (queue, messages) in batch.messages_by_queue {
            for message in messages {
                let data = message.data.as_deref().unwrap_or_default();
                let (body, outcome) = match BASE64.decode(data) {
                    Err(error) => {
                        (data.as_bytes().to_vec(), Err(StepError::Permanent(format!("body is not base64: {error}"))))
                    }
                    Ok(body) => {
                        let outcome = match Event::from_json(&body) {
                            Ok(event) => self.handle_and_publish(&event).await,
                            Err(error) => Err(StepError::Permanent(error.to_string())),
                        };
                        (body, outcome)
                    }
                };
                let error = match outcome {
                    Ok(_) => {
                        handled += 1;
                        continue;
                    }
                    Err(error) if error.is_retryable() => {
                        retry = Some(error);
                        continue;
                    }
                    Err(error) => error,
                };
                let message_id = message.basic_properties.message_id.clone().unwrap_or_default();
                match self.park(&message, body, &error).await {
                    Ok(dead_letter_queue) => {
                        tracing::error!(%queue, %message_id, %error, %dead_letter_queue, "dead-lettered a message that can never be handled");
                        dead_lettered.push(serde_json::json!({
                            "queue": queue, "message_id": message_id, "error": error.to_string(),
                            "dead_letter_queue": dead_letter_queue,
                        }));
                    }
                    Err(park_error) => {
                        retry = Some(StepError::Retryable(format!(
                            "message {message_id} can never be handled ({error}) and could not be dead-lettered: {park_error}"
                        )));
                    }
                }
            }
        }
        match retry {
            Some(error) => Err(error),
            None => Ok(serde_json::json!({"handled": handled, "dead_lettered": dead_lettered})),
        }
    }

    /// Puts an Amazon MQ record into this function's dead-letter queue with
    /// the properties it came with; answers the queue once the broker confirmed.
    async fn park(&self, message: &RabbitMqMessage, body: Vec<u8>, error: &StepError) -> Result<String, String> {
        let Some(Bus::Amqp(broker)) = &self.bus else {
            return Err("this function has no AMQP link (AMQP_URL or AMQP_SECRET_ARN is not set)".to_owned());
        };
        let function = self.step.function();
        let basic = &message.basic_properties;
        let properties = amazon_mq::amqp_properties(basic);
        // Boxed: the publish's future is deep, and inlined into the Lambda
        // runtime's it overflows the compiler's layout depth limit.
        Box::pin(park_dead_letter(broker, function, body, properties, amazon_mq::attempt(basic), &error.to_string()))
            .await
            .map_err(|error| error.to_string())?;
        Ok(dead_letter_queue(function))
    }
}

/// `main` of a consuming function: build the ports and the bus once per
/// container (the bus connects at first use), then serve invocations until
/// Lambda stops the container.
pub async fn run(step: Arc<dyn Step>) -> Result<(), lambda_runtime::Error> {
    let bus = Bus::from_env(step.function().name())?;
    let ports = crate::config::ports_from_env().await?;
    let host = Arc::new(LambdaHost { step, ports, bus });
    lambda_runtime::run(service_fn(move |invocation: LambdaEvent<Value>| {
        let host = Arc::clone(&host);
        async move { host.invoke(invocation.payload).await }
    }))
    .await
}
