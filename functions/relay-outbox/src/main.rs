//! Lambda entry point of `relay-outbox`; the pass itself lives in the library.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::StepError;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let grace = relay_outbox::grace_from(std::env::var(relay_outbox::GRACE_VAR).ok().as_deref())?;
    let deadline = relay_outbox::saga_deadline_from(std::env::var(relay_outbox::SAGA_DEADLINE_VAR).ok().as_deref())?;
    let store = shared::config::store_from_env().await?;
    // Opened at first use, then reused while the container is warm.
    let publisher = shared::host::lambda::Bus::from_env(relay_outbox::NAME)?
        .ok_or("AMQP_URL, AMQP_SECRET_ARN or KAFKA_BOOTSTRAP_SERVERS must be set: the relay publishes to the bus")?
        .publisher();
    lambda_runtime::run(service_fn(move |_schedule: LambdaEvent<Value>| {
        let (store, publisher) = (Arc::clone(&store), Arc::clone(&publisher));
        // One relay pass and one saga-deadline sweep. A failed pass fails the
        // invocation (visible in the Errors metric and its alarm); the next
        // scheduled pass tries again.
        async move {
            relay_outbox::pass_once(&*store, &*publisher, grace, deadline)
                .await
                .map_err(|error| StepError::Retryable(error.to_string()))
        }
    }))
    .await
}
