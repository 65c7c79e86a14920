//! Lambda entry point of `order-query`: the same router `choreo up` serves.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let store = shared::config::store_from_env().await?;
    // Who may read which order: the ApiAuth of the stack (CHOREO_API_AUTH).
    let auth = std::sync::Arc::new(shared::host::auth::ApiAuth::from_env()?);
    let router = shared::host::auth::with_auth(order_query::router(store), auth);
    lambda_http::run(shared::host::http::with_fallbacks(router)).await
}
