//! Helpers of the bridge's tests (`bridge_lambda`, `bridge_sqs`): child
//! processes that die with the test (their whole process group), free ports,
//! AWS clients for local endpoints, and a few ready-made events.

use std::fs::File;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shared::contract::domain::NewOrder;
use shared::contract::events::InventoryReserved;
use shared::testkit::order_body;
use shared::{Event, Function, Payload};

/// The workspace root (where `cargo lambda watch` must run).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the bridge crate sits in the workspace").to_path_buf()
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

// ------------------------------------------------------------------ events

/// The order `POST /orders` would accept for [`order_body`].
pub fn new_order(sku: &str, quantity: u64, country: &str) -> NewOrder {
    NewOrder::parse(&order_body(sku, quantity, country)).expect("a valid test order")
}

/// An `order.created` for a new order, as create-order emits it.
pub fn order_created(sku: &str, quantity: u64, country: &str) -> Event {
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
pub fn inventory_reserved(sku: &str, quantity: u64) -> Event {
    let order = new_order(sku, quantity, "FR");
    Event::new(
        Function::ReserveInventory,
        shared::contract::domain::OrderId::new(),
        None,
        Payload::InventoryReserved(InventoryReserved { items: order.items, shipping_address: order.shipping_address }),
    )
}

// ------------------------------------------------------------ cargo lambda watch

/// The variables the functions read: removed from the test's own environment
/// before `env` is applied, so a developer's settings never leak into a test.
const CHOREO_VARIABLES: &[&str] = &[
    "SHIP_COUNTRIES",
    "CHOREO_STORE",
    "CHOREO_DB",
    "CHOREO_TABLE_PREFIX",
    "AMQP_URL",
    "AMQP_SECRET_ARN",
    "AMQP_CA_FILE",
    // A function named both buses refuses to start (shared::host::lambda::Bus).
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECRET_ARN",
    "AWS_ENDPOINT_URL",
    "RELAY_GRACE_SECONDS",
];

/// `cargo lambda watch` on a free port in the workspace root, with `env`.
pub struct Watch {
    /// The Invoke API (and function URLs under `/lambda-url/<function>/`).
    pub endpoint: String,
    /// The `cargo lambda watch` process, stopped when dropped.
    pub process: Spawned,
}

/// Builds `functions` first (so no invocation waits for a compile), then
/// starts `cargo lambda watch` with only the choreo variables of `env`.
pub async fn start_cargo_lambda_watch(dir: &Path, functions: &[&str], env: &[(&str, &str)]) -> Watch {
    let version = Command::new("cargo").args(["lambda", "--version"]).output();
    assert!(
        version.as_ref().is_ok_and(|output| output.status.success()),
        "`cargo lambda` is missing: install it with `pip install cargo-lambda` ({version:?})"
    );
    // `cargo lambda watch` runs `cargo run --bin <function>` at the first
    // invocation of each function; building them all here first, with the
    // same command line, lets those runs reuse the build (and spares the
    // invocations a compile on 2 cores). Every wait of this test ends well
    // within nextest's 10-minute limit (.config/nextest.toml), so the guards
    // always get to stop what it started.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.current_dir(workspace_root()).args(["build", "--manifest-path", "Cargo.toml"]);
    for function in functions {
        build.args(["--bin", function]);
    }
    let mut building = Spawned::start("cargo build (functions)", build, &dir.join("build.log"));
    let built = building.exit_within(Duration::from_secs(420)).await;
    assert!(built.is_some_and(|status| status.success()), "building the functions failed\n{}", building.log_tail());

    let port = free_port();
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root()).args([
        "lambda",
        "watch",
        "--ignore-changes", // others may edit the sources meanwhile: no rebuilds mid-test
        "-A",
        "127.0.0.1",
        "-P",
        &port.to_string(),
    ]);
    for name in CHOREO_VARIABLES {
        command.env_remove(name);
    }
    command.envs(env.iter().copied()).env("RUST_LOG", "info");
    let process = Spawned::start("cargo lambda watch", command, &dir.join("watch.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !port_open(port) {
        assert!(Instant::now() < deadline, "cargo lambda watch did not listen within 60 s\n{}", process.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    Watch { endpoint: format!("http://127.0.0.1:{port}"), process }
}
