//! Backpressure of `choreo up`: GIVEN a bus whose queues are full, WHEN an
//! order is posted, THEN 503 problem+json with `Retry-After` and nothing
//! stored; GIVEN the HTTP limits, THEN a slow request times out and one past
//! the concurrency limit is shed, both as 503 problem+json.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use choreo::up::{HttpLimits, app_router, with_limits};
use chrono::Utc;
use http_body_util::BodyExt;
use serde_json::Value;
use shared::bus::DeliverySettings;
use shared::bus::inprocess::InProcessBus;
use shared::step::ShipCountries;
use shared::store::Store;
use shared::store::sqlite::SqliteStore;
use shared::testkit::order_body;
use shared::{Event, Function, Ports, Step, StepError};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A step that waits for the gate to open, then does nothing.
struct Gated {
    /// The function it stands in for.
    function: Function,
    /// Closed (no permits) until the test opens it.
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Step for Gated {
    fn function(&self) -> Function {
        self.function
    }

    async fn handle(&self, _event: &Event, _ports: &Ports) -> Result<Vec<Event>, StepError> {
        drop(self.gate.acquire().await);
        Ok(vec![])
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

async fn call(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("the router answers");
    let (status, content_type, retry_after) = (
        response.status(),
        header_text(&response, header::CONTENT_TYPE).unwrap_or_default(),
        header_text(&response, header::RETRY_AFTER),
    );
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    Answer { status, content_type, retry_after, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

fn header_text(response: &axum::response::Response, name: header::HeaderName) -> Option<String> {
    response.headers().get(name).map(|value| value.to_str().unwrap_or("").to_owned())
}

fn post_order() -> Request<Body> {
    Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(order_body("WIDGET-1", 1, "FR").to_string()))
        .expect("a request")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_bus_answers_503_with_retry_after_and_stores_nothing() {
    // GIVEN a bus of 4-delivery queues whose steps hang, one at a time
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("choreo.db")).expect("open"));
    let gate = Arc::new(Semaphore::new(0));
    let steps: Vec<Arc<dyn Step>> = Function::consumers()
        .map(|function| Arc::new(Gated { function, gate: Arc::clone(&gate) }) as Arc<dyn Step>)
        .collect();
    let ports = Ports { store: Arc::clone(&store), ship_countries: ShipCountries::default() };
    let settings = DeliverySettings { concurrency: 1, ..Default::default() };
    let bus = InProcessBus::start_bounded(steps, ports, settings, None, 4);
    let router = app_router(Arc::clone(&store), Arc::new(bus.clone()));

    // WHEN orders keep coming
    let mut accepted = 0;
    let refused = loop {
        let answer = call(&router, post_order()).await;
        if answer.status != StatusCode::ACCEPTED {
            break answer;
        }
        accepted += 1;
        assert!(accepted <= 10, "a bus of 4-delivery queues took {accepted} orders without pushing back");
        tokio::time::sleep(Duration::from_millis(20)).await; // the worker takes its delivery
    };

    // THEN the order that does not fit is refused: 503 problem+json with Retry-After
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.body);
    assert_eq!(refused.content_type, "application/problem+json");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert_eq!(refused.body["type"], "/problems/overloaded");
    assert!(refused.body["detail"].as_str().unwrap_or_default().contains("nothing was stored"), "{}", refused.body);
    // AND it was not stored: the outbox holds the accepted orders only
    let horizon = Utc::now() + chrono::Duration::seconds(60);
    assert_eq!(store.unpublished(horizon).await.expect("outbox").len(), accepted);

    // WHEN the steps carry on, THEN orders are accepted again
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    bus.idle().await;
    assert_eq!(call(&router, post_order()).await.status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_request_times_out_and_one_past_the_limit_is_shed_as_503_problems() {
    // GIVEN the API behind a 200 ms timeout and one request at a time
    let gate = Arc::new(Semaphore::new(0));
    let hanging = Arc::clone(&gate);
    let routes = Router::new()
        .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
        .route("/hang", get(move || async move { drop(hanging.acquire().await) }));
    let limits = HttpLimits { request_timeout: Duration::from_millis(200), max_in_flight: 1 };
    let router = with_limits(routes, limits);

    // WHEN a request takes longer than the timeout, THEN 503 /problems/timeout with Retry-After
    let slow = call(&router, Request::get("/slow").body(Body::empty()).expect("a request")).await;
    assert_eq!(
        (slow.status, slow.content_type.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "application/problem+json")
    );
    assert_eq!(slow.body["type"], "/problems/timeout");
    assert_eq!(slow.retry_after.as_deref(), Some("1"));

    // WHEN one request is in progress and another comes, THEN the second is shed at once
    let first = tokio::spawn({
        let router = router.clone();
        async move { call(&router, Request::get("/hang").body(Body::empty()).expect("a request")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let shed = call(&router, Request::get("/hang").body(Body::empty()).expect("a request")).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", shed.body);
    assert_eq!(shed.body["type"], "/problems/overloaded");
    assert_eq!(shed.retry_after.as_deref(), Some("1"));
    gate.add_permits(1);
    // (the first one times out or completes; either way it was not shed)
    assert_ne!(first.await.expect("the first request").body["type"], "/problems/overloaded");
}
