//! `choreo up --kafka`: the embedded runner with Kafka instead of the
//! in-process bus. Every function still runs in this process; events travel
//! through the cluster's topics, offsets are committed only after what a
//! record caused is safe, so a restart of either side loses nothing.

use std::sync::Arc;

use axum::Router;
use shared::Function;
use shared::Ports;
use shared::bus::Publisher;
use shared::bus::kafka::{KafkaLink, KafkaSettings, run_kafka_consumers};
use shared::host::auth::ApiAuth;
use shared::store::Store;

use super::{Background, LinkedSteps, StartError, UpConfig, app_router, app_router_with_auth, open_seeded_store};

/// A running `choreo up --kafka`.
pub struct KafkaSystem {
    /// The store every step shares (tests inspect it).
    pub store: Arc<dyn Store>,
    /// The process's Kafka clients.
    pub link: Arc<KafkaLink>,
    /// The HTTP API to serve.
    pub router: Router,
    /// The consumers, the relay and the sweeper.
    background: Background,
}

impl KafkaSystem {
    /// Starts with `saga_deadline` (the sweeper runs in this process, ARCHITECTURE.md §7.9).
    pub async fn start(
        config: UpConfig,
        kafka: KafkaSettings,
        saga_deadline: std::time::Duration,
    ) -> Result<Self, StartError> {
        let store = open_seeded_store(&config).await?;
        let settings = config.delivery;
        let servers = kafka.bootstrap_servers.clone();
        let link = KafkaLink::new(kafka, "choreo-up");
        // Fail fast with a clear message when the cluster is not there at start.
        link.create_topics(&settings)
            .await
            .map_err(|error| StartError::Broker(format!("cannot set up Kafka at {servers}: {error}")))?;
        let publisher = Arc::clone(&link) as Arc<dyn Publisher>;
        let ports = Ports { store: Arc::clone(&store), ship_countries: config.ship_countries };
        let steps = LinkedSteps::new(crate::steps::all(), ports, Arc::clone(&publisher), config.observer);
        let handler = Arc::new(steps.retrying(settings.max_retries));
        let consuming = Arc::clone(&link);
        let background = Background::start(&store, &publisher, saga_deadline, move |stop| {
            run_kafka_consumers(consuming, Function::consumers().collect(), handler, settings, stop)
        });
        let router = app_router(Arc::clone(&store), publisher);
        Ok(Self { store, link, router, background })
    }

    /// The same system, its API checking callers with `auth` (ARCHITECTURE.md §14.4).
    pub fn with_auth(self, auth: Arc<ApiAuth>) -> Self {
        let router = app_router_with_auth(Arc::clone(&self.store), self.link.clone(), auth);
        Self { router, ..self }
    }

    /// Stops consuming, finishes the records in hand, commits, closes.
    pub async fn shutdown(self) {
        self.background.stop().await;
        self.link.close().await;
    }
}
