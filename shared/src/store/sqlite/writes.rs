//! A commit on SQLite: the SQL of each write, and the commit that runs them
//! with the processed record inside the writer's transaction. Records and
//! events are encoded on the caller's thread ([`EncodedCommit`], [`Row`]):
//! the writer thread is the store's serial part, so it only runs SQL, each
//! statement's text built once per table.

use std::sync::LazyLock;

use chrono::Utc;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::threads::unavailable;
use super::{as_i64, from_json, to_json};
use crate::contract::choreography::Function;
use crate::contract::events::Event;
use crate::store::{Commit, CommitOutcome, StockDelta, StoreError, Write};

/// A table written with versions, as the port states it: read version 0
/// inserts the record if it is absent; a later one rewrites it only while it
/// is still at that version. Either way the stored version becomes the read
/// one + 1.
pub(super) struct VersionedTable {
    /// Binds the key then the columns; changes no row if the key exists.
    insert: String,
    /// Binds the key, the columns, then the version read; changes no row if
    /// the record moved.
    update: String,
}

impl VersionedTable {
    fn new(table: &str, key_column: &str, columns: &[&str]) -> Self {
        let placeholders: Vec<String> = (1..=columns.len() + 1).map(|index| format!("?{index}")).collect();
        let sets: Vec<String> =
            columns.iter().enumerate().map(|(index, column)| format!("{column} = ?{}", index + 2)).collect();
        Self {
            insert: format!(
                "INSERT INTO {table} ({key_column}, {}, version) VALUES ({}, 1) ON CONFLICT DO NOTHING",
                columns.join(", "),
                placeholders.join(", ")
            ),
            update: format!(
                "UPDATE {table} SET {}, version = version + 1 WHERE {key_column} = ?1 AND version = ?{}",
                sets.join(", "),
                columns.len() + 2
            ),
        }
    }
}

static STOCK: LazyLock<VersionedTable> = LazyLock::new(|| {
    VersionedTable::new("stock", "sku", &["seeded", "available", "reserved", "shipped", "replenished", "max_replenish"])
});
static RESERVATIONS: LazyLock<VersionedTable> =
    LazyLock::new(|| VersionedTable::new("reservations", "order_id", &["items", "state"]));
/// `status` repeats the body's for the open-orders index (`open_orders.rs`).
static ORDERS: LazyLock<VersionedTable> =
    LazyLock::new(|| VersionedTable::new("orders", "order_id", &["body", "status"]));
static SHIPMENTS: LazyLock<VersionedTable> =
    LazyLock::new(|| VersionedTable::new("shipments", "order_id", &["tracking_number"]));

/// One write, its values encoded and ready to bind.
pub(super) enum Row {
    /// The key first, then the table's columns in order.
    Versioned { table: &'static VersionedTable, values: Vec<Value>, read_version: u64 },
    /// Relative: applies to the current counters, whatever their version,
    /// unless a counter would go negative (or the SKU does not exist).
    StockDelta(StockDelta),
}

impl Row {
    pub(super) fn of(write: Write) -> Self {
        let text = Value::Text;
        let versioned = |table: &'static LazyLock<VersionedTable>, values, read_version| Self::Versioned {
            table: LazyLock::force(table),
            values,
            read_version,
        };
        match write {
            Write::Stock(level) => {
                let counters = [
                    level.seeded,
                    level.available,
                    level.reserved,
                    level.shipped,
                    level.replenished,
                    level.max_replenish,
                ]
                .map(|counter| Value::Integer(as_i64(counter)));
                let values = std::iter::once(text(level.sku.as_str().to_owned())).chain(counters).collect();
                versioned(&STOCK, values, level.version)
            }
            Write::StockDelta(delta) => Self::StockDelta(delta),
            Write::Reservation(reservation) => versioned(
                &RESERVATIONS,
                vec![
                    text(reservation.order_id.to_string()),
                    text(to_json(&reservation.items)),
                    text(reservation.state.as_str().to_owned()),
                ],
                reservation.version,
            ),
            Write::Order(order) => versioned(
                &ORDERS,
                vec![text(order.order_id.to_string()), text(to_json(&order)), text(order.status.as_str().to_owned())],
                order.version,
            ),
            Write::Shipment(shipment) => versioned(
                &SHIPMENTS,
                vec![text(shipment.order_id.to_string()), text(shipment.tracking_number)],
                shipment.version,
            ),
        }
    }
}

/// Applies one write; `false` when the record moved since it was read (a
/// versioned write) or a stock delta cannot apply.
pub(super) fn apply(tx: &Connection, row: &Row) -> rusqlite::Result<bool> {
    let changed = match row {
        Row::Versioned { table, values, read_version: 0 } => {
            tx.prepare_cached(&table.insert)?.execute(params_from_iter(values))?
        }
        Row::Versioned { table, values, read_version } => {
            let version = Value::Integer(as_i64(*read_version));
            tx.prepare_cached(&table.update)?.execute(params_from_iter(values.iter().chain([&version])))?
        }
        Row::StockDelta(delta) => tx
            .prepare_cached(
                "UPDATE stock SET available = available + ?2, reserved = reserved + ?3, shipped = shipped + ?4,
                 replenished = replenished + ?5, version = version + 1
                 WHERE sku = ?1 AND available + ?2 >= 0 AND reserved + ?3 >= 0 AND shipped + ?4 >= 0
                 AND replenished + ?5 >= 0",
            )?
            .execute(params![delta.sku.as_str(), delta.available, delta.reserved, delta.shipped, delta.replenished])?,
    };
    Ok(changed == 1)
}

pub(super) fn decode_events(text: &str) -> Result<Vec<Event>, StoreError> {
    from_json(text)
}

/// The events the processed record of `function` and `key` holds, if there is one.
pub(super) fn processed_in(
    connection: &Connection,
    function: Function,
    key: &str,
) -> Result<Option<Vec<Event>>, StoreError> {
    let emitted: Option<String> = connection
        .prepare_cached("SELECT emitted FROM processed WHERE function = ?1 AND key = ?2")
        .and_then(|mut statement| statement.query_row(params![function.name(), key], |row| row.get(0)).optional())
        .map_err(unavailable)?;
    emitted.as_deref().map(decode_events).transpose()
}

/// A [`Commit`] encoded for the writer (see the module comment).
pub(super) struct EncodedCommit {
    function: Function,
    key: String,
    /// The emitted events as stored: the duplicate's answer and the outbox.
    emitted: String,
    published: bool,
    writes_a_record_twice: bool,
    rows: Vec<Row>,
}

impl EncodedCommit {
    pub(super) fn new(commit: Commit) -> Self {
        Self {
            function: commit.function,
            emitted: to_json(&commit.emitted),
            published: commit.is_published_when_committed(),
            writes_a_record_twice: commit.writes_a_record_twice(),
            key: commit.key,
            rows: commit.writes.into_iter().map(Row::of).collect(),
        }
    }
}

/// Runs inside the writer's transaction; only `Committed` keeps its changes
/// (the writer rolls the job's savepoint back otherwise).
pub(super) fn commit_in(tx: &Connection, commit: &EncodedCommit) -> Result<CommitOutcome, StoreError> {
    // The processed record first: inserting it is the duplicate check (a key
    // seen before inserts nothing), one statement where a look-up first took
    // two on the writer's thread, the store's serial part.
    let inserted = tx
        .prepare_cached(
            "INSERT INTO processed (function, key, emitted, published, committed_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                commit.function.name(),
                commit.key,
                commit.emitted,
                commit.published,
                Utc::now().timestamp_millis()
            ])
        })
        .map_err(unavailable)?;
    if inserted == 0 {
        // The record was there already: this transaction sees it, so it is
        // the first run's (a vanished one would only mean running again).
        let first_run = processed_in(tx, commit.function, &commit.key)?;
        return Ok(first_run.map_or(CommitOutcome::Conflict, CommitOutcome::Duplicate));
    }
    if commit.writes_a_record_twice {
        return Ok(CommitOutcome::Conflict);
    }
    for row in &commit.rows {
        if !apply(tx, row).map_err(unavailable)? {
            return Ok(CommitOutcome::Conflict);
        }
    }
    Ok(CommitOutcome::Committed)
}
