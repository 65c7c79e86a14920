//! The outbox relay on each store (SQLite on a temporary file, DynamoDB on
//! moto at `MOTO_URL`, see `scripts/with-moto`): every entry is handled on
//! its own, poison entries are set aside for good, and the outbox is read
//! in pages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use shared::bus::{Handover, OutboxRef, PublishError, Publisher, RelayReport, relay_outbox, relay_outbox_paged};
use shared::contract::domain::OrderId;
use shared::store::dynamodb::{DynamoStore, TABLES};
use shared::store::sqlite::SqliteStore;
use shared::store::{Commit, CommitOutcome, Store};
use shared::testkit::{event, item, order_created};
use shared::{Event, Function, Payload};
use uuid::Uuid;

/// Runs each check on SQLite and on DynamoDB (moto).
macro_rules! on_every_store {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("temporary directory");
                    let store = shared::store::sqlite::SqliteStore::open(&dir.path().join("choreo.db")).expect("open");
                    super::$check(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, drop_tables) = super::dynamodb_store().await;
                    super::$check(store).await;
                    drop_tables.await;
                }
            )*
        }
    };
}

on_every_store! {
    a_poison_entry_amid_good_ones_is_set_aside_and_the_good_ones_published,
    more_entries_than_a_page_are_all_published_past_failing_ones,
    repeated_transient_failures_end_the_sweep_early_and_set_nothing_aside,
}

// ---------------------------------------------------------------- fixtures

/// A publisher that refuses some entries: `poison` ones as unroutable (a
/// permanent failure), `away` ones as unavailable (transient); it records
/// how often each entry was offered.
#[derive(Default)]
struct Picky {
    poison: HashSet<String>,
    away: HashSet<String>,
    /// Every key refused as unavailable, whatever it is.
    all_away: bool,
    offered: Mutex<HashMap<String, usize>>,
}

impl Picky {
    fn offered(&self, key: &str) -> usize {
        self.offered.lock().expect("lock").get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Publisher for Picky {
    async fn publish(&self, origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError> {
        *self.offered.lock().expect("lock").entry(origin.key.clone()).or_default() += 1;
        if self.poison.contains(&origin.key) {
            let event = &events[0];
            return Err(PublishError::Unroutable {
                event_type: event.event_type().as_str().to_owned(),
                event_id: event.id.to_string(),
            });
        }
        if self.all_away || self.away.contains(&origin.key) {
            return Err(PublishError::Unavailable("broker away".to_owned()));
        }
        Ok(Handover::Confirmed)
    }
}

/// Commits one outbox entry (one `order.created`) under each key.
async fn outbox(store: &Arc<dyn Store>, keys: &[String]) {
    for key in keys {
        let emitted = vec![event(OrderId::new(), Payload::OrderCreated(order_created(vec![item("A-1", 1)])))];
        let commit = Commit { function: Function::CreateOrder, key: key.clone(), writes: vec![], emitted };
        assert_eq!(store.commit(commit).await.expect("commit"), CommitOutcome::Committed);
    }
    // The relay takes entries committed strictly before now.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("entry-{index:03}")).collect()
}

async fn left_in_outbox(store: &Arc<dyn Store>) -> Vec<String> {
    let entries = store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox");
    let mut keys: Vec<String> = entries.into_iter().map(|entry| entry.key).collect();
    keys.sort();
    keys
}

// ---------------------------------------------------------------- checks

async fn a_poison_entry_amid_good_ones_is_set_aside_and_the_good_ones_published(store: Arc<dyn Store>) {
    // GIVEN five outbox entries, the middle one unroutable
    let all = keys(5);
    outbox(&store, &all).await;
    let publisher = Picky { poison: HashSet::from([all[2].clone()]), ..Picky::default() };

    // WHEN the relay sweeps
    let report = relay_outbox(&*store, &publisher, Duration::ZERO).await.expect("the sweep runs");

    // THEN the four good ones are published, the poison one set aside, and the outbox is empty
    assert_eq!(report, RelayReport { published: 4, events: 4, set_aside: 1, failed: 0, gave_up: false });
    assert_eq!(left_in_outbox(&store).await, Vec::<String>::new());
    // AND the next sweep does not offer it again
    let again = relay_outbox(&*store, &publisher, Duration::ZERO).await.expect("the sweep runs");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(publisher.offered(&all[2]), 1);
}

async fn more_entries_than_a_page_are_all_published_past_failing_ones(store: Arc<dyn Store>) {
    // GIVEN 25 entries, the first two of which the broker keeps refusing
    let all = keys(25);
    outbox(&store, &all).await;
    let publisher = Picky { away: HashSet::from([all[0].clone(), all[1].clone()]), ..Picky::default() };

    // WHEN the relay sweeps in pages of 10
    let report = relay_outbox_paged(&*store, &publisher, Duration::ZERO, 10).await.expect("the sweep runs");

    // THEN every other entry is published, each once, and the two wait for the next sweep
    assert_eq!(report, RelayReport { published: 23, events: 23, set_aside: 0, failed: 2, gave_up: false });
    assert!(all.iter().all(|key| publisher.offered(key) == 1), "{:?}", publisher.offered.lock().expect("lock"));
    assert_eq!(left_in_outbox(&store).await, all[..2].to_vec());
}

async fn repeated_transient_failures_end_the_sweep_early_and_set_nothing_aside(store: Arc<dyn Store>) {
    // GIVEN ten entries and a broker that is away
    let all = keys(10);
    outbox(&store, &all).await;
    let publisher = Picky { all_away: true, ..Picky::default() };

    // WHEN the relay sweeps
    let report = relay_outbox(&*store, &publisher, Duration::ZERO).await.expect("the sweep runs");

    // THEN it stops after a few failures in a row, and every entry is still in the outbox
    assert_eq!(report, RelayReport { published: 0, events: 0, set_aside: 0, failed: 3, gave_up: true });
    assert_eq!(left_in_outbox(&store).await, all);
}

/// An entry whose stored events no longer decode is set aside (SQLite: the
/// row is written by hand, as an older or broken writer might have left it).
#[tokio::test]
async fn an_undecodable_entry_is_set_aside_and_the_rest_published() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("choreo.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open"));
    let good = keys(2);
    outbox(&store, &good).await;
    let raw = rusqlite::Connection::open(&path).expect("open the file");
    raw.execute(
        "INSERT INTO processed (function, key, emitted, published, committed_at) VALUES
         ('create-order', 'garbled', 'not json', 0, 1), ('retired-function', 'orphan', '[]', 0, 2)",
        [],
    )
    .expect("write broken rows");

    let report = relay_outbox(&*store, &Picky::default(), Duration::ZERO).await.expect("the sweep runs");

    assert_eq!(report, RelayReport { published: 2, events: 2, set_aside: 2, failed: 0, gave_up: false });
    assert_eq!(left_in_outbox(&store).await, Vec::<String>::new());
    let reasons: Vec<(String, String)> = raw
        .prepare("SELECT key, reason FROM set_aside ORDER BY key")
        .and_then(|mut statement| statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect())
        .expect("read the set-aside reasons");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].0 == "garbled" && reasons[0].1.contains("do not decode"), "{reasons:?}");
    assert!(reasons[1].0 == "orphan" && reasons[1].1.contains("unknown function"), "{reasons:?}");
}

// ---------------------------------------------------------------- DynamoDB on moto

/// A `DynamoStore` on moto in fresh tables, and the future that drops them.
async fn dynamodb_store() -> (Arc<dyn Store>, impl std::future::Future<Output = ()>) {
    let url = std::env::var("MOTO_URL").ok().filter(|url| !url.is_empty());
    let url = url.unwrap_or_else(|| "http://127.0.0.1:5000".to_owned());
    let credentials = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "relay-test");
    let config = shared::config::with_http_client(aws_config::defaults(aws_config::BehaviorVersion::latest()))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(&url)
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let prefix = format!("r{}-", &Uuid::new_v4().simple().to_string()[..12]);
    let store = DynamoStore::new(client.clone(), prefix.clone());
    store
        .create_tables()
        .await
        .unwrap_or_else(|error| panic!("create tables on moto at {url} (start it with scripts/with-moto): {error}"));
    let drop_tables = async move {
        for table in &TABLES {
            let _ = client.delete_table().table_name(table.name(&prefix)).send().await;
        }
    };
    (Arc::new(store), drop_tables)
}
