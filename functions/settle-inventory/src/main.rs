//! Lambda entry point of `settle-inventory`; the step itself lives in the library.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::lambda::run(std::sync::Arc::new(settle_inventory::SettleInventory), None).await
}
