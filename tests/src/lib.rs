//! Helpers of the end-to-end tests in `tests/tests/`, in the zero-to-production
//! style: `spawn_app` builds the whole embedded system (`choreo up` minus the
//! TCP listener) on its own temporary SQLite file with the catalog the test
//! chooses, and the request helpers drive its router in process and answer
//! `(status, headers, JSON)`.
//!
//! Waiting for a saga is `app.settle().await` (the bus going idle), never a sleep.
//! Set `TEST_LOG=1` to see each saga step logged.

pub mod lambda_fixtures;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use choreo::up::{DEFAULT_CATALOG, Embedded, UpConfig, parse_catalog};
use http_body_util::BodyExt;
use serde_json::Value;
use shared::bus::DeliverySettings;
use shared::bus::inprocess::InProcessBus;
use shared::contract::domain::{OrderId, Sku};
use shared::step::ShipCountries;
use shared::store::{OutboxEntry, SeedStock, StockLevel, Store};
use shared::{Event, Function};
use tempfile::TempDir;
use tower::ServiceExt;

/// One catalog entry: `{"sku","available","max_replenish"}`.
pub fn stock(sku: &str, available: u64, max_replenish: u64) -> SeedStock {
    SeedStock { sku: Sku::parse(sku).expect("test SKUs are valid"), available, max_replenish }
}

/// The catalog `choreo up` seeds by default (`infra/inventory.seed.json`).
pub fn default_catalog() -> Vec<SeedStock> {
    parse_catalog("infra/inventory.seed.json", DEFAULT_CATALOG).expect("the default catalog parses")
}

/// A running system, alone on its own database file.
pub struct TestApp {
    /// The store the steps and the HTTP functions share.
    pub store: Arc<dyn Store>,
    /// The in-process bus: `idle()` tells when every saga has stopped moving.
    pub bus: InProcessBus,
    /// The HTTP API of `choreo up`, driven in process with `oneshot`.
    pub router: Router,
    /// The SQLite file, for the row counts the `Store` port does not offer.
    pub db: PathBuf,
    /// What the database was seeded with.
    pub catalog: Vec<SeedStock>,
    /// Deleted (with the database) when the test ends.
    _dir: TempDir,
}

/// Starts the embedded system on a fresh database seeded with `catalog`,
/// shipping everywhere but `AQ` (the default of `SHIP_COUNTRIES`).
pub async fn spawn_app(catalog: &[SeedStock]) -> TestApp {
    spawn_app_with_deadline(catalog, shared::saga::DEFAULT_SAGA_DEADLINE).await
}

/// [`spawn_app`] whose saga deadline is `deadline` (ARCHITECTURE.md §7.9):
/// tests of the deadline give it milliseconds.
pub async fn spawn_app_with_deadline(catalog: &[SeedStock], deadline: std::time::Duration) -> TestApp {
    init_logging();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("choreo.db");
    let config = UpConfig {
        store: shared::config::StoreSettings::sqlite(db.clone()),
        catalog: catalog.to_vec(),
        ship_countries: ShipCountries::default(),
        delivery: test_delivery(),
        observer: None,
        store_counts: None,
    };
    let system = Embedded::start_with_deadline(config, deadline).await.expect("the embedded system starts");
    TestApp { store: system.store, bus: system.bus, router: system.router, db, catalog: catalog.to_vec(), _dir: dir }
}

/// The delivery settings of the tests: retries that wait milliseconds, not seconds.
pub fn test_delivery() -> DeliverySettings {
    DeliverySettings { retry_base: std::time::Duration::from_millis(50), ..DeliverySettings::default() }
}

fn init_logging() {
    static LOGGING: Once = Once::new();
    LOGGING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            shared::telemetry::init();
        }
    });
}

// ---------------------------------------------------------------- requests

/// What the API answered.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON; `Value::Null` when it is empty or not JSON (see `text`).
    pub body: Value,
    pub text: String,
}

impl TestResponse {
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and a `detail` a person can
    /// act on; answers the problem body.
    #[track_caller]
    pub fn assert_problem(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        assert_eq!(
            self.header(header::CONTENT_TYPE),
            Some("application/problem+json"),
            "a {status} must be application/problem+json; body: {}",
            self.text
        );
        assert_eq!(self.body["status"], status.as_u16(), "problem.status must repeat the HTTP status: {}", self.text);
        assert!(self.body["type"].is_string(), "problem.type is missing: {}", self.text);
        assert!(self.body["title"].as_str().is_some_and(|title| !title.is_empty()), "no title: {}", self.text);
        let detail = self.body["detail"].as_str().unwrap_or_default();
        assert!(!detail.trim().is_empty(), "a problem needs a detail: {}", self.text);
        &self.body
    }

    /// Asserts a 422 validation problem and answers the JSON pointers its
    /// `errors` name, in order (each with a non-empty `detail`).
    #[track_caller]
    pub fn assert_validation_error(&self) -> Vec<String> {
        let problem = self.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        let errors = problem["errors"].as_array().unwrap_or_else(|| panic!("a 422 lists its errors: {}", self.text));
        assert!(!errors.is_empty(), "a 422 names at least one bad field: {}", self.text);
        errors
            .iter()
            .map(|error| {
                let detail = error["detail"].as_str().unwrap_or_default();
                assert!(!detail.is_empty(), "every field error explains itself: {error}");
                error["field"].as_str().unwrap_or_else(|| panic!("a field error names its field: {error}")).to_owned()
            })
            .collect()
    }

    /// The `order_id` of a `202 Accepted`.
    #[track_caller]
    pub fn order_id(&self) -> String {
        assert_eq!(self.status, StatusCode::ACCEPTED, "the order was not accepted: {}", self.text);
        self.body["order_id"].as_str().unwrap_or_else(|| panic!("no order_id in {}", self.text)).to_owned()
    }
}

/// Sends one request through `router` (a clone of it, so it can run in any task).
pub async fn send(router: Router, request: Request<Body>) -> TestResponse {
    // The router's error type is Infallible: every failure is a response.
    let response = router.oneshot(request).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("the body can be read").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    TestResponse { status, headers, body, text }
}

/// `POST /orders` with a JSON body and optionally an `Idempotency-Key`.
pub fn post_order_request(body: &Value, idempotency_key: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/orders").header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    request.body(Body::from(body.to_string())).expect("a valid request")
}

/// Any request, with an optional content type and a raw body.
pub fn raw_request(method: Method, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.body(body.into()).expect("a valid request")
}

impl TestApp {
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        send(self.router.clone(), request).await
    }

    pub async fn post_order(&self, body: &Value) -> TestResponse {
        self.send(post_order_request(body, None)).await
    }

    pub async fn post_order_with_key(&self, body: &Value, key: &str) -> TestResponse {
        self.send(post_order_request(body, Some(key))).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(raw_request(Method::GET, path, None, Body::empty())).await
    }

    /// Places an order, waits until its saga (and every other) stops moving,
    /// and answers the order as `GET /orders/{id}` shows it.
    pub async fn place_and_settle(&self, body: &Value) -> Value {
        let order_id = self.post_order(body).await.order_id();
        self.settle().await;
        self.order(&order_id).await
    }

    /// `GET /orders/{id}`, which must answer 200.
    pub async fn order(&self, order_id: &str) -> Value {
        let response = self.get(&format!("/orders/{order_id}")).await;
        assert_eq!(response.status, StatusCode::OK, "GET /orders/{order_id}: {}", response.text);
        response.body
    }

    /// Waits until no event is queued, handled or waiting for a retry, then
    /// checks that none was dead-lettered on the way.
    pub async fn settle(&self) {
        self.bus.idle().await;
        let dead: Vec<String> = self
            .bus
            .dead_letters()
            .iter()
            .map(|letter| format!("{} <- {}: {}", letter.function, letter.event.event_type(), letter.error))
            .collect();
        assert!(dead.is_empty(), "events were dead-lettered: {dead:#?}");
    }

    // ------------------------------------------------------------ the store

    pub async fn stock_of(&self, sku: &str) -> StockLevel {
        let sku = Sku::parse(sku).expect("a valid SKU");
        let mut levels = self.store.stock(std::slice::from_ref(&sku)).await.expect("the store answers");
        levels.pop().unwrap_or_else(|| panic!("{sku} is not in the catalog"))
    }

    /// ARCHITECTURE.md §7.8: `available + reserved + shipped = seeded + replenished` for every SKU.
    pub async fn assert_stock_conserved(&self) {
        let levels = self.store.all_stock().await.expect("the store answers");
        assert_eq!(levels.len(), self.catalog.len(), "every catalog SKU is stored, and nothing else");
        for level in levels {
            assert!(level.is_conserved(), "stock is not conserved: {level:?}");
            let seeded = self.catalog.iter().find(|entry| entry.sku == level.sku).map(|entry| entry.available);
            assert_eq!(Some(level.seeded), seeded, "{} is seeded as the catalog says", level.sku);
        }
    }

    /// Outbox entries not yet published (committed up to a day from now, so all of them).
    pub async fn unpublished(&self) -> Vec<OutboxEntry> {
        let horizon = chrono::Utc::now() + chrono::Duration::days(1);
        self.store.unpublished(horizon).await.expect("the store answers")
    }

    /// Rows per table, read straight from the SQLite file (the `Store` port has no counts).
    pub fn row_counts(&self) -> RowCounts {
        let connection = self.connection();
        let count = |table: &str| -> u64 {
            let rows: i64 = connection
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))
                .unwrap_or_else(|error| panic!("count {table}: {error}"));
            rows.unsigned_abs()
        };
        RowCounts {
            orders: count("orders"),
            reservations: count("reservations"),
            shipments: count("shipments"),
            processed: count("processed"),
        }
    }

    /// Everything the store holds that a request could have changed, and
    /// whether the bus is carrying anything: equal snapshots before and after
    /// a request mean it stored nothing and published nothing.
    pub async fn snapshot(&self) -> Snapshot {
        Snapshot {
            stock: self.store.all_stock().await.expect("the store answers"),
            rows: self.row_counts(),
            unpublished: self.unpublished().await.len(),
            in_flight: self.bus.in_flight(),
        }
    }

    /// Every event the system has emitted so far, with the step and key it was
    /// committed under, in commit order: the `processed` table (ARCHITECTURE.md §7.1)
    /// keeps each step's emitted events with the key of what it consumed.
    pub fn recorded(&self) -> Vec<OutboxEntry> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT function, key, emitted FROM processed ORDER BY committed_at")
            .expect("the processed table is readable");
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))
            .expect("the processed table is readable");
        rows.map(|row| {
            let (function, key, emitted) = row.expect("a processed row");
            let function = Function::from_name(&function).unwrap_or_else(|| panic!("unknown function {function}"));
            let events: Vec<Event> = serde_json::from_str(&emitted).expect("stored events decode");
            OutboxEntry { function, key, events }
        })
        .collect()
    }

    fn connection(&self) -> rusqlite::Connection {
        open_read_only(&self.db)
    }
}

fn open_read_only(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|error| panic!("open {}: {error}", db.display()))
}

/// Rows of the tables a saga writes (the stock table is compared whole instead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub orders: u64,
    pub reservations: u64,
    pub shipments: u64,
    /// Processed events and outbox: one row per handled event or accepted order.
    pub processed: u64,
}

/// See `TestApp::snapshot`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub stock: Vec<StockLevel>,
    pub rows: RowCounts,
    pub unpublished: usize,
    pub in_flight: usize,
}

// ---------------------------------------------------------------- responses

/// The event types of an order's `history`, oldest first.
pub fn history_types(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .unwrap_or_else(|| panic!("an order has a history: {order}"))
        .iter()
        .map(|entry| entry["type"].as_str().unwrap_or_else(|| panic!("a history entry has a type: {entry}")).to_owned())
        .collect()
}

/// Parses an `order_id` the API answered.
pub fn order_id(text: &str) -> OrderId {
    OrderId::parse(text).unwrap_or_else(|error| panic!("{error}"))
}
