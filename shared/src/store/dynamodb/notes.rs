//! Delivery notes on DynamoDB (`store::deliveries`): one item per order in
//! the `processed` table, `pk` = `delivery-notes#<order id>` (no function is
//! named so, so it never meets a processed record), its notes a list `notes`
//! of JSON strings appended by `UpdateItem`, and `expires_at` renewed with
//! each note so the table's TTL drops them with the records they annotate.
//! One GetItem reads an order's notes; no table or index is added.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DynamoStore;
use super::errors::sdk_error;
use super::tables::{EXPIRES_AT, PROCESSED};
use crate::contract::choreography::Function;
use crate::contract::domain::OrderId;
use crate::store::{DeliveryNote, DeliveryOutcome, StoreError};

/// The list attribute holding an order's notes.
const NOTES: &str = "notes";

fn notes_key(order_id: OrderId) -> String {
    format!("delivery-notes#{order_id}")
}

/// A note as stored: plain strings, read back through the domain's parsers.
#[derive(Serialize, Deserialize)]
struct StoredNote {
    /// `DeliveryNote::event_id`.
    event_id: Uuid,
    /// The function's name.
    function: String,
    /// `DeliveryOutcome::as_str`.
    outcome: String,
    /// `DeliveryNote::detail`.
    detail: String,
    /// `DeliveryNote::at`.
    at: DateTime<Utc>,
}

impl DynamoStore {
    pub(super) async fn append_note(&self, note: &DeliveryNote) -> Result<(), StoreError> {
        let stored = StoredNote {
            event_id: note.event_id,
            function: note.function.name().to_owned(),
            outcome: note.outcome.as_str().to_owned(),
            detail: note.detail.clone(),
            at: note.at,
        };
        let json = serde_json::to_string(&stored).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.client
            .update_item()
            .table_name(&self.processed)
            .key(PROCESSED.partition_key.name, AttributeValue::S(notes_key(note.order_id)))
            .update_expression(
                "SET #notes = list_append(if_not_exists(#notes, :none), :note), #expires_at = :expires_at",
            )
            .expression_attribute_names("#notes", NOTES)
            .expression_attribute_names("#expires_at", EXPIRES_AT)
            .expression_attribute_values(":none", AttributeValue::L(vec![]))
            .expression_attribute_values(":note", AttributeValue::L(vec![AttributeValue::S(json)]))
            .expression_attribute_values(":expires_at", self.expires_at())
            .send()
            .await
            .map(drop)
            .map_err(|error| sdk_error(&format!("UpdateItem {}", self.processed), error))
    }

    pub(super) async fn notes_of(&self, order_id: OrderId) -> Result<Vec<DeliveryNote>, StoreError> {
        let Some(item) = self.get(&self.processed, PROCESSED.partition_key, notes_key(order_id)).await? else {
            return Ok(vec![]);
        };
        let corrupt = |what: String| StoreError::Corrupt(format!("{} notes of {order_id}: {what}", self.processed));
        let Some(AttributeValue::L(values)) = item.get(NOTES) else {
            return Err(corrupt("no notes list".into()));
        };
        let mut notes = Vec::with_capacity(values.len());
        for value in values {
            let AttributeValue::S(json) = value else { return Err(corrupt("a note is not a string".into())) };
            let stored: StoredNote = serde_json::from_str(json).map_err(|error| corrupt(error.to_string()))?;
            notes.push(DeliveryNote {
                order_id,
                event_id: stored.event_id,
                function: Function::from_name(&stored.function)
                    .ok_or_else(|| corrupt(format!("unknown function '{}'", stored.function)))?,
                outcome: DeliveryOutcome::parse(&stored.outcome)
                    .ok_or_else(|| corrupt(format!("unknown outcome '{}'", stored.outcome)))?,
                detail: stored.detail,
                at: stored.at,
            });
        }
        notes.sort_by_key(|note| note.at);
        Ok(notes)
    }
}
