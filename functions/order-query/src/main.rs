//! Lambda entry point of `order-query`: the same router `choreo up` serves.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let store = shared::config::store_from_env().await?;
    lambda_http::run(shared::host::http::with_fallbacks(order_query::router(store))).await
}
