//! The in-process bus of `choreo up`: a topic exchange in memory, one queue
//! per consuming function, each drained by a bounded pool of workers.
//!
//! It keeps nothing across a restart, so it defers outbox bookkeeping: an
//! emitted batch is marked published only once every consumer has handled
//! it, and `choreo up` re-publishes unmarked batches when it starts. A hard
//! kill therefore resumes every saga instead of stranding it.
//!
//! A dead letter is parked in the store (`Store::park_dead_letter`), and
//! only once it is durable does it count as handled, so an event's outbox
//! entry is marked published only when every consumer either handled it or
//! has its dead letter on disk. `choreo dlq list|replay` read and replay
//! those letters from any process: a replay marks the letter `Replaying` in
//! the store, and the bus polls for such letters (every [`REPLAY_POLL`]) and
//! delivers each to its one function again, discarding the letter once it is
//! handled (see `store::dead_letters` for why this needs no other channel).
//!
//! Queues are bounded ([`QUEUE_CAPACITY`] deliveries each), so a burst
//! cannot grow memory without end. A batch is routed all or nothing: when a
//! queue is full the publish fails as unavailable and the outbox keeps the
//! events for `choreo up`'s relay, which tries again a few seconds later.
//! HTTP learns of a saturated bus before storing an order (`has_room`), and
//! answers 503 with `Retry-After` instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::amqp::DeadMessage;
use super::{DeliverySettings, Handover, OutboxRef, PublishError, Publisher, StepObserver, publish_committed};
use crate::contract::choreography::{TERMINAL_EVENTS, consumers_of};
use crate::store::{DeliveryOutcome, LetterState, Store, StoreError, StoredDeadLetter};
use crate::telemetry::step::{note_delivery, run_step};
use crate::{Event, Function, Ports, Step, StepError};

/// How often the bus looks for dead letters whose replay was requested.
pub const REPLAY_POLL: Duration = Duration::from_millis(500);
/// Most replayed letters taken per poll.
const REPLAY_BATCH: usize = 100;
/// Most dead letters `InProcessBus::dead_letters` remembers (the store keeps them all).
const REMEMBERED: usize = 1000;
/// Deliveries each function's queue holds, beyond those being handled.
pub const QUEUE_CAPACITY: usize = 4096;
/// Share of every queue kept free for the events of sagas already under
/// way: a new order is refused when a queue has less room than this, so that
/// steps rarely find the next queue full (their events would then wait in
/// the outbox for the relay).
const HEADROOM_DIVISOR: usize = 4;

/// An event that could not be handled (this run's record of it; the store
/// holds the durable copy).
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
    /// Whether it replays a stored dead letter, discarded once handled.
    replay: bool,
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
    queues: HashMap<Function, mpsc::Sender<Delivery>>,
    /// Each queue's capacity.
    capacity: usize,
    /// Outbox entries whose deliveries are queued or being handled: publishing
    /// one again (the relay, a duplicate step run) would only deliver twice.
    pending: Mutex<HashSet<(Function, String)>>,
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
    /// The last dead letters of this run (tests look at them); durable in the store.
    dead_letters: Mutex<VecDeque<DeadLetter>>,
    /// Replayed letters being delivered, so that a poll does not deliver one twice.
    replaying: Mutex<HashSet<(Function, String)>>,
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
        Self::start_bounded(steps, ports, settings, observer, QUEUE_CAPACITY)
    }

    /// [`InProcessBus::start`] with queues of `capacity` deliveries (at least 1).
    pub fn start_bounded(
        steps: Vec<Arc<dyn Step>>,
        ports: Ports,
        settings: DeliverySettings,
        observer: Option<StepObserver>,
        capacity: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        let mut queues = HashMap::new();
        let mut receivers = Vec::new();
        for step in steps {
            let (sender, receiver) = mpsc::channel(capacity);
            queues.insert(step.function(), sender);
            receivers.push((step, receiver));
        }
        let shared = Arc::new(Shared {
            queues,
            capacity,
            pending: Mutex::new(HashSet::new()),
            ports,
            settings,
            observer,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            dead_letters: Mutex::new(VecDeque::new()),
            replaying: Mutex::new(HashSet::new()),
        });
        let bus = Self { shared };
        for (step, receiver) in receivers {
            tokio::spawn(bus.clone().consume(step, receiver));
        }
        tokio::spawn(poll_replays(Arc::downgrade(&bus.shared)));
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

    /// The dead letters parked during this run (the last [`REMEMBERED`]).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared.dead_letters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
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
        // All or nothing: a slot in every queue first, so that a full queue
        // never leaves a batch half delivered.
        let mut slots = Vec::with_capacity(routes.len());
        for (function, event) in &routes {
            let queue = self.shared.queues.get(function).ok_or_else(|| PublishError::Unroutable {
                event_type: event.event_type().to_string(),
                event_id: event.id.to_string(),
            })?;
            slots.push((queue.try_reserve().map_err(|error| self.refused(*function, &error))?, *event));
        }
        if let Some(origin) = &origin {
            origin.remaining.store(routes.len(), Ordering::SeqCst);
        }
        for (slot, event) in slots {
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
            slot.send(Delivery { event: event.clone(), attempt: 1, origin: origin.clone(), replay: false });
        }
        Ok(routes.len())
    }

    /// Why a queue refused a delivery.
    fn refused<T>(&self, function: Function, error: &TrySendError<T>) -> PublishError {
        match error {
            TrySendError::Full(_) => PublishError::Unavailable(format!(
                "the in-process queue of {function} is full ({} deliveries); the outbox keeps the events",
                self.shared.capacity
            )),
            TrySendError::Closed(_) => PublishError::Unavailable("the in-process bus is shutting down".into()),
        }
    }

    /// Queues one delivery if there is room, without waiting.
    fn enqueue(&self, function: Function, delivery: Delivery) -> Result<(), PublishError> {
        let queue = self.shared.queues.get(&function).ok_or_else(|| PublishError::Unroutable {
            event_type: delivery.event.event_type().to_string(),
            event_id: delivery.event.id.to_string(),
        })?;
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        queue.try_send(delivery).map_err(|error| {
            self.finished();
            self.refused(function, &error)
        })
    }

    fn finished(&self) {
        if self.shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.idle.notify_waiters();
        }
    }

    async fn consume(self, step: Arc<dyn Step>, mut queue: mpsc::Receiver<Delivery>) {
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
        match run_step(step, event, &self.shared.ports).await {
            Ok(emitted) => {
                if let Some(StepObserver(observe)) = &self.shared.observer {
                    observe(function, event, &emitted);
                }
                if !emitted.is_empty() {
                    let origin = OutboxRef { function, key: event.id.to_string() };
                    let store = &*self.shared.ports.store;
                    if let Err(error) = publish_committed(store, self, &origin, &emitted).await {
                        // A full queue or a topology error; the outbox keeps
                        // the events and the relay tries again.
                        tracing::warn!(order_id = %event.subject, trace_id = event.trace_id(), %error, step = %function, "could not route emitted events; the outbox keeps them");
                    }
                }
            }
            Err(error) if error.is_retryable() && delivery.attempt <= self.shared.settings.max_retries => {
                let delay = self.shared.settings.retry_delay(delivery.attempt);
                tracing::warn!(order_id = %event.subject, trace_id = event.trace_id(), step = %function, %error, attempt = delivery.attempt, ?delay, "retrying");
                let bus = self.clone();
                let retry = Delivery { attempt: delivery.attempt + 1, ..delivery };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    // Still counted in flight: the retry takes over this delivery.
                    // Waiting for room is safe here: this task is no worker.
                    if let Some(queue) = bus.shared.queues.get(&function)
                        && queue.send(retry).await.is_ok()
                    {
                        return;
                    }
                    bus.finished();
                });
                return;
            }
            Err(error) => {
                if error.is_retryable() {
                    // Out of retries (a permanent failure is noted by `run_step`).
                    let detail = error.to_string();
                    note_delivery(&self.shared.ports, function, event, DeliveryOutcome::DeadLettered, detail).await;
                }
                if let Err(store_error) = self.dead_letter(function, &delivery, &error).await {
                    // Not durable, so not handled: the entry stays in the
                    // outbox (a replayed letter stays `Replaying`) and is
                    // delivered again, at the next start or the next poll.
                    tracing::error!(order_id = %event.subject, trace_id = event.trace_id(), step = %function, %error, %store_error, "could not park a dead letter; its event will be delivered again");
                    if let Some(batch) = &delivery.origin {
                        // Never settled now: let the relay publish it again.
                        self.unpend(&batch.origin);
                    }
                    self.end_replay(function, &delivery, false).await;
                    self.finished();
                    return;
                }
                // Parked again (with its new error), so no longer replaying.
                self.end_replay(function, &delivery, false).await;
                self.settle(delivery.origin).await;
                self.finished();
                return;
            }
        }
        self.end_replay(function, &delivery, true).await;
        self.settle(delivery.origin).await;
        self.finished();
    }

    /// A replayed letter's delivery is over: once `handled`, the letter
    /// leaves the store; either way it leaves the set of letters in hand.
    async fn end_replay(&self, function: Function, delivery: &Delivery, handled: bool) {
        if !delivery.replay {
            return;
        }
        let event_id = delivery.event.id.to_string();
        if handled && let Err(error) = self.shared.ports.store.discard_dead_letter(function, &event_id).await {
            // It stays `Replaying`: the next poll delivers it again and the step dedupes.
            tracing::warn!(step = %function, event_id, %error, "could not discard a replayed dead letter");
        }
        self.shared.replaying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&(function, event_id));
    }

    /// Delivers the letters whose replay was requested and that are not in
    /// hand already, each to its one function, as a first attempt.
    async fn deliver_replays(&self) -> Result<usize, StoreError> {
        let letters = self.shared.ports.store.dead_letters(LetterState::Replaying, REPLAY_BATCH).await?;
        let mut delivered = 0;
        for letter in letters {
            let key = (letter.function, letter.event.id.to_string());
            if !self.shared.replaying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key.clone()) {
                continue;
            }
            let delivery = Delivery { event: letter.event, attempt: 1, origin: None, replay: true };
            tracing::info!(step = %letter.function, event_id = key.1, "replaying a dead letter");
            if self.enqueue(letter.function, delivery).is_err() {
                self.shared.replaying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&key);
                continue;
            }
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Parks the delivery's event in the store as `function`'s dead letter;
    /// answers once it is durable.
    async fn dead_letter(&self, function: Function, delivery: &Delivery, error: &StepError) -> Result<(), StoreError> {
        let event = &delivery.event;
        tracing::error!(order_id = %event.subject, trace_id = event.trace_id(), step = %function, event = %event.event_type(), %error, "dead-lettered");
        let letter =
            StoredDeadLetter { function, event: event.clone(), error: error.to_string(), attempts: delivery.attempt };
        self.shared.ports.store.park_dead_letter(&letter).await?;
        let mut remembered = self.shared.dead_letters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if remembered.len() == REMEMBERED {
            remembered.pop_front();
        }
        remembered.push_back(DeadLetter { function, event: event.clone(), error: error.to_string() });
        Ok(())
    }

    /// Marks the batch published once its last delivery is handled.
    async fn settle(&self, origin: Option<Arc<PendingBatch>>) {
        let Some(batch) = origin else { return };
        if batch.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let store = &self.shared.ports.store;
            if let Err(error) = store.mark_published(batch.origin.function, &batch.origin.key).await {
                // Harmless: the relay re-publishes the batch and consumers dedupe.
                tracing::warn!(%error, "could not mark an outbox entry published");
            }
            self.unpend(&batch.origin);
        }
    }

    fn unpend(&self, origin: &OutboxRef) {
        let key = (origin.function, origin.key.clone());
        self.shared.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&key);
    }
}

/// Polls the store for replayed dead letters while the bus lives.
async fn poll_replays(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(REPLAY_POLL).await;
        let Some(shared) = shared.upgrade() else { return };
        if let Err(error) = (InProcessBus { shared }).deliver_replays().await {
            tracing::warn!(%error, "could not read the dead letters to replay; trying again");
        }
    }
}

/// A stored dead letter as `choreo dlq list` prints it, the same fields as
/// a RabbitMQ dead letter.
pub fn dead_message(letter: &StoredDeadLetter) -> DeadMessage {
    DeadMessage {
        function: letter.function.name().to_owned(),
        message_id: Some(letter.event.id.to_string()),
        event_type: Some(letter.event.event_type().to_string()),
        order_id: Some(letter.event.subject.to_string()),
        error: Some(letter.error.clone()),
        attempts: Some(i64::from(letter.attempts)),
        body: String::from_utf8_lossy(&letter.event.to_json()).into_owned(),
    }
}

/// The parked dead letters of the in-process bus, at most `limit` per function.
pub async fn list_stored_dead_letters(store: &dyn Store, limit: usize) -> Result<Vec<DeadMessage>, StoreError> {
    let functions = Function::consumers().count();
    let letters = store.dead_letters(LetterState::Parked, limit.saturating_mul(functions)).await?;
    let mut shown: HashMap<Function, usize> = HashMap::new();
    Ok(letters
        .iter()
        .filter(|letter| {
            let count = shown.entry(letter.function).or_default();
            *count += 1;
            *count <= limit
        })
        .map(dead_message)
        .collect())
}

#[async_trait]
impl Publisher for InProcessBus {
    async fn publish(&self, origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError> {
        let key = (origin.function, origin.key.clone());
        if !self.shared.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key) {
            // Its deliveries are under way; their end settles the entry.
            return Ok(Handover::Deferred);
        }
        let batch = Arc::new(PendingBatch { origin: origin.clone(), remaining: AtomicUsize::new(usize::MAX) });
        match self.route(events, Some(batch)) {
            Ok(0) => {
                self.unpend(origin);
                Ok(Handover::Confirmed)
            }
            Ok(_) => Ok(Handover::Deferred),
            Err(error) => {
                self.unpend(origin);
                Err(error)
            }
        }
    }

    /// Room for a new saga: every queue has more than its headroom free.
    fn has_room(&self) -> bool {
        let headroom = self.shared.capacity / HEADROOM_DIVISOR;
        self.shared.queues.values().all(|queue| queue.capacity() > headroom)
    }
}
