//! `choreo up`: every function linked into one process around a bus, the
//! HTTP API on a local port, the configured store underneath (SQLite, or
//! DynamoDB with `CHOREO_STORE=dynamodb`). The bus is in-process
//! (`embedded`) or RabbitMQ (`over_amqp`); both share what is here.

mod background;
mod embedded;
mod limits;
mod over_amqp;
mod over_kafka;

use self::background::Background;
pub use self::embedded::Embedded;
pub use self::limits::{HttpLimits, with_limits};
pub use self::over_amqp::{AmqpSystem, LinkedSteps};
pub use self::over_kafka::KafkaSystem;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use shared::bus::{DeliverySettings, Publisher, RelayError, StepObserver};
use shared::config::{ConfigError, StoreSettings};
use shared::host::auth::{ApiAuth, with_auth};
use shared::step::ShipCountries;
use shared::store::counting::{CountingStore, StoreCounts};
use shared::store::{SeedStock, Store, StoreError};
use tokio::net::TcpListener;

/// The catalog `choreo up` seeds a new database with when no `--inventory` is given.
pub const DEFAULT_CATALOG: &str = include_str!("../../../infra/inventory.seed.json");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("inventory file {path}: {error}")]
    Catalog { path: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Broker(String),
    #[error("re-publishing the outbox failed: {0}")]
    Relay(#[from] RelayError),
}

/// Reads a catalog (`[{"sku","available","max_replenish"}]`), naming the file in errors.
pub fn parse_catalog(path: &str, text: &str) -> Result<Vec<SeedStock>, StartError> {
    serde_json::from_str(text).map_err(|error| StartError::Catalog { path: path.to_owned(), error: error.to_string() })
}

/// What `choreo up` runs with, whichever bus carries the events.
#[derive(Clone, Debug)]
pub struct UpConfig {
    /// The store every step shares: SQLite (the file is created when new) or
    /// DynamoDB (missing tables are created); seeded when its stock is empty.
    pub store: StoreSettings,
    /// The catalog an empty store is seeded with.
    pub catalog: Vec<SeedStock>,
    /// Where `ship-order` delivers.
    pub ship_countries: ShipCountries,
    /// How each function's queue is consumed and retried.
    pub delivery: DeliverySettings,
    /// Told of every handled step (`choreo bench` times sagas with it).
    pub observer: Option<StepObserver>,
    /// Where the store's reads and writes are counted (`choreo bench` reports them per saga).
    pub store_counts: Option<Arc<StoreCounts>>,
}

/// Opens the store `choreo up` runs on, creating missing DynamoDB tables,
/// and seeds it when its stock is empty.
async fn open_seeded_store(config: &UpConfig) -> Result<Arc<dyn Store>, StartError> {
    let mut store = config.store.open_creating_tables().await?;
    if let Some(counts) = &config.store_counts {
        store = Arc::new(CountingStore { inner: store, counts: Arc::clone(counts) });
    }
    let seeded = store.seed_if_empty(&config.catalog).await?;
    if seeded > 0 {
        tracing::info!(skus = seeded, store = %config.store, "seeded a new inventory");
    }
    Ok(store)
}

/// The whole HTTP API: the routes of both HTTP functions, the same routers
/// their Lambda `main`s serve, plus `GET /metrics` (local only: on Lambda the
/// metrics are EMF lines) and problem+json fallbacks, behind the default
/// [`HttpLimits`].
pub fn app_router(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>) -> Router {
    app_router_with_auth(store, publisher, Arc::new(ApiAuth::Open))
}

/// [`app_router`] whose callers `auth` checks (`choreo up --auth jwt`,
/// ARCHITECTURE.md §14.4); the metrics stay open, like a scrape endpoint.
pub fn app_router_with_auth(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>, auth: Arc<ApiAuth>) -> Router {
    let orders = create_order::router(create_order::CreateOrderState { store: Arc::clone(&store), publisher });
    let api = with_auth(orders.merge(order_query::router(store)), auth).route(METRICS_PATH, get(metrics));
    with_limits(shared::host::http::with_fallbacks(api), HttpLimits::default())
}

/// Where `choreo up` serves its metrics (ARCHITECTURE.md §14.5).
pub const METRICS_PATH: &str = "/metrics";

/// The step metrics in Prometheus text format.
async fn metrics() -> impl IntoResponse {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], shared::telemetry::metrics::prometheus_text())
}

/// Serves `router` until `shutdown` resolves, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
