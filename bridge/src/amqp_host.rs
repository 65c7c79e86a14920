//! `choreo up --amqp`: the embedded runner with RabbitMQ instead of the
//! in-process bus. Every function still runs in this process, but events
//! travel through the broker's durable queues, so a restart of either side
//! loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use shared::amqp::{AmqpLink, Handler, QueueSettings, Topology, run_consumers};
use shared::bus::{OutboxRef, publish_committed, relay_outbox};
use shared::ports::Store;
use shared::sqlite::SqliteStore;
use shared::{Event, Function, Ports, Step, StepError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::embedded::{EmbeddedConfig, StartError, app_router};
use crate::inprocess::StepObserver;

/// How often, and after how long, the outbox relay re-publishes events whose
/// first publish failed (the broker was away when an order was accepted).
const RELAY_EVERY: Duration = Duration::from_secs(2);
const RELAY_GRACE: Duration = Duration::from_secs(5);

/// Runs the linked steps for the bus and publishes what they emit.
pub struct LocalSteps {
    steps: HashMap<Function, Arc<dyn Step>>,
    ports: Ports,
    link: Arc<AmqpLink>,
    observer: Option<StepObserver>,
}

impl LocalSteps {
    pub fn new(steps: Vec<Arc<dyn Step>>, ports: Ports, link: Arc<AmqpLink>, observer: Option<StepObserver>) -> Self {
        Self { steps: steps.into_iter().map(|step| (step.function(), step)).collect(), ports, link, observer }
    }
}

#[async_trait]
impl Handler for LocalSteps {
    async fn handle(&self, function: Function, event: &Event) -> Result<Vec<Event>, StepError> {
        let step = self.steps.get(&function).ok_or_else(|| shared::step::not_consumed(function, event))?;
        let emitted = step.handle(event, &self.ports).await?;
        crate::inprocess::log_step(function, event, &emitted);
        let origin = OutboxRef { function, key: event.id.to_string() };
        publish_committed(&*self.ports.store, &*self.link, &origin, &emitted).await?;
        if let Some(StepObserver(observe)) = &self.observer {
            observe(function, event, &emitted);
        }
        Ok(vec![]) // published above, with its outbox entry settled
    }
}

/// A running `choreo up --amqp`.
pub struct AmqpSystem {
    pub store: Arc<dyn Store>,
    pub link: Arc<AmqpLink>,
    pub router: Router,
    shutdown: watch::Sender<bool>,
    consumers: JoinHandle<Result<(), lapin::Error>>,
    relay: JoinHandle<()>,
}

impl AmqpSystem {
    pub async fn start(config: EmbeddedConfig, url: &str, settings: QueueSettings) -> Result<Self, StartError> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.db)?);
        let seeded = store.seed_if_empty(&config.catalog).await?;
        if seeded > 0 {
            tracing::info!(skus = seeded, db = %config.db.display(), "seeded a new inventory");
        }
        let link = AmqpLink::new(url, "choreo-up");
        // Fail fast with a clear message when the broker is not there at start.
        link.declare(&Topology::derive(&settings)).await.map_err(|error| {
            let hint = if error.to_string().contains("PRECONDITION_FAILED") {
                " (its queues were declared with other retry settings: use the same --max-retries and \
                     --retry-delay-ms, or delete the choreo queues)"
            } else {
                ""
            };
            StartError::Broker(format!("cannot set up RabbitMQ at {}: {error}{hint}", redact(url)))
        })?;
        let ports = Ports { store: Arc::clone(&store), ship_countries: config.ship_countries };
        let handler = Arc::new(LocalSteps::new(crate::steps::all(), ports, Arc::clone(&link), config.bus.observer));
        let (shutdown, stop) = watch::channel(false);
        let functions = Function::consumers().collect();
        let consumers = tokio::spawn(run_consumers(Arc::clone(&link), functions, handler, settings, stop.clone()));
        let relay = tokio::spawn(relay_forever(Arc::clone(&store), Arc::clone(&link), stop));
        let router = app_router(Arc::clone(&store), link.clone());
        Ok(Self { store, link, router, shutdown, consumers, relay })
    }

    /// Stops consuming, finishes the messages in hand, closes the connection.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Ok(Err(error)) = self.consumers.await {
            tracing::warn!(%error, "consumers stopped with an error");
        }
        let _ = self.relay.await;
    }
}

/// Re-publishes stranded outbox entries until `stop` turns true.
pub async fn relay_forever(store: Arc<dyn Store>, link: Arc<AmqpLink>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RELAY_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match relay_outbox(&*store, &*link, RELAY_GRACE).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(events = sent, "re-published events from the outbox"),
            Err(error) => tracing::debug!(%error, "outbox relay will try again"),
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
