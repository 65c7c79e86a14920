//! The fault suite (ARCHITECTURE.md §7.10): orders of every saga path through
//! the real `choreo up --amqp` binary on the real broker while
//! - RabbitMQ's application stops and starts again (`rabbitmqctl stop_app`),
//! - the process is killed outright (`kill -9`) and started again,
//! - every event is delivered twice and one copy in twenty comes late (a
//!   consumer bound to `#` republishes each event; every twentieth copy is
//!   held back 0.2–1 s, so it arrives after the events that followed it),
//! - one step run in ten fails retryably (a trigger aborts one in ten inserts
//!   of a processed record: the store answers "unavailable"),
//! - a few orders are unreadable (a trigger spoils their stored record):
//!   `order-status` fails permanently on them and their events go to the dead
//!   queue; the records are restored, `choreo dlq replay` sends the dead
//!   letters back, and those sagas end too.
//!
//! Then it audits every order and SKU (`choreo::audit`) and prints one JSON
//! line. Required: nothing lost, nothing shipped twice, nothing oversold,
//! stock conserved, every order ended as its path may end.
//!
//! Reduced by default (1,000 orders, one of each fault), as CI runs it;
//! `scripts/fault-suite` runs the full one (`CHOREO_FAULT_SUITE=full`: 10,000
//! orders, two of each). `broker_*`: it stops RabbitMQ, so it runs in the
//! broker-wide pass, alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use choreo::audit::{Audit, audit};
use choreo::client::Client;
use choreo::workload::{PATHS, PathSpec, catalog, order_body, path_of};
use common::bridge::{Spawned, free_port, port_open};
use common::{RestartBrokerOnDrop, Scratch, Vhost, eventually, message_count};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use shared::Function;
use shared::bus::amqp::{AmqpLink, dead_letter_queue};
use shared::contract::choreography::EXCHANGE;
use shared::contract::domain::OrderId;
use shared::store::sqlite::SqliteStore;
use tokio::sync::watch;

/// How much load and how many faults.
#[derive(Clone, Copy, Debug)]
struct Plan {
    orders: usize,
    /// Broker restarts, and as many `kill -9`s.
    rounds: usize,
    /// Orders whose record is made unreadable until the replay.
    unreadable: usize,
    /// Clients posting at once.
    clients: usize,
}

impl Plan {
    fn from_env() -> Self {
        match std::env::var("CHOREO_FAULT_SUITE").as_deref() {
            Ok("full") => Self { orders: 10_000, rounds: 2, unreadable: 5, clients: 32 },
            _ => Self { orders: 1_000, rounds: 1, unreadable: 2, clients: 32 },
        }
    }

    /// The orders spoiled until the replay, spread over the load.
    fn is_unreadable(&self, index: usize) -> bool {
        let spacing = self.orders / (self.unreadable + 1);
        index > 0 && index.is_multiple_of(spacing) && index / spacing <= self.unreadable
    }

    /// The `index`-th order: its path and body (spoiled ones take the
    /// shipping path, whose record `order-status` reads at every step).
    fn order(&self, index: usize) -> (&'static PathSpec, Value) {
        if self.is_unreadable(index) {
            let mut body = order_body(index, &PATHS[0]);
            body["customer_id"] = json!(format!("{UNREADABLE_CUSTOMER}{index}"));
            return (&PATHS[0], body);
        }
        let path = path_of(index, choreo::workload::Mix::Mixed);
        (path, order_body(index, path))
    }
}

/// Orders of customers named so are spoiled by the trigger below.
const UNREADABLE_CUSTOMER: &str = "unreadable-";
/// What the injected retryable failure says (counted in the logs).
const INJECTED: &str = "fault suite: injected failure";

/// The faults the store suffers, installed into the running system's SQLite file.
fn install_store_faults(db: &Path) {
    let connection = sqlite(db);
    connection
        .execute_batch(&format!(
            "CREATE TABLE fault_spoiled (order_id TEXT PRIMARY KEY, body TEXT NOT NULL);
             CREATE TRIGGER fault_retryable BEFORE INSERT ON processed
               WHEN abs(random()) % 10 = 0
               BEGIN SELECT RAISE(ABORT, '{INJECTED}'); END;
             -- The order's lines become a string: the record no longer reads
             -- (a Corrupt store error, a permanent step failure); its status,
             -- which the open-orders index reads, stays as it is.
             CREATE TRIGGER fault_spoil AFTER INSERT ON orders
               WHEN json_extract(NEW.body, '$.customer_id') LIKE '{UNREADABLE_CUSTOMER}%'
               BEGIN
                 INSERT INTO fault_spoiled VALUES (NEW.order_id, NEW.body);
                 UPDATE orders SET body = json_set(NEW.body, '$.items', 'spoiled') WHERE order_id = NEW.order_id;
               END;"
        ))
        .expect("the fault triggers install");
}

/// Gives the spoiled orders their records back (nothing could have written them meanwhile).
fn restore_spoiled(db: &Path) -> usize {
    sqlite(db)
        .execute(
            "UPDATE orders SET body = (SELECT body FROM fault_spoiled WHERE fault_spoiled.order_id = orders.order_id)
             WHERE order_id IN (SELECT order_id FROM fault_spoiled)",
            [],
        )
        .expect("the spoiled orders are restored")
}

fn sqlite(db: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(db).expect("the database opens");
    connection.busy_timeout(Duration::from_secs(10)).expect("a busy timeout");
    connection
}

fn count(db: &Path, sql: &str) -> usize {
    let count: i64 = sqlite(db).query_row(sql, [], |row| row.get(0)).expect("a count");
    usize::try_from(count).unwrap_or(0)
}

fn open_orders(db: &Path) -> usize {
    let open: Vec<String> = shared::store::open_statuses().map(|status| format!("'{}'", status.as_str())).collect();
    count(db, &format!("SELECT count(*) FROM orders WHERE json_extract(body, '$.status') IN ({})", open.join(", ")))
}

// ------------------------------------------------------------ the process

/// `choreo up --amqp` on a fixed port, so that clients find it again after a restart.
struct Up {
    vhost_url: String,
    db: PathBuf,
    inventory: PathBuf,
    logs: PathBuf,
    port: u16,
    /// Every process started so far (their logs are read at the end).
    started: usize,
}

impl Up {
    fn start(&mut self) -> Spawned {
        self.started += 1;
        let mut command = Command::new(env!("CARGO_BIN_EXE_choreo"));
        command
            .args(["up", "--amqp", &self.vhost_url, "--port", &self.port.to_string(), "--retry-delay-ms", "50"])
            .arg("--db")
            .arg(&self.db)
            .arg("--inventory")
            .arg(&self.inventory)
            .env("RUST_LOG", "warn");
        let up = Spawned::start(&format!("choreo up #{}", self.started), command, &self.log(self.started));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !port_open(self.port) {
            assert!(Instant::now() < deadline, "{} did not open its port: {}", up.name, up.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }

    fn log(&self, generation: usize) -> PathBuf {
        self.logs.join(format!("up-{generation}.log"))
    }

    /// Every process's log lines that mention `text`, read once.
    fn log_lines_with(&self, text: &str) -> Vec<String> {
        (1..=self.started)
            .flat_map(|generation| {
                let log = std::fs::read_to_string(self.log(generation)).unwrap_or_default();
                log.lines().filter(|line| line.contains(text)).map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Of the lines about failures, those that each stand for one failed run: a
/// step's own line (`<function>: <event> failed`; the runner's "retrying
/// after" line about the same run is not counted) or a POST that could not
/// store its order.
fn failed_runs(lines: &[String]) -> usize {
    lines.iter().filter(|line| line.contains(" failed") || line.contains("could not store the order")).count()
}

/// Of the lines about failures, those about a step run (the step's own, the
/// runner's retry) that do not name the order and its trace.
fn anonymous_lines(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|line| line.contains(" failed") || line.contains("retrying after"))
        .filter(|line| !(line.contains("order_id=") && line.contains("trace_id=")))
        .collect()
}

// ------------------------------------------------------------ the load

/// Orders accepted so far, by index.
struct Load {
    plan: Plan,
    next: AtomicUsize,
    accepted: AtomicUsize,
    ids: Mutex<Vec<Option<OrderId>>>,
}

impl Load {
    /// One client: posts orders one after another, each until it is accepted
    /// (the same `Idempotency-Key` each time, so a retry never orders twice).
    async fn client(self: Arc<Self>, client: Client) {
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.plan.orders {
                return;
            }
            let (_, body) = self.plan.order(index);
            let key = format!("fault-suite-{index}");
            let deadline = Instant::now() + Duration::from_secs(180);
            let order_id = loop {
                match client.create_order(&body, Some(&key)).await {
                    Ok(id) => break OrderId::parse(&id).expect("the API answers order ids"),
                    // Down (killed, restarting) or refusing for now (503, an injected failure): again.
                    Err(error) => {
                        assert!(Instant::now() < deadline, "order {index} was refused for 3 minutes: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            self.ids.lock().unwrap()[index] = Some(order_id);
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn until_accepted(&self, share: f64) {
        let wanted = (self.plan.orders as f64 * share) as usize;
        eventually(&format!("{wanted} orders accepted"), Duration::from_secs(600), || async {
            let accepted = self.accepted.load(Ordering::Relaxed);
            if accepted >= wanted { Ok(()) } else { Err(format!("{accepted} accepted")) }
        })
        .await;
    }
}

// ------------------------------------------------------------ the duplicator

/// Copies sent, and of those, held back.
#[derive(Default)]
struct Copies {
    duplicated: AtomicUsize,
    reordered: AtomicUsize,
}

const DUPLICATOR_QUEUE: &str = "fault-suite.duplicator";
/// Marks a copy, so that the duplicator does not copy its own copies.
const COPY_HEADER: &str = "x-fault-suite-copy";

/// Delivers every event a second time, until `stop`; reconnects after broker restarts.
async fn duplicate_events(url: String, copies: Arc<Copies>, mut stop: watch::Receiver<bool>) {
    let link = AmqpLink::new(&url, "fault-suite duplicator");
    while !*stop.borrow() {
        tokio::select! {
            ended = duplicate_session(&link, &copies) => {
                if let Err(error) = ended {
                    eprintln!("the duplicator starts over: {error}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ = stop.changed() => return,
        }
    }
}

async fn duplicate_session(link: &AmqpLink, copies: &Arc<Copies>) -> Result<(), lapin::Error> {
    let connection = link.dedicated_connection().await?;
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(DUPLICATOR_QUEUE.into(), durable, FieldTable::default()).await?;
    channel
        .queue_bind(
            DUPLICATOR_QUEUE.into(),
            EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(
            DUPLICATOR_QUEUE.into(),
            "duplicator".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        if !headers.inner().contains_key(COPY_HEADER) {
            headers.insert(COPY_HEADER.into(), AMQPValue::Boolean(true));
            let properties = delivery.properties.clone().with_headers(headers);
            let (routing_key, body) = (delivery.routing_key.to_string(), delivery.data.clone());
            let sent = copies.duplicated.fetch_add(1, Ordering::Relaxed);
            if sent % 20 == 19 {
                // Held back: it arrives after events published after it.
                copies.reordered.fetch_add(1, Ordering::Relaxed);
                let (publisher, delay) = (publisher.clone(), Duration::from_millis(200 + (sent as u64 * 37) % 800));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let options = BasicPublishOptions::default();
                    let _ = publisher
                        .basic_publish(EXCHANGE.into(), routing_key.as_str().into(), options, &body, properties)
                        .await;
                });
            } else {
                publisher
                    .basic_publish(
                        EXCHANGE.into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await?
                    .await?;
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

// ------------------------------------------------------------ the suite

async fn dead_letters(link: &AmqpLink) -> usize {
    let mut total = 0;
    for function in Function::consumers() {
        total += message_count(link, &dead_letter_queue(function)).await as usize;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_fault_suite_loses_nothing_applies_nothing_twice_and_oversells_nothing() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let vhost = Vhost::new("fault-suite");
    let scratch = Scratch::new();
    let catalog = catalog(plan.orders);
    let mut up = Up {
        vhost_url: vhost.url.clone(),
        db: scratch.db(),
        inventory: scratch.inventory_file(&catalog),
        logs: scratch.dir.path().to_path_buf(),
        port: free_port(),
        started: 0,
    };
    let mut process = up.start();
    install_store_faults(&up.db);

    let copies = Arc::new(Copies::default());
    let (stop_duplicator, stopped) = watch::channel(false);
    let duplicator = tokio::spawn(duplicate_events(vhost.url.clone(), Arc::clone(&copies), stopped));

    // GIVEN clients posting orders of every path
    let load = Arc::new(Load {
        plan,
        next: AtomicUsize::new(0),
        accepted: AtomicUsize::new(0),
        ids: Mutex::new(vec![None; plan.orders]),
    });
    let client = Client::new(&format!("http://127.0.0.1:{}", up.port));
    let clients: Vec<_> = (0..plan.clients).map(|_| tokio::spawn(Arc::clone(&load).client(client.clone()))).collect();

    // WHEN, under that load, the broker stops and the process dies, by turns
    let steps = 2 * plan.rounds + 1;
    for round in 0..plan.rounds {
        load.until_accepted((2 * round + 1) as f64 / steps as f64).await;
        let mut broker = RestartBrokerOnDrop::stop();
        tokio::time::sleep(Duration::from_secs(3)).await;
        broker.start();

        load.until_accepted((2 * round + 2) as f64 / steps as f64).await;
        process.signal("KILL");
        let status = process.exit_within(Duration::from_secs(15)).await.expect("killed");
        assert!(!status.success(), "killed, not stopped: {status}");
        process = up.start();
    }
    for client in clients {
        client.await.expect("a client");
    }
    let ids: Vec<(OrderId, &PathSpec)> = load
        .ids
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(index, id)| (id.expect("every order was accepted"), plan.order(index).0))
        .collect();

    // THEN every saga ends but the spoiled ones, whose events wait in the dead queue
    let settle = Duration::from_secs(300);
    let waited = tokio::time::timeout(settle, async {
        while open_orders(&up.db) > plan.unreadable {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let link = vhost.link("fault-suite");
    let dead_before_replay = dead_letters(&link).await;

    // AND once their records are restored, a replay of the dead letters ends them too
    let restored = restore_spoiled(&up.db);
    let replay = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["dlq", "replay", "--amqp", &vhost.url])
        .output()
        .expect("choreo dlq replay runs");
    assert!(replay.status.success(), "choreo dlq replay: {}", String::from_utf8_lossy(&replay.stderr));
    let store = SqliteStore::open(&up.db).expect("the database opens");
    let final_audit = tokio::time::timeout(settle, async {
        loop {
            let audit = audit(&store, &ids).await.expect("the store answers");
            if audit.holds() {
                return audit;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let audit: Audit = match final_audit {
        Ok(audit) => audit,
        Err(_) => audit(&store, &ids).await.expect("the store answers"),
    };
    let dead_after_replay = dead_letters(&link).await;

    process.signal("TERM");
    let status = process.exit_within(Duration::from_secs(30)).await.expect("choreo up stops on SIGTERM");
    let _ = stop_duplicator.send(true);
    let _ = duplicator.await;

    let failure_lines = up.log_lines_with(INJECTED);
    let injected = failed_runs(&failure_lines);
    let anonymous = anonymous_lines(&failure_lines);
    let committed = count(&up.db, "SELECT count(*) FROM processed");
    let report = json!({
        "fault_suite": if plan.orders >= 10_000 { "full" } else { "reduced" },
        "orders_accepted": audit.accepted,
        "terminal": audit.terminal,
        "lost": audit.lost,
        "shipped_twice": audit.shipped_twice,
        "shipped_and_cancelled": audit.shipped_and_cancelled,
        "oversold_skus": audit.oversold_skus.len(),
        "conservation_violations": audit.conservation_violations.len(),
        "unexpected_endings": audit.unexpected_endings,
        "timed_out": audit.timed_out,
        "dead_letters": dead_before_replay,
        "dead_letters_after_replay": dead_after_replay,
        "orders_spoiled_then_restored": restored,
        "broker_restarts": plan.rounds,
        "kill_9": plan.rounds,
        "events_duplicated": copies.duplicated.load(Ordering::Relaxed),
        "events_reordered": copies.reordered.load(Ordering::Relaxed),
        "injected_failures": injected,
        "step_runs_committed": committed,
        "wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    println!("{report}");

    assert!(waited.is_ok(), "sagas were still open {settle:?} after the load: {}", open_orders(&up.db));
    assert!(audit.holds(), "the saga's invariants broke: {audit:#?}");
    assert_eq!(audit.timed_out, 0, "no saga needed its deadline: {audit:#?}");
    assert_eq!(restored, plan.unreadable, "every spoiled order was spoiled");
    assert!(dead_before_replay >= plan.unreadable, "the spoiled orders' events were dead-lettered: {report}");
    assert_eq!(dead_after_replay, 0, "the replay emptied the dead queues: {report}");
    assert!(copies.duplicated.load(Ordering::Relaxed) > 0 && copies.reordered.load(Ordering::Relaxed) > 0, "{report}");
    assert!(injected > 0, "failures were injected: {report}");
    assert!(
        anonymous.is_empty(),
        "every line about a failed run names its order and trace: {:?}",
        &anonymous[..anonymous.len().min(3)]
    );
    assert!(status.success(), "the last process stopped cleanly: {status}");
}
