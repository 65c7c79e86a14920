//! `create-order`: `POST /orders`. Validates the order, stores it as
//! `PENDING` together with its `order.created` event (one transaction: the
//! outbox), then publishes the event. Honours `Idempotency-Key`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use shared::bus::{OutboxRef, Publisher, publish_committed_soon};
use shared::contract::domain::{NewOrder, OrderId, OrderStatus};
use shared::contract::events::OrderCreated;
use shared::contract::trace::TraceParent;
use shared::host::auth::Caller;
use shared::host::http::{Problem, is_valid_idempotency_key, read_json};
use shared::host::trace_context::{TRACEPARENT, caller_trace};
use shared::store::{Commit, CommitOutcome, HistoryEntry, OrderRecord, Store, Write};
use shared::{Event, Function, Payload, StepError};

pub const FUNCTION: Function = Function::CreateOrder;

/// Header that makes `POST /orders` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Clone)]
pub struct CreateOrderState {
    /// Where the order and its event commit together.
    pub store: Arc<dyn Store>,
    /// Publishes `order.created` once it is committed.
    pub publisher: Arc<dyn Publisher>,
}

/// The `POST /orders` route of the choreography table, ready to merge or serve.
pub fn router(state: CreateOrderState) -> Router {
    let [route] = FUNCTION.spec().routes else { unreachable!("create-order serves exactly one route") };
    Router::new().route(route.path, post(post_order)).with_state(state)
}

/// An accepted order: its id, whether this request created it, and its
/// `order.created` event with the outbox key it is stored under.
#[derive(Debug, PartialEq)]
pub struct Accepted {
    /// The order's id (the first order's, when a key is repeated).
    pub order_id: OrderId,
    /// False when an earlier request with the same key created it.
    pub created: bool,
    /// Its `order.created`, to publish (again, for a repeated key).
    pub event: Event,
    /// The key the event is committed under, to mark it published.
    pub outbox_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("Idempotency-Key '{0}' was already used for a different order")]
    KeyReused(String),
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Stores a validated order and its `order.created` event atomically, in a
/// trace of its own. The same customer's same `idempotency_key` yields the
/// first order again.
pub async fn create(
    store: &dyn Store,
    order: NewOrder,
    idempotency_key: Option<&str>,
) -> Result<Accepted, CreateError> {
    create_in_trace(store, order, idempotency_key, &TraceParent::new_root(), None).await
}

/// [`create`], with the saga in the caller's trace (`order.created` is a
/// child of the caller's span, ARCHITECTURE.md §14.1) and `placed_by`, who
/// placed it, recorded with the order (§14.4).
pub async fn create_in_trace(
    store: &dyn Store,
    order: NewOrder,
    idempotency_key: Option<&str>,
    caller: &TraceParent,
    placed_by: Option<String>,
) -> Result<Accepted, CreateError> {
    let order_id = OrderId::new();
    let key = match idempotency_key {
        // Keys are scoped per customer, so two customers cannot collide.
        Some(key) => serde_json::json!([order.customer_id, key]).to_string(),
        None => order_id.to_string(),
    };
    let data =
        OrderCreated { customer_id: order.customer_id, items: order.items, shipping_address: order.shipping_address };
    let event = Event::in_trace(FUNCTION, order_id, caller, Payload::OrderCreated(data.clone()));
    let record = OrderRecord {
        order_id,
        status: OrderStatus::Pending,
        customer_id: data.customer_id.clone(),
        items: data.items.clone(),
        shipping_address: data.shipping_address.clone(),
        tracking_number: None,
        cancel_reason: None,
        history: vec![HistoryEntry::of(&event)],
        placed_by,
        version: 0,
    };
    let outbox_key = key.clone();
    let commit = Commit { function: FUNCTION, key, writes: vec![Write::Order(record)], emitted: vec![event.clone()] };
    match store.commit(commit).await.map_err(StepError::from)? {
        CommitOutcome::Committed => Ok(Accepted { order_id, created: true, event, outbox_key }),
        CommitOutcome::Duplicate(first) => match first.into_iter().next() {
            Some(first) if first.payload == Payload::OrderCreated(data) => {
                Ok(Accepted { order_id: first.subject, created: false, event: first, outbox_key })
            }
            _ => Err(CreateError::KeyReused(idempotency_key.unwrap_or_default().to_owned())),
        },
        // A fresh v7 id cannot already exist; treat it as contention and let the client retry.
        CommitOutcome::Conflict => Err(StepError::Retryable(format!("order id {order_id} collided")).into()),
    }
}

async fn post_order(
    State(state): State<CreateOrderState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let mut body = read_json(&headers, body).await?;
    let mut keys = headers.get_all(IDEMPOTENCY_KEY).iter();
    let idempotency_key = match (keys.next(), keys.next()) {
        (None, _) => None,
        (Some(key), None) if is_valid_idempotency_key(key.as_bytes()) => {
            // Visible ASCII only, checked just above: valid UTF-8.
            Some(String::from_utf8_lossy(key.as_bytes()).into_owned())
        }
        _ => return Err(Problem::bad_request("send one Idempotency-Key of 1 to 255 visible ASCII characters")),
    };
    // A customer's token names the customer: another one in the body is a 403.
    caller.own_order(&mut body)?;
    let order = NewOrder::parse(&body).map_err(Problem::validation)?;
    // Refused before storing anything: a 503 means the order does not exist,
    // so a client retrying without an Idempotency-Key never makes two.
    if !state.publisher.has_room() {
        return Err(Problem::overloaded("too many orders in progress; nothing was stored, retry later", 1));
    }
    let trace = caller_trace(&headers);
    let placed_by = caller.placed_by();
    let accepted = match create_in_trace(&*state.store, order, idempotency_key.as_deref(), &trace, placed_by).await {
        Ok(accepted) => accepted,
        Err(error @ CreateError::KeyReused(_)) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                format!("{error}; use a new key for a new order"),
            ));
        }
        Err(CreateError::Step(error)) => {
            tracing::error!(%error, "could not store the order");
            return Err(Problem::unavailable("the order store is unavailable; retry with the same Idempotency-Key"));
        }
    };
    let order_id = accepted.order_id;
    if accepted.created {
        shared::telemetry::metrics::record_order_accepted();
    }
    // The order and its event are committed: from here the order exists. A
    // publish failure leaves the event in the outbox for the relay, and a
    // client retry with the same key publishes it again (consumers dedupe).
    let origin = OutboxRef { function: FUNCTION, key: accepted.outbox_key };
    match publish_committed_soon(&*state.store, &*state.publisher, &origin, std::slice::from_ref(&accepted.event)).await
    {
        Ok(()) => {
            tracing::info!(%order_id, trace_id = accepted.event.trace_id(), event = "order.created", created = accepted.created, "order accepted")
        }
        Err(error) => {
            tracing::warn!(%order_id, trace_id = accepted.event.trace_id(), %error, "order stored; order.created left in the outbox for the relay")
        }
    }
    let body = serde_json::json!({ "order_id": order_id, "status": OrderStatus::Pending.as_str() });
    // The saga's trace, so the caller can find it (a repeated key: the first order's).
    let headers = [
        (header::LOCATION, format!("/orders/{order_id}")),
        (HeaderName::from_static(TRACEPARENT), accepted.event.traceparent.clone()),
    ];
    Ok((StatusCode::ACCEPTED, headers, axum::Json(body)).into_response())
}
