//! The store conformance suite (ARCHITECTURE.md §8): every adapter of the `Store` port
//! behaves the same. Each check is written once, as an async fn over
//! `Arc<dyn Store>`, and `conformance!` runs it against every adapter:
//! `sqlite::<check>` on a temporary file, `sqlite_made_before::<check>` on a
//! file with the earlier rowid tables, `dynamodb::<check>` on moto's server
//! at `MOTO_URL` (default `http://127.0.0.1:5000`; `scripts/with-moto` starts
//! it), each test in tables of its own prefix. When moto does not answer, the
//! DynamoDB tests fail and say how to start it.
//!
//! Checks read GIVEN (a store) / WHEN (a commit) / THEN (what it answers and
//! what is stored).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use shared::contract::domain::{CancelReason, OrderId, OrderStatus, Sku, units_per_sku};
use shared::contract::events::{InventoryInsufficient, InventoryReserved, SkuUnits};
use shared::step::{Decision, StepError, reaction, run_idempotent};
use shared::store::dynamodb::{DynamoStore, PROCESSED, STOCK, TABLES};
use shared::store::sqlite::SqliteStore;
use shared::store::{
    Commit, CommitOutcome, HistoryEntry, LetterState, OrderRecord, Reservation, ReservationState, SeedStock, Shipment,
    StockDelta, StockLevel, Store, StoreError, StoredDeadLetter, Write,
};
use shared::testkit::aws::{local_sdk_config, moto_serializes_requests, moto_url};
use shared::testkit::{event, item, order_created, pending_order, sku};
use shared::{Event, EventType, Function, Payload};
use tempfile::TempDir;
use uuid::Uuid;

/// Runs each check against each adapter. `check: atomic` marks a check that
/// needs the server to apply concurrent transactions atomically (see
/// `scripts/with-moto`).
macro_rules! conformance {
    (@atomic) => { false };
    (@atomic atomic) => { true };
    ($($check:ident $(: $atomic:ident)?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let subject = super::Subject::sqlite().await;
                    super::$check(Arc::clone(&subject.store)).await;
                }
            )*
            use std::sync::Arc;
        }
        mod sqlite_made_before {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let subject = super::Subject::sqlite_with_rowid_tables().await;
                    super::$check(Arc::clone(&subject.store)).await;
                }
            )*
            use std::sync::Arc;
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let subject = super::Subject::dynamodb(conformance!(@atomic $($atomic)?)).await;
                    super::$check(Arc::clone(&subject.store)).await;
                    subject.drop_tables().await;
                }
            )*
            use std::sync::Arc;
        }
    };
}

conformance! {
    seeds_only_an_empty_store,
    reads_the_stock_of_known_skus_only,
    commits_versioned_writes_with_the_key_and_its_events,
    a_stale_version_conflicts_and_writes_nothing,
    a_processed_key_answers_duplicate_with_the_first_events,
    a_version_zero_write_of_an_existing_record_conflicts,
    the_outbox_holds_emitted_events_until_marked_published,
    orders_reservations_and_shipments_round_trip,
    concurrent_reservations_never_oversell: atomic,
    stock_deltas_apply_to_the_current_counters_whatever_their_version,
    a_stock_delta_that_would_go_negative_conflicts_and_writes_nothing,
    a_stock_delta_of_an_unknown_sku_conflicts_and_creates_nothing,
    concurrent_delta_reservations_never_oversell: atomic,
    the_outbox_reads_in_pages_that_together_hold_every_entry,
    a_set_aside_entry_leaves_the_outbox_for_good,
    put_stock_is_a_versioned_write,
    dead_letters_are_parked_durably_replayed_for_their_function_and_discarded,
    a_stock_import_adds_and_updates_skus_and_is_idempotent,
    a_stock_import_that_would_count_out_replenished_units_changes_nothing,
    a_stock_import_never_overwrites_a_concurrent_reservation: atomic,
    open_orders_are_the_unfinished_ones_created_before_a_time_in_pages,
    a_timed_out_shipment_tombstone_round_trips,
    the_saga_deadline_fires_once_per_overdue_order,
    delivery_notes_are_kept_per_order_oldest_first,
}

// ---------------------------------------------------------------- fixtures

/// A store under test and what has to live as long as it.
struct Subject {
    store: Arc<dyn Store>,
    /// The SQLite file's directory, deleted on drop.
    _dir: Option<TempDir>,
    /// The DynamoDB tables' client and prefix, dropped after the test.
    dynamo: Option<(Client, String)>,
}

impl Subject {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("choreo.db")).expect("open a SQLite store");
        Self { store: Arc::new(store), _dir: Some(dir), dynamo: None }
    }

    /// A SQLite store on a file made before its record tables became
    /// `WITHOUT ROWID`: opening it keeps those tables as they were, and every
    /// check must hold on them too.
    async fn sqlite_with_rowid_tables() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("choreo.db");
        let earlier = rusqlite::Connection::open(&path).expect("create the earlier file");
        earlier
            .execute_batch(
                "CREATE TABLE stock (
                    sku TEXT PRIMARY KEY,
                    seeded INTEGER NOT NULL, available INTEGER NOT NULL, reserved INTEGER NOT NULL,
                    shipped INTEGER NOT NULL, replenished INTEGER NOT NULL, max_replenish INTEGER NOT NULL,
                    version INTEGER NOT NULL,
                    CHECK (available >= 0 AND reserved >= 0 AND shipped >= 0)
                );
                CREATE TABLE reservations (
                    order_id TEXT PRIMARY KEY, items TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL
                );
                CREATE TABLE shipments (
                    order_id TEXT PRIMARY KEY, tracking_number TEXT NOT NULL, version INTEGER NOT NULL
                );",
            )
            .expect("the earlier schema");
        earlier.execute_batch(&earlier_orders_table()).expect("the earlier orders table");
        drop(earlier);
        let store = SqliteStore::open(&path).expect("open the earlier file");
        let kept: i64 = rusqlite::Connection::open(&path)
            .expect("reopen")
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_autoindex_stock_1'", [], |row| {
                row.get(0)
            })
            .expect("read the schema");
        assert_eq!(kept, 1, "opening the file must keep its rowid tables (and their key index)");
        Self { store: Arc::new(store), _dir: Some(dir), dynamo: None }
    }

    /// A `DynamoStore` on moto, in fresh tables. `atomic`: the check needs
    /// concurrent transactions applied atomically, which a plain `moto_server`
    /// does not do.
    async fn dynamodb(atomic: bool) -> Self {
        let url = moto_url();
        let client = moto_client(&url).await;
        if let Err(error) = client.list_tables().limit(1).send().await {
            panic!(
                "moto is not reachable at {url} (MOTO_URL): {}\n\
                 Start it with scripts/with-moto, or point MOTO_URL at a running moto server.",
                aws_sdk_dynamodb::error::DisplayErrorContext(&error)
            );
        }
        if atomic {
            assert!(
                moto_serializes_requests(&url).await,
                "the moto server at {url} is a plain moto_server, whose TransactWriteItems is not atomic under \
                 concurrent requests; this check needs the one scripts/with-moto starts (it serializes requests)"
            );
        }
        let prefix = format!("t{}-", &Uuid::new_v4().simple().to_string()[..12]);
        let store = DynamoStore::new(client.clone(), prefix.clone());
        store.create_tables().await.unwrap_or_else(|error| panic!("create the tables on moto at {url}: {error}"));
        Self { store: Arc::new(store), _dir: None, dynamo: Some((client, prefix)) }
    }

    /// Deletes the test's tables, so a long-running moto does not pile them up.
    async fn drop_tables(&self) {
        if let Some((client, prefix)) = &self.dynamo {
            for table in &TABLES {
                client.delete_table().table_name(table.name(prefix)).send().await.expect("delete a test table");
            }
        }
    }
}

/// A DynamoDB client for moto.
async fn moto_client(url: &str) -> Client {
    Client::new(&local_sdk_config(url).await)
}

// ---------------------------------------------------------------- helpers

fn catalog(entries: &[(&str, u64, u64)]) -> Vec<SeedStock> {
    entries
        .iter()
        .map(|&(text, available, max_replenish)| SeedStock { sku: sku(text), available, max_replenish })
        .collect()
}

async fn seed(store: &Arc<dyn Store>, entries: &[(&str, u64, u64)]) {
    let written = store.seed_if_empty(&catalog(entries)).await.expect("seed the catalog");
    assert_eq!(written, entries.len(), "the store was not empty before seeding");
}

async fn stock_of(store: &Arc<dyn Store>, text: &str) -> StockLevel {
    let mut levels = store.stock(&[sku(text)]).await.expect("read stock");
    assert_eq!(levels.len(), 1, "SKU {text} should exist once");
    levels.remove(0)
}

/// An `order.created` event for one new order of `items` (`(sku, quantity)`).
fn new_order(items: &[(&str, i64)]) -> Event {
    let items = items.iter().map(|&(text, quantity)| item(text, quantity)).collect();
    event(OrderId::new(), Payload::OrderCreated(order_created(items)))
}

fn reserved_by(cause: &Event) -> Event {
    let Payload::OrderCreated(order) = &cause.payload else { panic!("an order.created event is needed") };
    reaction(
        Function::ReserveInventory,
        cause,
        Payload::InventoryReserved(InventoryReserved {
            items: order.items.clone(),
            shipping_address: order.shipping_address.clone(),
        }),
    )
}

fn commit(function: Function, key: &str, writes: Vec<Write>, emitted: Vec<Event>) -> Commit {
    Commit { function, key: key.to_owned(), writes, emitted }
}

async fn committed(store: &Arc<dyn Store>, commit: Commit) {
    let outcome = store.commit(commit).await.expect("commit");
    assert_eq!(outcome, CommitOutcome::Committed);
}

fn held(level: &StockLevel, units: u64) -> StockLevel {
    StockLevel { available: level.available - units, reserved: level.reserved + units, ..level.clone() }
}

fn reservation_of(cause: &Event) -> Reservation {
    let Payload::OrderCreated(order) = &cause.payload else { panic!("an order.created event is needed") };
    Reservation { order_id: cause.subject, items: order.items.clone(), state: ReservationState::Reserved, version: 0 }
}

// ---------------------------------------------------------------- checks

async fn seeds_only_an_empty_store(store: Arc<dyn Store>) {
    // GIVEN an empty store, WHEN seeded with a catalog naming a SKU twice, THEN nothing is written.
    let twice = store.seed_if_empty(&catalog(&[("A-1", 1, 1), ("A-1", 2, 2)])).await;
    assert!(matches!(twice, Err(StoreError::Corrupt(_))), "a SKU twice must be refused: {twice:?}");
    assert_eq!(store.all_stock().await.expect("read stock"), []);

    // WHEN seeded with a valid catalog, THEN every SKU is stored at version 1.
    assert_eq!(store.seed_if_empty(&catalog(&[("B-2", 0, 0), ("A-1", 10, 5)])).await.expect("seed"), 2);
    // WHEN seeded again, THEN nothing changes.
    assert_eq!(store.seed_if_empty(&catalog(&[("C-3", 7, 1)])).await.expect("seed again"), 0);

    let levels = store.all_stock().await.expect("read stock");
    let expected = [
        StockLevel {
            sku: sku("A-1"),
            seeded: 10,
            available: 10,
            reserved: 0,
            shipped: 0,
            replenished: 0,
            max_replenish: 5,
            version: 1,
        },
        StockLevel {
            sku: sku("B-2"),
            seeded: 0,
            available: 0,
            reserved: 0,
            shipped: 0,
            replenished: 0,
            max_replenish: 0,
            version: 1,
        },
    ];
    assert_eq!(levels, expected, "all_stock lists the seeded catalog, sorted by SKU");
}

async fn reads_the_stock_of_known_skus_only(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 10, 5), ("B-2", 3, 0)]).await;

    let levels = store.stock(&[sku("B-2"), sku("NOPE"), sku("A-1")]).await.expect("read stock");
    let skus: Vec<&str> = levels.iter().map(|level| level.sku.as_str()).collect();
    assert_eq!(skus, ["B-2", "A-1"], "known SKUs, in the order asked; unknown ones are absent");
    assert_eq!((levels[0].available, levels[0].max_replenish), (3, 0));
    assert_eq!(store.stock(&[sku("NOPE")]).await.expect("read stock"), []);
    assert_eq!(store.stock(&[]).await.expect("read stock"), []);
}

async fn commits_versioned_writes_with_the_key_and_its_events(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 10, 5), ("B-2", 4, 0)]).await;
    let cause = new_order(&[("A-1", 3), ("B-2", 1)]);
    let emitted = vec![reserved_by(&cause)];
    let (a, b) = (stock_of(&store, "A-1").await, stock_of(&store, "B-2").await);

    // WHEN a reservation commits its stock writes, the reservation and its events
    let writes = vec![Write::Stock(held(&a, 3)), Write::Stock(held(&b, 1)), Write::Reservation(reservation_of(&cause))];
    let key = cause.id.to_string();
    committed(&store, commit(Function::ReserveInventory, &key, writes, emitted.clone())).await;

    // THEN every record moved to its next version
    let a_after = stock_of(&store, "A-1").await;
    assert_eq!(a_after, StockLevel { version: 2, ..held(&a, 3) });
    assert_eq!(stock_of(&store, "B-2").await, StockLevel { version: 2, ..held(&b, 1) });
    assert!(a_after.is_conserved());
    let reservation = store.reservation(cause.subject).await.expect("read the reservation");
    assert_eq!(reservation, Some(Reservation { version: 1, ..reservation_of(&cause) }));
    // AND the key is processed, with its events, for this function only
    assert_eq!(store.processed(Function::ReserveInventory, &key).await.expect("read processed"), Some(emitted));
    assert_eq!(store.processed(Function::OrderStatus, &key).await.expect("read processed"), None);

    // WHEN the next step writes the version it read, THEN it commits again
    let shipped = StockLevel { reserved: a_after.reserved - 3, shipped: 3, ..a_after.clone() };
    committed(&store, commit(Function::SettleInventory, "settle-1", vec![Write::Stock(shipped.clone())], vec![])).await;
    assert_eq!(stock_of(&store, "A-1").await, StockLevel { version: 3, ..shipped });
}

async fn a_stale_version_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 10, 5), ("B-2", 10, 5)]).await;
    let (a, b) = (stock_of(&store, "A-1").await, stock_of(&store, "B-2").await);
    // GIVEN A-1 moved on since it was read
    committed(&store, commit(Function::ReserveInventory, "other", vec![Write::Stock(held(&a, 1))], vec![])).await;

    // WHEN a commit writes B-2 (fresh), new records and then A-1 (stale)
    let cause = new_order(&[("A-1", 2), ("B-2", 2)]);
    let order = pending_order(&cause);
    let writes = vec![
        Write::Stock(held(&b, 2)),
        Write::Reservation(reservation_of(&cause)),
        Write::Order(order.clone()),
        Write::Stock(held(&a, 2)),
    ];
    let key = cause.id.to_string();
    let outcome = store.commit(commit(Function::ReserveInventory, &key, writes, vec![reserved_by(&cause)])).await;

    // THEN it conflicts, and none of it is stored: not the fresh writes, not the key, not the events
    assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict);
    assert_eq!(stock_of(&store, "B-2").await, b, "B-2 must be untouched");
    assert_eq!(stock_of(&store, "A-1").await, StockLevel { version: 2, ..held(&a, 1) });
    assert_eq!(store.reservation(cause.subject).await.expect("read"), None);
    assert_eq!(store.order(cause.subject).await.expect("read"), None);
    assert_eq!(store.processed(Function::ReserveInventory, &key).await.expect("read"), None);
    assert_eq!(store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox"), []);

    // WHEN the step reads again and decides again, THEN the same key commits
    let a = stock_of(&store, "A-1").await;
    let writes = vec![Write::Stock(held(&b, 2)), Write::Stock(held(&a, 2)), Write::Reservation(reservation_of(&cause))];
    committed(&store, commit(Function::ReserveInventory, &key, writes, vec![])).await;
    assert_eq!(stock_of(&store, "A-1").await.available, 7);
}

async fn a_processed_key_answers_duplicate_with_the_first_events(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 10, 5)]).await;
    let cause = new_order(&[("A-1", 1)]);
    let key = cause.id.to_string();
    let first_events = vec![reserved_by(&cause)];
    let a = stock_of(&store, "A-1").await;
    committed(&store, commit(Function::ReserveInventory, &key, vec![Write::Stock(held(&a, 1))], first_events.clone()))
        .await;
    let after_first = stock_of(&store, "A-1").await;

    // WHEN the same key commits again with fresh versions and other events
    let again =
        commit(Function::ReserveInventory, &key, vec![Write::Stock(held(&after_first, 1))], vec![reserved_by(&cause)]);
    // THEN the first run's events come back and nothing is written
    let outcome = store.commit(again).await.expect("commit");
    assert_eq!(outcome, CommitOutcome::Duplicate(first_events.clone()));
    assert_eq!(stock_of(&store, "A-1").await, after_first);

    // WHEN it commits again with a stale version, THEN it is still a duplicate (not a conflict)
    let stale = commit(Function::ReserveInventory, &key, vec![Write::Stock(held(&a, 1))], vec![]);
    assert_eq!(store.commit(stale).await.expect("commit"), CommitOutcome::Duplicate(first_events));
    assert_eq!(store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox").len(), 1);

    // A step that emitted nothing is a duplicate too, with no events
    committed(&store, commit(Function::OrderStatus, "quiet", vec![], vec![])).await;
    let quiet_again = store.commit(commit(Function::OrderStatus, "quiet", vec![], vec![reserved_by(&cause)])).await;
    assert_eq!(quiet_again.expect("commit"), CommitOutcome::Duplicate(vec![]));

    // The key is per function: another function may process the same event
    let other = commit(Function::OrderStatus, &key, vec![Write::Order(pending_order(&cause))], vec![]);
    assert_eq!(store.commit(other).await.expect("commit"), CommitOutcome::Committed);
}

async fn a_version_zero_write_of_an_existing_record_conflicts(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 10, 5)]).await;
    let a = stock_of(&store, "A-1").await;
    let insert_again = Write::Stock(StockLevel { version: 0, available: 99, ..a.clone() });
    let outcome = store.commit(commit(Function::ReplenishStock, "k0", vec![insert_again], vec![])).await;
    assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict);
    assert_eq!(stock_of(&store, "A-1").await, a);

    let cause = new_order(&[("A-1", 1)]);
    let order = pending_order(&cause);
    let reservation = reservation_of(&cause);
    let shipment = Shipment { order_id: cause.subject, tracking_number: "TRACK-1".to_owned(), version: 0 };
    let first =
        vec![Write::Order(order.clone()), Write::Reservation(reservation.clone()), Write::Shipment(shipment.clone())];
    committed(&store, commit(Function::CreateOrder, "k1", first, vec![])).await;

    // WHEN each record is inserted again (version 0), THEN each conflicts and keeps its first content
    let inserts = [
        Write::Order(OrderRecord { status: OrderStatus::Cancelled, ..order.clone() }),
        Write::Reservation(Reservation { state: ReservationState::Released, ..reservation.clone() }),
        Write::Shipment(Shipment { tracking_number: "TRACK-2".to_owned(), ..shipment.clone() }),
    ];
    for (index, insert) in inserts.into_iter().enumerate() {
        let outcome =
            store.commit(commit(Function::CreateOrder, &format!("again-{index}"), vec![insert], vec![])).await;
        assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict, "insert #{index} of an existing record");
    }
    assert_eq!(store.order(cause.subject).await.expect("read"), Some(OrderRecord { version: 1, ..order }));
    assert_eq!(store.reservation(cause.subject).await.expect("read"), Some(Reservation { version: 1, ..reservation }));
    assert_eq!(store.shipment(cause.subject).await.expect("read"), Some(Shipment { version: 1, ..shipment }));

    // An update of a record that does not exist conflicts too, and creates nothing
    let ghost = new_order(&[("A-1", 1)]);
    let update = Write::Order(OrderRecord { version: 3, ..pending_order(&ghost) });
    let outcome = store.commit(commit(Function::OrderStatus, "ghost", vec![update], vec![])).await;
    assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict);
    assert_eq!(store.order(ghost.subject).await.expect("read"), None);
}

async fn the_outbox_holds_emitted_events_until_marked_published(store: Arc<dyn Store>) {
    let before_any = Utc::now();
    let (first, second) = (new_order(&[("A-1", 1)]), new_order(&[("B-2", 2)]));
    let first_events = vec![reserved_by(&first)];
    let second_events = vec![reserved_by(&second), reserved_by(&second)];
    committed(&store, commit(Function::ReserveInventory, "k1", vec![], first_events.clone())).await;
    tokio::time::sleep(Duration::from_millis(5)).await; // distinct commit times, to check the order
    committed(&store, commit(Function::OrderStatus, "nothing-emitted", vec![], vec![])).await;
    committed(&store, commit(Function::CreateOrder, "k2", vec![], second_events.clone())).await;

    // THEN the entries that emitted events are unpublished, oldest first
    let outbox = store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox");
    let entries: Vec<(Function, &str, &[Event])> =
        outbox.iter().map(|entry| (entry.function, entry.key.as_str(), entry.events.as_slice())).collect();
    assert_eq!(
        entries,
        [
            (Function::ReserveInventory, "k1", first_events.as_slice()),
            (Function::CreateOrder, "k2", second_events.as_slice())
        ]
    );
    // AND only those committed before the given time
    assert_eq!(store.unpublished(before_any).await.expect("read the outbox"), []);

    // WHEN one is marked published (twice: marking is idempotent), THEN it leaves the outbox
    store.mark_published(Function::ReserveInventory, "k1").await.expect("mark published");
    store.mark_published(Function::ReserveInventory, "k1").await.expect("mark published again");
    let outbox = store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox");
    let keys: Vec<&str> = outbox.iter().map(|entry| entry.key.as_str()).collect();
    assert_eq!(keys, ["k2"]);
    // AND a duplicate still gets its events back
    assert_eq!(store.processed(Function::ReserveInventory, "k1").await.expect("read"), Some(first_events));

    // Marking an unknown key changes nothing and creates nothing
    store.mark_published(Function::ShipOrder, "unknown").await.expect("mark an unknown key");
    assert_eq!(store.processed(Function::ShipOrder, "unknown").await.expect("read"), None);
    assert_eq!(store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox").len(), 1);
}

async fn orders_reservations_and_shipments_round_trip(store: Arc<dyn Store>) {
    let created = new_order(&[("A-1", 2), ("B-2", 1)]);
    let order_id = created.subject;
    assert_eq!(store.order(order_id).await.expect("read"), None);
    assert_eq!(store.reservation(order_id).await.expect("read"), None);
    assert_eq!(store.shipment(order_id).await.expect("read"), None);

    // An order with every optional field and a history of several entries
    let mut order = pending_order(&created);
    order.record(&reserved_by(&created));
    order.status = OrderStatus::Cancelled;
    order.tracking_number = Some("TRACK-42".to_owned());
    order.cancel_reason = Some(CancelReason::ShipmentFailed);
    let reservation = reservation_of(&created);
    let shipment = Shipment { order_id, tracking_number: "TRACK-42".to_owned(), version: 0 };
    let writes =
        vec![Write::Order(order.clone()), Write::Reservation(reservation.clone()), Write::Shipment(shipment.clone())];
    committed(&store, commit(Function::CreateOrder, "create", writes, vec![])).await;

    let stored = store.order(order_id).await.expect("read").expect("the order is stored");
    assert_eq!(stored, OrderRecord { version: 1, ..order.clone() });
    assert_eq!(stored.history.len(), 2);
    assert_eq!(
        store.reservation(order_id).await.expect("read"),
        Some(Reservation { version: 1, ..reservation.clone() })
    );
    assert_eq!(store.shipment(order_id).await.expect("read"), Some(Shipment { version: 1, ..shipment.clone() }));

    // Updates from the version read
    let history = vec![HistoryEntry::of(&created)];
    let updated_order = OrderRecord { status: OrderStatus::Shipped, cancel_reason: None, history, ..stored };
    let updated_reservation = Reservation { state: ReservationState::Shipped, version: 1, ..reservation };
    let updated_shipment = Shipment { tracking_number: "TRACK-43".to_owned(), version: 1, ..shipment };
    let writes = vec![
        Write::Order(updated_order.clone()),
        Write::Reservation(updated_reservation.clone()),
        Write::Shipment(updated_shipment.clone()),
    ];
    committed(&store, commit(Function::OrderStatus, "update", writes, vec![])).await;
    assert_eq!(store.order(order_id).await.expect("read"), Some(OrderRecord { version: 2, ..updated_order }));
    assert_eq!(
        store.reservation(order_id).await.expect("read"),
        Some(Reservation { version: 2, ..updated_reservation })
    );
    assert_eq!(store.shipment(order_id).await.expect("read"), Some(Shipment { version: 2, ..updated_shipment }));
}

/// The reserve step's read–decide–commit, as `reserve-inventory` runs it
/// (that crate depends on this one, so it is emulated here): all-or-nothing
/// across the order's items, through `run_idempotent`. A retryable error
/// (records kept changing) is retried, as the bus would redeliver the event.
/// With `relative`, the stock writes are deltas (as `reserve-inventory`
/// writes them), else versioned rewrites of the levels read.
async fn reserve(store: &Arc<dyn Store>, cause: &Event, relative: bool) -> Vec<Event> {
    let Payload::OrderCreated(order) = &cause.payload else { panic!("an order.created event is needed") };
    let decide = || {
        let (store, order, cause) = (Arc::clone(store), order.clone(), cause.clone());
        async move {
            let units: BTreeMap<Sku, u64> = units_per_sku(&order.items);
            let skus: Vec<Sku> = units.keys().cloned().collect();
            let levels = store.stock(&skus).await?;
            let shortfall: Vec<SkuUnits> = levels
                .iter()
                .filter(|level| level.available < units[&level.sku])
                .map(|level| SkuUnits { sku: level.sku.clone(), units: units[&level.sku] - level.available })
                .collect();
            if !shortfall.is_empty() {
                let insufficient = InventoryInsufficient {
                    items: order.items.clone(),
                    shipping_address: order.shipping_address.clone(),
                    shortfall,
                    attempt: 1,
                };
                let emit =
                    vec![reaction(Function::ReserveInventory, &cause, Payload::InventoryInsufficient(insufficient))];
                return Ok(Decision { writes: vec![], emit });
            }
            let mut writes: Vec<Write> = levels
                .iter()
                .map(|level| match relative {
                    true => Write::StockDelta(StockDelta::reserve(level.sku.clone(), units[&level.sku])),
                    false => Write::Stock(held(level, units[&level.sku])),
                })
                .collect();
            writes.push(Write::Reservation(reservation_of(&cause)));
            Ok::<_, StepError>(Decision { writes, emit: vec![reserved_by(&cause)] })
        }
    };
    for _ in 0..50 {
        match run_idempotent(Function::ReserveInventory, cause, store.as_ref(), decide).await {
            Ok(emitted) => return emitted,
            Err(error) if error.is_retryable() => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(error) => panic!("reserve failed permanently: {error}"),
        }
    }
    panic!("reserve kept failing for event {}", cause.id)
}

async fn concurrent_reservations_never_oversell(store: Arc<dyn Store>) {
    never_oversell(store, false).await;
}

async fn concurrent_delta_reservations_never_oversell(store: Arc<dyn Store>) {
    never_oversell(store, true).await;
}

async fn never_oversell(store: Arc<dyn Store>, relative: bool) {
    const ORDERS: usize = 50;
    // GIVEN 15 units seeded and 5 replenished of a hot SKU (20 in all), and a cold SKU
    seed(&store, &[("HOT", 15, 100), ("COLD", 5, 0)]).await;
    let hot = stock_of(&store, "HOT").await;
    let replenished = StockLevel { available: hot.available + 5, replenished: 5, ..hot };
    committed(&store, commit(Function::ReplenishStock, "replenish", vec![Write::Stock(replenished)], vec![])).await;
    let cold = stock_of(&store, "COLD").await;

    // WHEN 50 orders of 1 unit each are reserved at once
    let orders: Vec<Event> = (0..ORDERS).map(|_| new_order(&[("HOT", 1)])).collect();
    let outcomes = reserve_all(&store, &orders, relative).await;

    // THEN exactly the 20 units are reserved: never oversold, all-or-nothing per order
    let reserved: Vec<&Event> = outcomes
        .iter()
        .filter(|emitted| emitted.iter().any(|event| event.event_type() == EventType::InventoryReserved))
        .map(|emitted| &emitted[0])
        .collect();
    let insufficient = outcomes
        .iter()
        .filter(|emitted| emitted.iter().any(|event| event.event_type() == EventType::InventoryInsufficient))
        .count();
    assert_eq!((reserved.len(), insufficient), (20, ORDERS - 20), "reserved vs insufficient orders");
    let hot = stock_of(&store, "HOT").await;
    assert_eq!((hot.available, hot.reserved, hot.seeded, hot.replenished), (0, 20, 15, 5));
    assert!(hot.is_conserved(), "available + reserved + shipped = seeded + replenished: {hot:?}");
    assert_eq!(stock_of(&store, "COLD").await, cold, "an unrelated SKU is untouched");
    for (order, emitted) in orders.iter().zip(&outcomes) {
        let has_reservation = store.reservation(order.subject).await.expect("read").is_some();
        assert_eq!(has_reservation, emitted[0].event_type() == EventType::InventoryReserved, "order {}", order.subject);
    }

    // WHEN every event is delivered again, at once, THEN each gets its first events back and nothing moves
    let again = reserve_all(&store, &orders, relative).await;
    assert_eq!(again, outcomes);
    assert_eq!(stock_of(&store, "HOT").await, hot);
}

async fn reserve_all(store: &Arc<dyn Store>, orders: &[Event], relative: bool) -> Vec<Vec<Event>> {
    let tasks: Vec<_> = orders
        .iter()
        .cloned()
        .map(|order| {
            let store = Arc::clone(store);
            tokio::spawn(async move { reserve(&store, &order, relative).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.expect("a reserve task panicked"));
    }
    outcomes
}

async fn stock_deltas_apply_to_the_current_counters_whatever_their_version(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 10, 5)]).await;
    let read = stock_of(&store, "A-1").await;
    // GIVEN A-1 moved on since the step read it (a versioned write of another saga)
    committed(&store, commit(Function::ReserveInventory, "other", vec![Write::Stock(held(&read, 2))], vec![])).await;
    assert_eq!(stock_of(&store, "A-1").await.version, 2);

    // WHEN a reservation commits a delta of A-1 with its reservation and events
    let cause = new_order(&[("A-1", 3)]);
    let key = cause.id.to_string();
    let emitted = vec![reserved_by(&cause)];
    let writes =
        vec![Write::StockDelta(StockDelta::reserve(sku("A-1"), 3)), Write::Reservation(reservation_of(&cause))];
    committed(&store, commit(Function::ReserveInventory, &key, writes, emitted.clone())).await;

    // THEN it applied to the current counters, not to the ones read, and bumped the version
    let after = stock_of(&store, "A-1").await;
    assert_eq!(after, StockLevel { available: 5, reserved: 5, version: 3, ..read.clone() });
    assert_eq!(store.processed(Function::ReserveInventory, &key).await.expect("read"), Some(emitted.clone()));

    // WHEN the other deltas of the saga follow, THEN each applies and stock stays conserved
    let deltas =
        [StockDelta::replenish(sku("A-1"), 4), StockDelta::ship(sku("A-1"), 3), StockDelta::release(sku("A-1"), 2)];
    for (index, delta) in deltas.into_iter().enumerate() {
        assert!(delta.is_conserving(), "{delta:?}");
        let key = format!("delta-{index}");
        committed(&store, commit(Function::SettleInventory, &key, vec![Write::StockDelta(delta)], vec![])).await;
    }
    let after = stock_of(&store, "A-1").await;
    assert_eq!(
        (after.available, after.reserved, after.shipped, after.replenished, after.version),
        (5 + 4 + 2, 0, 3, 4, 6)
    );
    assert!(after.is_conserved(), "{after:?}");

    // WHEN the same key commits a delta again, THEN it is a duplicate and nothing moves
    let again =
        commit(Function::ReserveInventory, &key, vec![Write::StockDelta(StockDelta::reserve(sku("A-1"), 1))], vec![]);
    assert_eq!(store.commit(again).await.expect("commit"), CommitOutcome::Duplicate(emitted.clone()));
    assert_eq!(stock_of(&store, "A-1").await, after);
}

async fn a_stock_delta_that_would_go_negative_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 2, 5), ("B-2", 10, 5)]).await;
    let (a, b) = (stock_of(&store, "A-1").await, stock_of(&store, "B-2").await);

    // WHEN a commit holds a fresh delta of B-2, new records, and a delta taking 3 of A-1's 2 available
    let cause = new_order(&[("A-1", 3), ("B-2", 1)]);
    let key = cause.id.to_string();
    let writes = vec![
        Write::StockDelta(StockDelta::reserve(sku("B-2"), 1)),
        Write::Reservation(reservation_of(&cause)),
        Write::Order(pending_order(&cause)),
        Write::StockDelta(StockDelta::reserve(sku("A-1"), 3)),
    ];
    let outcome = store.commit(commit(Function::ReserveInventory, &key, writes, vec![reserved_by(&cause)])).await;

    // THEN it conflicts, and none of it is stored: not the other writes, not the key, not the events
    assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict);
    assert_eq!(stock_of(&store, "A-1").await, a, "A-1 must be untouched");
    assert_eq!(stock_of(&store, "B-2").await, b, "B-2 must be untouched");
    assert_eq!(store.reservation(cause.subject).await.expect("read"), None);
    assert_eq!(store.order(cause.subject).await.expect("read"), None);
    assert_eq!(store.processed(Function::ReserveInventory, &key).await.expect("read"), None);
    assert_eq!(store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox"), []);

    // AND settling units that are not reserved conflicts too (reserved would go negative)
    let ship =
        commit(Function::SettleInventory, "ship", vec![Write::StockDelta(StockDelta::ship(sku("A-1"), 1))], vec![]);
    assert_eq!(store.commit(ship).await.expect("commit"), CommitOutcome::Conflict);
    assert_eq!(stock_of(&store, "A-1").await, a);

    // WHEN the delta takes exactly what is available, THEN it commits: a counter may reach zero
    let exact = vec![Write::StockDelta(StockDelta::reserve(sku("A-1"), 2))];
    committed(&store, commit(Function::ReserveInventory, &key, exact, vec![])).await;
    let after = stock_of(&store, "A-1").await;
    assert_eq!((after.available, after.reserved, after.version), (0, 2, 2));
}

async fn a_stock_delta_of_an_unknown_sku_conflicts_and_creates_nothing(store: Arc<dyn Store>) {
    seed(&store, &[("A-1", 10, 5)]).await;
    let a = stock_of(&store, "A-1").await;

    // WHEN a commit holds a delta of A-1 and one of a SKU not in the catalog (one that only adds)
    let writes = vec![
        Write::StockDelta(StockDelta::reserve(sku("A-1"), 1)),
        Write::StockDelta(StockDelta::replenish(sku("Z-9"), 5)),
    ];
    let outcome = store.commit(commit(Function::ReplenishStock, "unknown", writes, vec![])).await;

    // THEN it conflicts; A-1 is untouched and no Z-9 record appeared
    assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict);
    assert_eq!(store.all_stock().await.expect("read stock"), vec![a]);
    assert_eq!(store.processed(Function::ReplenishStock, "unknown").await.expect("read"), None);
}

// ---------------------------------------------------------------- DynamoDB only

mod dynamodb_only {
    use super::*;

    /// Largest order (50 SKUs, ARCHITECTURE.md §10): 50 stock writes + the reservation
    /// + the processed record fit in one transaction; 100 writes do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_largest_reservation_fits_in_one_transaction() {
        let subject = Subject::dynamodb(false).await;
        let store = &subject.store;
        let names: Vec<String> = (0..50).map(|index| format!("SKU-{index:02}")).collect();
        let entries: Vec<(&str, u64, u64)> = names.iter().map(|name| (name.as_str(), 5, 0)).collect();
        seed(store, &entries).await;
        let items: Vec<(&str, i64)> = names.iter().map(|name| (name.as_str(), 2)).collect();
        let cause = new_order(&items);
        let levels = store.stock(&names.iter().map(|name| sku(name)).collect::<Vec<_>>()).await.expect("read stock");
        let mut writes: Vec<Write> = levels.iter().map(|level| Write::Stock(held(level, 2))).collect();
        writes.push(Write::Reservation(reservation_of(&cause)));
        committed(store, commit(Function::ReserveInventory, "largest", writes, vec![reserved_by(&cause)])).await;
        assert!(store.all_stock().await.expect("read stock").iter().all(|level| level.reserved == 2));

        let levels = store.all_stock().await.expect("read stock");
        let too_many: Vec<Write> = (0..100).map(|index| Write::Stock(levels[index % 50].clone())).collect();
        let outcome = store.commit(commit(Function::ReserveInventory, "too-many", too_many, vec![])).await;
        assert!(
            matches!(outcome, Err(StoreError::Corrupt(ref detail)) if detail.contains("100 writes")),
            "{outcome:?}"
        );
        subject.drop_tables().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writes_of_one_record_conflict_like_sqlite() {
        let subject = Subject::dynamodb(false).await;
        seed(&subject.store, &[("A-1", 10, 0)]).await;
        let a = stock_of(&subject.store, "A-1").await;
        let writes = vec![Write::Stock(held(&a, 1)), Write::Stock(held(&a, 2))];
        let outcome = subject.store.commit(commit(Function::ReserveInventory, "twice", writes, vec![])).await;
        assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict);
        assert_eq!(stock_of(&subject.store, "A-1").await, a);
        subject.drop_tables().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_items_are_corrupt() {
        let subject = Subject::dynamodb(false).await;
        let (client, prefix) = subject.dynamo.clone().expect("a DynamoDB subject");
        // GIVEN a stock item with a text count and a processed record whose events are not JSON
        let garbage = |pairs: &[(&str, AttributeValue)]| {
            pairs.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect()
        };
        client
            .put_item()
            .table_name(STOCK.name(&prefix))
            .set_item(Some(garbage(&[
                ("sku", AttributeValue::S("BAD-1".to_owned())),
                ("seeded", AttributeValue::N("3".to_owned())),
                ("available", AttributeValue::S("lots".to_owned())),
            ])))
            .send()
            .await
            .expect("put a bad stock item");
        client
            .put_item()
            .table_name(PROCESSED.name(&prefix))
            .set_item(Some(garbage(&[
                ("pk", AttributeValue::S("ship-order#bad".to_owned())),
                ("emitted", AttributeValue::S("not json".to_owned())),
            ])))
            .send()
            .await
            .expect("put a bad processed item");

        // THEN reading them, or a commit that finds the bad record a duplicate, is Corrupt
        let stock = subject.store.all_stock().await;
        assert!(matches!(stock, Err(StoreError::Corrupt(ref detail)) if detail.contains("available")), "{stock:?}");
        let processed = subject.store.processed(Function::ShipOrder, "bad").await;
        assert!(matches!(processed, Err(StoreError::Corrupt(_))), "{processed:?}");
        let duplicate = subject.store.commit(commit(Function::ShipOrder, "bad", vec![], vec![])).await;
        assert!(matches!(duplicate, Err(StoreError::Corrupt(_))), "{duplicate:?}");
        subject.drop_tables().await;
    }

    /// No server: every call is `Unavailable` (retryable), never a panic or `Corrupt`.
    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        drop(listener); // nothing listens there now
        let config = moto_client(&url)
            .await
            .config()
            .to_builder()
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build();
        let store = DynamoStore::new(Client::from_conf(config), "nowhere-");
        let stock = store.stock(&[sku("A-1")]).await;
        assert!(matches!(stock, Err(StoreError::Unavailable(_))), "{stock:?}");
        let outcome = store.commit(commit(Function::ReserveInventory, "k", vec![], vec![])).await;
        assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
    }

    /// `store_from_env` with `CHOREO_STORE=dynamodb` reaches the endpoint and
    /// tables the environment names. Run in a child process (this test binary,
    /// filtered to `store_from_env_child`), so no test changes this process's
    /// environment.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_from_env_uses_the_environments_endpoint_and_prefix() {
        let subject = Subject::dynamodb(false).await;
        seed(&subject.store, &[("ENV-1", 7, 0)]).await;
        let (_, prefix) = subject.dynamo.clone().expect("a DynamoDB subject");
        let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "dynamodb_only::store_from_env_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CHOREO_CONFORMANCE_CHILD", "1")
            .env("CHOREO_STORE", "dynamodb")
            .env("CHOREO_TABLE_PREFIX", &prefix)
            .env("AWS_ENDPOINT_URL_DYNAMODB", moto_url())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .expect("run the child test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("child read ENV-1 = 7"),
            "child test failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        subject.drop_tables().await;
    }

    #[tokio::test]
    #[ignore = "run in a child process by store_from_env_uses_the_environments_endpoint_and_prefix"]
    async fn store_from_env_child() {
        if std::env::var_os("CHOREO_CONFORMANCE_CHILD").is_none() {
            eprintln!("only meaningful when run by its parent test; skipped");
            return;
        }
        let store = shared::config::store_from_env().await.expect("store from the environment");
        let levels = store.stock(&[sku("ENV-1")]).await.expect("read stock through the environment's endpoint");
        assert_eq!(levels.len(), 1, "ENV-1 is in the tables the parent seeded");
        println!("child read ENV-1 = {}", levels[0].available);
    }
}

// ---------------------------------------------------------------- outbox pages, poison entries

async fn the_outbox_reads_in_pages_that_together_hold_every_entry(store: Arc<dyn Store>) {
    // GIVEN seven outbox entries and one already published
    let mut keys = Vec::new();
    for index in 0..7 {
        let key = format!("k{index}");
        committed(&store, commit(Function::CreateOrder, &key, vec![], vec![reserved_by(&new_order(&[("A-1", 1)]))]))
            .await;
        keys.push(key);
    }
    committed(&store, commit(Function::CreateOrder, "gone", vec![], vec![reserved_by(&new_order(&[("A-1", 1)]))]))
        .await;
    store.mark_published(Function::CreateOrder, "gone").await.expect("mark published");

    // WHEN read three at a time
    let horizon = Utc::now() + Duration::from_secs(60);
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.unpublished_page(horizon, after, 3).await.expect("read a page");
        assert!(page.undecodable.is_empty(), "{:?}", page.undecodable);
        pages.push(page.entries.iter().map(|entry| entry.key.clone()).collect::<Vec<_>>());
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages.len() < 10, "the pages never end: {pages:?}");
    }

    // THEN no page holds more than three, and together they hold each entry once
    assert!(pages.iter().all(|page| page.len() <= 3), "{pages:?}");
    assert!(pages.len() >= 3, "seven entries need three pages of three: {pages:?}");
    let mut read: Vec<String> = pages.concat();
    read.sort();
    assert_eq!(read, keys);
}

async fn a_set_aside_entry_leaves_the_outbox_for_good(store: Arc<dyn Store>) {
    // GIVEN two outbox entries
    let events = vec![reserved_by(&new_order(&[("A-1", 1)]))];
    committed(&store, commit(Function::ReserveInventory, "poison", vec![], events.clone())).await;
    committed(&store, commit(Function::ReserveInventory, "good", vec![], events.clone())).await;

    // WHEN one is set aside (twice: it is idempotent)
    store.set_aside("reserve-inventory", "poison", "unroutable").await.expect("set aside");
    store.set_aside("reserve-inventory", "poison", "unroutable").await.expect("set aside again");

    // THEN only the other is still in the outbox, in pages and in full
    let horizon = Utc::now() + Duration::from_secs(60);
    let keys =
        |entries: Vec<shared::store::OutboxEntry>| entries.into_iter().map(|entry| entry.key).collect::<Vec<_>>();
    assert_eq!(keys(store.unpublished(horizon).await.expect("read the outbox")), ["good"]);
    assert_eq!(keys(store.unpublished_page(horizon, None, 10).await.expect("read a page").entries), ["good"]);
    // AND its processed record stays: a redelivered event is still a duplicate
    assert_eq!(store.processed(Function::ReserveInventory, "poison").await.expect("read"), Some(events.clone()));
    // AND pruning never takes it
    store.prune_processed().await.expect("prune");
    assert_eq!(store.processed(Function::ReserveInventory, "poison").await.expect("read"), Some(events.clone()));

    // Setting aside a published entry or an unknown one changes nothing
    store.mark_published(Function::ReserveInventory, "good").await.expect("mark published");
    store.set_aside("reserve-inventory", "good", "late").await.expect("set aside a published entry");
    store.set_aside("no-such-function", "nothing", "unknown").await.expect("set aside an unknown entry");
    assert_eq!(store.processed(Function::ReserveInventory, "good").await.expect("read"), Some(events));
    assert_eq!(store.unpublished(horizon).await.expect("read the outbox"), []);
}

// ---------------------------------------------------------------- dead letters

fn letter(function: Function, event: &Event, error: &str, attempts: u32) -> StoredDeadLetter {
    StoredDeadLetter { function, event: event.clone(), error: error.to_owned(), attempts }
}

/// (function, event id, error, attempts) of each letter in `state`.
async fn letters_in(store: &Arc<dyn Store>, state: LetterState) -> Vec<(Function, String, String, u32)> {
    let letters = store.dead_letters(state, 100).await.expect("list dead letters");
    letters
        .into_iter()
        .map(|letter| (letter.function, letter.event.id.to_string(), letter.error, letter.attempts))
        .collect()
}

async fn dead_letters_are_parked_durably_replayed_for_their_function_and_discarded(store: Arc<dyn Store>) {
    // GIVEN two dead letters, one per function, parked one after the other
    let created = new_order(&[("A-1", 1)]);
    let reserved = reserved_by(&created);
    store.park_dead_letter(&letter(Function::ReserveInventory, &created, "boom", 4)).await.expect("park");
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.park_dead_letter(&letter(Function::OrderStatus, &reserved, "bang", 1)).await.expect("park");
    let (first, second) = (created.id.to_string(), reserved.id.to_string());

    // THEN both are listed as parked, oldest first, with their event, error and attempts
    let parked = store.dead_letters(LetterState::Parked, 100).await.expect("list");
    assert_eq!(
        parked,
        [letter(Function::ReserveInventory, &created, "boom", 4), letter(Function::OrderStatus, &reserved, "bang", 1)]
    );
    assert_eq!(store.dead_letters(LetterState::Parked, 1).await.expect("list one").len(), 1, "the limit holds");
    // AND they are not in the outbox: the relay never publishes them to every consumer
    assert_eq!(store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read the outbox"), []);

    // WHEN the first is parked again (it failed again): one letter, the new error
    store.park_dead_letter(&letter(Function::ReserveInventory, &created, "boom again", 5)).await.expect("park again");
    let parked = letters_in(&store, LetterState::Parked).await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(parked.contains(&(Function::ReserveInventory, first.clone(), "boom again".into(), 5)), "{parked:?}");

    // WHEN a replay is requested for reserve-inventory only (twice: the second finds nothing parked)
    assert_eq!(store.replay_dead_letters(Some(Function::ReserveInventory), None).await.expect("replay"), 1);
    assert_eq!(store.replay_dead_letters(Some(Function::ReserveInventory), None).await.expect("replay again"), 0);
    // THEN its letter is a pending delivery for that one function, the other stays parked
    assert_eq!(
        letters_in(&store, LetterState::Replaying).await,
        [(Function::ReserveInventory, first.clone(), "boom again".into(), 5)]
    );
    assert_eq!(
        letters_in(&store, LetterState::Parked).await,
        [(Function::OrderStatus, second.clone(), "bang".into(), 1)]
    );

    // WHEN the replayed letter was handled, it is discarded (twice: unknown is no error)
    store.discard_dead_letter(Function::ReserveInventory, &first).await.expect("discard");
    store.discard_dead_letter(Function::ReserveInventory, &first).await.expect("discard again");
    assert_eq!(letters_in(&store, LetterState::Replaying).await, []);

    // AND a replay by event id takes only that letter, whatever its function
    assert_eq!(store.replay_dead_letters(None, Some("no-such-event")).await.expect("replay none"), 0);
    assert_eq!(store.replay_dead_letters(None, Some(&second)).await.expect("replay by id"), 1);
    assert_eq!(letters_in(&store, LetterState::Parked).await, []);
    // AND a replayed letter that fails again is parked again
    store.park_dead_letter(&letter(Function::OrderStatus, &reserved, "bang again", 1)).await.expect("park again");
    assert_eq!(letters_in(&store, LetterState::Replaying).await, []);
    assert_eq!(
        letters_in(&store, LetterState::Parked).await,
        [(Function::OrderStatus, second, "bang again".into(), 1)]
    );
}

// ---------------------------------------------------------------- stock import

async fn put_stock_is_a_versioned_write(store: Arc<dyn Store>) {
    let new = SeedStock { sku: sku("A-1"), available: 4, max_replenish: 2 }.initial_level();
    assert!(store.put_stock(&new).await.expect("insert"), "version 0 inserts a new SKU");
    assert!(!store.put_stock(&new).await.expect("insert again"), "version 0 of an existing SKU fails");
    let read = stock_of(&store, "A-1").await;
    assert_eq!(read, StockLevel { version: 1, ..new });
    let more = StockLevel { available: 9, seeded: 9, ..read.clone() };
    assert!(store.put_stock(&more).await.expect("update"), "the version read is current");
    assert!(!store.put_stock(&more).await.expect("update again"), "the version read is stale now");
    assert_eq!(stock_of(&store, "A-1").await, StockLevel { version: 2, ..more });
}

async fn a_stock_import_adds_and_updates_skus_and_is_idempotent(store: Arc<dyn Store>) {
    // GIVEN A-1 seeded with 10, 3 of them reserved and 2 of those shipped
    seed(&store, &[("A-1", 10, 5)]).await;
    for (key, delta) in [("r", StockDelta::reserve(sku("A-1"), 3)), ("s", StockDelta::ship(sku("A-1"), 2))] {
        committed(&store, commit(Function::SettleInventory, key, vec![Write::StockDelta(delta)], vec![])).await;
    }

    // WHEN a file states A-1 has 20 available (max 8) and adds B-2
    let file = catalog(&[("A-1", 20, 8), ("B-2", 6, 1)]);
    let report = shared::store::import_stock(&*store, &file).await.expect("import");

    // THEN A-1 is updated, B-2 added, and every counter of the sagas kept
    assert_eq!((report.added, report.updated, report.unchanged), (1, 1, 0));
    let a = stock_of(&store, "A-1").await;
    assert_eq!((a.seeded, a.available, a.reserved, a.shipped, a.max_replenish), (10 + 13, 20, 1, 2, 8));
    assert!(a.is_conserved(), "{a:?}");
    let b = stock_of(&store, "B-2").await;
    assert_eq!((b.seeded, b.available, b.max_replenish), (6, 6, 1));

    // WHEN the same file is imported again, THEN nothing changes
    let again = shared::store::import_stock(&*store, &file).await.expect("import again");
    assert_eq!((again.added, again.updated, again.unchanged), (0, 0, 2));
    assert_eq!(stock_of(&store, "A-1").await, a);
    assert_eq!(stock_of(&store, "B-2").await, b);
}

async fn a_stock_import_that_would_count_out_replenished_units_changes_nothing(store: Arc<dyn Store>) {
    // GIVEN A-1 seeded with 1 and replenished with 10
    seed(&store, &[("A-1", 1, 10)]).await;
    let replenished = Write::StockDelta(StockDelta::replenish(sku("A-1"), 10));
    committed(&store, commit(Function::ReplenishStock, "r", vec![replenished], vec![])).await;
    let before = store.all_stock().await.expect("read");

    // WHEN a file adds C-3 and sets A-1 to 0 available
    let error = shared::store::import_stock(&*store, &catalog(&[("C-3", 5, 5), ("A-1", 0, 10)]))
        .await
        .expect_err("counting out replenished units is refused");

    // THEN it says why and nothing was written, not even C-3
    assert!(error.to_string().contains("A-1"), "{error}");
    assert_eq!(store.all_stock().await.expect("read"), before);
}

async fn a_stock_import_never_overwrites_a_concurrent_reservation(store: Arc<dyn Store>) {
    // GIVEN A-1 with 100 units
    seed(&store, &[("A-1", 100, 5)]).await;

    // WHEN 20 reservations of 1 unit commit while imports keep stating 50 available
    let reservations = (0..20).map(|index| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let write = Write::StockDelta(StockDelta::reserve(sku("A-1"), 1));
            committed(&store, commit(Function::ReserveInventory, &format!("r{index}"), vec![write], vec![])).await;
        })
    });
    let imports = (0..5).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            shared::store::import_stock(&*store, &catalog(&[("A-1", 50, 5)])).await.expect("import");
        })
    });
    for task in reservations.chain(imports).collect::<Vec<_>>() {
        task.await.expect("task");
    }

    // THEN every reservation is still held and stock is conserved
    let after = stock_of(&store, "A-1").await;
    assert_eq!(after.reserved, 20, "{after:?}");
    assert!(after.is_conserved(), "{after:?}");
}

// ---------------------------------------------------------------- retention (per adapter)

#[tokio::test]
async fn sqlite_prunes_published_records_past_the_retention_only() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("choreo.db");
    let events = vec![reserved_by(&new_order(&[("A-1", 1)]))];
    // GIVEN a published record, an unpublished one, a set-aside one and one that emitted nothing
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open"));
    for key in ["published", "pending", "poison"] {
        committed(&store, commit(Function::CreateOrder, key, vec![], events.clone())).await;
    }
    committed(&store, commit(Function::OrderStatus, "silent", vec![], vec![])).await;
    store.mark_published(Function::CreateOrder, "published").await.expect("mark");
    store.set_aside("create-order", "poison", "unroutable").await.expect("set aside");

    // WHEN pruned with the default retention, THEN nothing is old enough
    assert_eq!(store.prune_processed().await.expect("prune"), 0);

    // WHEN pruned by a store keeping records for no time at all
    tokio::time::sleep(Duration::from_millis(5)).await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open again").with_retention(Duration::ZERO));
    assert_eq!(store.prune_processed().await.expect("prune"), 2);

    // THEN the published records are gone, the pending and set-aside ones kept
    assert_eq!(store.processed(Function::CreateOrder, "published").await.expect("read"), None);
    assert_eq!(store.processed(Function::OrderStatus, "silent").await.expect("read"), None);
    assert_eq!(store.processed(Function::CreateOrder, "pending").await.expect("read"), Some(events.clone()));
    assert_eq!(store.processed(Function::CreateOrder, "poison").await.expect("read"), Some(events));
    assert_eq!(store.unpublished(Utc::now() + Duration::from_secs(60)).await.expect("read").len(), 1);
}

#[tokio::test]
async fn dynamodb_published_records_carry_expires_at_and_pending_ones_do_not() {
    let subject = Subject::dynamodb(false).await;
    let Some((client, prefix)) = subject.dynamo.clone() else { unreachable!("a DynamoDB subject") };
    let retention = Duration::from_secs(2 * 86_400);
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client.clone(), prefix.clone()).with_retention(retention));
    let events = vec![reserved_by(&new_order(&[("A-1", 1)]))];
    let start = Utc::now().timestamp();
    committed(&store, commit(Function::CreateOrder, "published", vec![], events.clone())).await;
    committed(&store, commit(Function::CreateOrder, "pending", vec![], events.clone())).await;
    committed(&store, commit(Function::CreateOrder, "poison", vec![], events.clone())).await;
    committed(&store, commit(Function::OrderStatus, "silent", vec![], vec![])).await;
    store.mark_published(Function::CreateOrder, "published").await.expect("mark");
    store.set_aside("create-order", "poison", "unroutable").await.expect("set aside");

    let expires_at = |key: &'static str| {
        let (client, table) = (client.clone(), PROCESSED.name(&prefix));
        async move {
            let item = client
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(key.to_owned()))
                .send()
                .await
                .expect("get the processed record")
                .item
                .expect("the record exists");
            item.get(shared::store::dynamodb::EXPIRES_AT)
                .map(|value| value.as_n().expect("a number").parse::<i64>().expect("epoch seconds"))
        }
    };
    // THEN published records expire one retention after they were published (epoch seconds)
    let end = Utc::now().timestamp();
    let window = start + 2 * 86_400..=end + 2 * 86_400;
    for key in ["create-order#published", "order-status#silent"] {
        let at = expires_at(key).await.unwrap_or_else(|| panic!("{key} has no expires_at"));
        assert!(window.contains(&at), "{key}: expires_at {at} outside {window:?}");
    }
    // AND an entry still in the outbox or set aside never expires
    assert_eq!(expires_at("create-order#pending").await, None);
    assert_eq!(expires_at("create-order#poison").await, None);
    // AND DynamoDB prunes by itself
    assert_eq!(store.prune_processed().await.expect("prune"), 0);
    subject.drop_tables().await;
}

// ---------------------------------------------------------------- saga deadline (ARCHITECTURE.md §7.9)

/// Stores a `PENDING` order of `created` with `status`.
async fn given_order_with_status(store: &Arc<dyn Store>, created: &Event, status: OrderStatus) {
    let order = OrderRecord { status, ..pending_order(created) };
    committed(store, commit(Function::CreateOrder, &created.id.to_string(), vec![Write::Order(order)], vec![])).await;
}

async fn open_orders_are_the_unfinished_ones_created_before_a_time_in_pages(store: Arc<dyn Store>) {
    // GIVEN five orders, one per status, then (after a pause) one more pending
    let statuses = [
        OrderStatus::Pending,
        OrderStatus::AwaitingStock,
        OrderStatus::Reserved,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];
    let mut ids = BTreeMap::new();
    for status in statuses {
        let created = new_order(&[("A-1", 1)]);
        given_order_with_status(&store, &created, status).await;
        ids.insert(created.subject.to_string(), status);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let bound = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let younger = new_order(&[("A-1", 1)]);
    given_order_with_status(&store, &younger, OrderStatus::Pending).await;

    // WHEN the open orders created before the bound are read, two at a time
    let mut found = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store.open_orders_page(bound, after, 2).await.expect("a page");
        assert!(page.orders.len() <= 2, "a page holds at most the limit");
        found.extend(page.orders.into_iter().map(|order| (order.order_id.to_string(), order.status)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    // THEN exactly the three unfinished ones older than the bound come back, once each
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<(String, OrderStatus)> = ids.into_iter().filter(|(_, status)| !status.is_terminal()).collect();
    assert_eq!(found, expected);
    // AND all of them at once, through every page
    let all = shared::store::all_open_orders(&*store, Utc::now()).await.expect("every page");
    assert_eq!(all.len(), 4, "the younger one is open too once the bound is now");
    assert!(all.iter().all(|order| order.version == 1), "records come with the version read");
}

async fn a_timed_out_shipment_tombstone_round_trips(store: Arc<dyn Store>) {
    // GIVEN ship-order wrote the tombstone of an order whose deadline came first
    let order_id = OrderId::new();
    committed(
        &store,
        commit(Function::ShipOrder, "deadline", vec![Write::Shipment(Shipment::timed_out(order_id))], vec![]),
    )
    .await;

    // WHEN it is read back, THEN it is a tombstone, and shipping it now conflicts
    let stored = store.shipment(order_id).await.expect("read").expect("the tombstone");
    assert!(stored.is_timed_out(), "{stored:?}");
    let parcel = Shipment { order_id, tracking_number: "CHR0123".to_owned(), version: 0 };
    let outcome = store.commit(commit(Function::ShipOrder, "late", vec![Write::Shipment(parcel)], vec![])).await;
    assert_eq!(outcome.expect("commit"), CommitOutcome::Conflict);
}

/// A broker that confirms everything and keeps what it was given.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Event>>);

#[async_trait::async_trait]
impl shared::bus::Publisher for Recorder {
    async fn publish(
        &self,
        _origin: &shared::bus::OutboxRef,
        events: &[Event],
    ) -> Result<shared::bus::Handover, shared::bus::PublishError> {
        self.0.lock().expect("recorder lock").extend_from_slice(events);
        Ok(shared::bus::Handover::Confirmed)
    }
}

async fn the_saga_deadline_fires_once_per_overdue_order(store: Arc<dyn Store>) {
    // GIVEN an open order and a shipped one, both past a 1 ms deadline
    let (open, shipped) = (new_order(&[("A-1", 1)]), new_order(&[("A-1", 1)]));
    given_order_with_status(&store, &open, OrderStatus::Reserved).await;
    given_order_with_status(&store, &shipped, OrderStatus::Shipped).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let broker = Recorder::default();

    // WHEN two sweeps run
    let deadline = Duration::from_millis(1);
    let first = shared::saga::sweep_deadlines(&*store, &broker, deadline).await.expect("first sweep");
    let second = shared::saga::sweep_deadlines(&*store, &broker, deadline).await.expect("second sweep");

    // THEN the open order's deadline was published once, and is recorded as
    // the sweeper's processed record, published (out of the outbox)
    assert_eq!((first.overdue, first.fired, second.fired, second.fired_before), (1, 1, 0, 1));
    let sent = broker.0.lock().expect("recorder lock").clone();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].subject, sent[0].event_type()), (open.subject, EventType::OrderDeadlineReached));
    let recorded = store.processed(Function::SagaDeadline, &open.subject.to_string()).await.expect("read");
    assert_eq!(recorded, Some(sent.clone()));
    let horizon = Utc::now() + chrono::Duration::days(1);
    assert!(store.unpublished(horizon).await.expect("the outbox").is_empty(), "the deadline was marked published");
}

/// ARCHITECTURE.md §14.3: the notes of deliveries that committed nothing
/// new, read per order, oldest first, whatever order they were written in.
async fn delivery_notes_are_kept_per_order_oldest_first(store: Arc<dyn Store>) {
    use shared::store::{DeliveryNote, DeliveryOutcome};
    let (order, other) = (OrderId::new(), OrderId::new());
    let note = |order_id, outcome, seconds_ago: i64| DeliveryNote {
        order_id,
        event_id: uuid::Uuid::now_v7(),
        function: Function::ReserveInventory,
        outcome,
        detail: format!("{seconds_ago}s ago"),
        at: chrono::DateTime::from_timestamp_micros(
            (Utc::now() - chrono::Duration::seconds(seconds_ago)).timestamp_micros(),
        )
        .expect("a time"),
    };
    assert_eq!(store.delivery_notes(order).await.expect("read"), vec![]);
    let (late, early) = (note(order, DeliveryOutcome::Duplicate, 1), note(order, DeliveryOutcome::Retried, 5));
    for written in [&late, &note(other, DeliveryOutcome::DeadLettered, 3), &early] {
        store.note_delivery(written).await.expect("note");
    }
    assert_eq!(store.delivery_notes(order).await.expect("read"), vec![early, late]);
    assert_eq!(store.delivery_notes(other).await.expect("read").len(), 1);
    // Notes are no processed record of any function.
    assert_eq!(store.processed(Function::ReserveInventory, &order.to_string()).await.expect("read"), None);
}

/// `orders` as files made before its `status` column held it (through
/// session 6), with the open-orders index of the time, on the body's JSON.
fn earlier_orders_table() -> String {
    let open: Vec<String> = shared::store::open_statuses()
        .map(|status| format!("json_extract(body, '$.status') = '{}'", status.as_str()))
        .collect();
    format!(
        "CREATE TABLE orders (order_id TEXT PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL);
         CREATE INDEX orders_open_v2 ON orders (order_id) WHERE ({});",
        open.join(" OR ")
    )
}

#[tokio::test]
async fn a_file_made_before_the_status_column_keeps_its_orders_and_finds_the_open_ones() {
    // GIVEN a file of the earlier shape holding a pending and a shipped order
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("choreo.db");
    let earlier = rusqlite::Connection::open(&path).expect("create the earlier file");
    earlier.execute_batch(&earlier_orders_table()).expect("the earlier orders table");
    let pending = pending_order(&new_order(&[("A-1", 1)]));
    let shipped = OrderRecord { status: OrderStatus::Shipped, ..pending_order(&new_order(&[("A-1", 1)])) };
    for order in [&pending, &shipped] {
        earlier
            .execute(
                "INSERT INTO orders (order_id, body, version) VALUES (?1, ?2, 1)",
                rusqlite::params![order.order_id.to_string(), serde_json::to_string(order).expect("a body")],
            )
            .expect("an earlier order");
    }
    drop(earlier);

    // WHEN the store opens it (twice: a second opening finds it up to date)
    drop(SqliteStore::open(&path).expect("open the earlier file"));
    let store = SqliteStore::open(&path).expect("open it again");

    // THEN both orders read back as they were, and only the pending one is open
    for order in [&pending, &shipped] {
        let read = store.order(order.order_id).await.expect("a read").expect("the order is kept");
        assert_eq!((read.status, read.version), (order.status, 1));
    }
    let open = shared::store::all_open_orders(&store, Utc::now()).await.expect("every page");
    assert_eq!(open.iter().map(|order| order.order_id).collect::<Vec<_>>(), vec![pending.order_id]);
    // AND the earlier index is gone, so no write parses a body any more
    let indexes: Vec<String> = rusqlite::Connection::open(&path)
        .expect("reopen")
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders' AND sql IS NOT NULL")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .expect("read the schema");
    assert_eq!(indexes, vec!["orders_open_v3".to_owned()]);
}
