//! Helpers of the bridge's integration tests (`bridge_lambda`, `bridge_sqs`):
//! a RabbitMQ virtual host per test, child processes that die with the test
//! (their whole process group), free ports, bounded polling, AWS clients for
//! local endpoints, and a few ready-made events.
//!
//! Every test runs against the broker at `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`) in a fresh vhost created with
//! `rabbitmqctl`, deleted when the `Vhost` is dropped (even on a failure).

#![allow(dead_code)] // each test binary uses its own part of this module

use std::fs::File;
use std::future::Future;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;
use shared::bus::amqp::AmqpLink;
use shared::contract::domain::NewOrder;
use shared::contract::events::InventoryReserved;
use shared::{Event, Function, Payload};

/// The workspace root (where `cargo lambda watch` must run).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the bridge crate sits in the workspace").to_path_buf()
}

/// Logs of the code under test when `TEST_LOG` is set.
pub fn init_logging() {
    static LOGGING: std::sync::Once = std::sync::Once::new();
    LOGGING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            shared::telemetry::init();
        }
    });
}

// ------------------------------------------------------------------ vhost

/// A RabbitMQ virtual host of its own, deleted on drop.
pub struct Vhost {
    pub name: String,
    /// `AMQP_URL` with this vhost instead of its own.
    pub url: String,
}

/// Runs `rabbitmqctl`; tries again for up to 30 s while it fails (another
/// test may be restarting the broker).
fn rabbitmqctl(args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new("rabbitmqctl")
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("rabbitmqctl (RabbitMQ's admin tool) cannot run: {error}"));
        if output.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rabbitmqctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Vhost {
    pub fn create(label: &str) -> Self {
        let name = format!("choreo-{label}-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = Self { url: vhost_url(&name), name };
        rabbitmqctl(&["set_permissions", "-p", &vhost.name, "guest", ".*", ".*", ".*"]);
        vhost
    }

    /// A link (one connection) to this vhost.
    pub fn link(&self, name: &str) -> Arc<AmqpLink> {
        AmqpLink::new(&self.url, name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).output();
    }
}

/// `AMQP_URL` (or the default broker) pointed at `vhost`.
fn vhost_url(vhost: &str) -> String {
    let base = std::env::var("AMQP_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| shared::bus::amqp::DEFAULT_AMQP_URL.to_owned());
    let base = base.split('?').next().unwrap_or_default();
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{server}/{vhost}")
}

/// Messages ready in `queue` and consumers on it (a passive declare).
pub async fn queue_state(link: &AmqpLink, queue: &str) -> (u32, u32) {
    let channel = link.channel().await.expect("a channel to the test vhost");
    let declared = channel
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap_or_else(|error| panic!("queue {queue} is not there: {error}"));
    let _ = channel.close(200, "inspected".into()).await;
    (declared.message_count(), declared.consumer_count())
}

// ------------------------------------------------------------------ processes

/// A child process (and its process group) killed when dropped.
pub struct Spawned {
    pub name: String,
    child: Child,
    /// Where its stdout and stderr go, for the failure messages.
    pub log: PathBuf,
}

impl Spawned {
    /// Starts `command` in a process group of its own (so its own children
    /// can be stopped with it), output to `log`.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Self {
        let out = File::create(log).expect("a log file");
        let err = out.try_clone().expect("a log file handle");
        command.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = command.spawn().unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Self { name: name.to_owned(), child, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `TERM`) to the process itself.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(status.is_ok_and(|status| status.success()), "kill -{signal} {} failed", self.pid());
    }

    /// Its exit status, waiting at most `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {} ({}):\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(format!("-{}", self.pid()))
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // The whole group: `cargo lambda watch` runs each function as a child.
        self.signal_group("TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Polls `probe` until it answers `Some`, at most `timeout`; panics with
/// `what` (and whatever `context` tells then) when time runs out.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, context: impl Fn() -> String, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", context());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------ events

/// A valid order body to `country`.
pub fn order_body(sku: &str, quantity: u32, country: &str) -> serde_json::Value {
    json!({
        "customer_id": "bridge-test",
        "items": [{"sku": sku, "quantity": quantity}],
        "shipping_address": {"name": "Ada Lovelace", "line1": "12 Analytical Row", "city": "London",
                             "postal_code": "N1 7AA", "country": country}
    })
}

pub fn new_order(sku: &str, quantity: u32, country: &str) -> NewOrder {
    NewOrder::parse(&order_body(sku, quantity, country)).expect("a valid test order")
}

/// The AWS configuration of a test client for a local endpoint (moto, a fake
/// Invoke API): dummy credentials, a fixed region, plain HTTP.
pub async fn local_aws(endpoint: &str) -> aws_config::SdkConfig {
    let credentials = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test");
    shared::config::with_http_client(aws_config::defaults(aws_config::BehaviorVersion::latest()))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .load()
        .await
}

/// An `order.created` for a new order, as create-order emits it.
pub fn order_created(sku: &str, quantity: u32, country: &str) -> Event {
    let order = new_order(sku, quantity, country);
    Event::new(
        Function::CreateOrder,
        shared::contract::domain::OrderId::new(),
        None,
        Payload::OrderCreated(shared::contract::events::OrderCreated {
            customer_id: order.customer_id,
            items: order.items,
            shipping_address: order.shipping_address,
        }),
    )
}

/// An `inventory.reserved` for a new order (consumed by ship-order and order-status).
pub fn inventory_reserved(sku: &str, quantity: u32) -> Event {
    let order = new_order(sku, quantity, "FR");
    Event::new(
        Function::ReserveInventory,
        shared::contract::domain::OrderId::new(),
        None,
        Payload::InventoryReserved(InventoryReserved { items: order.items, shipping_address: order.shipping_address }),
    )
}
