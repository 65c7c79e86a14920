//! Delivery notes on SQLite (`store::deliveries`): the `delivery_notes`
//! table, read per order for its timeline.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::threads::unavailable;
use crate::contract::choreography::Function;
use crate::contract::domain::OrderId;
use crate::store::{DeliveryNote, DeliveryOutcome, StoreError};

/// The table, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivery_notes (
    order_id TEXT NOT NULL, event_id TEXT NOT NULL, function TEXT NOT NULL, outcome TEXT NOT NULL,
    detail TEXT NOT NULL, at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_notes_order ON delivery_notes (order_id, at);
CREATE INDEX IF NOT EXISTS delivery_notes_at ON delivery_notes (at);
";

pub(super) fn note(connection: &Connection, note: &DeliveryNote) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO delivery_notes (order_id, event_id, function, outcome, detail, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                note.order_id.to_string(),
                note.event_id.to_string(),
                note.function.name(),
                note.outcome.as_str(),
                note.detail,
                note.at.timestamp_micros()
            ])
        })
        .map(drop)
        .map_err(unavailable)
}

/// Deletes the notes from before `cutoff`; answers how many.
pub(super) fn prune(connection: &Connection, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
    connection
        .prepare_cached("DELETE FROM delivery_notes WHERE at < ?1")
        .and_then(|mut statement| statement.execute([cutoff.timestamp_micros()]))
        .map_err(unavailable)
}

pub(super) fn of_order(connection: &Connection, order_id: OrderId) -> Result<Vec<DeliveryNote>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT event_id, function, outcome, detail, at FROM delivery_notes WHERE order_id = ?1 ORDER BY at",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map([order_id.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .map_err(unavailable)?;
    let corrupt = |what: String| StoreError::Corrupt(format!("delivery note: {what}"));
    let mut notes = Vec::new();
    for row in rows {
        let (event_id, function, outcome, detail, at) = row.map_err(unavailable)?;
        notes.push(DeliveryNote {
            order_id,
            event_id: Uuid::parse_str(&event_id).map_err(|error| corrupt(error.to_string()))?,
            function: Function::from_name(&function)
                .ok_or_else(|| corrupt(format!("unknown function '{function}'")))?,
            outcome: DeliveryOutcome::parse(&outcome).ok_or_else(|| corrupt(format!("unknown outcome '{outcome}'")))?,
            detail,
            at: DateTime::<Utc>::from_timestamp_micros(at).ok_or_else(|| corrupt(format!("bad time {at}")))?,
        });
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;

    fn note(order_id: OrderId, hours_ago: i64, outcome: DeliveryOutcome) -> DeliveryNote {
        DeliveryNote {
            order_id,
            event_id: Uuid::now_v7(),
            function: Function::ShipOrder,
            outcome,
            detail: "why".into(),
            at: Utc::now() - chrono::Duration::hours(hours_ago),
        }
    }

    #[tokio::test]
    async fn notes_are_read_per_order_oldest_first_and_pruned_past_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("notes.db")).unwrap().with_retention(Duration::from_secs(3600));
        let (order, other) = (OrderId::new(), OrderId::new());
        let (old, new) = (note(order, 2, DeliveryOutcome::Retried), note(order, 0, DeliveryOutcome::Duplicate));
        for note in [&new, &old, &note(other, 0, DeliveryOutcome::DeadLettered)] {
            store.note_delivery(note).await.unwrap();
        }
        let read = store.delivery_notes(order).await.unwrap();
        assert_eq!(read.iter().map(|note| note.outcome).collect::<Vec<_>>(), [old.outcome, new.outcome]);
        assert_eq!(read[1].event_id, new.event_id);
        assert_eq!(store.prune_delivery_notes().await.unwrap(), 1);
        assert_eq!(store.delivery_notes(order).await.unwrap().len(), 1);
        assert_eq!(store.delivery_notes(other).await.unwrap().len(), 1);
    }
}
