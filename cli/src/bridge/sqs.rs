//! `--invoke sqs`: each event goes to its function's SQS queue; the function,
//! invoked by its SQS event source, publishes what it emits by itself.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue};
use shared::bus::amqp::StepInvoker;
use shared::contract::trace::TraceParent;
use shared::{Event, Function, StepError};

/// SQS message attributes set on every forwarded event (the body is the
/// CloudEvent itself; these let queue tooling see what a message is).
pub const SQS_TYPE_ATTRIBUTE: &str = "type";
pub const SQS_ID_ATTRIBUTE: &str = "id";
pub const SQS_SUBJECT_ATTRIBUTE: &str = "subject";

/// Sends each event to its function's SQS queue.
pub struct SqsForwarder {
    /// The SQS client, built once.
    client: aws_sdk_sqs::Client,
    /// The queue of each bridged function.
    queue_urls: BTreeMap<Function, String>,
    /// Bound on one SendMessage; past it the call is a retryable failure.
    timeout: Duration,
}

impl SqsForwarder {
    pub fn new(client: aws_sdk_sqs::Client, queue_urls: BTreeMap<Function, String>, timeout: Duration) -> Self {
        Self { client, queue_urls, timeout }
    }
}

fn text_attribute(value: String) -> Result<MessageAttributeValue, StepError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|error| StepError::Permanent(error.to_string()))
}

#[async_trait]
impl StepInvoker for SqsForwarder {
    async fn handle(&self, function: Function, event: &Event) -> Result<Vec<Event>, StepError> {
        let url = self
            .queue_urls
            .get(&function)
            .ok_or_else(|| StepError::Permanent(format!("no SQS queue URL for {function}")))?;
        let body = String::from_utf8(event.to_json()).map_err(|error| StepError::Permanent(error.to_string()))?;
        let mut request = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .message_attributes(SQS_TYPE_ATTRIBUTE, text_attribute(event.event_type().as_str().to_owned())?)
            .message_attributes(SQS_ID_ATTRIBUTE, text_attribute(event.id.to_string())?)
            .message_attributes(SQS_SUBJECT_ATTRIBUTE, text_attribute(event.subject.to_string())?);
        if let Some(trace) = TraceParent::parse(&event.traceparent) {
            // The function's SQS invocation continues the saga's X-Ray trace.
            let header = trace.with_span(event.span_id().to_owned()).to_xray();
            let value = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(header)
                .build()
                .map_err(|error| StepError::Permanent(error.to_string()))?;
            request = request.message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, value);
        }
        if url.ends_with(".fifo") {
            // One order's events in order; a redelivered event deduplicated.
            request =
                request.message_group_id(event.subject.to_string()).message_deduplication_id(event.id.to_string());
        }
        let sent = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| StepError::Retryable(format!("sending to {url}: no answer within {:?}", self.timeout)))?;
        sent.map_err(|error| {
            StepError::Retryable(format!("sending to {url}: {}", aws_sdk_sqs::error::DisplayErrorContext(&error)))
        })?;
        tracing::info!(step = %function, event = %event.event_type().as_str(), id = %event.id, order_id = %event.subject, trace_id = event.trace_id(), "forwarded to SQS");
        Ok(vec![]) // the function publishes what it emits
    }
}

#[cfg(test)]
mod tests {
    use shared::testkit::aws::{local_sdk_config, silent_endpoint};

    use super::*;

    #[tokio::test]
    async fn an_sqs_that_never_answers_is_a_retryable_failure_within_the_bound() {
        let endpoint = silent_endpoint().await;
        let client = aws_sdk_sqs::Client::new(&local_sdk_config(&endpoint).await);
        let url = format!("{endpoint}/000000000000/choreo-ship-order");
        let forwarder =
            SqsForwarder::new(client, BTreeMap::from([(Function::ShipOrder, url.clone())]), Duration::from_millis(300));
        let event = shared::testkit::event(
            shared::contract::domain::OrderId::new(),
            shared::testkit::sample_payload(shared::EventType::InventoryReserved),
        );

        let sent = forwarder.handle(Function::ShipOrder, &event).await;

        match sent {
            Err(StepError::Retryable(message)) => {
                assert_eq!(message, format!("sending to {url}: no answer within 300ms"));
            }
            other => panic!("a retryable failure, not {other:?}"),
        }
    }
}
