//! Lambda entry point of `reserve-inventory`; the step itself lives in the library.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // The bus the environment names (AMQP or Kafka) is opened at first use,
    // then reused while the container is warm.
    shared::host::lambda::run(Arc::new(reserve_inventory::ReserveInventory)).await
}
