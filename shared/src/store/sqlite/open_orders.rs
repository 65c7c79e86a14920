//! Open orders on SQLite: a partial index holds only the orders still in
//! flight, keyed by id (which sorts by creation time, `store/open_orders.rs`),
//! so the sweep reads the few open orders, never the finished ones.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::threads::unavailable;
use super::{corrupt, from_json};
use crate::contract::domain::OrderId;
use crate::store::{OpenOrdersPage, OrderRecord, StoreError, created_before_bound, open_statuses};

/// The condition an open order meets, on the `status` column (a copy of
/// the body's, written with it): the same text in the index and in the
/// query, so that SQLite uses the partial index. Equalities joined by OR, not
/// `IN (…)`: SQLite evaluates an index's `IN` list through a temporary table
/// built at every write of an order, which showed in profiles of the writer.
fn is_open() -> String {
    let tests: Vec<String> = open_statuses().map(|status| format!("status = '{}'", status.as_str())).collect();
    format!("({})", tests.join(" OR "))
}

/// The `status` column and the index, created or brought up to date with
/// the rest of the schema. Files made before the column get it, filled from
/// each body; their earlier indexes (`orders_open`, the `IN` form, and
/// `orders_open_v2`, on `json_extract(body, '$.status')`, which parsed the
/// body at every write of an order: 5% of the writer's time, profiled) go.
/// One transaction, so that processes opening the file at once agree.
pub(super) fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let migrated = add_status_column(connection).and_then(|()| {
        connection.execute_batch(&format!(
            "DROP INDEX IF EXISTS orders_open;
             DROP INDEX IF EXISTS orders_open_v2;
             CREATE INDEX IF NOT EXISTS {INDEX} ON orders (order_id) WHERE {};",
            is_open()
        ))
    });
    connection.execute_batch(if migrated.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    migrated
}

/// Adds `status` to a file made before it, filled from each body.
fn add_status_column(connection: &Connection) -> rusqlite::Result<()> {
    let has_status: bool = connection.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('orders') WHERE name = 'status'",
        [],
        |row| row.get(0),
    )?;
    if has_status {
        return Ok(());
    }
    connection.execute_batch(
        "ALTER TABLE orders ADD COLUMN status TEXT NOT NULL DEFAULT '';
         UPDATE orders SET status = json_extract(body, '$.status');",
    )
}

/// The partial index of open orders.
const INDEX: &str = "orders_open_v3";

pub(super) fn page(
    connection: &Connection,
    created_before: DateTime<Utc>,
    after: Option<OrderId>,
    limit: usize,
) -> Result<OpenOrdersPage, StoreError> {
    let sql = format!(
        "SELECT body, version, order_id FROM orders INDEXED BY {INDEX}
         WHERE {} AND order_id < ?1 AND order_id > ?2 ORDER BY order_id LIMIT ?3",
        is_open()
    );
    let after = after.map(|order_id| order_id.to_string()).unwrap_or_default();
    let wanted = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(String, i64, String)> = connection
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![created_before_bound(created_before), after, wanted], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .and_then(Iterator::collect)
        })
        .map_err(unavailable)?;
    let full = rows.len() >= limit && limit > 0;
    let orders = rows
        .into_iter()
        .map(|(body, version, _)| {
            let mut order: OrderRecord = from_json(&body)?;
            order.version = u64::try_from(version).map_err(corrupt)?;
            Ok(order)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let next = if full { orders.last().map(|order| order.order_id) } else { None };
    Ok(OpenOrdersPage { orders, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_reads_the_partial_index() {
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(&earlier_orders_table()).unwrap();
        migrate(&connection).unwrap();
        let plan: String = connection
            .query_row(
                &format!("EXPLAIN QUERY PLAN SELECT order_id FROM orders WHERE {} AND order_id < 'z'", is_open()),
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains(INDEX), "{plan}");
    }

    /// `orders` as files made before the `status` column hold it, with the
    /// index of the time.
    fn earlier_orders_table() -> String {
        format!(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL);
             CREATE INDEX orders_open_v2 ON orders (order_id) WHERE ({});",
            open_statuses()
                .map(|status| format!("json_extract(body, '$.status') = '{}'", status.as_str()))
                .collect::<Vec<_>>()
                .join(" OR ")
        )
    }
}
