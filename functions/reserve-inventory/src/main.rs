//! Lambda entry point of `reserve-inventory`; the step itself lives in the library.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::lambda::run(std::sync::Arc::new(reserve_inventory::ReserveInventory), None).await
}
