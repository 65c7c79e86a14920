//! How a `Commit` becomes one `TransactWriteItems`, and what a cancelled
//! transaction means.
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
//! per SKU of the order (at most 50 items, ARCHITECTURE.md §10) + the reservation + the
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

use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use chrono::Utc;

use super::DynamoStore;
use super::codec::*;
use super::errors::invalid_request;
use super::tables::{ORDERS, OUTBOX_INDEX, PENDING, PROCESSED, RESERVATIONS, SHIPMENTS, STOCK};
use crate::store::{Commit, StockDelta, StoreError, Write};

/// `TransactWriteItems` accepts at most this many items.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

impl DynamoStore {
    /// The processed record's Put: fails its condition when the key was processed before.
    pub(super) fn processed_put(&self, commit: &Commit) -> Result<TransactWriteItem, StoreError> {
        let mut item = Item::from([
            (PROCESSED.partition_key.name.to_owned(), AttributeValue::S(processed_key(commit.function, &commit.key))),
            (FUNCTION.to_owned(), AttributeValue::S(commit.function.name().to_owned())),
            (KEY.to_owned(), AttributeValue::S(commit.key.clone())),
            (EMITTED.to_owned(), AttributeValue::S(to_json(&commit.emitted))),
            (PUBLISHED.to_owned(), AttributeValue::Bool(commit.is_published_when_committed())),
            (OUTBOX_INDEX.sort_key.name.to_owned(), number(Utc::now().timestamp_millis().unsigned_abs())),
        ]);
        if commit.is_published_when_committed() {
            item.insert(EXPIRES_AT.to_owned(), self.expires_at());
        } else {
            // Expires only once published (`mark_published` sets it): an
            // entry still in the outbox is never lost to the TTL.
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
    pub(super) fn write_item(&self, write: &Write) -> Result<TransactWriteItem, StoreError> {
        match write {
            Write::StockDelta(delta) => self.stock_delta_update(delta),
            _ => self.versioned_put(write),
        }
    }

    /// A stock delta's Update: adds each counter's change to the stored value
    /// (whatever its version) and bumps the version, on the condition that
    /// the SKU exists and no counter goes below zero.
    pub(super) fn stock_delta_update(&self, delta: &StockDelta) -> Result<TransactWriteItem, StoreError> {
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
    pub(super) fn versioned_put(&self, write: &Write) -> Result<TransactWriteItem, StoreError> {
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

/// What a cancelled commit transaction means, from its cancellation reason
/// codes (one per item; the processed record's first).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cancellation {
    Duplicate,
    Conflict,
    Unavailable(String),
    Rejected(String),
}

pub(super) fn classify(codes: &[Option<&str>]) -> Cancellation {
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
}
