//! A crash, not a stop: `kill -9` of the `choreo up --amqp` binary in the
//! middle of a load, then a restart on the same database and vhost. Nothing
//! is lost (every order ends) and nothing is applied twice (stock conserved
//! exactly, no event twice in an order's history).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    ChoreoProcess, Posters, Scratch, Vhost, assert_conserved, eventually, history_types, stock, wait_all_terminal,
};
use serde_json::Value;
use shared::contract::domain::{OrderId, OrderStatus};
use shared::store::sqlite::SqliteStore;
use shared::store::{SeedStock, Store};
use shared::testkit::order_body;

// Enough that clients are still posting when the test takes the lock: on an idle machine 200 sagas
// ended before it, and the kill found nothing in flight.
const ORDERS: usize = 600;
const BOUND: Duration = Duration::from_secs(240);

fn catalog() -> Vec<SeedStock> {
    vec![stock("WIDGET-1", 1000, 500), stock("BOLT-7", 1000, 1000)]
}

/// Even orders: 1–3 widgets shipped to FR. Odd: 2 bolts to AQ, where the
/// shipment fails and the reservation is released.
fn order(n: usize) -> Value {
    if n.is_multiple_of(2) {
        order_body("WIDGET-1", u64::try_from(n % 3).unwrap_or(0) + 1, "FR")
    } else {
        order_body("BOLT-7", 2, "AQ")
    }
}

fn key(n: usize) -> String {
    format!("crash-load-{n}")
}

/// Sends SIGKILL: no drain, no ack, no close.
fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -KILL {pid}: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_choreo_up_mid_load_then_a_restart_loses_nothing_and_applies_nothing_twice() {
    let vhost = Vhost::new("crash-up");
    let scratch = Scratch::new();
    let catalog = catalog();
    let inventory = scratch.inventory_file(&catalog);
    let mut first = ChoreoProcess::spawn(&vhost, &scratch.db(), &inventory);
    let client = first.client();

    // GIVEN four clients posting orders, each with its Idempotency-Key
    let posters = Posters::start(&client, 4, ORDERS, order, key);
    posters.until_accepted(120).await;

    // WHEN the process is killed outright mid-load, with messages in hand
    // whose commits wait: the test holds SQLite's write lock (a busy
    // writer), so nothing consumed can have been committed, and an input
    // acked before its commit would be lost with the process.
    let lock = rusqlite::Connection::open(scratch.db()).expect("the database opens");
    lock.execute_batch("BEGIN IMMEDIATE").expect("the write lock");
    // Steps now wait on the lock (up to SQLite's 5 s busy timeout) with their deliveries unacked; the
    // kill comes well inside that. (RabbitMQ's own count of unacked messages is a statistics tick
    // behind, up to 5 s, so it cannot say so in time; the check below that sagas were left open can.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill_9(first.pid());
    lock.execute_batch("ROLLBACK").expect("the write lock is released");
    drop(lock);
    let status = first.wait_exit(Duration::from_secs(15)).await;
    assert!(!status.success(), "killed, not stopped: {status}");
    let accepted = posters.finish().await;
    // The kill caught sagas mid-way (else this test would prove nothing).
    let store = SqliteStore::open(&scratch.db()).expect("the database opens");
    let mut open = 0;
    let accepted_ids: Vec<String> = accepted.values().cloned().collect();
    for id in &accepted_ids {
        let record = store.order(OrderId::parse(id).expect("an order id")).await.expect("the store answers");
        if record.is_some_and(|record| !matches!(record.status, OrderStatus::Shipped | OrderStatus::Cancelled)) {
            open += 1;
        }
    }
    assert!(open > 0, "every accepted order had ended before the kill: nothing was in flight");
    drop(store);

    // AND started again; the clients retry every order with the same key
    let mut second = ChoreoProcess::spawn(&vhost, &scratch.db(), &inventory);
    let client = second.client();
    let before = accepted;
    let mut ids = Vec::new();
    for n in 0..ORDERS {
        let id = client.create_order(&order(n), Some(&key(n))).await.expect("accepted after the restart");
        if let Some(first_id) = before.get(&n) {
            assert_eq!(&id, first_id, "the same key names the same order");
        }
        ids.push(id);
    }

    // THEN every order ends, each as its path says, with no event twice
    let orders = wait_all_terminal(&client, &ids, BOUND).await;
    let mut widgets = 0;
    for (n, placed) in orders.iter().enumerate() {
        let types = history_types(placed);
        let unique: BTreeSet<&String> = types.iter().collect();
        assert_eq!(unique.len(), types.len(), "order {n}: an event applied twice: {types:?}");
        let expected = if n.is_multiple_of(2) { "SHIPPED" } else { "CANCELLED" };
        assert_eq!(placed["status"].as_str(), Some(expected), "order {n}: {placed}");
        if n.is_multiple_of(2) {
            widgets += u64::try_from(n % 3).unwrap() + 1;
        }
    }

    // AND the stock says each effect happened exactly once
    let store = SqliteStore::open(&scratch.db()).expect("the database opens");
    let levels = eventually("the stock settled", BOUND, || async {
        let levels = store.all_stock().await.map_err(|error| error.to_string())?;
        let by_sku: BTreeMap<String, (u64, u64, u64)> = levels
            .iter()
            .map(|level| (level.sku.to_string(), (level.available, level.reserved, level.shipped)))
            .collect();
        let want = BTreeMap::from([
            ("BOLT-7".to_owned(), (1000, 0, 0)),
            ("WIDGET-1".to_owned(), (1000 - widgets, 0, widgets)),
        ]);
        if by_sku == want { Ok(levels) } else { Err(format!("{by_sku:?}, want {want:?}")) }
    })
    .await;
    assert_eq!(levels.len(), 2);
    assert_conserved(&store, &catalog).await;

    second.terminate();
    let status = second.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "the restarted process stops cleanly: {status}");
}

/// The same for `choreo bridge`: killed outright while invocations are in
/// hand, then started again, it leaves no input behind: every input's
/// answer is published, nothing is dead-lettered, and an input is invoked
/// again only if the crash caught it (at most once more).
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_bridge_mid_load_then_a_restart_loses_nothing() {
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::routing::post;
    use common::bridge::{Spawned, inventory_reserved};
    use shared::bus::DeliverySettings;
    use shared::bus::amqp::{Topology, dead_letter_queue};
    use shared::contract::events::OrderShipped;
    use shared::{Event, Function, Payload};

    const INPUTS: usize = 200;
    /// Invocations per input order id.
    type Calls = Arc<Mutex<BTreeMap<String, usize>>>;

    // An Invoke API whose ship-order ships what it is given, a little slowly
    // so that invocations are in hand when the bridge is killed.
    async fn invoke(State(calls): State<Calls>, body: Bytes) -> Vec<u8> {
        let input = Event::from_json(&body).expect("the payload is a CloudEvent");
        *calls.lock().unwrap().entry(input.subject.to_string()).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let items = match &input.payload {
            Payload::InventoryReserved(reserved) => reserved.items.clone(),
            _ => Vec::new(),
        };
        let shipped = Event::new(
            Function::ShipOrder,
            input.subject,
            Some(&input),
            Payload::OrderShipped(OrderShipped { items, tracking_number: "TRACK-9".into() }),
        );
        serde_json::to_vec(&[shipped]).expect("events serialize")
    }
    // order-status hears the inputs too (inventory.reserved): only its
    // order.shipped messages are answers.
    fn shipped_orders(envelopes: Vec<common::Envelope>) -> impl Iterator<Item = String> {
        envelopes
            .into_iter()
            .filter(|envelope| envelope.event_type == "order.shipped")
            .map(|envelope| envelope.order_id)
    }
    let calls: Calls = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    let router =
        Router::new().route("/2015-03-31/functions/{name}/invocations", post(invoke)).with_state(Arc::clone(&calls));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    // GIVEN 200 inputs waiting in ship-order's queue
    let vhost = Vhost::new("crash-bridge");
    let link = vhost.link("crash-test");
    let settings = DeliverySettings { retry_base: Duration::from_millis(50), ..DeliverySettings::default() };
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let mut orders = BTreeSet::new();
    let inputs: Vec<Event> = (0..INPUTS).map(|_| inventory_reserved("WIDGET-1", 1)).collect();
    for input in &inputs {
        orders.insert(input.subject.to_string());
    }
    link.publish_events(&inputs).await.expect("the inputs are published");

    let scratch = Scratch::new();
    let bridge = |log: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"));
        command
            .args(["bridge", "--invoke", "lambda", "--functions", "ship-order", "--retry-delay-ms", "50"])
            .args(["--endpoint", &endpoint, "--amqp", &vhost.url])
            .env("RUST_LOG", "warn")
            .env_remove("AWS_PROFILE");
        Spawned::start("choreo bridge", command, &scratch.dir.path().join(log))
    };

    // WHEN the bridge is killed outright with invocations in hand
    let mut first = bridge("first.log");
    eventually("60 invocations", Duration::from_secs(60), || async {
        let count = calls.lock().unwrap().len();
        if count >= 60 { Ok(()) } else { Err(format!("{count} invoked; {}", first.log_tail())) }
    })
    .await;
    kill_9(first.pid());
    let status = first.exit_within(Duration::from_secs(15)).await.expect("the bridge died");
    assert!(!status.success(), "killed, not stopped: {status}");
    let handled_before = calls.lock().unwrap().len();
    assert!(handled_before < INPUTS, "the kill came mid-load ({handled_before} of {INPUTS} invoked)");

    // AND started again
    let mut second = bridge("second.log");
    let status_queue = Function::OrderStatus.queue();
    let shipped = eventually("every input's answer published", BOUND, || async {
        let seen: BTreeSet<String> = shipped_orders(common::drain(&link, &status_queue).await).collect();
        Ok::<_, String>(seen)
    });
    // Drain until every order was seen (drain takes what is there each time).
    let mut seen = shipped.await;
    let deadline = tokio::time::Instant::now() + BOUND;
    while !orders.is_subset(&seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {INPUTS} inputs have no published answer; {}",
            orders.difference(&seen).count(),
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen.extend(shipped_orders(common::drain(&link, &status_queue).await));
    }

    // THEN nothing is left behind, and only what the crash caught ran twice
    eventually("ship-order's queue empty and acked", BOUND, || async {
        let (ready, _) = common::queue_state(&link, &Function::ShipOrder.queue()).await;
        let unacked = shared::testkit::broker::rabbitmqctl(&[
            "-q",
            "--no-table-headers",
            "list_channels",
            "vhost",
            "messages_unacknowledged",
        ])
        .lines()
        .filter(|line| line.starts_with(&vhost.name))
        .filter_map(|line| line.split_whitespace().nth(1).and_then(|count| count.parse::<u64>().ok()))
        .sum::<u64>();
        if ready == 0 && unacked == 0 { Ok(()) } else { Err(format!("{ready} ready, {unacked} unacked")) }
    })
    .await;
    assert_eq!(common::message_count(&link, &dead_letter_queue(Function::ShipOrder)).await, 0);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), INPUTS, "every input was invoked");
    let twice: Vec<_> = calls.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.iter().all(|(_, count)| **count == 2), "at most once more after the crash: {twice:?}");
    assert!(twice.len() <= 64, "only what the crash held (prefetch 64) runs again: {} did", twice.len());

    second.signal("TERM");
    let status = second.exit_within(Duration::from_secs(20)).await.expect("the bridge stops on SIGTERM");
    assert!(status.success(), "{status}; {}", second.log_tail());
}
