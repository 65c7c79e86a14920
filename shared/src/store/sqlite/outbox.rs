//! The outbox on SQLite: paged reads, setting an entry aside, pruning.
//!
//! `processed.published` is the entry's state: 0 in the outbox, 1 published,
//! 2 set aside (its reason in the `set_aside` table). Only state 1 is pruned.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::threads::unavailable;
use super::writes::decode_events;
use crate::contract::choreography::Function;
use crate::store::{OutboxCursor, OutboxEntry, OutboxPage, StoreError, UndecodableEntry};

/// Most records one pruning write deletes.
const PRUNE_BATCH: usize = 1000;

/// One page of the outbox, ordered by (committed_at, function, key).
pub(super) fn read_page(
    connection: &Connection,
    committed_before: DateTime<Utc>,
    after: Option<&OutboxCursor>,
    limit: usize,
) -> Result<OutboxPage, StoreError> {
    let (after_ms, after_function, after_key) = match after {
        Some(cursor) => (cursor.committed_at_ms, cursor.function.as_str(), cursor.key.as_str()),
        None => (i64::MIN, "", ""),
    };
    let mut statement = connection
        .prepare_cached(
            "SELECT function, key, emitted, committed_at FROM processed
             WHERE published = 0 AND committed_at < ?1 AND (committed_at, function, key) > (?2, ?3, ?4)
             ORDER BY committed_at, function, key LIMIT ?5",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map(
            params![
                committed_before.timestamp_millis(),
                after_ms,
                after_function,
                after_key,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get(3)?)),
        )
        .map_err(unavailable)?;
    let mut page = OutboxPage::default();
    let mut count = 0;
    let mut last = None;
    for row in rows {
        let (function, key, emitted, committed_at_ms) = row.map_err(unavailable)?;
        count += 1;
        match (Function::from_name(&function), decode_events(&emitted)) {
            (Some(known), Ok(events)) => {
                page.entries.push(OutboxEntry { function: known, key: key.clone(), events });
            }
            (None, _) => page.undecodable.push(UndecodableEntry {
                function: function.clone(),
                key: key.clone(),
                reason: format!("unknown function '{function}'"),
            }),
            (Some(_), Err(error)) => page.undecodable.push(UndecodableEntry {
                function: function.clone(),
                key: key.clone(),
                reason: format!("events do not decode: {error}"),
            }),
        }
        last = Some(OutboxCursor { committed_at_ms, function, key });
    }
    page.next = if count == limit { last } else { None };
    Ok(page)
}

/// Takes an entry out of the outbox for good, recording why; a published or
/// unknown entry is left as it is.
pub(super) fn set_aside_in(connection: &Connection, function: &str, key: &str, reason: &str) -> Result<(), StoreError> {
    let changed = connection
        .prepare_cached("UPDATE processed SET published = 2 WHERE function = ?1 AND key = ?2 AND published = 0")
        .and_then(|mut statement| statement.execute(params![function, key]))
        .map_err(unavailable)?;
    if changed == 1 {
        connection
            .prepare_cached(
                "INSERT OR REPLACE INTO set_aside (function, key, reason, set_aside_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut statement| statement.execute(params![function, key, reason, Utc::now().timestamp_millis()]))
            .map_err(unavailable)?;
    }
    Ok(())
}

/// What one pruning write did.
pub(super) struct Pruned {
    /// Records deleted.
    pub(super) count: usize,
    /// Whether a full batch was deleted (more may be left).
    pub(super) more: bool,
}

/// Deletes up to one batch of published records committed before `cutoff`.
pub(super) fn prune_batch(connection: &Connection, cutoff: DateTime<Utc>) -> Result<Pruned, StoreError> {
    let count = connection
        .prepare_cached(
            "DELETE FROM processed WHERE (function, key) IN
             (SELECT function, key FROM processed WHERE published = 1 AND committed_at < ?1 LIMIT ?2)",
        )
        .and_then(|mut statement| {
            statement.execute(params![cutoff.timestamp_millis(), i64::try_from(PRUNE_BATCH).unwrap_or(i64::MAX)])
        })
        .map_err(unavailable)?;
    Ok(Pruned { count, more: count == PRUNE_BATCH })
}
