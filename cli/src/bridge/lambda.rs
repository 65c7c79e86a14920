//! `--invoke lambda`: the Lambda Invoke API, with the CloudEvent as payload
//! (the function answers the events it emitted) or an AWS event shape (see
//! `event_shape`); a failure is an error document whose type says whether a
//! retry can help.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use shared::bus::amqp::StepInvoker;
use shared::contract::trace::TraceParent;
use shared::host::lambda::{PERMANENT_ERROR_TYPE, RETRYABLE_ERROR_TYPE};
use shared::host::trace_context::XRAY_HEADER;
use shared::{Event, Function, StepError};

use super::event_shape::{EventShape, EventSource, kafka_event, outcome, payload};

/// Invokes a function synchronously with each message, in the chosen shape.
pub struct LambdaInvoker {
    /// Built once, with the SDK's retries off: the consumer runner retries.
    client: aws_sdk_lambda::Client,
    /// The Lambda function name of each function: prefix + name.
    names: BTreeMap<Function, String>,
    /// What each invocation carries.
    shape: EventShape,
    /// Where the rehearsed event source mapping reads from (AWS shapes).
    source: EventSource,
    /// Bound on one invocation; past it the call is a retryable failure.
    timeout: Duration,
}

impl LambdaInvoker {
    pub fn new(
        client: aws_sdk_lambda::Client,
        function_prefix: &str,
        shape: EventShape,
        source: EventSource,
        timeout: Duration,
    ) -> Self {
        let names =
            Function::all().map(|function| (function, format!("{function_prefix}{}", function.name()))).collect();
        Self { client, names, shape, source, timeout }
    }

    /// One synchronous invocation of `function` with `payload`, in `event`'s
    /// trace (the X-Ray header Lambda continues, ARCHITECTURE.md §14.1);
    /// answers what the function returned, or the `StepError` its failure stands for.
    async fn invoke(&self, function: Function, event: &Event, payload: Vec<u8>) -> Result<(&str, Vec<u8>), StepError> {
        let name = self.names.get(&function).map(String::as_str).unwrap_or(function.name());
        let xray =
            TraceParent::parse(&event.traceparent).map(|trace| trace.with_span(event.span_id().to_owned()).to_xray());
        let call = self
            .client
            .invoke()
            .function_name(name)
            .payload(Blob::new(payload))
            .customize()
            .mutate_request(move |request| {
                if let Some(xray) = &xray {
                    request.headers_mut().insert(XRAY_HEADER, xray.clone());
                }
            })
            .send();
        let sent = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StepError::Retryable(format!("invoking {name}: no answer within {:?}", self.timeout)))?;
        let output = sent.map_err(|error| {
            // `cargo lambda watch` answers a function error with HTTP 500
            // and the error document, where AWS answers 200 and sets
            // `X-Amz-Function-Error`: read the function's verdict either way.
            let body = error.raw_response().and_then(|response| response.body().bytes()).unwrap_or_default();
            if is_error_document(body) {
                return function_error(name, "Unhandled", body);
            }
            StepError::Retryable(format!("invoking {name}: {}", aws_sdk_lambda::error::DisplayErrorContext(&error)))
        })?;
        let answer = output.payload().map(|payload| payload.as_ref().to_vec()).unwrap_or_default();
        if let Some(kind) = output.function_error() {
            return Err(function_error(name, kind, &answer));
        }
        Ok((name, answer))
    }
}

#[async_trait]
impl StepInvoker for LambdaInvoker {
    /// The CloudEvent shape, whatever the configured one: without the
    /// delivery there is nothing else to build.
    async fn handle(&self, function: Function, event: &Event) -> Result<Vec<Event>, StepError> {
        let (name, answer) = self.invoke(function, event, event.to_json()).await?;
        let emitted = outcome(EventShape::CloudEvent, function, name, &answer)?;
        tracing::info!(step = %function, event = %event.event_type().as_str(), id = %event.id, order_id = %event.subject, trace_id = event.trace_id(), emitted = emitted.len(), "invoked {name}");
        Ok(emitted)
    }

    /// From Kafka's runner: the CloudEvent, or a `KafkaEvent` built from it
    /// (the record's offsets mean nothing to a function).
    async fn handle_attempt(&self, function: Function, event: &Event, _attempt: u32) -> Result<Vec<Event>, StepError> {
        if self.shape != EventShape::Kafka {
            return self.handle(function, event).await;
        }
        let payload = serde_json::to_vec(&kafka_event(&self.source, event))
            .map_err(|error| StepError::Permanent(error.to_string()))?;
        let (name, answer) = self.invoke(function, event, payload).await?;
        let emitted = outcome(self.shape, function, name, &answer)?;
        tracing::info!(step = %function, event = %event.event_type().as_str(), id = %event.id, order_id = %event.subject, trace_id = event.trace_id(), shape = ?self.shape, "invoked {name}");
        Ok(emitted)
    }

    async fn handle_delivery(
        &self,
        function: Function,
        event: &Event,
        delivery: &lapin::message::Delivery,
        attempt: u32,
    ) -> Result<Vec<Event>, StepError> {
        let payload = payload(self.shape, &self.source, function, event, delivery, attempt)?;
        let (name, answer) = self.invoke(function, event, payload).await?;
        let emitted = outcome(self.shape, function, name, &answer)?;
        tracing::info!(step = %function, event = %event.event_type().as_str(), id = %event.id, order_id = %event.subject, trace_id = event.trace_id(), shape = ?self.shape, emitted = emitted.len(), "invoked {name}");
        Ok(emitted)
    }
}

/// The `StepError` a failed invocation stands for: the function's own verdict
/// (`errorType` `choreo.Retryable` / `choreo.Permanent`, see `shared::host::lambda`)
/// or, for anything else (a crash, a timeout, out of memory), a retry.
pub fn function_error(name: &str, kind: &str, payload: &[u8]) -> StepError {
    let body: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let field = |key: &str| body.as_ref().and_then(|body| body.get(key)).and_then(|value| value.as_str());
    let error_type = field("errorType").unwrap_or(kind);
    let message =
        field("errorMessage").map(str::to_owned).unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned());
    let detail = format!("{name} failed ({error_type}): {message}");
    match error_type {
        PERMANENT_ERROR_TYPE => StepError::Permanent(detail),
        RETRYABLE_ERROR_TYPE => StepError::Retryable(detail),
        _ => StepError::Retryable(detail),
    }
}

/// Whether `payload` is a Lambda function error document (`{"errorType",..}`).
fn is_error_document(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .is_ok_and(|body| body.get("errorType").is_some_and(|kind| kind.is_string()))
}

/// The events a direct invocation answered (a JSON array of CloudEvents),
/// each of a type `function` may emit.
pub fn emitted_events(function: Function, payload: &[u8]) -> Result<Vec<Event>, String> {
    let events: Vec<Event> = serde_json::from_slice(payload)
        .map_err(|error| format!("the answer is not a JSON array of CloudEvents: {error}"))?;
    if let Some(event) = events.iter().find(|event| !function.spec().emits.contains(&event.event_type())) {
        return Err(format!("answered a '{}' event, which {function} does not emit", event.event_type().as_str()));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use shared::contract::domain::OrderId;
    use shared::contract::events::OrderCancelled;

    use super::*;

    #[test]
    fn the_function_says_whether_a_retry_can_help() {
        let body = |kind: &str| format!(r#"{{"errorType":"{kind}","errorMessage":"boom"}}"#).into_bytes();
        assert!(matches!(
            function_error("ship-order", "Unhandled", &body(PERMANENT_ERROR_TYPE)),
            StepError::Permanent(message) if message.contains("boom")
        ));
        assert!(function_error("ship-order", "Unhandled", &body(RETRYABLE_ERROR_TYPE)).is_retryable());
        assert!(function_error("ship-order", "Unhandled", &body("Runtime.ExitError")).is_retryable());
        assert!(function_error("ship-order", "Unhandled", b"Task timed out").is_retryable());
    }

    #[test]
    fn an_answer_must_be_events_the_function_emits() {
        let cancelled = Event::new(
            Function::OrderStatus,
            OrderId::new(),
            None,
            shared::Payload::OrderCancelled(OrderCancelled {
                reason: shared::contract::domain::CancelReason::ShipmentFailed,
                detail: "no".into(),
            }),
        );
        let payload = serde_json::to_vec(&[&cancelled]).unwrap();
        assert_eq!(emitted_events(Function::OrderStatus, &payload).unwrap(), vec![cancelled]);
        assert!(emitted_events(Function::ShipOrder, &payload).unwrap_err().contains("does not emit"));
        assert_eq!(emitted_events(Function::ShipOrder, b"[]").unwrap(), vec![]);
        assert!(emitted_events(Function::ShipOrder, b"{}").is_err());
    }
}
