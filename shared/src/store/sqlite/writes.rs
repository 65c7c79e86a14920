//! A commit on SQLite: the SQL of each write, and the commit that runs them
//! with the processed record inside the writer's transaction.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::threads::unavailable;
use super::{as_i64, from_json, to_json};
use crate::contract::choreography::Function;
use crate::contract::events::Event;
use crate::store::{Commit, CommitOutcome, StoreError, Write};

/// Applies one write; `false` when the record moved since it was read (a
/// versioned write) or a stock delta cannot apply.
pub(super) fn apply(tx: &Connection, write: &Write) -> rusqlite::Result<bool> {
    let changed = match write {
        Write::Stock(level) => {
            let counters =
                [level.seeded, level.available, level.reserved, level.shipped, level.replenished, level.max_replenish]
                    .map(as_i64);
            let [seeded, available, reserved, shipped, replenished, max_replenish] = &counters;
            let fields: [(&str, &dyn ToSql); 6] = [
                ("seeded", seeded),
                ("available", available),
                ("reserved", reserved),
                ("shipped", shipped),
                ("replenished", replenished),
                ("max_replenish", max_replenish),
            ];
            put_versioned(tx, "stock", ("sku", &level.sku.as_str()), &fields, level.version)?
        }
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
            let (id, items) = (reservation.order_id.to_string(), to_json(&reservation.items));
            let fields: [(&str, &dyn ToSql); 2] = [("items", &items), ("state", &reservation.state.as_str())];
            put_versioned(tx, "reservations", ("order_id", &id), &fields, reservation.version)?
        }
        Write::Order(order) => {
            let (id, body) = (order.order_id.to_string(), to_json(order));
            put_versioned(tx, "orders", ("order_id", &id), &[("body", &body)], order.version)?
        }
        Write::Shipment(shipment) => {
            let id = shipment.order_id.to_string();
            let fields: [(&str, &dyn ToSql); 1] = [("tracking_number", &shipment.tracking_number)];
            put_versioned(tx, "shipments", ("order_id", &id), &fields, shipment.version)?
        }
    };
    Ok(changed == 1)
}

/// A versioned write, as the port states it: read version 0 inserts the
/// record if it is absent; a later one rewrites it only while it is still at
/// that version. Either way the stored version becomes the read one + 1.
/// Answers the rows changed (0: the record moved, or exists already).
fn put_versioned(
    tx: &Connection,
    table: &str,
    (key_column, key): (&str, &dyn ToSql),
    fields: &[(&str, &dyn ToSql)],
    read_version: u64,
) -> rusqlite::Result<usize> {
    let columns: Vec<&str> = fields.iter().map(|(column, _)| *column).collect();
    let mut values: Vec<&dyn ToSql> = std::iter::once(key).chain(fields.iter().map(|(_, value)| *value)).collect();
    let sql = if read_version == 0 {
        let placeholders: Vec<String> = (1..=values.len()).map(|index| format!("?{index}")).collect();
        format!(
            "INSERT INTO {table} ({key_column}, {}, version) VALUES ({}, 1) ON CONFLICT DO NOTHING",
            columns.join(", "),
            placeholders.join(", ")
        )
    } else {
        let sets: Vec<String> =
            columns.iter().enumerate().map(|(index, column)| format!("{column} = ?{}", index + 2)).collect();
        format!(
            "UPDATE {table} SET {}, version = version + 1 WHERE {key_column} = ?1 AND version = ?{}",
            sets.join(", "),
            values.len() + 1
        )
    };
    let version = as_i64(read_version);
    if read_version != 0 {
        values.push(&version);
    }
    tx.prepare_cached(&sql)?.execute(values.as_slice())
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

/// Runs inside the writer's transaction; only `Committed` keeps its changes
/// (the writer rolls the job's savepoint back otherwise).
pub(super) fn commit_in(tx: &Connection, commit: &Commit) -> Result<CommitOutcome, StoreError> {
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
                to_json(&commit.emitted),
                commit.is_published_when_committed(),
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
    if commit.writes_a_record_twice() {
        return Ok(CommitOutcome::Conflict);
    }
    for write in &commit.writes {
        if !apply(tx, write).map_err(unavailable)? {
            return Ok(CommitOutcome::Conflict);
        }
    }
    Ok(CommitOutcome::Committed)
}
