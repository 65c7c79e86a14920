//! `choreo up` on the in-process bus: nothing to install, nothing kept but
//! the SQLite file (the outbox resumes sagas a previous run left mid-way).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shared::Ports;
use shared::bus::inprocess::InProcessBus;
use shared::bus::{relay_forever, relay_outbox};
use shared::host::auth::ApiAuth;
use shared::store::Store;
use tokio::sync::watch;

use super::{StartError, UpConfig, app_router, app_router_with_auth, open_seeded_store};

/// A running embedded system.
pub struct Embedded {
    /// The store every step shares (tests inspect it).
    pub store: Arc<dyn Store>,
    /// The in-process bus; `idle` drains it.
    pub bus: InProcessBus,
    /// The HTTP API to serve.
    pub router: Router,
    /// Kept so that the relay runs as long as this system (it stops when dropped).
    _relay_stop: watch::Sender<bool>,
}

impl Embedded {
    /// Starts with the default saga deadline (15 minutes).
    pub async fn start(config: UpConfig) -> Result<Self, StartError> {
        Self::start_with_deadline(config, shared::saga::DEFAULT_SAGA_DEADLINE).await
    }

    /// Starts with `saga_deadline`: orders unfinished after it are cancelled
    /// as timed_out (the sweeper runs in this process, ARCHITECTURE.md §7.9).
    pub async fn start_with_deadline(config: UpConfig, saga_deadline: Duration) -> Result<Self, StartError> {
        let store = open_seeded_store(&config).await?;
        let ports = Ports { store: Arc::clone(&store), ship_countries: config.ship_countries };
        let bus = InProcessBus::start(crate::steps::all(), ports, config.delivery, config.observer);
        // Sagas a previous run left mid-way carry on from their last committed step.
        let resumed = relay_outbox(&*store, &bus, Duration::ZERO).await?;
        if resumed.events > 0 {
            tracing::info!(events = resumed.events, "re-published events a previous run left in the outbox");
        }
        // The bus settles its own entries; the relay publishes those a full
        // queue refused (and prunes processed records meanwhile).
        let (relay_stop, stop) = watch::channel(false);
        tokio::spawn(relay_forever(Arc::clone(&store), Arc::new(bus.clone()), stop));
        // The saga-deadline sweeper lives as long as the process, like the bus.
        let publisher = Arc::new(bus.clone());
        let sweep = shared::saga::sweep_forever(Arc::clone(&store), publisher, saga_deadline, std::future::pending());
        tokio::spawn(sweep);
        let router = app_router(Arc::clone(&store), Arc::new(bus.clone()));
        Ok(Self { store, bus, router, _relay_stop: relay_stop })
    }

    /// The same system, its API checking callers with `auth` (ARCHITECTURE.md §14.4).
    pub fn with_auth(self, auth: Arc<ApiAuth>) -> Self {
        let router = app_router_with_auth(Arc::clone(&self.store), Arc::new(self.bus.clone()), auth);
        Self { router, ..self }
    }
}
