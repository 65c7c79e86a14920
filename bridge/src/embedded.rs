//! `choreo up`: every function linked into one process around a bus, the
//! HTTP API on a local port, SQLite underneath.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shared::Ports;
use shared::bus::{Publisher, RelayError, relay_outbox};
use shared::ports::{SeedStock, Store, StoreError};
use shared::sqlite::SqliteStore;
use shared::step::ShipCountries;
use tokio::net::TcpListener;

use crate::inprocess::{BusSettings, InProcessBus};

/// The catalog `choreo up` seeds a new database with when no `--inventory` is given.
pub const DEFAULT_CATALOG: &str = include_str!("../../infra/inventory.seed.json");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("inventory file {path}: {error}")]
    Catalog { path: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Broker(String),
    #[error("re-publishing the outbox failed: {0}")]
    Relay(#[from] RelayError),
}

/// Reads a catalog (`[{"sku","available","max_replenish"}]`), naming the file in errors.
pub fn parse_catalog(path: &str, text: &str) -> Result<Vec<SeedStock>, StartError> {
    serde_json::from_str(text).map_err(|error| StartError::Catalog { path: path.to_owned(), error: error.to_string() })
}

#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    pub db: PathBuf,
    pub catalog: Vec<SeedStock>,
    pub ship_countries: ShipCountries,
    pub bus: BusSettings,
}

/// A running embedded system.
pub struct Embedded {
    pub store: Arc<dyn Store>,
    pub bus: InProcessBus,
    pub router: Router,
}

impl Embedded {
    pub async fn start(config: EmbeddedConfig) -> Result<Self, StartError> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.db)?);
        let seeded = store.seed_if_empty(&config.catalog).await?;
        if seeded > 0 {
            tracing::info!(skus = seeded, db = %config.db.display(), "seeded a new inventory");
        }
        let ports = Ports { store: Arc::clone(&store), ship_countries: config.ship_countries };
        let bus = InProcessBus::start(crate::steps::all(), ports, config.bus);
        // Sagas a previous run left mid-way carry on from their last committed step.
        let resumed = relay_outbox(&*store, &bus, Duration::ZERO).await?;
        if resumed > 0 {
            tracing::info!(events = resumed, "re-published events a previous run left in the outbox");
        }
        let router = app_router(Arc::clone(&store), Arc::new(bus.clone()));
        Ok(Self { store, bus, router })
    }
}

/// The whole HTTP API: the routes of both HTTP functions, the same routers
/// their Lambda `main`s serve, plus problem+json fallbacks.
pub fn app_router(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>) -> Router {
    let orders = create_order::router(create_order::CreateOrderState { store: Arc::clone(&store), publisher });
    shared::http::with_fallbacks(orders.merge(order_query::router(store)))
}

/// Serves `router` until `shutdown` resolves, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
