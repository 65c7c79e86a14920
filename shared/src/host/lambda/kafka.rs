//! `KafkaEvent`: what Lambda's Amazon MSK and self-managed Kafka event
//! source mappings send. A batch holds records of one topic, grouped by
//! partition (`"<topic>-<partition>"`), each partition's in offset order;
//! a record's value is the base64 of the CloudEvent, its key the base64 of
//! the order id, its headers arrays of byte values.

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::LambdaHost;
use crate::StepError;
use crate::contract::events::Event;

/// The `eventSource` of each Kafka mapping's payloads.
pub const MSK_EVENT_SOURCE: &str = "aws:kafka";
pub const SELF_MANAGED_KAFKA_EVENT_SOURCE: &str = "SelfManagedKafka";

/// The message logged for each parked record, with the `function` field:
/// a topic has no depth metric to alarm on, so the template counts these
/// lines (a metric filter per function) and alarms on them.
pub const DEAD_LETTERED_MESSAGE: &str = "dead-lettered a record that can never be handled";

impl LambdaHost {
    /// Kafka mappings have no partial batch response, like Amazon MQ's
    /// (`handle_rabbitmq`). A retryable failure fails the invocation: the
    /// mapping sends the batch again (what was handled is deduplicated by
    /// the steps' idempotency), and the rest of that partition waits for
    /// it so that one partition's records stay in order; other partitions
    /// go on. A permanent failure parks the record on the function's
    /// dead-letter topic (acknowledged by the cluster) and its partition
    /// goes on; if it cannot be parked, the invocation fails so that
    /// nothing is dropped.
    pub async fn handle_kafka(&self, batch: KafkaEvent) -> Result<Value, StepError> {
        let (mut handled, mut dead_lettered) = (0usize, Vec::new());
        let mut retry = None;
        // The map's order is arbitrary; sorted, the logs read the same each time.
        let mut partitions: Vec<_> = batch.records.into_iter().collect();
        partitions.sort_by(|(a, _), (b, _)| a.cmp(b));
        for (partition, records) in partitions {
            for record in records {
                let (body, outcome) = match BASE64.decode(record.value.as_deref().unwrap_or_default()) {
                    Err(error) => (None, Err(StepError::Permanent(format!("value is not base64: {error}")))),
                    Ok(body) => {
                        let outcome = match Event::from_json(&body) {
                            Ok(event) => self.handle_and_publish(&event).await,
                            Err(error) => Err(StepError::Permanent(error.to_string())),
                        };
                        (Some(body), outcome)
                    }
                };
                let error = match outcome {
                    Ok(_) => {
                        handled += 1;
                        continue;
                    }
                    Err(error) if error.is_retryable() => {
                        retry = Some(error);
                        break;
                    }
                    Err(error) => error,
                };
                let offset = record.offset;
                match self.park_record(&record, body, &error).await {
                    Ok(dead_letter_topic) => {
                        let function = self.step.function().name();
                        tracing::error!(function, %partition, offset, %error, %dead_letter_topic, "{DEAD_LETTERED_MESSAGE}");
                        dead_lettered.push(json!({
                            "partition": partition, "offset": offset, "error": error.to_string(),
                            "dead_letter_topic": dead_letter_topic,
                        }));
                    }
                    Err(park_error) => {
                        retry = Some(StepError::Retryable(format!(
                            "record {partition}@{offset} can never be handled ({error}) and could not be dead-lettered: {park_error}"
                        )));
                        break;
                    }
                }
            }
        }
        match retry {
            Some(error) => Err(error),
            None => Ok(json!({"handled": handled, "dead_lettered": dead_lettered})),
        }
    }

    /// Puts a record on this function's dead-letter topic under its own key
    /// (the order id, so `choreo dlq` lists it by order), the value as it
    /// came (the base64 text when it did not decode); answers the topic once
    /// the cluster acknowledged it.
    #[cfg(feature = "kafka")]
    async fn park_record(
        &self,
        record: &KafkaRecord,
        body: Option<Vec<u8>>,
        error: &StepError,
    ) -> Result<String, String> {
        use super::Bus;
        use crate::bus::kafka::{dead_letter_topic, park_dead_record};

        let Some(Bus::Kafka(link)) = &self.bus else {
            return Err("this function has no Kafka link (KAFKA_BOOTSTRAP_SERVERS is not set)".to_owned());
        };
        let function = self.step.function();
        let key = record.key.as_deref().map(|key| BASE64.decode(key).unwrap_or_else(|_| key.as_bytes().to_vec()));
        let body = body.unwrap_or_else(|| record.value.as_deref().unwrap_or_default().as_bytes().to_vec());
        // Lambda does not say how often the batch came: this is the first attempt known.
        // Lambda hands header values over as signed bytes.
        let headers: Vec<(String, Vec<u8>)> = record
            .headers
            .iter()
            .flatten()
            .map(|(name, value)| (name.clone(), value.iter().map(|byte| *byte as u8).collect()))
            .collect();
        Box::pin(park_dead_record(link, function, key.as_deref(), &body, &headers, 1, &error.to_string()))
            .await
            .map_err(|error| error.to_string())?;
        Ok(dead_letter_topic(function))
    }

    /// A build without Kafka never has a Kafka link (`Bus::from_env` refuses
    /// the variables), so there is nowhere to park the record.
    #[cfg(not(feature = "kafka"))]
    async fn park_record(
        &self,
        _record: &KafkaRecord,
        _body: Option<Vec<u8>>,
        _error: &StepError,
    ) -> Result<String, String> {
        Err("this build has no Kafka bus to park the record on (CARGO_LAMBDA_CONTEXT=kafka builds one)".to_owned())
    }
}
