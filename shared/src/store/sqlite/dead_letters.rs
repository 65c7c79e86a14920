//! Dead letters on SQLite: the `dead_letters` table, one row per (function,
//! event id), `replaying` 0 (parked) or 1 (replay requested).

use chrono::Utc;
use rusqlite::{Connection, params};

use super::threads::unavailable;
use crate::contract::choreography::Function;
use crate::contract::events::Event;
use crate::store::{LetterState, StoreError, StoredDeadLetter};

/// The table, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dead_letters (
    function TEXT NOT NULL, event_id TEXT NOT NULL, event TEXT NOT NULL, error TEXT NOT NULL,
    attempts INTEGER NOT NULL, parked_at INTEGER NOT NULL, replaying INTEGER NOT NULL,
    PRIMARY KEY (function, event_id)
) WITHOUT ROWID;
";

pub(super) fn park(connection: &Connection, letter: &StoredDeadLetter) -> Result<(), StoreError> {
    let event = String::from_utf8(letter.event.to_json()).map_err(|error| StoreError::Corrupt(error.to_string()))?;
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO dead_letters (function, event_id, event, error, attempts, parked_at, replaying)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                letter.function.name(),
                letter.event.id.to_string(),
                event,
                letter.error,
                letter.attempts,
                Utc::now().timestamp_millis()
            ])
        })
        .map(drop)
        .map_err(unavailable)
}

pub(super) fn list(
    connection: &Connection,
    state: LetterState,
    limit: usize,
) -> Result<Vec<StoredDeadLetter>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT function, event, error, attempts FROM dead_letters WHERE replaying = ?1
             ORDER BY parked_at, function, event_id LIMIT ?2",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map(params![replaying(state), i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, u32>(3)?))
        })
        .map_err(unavailable)?;
    let mut letters = Vec::new();
    for row in rows {
        let (function, event, error, attempts) = row.map_err(unavailable)?;
        let function = Function::from_name(&function)
            .ok_or_else(|| StoreError::Corrupt(format!("dead letter of unknown function '{function}'")))?;
        let event = Event::from_json(event.as_bytes())
            .map_err(|error| StoreError::Corrupt(format!("dead letter does not decode: {error}")))?;
        letters.push(StoredDeadLetter { function, event, error, attempts });
    }
    Ok(letters)
}

pub(super) fn request_replay(
    connection: &Connection,
    function: Option<Function>,
    event_id: Option<&str>,
) -> Result<usize, StoreError> {
    connection
        .prepare_cached(
            "UPDATE dead_letters SET replaying = 1
             WHERE replaying = 0 AND (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR event_id = ?2)",
        )
        .and_then(|mut statement| statement.execute(params![function.map(Function::name), event_id]))
        .map_err(unavailable)
}

pub(super) fn discard(connection: &Connection, function: Function, event_id: &str) -> Result<(), StoreError> {
    connection
        .prepare_cached("DELETE FROM dead_letters WHERE function = ?1 AND event_id = ?2")
        .and_then(|mut statement| statement.execute(params![function.name(), event_id]))
        .map(drop)
        .map_err(unavailable)
}

fn replaying(state: LetterState) -> i64 {
    match state {
        LetterState::Parked => 0,
        LetterState::Replaying => 1,
    }
}
