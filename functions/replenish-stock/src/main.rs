//! Lambda entry point of `replenish-stock`; the step itself lives in the library.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::lambda::run(std::sync::Arc::new(replenish_stock::ReplenishStock), None).await
}
