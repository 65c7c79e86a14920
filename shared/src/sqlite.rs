//! SQLite adapter of the `Store` port: one file shared by every local process
//! (`choreo up`, `cargo lambda watch`, tests), in WAL mode so readers never
//! wait for the writer.
//!
//! rusqlite is blocking, so the store runs on threads of its own, never on
//! the async runtime: one writer thread owning the write connection (SQLite
//! has one writer at a time anyway) and a few reader threads, each with a
//! prepared-statement cache. Callers hand them jobs over channels.
//!
//! The writer commits in groups: it takes every write job waiting, runs each
//! under its own savepoint inside one transaction and commits once. Each job
//! still succeeds or fails alone (a conflict rolls back to its savepoint), but
//! a busy system pays for one WAL commit per group instead of one per step.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::choreography::Function;
use crate::domain::{OrderId, Sku};
use crate::events::Event;
use crate::ports::{
    Commit, CommitOutcome, OrderRecord, OutboxEntry, Reservation, ReservationState, SeedStock, Shipment, StockLevel,
    Store, StoreError, Write,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    seeded INTEGER NOT NULL, available INTEGER NOT NULL, reserved INTEGER NOT NULL,
    shipped INTEGER NOT NULL, replenished INTEGER NOT NULL, max_replenish INTEGER NOT NULL,
    version INTEGER NOT NULL,
    CHECK (available >= 0 AND reserved >= 0 AND shipped >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY, items TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shipments (
    order_id TEXT PRIMARY KEY, tracking_number TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed (
    function TEXT NOT NULL, key TEXT NOT NULL, emitted TEXT NOT NULL, published INTEGER NOT NULL,
    committed_at INTEGER NOT NULL,
    PRIMARY KEY (function, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processed_unpublished ON processed (published) WHERE published = 0;
";

/// Reader threads: WAL lets them read while the writer writes.
const READERS: usize = 3;
/// Most write jobs committed together.
const MAX_GROUP: usize = 128;

/// Answers a write job's caller once the group's commit is known.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs inside the group's transaction (or learns it could not start) and
/// says whether to keep its changes.
type WriteJob = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Answer) + Send>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

pub struct SqliteStore {
    writes: mpsc::Sender<WriteJob>,
    reads: Vec<mpsc::Sender<ReadJob>>,
    next_reader: AtomicUsize,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|error| StoreError::Unavailable(format!("cannot create {}: {error}", dir.display())))?;
        }
        let writer = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        writer.execute_batch(SCHEMA).map_err(unavailable)?;
        let (writes, jobs) = mpsc::channel();
        spawn_thread("sqlite-writer", move || write_groups(&writer, &jobs))?;
        let mut reads = Vec::with_capacity(READERS);
        for index in 0..READERS {
            let reader = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            let (sender, jobs) = mpsc::channel::<ReadJob>();
            spawn_thread(&format!("sqlite-reader-{index}"), move || {
                while let Ok(job) = jobs.recv() {
                    // A panicking job must not take the thread (and the store) with it.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&reader)));
                }
            })?;
            reads.push(sender);
        }
        Ok(Self { writes, reads, next_reader: AtomicUsize::new(0) })
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job: ReadJob = Box::new(move |connection| {
            let _ = answer.send(work(connection));
        });
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.reads.len();
        self.reads[index].send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Runs `work` in the writer's next group; its changes are kept when
    /// `keep` says so and the group commits.
    async fn write<T: Send + 'static>(
        &self,
        keep: fn(&T) -> bool,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job: WriteJob = Box::new(move |connection| {
            let outcome = match connection {
                Ok(connection) => work(connection),
                Err(error) => Err(StoreError::Unavailable(error.to_string())),
            };
            let kept = outcome.as_ref().is_ok_and(keep);
            let reply: Answer = Box::new(move |group| {
                let _ = answer.send(group.and(outcome));
            });
            (kept, reply)
        });
        self.writes.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(drop)
        .map_err(|error| StoreError::Unavailable(format!("cannot start a store thread: {error}")))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's threads have stopped".to_owned())
}

/// The writer thread: one transaction per group of waiting jobs, a savepoint per job.
fn write_groups(connection: &Connection, jobs: &mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter().take(MAX_GROUP - 1));
        // IMMEDIATE takes the write lock up front (waiting up to busy_timeout
        // for other processes), so every job sees one consistent state.
        if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE").map_err(unavailable) {
            for job in group {
                let (_, answer) = job(Err(&error));
                answer(Err(StoreError::Unavailable(error.to_string())));
            }
            continue;
        }
        let mut answers = Vec::with_capacity(group.len());
        for job in group {
            let _ = connection.execute_batch("SAVEPOINT job");
            let (keep, answer) = match std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(connection)))) {
                Ok(done) => done,
                Err(_) => (false, Box::new(|_| ()) as Answer),
            };
            let end = if keep { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
            let _ = connection.execute_batch(end);
            answers.push(answer);
        }
        let committed = connection.execute_batch("COMMIT").map_err(unavailable);
        if committed.is_err() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        for answer in answers {
            answer(committed.as_ref().map(drop).map_err(|error| StoreError::Unavailable(error.to_string())));
        }
    }
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(unavailable)?;
    // WAL: readers and the writer do not block each other, and several
    // processes can share the file. synchronous=NORMAL is durable across a
    // process crash (a power loss may lose the last commits, never corrupt).
    connection
        .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
        .map_err(unavailable)?;
    // Other processes may hold the write lock briefly: wait rather than fail.
    connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
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

fn state_name(state: ReservationState) -> &'static str {
    match state {
        ReservationState::Reserved => "reserved",
        ReservationState::Shipped => "shipped",
        ReservationState::Released => "released",
    }
}

fn parse_state(text: &str) -> Result<ReservationState, StoreError> {
    match text {
        "reserved" => Ok(ReservationState::Reserved),
        "shipped" => Ok(ReservationState::Shipped),
        "released" => Ok(ReservationState::Released),
        other => Err(corrupt(format!("unknown reservation state '{other}'"))),
    }
}

/// Applies one write; `false` when the record moved since it was read (a
/// versioned write) or a stock delta cannot apply.
fn apply(tx: &Connection, write: &Write) -> rusqlite::Result<bool> {
    let changed = match write {
        Write::Stock(level) if level.version == 0 => tx
            .prepare_cached(
                "INSERT INTO stock (sku, seeded, available, reserved, shipped, replenished, max_replenish, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                level.sku.as_str(),
                as_i64(level.seeded),
                as_i64(level.available),
                as_i64(level.reserved),
                as_i64(level.shipped),
                as_i64(level.replenished),
                as_i64(level.max_replenish)
            ])?,
        Write::Stock(level) => tx
            .prepare_cached(
                "UPDATE stock SET seeded = ?2, available = ?3, reserved = ?4, shipped = ?5, replenished = ?6,
                 max_replenish = ?7, version = version + 1 WHERE sku = ?1 AND version = ?8",
            )?
            .execute(params![
                level.sku.as_str(),
                as_i64(level.seeded),
                as_i64(level.available),
                as_i64(level.reserved),
                as_i64(level.shipped),
                as_i64(level.replenished),
                as_i64(level.max_replenish),
                as_i64(level.version)
            ])?,
        // Relative: applies to the current counters, whatever their version,
        // unless a counter would go negative (or the SKU does not exist).
        Write::StockDelta(delta) => tx
            .prepare_cached(
                "UPDATE stock SET available = available + ?2, reserved = reserved + ?3, shipped = shipped + ?4,
                 replenished = replenished + ?5, version = version + 1
                 WHERE sku = ?1 AND available + ?2 >= 0 AND reserved + ?3 >= 0 AND shipped + ?4 >= 0
                 AND replenished + ?5 >= 0",
            )?
            .execute(params![delta.sku.as_str(), delta.available, delta.reserved, delta.shipped, delta.replenished])?,
        Write::Reservation(reservation) => {
            let (id, items, state) =
                (reservation.order_id.to_string(), to_json(&reservation.items), state_name(reservation.state));
            if reservation.version == 0 {
                tx.prepare_cached(
                    "INSERT INTO reservations (order_id, items, state, version) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, items, state])?
            } else {
                tx.prepare_cached(
                    "UPDATE reservations SET items = ?2, state = ?3, version = version + 1
                     WHERE order_id = ?1 AND version = ?4",
                )?
                .execute(params![id, items, state, as_i64(reservation.version)])?
            }
        }
        Write::Order(order) => {
            let (id, body) = (order.order_id.to_string(), to_json(order));
            if order.version == 0 {
                tx.prepare_cached(
                    "INSERT INTO orders (order_id, body, version) VALUES (?1, ?2, 1) ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, body])?
            } else {
                tx.prepare_cached(
                    "UPDATE orders SET body = ?2, version = version + 1 WHERE order_id = ?1 AND version = ?3",
                )?
                .execute(params![id, body, as_i64(order.version)])?
            }
        }
        Write::Shipment(shipment) => {
            let (id, tracking) = (shipment.order_id.to_string(), &shipment.tracking_number);
            if shipment.version == 0 {
                tx.prepare_cached(
                    "INSERT INTO shipments (order_id, tracking_number, version) VALUES (?1, ?2, 1) ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, tracking])?
            } else {
                tx.prepare_cached(
                    "UPDATE shipments SET tracking_number = ?2, version = version + 1 WHERE order_id = ?1 AND version = ?3",
                )?
                .execute(params![id, tracking, as_i64(shipment.version)])?
            }
        }
    };
    Ok(changed == 1)
}

/// The table and key a write targets.
fn target(write: &Write) -> (&'static str, String) {
    match write {
        Write::Stock(level) => ("stock", level.sku.as_str().to_owned()),
        Write::StockDelta(delta) => ("stock", delta.sku.as_str().to_owned()),
        Write::Reservation(reservation) => ("reservations", reservation.order_id.to_string()),
        Write::Order(order) => ("orders", order.order_id.to_string()),
        Write::Shipment(shipment) => ("shipments", shipment.order_id.to_string()),
    }
}

fn decode_events(text: &str) -> Result<Vec<Event>, StoreError> {
    from_json(text)
}

/// Runs inside the writer's transaction; only `Committed` keeps its changes.
fn commit_in(tx: &Connection, commit: &Commit) -> Result<CommitOutcome, StoreError> {
    let previous: Option<String> = tx
        .prepare_cached("SELECT emitted FROM processed WHERE function = ?1 AND key = ?2")
        .and_then(|mut statement| {
            statement.query_row(params![commit.function.name(), commit.key], |row| row.get(0)).optional()
        })
        .map_err(unavailable)?;
    if let Some(previous) = previous {
        return Ok(CommitOutcome::Duplicate(decode_events(&previous)?));
    }
    // Two writes of one record: a versioned second one is stale once the first
    // applies; two stock deltas would both apply here but cannot share a
    // DynamoDB transaction. Either way a conflict, as on DynamoDB.
    let mut targets = std::collections::HashSet::new();
    if !commit.writes.iter().all(|write| targets.insert(target(write))) {
        return Ok(CommitOutcome::Conflict);
    }
    for write in &commit.writes {
        if !apply(tx, write).map_err(unavailable)? {
            return Ok(CommitOutcome::Conflict);
        }
    }
    let published = commit.emitted.is_empty();
    tx.prepare_cached(
        "INSERT INTO processed (function, key, emitted, published, committed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            commit.function.name(),
            commit.key,
            to_json(&commit.emitted),
            published,
            Utc::now().timestamp_millis()
        ])
    })
    .map_err(unavailable)?;
    Ok(CommitOutcome::Committed)
}

#[async_trait]
impl Store for SqliteStore {
    async fn processed(&self, function: Function, key: &str) -> Result<Option<Vec<Event>>, StoreError> {
        let key = key.to_owned();
        self.read(move |connection| {
            let emitted: Option<String> = connection
                .prepare_cached("SELECT emitted FROM processed WHERE function = ?1 AND key = ?2")
                .and_then(|mut statement| {
                    statement.query_row(params![function.name(), key], |row| row.get(0)).optional()
                })
                .map_err(unavailable)?;
            emitted.as_deref().map(decode_events).transpose()
        })
        .await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.write(|outcome| *outcome == CommitOutcome::Committed, move |connection| commit_in(connection, &commit))
            .await
    }

    async fn unpublished(&self, committed_before: DateTime<Utc>) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT function, key, emitted FROM processed WHERE published = 0 AND committed_at < ?1
                     ORDER BY committed_at",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map([committed_before.timestamp_millis()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
                })
                .map_err(unavailable)?;
            let mut entries = Vec::new();
            for row in rows {
                let (function, key, emitted) = row.map_err(unavailable)?;
                let function =
                    Function::from_name(&function).ok_or_else(|| corrupt(format!("unknown function '{function}'")))?;
                entries.push(OutboxEntry { function, key, events: decode_events(&emitted)? });
            }
            Ok(entries)
        })
        .await
    }

    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(
            |()| true,
            move |connection| {
                connection
                    .prepare_cached(
                        "UPDATE processed SET published = 1 WHERE function = ?1 AND key = ?2 AND published = 0",
                    )
                    .and_then(|mut statement| statement.execute(params![function.name(), key]))
                    .map(drop)
                    .map_err(unavailable)
            },
        )
        .await
    }

    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, StoreError> {
        let skus: Vec<String> = skus.iter().map(|sku| sku.as_str().to_owned()).collect();
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT {STOCK_COLUMNS} FROM stock WHERE sku = ?1"))
                .map_err(unavailable)?;
            let mut levels = Vec::with_capacity(skus.len());
            for sku in skus {
                if let Some(row) = statement.query_row([sku], read_stock).optional().map_err(unavailable)? {
                    levels.push(stock_level(row)?);
                }
            }
            Ok(levels)
        })
        .await
    }

    async fn all_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.read(|connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT {STOCK_COLUMNS} FROM stock ORDER BY sku"))
                .map_err(unavailable)?;
            let rows: Vec<_> = statement.query_map([], read_stock).and_then(Iterator::collect).map_err(unavailable)?;
            rows.into_iter().map(stock_level).collect()
        })
        .await
    }

    async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        self.read(move |connection| {
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
                    state: parse_state(&state)?,
                    version: u64::try_from(version).map_err(corrupt)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn seed_if_empty(&self, catalog: &[SeedStock]) -> Result<usize, StoreError> {
        let catalog = catalog.to_vec();
        self.write(
            |_| true,
            move |tx| {
                let existing: i64 =
                    tx.query_row("SELECT count(*) FROM stock", [], |row| row.get(0)).map_err(unavailable)?;
                if existing > 0 {
                    return Ok(0);
                }
                for entry in &catalog {
                    if !apply(tx, &Write::Stock(entry.initial_level())).map_err(unavailable)? {
                        return Err(StoreError::Corrupt(format!("SKU {} appears twice in the catalog", entry.sku)));
                    }
                }
                Ok(catalog.len())
            },
        )
        .await
    }

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        self.read(move |connection| {
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
        .await
    }

    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError> {
        self.read(move |connection| {
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
        .await
    }
}
