//! `order-query`: `GET /orders/{order_id}`, `GET /orders/{order_id}/timeline`
//! and `GET /inventory/{sku}`.
//! Reads only; the response shapes are the API contract (openapi.yaml),
//! kept apart from the stored records so either can change alone.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shared::Function;
use shared::contract::domain::{Address, CancelReason, CustomerId, Item, OrderId, OrderStatus, Sku};
use shared::host::auth::Caller;
use shared::host::http::Problem;
use shared::saga::{Timeline, timeline_of};
use shared::store::{OrderRecord, StockLevel, Store};

pub const FUNCTION: Function = Function::OrderQuery;

/// The query routes of the choreography table, ready to merge or serve.
pub fn router(store: Arc<dyn Store>) -> Router {
    let [orders, timeline, inventory] = FUNCTION.spec().routes else { unreachable!("order-query serves three routes") };
    Router::new()
        .route(orders.path, get(get_order))
        .route(timeline.path, get(get_timeline))
        .route(inventory.path, get(get_inventory))
        .with_state(store)
}

#[derive(Debug, Serialize)]
pub struct HistoryView {
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339 in UTC, with microseconds.
    pub time: String,
    /// The function that emitted it.
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct OrderView {
    /// The order's id.
    pub order_id: OrderId,
    /// Where the saga stands.
    pub status: OrderStatus,
    /// Who ordered.
    pub customer_id: CustomerId,
    /// The order lines.
    pub items: Vec<Item>,
    /// Where it goes.
    pub shipping_address: Address,
    /// Present once shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// Present once cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// Who placed it, when the API knew (an IAM caller's ARN, `customer:<id>` for a JWT's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placed_by: Option<String>,
    /// Every event of the saga the order saw, in causal order.
    pub history: Vec<HistoryView>,
}

impl From<OrderRecord> for OrderView {
    fn from(order: OrderRecord) -> Self {
        Self {
            order_id: order.order_id,
            status: order.status,
            customer_id: order.customer_id,
            items: order.items,
            shipping_address: order.shipping_address,
            tracking_number: order.tracking_number,
            cancel_reason: order.cancel_reason,
            placed_by: order.placed_by,
            history: order
                .history
                .into_iter()
                .map(|entry| HistoryView {
                    event_type: entry.event_type,
                    time: entry.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    source: entry.source,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InventoryView {
    /// The SKU.
    pub sku: Sku,
    /// Units free to reserve.
    pub available: u64,
    /// Units held for orders.
    pub reserved: u64,
    /// Units shipped.
    pub shipped: u64,
    /// Units the supplier delivered.
    pub replenished: u64,
}

impl From<StockLevel> for InventoryView {
    fn from(level: StockLevel) -> Self {
        Self {
            sku: level.sku,
            available: level.available,
            reserved: level.reserved,
            shipped: level.shipped,
            replenished: level.replenished,
        }
    }
}

fn store_problem(error: shared::store::StoreError) -> Problem {
    tracing::error!(%error, "store read failed");
    Problem::unavailable("the store is unavailable; try again shortly")
}

/// The order `caller` may see: another customer's order is 404, like an
/// unknown one, so that order ids tell nothing (ARCHITECTURE.md §14.4).
async fn visible_order(store: &dyn Store, caller: &Caller, order_id: &str) -> Result<OrderRecord, Problem> {
    let order_id = OrderId::parse(order_id).map_err(Problem::bad_request)?;
    match store.order(order_id).await.map_err(store_problem)? {
        Some(order) if caller.may_see(&order.customer_id) => Ok(order),
        _ => Err(Problem::not_found(format!("no order {order_id}"))),
    }
}

async fn get_order(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, Problem> {
    Ok(Json(visible_order(&*store, &caller, &order_id).await?.into()))
}

/// The saga's timeline (ARCHITECTURE.md §14.3); the only reads it costs are here.
async fn get_timeline(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    Path(order_id): Path<String>,
) -> Result<Json<Timeline>, Problem> {
    let order = visible_order(&*store, &caller, &order_id).await?;
    Ok(Json(timeline_of(&*store, &order).await.map_err(store_problem)?))
}

async fn get_inventory(
    State(store): State<Arc<dyn Store>>,
    Path(sku): Path<String>,
) -> Result<Json<InventoryView>, Problem> {
    let sku = Sku::parse(&sku).map_err(|error| Problem::bad_request(format!("SKU '{sku}' {error}")))?;
    match store.stock(std::slice::from_ref(&sku)).await.map_err(store_problem)?.pop() {
        Some(level) => Ok(Json(level.into())),
        None => Err(Problem::not_found(format!("no SKU {sku} in the catalog"))),
    }
}
