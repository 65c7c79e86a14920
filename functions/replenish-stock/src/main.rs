//! Lambda entry point of `replenish-stock`; the step itself lives in the library.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // Opened at first use, then reused while the container is warm.
    let publisher = shared::bus::amqp::AmqpLink::from_env(replenish_stock::FUNCTION.name()).map(|link| link as Arc<_>);
    shared::host::lambda::run(Arc::new(replenish_stock::ReplenishStock), publisher).await
}
