//! One saga seen end to end (ARCHITECTURE.md §14) on the embedded system:
//! GIVEN `choreo up`, WHEN an order is placed (in a caller's trace), THEN
//! every event of its saga is in that trace, each a child span of its cause,
//! every log line about the order carries the trace, its timeline lists
//! every hop with what each consumer did (duplicates, retries and dead
//! letters included), and `GET /metrics` counts the steps.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use choreo_e2e::{TestApp, default_catalog, post_order_request, raw_request, send, spawn_app, test_delivery};
use serde_json::Value;
use shared::bus::inprocess::InProcessBus;
use shared::bus::{OutboxRef, Publisher};
use shared::saga::Timeline;
use shared::step::ShipCountries;
use shared::store::Store;
use shared::store::sqlite::SqliteStore;
use shared::testkit::logs::CapturedLogs;
use shared::testkit::order_body;
use shared::{Event, Function, Ports, Step, StepError};

/// The caller's trace context, as a browser or an API gateway would send it.
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// `POST /orders` in the caller's trace; answers the order id.
async fn post_in_trace(router: &axum::Router, body: &Value) -> String {
    let mut request = post_order_request(body, None);
    request.headers_mut().insert("traceparent", CALLER.parse().expect("a valid header"));
    let response = send(router.clone(), request).await;
    let traceparent = response.header("traceparent").unwrap_or_default().to_owned();
    assert_eq!(traceparent.get(3..35), Some(CALLER_TRACE), "the 202 names the saga's trace: {traceparent}");
    response.order_id()
}

/// Every event the system emitted about `order_id`, from the processed records.
fn events_of(app: &TestApp, order_id: &str) -> Vec<Event> {
    let mut events: Vec<Event> = app.recorded().into_iter().flat_map(|entry| entry.events).collect();
    events.retain(|event| event.subject.to_string() == order_id);
    events
}

async fn timeline(router: &axum::Router, order_id: &str) -> Timeline {
    let response =
        send(router.clone(), raw_request(Method::GET, &format!("/orders/{order_id}/timeline"), None, "")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    serde_json::from_value(response.body).unwrap_or_else(|error| panic!("a timeline: {error}: {}", response.text))
}

/// The outcomes `function` had with the (first) event of `event_type`.
fn outcomes(timeline: &Timeline, event_type: &str, function: &str) -> Vec<String> {
    let hop = timeline.hops.iter().find(|hop| hop.event_type == event_type);
    let hop = hop.unwrap_or_else(|| panic!("no {event_type} in {timeline:#?}"));
    let consumer = hop.consumers.iter().find(|consumer| consumer.function == function);
    consumer.unwrap_or_else(|| panic!("{function} does not consume {event_type}: {hop:#?}")).outcomes.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_order_is_one_trace_and_every_line_about_it_names_it() {
    // GIVEN choreo up, its log lines captured as Lambda would write them
    let logs = CapturedLogs::install();
    let app = spawn_app(&default_catalog()).await;

    // WHEN an order that waits for a replenishment is placed in the caller's trace
    let order_id = post_in_trace(&app.router, &order_body("GADGET-2", 10, "FR")).await;
    app.settle().await;

    // THEN every event of its saga is in the caller's trace, each with a
    // span of its own whose parent is its cause's span (the caller's for the first)
    let events = events_of(&app, &order_id);
    assert_eq!(events.len(), 5, "the whole saga was recorded: {events:#?}");
    let spans: HashMap<_, _> = events.iter().map(|event| (event.id, event.span_id().to_owned())).collect();
    for event in &events {
        assert_eq!(event.trace_id(), CALLER_TRACE, "{} is in the caller's trace", event.event_type());
        let parent = match event.causation_id {
            Some(cause) => spans.get(&cause).cloned(),
            None => Some(CALLER_SPAN.to_owned()),
        };
        assert_eq!(event.parent_span, parent, "{}'s parent span is its cause's", event.event_type());
    }
    let distinct: std::collections::HashSet<_> = spans.values().collect();
    assert_eq!(distinct.len(), events.len(), "a new span per hop");

    // AND every log line that names the order names its trace too, and each step wrote one
    let about_it: Vec<Value> = logs.lines().into_iter().filter(|line| line.to_string().contains(&order_id)).collect();
    for line in &about_it {
        assert!(line.to_string().contains(CALLER_TRACE), "a line about the order without its trace: {line}");
    }
    let steps = about_it.iter().filter(|line| line["target"] == "choreo::saga").count();
    assert_eq!(steps, 8, "one line per step: {about_it:#?}");
    assert!(about_it.iter().any(|line| line["outcome"] == "emitted" && line["duration_ms"].is_number()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_of_a_replenished_order_shows_every_hop_and_a_duplicate() {
    // GIVEN a replenished order whose saga ended
    let app = spawn_app(&default_catalog()).await;
    let order_id = post_in_trace(&app.router, &order_body("GADGET-2", 10, "FR")).await;
    app.settle().await;

    // WHEN its order.created is delivered once more
    let created = events_of(&app, &order_id).into_iter().find(|event| event.causation_id.is_none());
    let created = created.expect("order.created was recorded");
    let origin = OutboxRef { function: Function::CreateOrder, key: "delivered-again".into() };
    app.bus.publish(&origin, std::slice::from_ref(&created)).await.expect("published again");
    app.settle().await;

    // THEN its timeline lists every event in causal order, the replenishment
    // included, one trace, and the second delivery as a duplicate (whose
    // first run's events went out again, so the steps after it saw duplicates too)
    let timeline = timeline(&app.router, &order_id).await;
    assert_eq!(timeline.trace_id, CALLER_TRACE);
    let types: Vec<&str> = timeline.hops.iter().map(|hop| hop.event_type.as_str()).collect();
    for expected in
        ["order.created", "inventory.insufficient", "stock.replenished", "inventory.reserved", "order.shipped"]
    {
        assert!(types.contains(&expected), "{expected} is in the timeline: {types:?}");
    }
    assert_eq!(types[0], "order.created");
    for (index, hop) in timeline.hops.iter().enumerate() {
        if let Some(cause) = hop.cause_id {
            let cause_at = timeline.hops.iter().position(|other| other.event_id == cause);
            assert!(cause_at.is_some_and(|at| at < index), "{} comes after its cause", hop.event_type);
            assert!(hop.gap_ms.is_some_and(|gap| gap >= 0.0), "{} has its gap", hop.event_type);
        }
    }
    assert_eq!(
        outcomes(&timeline, "order.created", "reserve-inventory"),
        ["emitted inventory.insufficient", "duplicate"]
    );
    assert_eq!(
        outcomes(&timeline, "stock.replenished", "reserve-inventory"),
        ["emitted inventory.reserved", "duplicate"]
    );
    assert_eq!(outcomes(&timeline, "inventory.insufficient", "order-status"), ["emitted nothing", "duplicate"]);

    // AND another order's timeline is 404, a bad id 400
    let unknown = shared::contract::domain::OrderId::new();
    let response = app.get(&format!("/orders/{unknown}/timeline")).await;
    response.assert_problem(StatusCode::NOT_FOUND);
    app.get("/orders/nope/timeline").await.assert_problem(StatusCode::BAD_REQUEST);
}

/// A real step that fails: once retryably, or always for good.
struct Failing {
    /// The real step.
    inner: Arc<dyn Step>,
    /// Fails every time (permanent) rather than the first time (retryable).
    always: bool,
    /// Calls so far.
    calls: AtomicUsize,
}

#[async_trait]
impl Step for Failing {
    fn function(&self) -> Function {
        self.inner.function()
    }

    async fn handle(&self, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        match (self.always, call) {
            (true, _) => Err(StepError::Permanent("the test says never".into())),
            (false, 0) => Err(StepError::Retryable("the test says not yet".into())),
            _ => self.inner.handle(event, ports).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_shows_a_retried_and_a_dead_lettered_step() {
    // GIVEN choreo up whose ship-order fails once and settle-inventory always
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("choreo.db")).expect("the store opens"));
    store.seed_if_empty(&default_catalog()).await.expect("seeded");
    let steps = choreo::steps::all()
        .into_iter()
        .map(|step| match step.function() {
            Function::ShipOrder => Arc::new(Failing { inner: step, always: false, calls: 0.into() }) as Arc<dyn Step>,
            Function::SettleInventory => Arc::new(Failing { inner: step, always: true, calls: 0.into() }),
            _ => step,
        })
        .collect();
    let ports = Ports { store: Arc::clone(&store), ship_countries: ShipCountries::default() };
    let bus = InProcessBus::start(steps, ports, test_delivery(), None);
    let router = choreo::up::app_router(Arc::clone(&store), Arc::new(bus.clone()));

    // WHEN an order in stock is placed
    let order_id = post_in_trace(&router, &order_body("WIDGET-1", 1, "FR")).await;
    bus.idle().await;

    // THEN the timeline shows ship-order retried then shipping, and
    // settle-inventory's delivery dead-lettered (where the saga stopped)
    let timeline = timeline(&router, &order_id).await;
    assert_eq!(outcomes(&timeline, "inventory.reserved", "ship-order"), ["retried", "emitted order.shipped"]);
    assert_eq!(outcomes(&timeline, "order.shipped", "settle-inventory"), ["dead-lettered"]);
    assert_eq!(outcomes(&timeline, "order.shipped", "order-status"), ["emitted nothing"]);
    assert_eq!(bus.dead_letters().len(), 1);
}

/// Samples of Prometheus text format, checked line by line: `# HELP`/`# TYPE`
/// comments, then `name{label="value",...} number`, every family typed before its samples.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some("counter" | "histogram" | "gauge")) => {
                    typed.insert(name.to_owned());
                }
                (Some("HELP"), Some(_), Some(_)) => {}
                _ => panic!("a malformed comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|labels| !labels.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|labels| labels.strip_suffix('}'));
            let inner = inner.unwrap_or_else(|| panic!("bad labels: {line}"));
            for label in inner.split(',') {
                let (key, quoted) = label.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(!key.is_empty() && quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'));
            }
        }
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name);
        assert!(typed.contains(name) || typed.contains(family), "{name} has no # TYPE before it");
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn metrics(app: &TestApp) -> HashMap<String, f64> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.header("content-type").is_some_and(|kind| kind.starts_with("text/plain; version=0.0.4")));
    parse_prometheus(&response.text)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_prometheus_text_and_count_the_orders_sent() {
    // GIVEN choreo up, its counters read before
    let app = spawn_app(&default_catalog()).await;
    let before = metrics(&app).await;

    // WHEN three orders in stock are placed and their sagas end
    for _ in 0..3 {
        app.post_order(&order_body("WIDGET-1", 1, "FR")).await.order_id();
    }
    app.settle().await;

    // THEN the counters moved by exactly three
    let after = metrics(&app).await;
    let moved = |series: &str| after.get(series).copied().unwrap_or(-1.0) - before.get(series).copied().unwrap_or(0.0);
    assert_eq!(moved("choreo_orders_accepted_total"), 3.0);
    for (function, event) in [
        ("reserve-inventory", "order.created"),
        ("ship-order", "inventory.reserved"),
        ("settle-inventory", "order.shipped"),
        ("order-status", "order.shipped"),
    ] {
        let series = format!("choreo_steps_total{{function=\"{function}\",event=\"{event}\",outcome=\"emitted\"}}");
        assert_eq!(moved(&series), 3.0, "{series}");
    }
    assert_eq!(moved("choreo_step_duration_seconds_count{function=\"ship-order\"}"), 3.0);
}
