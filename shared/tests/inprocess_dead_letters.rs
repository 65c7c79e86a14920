//! The in-process bus (`choreo up`) and its dead letters: GIVEN steps that
//! fail for good, WHEN an event is published, THEN its dead letters are in
//! the store before its outbox entry counts as delivered, and a replay
//! requested in the store (as `choreo dlq replay` does from another process)
//! reaches the one function again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use shared::bus::inprocess::{InProcessBus, list_stored_dead_letters};
use shared::bus::{DeliverySettings, OutboxRef, publish_committed};
use shared::contract::choreography::consumers_of;
use shared::contract::domain::OrderId;
use shared::step::ShipCountries;
use shared::store::sqlite::SqliteStore;
use shared::store::{Commit, CommitOutcome, LetterState, Store};
use shared::testkit::{event, sample_payload};
use shared::{Event, EventType, Function, Ports, Step, StepError};

/// A step that fails for good while `failing` is set, and counts its calls.
struct Switchable {
    /// The function it stands in for.
    function: Function,
    /// Whether it fails (permanently) now.
    failing: Arc<AtomicBool>,
    /// Events handled successfully.
    handled: Arc<AtomicUsize>,
}

#[async_trait]
impl Step for Switchable {
    fn function(&self) -> Function {
        self.function
    }

    async fn handle(&self, _event: &Event, _ports: &Ports) -> Result<Vec<Event>, StepError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StepError::Permanent("the test says no".into()));
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }
}

struct System {
    store: Arc<dyn Store>,
    bus: InProcessBus,
    failing: Arc<AtomicBool>,
    handled: Arc<AtomicUsize>,
}

/// A bus over `path` whose every consuming function is a [`Switchable`], failing at first.
fn start(path: &Path) -> System {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path).expect("open the store"));
    let (failing, handled) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0)));
    let steps: Vec<Arc<dyn Step>> = Function::consumers()
        .map(|function| {
            Arc::new(Switchable { function, failing: Arc::clone(&failing), handled: Arc::clone(&handled) })
                as Arc<dyn Step>
        })
        .collect();
    let ports = Ports { store: Arc::clone(&store), ship_countries: ShipCountries::default() };
    let settings = DeliverySettings { max_retries: 0, retry_base: Duration::from_millis(1), ..Default::default() };
    let bus = InProcessBus::start(steps, ports, settings, None);
    System { store, bus, failing, handled }
}

/// Commits an outbox entry emitting `emitted` and publishes it as a step would.
async fn commit_and_publish(system: &System, key: &str, emitted: &Event) {
    let commit =
        Commit { function: Function::CreateOrder, key: key.into(), writes: vec![], emitted: vec![emitted.clone()] };
    assert_eq!(system.store.commit(commit).await.expect("commit"), CommitOutcome::Committed);
    let origin = OutboxRef { function: Function::CreateOrder, key: key.into() };
    publish_committed(&*system.store, &system.bus, &origin, std::slice::from_ref(emitted)).await.expect("published");
    system.bus.idle().await;
}

fn outbox_keys(entries: Vec<shared::store::OutboxEntry>) -> Vec<String> {
    entries.into_iter().map(|entry| entry.key).collect()
}

fn horizon() -> chrono::DateTime<Utc> {
    Utc::now() + Duration::from_secs(60)
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_stored_and_only_then_is_the_event_delivered() {
    // GIVEN every consumer fails for good
    let dir = tempfile::tempdir().expect("temporary directory");
    let system = start(&dir.path().join("choreo.db"));
    let created = event(OrderId::new(), sample_payload(EventType::OrderCreated));

    // WHEN order.created is published
    commit_and_publish(&system, "order-1", &created).await;

    // THEN each consumer's dead letter is in the store, listed as RabbitMQ's are
    let consumers: Vec<Function> = consumers_of(EventType::OrderCreated).collect();
    let letters = list_stored_dead_letters(&*system.store, 10).await.expect("list");
    assert_eq!(letters.len(), consumers.len(), "{letters:#?}");
    for letter in &letters {
        assert_eq!(letter.message_id.as_deref(), Some(created.id.to_string().as_str()));
        assert_eq!(letter.order_id.as_deref(), Some(created.subject.to_string().as_str()));
        assert_eq!(letter.event_type.as_deref(), Some("order.created"));
        assert_eq!(letter.attempts, Some(1));
        assert!(letter.error.as_deref().unwrap_or_default().contains("the test says no"), "{letter:?}");
        assert_eq!(Event::from_json(letter.body.as_bytes()).expect("the body is the event"), created);
    }
    // AND, every consumer having handled it, the entry left the outbox
    assert_eq!(outbox_keys(system.store.unpublished(horizon()).await.expect("outbox")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_whose_dead_letter_cannot_be_stored_stays_in_the_outbox() {
    // GIVEN every consumer fails for good, and the store cannot keep dead letters
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("choreo.db");
    let system = start(&path);
    let sabotage = rusqlite::Connection::open(&path).expect("open the file");
    sabotage.execute_batch("DROP TABLE dead_letters").expect("drop the dead letters");

    // WHEN order.created is published
    let created = event(OrderId::new(), sample_payload(EventType::OrderCreated));
    commit_and_publish(&system, "order-1", &created).await;

    // THEN it was not delivered: its entry stays in the outbox for the next start
    assert_eq!(outbox_keys(system.store.unpublished(horizon()).await.expect("outbox")), ["order-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_requested_in_the_store_reaches_the_one_function_and_discards_the_letter() {
    // GIVEN order.created dead-lettered by each of its consumers
    let dir = tempfile::tempdir().expect("temporary directory");
    let system = start(&dir.path().join("choreo.db"));
    let created = event(OrderId::new(), sample_payload(EventType::OrderCreated));
    commit_and_publish(&system, "order-1", &created).await;
    let consumers: Vec<Function> = consumers_of(EventType::OrderCreated).collect();
    let replayed = consumers[0];

    // WHEN the cause is fixed and another process asks for one function's letter to be replayed
    system.failing.store(false, Ordering::SeqCst);
    let other_process = SqliteStore::open(&dir.path().join("choreo.db")).expect("open the store again");
    assert_eq!(other_process.replay_dead_letters(Some(replayed), None).await.expect("replay"), 1);

    // THEN the running bus delivers it to that function once, and the letter is gone
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while system.handled.load(Ordering::SeqCst) == 0
        || !system.store.dead_letters(LetterState::Replaying, 10).await.expect("list").is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "the replay was not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    system.bus.idle().await;
    tokio::time::sleep(shared::bus::inprocess::REPLAY_POLL * 2).await;
    assert_eq!(system.handled.load(Ordering::SeqCst), 1, "delivered once, to its one function");
    let left: Vec<String> = list_stored_dead_letters(&*system.store, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|letter| letter.function)
        .collect();
    let others: Vec<String> = consumers[1..].iter().map(|function| function.name().to_owned()).collect();
    assert_eq!(left, others, "the other functions' letters stay parked");
}
