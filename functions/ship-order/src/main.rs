//! Lambda entry point of `ship-order`; the step itself lives in the library.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::lambda::run(std::sync::Arc::new(ship_order::ShipOrder), None).await
}
