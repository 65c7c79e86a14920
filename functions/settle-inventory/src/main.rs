//! Lambda entry point of `settle-inventory`; the step itself lives in the library.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // Opened at first use, then reused while the container is warm.
    let publisher = shared::bus::amqp::AmqpLink::from_env(settle_inventory::FUNCTION.name()).map(|link| link as Arc<_>);
    shared::host::lambda::run(Arc::new(settle_inventory::SettleInventory), publisher).await
}
