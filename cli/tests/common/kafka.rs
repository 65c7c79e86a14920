//! `choreo up --kafka` in this process, on a broker of the test's own
//! ([`KafkaBroker`]), for the `kafka` tests.

use std::path::Path;
use std::sync::Arc;

use choreo::client::Client;
use choreo::up::KafkaSystem;
use shared::bus::DeliverySettings;
use shared::bus::kafka::{KafkaLink, KafkaSettings, list_dead_records};
use shared::store::{SeedStock, Store};
pub use shared::testkit::kafka::KafkaBroker;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{init_logging, serve_locally, up_config};

/// The system and its HTTP API on a free port.
pub struct OnKafka {
    pub store: Arc<dyn Store>,
    pub client: Client,
    pub link: Arc<KafkaLink>,
    system: KafkaSystem,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
}

/// Settings for `broker` whose consumer groups are named `<group_prefix><function>`.
pub fn kafka_settings(broker: &KafkaBroker, group_prefix: &str) -> KafkaSettings {
    // Few partitions: a test's load is small, and each is a worker and a fetch.
    KafkaSettings {
        partitions: 4,
        group_prefix: group_prefix.to_owned(),
        ..KafkaSettings::plaintext(&broker.bootstrap)
    }
}

impl OnKafka {
    pub async fn start(kafka: KafkaSettings, db: &Path, catalog: &[SeedStock], settings: DeliverySettings) -> Self {
        init_logging();
        let config = up_config(db, catalog, settings);
        let deadline = shared::saga::DEFAULT_SAGA_DEADLINE;
        let system = KafkaSystem::start(config, kafka, deadline).await.expect("choreo up --kafka starts");
        let (client, stop_http, http) = serve_locally(system.router.clone()).await;
        let (store, link) = (Arc::clone(&system.store), Arc::clone(&system.link));
        Self { store, client, link, system, stop_http, http }
    }

    /// Stops the HTTP API, then the consumers (which finish the records in hand and commit).
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        self.system.shutdown().await;
    }
}

/// Every dead letter of every function, as `(function, event type)`.
pub async fn dead_letters(link: &KafkaLink) -> Vec<(String, Option<String>)> {
    let letters = list_dead_records(link, 1000).await.expect("the dead-letter topics read");
    letters.into_iter().map(|letter| (letter.function, letter.event_type)).collect()
}
