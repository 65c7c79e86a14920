//! Lambda entry point of `ship-order`; the step itself lives in the library.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // The bus the environment names (AMQP or Kafka) is opened at first use,
    // then reused while the container is warm.
    shared::host::lambda::run(Arc::new(ship_order::ShipOrder)).await
}
