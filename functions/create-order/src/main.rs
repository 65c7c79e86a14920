//! Lambda entry point of `create-order`: the same router `choreo up` serves.

use std::sync::Arc;

use shared::bus::{NoBroker, Publisher};
use shared::host::lambda::Bus;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let store = shared::config::store_from_env().await?;
    // One link to the bus the environment names (AMQP or Kafka), opened at
    // the first order and reused while warm.
    let publisher: Arc<dyn Publisher> = match Bus::from_env(create_order::FUNCTION.name())? {
        Some(bus) => bus.publisher(),
        None => Arc::new(NoBroker),
    };
    let router = create_order::router(create_order::CreateOrderState { store, publisher });
    // Who may order for whom: the ApiAuth of the stack (CHOREO_API_AUTH).
    let auth = Arc::new(shared::host::auth::ApiAuth::from_env()?);
    lambda_http::run(shared::host::http::with_fallbacks(shared::host::auth::with_auth(router, auth))).await
}
