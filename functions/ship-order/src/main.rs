//! Lambda entry point of `ship-order`; the step itself lives in the library.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // Opened at first use, then reused while the container is warm.
    let publisher = shared::bus::amqp::AmqpLink::from_env(ship_order::FUNCTION.name()).map(|link| link as Arc<_>);
    shared::host::lambda::run(Arc::new(ship_order::ShipOrder), publisher).await
}
