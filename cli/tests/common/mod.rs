//! Helpers of the `choreo` crate's tests against RabbitMQ (`amqp_*`,
//! `topology`, and with [`bridge`] the bridge's tests `bridge_*`).
//!
//! Every test gets its own virtual host (the testkit's [`Vhost`], deleted
//! when its guard drops, even when the test fails) and its own temporary
//! SQLite file. The system runs either in process (`AmqpSystem`, the HTTP
//! API on 127.0.0.1:0) or as the real `choreo up --amqp` binary when a test
//! needs a process to signal.
//!
//! Waiting is always polling with a bound; nothing asserts on time.
//! Set `TEST_LOG=1` to see the saga steps logged.

#![allow(dead_code)] // each test binary uses its own part of these helpers

pub mod bridge;
pub mod kafka;
pub mod runner;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Once};
use std::time::Duration;

use choreo::client::Client;
use choreo::up::{AmqpSystem, DEFAULT_CATALOG, UpConfig, parse_catalog, serve};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use shared::Function;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, SAGA_ENDED_QUEUE, dead_letter_queue, retry_queue};
use shared::contract::domain::Sku;
use shared::step::ShipCountries;
use shared::store::{SeedStock, StockLevel, Store};
pub use shared::testkit::broker::Vhost;
use shared::testkit::broker::{rabbitmqctl, try_rabbitmqctl};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a saga may take before a test gives up on it (generous: the
/// machine may be busy; nothing asserts on time).
pub const SAGA_TIMEOUT: Duration = Duration::from_secs(60);

pub fn init_logging() {
    static LOGGING: Once = Once::new();
    LOGGING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            shared::telemetry::init();
        }
    });
}

// ------------------------------------------------------------- the broker

/// `scheme://user:password@host:port` of `AMQP_URL`, without the vhost.
pub fn broker_base() -> String {
    shared::testkit::broker::BrokerBase::from_env().server
}

/// Messages ready in `queue` and consumers on it (`queue.declare` passive).
/// Unacknowledged messages are not counted: ask once the consumers are
/// stopped or idle.
pub async fn queue_state(link: &AmqpLink, queue: &str) -> (u32, u32) {
    let channel = link.channel().await.unwrap_or_else(|error| panic!("a channel to inspect {queue}: {error}"));
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|error| panic!("queue {queue} is declared: {error}"));
    let _ = channel.close(200, "inspected".into()).await;
    (declared.message_count(), declared.consumer_count())
}

/// Messages ready in `queue` (see [`queue_state`]).
pub async fn message_count(link: &AmqpLink, queue: &str) -> u32 {
    queue_state(link, queue).await.0
}

/// Every queue a function owns: work, retries, dead letters.
pub fn function_queues(settings: &DeliverySettings) -> Vec<String> {
    let mut queues = Vec::new();
    for function in Function::consumers() {
        queues.push(function.queue());
        queues.extend((1..=settings.max_retries).map(|retry| retry_queue(function, retry)));
        queues.push(dead_letter_queue(function));
    }
    queues
}

/// Asserts that no work, retry or dead-letter queue holds a message.
pub async fn assert_function_queues_empty(link: &AmqpLink, settings: &DeliverySettings) {
    let mut left = Vec::new();
    for queue in function_queues(settings) {
        let count = message_count(link, &queue).await;
        if count > 0 {
            left.push(format!("{queue}: {count}"));
        }
    }
    assert!(left.is_empty(), "messages were left behind: {left:?}");
}

/// A message read off a queue: its AMQP `type` and `correlation_id` (the order).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Envelope {
    pub event_type: String,
    pub order_id: String,
}

/// Takes every message off `queue` (acknowledging it).
pub async fn drain(link: &AmqpLink, queue: &str) -> Vec<Envelope> {
    let channel = link.channel().await.unwrap_or_else(|error| panic!("a channel to drain {queue}: {error}"));
    let mut taken = Vec::new();
    let options = BasicGetOptions { no_ack: true };
    while let Some(message) =
        channel.basic_get(queue.into(), options).await.unwrap_or_else(|error| panic!("basic.get {queue}: {error}"))
    {
        let properties = &message.delivery.properties;
        taken.push(Envelope {
            event_type: properties.kind().as_ref().map(ToString::to_string).unwrap_or_default(),
            order_id: properties.correlation_id().as_ref().map(ToString::to_string).unwrap_or_default(),
        });
    }
    let _ = channel.close(200, "drained".into()).await;
    taken
}

/// The events that reached `choreo.saga-ended`, taken off the queue, sorted.
pub async fn drain_saga_ended(link: &AmqpLink) -> Vec<Envelope> {
    let mut ended = drain(link, SAGA_ENDED_QUEUE).await;
    ended.sort();
    ended
}

// ------------------------------------------------------------- broker-wide faults

/// Starts RabbitMQ's application again when dropped, so that a failing outage
/// test never leaves the broker down for everything else.
pub struct RestartBrokerOnDrop {
    running: bool,
}

impl RestartBrokerOnDrop {
    /// `rabbitmqctl stop_app`: every connection is closed, the port stops answering.
    pub fn stop() -> Self {
        let guard = Self { running: false };
        tokio::task::block_in_place(|| rabbitmqctl(&["stop_app"]));
        guard
    }

    pub fn start(&mut self) {
        tokio::task::block_in_place(|| {
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
        });
        self.running = true;
    }
}

impl Drop for RestartBrokerOnDrop {
    fn drop(&mut self) {
        if !self.running {
            for args in [&["start_app"][..], &["await_startup"][..]] {
                if let Err(error) = try_rabbitmqctl(args) {
                    eprintln!("could not restart RabbitMQ ({error}); run `rabbitmqctl start_app`");
                }
            }
        }
    }
}

// ------------------------------------------------------------- the system

/// Retries that finish quickly: 50 ms, doubling.
pub fn test_settings() -> DeliverySettings {
    DeliverySettings { retry_base: Duration::from_millis(50), ..DeliverySettings::default() }
}

/// The catalog `choreo up` seeds by default (`infra/inventory.seed.json`).
pub fn default_catalog() -> Vec<SeedStock> {
    parse_catalog("infra/inventory.seed.json", DEFAULT_CATALOG).expect("the default catalog parses")
}

pub fn stock(sku: &str, available: u64, max_replenish: u64) -> SeedStock {
    SeedStock { sku: Sku::parse(sku).expect("test SKUs are valid"), available, max_replenish }
}

/// A temporary directory holding the test's database (and catalog file).
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("a temporary directory") }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("choreo.db")
    }

    /// Writes `catalog` as an `--inventory` file and answers its path.
    pub fn inventory_file(&self, catalog: &[SeedStock]) -> PathBuf {
        let path = self.dir.path().join("inventory.json");
        std::fs::write(&path, serde_json::to_vec(catalog).expect("a catalog serializes")).expect("write the catalog");
        path
    }
}

/// Serves `router` on a free local port: a client of it, the switch that
/// stops it, and its task.
pub async fn serve_locally(router: axum::Router) -> (Client, oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free local port");
    let address = listener.local_addr().expect("the bound address");
    let (stop_http, stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(serve(listener, router, async {
        let _ = stopped.await;
    }));
    (Client::new(&format!("http://{address}")), stop_http, http)
}

/// `choreo up`'s configuration on the SQLite file `db`.
pub fn up_config(db: &Path, catalog: &[SeedStock], settings: DeliverySettings) -> UpConfig {
    UpConfig {
        store: shared::config::StoreSettings::sqlite(db),
        catalog: catalog.to_vec(),
        ship_countries: ShipCountries::default(),
        delivery: settings,
        observer: None,
        store_counts: None,
    }
}

/// `choreo up --amqp` in this process: the system and its HTTP API on a free port.
pub struct InProcess {
    pub store: Arc<dyn Store>,
    pub client: Client,
    system: AmqpSystem,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    pub async fn start(vhost: &Vhost, db: &Path, catalog: &[SeedStock], settings: DeliverySettings) -> Self {
        init_logging();
        let config = up_config(db, catalog, settings);
        let system = AmqpSystem::start(config, &vhost.url).await.expect("choreo up --amqp starts");
        let (client, stop_http, http) = serve_locally(system.router.clone()).await;
        Self { store: Arc::clone(&system.store), client, system, stop_http, http }
    }

    /// Stops the HTTP API, then the consumers (which finish the messages in hand).
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        self.system.shutdown().await;
    }
}

// ------------------------------------------------------------- the binary

/// The `choreo` binary running `choreo up --amqp`, killed if still running when dropped.
pub struct ChoreoProcess {
    child: Child,
    /// Where its HTTP API answers.
    pub url: String,
}

impl ChoreoProcess {
    /// Starts `choreo up --amqp URL --db DB --inventory FILE --port 0` with
    /// quick retries, and waits until it prints the address it serves.
    pub fn spawn(vhost: &Vhost, db: &Path, inventory: &Path) -> Self {
        Self::spawn_on(&["--amqp", &vhost.url], &[], db, inventory)
    }

    /// `choreo up BUS… --db DB --inventory FILE --port 0` on the bus `bus` names (`--amqp URL`, `--kafka
    /// SERVERS`), with `env` set.
    pub fn spawn_on(bus: &[&str], env: &[(&str, &str)], db: &Path, inventory: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
            .arg("up")
            .args(bus)
            .args(["--port", "0", "--retry-delay-ms", "50"])
            // The bus is the one `bus` names, whatever the test runner's environment holds.
            .env_remove("AMQP_URL")
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .envs(env.iter().copied())
            .arg("--db")
            .arg(db)
            .arg("--inventory")
            .arg(inventory)
            .env("RUST_LOG", if std::env::var_os("TEST_LOG").is_some() { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the choreo binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready, banner) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("choreo is up: ") {
                    let url = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = ready.send(url);
                }
            }
        });
        let url = match banner.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(error) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "choreo up did not print its address ({error}); it exited with {status:?} (its stderr is above)"
                );
            }
        };
        Self { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// Sends SIGTERM, as a process manager stopping the service would.
    pub fn terminate(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("the kill command runs");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.pid());
    }

    /// Waits for the process to exit, at most `bound`; answers its exit status.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "choreo (pid {}) did not exit within {bound:?}",
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChoreoProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------- clients

/// Clients posting orders `0..count` at once, each with its Idempotency-Key;
/// an order refused (the process is gone or stopping) is skipped: the tests
/// post every order again after a restart.
pub struct Posters {
    /// The orders accepted so far, by number.
    accepted: Arc<std::sync::Mutex<std::collections::BTreeMap<usize, String>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Posters {
    pub fn start(
        client: &Client,
        clients: usize,
        count: usize,
        order: fn(usize) -> Value,
        key: fn(usize) -> String,
    ) -> Self {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted: Arc<std::sync::Mutex<std::collections::BTreeMap<usize, String>>> = Arc::default();
        let clients = (0..clients)
            .map(|_| {
                let (client, next, accepted) = (client.clone(), Arc::clone(&next), Arc::clone(&accepted));
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if n >= count {
                            break;
                        }
                        if let Ok(id) = client.create_order(&order(n), Some(&key(n))).await {
                            accepted.lock().expect("not poisoned").insert(n, id);
                        }
                    }
                })
            })
            .collect();
        Self { accepted, clients }
    }

    /// The orders accepted so far, by number.
    pub fn accepted(&self) -> std::collections::BTreeMap<usize, String> {
        self.accepted.lock().expect("not poisoned").clone()
    }

    /// Waits until at least `wanted` orders were accepted.
    pub async fn until_accepted(&self, wanted: usize) {
        eventually(&format!("{wanted} orders accepted"), Duration::from_secs(60), || async {
            let count = self.accepted.lock().expect("not poisoned").len();
            if count >= wanted { Ok(()) } else { Err(format!("{count} accepted")) }
        })
        .await;
    }

    /// Waits for every client to run out of orders; answers what was accepted.
    pub async fn finish(mut self) -> std::collections::BTreeMap<usize, String> {
        for client in std::mem::take(&mut self.clients) {
            client.await.expect("a client");
        }
        self.accepted()
    }
}

// ------------------------------------------------------------- orders

/// The event types of an order's `history`, oldest first.
pub fn history_types(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .unwrap_or_else(|| panic!("an order has a history: {order}"))
        .iter()
        .map(|entry| entry["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub fn is_terminal(order: &Value) -> bool {
    matches!(order["status"].as_str(), Some("SHIPPED" | "CANCELLED"))
}

/// Polls `probe` until it answers `Ok`, for at most `bound`; on timeout
/// panics with the last `Err`, which says what was still missing.
pub async fn eventually<T, F, Fut>(what: &str, bound: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    let mut pause = Duration::from_millis(10);
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within {bound:?}; last: {last}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Waits until every order in `ids` is `SHIPPED` or `CANCELLED`; answers them in order.
pub async fn wait_all_terminal(client: &Client, ids: &[String], bound: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut done: Vec<Option<Value>> = vec![None; ids.len()];
    loop {
        let mut waiting = Vec::new();
        for (id, slot) in ids.iter().zip(done.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match client.order(id).await {
                Ok(order) if is_terminal(&order) => *slot = Some(order),
                Ok(order) => waiting.push(format!("{id} {} {:?}", order["status"], history_types(&order))),
                Err(error) => waiting.push(format!("{id}: {error}")),
            }
        }
        if waiting.is_empty() {
            return done.into_iter().flatten().collect();
        }
        let count = waiting.len();
        waiting.truncate(5);
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} of {} orders are not terminal after {bound:?}, e.g. {waiting:#?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stock of one SKU as `(available, reserved, shipped, replenished)`.
pub type Levels = (u64, u64, u64, u64);

/// How one saga path must end.
pub struct Expected<'a> {
    /// The terminal status.
    pub status: &'a str,
    /// Its `cancel_reason`, for a cancelled order.
    pub cancel_reason: Option<&'a str>,
    /// The event types of its history, in order.
    pub history: &'a [&'a str],
    /// `(sku, (available, reserved, shipped, replenished))` once the saga is over.
    pub stock: &'a [(&'a str, Levels)],
}

/// The five paths of the saga on the default catalog: the order that drives
/// each, and how it must end. One table for every hosting's path tests.
#[derive(Clone, Copy, Debug)]
pub enum SagaPath {
    /// In stock: ships.
    Ships,
    /// 5 gadgets seeded, the supplier delivers up to 50: an order for 10 waits, then ships.
    Replenished,
    /// 1 relic seeded, discontinued (max_replenish 0): cancelled out_of_stock.
    OutOfStock,
    /// To Antarctica: the shipment fails and exactly the reserved stock goes back.
    ShipmentFailed,
    /// An unknown SKU beside a known one: cancelled, nothing held.
    UnknownSku,
}

impl SagaPath {
    /// A short name for the path (vhost labels).
    pub fn label(self) -> &'static str {
        match self {
            Self::Ships => "ships",
            Self::Replenished => "replenished",
            Self::OutOfStock => "out-of-stock",
            Self::ShipmentFailed => "shipment-failed",
            Self::UnknownSku => "unknown-sku",
        }
    }

    /// The order's body and how its saga must end.
    pub fn order(self) -> (Value, Expected<'static>) {
        use shared::testkit::{order_body, with_item};
        match self {
            Self::Ships => (
                order_body("WIDGET-1", 2, "FR"),
                Expected {
                    status: "SHIPPED",
                    cancel_reason: None,
                    history: &["order.created", "inventory.reserved", "order.shipped"],
                    stock: &[("WIDGET-1", (98, 0, 2, 0))],
                },
            ),
            Self::Replenished => (
                order_body("GADGET-2", 10, "FR"),
                Expected {
                    status: "SHIPPED",
                    cancel_reason: None,
                    history: &["order.created", "inventory.insufficient", "inventory.reserved", "order.shipped"],
                    stock: &[("GADGET-2", (0, 0, 10, 5))],
                },
            ),
            Self::OutOfStock => (
                order_body("RELIC-9", 5, "FR"),
                Expected {
                    status: "CANCELLED",
                    cancel_reason: Some("out_of_stock"),
                    history: &["order.created", "inventory.insufficient", "replenishment.failed", "order.cancelled"],
                    stock: &[("RELIC-9", (1, 0, 0, 0))],
                },
            ),
            Self::ShipmentFailed => (
                with_item(order_body("BOLT-7", 20, "AQ"), "WIDGET-1", 3),
                Expected {
                    status: "CANCELLED",
                    cancel_reason: Some("shipment_failed"),
                    history: &["order.created", "inventory.reserved", "inventory.released", "order.cancelled"],
                    // exactly the seeded levels again
                    stock: &[("BOLT-7", (1000, 0, 0, 0)), ("WIDGET-1", (100, 0, 0, 0))],
                },
            ),
            Self::UnknownSku => (
                with_item(order_body("WIDGET-1", 1, "FR"), "NOPE-404", 1),
                Expected {
                    status: "CANCELLED",
                    cancel_reason: Some("unknown_sku"),
                    history: &["order.created", "inventory.rejected", "order.cancelled"],
                    stock: &[("WIDGET-1", (100, 0, 0, 0))],
                },
            ),
        }
    }
}

/// Waits until `order_id`'s saga ends as `expected` says: its status and
/// reason, its whole history, and each SKU's final levels. Answers the order.
pub async fn assert_saga_ends(client: &Client, order_id: &str, expected: &Expected<'_>) -> Value {
    let order = wait_all_terminal(client, &[order_id.to_owned()], SAGA_TIMEOUT).await.remove(0);
    assert_eq!(order["status"], expected.status, "{order:#}");
    assert_eq!(order["cancel_reason"].as_str(), expected.cancel_reason, "{order:#}");
    // inventory.reserved reaches order-status and ship-order at once, so
    // order.shipped may be recorded first: the history is whole a moment later.
    let order = eventually("the whole history", SAGA_TIMEOUT, || async {
        let order = client.order(order_id).await.map_err(|error| error.to_string())?;
        if history_types(&order) == expected.history { Ok(order) } else { Err(format!("{order:#}")) }
    })
    .await;
    assert_eq!(order["tracking_number"].is_string(), expected.status == "SHIPPED", "{order:#}");
    // settle-inventory may still be finishing when order-status recorded the end
    for &(sku, levels) in expected.stock {
        eventually(&format!("{sku} reaching {levels:?}"), SAGA_TIMEOUT, || async move {
            let now = inventory(client, sku).await;
            if now == levels { Ok(()) } else { Err(format!("{now:?}")) }
        })
        .await;
    }
    order
}

/// `GET /inventory/{sku}`.
pub async fn inventory(client: &Client, sku: &str) -> Levels {
    let level = client.inventory(sku).await.unwrap_or_else(|error| panic!("GET /inventory/{sku}: {error}"));
    let field = |name: &str| level[name].as_u64().unwrap_or_else(|| panic!("{name} in {level}"));
    (field("available"), field("reserved"), field("shipped"), field("replenished"))
}

/// ARCHITECTURE.md §7.8 for every SKU: `available + reserved + shipped = seeded + replenished`,
/// with `seeded` as the catalog says. Answers the levels.
pub async fn assert_conserved(store: &dyn Store, catalog: &[SeedStock]) -> Vec<StockLevel> {
    let levels = store.all_stock().await.expect("the store answers");
    assert_eq!(levels.len(), catalog.len(), "every catalog SKU is stored, and nothing else: {levels:?}");
    for level in &levels {
        assert!(level.is_conserved(), "stock is not conserved: {level:?}");
        let seeded = catalog.iter().find(|entry| entry.sku == level.sku).map(|entry| entry.available);
        assert_eq!(Some(level.seeded), seeded, "{} is seeded as the catalog says", level.sku);
    }
    levels
}
