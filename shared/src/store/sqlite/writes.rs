//! A commit on SQLite: the SQL of each write, and the commit that runs them
//! with the processed record inside the writer's transaction.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};

use super::threads::unavailable;
use super::{as_i64, from_json, to_json};
use crate::contract::events::Event;
use crate::store::{Commit, CommitOutcome, StoreError, Write};

/// Applies one write; `false` when the record moved since it was read (a
/// versioned write) or a stock delta cannot apply.
pub(super) fn apply(tx: &Connection, write: &Write) -> rusqlite::Result<bool> {
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
                (reservation.order_id.to_string(), to_json(&reservation.items), reservation.state.as_str());
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

pub(super) fn decode_events(text: &str) -> Result<Vec<Event>, StoreError> {
    from_json(text)
}

/// Runs inside the writer's transaction; only `Committed` keeps its changes.
pub(super) fn commit_in(tx: &Connection, commit: &Commit) -> Result<CommitOutcome, StoreError> {
    let previous: Option<String> = tx
        .prepare_cached("SELECT emitted FROM processed WHERE function = ?1 AND key = ?2")
        .and_then(|mut statement| {
            statement.query_row(params![commit.function.name(), commit.key], |row| row.get(0)).optional()
        })
        .map_err(unavailable)?;
    if let Some(previous) = previous {
        return Ok(CommitOutcome::Duplicate(decode_events(&previous)?));
    }
    if commit.writes_a_record_twice() {
        return Ok(CommitOutcome::Conflict);
    }
    for write in &commit.writes {
        if !apply(tx, write).map_err(unavailable)? {
            return Ok(CommitOutcome::Conflict);
        }
    }
    let published = commit.is_published_when_committed();
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
