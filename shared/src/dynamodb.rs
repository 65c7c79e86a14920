//! DynamoDB adapter of the `Store` port (DESIGN §6): the deployed store.
//!
//! # Tables
//!
//! One table per record kind, named `<prefix><suffix>` (prefix from
//! `CHOREO_TABLE_PREFIX`, default `choreo-`), all on-demand, all keyed by a
//! string partition key only. [`TABLES`] declares them once; `create_tables`
//! and the SAM template are derived from it.
//!
//! | table | partition key | other attributes |
//! |---|---|---|
//! | `stock` | `sku` (S) | `seeded`, `available`, `reserved`, `shipped`, `replenished`, `max_replenish`, `version` (N) |
//! | `reservations` | `order_id` (S) | `items` (S, JSON), `state` (S: `reserved`/`shipped`/`released`), `version` (N) |
//! | `orders` | `order_id` (S) | `body` (S, the `OrderRecord` as JSON), `version` (N) |
//! | `shipments` | `order_id` (S) | `tracking_number` (S), `version` (N) |
//! | `processed` | `pk` (S, `<function>#<key>`) | `function`, `key` (S), `emitted` (S, JSON array of events), `published` (BOOL), `committed_at` (N, Unix ms), `outbox` (S, see below) |
//!
//! The outbox is a *sparse* global secondary index `outbox` on `processed`:
//! partition key `outbox` (S, always `pending`), sort key `committed_at` (N),
//! projection ALL. Only processed records whose events are not yet published
//! carry the `outbox` attribute (`mark_published` removes it), so the index
//! holds exactly the outbox and `unpublished` is one Query instead of a Scan.
//! GSI reads are eventually consistent: an entry may show up (or linger) a
//! moment late, which the relay tolerates (it only sweeps entries older than a
//! grace period, and publishing twice is harmless: every consumer is
//! idempotent). The single `pending` partition of the index takes every
//! commit that emits events, about 1000 writes/s at most; past that, shard it
//! (`pending#0..n`) and query each shard.
//!
//! # Commits
//!
//! A `commit` is ONE `TransactWriteItems`: first a Put of the processed record
//! conditioned on `attribute_not_exists(pk)` (the idempotency key), then one
//! Put per versioned write, conditioned on `version = <version read>` (or on
//! the key not existing for version 0) and storing `version + 1`, and one
//! Update per stock delta: `ADD` of each counter's change and of 1 to the
//! version, conditioned on the SKU existing and on every counter the delta
//! lowers being at least that large (no version condition). Either all
//! of it is applied or none. When DynamoDB cancels the transaction, its
//! cancellation reasons (one per item, in order) decide the outcome:
//! a failed condition on the processed record is a `Duplicate` (the first
//! run's events come back with the cancellation, `ALL_OLD`); on a record (a
//! moved version, or a stock delta that would go negative or names an
//! unknown SKU), a `Conflict`; a `TransactionConflict` (another transaction on the same item
//! in flight) is a `Conflict` too; throttling is `Unavailable`, a rejected
//! request `Corrupt` (retrying cannot help).
//!
//! `TransactWriteItems` takes at most 100 items, so a commit holds at most 99
//! writes. The largest commit of the saga is a reservation: one stock write
//! per SKU of the order (at most 50 items, DESIGN §7) + the reservation + the
//! processed record = 52 items. A commit above the limit is refused as
//! `Corrupt` instead of being split (which would lose atomicity). DynamoDB
//! also refuses two operations on one item in a transaction; such a commit
//! answers `Conflict` without a request, as on SQLite.
//!
//! Step reads (`stock`, `reservation`, `order`, `shipment`, `processed`) are
//! strongly consistent, so a step decides on the latest committed versions
//! and conflicts only with commits that really raced it. No client request
//! token is set on the transaction: the processed record already makes a
//! retried transaction harmless (it answers `Duplicate` with the same events),
//! while a token reused by a redelivered event with a different decision
//! would fail with `IdempotentParameterMismatch` instead.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TableStatus, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use crate::choreography::{Function, Service};
use crate::domain::{OrderId, Sku};
use crate::events::Event;
use crate::ports::{
    Commit, CommitOutcome, OrderRecord, OutboxEntry, Reservation, ReservationState, SeedStock, Shipment, StockDelta,
    StockLevel, Store, StoreError, Write,
};

/// Table-name prefix when `CHOREO_TABLE_PREFIX` is not set.
pub const DEFAULT_TABLE_PREFIX: &str = "choreo-";

/// `TransactWriteItems` accepts at most this many items.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Type of a key attribute (DynamoDB `AttributeType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAttributeType {
    /// `S`
    String,
    /// `N`
    Number,
}

impl KeyAttributeType {
    /// The name DynamoDB and CloudFormation use: `S` or `N`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "S",
            Self::Number => "N",
        }
    }

    fn scalar(self) -> ScalarAttributeType {
        match self {
            Self::String => ScalarAttributeType::S,
            Self::Number => ScalarAttributeType::N,
        }
    }
}

/// A key attribute of a table or index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAttribute {
    pub name: &'static str,
    pub kind: KeyAttributeType,
}

/// A global secondary index; its projection is ALL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub partition_key: KeyAttribute,
    pub sort_key: KeyAttribute,
}

/// One table of the store. Every table has a partition key only, and is
/// billed on demand (`PAY_PER_REQUEST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The table's name after the prefix: `stock` → `choreo-stock`.
    pub suffix: &'static str,
    pub partition_key: KeyAttribute,
    /// The service whose functions write it (DESIGN §3); `None`: every
    /// function writes it (its own processed keys, scoped by function name).
    pub owner: Option<Service>,
    pub index: Option<IndexSpec>,
}

impl TableSpec {
    /// The full table name for `prefix`.
    pub fn name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.suffix)
    }

    /// Every attribute a key of the table or of its index uses (the
    /// `AttributeDefinitions` of the table).
    pub fn key_attributes(&self) -> Vec<KeyAttribute> {
        let mut attributes = vec![self.partition_key];
        if let Some(index) = self.index {
            attributes.extend([index.partition_key, index.sort_key]);
        }
        attributes
    }
}

const fn string_key(name: &'static str) -> KeyAttribute {
    KeyAttribute { name, kind: KeyAttributeType::String }
}

pub const STOCK: TableSpec =
    TableSpec { suffix: "stock", partition_key: string_key("sku"), owner: Some(Service::Inventory), index: None };
pub const RESERVATIONS: TableSpec = TableSpec {
    suffix: "reservations",
    partition_key: string_key("order_id"),
    owner: Some(Service::Inventory),
    index: None,
};
pub const ORDERS: TableSpec =
    TableSpec { suffix: "orders", partition_key: string_key("order_id"), owner: Some(Service::Orders), index: None };
pub const SHIPMENTS: TableSpec = TableSpec {
    suffix: "shipments",
    partition_key: string_key("order_id"),
    owner: Some(Service::Shipping),
    index: None,
};
/// The sparse index over unpublished processed records (the outbox).
pub const OUTBOX_INDEX: IndexSpec = IndexSpec {
    name: "outbox",
    partition_key: string_key("outbox"),
    sort_key: KeyAttribute { name: "committed_at", kind: KeyAttributeType::Number },
};
pub const PROCESSED: TableSpec =
    TableSpec { suffix: "processed", partition_key: string_key("pk"), owner: None, index: Some(OUTBOX_INDEX) };

/// Every table of the store, declared once.
pub const TABLES: [TableSpec; 5] = [STOCK, RESERVATIONS, ORDERS, SHIPMENTS, PROCESSED];

/// The value of the outbox index's partition key on unpublished records.
const PENDING: &str = "pending";

type Item = HashMap<String, AttributeValue>;

/// The `Store` on DynamoDB. Cheap to clone (the client is a handle); build it
/// once per process (Lambda init) and share it.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    /// Prefix of every table name, so several stacks (or tests) share an account.
    prefix: String,
    /// Full table names, computed once.
    stock: String,
    reservations: String,
    orders: String,
    shipments: String,
    processed: String,
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
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of `table` for this store's prefix.
    pub fn table_name(&self, table: &TableSpec) -> String {
        table.name(&self.prefix)
    }

    /// Creates every table of [`TABLES`] that does not exist yet (on-demand
    /// billing) and waits until all are active. For tests and local use; a
    /// deployment declares the same tables in its SAM template.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        for table in &TABLES {
            let name = self.table_name(table);
            let mut request = self
                .client
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(key_schema(table.partition_key, KeyType::Hash)?);
            for attribute in table.key_attributes() {
                request = request.attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(attribute.name)
                        .attribute_type(attribute.kind.scalar())
                        .build()
                        .map_err(invalid_request)?,
                );
            }
            if let Some(index) = table.index {
                request = request.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(index.name)
                        .key_schema(key_schema(index.partition_key, KeyType::Hash)?)
                        .key_schema(key_schema(index.sort_key, KeyType::Range)?)
                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                        .build()
                        .map_err(invalid_request)?,
                );
            }
            match request.send().await {
                Ok(_) => {}
                Err(error) if error.code() == Some("ResourceInUseException") => {} // exists already
                Err(error) => return Err(sdk_error(&format!("CreateTable {name}"), error)),
            }
        }
        for table in &TABLES {
            self.wait_until_active(&self.table_name(table)).await?;
        }
        Ok(())
    }

    async fn wait_until_active(&self, name: &str) -> Result<(), StoreError> {
        // DynamoDB creates an on-demand table in seconds; moto instantly.
        for _ in 0..300 {
            let output = self
                .client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(|error| sdk_error(&format!("DescribeTable {name}"), error))?;
            if let Some(table) = output.table {
                let indexes_active = table
                    .global_secondary_indexes()
                    .iter()
                    .all(|index| index.index_status() == Some(&IndexStatus::Active));
                if table.table_status() == Some(&TableStatus::Active) && indexes_active {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(StoreError::Unavailable(format!("table {name} did not become active within 5 minutes")))
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

    /// The processed record's Put: fails its condition when the key was processed before.
    fn processed_put(&self, commit: &Commit) -> Result<TransactWriteItem, StoreError> {
        let mut item = Item::from([
            (PROCESSED.partition_key.name.to_owned(), AttributeValue::S(processed_key(commit.function, &commit.key))),
            (FUNCTION.to_owned(), AttributeValue::S(commit.function.name().to_owned())),
            (KEY.to_owned(), AttributeValue::S(commit.key.clone())),
            (EMITTED.to_owned(), AttributeValue::S(to_json(&commit.emitted))),
            // Nothing emitted: nothing to publish.
            (PUBLISHED.to_owned(), AttributeValue::Bool(commit.emitted.is_empty())),
            (OUTBOX_INDEX.sort_key.name.to_owned(), number(Utc::now().timestamp_millis().unsigned_abs())),
        ]);
        if !commit.emitted.is_empty() {
            item.insert(OUTBOX_INDEX.partition_key.name.to_owned(), AttributeValue::S(PENDING.to_owned()));
        }
        let put = Put::builder()
            .table_name(&self.processed)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PROCESSED.partition_key.name)
            // A duplicate gets the stored record back with the cancellation.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(invalid_request)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A write's item of the commit transaction.
    fn write_item(&self, write: &Write) -> Result<TransactWriteItem, StoreError> {
        match write {
            Write::StockDelta(delta) => self.stock_delta_update(delta),
            _ => self.versioned_put(write),
        }
    }

    /// A stock delta's Update: adds each counter's change to the stored value
    /// (whatever its version) and bumps the version, on the condition that
    /// the SKU exists and no counter goes below zero.
    fn stock_delta_update(&self, delta: &StockDelta) -> Result<TransactWriteItem, StoreError> {
        let changes = [
            (AVAILABLE, delta.available),
            (RESERVED, delta.reserved),
            (SHIPPED, delta.shipped),
            (REPLENISHED, delta.replenished),
        ];
        let mut update = Update::builder()
            .table_name(&self.stock)
            .key(STOCK.partition_key.name, AttributeValue::S(delta.sku.as_str().to_owned()))
            .expression_attribute_names("#pk", STOCK.partition_key.name)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":one", number(1));
        let mut adds = vec!["#version :one".to_owned()];
        let mut conditions = vec!["attribute_exists(#pk)".to_owned()];
        for (index, (name, change)) in changes.into_iter().enumerate() {
            update = update
                .expression_attribute_names(format!("#c{index}"), name)
                .expression_attribute_values(format!(":d{index}"), AttributeValue::N(change.to_string()));
            adds.push(format!("#c{index} :d{index}"));
            if change < 0 {
                // counter + change >= 0, i.e. counter >= -change.
                update = update.expression_attribute_values(format!(":need{index}"), number(change.unsigned_abs()));
                conditions.push(format!("#c{index} >= :need{index}"));
            }
        }
        let update = update
            .update_expression(format!("ADD {}", adds.join(", ")))
            .condition_expression(conditions.join(" AND "))
            .build()
            .map_err(invalid_request)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// A versioned write's Put: stores `version + 1` if the record still has
    /// the version that was read (0: if it does not exist).
    fn versioned_put(&self, write: &Write) -> Result<TransactWriteItem, StoreError> {
        let (table, spec, mut item, read_version) = match write {
            Write::Stock(level) => (&self.stock, STOCK, stock_item(level), level.version),
            Write::StockDelta(delta) => {
                return Err(StoreError::Corrupt(format!("the stock delta of {} is not a versioned write", delta.sku)));
            }
            Write::Reservation(reservation) => {
                (&self.reservations, RESERVATIONS, reservation_item(reservation), reservation.version)
            }
            Write::Order(order) => (&self.orders, ORDERS, order_item(order), order.version),
            Write::Shipment(shipment) => (&self.shipments, SHIPMENTS, shipment_item(shipment), shipment.version),
        };
        item.insert(VERSION.to_owned(), number(read_version + 1));
        let put = Put::builder().table_name(table).set_item(Some(item));
        let put = if read_version == 0 {
            put.condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", spec.partition_key.name)
        } else {
            put.condition_expression("#version = :read")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":read", number(read_version))
        };
        Ok(TransactWriteItem::builder().put(put.build().map_err(invalid_request)?).build())
    }
}

// Attribute names besides the keys.
const SEEDED: &str = "seeded";
const AVAILABLE: &str = "available";
const RESERVED: &str = "reserved";
const SHIPPED: &str = "shipped";
const REPLENISHED: &str = "replenished";
const MAX_REPLENISH: &str = "max_replenish";
const VERSION: &str = "version";
const ITEMS: &str = "items";
const STATE: &str = "state";
const BODY: &str = "body";
const TRACKING_NUMBER: &str = "tracking_number";
const FUNCTION: &str = "function";
const KEY: &str = "key";
const EMITTED: &str = "emitted";
const PUBLISHED: &str = "published";

fn processed_key(function: Function, key: &str) -> String {
    format!("{}#{key}", function.name())
}

fn key_schema(attribute: KeyAttribute, key_type: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder().attribute_name(attribute.name).key_type(key_type).build().map_err(invalid_request)
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Records and events are plain data: serializing cannot fail.
    serde_json::to_string(value).expect("record serializes")
}

fn invalid_request(error: BuildError) -> StoreError {
    StoreError::Corrupt(format!("could not build a DynamoDB request: {error}"))
}

/// Splits SDK failures by whether a retry can help: a request DynamoDB
/// rejects as invalid will be rejected again; anything else (throttling,
/// timeouts, connection failures, server errors, a missing table) may pass later.
fn sdk_error<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let rejected = matches!(error.code(), Some("ValidationException" | "SerializationException"));
    let detail = format!("DynamoDB {operation}: {}", DisplayErrorContext(&error));
    if rejected { StoreError::Corrupt(format!("request rejected: {detail}")) } else { StoreError::Unavailable(detail) }
}

fn corrupt(table: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{table}: {detail}"))
}

/// Typed access to a stored item's attributes; anything missing or of the
/// wrong type is `Corrupt`.
struct Fields<'a> {
    table: &'a str,
    item: &'a Item,
}

impl<'a> Fields<'a> {
    fn of(table: &'a str, item: &'a Item) -> Self {
        Self { table, item }
    }

    fn text(&self, name: &str) -> Result<&'a str, StoreError> {
        match self.item.get(name) {
            Some(AttributeValue::S(text)) => Ok(text),
            _ => Err(corrupt(self.table, format!("attribute '{name}' is missing or not a string"))),
        }
    }

    fn number(&self, name: &str) -> Result<u64, StoreError> {
        match self.item.get(name) {
            Some(AttributeValue::N(text)) => text
                .parse()
                .map_err(|_| corrupt(self.table, format!("attribute '{name}' = {text} is not a non-negative integer"))),
            _ => Err(corrupt(self.table, format!("attribute '{name}' is missing or not a number"))),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
        serde_json::from_str(self.text(name)?)
            .map_err(|error| corrupt(self.table, format!("attribute '{name}': {error}")))
    }

    fn order_id(&self, name: &str) -> Result<OrderId, StoreError> {
        OrderId::parse(self.text(name)?).map_err(|error| corrupt(self.table, error))
    }
}

fn stock_item(level: &StockLevel) -> Item {
    Item::from([
        (STOCK.partition_key.name.to_owned(), AttributeValue::S(level.sku.as_str().to_owned())),
        (SEEDED.to_owned(), number(level.seeded)),
        (AVAILABLE.to_owned(), number(level.available)),
        (RESERVED.to_owned(), number(level.reserved)),
        (SHIPPED.to_owned(), number(level.shipped)),
        (REPLENISHED.to_owned(), number(level.replenished)),
        (MAX_REPLENISH.to_owned(), number(level.max_replenish)),
    ])
}

fn stock_level(table: &str, item: &Item) -> Result<StockLevel, StoreError> {
    let fields = Fields::of(table, item);
    Ok(StockLevel {
        sku: Sku::parse(fields.text(STOCK.partition_key.name)?).map_err(|error| corrupt(table, error))?,
        seeded: fields.number(SEEDED)?,
        available: fields.number(AVAILABLE)?,
        reserved: fields.number(RESERVED)?,
        shipped: fields.number(SHIPPED)?,
        replenished: fields.number(REPLENISHED)?,
        max_replenish: fields.number(MAX_REPLENISH)?,
        version: fields.number(VERSION)?,
    })
}

fn state_name(state: ReservationState) -> &'static str {
    match state {
        ReservationState::Reserved => "reserved",
        ReservationState::Shipped => "shipped",
        ReservationState::Released => "released",
    }
}

fn reservation_item(reservation: &Reservation) -> Item {
    Item::from([
        (RESERVATIONS.partition_key.name.to_owned(), AttributeValue::S(reservation.order_id.to_string())),
        (ITEMS.to_owned(), AttributeValue::S(to_json(&reservation.items))),
        (STATE.to_owned(), AttributeValue::S(state_name(reservation.state).to_owned())),
    ])
}

fn reservation(table: &str, item: &Item) -> Result<Reservation, StoreError> {
    let fields = Fields::of(table, item);
    let state = match fields.text(STATE)? {
        "reserved" => ReservationState::Reserved,
        "shipped" => ReservationState::Shipped,
        "released" => ReservationState::Released,
        other => return Err(corrupt(table, format!("unknown reservation state '{other}'"))),
    };
    Ok(Reservation {
        order_id: fields.order_id(RESERVATIONS.partition_key.name)?,
        items: fields.json(ITEMS)?,
        state,
        version: fields.number(VERSION)?,
    })
}

fn order_item(order: &OrderRecord) -> Item {
    Item::from([
        (ORDERS.partition_key.name.to_owned(), AttributeValue::S(order.order_id.to_string())),
        (BODY.to_owned(), AttributeValue::S(to_json(order))),
    ])
}

fn order(table: &str, item: &Item) -> Result<OrderRecord, StoreError> {
    let fields = Fields::of(table, item);
    let mut order: OrderRecord = fields.json(BODY)?;
    order.version = fields.number(VERSION)?;
    Ok(order)
}

fn shipment_item(shipment: &Shipment) -> Item {
    Item::from([
        (SHIPMENTS.partition_key.name.to_owned(), AttributeValue::S(shipment.order_id.to_string())),
        (TRACKING_NUMBER.to_owned(), AttributeValue::S(shipment.tracking_number.clone())),
    ])
}

fn shipment(table: &str, item: &Item) -> Result<Shipment, StoreError> {
    let fields = Fields::of(table, item);
    Ok(Shipment {
        order_id: fields.order_id(SHIPMENTS.partition_key.name)?,
        tracking_number: fields.text(TRACKING_NUMBER)?.to_owned(),
        version: fields.number(VERSION)?,
    })
}

fn emitted(table: &str, item: &Item) -> Result<Vec<Event>, StoreError> {
    Fields::of(table, item).json(EMITTED)
}

/// The table and key a write targets, to find two writes of one record.
fn target(write: &Write) -> (&'static str, String) {
    match write {
        Write::Stock(level) => (STOCK.suffix, level.sku.as_str().to_owned()),
        Write::StockDelta(delta) => (STOCK.suffix, delta.sku.as_str().to_owned()),
        Write::Reservation(reservation) => (RESERVATIONS.suffix, reservation.order_id.to_string()),
        Write::Order(order) => (ORDERS.suffix, order.order_id.to_string()),
        Write::Shipment(shipment) => (SHIPMENTS.suffix, shipment.order_id.to_string()),
    }
}

/// What a cancelled commit transaction means, from its cancellation reason
/// codes (one per item; the processed record's first).
#[derive(Debug, PartialEq, Eq)]
enum Cancellation {
    Duplicate,
    Conflict,
    Unavailable(String),
    Rejected(String),
}

fn classify(codes: &[Option<&str>]) -> Cancellation {
    let failed: Vec<&str> = codes.iter().map(|code| code.unwrap_or("None")).filter(|code| *code != "None").collect();
    let any = |wanted: &[&str]| failed.iter().any(|code| wanted.contains(code));
    if codes.first().copied().flatten() == Some("ConditionalCheckFailed") {
        Cancellation::Duplicate
    } else if any(&["ValidationError", "ItemCollectionSizeLimitExceeded"]) {
        Cancellation::Rejected(failed.join(", "))
    } else if any(&["ConditionalCheckFailed", "TransactionConflict"]) {
        Cancellation::Conflict
    } else if failed.is_empty() {
        Cancellation::Unavailable("transaction cancelled without a reason".to_owned())
    } else {
        // ThrottlingError, ProvisionedThroughputExceeded, or a code newer than this adapter.
        Cancellation::Unavailable(failed.join(", "))
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
        let mut targets = HashSet::new();
        if !commit.writes.iter().all(|write| targets.insert(target(write))) {
            // Two writes of one record: the second one's version is stale once the first applies.
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

    async fn unpublished(&self, committed_before: DateTime<Utc>) -> Result<Vec<OutboxEntry>, StoreError> {
        let table = &self.processed;
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(table)
                .index_name(OUTBOX_INDEX.name)
                .key_condition_expression("#outbox = :pending AND #committed_at < :before")
                .expression_attribute_names("#outbox", OUTBOX_INDEX.partition_key.name)
                .expression_attribute_names("#committed_at", OUTBOX_INDEX.sort_key.name)
                .expression_attribute_values(":pending", AttributeValue::S(PENDING.to_owned()))
                .expression_attribute_values(
                    ":before",
                    number(committed_before.timestamp_millis().max(0).unsigned_abs()),
                )
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| sdk_error(&format!("Query {table} index {}", OUTBOX_INDEX.name), error))?;
            for item in output.items.unwrap_or_default() {
                let fields = Fields::of(table, &item);
                let name = fields.text(FUNCTION)?;
                let function =
                    Function::from_name(name).ok_or_else(|| corrupt(table, format!("unknown function '{name}'")))?;
                entries.push(OutboxEntry {
                    function,
                    key: fields.text(KEY)?.to_owned(),
                    events: emitted(table, &item)?,
                });
            }
            start = output.last_evaluated_key.filter(|key| !key.is_empty());
            if start.is_none() {
                return Ok(entries);
            }
        }
    }

    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.processed)
            .key(PROCESSED.partition_key.name, AttributeValue::S(processed_key(function, key)))
            // Leaving the sparse index is what takes the entry out of the outbox.
            .update_expression("SET #published = :true REMOVE #outbox")
            // Without it an unknown key would create a half record.
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_names("#outbox", OUTBOX_INDEX.partition_key.name)
            .expression_attribute_names("#pk", PROCESSED.partition_key.name)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(()), // unknown key: nothing to mark
            Err(error) => Err(sdk_error(&format!("UpdateItem {}", self.processed), error)),
        }
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

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let item = self.get(&self.orders, ORDERS.partition_key, order_id.to_string()).await?;
        item.map(|item| order(&self.orders, &item)).transpose()
    }

    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError> {
        let item = self.get(&self.shipments, SHIPMENTS.partition_key, order_id.to_string()).await?;
        item.map(|item| shipment(&self.shipments, &item)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_condition_on_the_processed_record_is_a_duplicate() {
        let outcome = classify(&[Some("ConditionalCheckFailed"), Some("ConditionalCheckFailed"), Some("None")]);
        assert_eq!(outcome, Cancellation::Duplicate);
    }

    #[test]
    fn a_failed_condition_or_a_racing_transaction_on_a_record_is_a_conflict() {
        assert_eq!(classify(&[Some("None"), Some("None"), Some("ConditionalCheckFailed")]), Cancellation::Conflict);
        assert_eq!(classify(&[Some("TransactionConflict"), Some("None")]), Cancellation::Conflict);
    }

    #[test]
    fn throttling_is_unavailable_and_a_validation_error_is_rejected() {
        assert!(
            matches!(classify(&[Some("None"), Some("ThrottlingError")]), Cancellation::Unavailable(codes) if codes == "ThrottlingError")
        );
        assert!(matches!(classify(&[None, None]), Cancellation::Unavailable(_)));
        assert!(matches!(
            classify(&[Some("None"), Some("ValidationError"), Some("ConditionalCheckFailed")]),
            Cancellation::Rejected(codes) if codes == "ValidationError, ConditionalCheckFailed"
        ));
    }

    #[test]
    fn table_names_and_keys_are_declared_once() {
        let names: Vec<String> = TABLES.iter().map(|table| table.name(DEFAULT_TABLE_PREFIX)).collect();
        assert_eq!(
            names,
            ["choreo-stock", "choreo-reservations", "choreo-orders", "choreo-shipments", "choreo-processed"]
        );
        let processed: Vec<(&str, &str)> =
            PROCESSED.key_attributes().iter().map(|attribute| (attribute.name, attribute.kind.as_str())).collect();
        assert_eq!(processed, [("pk", "S"), ("outbox", "S"), ("committed_at", "N")]);
    }
}
