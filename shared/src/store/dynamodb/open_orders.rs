//! Open orders on DynamoDB: a paged, strongly consistent Scan of the orders
//! table, filtered on the id (which sorts by creation time,
//! `store/open_orders.rs`) by DynamoDB and on the status (inside the JSON
//! body) here. A Scan reads the whole table, finished orders too: fine
//! while the sweep runs once a minute over a table of modest size. A sparse
//! GSI keyed on a status attribute written only while an order is open would
//! read only the open ones; it needs that attribute on every order write.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::codec::order;
use super::errors::sdk_error;
use super::tables::ORDERS;
use crate::contract::domain::OrderId;
use crate::store::{OpenOrdersPage, StoreError, created_before_bound};

impl DynamoStore {
    pub(super) async fn scan_open_orders(
        &self,
        created_before: DateTime<Utc>,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<OpenOrdersPage, StoreError> {
        let table = &self.orders;
        let key = ORDERS.partition_key.name;
        let start = after.map(|after| [(key.to_owned(), AttributeValue::S(after.to_string()))].into());
        let output = self
            .client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .filter_expression("#id < :bound")
            .expression_attribute_names("#id", key)
            .expression_attribute_values(":bound", AttributeValue::S(created_before_bound(created_before)))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|error| sdk_error(&format!("Scan {table}"), error))?;
        let mut orders = Vec::new();
        for item in output.items.unwrap_or_default() {
            let record = order(table, &item)?;
            if !record.status.is_terminal() {
                orders.push(record);
            }
        }
        let next = match output.last_evaluated_key.as_ref().and_then(|last| last.get(key)) {
            Some(AttributeValue::S(id)) => {
                Some(OrderId::parse(id).map_err(|error| StoreError::Corrupt(format!("{table}: {error}")))?)
            }
            _ => None,
        };
        orders.sort_by_key(|record| record.order_id.to_string());
        Ok(OpenOrdersPage { orders, next })
    }
}
