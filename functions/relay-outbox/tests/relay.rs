//! One invocation of `relay-outbox` publishes what is stranded in the outbox,
//! once, and leaves entries younger than the grace period to their step.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use relay_outbox::{ConfigError, DEFAULT_GRACE, grace_from, pass_once, relay_once, saga_deadline_from};
use serde_json::json;
use shared::bus::{Handover, OutboxRef, PublishError, Publisher};
use shared::contract::domain::OrderId;
use shared::store::{Commit, CommitOutcome, Store};
use shared::testkit::{TestStore, event, item, order_created, payloads};
use shared::{Event, Function, Payload};

/// A broker that confirms everything and remembers what it was given.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

#[async_trait]
impl Publisher for Recorder {
    async fn publish(&self, _origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError> {
        self.0.lock().expect("recorder lock").extend_from_slice(events);
        Ok(Handover::Confirmed)
    }
}

/// A broker that refuses one event as unroutable (a poison entry) or is away altogether.
enum Refusing {
    Unroutable(uuid::Uuid),
    Away,
}

#[async_trait]
impl Publisher for Refusing {
    async fn publish(&self, _origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError> {
        match self {
            Self::Unroutable(poison) if events.iter().any(|event| event.id == *poison) => {
                Err(PublishError::Unroutable { event_type: "order.created".to_owned(), event_id: poison.to_string() })
            }
            Self::Unroutable(_) => Ok(Handover::Confirmed),
            Self::Away => Err(PublishError::Unavailable("connection refused".to_owned())),
        }
    }
}

/// GIVEN an order accepted while the broker was away: committed, never published.
async fn stranded_order(store: &TestStore) -> Event {
    let created = event(OrderId::new(), Payload::OrderCreated(order_created(vec![item("WIDGET-1", 1)])));
    let commit = Commit {
        function: Function::CreateOrder,
        key: created.id.to_string(),
        writes: vec![],
        emitted: vec![created.clone()],
    };
    assert_eq!(store.store.commit(commit).await.expect("commit"), CommitOutcome::Committed);
    // The relay takes entries committed strictly before now minus the grace.
    tokio::time::sleep(Duration::from_millis(5)).await;
    created
}

#[tokio::test]
async fn one_pass_publishes_a_stranded_event_once() {
    let store = TestStore::with_stock(&[("WIDGET-1", 10, 10)]).await;
    let created = stranded_order(&store).await;
    let broker = Recorder::default();

    let first = relay_once(&*store.store, &broker, Duration::ZERO).await.expect("first pass");
    let second = relay_once(&*store.store, &broker, Duration::ZERO).await.expect("second pass");

    assert_eq!(first, json!({ "published": 1, "events": 1, "set_aside": 0 }));
    assert_eq!(
        second,
        json!({ "published": 0, "events": 0, "set_aside": 0 }),
        "the first pass marks the entry published"
    );
    let sent = broker.0.lock().expect("recorder lock").clone();
    assert_eq!(sent, vec![created]);
}

#[tokio::test]
async fn entries_younger_than_the_grace_period_are_left_to_their_step() {
    let store = TestStore::with_stock(&[("WIDGET-1", 10, 10)]).await;
    stranded_order(&store).await;
    let broker = Recorder::default();

    let pass = relay_once(&*store.store, &broker, Duration::from_secs(3600)).await.expect("pass");

    assert_eq!(pass, json!({ "published": 0, "events": 0, "set_aside": 0 }));
    assert!(broker.0.lock().expect("recorder lock").is_empty());
}

#[test]
fn the_grace_period_is_whole_seconds_or_the_default() {
    assert_eq!(grace_from(None), Ok(DEFAULT_GRACE));
    assert_eq!(grace_from(Some(" ")), Ok(DEFAULT_GRACE));
    assert_eq!(grace_from(Some("90")), Ok(Duration::from_secs(90)));
    assert_eq!(grace_from(Some("1m")), Err(ConfigError::Grace("1m".to_owned())));
}

#[tokio::test]
async fn a_poison_entry_is_set_aside_and_the_rest_is_published() {
    let store = TestStore::with_stock(&[("WIDGET-1", 10, 10)]).await;
    let poison = stranded_order(&store).await;
    stranded_order(&store).await;

    let pass = relay_once(&*store.store, &Refusing::Unroutable(poison.id), Duration::ZERO).await.expect("pass");
    let next = relay_once(&*store.store, &Recorder::default(), Duration::ZERO).await.expect("next pass");

    assert_eq!(pass, json!({ "published": 1, "events": 1, "set_aside": 1 }));
    assert_eq!(next, json!({ "published": 0, "events": 0, "set_aside": 0 }), "the poison entry left the outbox");
}

#[tokio::test]
async fn a_pass_that_leaves_entries_behind_fails_the_invocation() {
    let store = TestStore::with_stock(&[("WIDGET-1", 10, 10)]).await;
    stranded_order(&store).await;

    let error = relay_once(&*store.store, &Refusing::Away, Duration::ZERO).await.expect_err("the broker is away");

    assert!(error.to_string().contains("1 outbox entries could not be published"), "{error}");
    let later = relay_once(&*store.store, &Recorder::default(), Duration::ZERO).await.expect("later pass");
    assert_eq!(later["published"], 1, "the entry stayed in the outbox");
}

#[tokio::test]
async fn each_pass_fires_the_deadline_of_an_overdue_order_once() {
    // GIVEN an order accepted and published, then left unfinished past a 1 ms deadline
    let store = TestStore::with_stock(&[("WIDGET-1", 10, 10)]).await;
    let created = event(OrderId::new(), Payload::OrderCreated(order_created(vec![item("WIDGET-1", 1)])));
    store.given_order(&created).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let broker = Recorder::default();
    let deadline = Duration::from_millis(1);

    // WHEN two passes run
    let first = pass_once(&*store.store, &broker, Duration::ZERO, deadline).await.expect("first pass");
    let second = pass_once(&*store.store, &broker, Duration::ZERO, deadline).await.expect("second pass");

    // THEN the first publishes its order.deadline_reached, from saga-deadline, the second nothing more
    assert_eq!((first["deadlines_fired"].clone(), first["overdue"].clone()), (json!(1), json!(1)));
    assert_eq!((second["deadlines_fired"].clone(), second["published"].clone()), (json!(0), json!(0)));
    let sent = broker.0.lock().expect("recorder lock").clone();
    let [Payload::OrderDeadlineReached(reached)] = &payloads(&sent)[..] else { panic!("one deadline: {sent:?}") };
    assert_eq!(reached.items, vec![item("WIDGET-1", 1)]);
    assert_eq!((sent[0].subject, sent[0].source.as_str()), (created.subject, "/functions/saga-deadline"));
}

#[test]
fn the_saga_deadline_defaults_to_fifteen_minutes() {
    assert_eq!(saga_deadline_from(None), Ok(Duration::from_secs(900)));
    assert_eq!(saga_deadline_from(Some("2h")), Ok(Duration::from_secs(7200)));
    assert!(saga_deadline_from(Some("soon")).is_err());
}
