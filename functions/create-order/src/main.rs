//! Lambda entry point of `create-order`: the same router `choreo up` serves.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let store = shared::config::store_from_env().await?;
    let publisher = Arc::new(shared::bus::NoBroker);
    let router = create_order::router(create_order::CreateOrderState { store, publisher });
    lambda_http::run(shared::http::with_fallbacks(router)).await
}
