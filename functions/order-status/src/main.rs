//! Lambda entry point of `order-status`; the step itself lives in the library.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::lambda::run(std::sync::Arc::new(order_status::OrderStatusStep), None).await
}
