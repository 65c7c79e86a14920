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
//! | `processed` | `pk` (S, `<function>#<key>`) | `function`, `key` (S), `emitted` (S, JSON array of events), `published` (BOOL), `committed_at` (N, Unix ms), `outbox` (S, see below), `expires_at` (N, Unix s, the TTL), `set_aside`, `set_aside_at` (see below) |
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
//! Retention: a published processed record carries `expires_at` (Unix
//! seconds: when it was published, or committed if it emitted nothing, plus
//! the store's retention), the attribute the table's TTL is enabled on
//! ([`EXPIRES_AT`]; see `store::retention` for why the retention must exceed
//! every redelivery window). A record still in the outbox has none, so the TTL
//! never drops unpublished events. A set-aside entry (poison: it can never be
//! published) leaves the index, keeps its record for good (no `expires_at`)
//! and carries `set_aside` (S, the reason) and `set_aside_at` (N, Unix ms).

use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus,
};

use super::DynamoStore;
use super::errors::{invalid_request, sdk_error};
use crate::contract::choreography::Service;
use crate::store::StoreError;

/// Table-name prefix when `CHOREO_TABLE_PREFIX` is not set.
pub const DEFAULT_TABLE_PREFIX: &str = "choreo-";

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

    pub(super) fn scalar(self) -> ScalarAttributeType {
        match self {
            Self::String => ScalarAttributeType::S,
            Self::Number => ScalarAttributeType::N,
        }
    }
}

/// A key attribute of a table or index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAttribute {
    /// The attribute's name.
    pub name: &'static str,
    /// Its type (`S` or `N`), for `AttributeDefinitions`.
    pub kind: KeyAttributeType,
}

/// A global secondary index; its projection is ALL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index's name, used by queries.
    pub name: &'static str,
    /// The index's partition key.
    pub partition_key: KeyAttribute,
    /// The index's sort key, which orders a query's results.
    pub sort_key: KeyAttribute,
}

/// One table of the store. Every table has a partition key only, and is
/// billed on demand (`PAY_PER_REQUEST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The table's name after the prefix: `stock` → `choreo-stock`.
    pub suffix: &'static str,
    /// The table's only key.
    pub partition_key: KeyAttribute,
    /// The service whose functions write it (ARCHITECTURE.md §3); `None`: every
    /// function writes it (its own processed keys, scoped by function name).
    pub owner: Option<Service>,
    /// Its global secondary index, if any (the outbox, on `processed`).
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

/// The attribute DynamoDB's TTL is enabled on, on the processed table
/// (epoch seconds); the SAM template names it from here.
pub const EXPIRES_AT: &str = "expires_at";

/// The value of the outbox index's partition key on unpublished records.
pub(super) const PENDING: &str = "pending";

pub(super) fn key_schema(attribute: KeyAttribute, key_type: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder().attribute_name(attribute.name).key_type(key_type).build().map_err(invalid_request)
}

impl DynamoStore {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
