//! Dead letters on DynamoDB: items of the `processed` table of their own
//! kind, keyed `dead-letter#<function>#<event id>`, so no table is added to
//! the deployment (on AWS the broker parks dead letters; only `choreo up`
//! on DynamoDB writes these). They ride the sparse `outbox` index under
//! partitions of their own, `dead` (parked) and `replay` (replay requested),
//! sorted by when they were parked, so listing them is a Query and the
//! relay, which reads only the `pending` partition, never sees them.
//! Attributes: `function`, `key` (the event id), `event` (S, the CloudEvent
//! JSON), `error` (S), `attempts` (N), `outbox`, `committed_at` (N, parked at,
//! Unix ms). No `expires_at`: a dead letter is kept until it is replayed.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::DynamoStore;
use super::codec::{FUNCTION, Fields, Item, KEY, number};
use super::errors::sdk_error;
use super::tables::{OUTBOX_INDEX, PROCESSED};
use crate::contract::choreography::Function;
use crate::contract::events::Event;
use crate::store::{LetterState, StoreError, StoredDeadLetter};

/// The event, as JSON.
const EVENT: &str = "event";
/// The last error.
const ERROR: &str = "error";
/// Attempts made.
const ATTEMPTS: &str = "attempts";

/// The item key of a dead letter.
fn letter_key(function: Function, event_id: &str) -> AttributeValue {
    AttributeValue::S(format!("dead-letter#{}#{event_id}", function.name()))
}

/// The index partition of a state.
fn partition(state: LetterState) -> &'static str {
    match state {
        LetterState::Parked => "dead",
        LetterState::Replaying => "replay",
    }
}

impl DynamoStore {
    pub(super) async fn put_dead_letter(&self, letter: &StoredDeadLetter) -> Result<(), StoreError> {
        let event =
            String::from_utf8(letter.event.to_json()).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let item = Item::from([
            (PROCESSED.partition_key.name.to_owned(), letter_key(letter.function, &letter.event.id.to_string())),
            (FUNCTION.to_owned(), AttributeValue::S(letter.function.name().to_owned())),
            (KEY.to_owned(), AttributeValue::S(letter.event.id.to_string())),
            (EVENT.to_owned(), AttributeValue::S(event)),
            (ERROR.to_owned(), AttributeValue::S(letter.error.clone())),
            (ATTEMPTS.to_owned(), number(u64::from(letter.attempts))),
            (OUTBOX_INDEX.partition_key.name.to_owned(), AttributeValue::S(partition(LetterState::Parked).to_owned())),
            (OUTBOX_INDEX.sort_key.name.to_owned(), number(Utc::now().timestamp_millis().unsigned_abs())),
        ]);
        self.client
            .put_item()
            .table_name(&self.processed)
            .set_item(Some(item))
            .send()
            .await
            .map(drop)
            .map_err(|error| sdk_error(&format!("PutItem {}", self.processed), error))
    }

    pub(super) async fn query_dead_letters(
        &self,
        state: LetterState,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let table = &self.processed;
        let mut letters = Vec::new();
        let mut start = None;
        while letters.len() < limit {
            let output = self
                .client
                .query()
                .table_name(table)
                .index_name(OUTBOX_INDEX.name)
                .key_condition_expression("#outbox = :state")
                .expression_attribute_names("#outbox", OUTBOX_INDEX.partition_key.name)
                .expression_attribute_values(":state", AttributeValue::S(partition(state).to_owned()))
                .limit(i32::try_from(limit - letters.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| sdk_error(&format!("Query {table} index {}", OUTBOX_INDEX.name), error))?;
            for item in output.items.unwrap_or_default() {
                letters.push(dead_letter(table, &item)?);
            }
            start = output.last_evaluated_key.filter(|key| !key.is_empty());
            if start.is_none() {
                break;
            }
        }
        Ok(letters)
    }

    pub(super) async fn request_replay(
        &self,
        function: Option<Function>,
        event_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut requested = 0;
        let parked = self.query_dead_letters(LetterState::Parked, usize::MAX).await?;
        let wanted = parked.iter().filter(|letter| {
            function.is_none_or(|function| function == letter.function)
                && event_id.is_none_or(|id| id == letter.event.id.to_string())
        });
        for letter in wanted {
            let result = self
                .client
                .update_item()
                .table_name(&self.processed)
                .key(PROCESSED.partition_key.name, letter_key(letter.function, &letter.event.id.to_string()))
                .update_expression("SET #outbox = :replay")
                // Only a letter still parked: one replayed meanwhile is not counted twice.
                .condition_expression("#outbox = :dead")
                .expression_attribute_names("#outbox", OUTBOX_INDEX.partition_key.name)
                .expression_attribute_values(":replay", AttributeValue::S(partition(LetterState::Replaying).to_owned()))
                .expression_attribute_values(":dead", AttributeValue::S(partition(LetterState::Parked).to_owned()))
                .send()
                .await;
            match result {
                Ok(_) => requested += 1,
                Err(error) if error.code() == Some("ConditionalCheckFailedException") => {}
                Err(error) => return Err(sdk_error(&format!("UpdateItem {}", self.processed), error)),
            }
        }
        Ok(requested)
    }

    pub(super) async fn delete_dead_letter(&self, function: Function, event_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.processed)
            .key(PROCESSED.partition_key.name, letter_key(function, event_id))
            .send()
            .await
            .map(drop)
            .map_err(|error| sdk_error(&format!("DeleteItem {}", self.processed), error))
    }
}

fn dead_letter(table: &str, item: &Item) -> Result<StoredDeadLetter, StoreError> {
    let fields = Fields::of(table, item);
    let name = fields.text(FUNCTION)?;
    let function = Function::from_name(name)
        .ok_or_else(|| StoreError::Corrupt(format!("{table}: dead letter of unknown function '{name}'")))?;
    let event = Event::from_json(fields.text(EVENT)?.as_bytes())
        .map_err(|error| StoreError::Corrupt(format!("{table}: dead letter does not decode: {error}")))?;
    let attempts = u32::try_from(fields.number(ATTEMPTS)?).unwrap_or(u32::MAX);
    Ok(StoredDeadLetter { function, event, error: fields.text(ERROR)?.to_owned(), attempts })
}
