//! A Kafka-protocol broker per test: `tansu` (a Kafka-compatible broker from
//! crates.io) on a free local port, its data in a SQLite file of its own so
//! that a restart keeps every record; killed when the guard drops.
//!
//! The binary is `$TANSU` or `tansu` on the `PATH`; `scripts/ensure-tansu`
//! installs it (the test command runs it).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the broker may take to accept connections.
const START_BOUND: Duration = Duration::from_secs(30);

/// A running broker, killed on drop.
pub struct KafkaBroker {
    /// `host:port` of the bootstrap servers every client is given.
    pub bootstrap: String,
    /// The port it listens on.
    port: u16,
    /// The port it tells clients to connect to (another when a TLS terminator stands in front).
    advertised_port: u16,
    /// Whether clients must log in (SASL/SCRAM).
    authentication: bool,
    data: TempDir,
    child: Option<Child>,
}

/// A local port free at the time of asking (bound, then released: tansu
/// needs the number on its command line).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}

fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    PathBuf::from("tansu")
}

impl KafkaBroker {
    /// Starts a broker with an empty store and waits until it accepts connections.
    pub fn start() -> Self {
        let port = free_port();
        Self::start_on(port, port)
    }

    /// A broker listening on `port` that tells clients to connect to
    /// `localhost:advertised_port` (a TLS terminator in front of it).
    pub fn start_on(port: u16, advertised_port: u16) -> Self {
        let data = tempfile::tempdir().expect("a temporary directory for the broker's data");
        let bootstrap =
            if port == advertised_port { format!("127.0.0.1:{port}") } else { format!("localhost:{advertised_port}") };
        let mut broker = Self { bootstrap, port, advertised_port, authentication: false, data, child: None };
        broker.spawn();
        broker
    }

    /// A broker on which clients must log in with SASL/SCRAM-SHA-512 as
    /// `user` (created first, while the broker still lets anyone in).
    pub fn start_authenticating(user: &str, password: &str) -> Self {
        let mut broker = Self::start();
        let created = Command::new(tansu_binary())
            .args(["user", "create", user, password, "--mechanism", "scram512", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .output()
            .expect("tansu user create runs");
        assert!(created.status.success(), "tansu user create: {}", String::from_utf8_lossy(&created.stderr));
        broker.authentication = true;
        broker.restart();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = if self.port == self.advertised_port {
            url.clone()
        } else {
            format!("tcp://localhost:{}", self.advertised_port)
        };
        let log = std::fs::File::create(self.data.path().join("tansu.log")).expect("the broker's log file");
        let mut command = Command::new(tansu_binary());
        command
            .args(["broker", "--storage-engine", "sqlite://tansu.db", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised]);
        if self.authentication {
            command.arg("--authentication");
        }
        let child = command
            .current_dir(self.data.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run the Kafka-compatible broker '{}' ({error}): run scripts/ensure-tansu, or set TANSU",
                    tansu_binary().display()
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(&self.bootstrap).is_err() {
            assert!(
                started.elapsed() < START_BOUND,
                "tansu did not listen on {} within {START_BOUND:?}",
                self.bootstrap
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker at once (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data, after [`KafkaBroker::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What the broker wrote to stderr (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
