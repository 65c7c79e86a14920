//! DynamoDB adapter of the `Store` port: the deployed store. The tables are
//! declared in `tables`, records translate to items in `codec`, and a commit
//! is one transaction (`transaction`, whose doc says how each rule of the
//! port is kept).

mod codec;
mod dead_letters;
mod errors;
mod notes;
mod open_orders;
mod tables;
mod transaction;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use chrono::{DateTime, Utc};

use self::codec::*;
use self::errors::{invalid_request, sdk_error};
use self::transaction::{Cancellation, classify};
use crate::contract::choreography::Function;
use crate::contract::domain::{OrderId, Sku};
use crate::contract::events::Event;
use crate::store::{
    Commit, CommitOutcome, DEFAULT_PROCESSED_RETENTION, LetterState, OrderRecord, OutboxCursor, OutboxEntry,
    OutboxPage, Reservation, SeedStock, Shipment, StockLevel, Store, StoreError, StoredDeadLetter, UndecodableEntry,
};

use self::tables::PENDING;
pub use self::tables::{
    DEFAULT_TABLE_PREFIX, EXPIRES_AT, IndexSpec, KeyAttribute, KeyAttributeType, ORDERS, OUTBOX_INDEX, PROCESSED,
    RESERVATIONS, SHIPMENTS, STOCK, TABLES, TableSpec,
};
pub use self::transaction::MAX_TRANSACTION_ITEMS;

/// The `Store` on DynamoDB. Cheap to clone (the client is a handle); build it
/// once per process (Lambda init) and share it.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    /// The SDK client: a cheap handle, shared by clones.
    client: Client,
    /// Prefix of every table name, so several stacks (or tests) share an account.
    prefix: String,
    /// Full table names, computed once.
    stock: String,
    /// Full name of the reservations table.
    reservations: String,
    /// Full name of the orders table.
    orders: String,
    /// Full name of the shipments table.
    shipments: String,
    /// Full name of the processed-events table (idempotency and outbox).
    processed: String,
    /// How long a published processed record lives (its `expires_at`).
    retention: Duration,
}

impl DynamoStore {
    /// A store over the tables `<prefix>stock`, … Makes no request.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            stock: STOCK.name(&prefix),
            reservations: RESERVATIONS.name(&prefix),
            orders: ORDERS.name(&prefix),
            shipments: SHIPMENTS.name(&prefix),
            processed: PROCESSED.name(&prefix),
            client,
            prefix,
            retention: DEFAULT_PROCESSED_RETENTION,
        }
    }

    /// The same store, expiring published processed records after `retention`.
    pub fn with_retention(self, retention: Duration) -> Self {
        Self { retention, ..self }
    }

    /// `expires_at` of a record published now: epoch seconds.
    fn expires_at(&self) -> AttributeValue {
        number(Utc::now().timestamp().unsigned_abs().saturating_add(self.retention.as_secs()))
    }

    /// The full name of `table` for this store's prefix.
    pub fn table_name(&self, table: &TableSpec) -> String {
        table.name(&self.prefix)
    }

    async fn get(&self, table: &str, key: KeyAttribute, value: String) -> Result<Option<Item>, StoreError> {
        self.client
            .get_item()
            .table_name(table)
            .key(key.name, AttributeValue::S(value))
            .consistent_read(true)
            .send()
            .await
            .map(|output| output.item)
            .map_err(|error| sdk_error(&format!("GetItem {table}"), error))
    }

    /// Every item of `table` (paginated Scan), strongly consistent.
    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| sdk_error(&format!("Scan {table}"), error))?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key.filter(|key| !key.is_empty());
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn processed(&self, function: Function, key: &str) -> Result<Option<Vec<Event>>, StoreError> {
        let item = self.get(&self.processed, PROCESSED.partition_key, processed_key(function, key)).await?;
        item.map(|item| emitted(&self.processed, &item)).transpose()
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        if commit.writes.len() >= MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Corrupt(format!(
                "{} under key {}: {} writes cannot commit atomically (DynamoDB transactions hold {} items, \
                 one of them the processed record)",
                commit.function,
                commit.key,
                commit.writes.len(),
                MAX_TRANSACTION_ITEMS
            )));
        }
        if commit.writes_a_record_twice() {
            return Ok(CommitOutcome::Conflict);
        }
        let mut items = Vec::with_capacity(commit.writes.len() + 1);
        items.push(self.processed_put(&commit)?); // first: cancellation reason 0 is the duplicate check
        for write in &commit.writes {
            items.push(self.write_item(write)?);
        }
        let error = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(CommitOutcome::Committed),
            Err(error) => error,
        };
        let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() else {
            return Err(sdk_error("TransactWriteItems", error));
        };
        let reasons = cancelled.cancellation_reasons();
        let codes: Vec<Option<&str>> = reasons.iter().map(|reason| reason.code()).collect();
        match classify(&codes) {
            Cancellation::Duplicate => {
                let first_run = match reasons.first().and_then(|reason| reason.item()) {
                    Some(item) => Some(emitted(&self.processed, item)?),
                    None => self.processed(commit.function, &commit.key).await?,
                };
                // The record vanished between the cancellation and the read (it is
                // never deleted): let the step run again.
                Ok(first_run.map_or(CommitOutcome::Conflict, CommitOutcome::Duplicate))
            }
            Cancellation::Conflict => Ok(CommitOutcome::Conflict),
            Cancellation::Unavailable(codes) => {
                Err(StoreError::Unavailable(format!("DynamoDB TransactWriteItems cancelled: {codes}")))
            }
            Cancellation::Rejected(codes) => {
                Err(StoreError::Corrupt(format!("DynamoDB TransactWriteItems rejected the commit: {codes}")))
            }
        }
    }

    async fn unpublished_page(
        &self,
        committed_before: DateTime<Utc>,
        after: Option<OutboxCursor>,
        limit: usize,
    ) -> Result<OutboxPage, StoreError> {
        let table = &self.processed;
        // The index's own position of the last entry read: table key + index keys.
        let start = after.map(|cursor| {
            Item::from([
                (
                    PROCESSED.partition_key.name.to_owned(),
                    AttributeValue::S(format!("{}#{}", cursor.function, cursor.key)),
                ),
                (OUTBOX_INDEX.partition_key.name.to_owned(), AttributeValue::S(PENDING.to_owned())),
                (OUTBOX_INDEX.sort_key.name.to_owned(), AttributeValue::N(cursor.committed_at_ms.to_string())),
            ])
        });
        let output = self
            .client
            .query()
            .table_name(table)
            .index_name(OUTBOX_INDEX.name)
            .key_condition_expression("#outbox = :pending AND #committed_at < :before")
            .expression_attribute_names("#outbox", OUTBOX_INDEX.partition_key.name)
            .expression_attribute_names("#committed_at", OUTBOX_INDEX.sort_key.name)
            .expression_attribute_values(":pending", AttributeValue::S(PENDING.to_owned()))
            .expression_attribute_values(":before", number(committed_before.timestamp_millis().max(0).unsigned_abs()))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|error| sdk_error(&format!("Query {table} index {}", OUTBOX_INDEX.name), error))?;
        let mut page = OutboxPage::default();
        let mut last = None;
        for item in output.items.unwrap_or_default() {
            let fields = Fields::of(table, &item);
            // Without these the record cannot even be named: the index holds
            // only records this adapter wrote, so that is a corrupt table.
            let name = fields.text(FUNCTION)?.to_owned();
            let key = fields.text(KEY)?.to_owned();
            let committed_at_ms = i64::try_from(fields.number(OUTBOX_INDEX.sort_key.name)?).unwrap_or(i64::MAX);
            match (Function::from_name(&name), emitted(table, &item)) {
                (Some(function), Ok(events)) => page.entries.push(OutboxEntry { function, key: key.clone(), events }),
                (None, _) => page.undecodable.push(UndecodableEntry {
                    function: name.clone(),
                    key: key.clone(),
                    reason: format!("unknown function '{name}'"),
                }),
                (Some(_), Err(error)) => page.undecodable.push(UndecodableEntry {
                    function: name.clone(),
                    key: key.clone(),
                    reason: format!("events do not decode: {error}"),
                }),
            }
            last = Some(OutboxCursor { committed_at_ms, function: name, key });
        }
        page.next = output.last_evaluated_key.filter(|key| !key.is_empty()).and(last);
        Ok(page)
    }

    async fn set_aside(&self, function: &str, key: &str, reason: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.processed)
            .key(PROCESSED.partition_key.name, AttributeValue::S(format!("{function}#{key}")))
            // Out of the index for good, kept for good (no TTL), with its reason.
            .update_expression("SET #reason = :reason, #at = :at REMOVE #outbox, #expires_at")
            // Only an entry still in the outbox: a published one stays published.
            .condition_expression("attribute_exists(#outbox)")
            .expression_attribute_names("#reason", SET_ASIDE)
            .expression_attribute_names("#at", SET_ASIDE_AT)
            .expression_attribute_names("#outbox", OUTBOX_INDEX.partition_key.name)
            .expression_attribute_names("#expires_at", EXPIRES_AT)
            .expression_attribute_values(":reason", AttributeValue::S(reason.to_owned()))
            .expression_attribute_values(":at", number(Utc::now().timestamp_millis().unsigned_abs()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(()), // settled meanwhile
            Err(error) => Err(sdk_error(&format!("UpdateItem {}", self.processed), error)),
        }
    }

    /// DynamoDB expires published records itself (TTL on `expires_at`).
    async fn prune_processed(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// See `notes.rs` (the TTL expires them too).
    async fn note_delivery(&self, note: &crate::store::DeliveryNote) -> Result<(), StoreError> {
        self.append_note(note).await
    }

    async fn delivery_notes(&self, order_id: OrderId) -> Result<Vec<crate::store::DeliveryNote>, StoreError> {
        self.notes_of(order_id).await
    }

    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.processed)
            .key(PROCESSED.partition_key.name, AttributeValue::S(processed_key(function, key)))
            // Leaving the sparse index is what takes the entry out of the outbox.
            .update_expression("SET #published = :true, #expires_at = :expires_at REMOVE #outbox")
            // Without it an unknown key would create a half record.
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_names("#outbox", OUTBOX_INDEX.partition_key.name)
            .expression_attribute_names("#pk", PROCESSED.partition_key.name)
            .expression_attribute_names("#expires_at", EXPIRES_AT)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":expires_at", self.expires_at())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(()), // unknown key: nothing to mark
            Err(error) => Err(sdk_error(&format!("UpdateItem {}", self.processed), error)),
        }
    }

    async fn park_dead_letter(&self, letter: &StoredDeadLetter) -> Result<(), StoreError> {
        self.put_dead_letter(letter).await
    }

    async fn dead_letters(&self, state: LetterState, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.query_dead_letters(state, limit).await
    }

    async fn replay_dead_letters(
        &self,
        function: Option<Function>,
        event_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.request_replay(function, event_id).await
    }

    async fn discard_dead_letter(&self, function: Function, event_id: &str) -> Result<(), StoreError> {
        self.delete_dead_letter(function, event_id).await
    }

    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, StoreError> {
        let table = &self.stock;
        let mut unique: Vec<&str> = skus.iter().map(Sku::as_str).collect();
        unique.sort_unstable();
        unique.dedup(); // BatchGetItem refuses a key twice
        let mut found: HashMap<String, StockLevel> = HashMap::with_capacity(unique.len());
        // BatchGetItem reads at most 100 keys per request.
        for chunk in unique.chunks(100) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|sku| Item::from([(STOCK.partition_key.name.to_owned(), AttributeValue::S((*sku).to_owned()))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(invalid_request)?,
            );
            let mut throttled = 0;
            while let Some(keys) = request.take() {
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(table, keys)
                    .send()
                    .await
                    .map_err(|error| sdk_error(&format!("BatchGetItem {table}"), error))?;
                for item in output.responses.and_then(|mut responses| responses.remove(table)).unwrap_or_default() {
                    let level = stock_level(table, &item)?;
                    found.insert(level.sku.as_str().to_owned(), level);
                }
                // Keys DynamoDB did not get to (throttling): ask again after a pause.
                request = output
                    .unprocessed_keys
                    .and_then(|mut rest| rest.remove(table))
                    .filter(|rest| !rest.keys.is_empty());
                if request.is_some() {
                    throttled += 1;
                    if throttled > 8 {
                        return Err(StoreError::Unavailable(format!("BatchGetItem {table}: keys left unprocessed")));
                    }
                    tokio::time::sleep(Duration::from_millis(20 << throttled)).await;
                }
            }
        }
        // In the order asked, like the SQLite adapter.
        Ok(skus.iter().filter_map(|sku| found.get(sku.as_str()).cloned()).collect())
    }

    async fn all_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        let mut levels: Vec<StockLevel> = self
            .scan_all(&self.stock)
            .await?
            .iter()
            .map(|item| stock_level(&self.stock, item))
            .collect::<Result<_, _>>()?;
        levels.sort_by(|a, b| a.sku.as_str().cmp(b.sku.as_str()));
        Ok(levels)
    }

    async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        let item = self.get(&self.reservations, RESERVATIONS.partition_key, order_id.to_string()).await?;
        item.map(|item| reservation(&self.reservations, &item)).transpose()
    }

    /// Seeds when the stock table is empty. Each SKU is written only if absent,
    /// so two processes seeding at once never overwrite each other (each then
    /// reports the SKUs it wrote); unlike SQLite the seeding is not one
    /// transaction, which for a catalog is harmless.
    async fn seed_if_empty(&self, catalog: &[SeedStock]) -> Result<usize, StoreError> {
        let table = &self.stock;
        let any = self
            .client
            .scan()
            .table_name(table)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| sdk_error(&format!("Scan {table}"), error))?;
        if any.items.is_some_and(|items| !items.is_empty()) {
            return Ok(0);
        }
        let mut skus = HashSet::new();
        if let Some(twice) = catalog.iter().find(|entry| !skus.insert(entry.sku.as_str())) {
            return Err(StoreError::Corrupt(format!("SKU {} appears twice in the catalog", twice.sku)));
        }
        let mut written = 0;
        for entry in catalog {
            let mut item = stock_item(&entry.initial_level());
            item.insert(VERSION.to_owned(), number(1));
            let result = self
                .client
                .put_item()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", STOCK.partition_key.name)
                .send()
                .await;
            match result {
                Ok(_) => written += 1,
                Err(error) if error.code() == Some("ConditionalCheckFailedException") => {} // seeded meanwhile
                Err(error) => return Err(sdk_error(&format!("PutItem {table}"), error)),
            }
        }
        Ok(written)
    }

    async fn put_stock(&self, level: &StockLevel) -> Result<bool, StoreError> {
        let table = &self.stock;
        let mut item = stock_item(level);
        item.insert(VERSION.to_owned(), number(level.version + 1));
        let put = self.client.put_item().table_name(table).set_item(Some(item));
        let put = if level.version == 0 {
            put.condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", STOCK.partition_key.name)
        } else {
            put.condition_expression("#version = :read")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":read", number(level.version))
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(error) => Err(sdk_error(&format!("PutItem {table}"), error)),
        }
    }

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let item = self.get(&self.orders, ORDERS.partition_key, order_id.to_string()).await?;
        item.map(|item| order(&self.orders, &item)).transpose()
    }

    async fn open_orders_page(
        &self,
        created_before: DateTime<Utc>,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<crate::store::OpenOrdersPage, StoreError> {
        self.scan_open_orders(created_before, after, limit).await
    }

    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError> {
        let item = self.get(&self.shipments, SHIPMENTS.partition_key, order_id.to_string()).await?;
        item.map(|item| shipment(&self.shipments, &item)).transpose()
    }
}
