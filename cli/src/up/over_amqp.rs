//! `choreo up --amqp`: the embedded runner with RabbitMQ instead of the
//! in-process bus. Every function still runs in this process, but events
//! travel through the broker's durable queues, so a restart of either side
//! loses nothing.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use shared::bus::amqp::{AmqpLink, StepInvoker, Topology, redact, run_consumers};
use shared::bus::{DeliverySettings, OutboxRef, Publisher, StepObserver, publish_committed_soon};
use shared::host::auth::ApiAuth;
use shared::store::{DeliveryOutcome, Store};
use shared::telemetry::run_step;
use shared::telemetry::step::note_delivery;
use shared::{Event, Function, Ports, Step, StepError};

use super::{Background, StartError, UpConfig, app_router, app_router_with_auth, open_seeded_store};

/// The steps linked into this binary, invoked by the consumer runner; each
/// publishes what it emitted itself and settles its outbox entry.
pub struct LinkedSteps {
    /// The step of each consuming function.
    steps: HashMap<Function, Arc<dyn Step>>,
    /// What every step is handed.
    ports: Ports,
    /// Publishes what each step emits (RabbitMQ or Kafka).
    link: Arc<dyn Publisher>,
    /// Told of each handled step (`choreo bench` times sagas with it).
    observer: Option<StepObserver>,
    /// The consumer runner's retries: a retryable failure past them is
    /// dead-lettered, which the timeline is told (ARCHITECTURE.md §14.3).
    max_retries: u32,
}

impl LinkedSteps {
    pub fn new(
        steps: Vec<Arc<dyn Step>>,
        ports: Ports,
        link: Arc<dyn Publisher>,
        observer: Option<StepObserver>,
    ) -> Self {
        let steps = steps.into_iter().map(|step| (step.function(), step)).collect();
        Self { steps, ports, link, observer, max_retries: DeliverySettings::default().max_retries }
    }

    /// The same steps, for a runner that retries `max_retries` times.
    pub fn retrying(self, max_retries: u32) -> Self {
        Self { max_retries, ..self }
    }
}

#[async_trait]
impl StepInvoker for LinkedSteps {
    async fn handle(&self, function: Function, event: &Event) -> Result<Vec<Event>, StepError> {
        let step = self.steps.get(&function).ok_or_else(|| shared::step::not_consumed(function, event))?;
        let emitted = run_step(&**step, event, &self.ports).await?;
        let origin = OutboxRef { function, key: event.id.to_string() };
        publish_committed_soon(&*self.ports.store, &*self.link, &origin, &emitted).await?;
        if let Some(StepObserver(observe)) = &self.observer {
            observe(function, event, &emitted);
        }
        Ok(vec![]) // published above, with its outbox entry settled
    }

    async fn handle_attempt(&self, function: Function, event: &Event, attempt: u32) -> Result<Vec<Event>, StepError> {
        let handled = self.handle(function, event).await;
        if let Err(error) = &handled
            && error.is_retryable()
            && attempt > self.max_retries
        {
            // The runner dead-letters it now (a permanent failure `run_step` noted already).
            let detail = error.to_string();
            note_delivery(&self.ports, function, event, DeliveryOutcome::DeadLettered, detail).await;
        }
        handled
    }
}

/// A running `choreo up --amqp`.
pub struct AmqpSystem {
    /// The store every step shares (tests inspect it).
    pub store: Arc<dyn Store>,
    /// The process's AMQP connection (tests inspect the queues through it).
    pub link: Arc<AmqpLink>,
    /// The HTTP API to serve.
    pub router: Router,
    /// The consumers, the relay and the sweeper.
    background: Background,
}

impl AmqpSystem {
    /// Starts with the default saga deadline (15 minutes).
    pub async fn start(config: UpConfig, url: &str) -> Result<Self, StartError> {
        Self::start_with_deadline(config, url, shared::saga::DEFAULT_SAGA_DEADLINE).await
    }

    /// Starts with `saga_deadline`: orders unfinished after it are cancelled
    /// as timed_out (the sweeper runs in this process, ARCHITECTURE.md §7.9).
    pub async fn start_with_deadline(
        config: UpConfig,
        url: &str,
        saga_deadline: std::time::Duration,
    ) -> Result<Self, StartError> {
        let store = open_seeded_store(&config).await?;
        let settings = config.delivery;
        let link = AmqpLink::new(url, "choreo-up");
        // Fail fast with a clear message when the broker is not there at
        // start; a queue declared with other arguments says how to migrate.
        link.declare(&Topology::derive(&settings))
            .await
            .map_err(|error| StartError::Broker(format!("cannot set up RabbitMQ at {}: {error}", redact(url))))?;
        let ports = Ports { store: Arc::clone(&store), ship_countries: config.ship_countries };
        let steps =
            LinkedSteps::new(crate::steps::all(), ports, Arc::clone(&link) as Arc<dyn Publisher>, config.observer);
        let handler = Arc::new(steps.retrying(settings.max_retries));
        let publisher = Arc::clone(&link) as Arc<dyn Publisher>;
        let consuming = Arc::clone(&link);
        let background = Background::start(&store, &publisher, saga_deadline, move |stop| async move {
            let functions = Function::consumers().collect();
            if let Err(error) = run_consumers(consuming, functions, handler, settings, stop).await {
                tracing::warn!(%error, "consumers stopped with an error");
            }
        });
        let router = app_router(Arc::clone(&store), publisher);
        Ok(Self { store, link, router, background })
    }

    /// The same system, its API checking callers with `auth` (ARCHITECTURE.md §14.4).
    pub fn with_auth(self, auth: Arc<ApiAuth>) -> Self {
        let router = app_router_with_auth(Arc::clone(&self.store), self.link.clone(), auth);
        Self { router, ..self }
    }

    /// Stops consuming, finishes the messages in hand, closes the connection.
    pub async fn shutdown(self) {
        self.background.stop().await;
    }
}
