//! The in-process bus of `choreo up`: a topic exchange in memory, one queue
//! per consuming function, each drained by a bounded pool of workers.
//!
//! It keeps nothing across a restart, so it defers outbox bookkeeping: an
//! emitted batch is marked published only once every consumer has handled
//! it, and `choreo up` re-publishes unmarked batches when it starts. A hard
//! kill therefore resumes every saga instead of stranding it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::{
    DeliverySettings, Handover, OutboxRef, PublishError, Publisher, StepObserver, log_step, publish_committed,
};
use crate::contract::choreography::{TERMINAL_EVENTS, consumers_of};
use crate::{Event, Function, Ports, Step, StepError};

/// An event that could not be handled.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The function that could not handle it.
    pub function: Function,
    /// The event, as delivered.
    pub event: Event,
    /// The last error.
    pub error: String,
}

struct Delivery {
    /// The event to handle.
    event: Event,
    /// 1 for the first delivery; decides between retry and dead letter.
    attempt: u32,
    /// The outbox batch it belongs to, marked published after its last delivery.
    origin: Option<Arc<PendingBatch>>,
}

/// An outbox entry whose deliveries are still being handled.
struct PendingBatch {
    /// The outbox entry to mark published.
    origin: OutboxRef,
    /// Deliveries of the batch not yet handled.
    remaining: AtomicUsize,
}

struct Shared {
    /// The queue of each consuming function.
    queues: HashMap<Function, mpsc::UnboundedSender<Delivery>>,
    /// What every step is handed.
    ports: Ports,
    /// Workers per queue and the retry policy.
    settings: DeliverySettings,
    /// Told of every handled step (the bench times sagas with it).
    observer: Option<StepObserver>,
    /// Deliveries queued, being handled or waiting for a retry.
    in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero (`InProcessBus::idle`).
    idle: Notify,
    /// Events that failed for good; the bus has no queue to park them in.
    dead_letters: Mutex<Vec<DeadLetter>>,
}

#[derive(Clone)]
pub struct InProcessBus {
    /// State shared by every handle and the worker tasks.
    shared: Arc<Shared>,
}

impl InProcessBus {
    /// Starts one worker pool per step and returns the bus that feeds them.
    pub fn start(
        steps: Vec<Arc<dyn Step>>,
        ports: Ports,
        settings: DeliverySettings,
        observer: Option<StepObserver>,
    ) -> Self {
        let mut queues = HashMap::new();
        let mut receivers = Vec::new();
        for step in steps {
            let (sender, receiver) = mpsc::unbounded_channel();
            queues.insert(step.function(), sender);
            receivers.push((step, receiver));
        }
        let shared = Arc::new(Shared {
            queues,
            ports,
            settings,
            observer,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            dead_letters: Mutex::new(Vec::new()),
        });
        let bus = Self { shared };
        for (step, receiver) in receivers {
            tokio::spawn(bus.clone().consume(step, receiver));
        }
        bus
    }

    /// Waits until no event is queued, being handled or waiting for a retry.
    pub async fn idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared.dead_letters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Routes events to the queues bound to their types, like a topic exchange.
    fn route(&self, events: &[Event], origin: Option<Arc<PendingBatch>>) -> Result<usize, PublishError> {
        let mut routes = Vec::new();
        for event in events {
            let consumers: Vec<Function> = consumers_of(event.event_type()).collect();
            if consumers.is_empty() && !TERMINAL_EVENTS.contains(&event.event_type()) {
                return Err(PublishError::Unroutable {
                    event_type: event.event_type().to_string(),
                    event_id: event.id.to_string(),
                });
            }
            routes.extend(consumers.into_iter().map(|function| (function, event)));
        }
        if let Some(origin) = &origin {
            origin.remaining.store(routes.len(), Ordering::SeqCst);
        }
        for (function, event) in &routes {
            let delivery = Delivery { event: (*event).clone(), attempt: 1, origin: origin.clone() };
            self.enqueue(*function, delivery)?;
        }
        Ok(routes.len())
    }

    fn enqueue(&self, function: Function, delivery: Delivery) -> Result<(), PublishError> {
        let queue = self.shared.queues.get(&function).ok_or_else(|| PublishError::Unroutable {
            event_type: delivery.event.event_type().to_string(),
            event_id: delivery.event.id.to_string(),
        })?;
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        queue.send(delivery).map_err(|_| {
            self.finished();
            PublishError::Unavailable("the in-process bus is shutting down".into())
        })
    }

    fn finished(&self) {
        if self.shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.idle.notify_waiters();
        }
    }

    async fn consume(self, step: Arc<dyn Step>, mut queue: mpsc::UnboundedReceiver<Delivery>) {
        let workers = Arc::new(Semaphore::new(self.shared.settings.concurrency));
        while let Some(delivery) = queue.recv().await {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(permit) = Arc::clone(&workers).acquire_owned().await else { break };
            let (bus, step) = (self.clone(), Arc::clone(&step));
            tokio::spawn(async move {
                bus.handle(&*step, delivery).await;
                drop(permit);
            });
        }
    }

    async fn handle(&self, step: &dyn Step, delivery: Delivery) {
        let function = step.function();
        let event = &delivery.event;
        match step.handle(event, &self.shared.ports).await {
            Ok(emitted) => {
                log_step(function, event, &emitted);
                if let Some(StepObserver(observe)) = &self.shared.observer {
                    observe(function, event, &emitted);
                }
                if !emitted.is_empty() {
                    let origin = OutboxRef { function, key: event.id.to_string() };
                    let store = &*self.shared.ports.store;
                    if let Err(error) = publish_committed(store, self, &origin, &emitted).await {
                        // Only a topology error gets here; the outbox keeps the events.
                        tracing::error!(%error, step = %function, "could not route emitted events");
                    }
                }
            }
            Err(error) if error.is_retryable() && delivery.attempt <= self.shared.settings.max_retries => {
                let delay = self.shared.settings.retry_delay(delivery.attempt);
                tracing::warn!(order_id = %event.subject, step = %function, %error, attempt = delivery.attempt, ?delay, "retrying");
                let bus = self.clone();
                let retry = Delivery { attempt: delivery.attempt + 1, ..delivery };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    // Still counted in flight: the retry takes over this delivery.
                    if let Some(queue) = bus.shared.queues.get(&function)
                        && queue.send(retry).is_ok()
                    {
                        return;
                    }
                    bus.finished();
                });
                return;
            }
            Err(error) => self.dead_letter(function, event, &error),
        }
        self.settle(delivery.origin).await;
        self.finished();
    }

    fn dead_letter(&self, function: Function, event: &Event, error: &StepError) {
        tracing::error!(order_id = %event.subject, step = %function, event = %event.event_type(), %error, "dead-lettered");
        let letter = DeadLetter { function, event: event.clone(), error: error.to_string() };
        self.shared.dead_letters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(letter);
    }

    /// Marks the batch published once its last delivery is handled.
    async fn settle(&self, origin: Option<Arc<PendingBatch>>) {
        let Some(batch) = origin else { return };
        if batch.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let store = &self.shared.ports.store;
            if let Err(error) = store.mark_published(batch.origin.function, &batch.origin.key).await {
                // Harmless: the batch is re-published at the next start and consumers dedupe.
                tracing::warn!(%error, "could not mark an outbox entry published");
            }
        }
    }
}

#[async_trait]
impl Publisher for InProcessBus {
    async fn publish(&self, origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError> {
        let batch = Arc::new(PendingBatch { origin: origin.clone(), remaining: AtomicUsize::new(usize::MAX) });
        match self.route(events, Some(batch))? {
            0 => Ok(Handover::Confirmed),
            _ => Ok(Handover::Deferred),
        }
    }
}
