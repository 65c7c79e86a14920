//! Lambda entry point of `reserve-inventory`; the step itself lives in the library.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // Opened at first use, then reused while the container is warm.
    let publisher =
        shared::bus::amqp::AmqpLink::from_env(reserve_inventory::FUNCTION.name()).map(|link| link as Arc<_>);
    shared::host::lambda::run(Arc::new(reserve_inventory::ReserveInventory), publisher).await
}
