//! SQLite adapter of the `Store` port: one file shared by every local process
//! (`choreo up`, `cargo lambda watch`, tests), in WAL mode so readers never
//! wait for the writer. It runs on threads of its own (`threads`); a commit's
//! SQL is in `writes`.

mod dead_letters;
mod deliveries;
mod open_orders;
mod outbox;
mod threads;
mod writes;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use self::outbox::{prune_batch, read_page, set_aside_in};
use self::threads::{Threads, unavailable};
use self::writes::{EncodedCommit, Row, apply, commit_in, processed_in};
use crate::contract::choreography::Function;
use crate::contract::domain::{OrderId, Sku};
use crate::contract::events::Event;
use crate::store::{
    Commit, CommitOutcome, DEFAULT_PROCESSED_RETENTION, LetterState, OrderRecord, OutboxCursor, OutboxPage,
    Reservation, ReservationState, SeedStock, Shipment, StockLevel, Store, StoreError, StoredDeadLetter, Write,
};

/// Records with small rows are keyed by their natural key `WITHOUT ROWID`:
/// one b-tree per table, where a rowid table with a text key keeps two (the
/// rows, and an index from key to rowid), so a lookup descends once and an
/// insert dirties fewer pages (profiled). `orders` stays a rowid table: its
/// body (about 1 KB, growing with its history) would outgrow the 1 KB a
/// `WITHOUT ROWID` row keeps in its page and spill onto an overflow page at
/// every update (measured: more WAL writes). A file made before keeps its
/// rowid tables; the statements are the same for both.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    seeded INTEGER NOT NULL, available INTEGER NOT NULL, reserved INTEGER NOT NULL,
    shipped INTEGER NOT NULL, replenished INTEGER NOT NULL, max_replenish INTEGER NOT NULL,
    version INTEGER NOT NULL,
    CHECK (available >= 0 AND reserved >= 0 AND shipped >= 0)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY, items TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS shipments (
    order_id TEXT PRIMARY KEY, tracking_number TEXT NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS processed (
    function TEXT NOT NULL, key TEXT NOT NULL, emitted TEXT NOT NULL, published INTEGER NOT NULL,
    committed_at INTEGER NOT NULL,
    PRIMARY KEY (function, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processed_unpublished ON processed (published) WHERE published = 0;
CREATE TABLE IF NOT EXISTS set_aside (
    function TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, set_aside_at INTEGER NOT NULL,
    PRIMARY KEY (function, key)
) WITHOUT ROWID;
";

pub struct SqliteStore {
    /// The writer and reader threads every call runs on (rusqlite blocks).
    threads: Threads,
    /// How long published processed records are kept (`prune_processed`).
    retention: Duration,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema, with the
    /// default retention of processed records.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { threads: Threads::open(path, create_schema)?, retention: DEFAULT_PROCESSED_RETENTION })
    }

    /// The same store, keeping published processed records for `retention`.
    pub fn with_retention(self, retention: Duration) -> Self {
        Self { retention, ..self }
    }
}

/// Creates the tables a new file needs, and brings a file made before up to date.
fn create_schema(connection: &rusqlite::Connection) -> rusqlite::Result<()> {
    connection.execute_batch(&format!("{SCHEMA}{}{}", dead_letters::SCHEMA, deliveries::SCHEMA))?;
    open_orders::migrate(connection)
}

fn mark_published_in(connection: &rusqlite::Connection, function: Function, key: &str) -> Result<(), StoreError> {
    connection
        .prepare_cached("UPDATE processed SET published = 1 WHERE function = ?1 AND key = ?2 AND published = 0")
        .and_then(|mut statement| statement.execute(params![function.name(), key]))
        .map(drop)
        .map_err(unavailable)
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Records are plain data: serializing cannot fail.
    serde_json::to_string(value).expect("record serializes")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

fn as_i64(value: u64) -> i64 {
    // Stock counters are sums of 1..=1000 quantities: far below i64::MAX.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn read_stock(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, [i64; 7])> {
    Ok((row.get(0)?, [row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?]))
}

fn stock_level((sku, numbers): (String, [i64; 7])) -> Result<StockLevel, StoreError> {
    let [seeded, available, reserved, shipped, replenished, max_replenish, version] =
        numbers.map(|number| u64::try_from(number).unwrap_or(0));
    Ok(StockLevel {
        sku: Sku::parse(&sku).map_err(corrupt)?,
        seeded,
        available,
        reserved,
        shipped,
        replenished,
        max_replenish,
        version,
    })
}

const STOCK_COLUMNS: &str = "sku, seeded, available, reserved, shipped, replenished, max_replenish, version";

#[async_trait]
impl Store for SqliteStore {
    async fn processed(&self, function: Function, key: &str) -> Result<Option<Vec<Event>>, StoreError> {
        self.threads.lookup(|connection| processed_in(connection, function, key))
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let commit = EncodedCommit::new(commit);
        self.threads
            .write(|outcome| *outcome == CommitOutcome::Committed, move |connection| commit_in(connection, &commit))
            .await
    }

    async fn unpublished_page(
        &self,
        committed_before: DateTime<Utc>,
        after: Option<OutboxCursor>,
        limit: usize,
    ) -> Result<OutboxPage, StoreError> {
        self.threads.read(move |connection| read_page(connection, committed_before, after.as_ref(), limit)).await
    }

    async fn set_aside(&self, function: &str, key: &str, reason: &str) -> Result<(), StoreError> {
        let (function, key, reason) = (function.to_owned(), key.to_owned(), reason.to_owned());
        self.threads.write(|()| true, move |connection| set_aside_in(connection, &function, &key, &reason)).await
    }

    async fn prune_processed(&self) -> Result<usize, StoreError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let mut pruned = 0;
        // In batches, each its own write, so steps commit in between.
        loop {
            let deleted = self.threads.write(|_| true, move |connection| prune_batch(connection, cutoff)).await?;
            pruned += deleted.count;
            if !deleted.more {
                return Ok(pruned);
            }
        }
    }

    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.threads.write(|()| true, move |connection| mark_published_in(connection, function, &key)).await
    }

    /// Handed to the writer's next group without waiting: a step's second
    /// writer round trip showed in profiles (ARCHITECTURE.md §7.4).
    async fn mark_published_soon(&self, function: Function, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.threads.write_detached(move |connection| mark_published_in(connection, function, &key));
        Ok(())
    }

    async fn park_dead_letter(&self, letter: &StoredDeadLetter) -> Result<(), StoreError> {
        let letter = letter.clone();
        self.threads.write(|()| true, move |connection| dead_letters::park(connection, &letter)).await
    }

    async fn dead_letters(&self, state: LetterState, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.threads.read(move |connection| dead_letters::list(connection, state, limit)).await
    }

    async fn replay_dead_letters(
        &self,
        function: Option<Function>,
        event_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        let event_id = event_id.map(str::to_owned);
        self.threads
            .write(|_| true, move |connection| dead_letters::request_replay(connection, function, event_id.as_deref()))
            .await
    }

    async fn discard_dead_letter(&self, function: Function, event_id: &str) -> Result<(), StoreError> {
        let event_id = event_id.to_owned();
        self.threads.write(|()| true, move |connection| dead_letters::discard(connection, function, &event_id)).await
    }

    async fn note_delivery(&self, note: &crate::store::DeliveryNote) -> Result<(), StoreError> {
        let note = note.clone();
        self.threads.write(|()| true, move |connection| deliveries::note(connection, &note)).await
    }

    async fn delivery_notes(&self, order_id: OrderId) -> Result<Vec<crate::store::DeliveryNote>, StoreError> {
        self.threads.read(move |connection| deliveries::of_order(connection, order_id)).await
    }

    async fn prune_delivery_notes(&self) -> Result<usize, StoreError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        self.threads.write(|_| true, move |connection| deliveries::prune(connection, cutoff)).await
    }

    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, StoreError> {
        self.threads.lookup(|connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT {STOCK_COLUMNS} FROM stock WHERE sku = ?1"))
                .map_err(unavailable)?;
            let mut levels = Vec::with_capacity(skus.len());
            for sku in skus {
                if let Some(row) = statement.query_row([sku.as_str()], read_stock).optional().map_err(unavailable)? {
                    levels.push(stock_level(row)?);
                }
            }
            Ok(levels)
        })
    }

    async fn all_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.threads
            .read(|connection| {
                let mut statement = connection
                    .prepare_cached(&format!("SELECT {STOCK_COLUMNS} FROM stock ORDER BY sku"))
                    .map_err(unavailable)?;
                let rows: Vec<_> =
                    statement.query_map([], read_stock).and_then(Iterator::collect).map_err(unavailable)?;
                rows.into_iter().map(stock_level).collect()
            })
            .await
    }

    async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        self.threads.lookup(|connection| {
            let row: Option<(String, String, i64)> = connection
                .prepare_cached("SELECT items, state, version FROM reservations WHERE order_id = ?1")
                .and_then(|mut statement| {
                    statement
                        .query_row([order_id.to_string()], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                        .optional()
                })
                .map_err(unavailable)?;
            row.map(|(items, state, version)| {
                Ok(Reservation {
                    order_id,
                    items: from_json(&items)?,
                    state: ReservationState::parse(&state)
                        .ok_or_else(|| corrupt(format!("unknown reservation state '{state}'")))?,
                    version: u64::try_from(version).map_err(corrupt)?,
                })
            })
            .transpose()
        })
    }

    async fn seed_if_empty(&self, catalog: &[SeedStock]) -> Result<usize, StoreError> {
        let catalog = catalog.to_vec();
        self.threads
            .write(
                |_| true,
                move |tx| {
                    let existing: i64 =
                        tx.query_row("SELECT count(*) FROM stock", [], |row| row.get(0)).map_err(unavailable)?;
                    if existing > 0 {
                        return Ok(0);
                    }
                    for entry in &catalog {
                        if !apply(tx, &Row::of(Write::Stock(entry.initial_level()))).map_err(unavailable)? {
                            return Err(StoreError::Corrupt(format!("SKU {} appears twice in the catalog", entry.sku)));
                        }
                    }
                    Ok(catalog.len())
                },
            )
            .await
    }

    async fn put_stock(&self, level: &StockLevel) -> Result<bool, StoreError> {
        let row = Row::of(Write::Stock(level.clone()));
        self.threads.write(|written| *written, move |connection| apply(connection, &row).map_err(unavailable)).await
    }

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        self.threads.lookup(|connection| {
            let row: Option<(String, i64)> = connection
                .prepare_cached("SELECT body, version FROM orders WHERE order_id = ?1")
                .and_then(|mut statement| {
                    statement.query_row([order_id.to_string()], |row| Ok((row.get(0)?, row.get(1)?))).optional()
                })
                .map_err(unavailable)?;
            row.map(|(body, version)| {
                let mut order: OrderRecord = from_json(&body)?;
                order.version = u64::try_from(version).map_err(corrupt)?;
                Ok(order)
            })
            .transpose()
        })
    }

    async fn open_orders_page(
        &self,
        created_before: DateTime<Utc>,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<crate::store::OpenOrdersPage, StoreError> {
        self.threads.read(move |connection| open_orders::page(connection, created_before, after, limit)).await
    }

    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError> {
        self.threads.lookup(|connection| {
            let row: Option<(String, i64)> = connection
                .prepare_cached("SELECT tracking_number, version FROM shipments WHERE order_id = ?1")
                .and_then(|mut statement| {
                    statement.query_row([order_id.to_string()], |row| Ok((row.get(0)?, row.get(1)?))).optional()
                })
                .map_err(unavailable)?;
            row.map(|(tracking_number, version)| {
                Ok(Shipment { order_id, tracking_number, version: u64::try_from(version).map_err(corrupt)? })
            })
            .transpose()
        })
    }
}
