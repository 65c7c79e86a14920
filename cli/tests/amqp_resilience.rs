//! `choreo up --amqp` when things go wrong: the broker goes away under load,
//! messages that no step can read, a failure that outlives its retries, and
//! SIGTERM in the middle of a burst of orders. Each test has its own vhost and
//! database; every check waits by polling with a bound.
//!
//! `broker_outage_*` stops RabbitMQ itself (`rabbitmqctl stop_app`), which
//! breaks every other test using the broker at that moment, so it must run
//! alone:
//! - nextest (`.config/nextest.toml`) gives it every test thread, so nothing
//!   runs beside it; `scripts/test` also runs it in a pass of its own
//!   (`-E 'test(/broker_outage/)'`), or `cargo nextest run --profile broker-outage`.
//! - plain `cargo test` runs test binaries one after another, and inside this
//!   binary the `BROKER` lock keeps the other tests away while it runs. Do not
//!   run other RabbitMQ tests by hand at the same time.
//!
//! A guard starts the broker's application again even when the test fails.
//! (If the test process is killed outright, run `rabbitmqctl start_app`.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use choreo::client::Client;
use common::{
    ChoreoProcess, InProcess, Levels, Posters, RestartBrokerOnDrop, Scratch, Vhost, assert_conserved,
    assert_function_queues_empty, drain_saga_ended, eventually, history_types, message_count, stock, test_settings,
    wait_all_terminal,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use serde_json::Value;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, dead_letter_queue};
use shared::contract::choreography::EXCHANGE;
use shared::contract::domain::{
    Address, AddressLine, CancelReason, Country, CustomerId, Item, OrderId, OrderStatus, Quantity, Sku,
};
use shared::contract::events::InventoryRejected;
use shared::store::sqlite::SqliteStore;
use shared::store::{Commit, CommitOutcome, OrderRecord, SeedStock, Store, Write};
use shared::testkit::order_body;
use shared::{Event, Function, Payload};
use tokio::sync::RwLock;

/// Taken exclusively by `broker_outage_*`, shared by every other test here
/// (matters under plain `cargo test`, which runs a binary's tests on threads).
static BROKER: RwLock<()> = RwLock::const_new(());

const LONG_SAGA_TIMEOUT: Duration = Duration::from_secs(180);

/// The outage test's stream of orders: numbers from, and at most (it runs
/// until the broker is down; the first 20 numbers are posted while it is).
const STREAMED_FROM: usize = 20;
const STREAM_CAP: usize = 400;

// ------------------------------------------------------------ mixed load

/// The catalog of the load tests: plenty of widgets and bolts, no gadgets
/// (every gadget is replenished one at a time), no relics (discontinued).
fn mixed_catalog() -> Vec<SeedStock> {
    vec![stock("WIDGET-1", 1000, 500), stock("GADGET-2", 0, 1000), stock("RELIC-9", 0, 0), stock("BOLT-7", 1000, 1000)]
}

/// Which path of ARCHITECTURE.md §4 an order of the load takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// 1–3 widgets: reserved and shipped.
    Ships,
    /// 1 gadget: short by exactly one unit each time it is tried; replenished
    /// and shipped, or, when others keep taking the unit, cancelled after 3 tries.
    WaitsForStock,
    /// 1 relic: replenishment fails, cancelled out_of_stock.
    OutOfStock,
    /// 2 bolts to AQ: reserved, shipment fails, released, cancelled.
    ShipmentFailed,
    /// An unknown SKU: cancelled unknown_sku.
    UnknownSku,
}

/// Order number `n` of a load: the paths in turn.
fn mixed_order(n: usize) -> (Path, Value) {
    let widgets = u64::try_from(n % 3).unwrap_or(0) + 1;
    match n % 5 {
        0 => (Path::Ships, order_body("WIDGET-1", widgets, "FR")),
        1 => (Path::WaitsForStock, order_body("GADGET-2", 1, "FR")),
        2 => (Path::OutOfStock, order_body("RELIC-9", 1, "FR")),
        3 => (Path::ShipmentFailed, order_body("BOLT-7", 2, "AQ")),
        _ => (Path::UnknownSku, order_body("NOPE-404", 1, "FR")),
    }
}

/// An accepted order of a load.
#[derive(Clone, Debug)]
struct Placed {
    path: Path,
    id: String,
}

/// Posts `mixed_order(n)` for each `n`; every one must be accepted (the API
/// stores the order whatever the broker does).
async fn post_mixed(client: &Client, numbers: std::ops::Range<usize>) -> Vec<Placed> {
    let mut placed = Vec::new();
    for n in numbers {
        placed.push(post_one(client, n).await);
    }
    placed
}

async fn post_one(client: &Client, n: usize) -> Placed {
    let (path, body) = mixed_order(n);
    let id = client.create_order(&body, None).await.unwrap_or_else(|error| panic!("order {n} was refused: {error}"));
    Placed { path, id }
}

/// A steady stream of orders from `first` on, one every `pace`, until `enough`
/// is set (or `cap` orders); `accepted` counts them as they go.
async fn stream_mixed(
    client: Client,
    first: usize,
    cap: usize,
    pace: Duration,
    accepted: Arc<AtomicUsize>,
    enough: Arc<AtomicBool>,
) -> Vec<Placed> {
    let mut placed = Vec::new();
    for n in first..first + cap {
        if enough.load(Ordering::SeqCst) {
            break;
        }
        placed.push(post_one(&client, n).await);
        accepted.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(pace).await;
    }
    placed
}

fn order_id(id: &str) -> OrderId {
    OrderId::parse(id).unwrap_or_else(|error| panic!("{error}"))
}

/// Checks every order of a finished load against its path, and the stock
/// against the orders: each effect applied exactly once. `Err` says what
/// does not match yet (order-status may still be recording a late event).
async fn check_mixed(store: &dyn Store, orders: &[Placed], catalog: &[SeedStock]) -> Result<(), String> {
    let mut widgets_shipped = 0;
    let (mut gadgets_shipped, mut gadgets_replenished) = (0, 0);
    for placed in orders {
        let order = store.order(order_id(&placed.id)).await.map_err(|error| error.to_string())?;
        let order = order.ok_or_else(|| format!("order {} is not stored", placed.id))?;
        let history: Vec<&str> = order.history.iter().map(|entry| entry.event_type.as_str()).collect();
        let insufficient = history.iter().filter(|&&kind| kind == "inventory.insufficient").count();
        let outcome = (order.status, order.cancel_reason);
        let fits = match placed.path {
            Path::Ships => {
                widgets_shipped += u64::from(order.items[0].quantity.get());
                outcome == (OrderStatus::Shipped, None)
                    && history == ["order.created", "inventory.reserved", "order.shipped"]
            }
            Path::WaitsForStock => {
                gadgets_replenished += insufficient as u64;
                let waits = vec!["inventory.insufficient"; insufficient];
                if order.status == OrderStatus::Shipped {
                    gadgets_shipped += 1;
                    let expected = [&["order.created"][..], &waits, &["inventory.reserved", "order.shipped"]].concat();
                    outcome == (OrderStatus::Shipped, None) && insufficient <= 3 && history == expected
                } else {
                    let expected =
                        [&["order.created"][..], &waits, &["inventory.rejected", "order.cancelled"]].concat();
                    outcome == (OrderStatus::Cancelled, Some(CancelReason::OutOfStock))
                        && insufficient == 3
                        && history == expected
                }
            }
            Path::OutOfStock => {
                outcome == (OrderStatus::Cancelled, Some(CancelReason::OutOfStock))
                    && history == ["order.created", "inventory.insufficient", "replenishment.failed", "order.cancelled"]
            }
            Path::ShipmentFailed => {
                outcome == (OrderStatus::Cancelled, Some(CancelReason::ShipmentFailed))
                    && history == ["order.created", "inventory.reserved", "inventory.released", "order.cancelled"]
            }
            Path::UnknownSku => {
                outcome == (OrderStatus::Cancelled, Some(CancelReason::UnknownSku))
                    && history == ["order.created", "inventory.rejected", "order.cancelled"]
            }
        };
        if !fits {
            return Err(format!("order {} ({:?}) ended {outcome:?} after {history:?}", placed.id, placed.path));
        }
    }
    let levels: BTreeMap<String, Levels> = store
        .all_stock()
        .await
        .map_err(|error| error.to_string())?
        .into_iter()
        .map(|level| (level.sku.to_string(), (level.available, level.reserved, level.shipped, level.replenished)))
        .collect();
    let seeded = |sku: &str| catalog.iter().find(|entry| entry.sku.as_str() == sku).map_or(0, |entry| entry.available);
    let expected: BTreeMap<String, Levels> = [
        ("WIDGET-1", (seeded("WIDGET-1").saturating_sub(widgets_shipped), 0, widgets_shipped, 0)),
        ("GADGET-2", (gadgets_replenished.saturating_sub(gadgets_shipped), 0, gadgets_shipped, gadgets_replenished)),
        ("RELIC-9", (seeded("RELIC-9"), 0, 0, 0)),
        ("BOLT-7", (seeded("BOLT-7"), 0, 0, 0)),
    ]
    .into_iter()
    .map(|(sku, level)| (sku.to_owned(), level))
    .collect();
    if levels == expected {
        Ok(())
    } else {
        Err(format!("stock (available, reserved, shipped, replenished) is {levels:?}, the orders say {expected:?}"))
    }
}

/// The cancelled orders of a load.
async fn cancelled_ids(store: &dyn Store, orders: &[Placed]) -> BTreeSet<String> {
    let mut cancelled = BTreeSet::new();
    for placed in orders {
        let order = store.order(order_id(&placed.id)).await.expect("the store answers").expect("the order is stored");
        if order.status == OrderStatus::Cancelled {
            cancelled.insert(placed.id.clone());
        }
    }
    cancelled
}

/// Every cancelled order reached `choreo.saga-ended` (at least once: delivery
/// is at least once), and nothing else did.
async fn assert_saga_ended(link: &AmqpLink, store: &dyn Store, orders: &[Placed]) {
    let ended = drain_saga_ended(link).await;
    assert!(ended.iter().all(|envelope| envelope.event_type == "order.cancelled"), "{ended:?}");
    let ended: BTreeSet<String> = ended.into_iter().map(|envelope| envelope.order_id).collect();
    assert_eq!(ended, cancelled_ids(store, orders).await, "order.cancelled of every cancelled order, and only those");
}

async fn assert_outbox_empty(store: &dyn Store) {
    let horizon = chrono::Utc::now() + chrono::Duration::days(1);
    let unpublished = store.unpublished(horizon).await.expect("the store answers");
    assert!(unpublished.is_empty(), "events were never published: {unpublished:?}");
}

// ------------------------------------------------------------ broker outage

/// GIVEN sagas in flight, WHEN RabbitMQ stops for a few seconds while orders
/// keep coming, THEN the API keeps accepting orders (into the outbox), the
/// runner reconnects, the relay publishes what waited, and every order ends
/// as its path says with each effect applied exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_mid_load_loses_nothing_and_applies_nothing_twice() {
    let _alone = BROKER.write().await;
    let vhost = Vhost::new("outage");
    let scratch = Scratch::new();
    let catalog = mixed_catalog();
    let settings = test_settings();
    let system = InProcess::start(&vhost, &scratch.db(), &catalog, settings.clone()).await;
    let (client, store) = (system.client.clone(), Arc::clone(&system.store));

    // GIVEN a stream of orders, their sagas running
    let (accepted, enough) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let stream = tokio::spawn(stream_mixed(
        client.clone(),
        STREAMED_FROM,
        STREAM_CAP,
        Duration::from_millis(20),
        Arc::clone(&accepted),
        Arc::clone(&enough),
    ));
    eventually("30 orders accepted", Duration::from_secs(60), || async {
        let count = accepted.load(Ordering::SeqCst);
        if count >= 30 { Ok(()) } else { Err(format!("{count} accepted")) }
    })
    .await;

    // WHEN the broker stops under the stream
    let mut broker = RestartBrokerOnDrop::stop();

    // THEN orders placed while it is down are accepted and wait in the outbox
    let during = post_mixed(&client, 0..20).await;
    enough.store(true, Ordering::SeqCst);
    let horizon = chrono::Utc::now() + chrono::Duration::days(1);
    let waiting: BTreeSet<String> = store
        .unpublished(horizon)
        .await
        .expect("the store answers")
        .into_iter()
        .flat_map(|entry| entry.events)
        .filter(|event| event.event_type() == shared::EventType::OrderCreated)
        .map(|event| event.subject.to_string())
        .collect();
    for placed in &during {
        assert!(
            waiting.contains(&placed.id),
            "order {} (accepted while the broker was down) is not in the outbox",
            placed.id
        );
    }
    let mut orders = during;
    orders.extend(stream.await.expect("the stream of orders"));

    // WHEN the broker comes back after a while, and more orders come
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.start();
    let more = 200usize.saturating_sub(orders.len());
    orders.extend(post_mixed(&client, STREAMED_FROM + STREAM_CAP..STREAMED_FROM + STREAM_CAP + more).await);

    // THEN every order ends, as its path says, each effect applied once
    let ids: Vec<String> = orders.iter().map(|placed| placed.id.clone()).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "distinct orders");
    assert!(ids.len() >= 200, "{} orders", ids.len());
    wait_all_terminal(&client, &ids, LONG_SAGA_TIMEOUT).await;
    eventually("the stock matching the orders", LONG_SAGA_TIMEOUT, || check_mixed(&*store, &orders, &catalog)).await;

    // AND once the runner stopped, nothing is left anywhere
    system.shutdown().await;
    let link = AmqpLink::new(&vhost.url, "test-inspect");
    assert_function_queues_empty(&link, &settings).await;
    check_mixed(&*store, &orders, &catalog).await.unwrap_or_else(|mismatch| panic!("{mismatch}"));
    assert_conserved(&*store, &catalog).await;
    assert_outbox_empty(&*store).await;
    assert_saga_ended(&link, &*store, &orders).await;
    link.close().await;
}

// ------------------------------------------------------------ poison and dead letters

/// Publishes a raw message to the exchange and waits for the broker's confirm.
async fn publish_raw(link: &AmqpLink, routing_key: &str, body: &[u8], message_id: &str) {
    let channel = link.channel().await.expect("a channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let properties = BasicProperties::default().with_message_id(message_id.into()).with_delivery_mode(2);
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirmation = channel
        .basic_publish(EXCHANGE.into(), routing_key.into(), options, body, properties)
        .await
        .expect("publish")
        .await
        .expect("a confirm");
    assert_eq!(confirmation, Confirmation::Ack(None), "the broker took {message_id} and routed it");
    let _ = channel.close(200, "published".into()).await;
}

/// Runs `choreo dlq ARGS --amqp URL`; answers its stdout lines.
fn choreo_dlq(vhost: &Vhost, args: &[&str]) -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .arg("dlq")
        .args(args)
        .args(["--amqp", &vhost.url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("choreo dlq runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "choreo dlq {args:?} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().map(str::to_owned).collect()
}

/// `choreo dlq list`, parsed: one JSON object per dead letter.
fn dead_letters(vhost: &Vhost) -> Vec<Value> {
    choreo_dlq(vhost, &["list"])
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect()
}

fn letters_of<'a>(letters: &'a [Value], function: &str) -> Vec<&'a Value> {
    letters.iter().filter(|letter| letter["function"] == function).collect()
}

/// The order record `create-order` would have stored for `order_id`.
fn pending_order(order_id: OrderId) -> OrderRecord {
    let line = |text: &str| AddressLine::parse(text).expect("a valid address line");
    OrderRecord {
        order_id,
        status: OrderStatus::Pending,
        customer_id: CustomerId::parse("cust-amqp").expect("a valid customer"),
        items: vec![Item {
            sku: Sku::parse("NOPE-404").expect("a valid SKU"),
            quantity: Quantity::parse(1).expect("a valid quantity"),
        }],
        shipping_address: Address {
            name: line("Ada Lovelace"),
            line1: line("12 St James's Square"),
            city: line("London"),
            postal_code: line("SW1Y 4JH"),
            country: Country::parse("FR").expect("a valid country"),
        },
        tracking_number: None,
        cancel_reason: None,
        history: vec![],
        placed_by: None,
        version: 0,
    }
}

/// GIVEN a running system, WHEN messages no step can read arrive, THEN they
/// go straight to the dead-letter queue while other orders keep shipping;
/// WHEN an event fails retryably for good, THEN it is dead-lettered after its
/// retries; and once the cause is fixed, `choreo dlq replay` finishes its saga.
#[tokio::test(flavor = "multi_thread")]
async fn poison_and_exhausted_messages_are_dead_lettered_and_can_be_replayed() {
    let _shared = BROKER.read().await;
    let vhost = Vhost::new("poison");
    let scratch = Scratch::new();
    let catalog = mixed_catalog();
    let settings = DeliverySettings { max_retries: 2, ..test_settings() };
    let system = InProcess::start(&vhost, &scratch.db(), &catalog, settings.clone()).await;
    let client = system.client.clone();
    let link = AmqpLink::new(&vhost.url, "test-inspect");

    // WHEN two undecodable messages arrive as order.created: not JSON, and an unknown type
    publish_raw(&link, "order.created", b"not json", "poison-not-json").await;
    let some_event = Event::new(
        Function::ReserveInventory,
        OrderId::new(),
        None,
        Payload::InventoryRejected(InventoryRejected { reason: CancelReason::UnknownSku, detail: "x".into() }),
    );
    let mut teleported: Value = serde_json::from_slice(&some_event.to_json()).expect("an event is JSON");
    teleported["type"] = "order.teleported".into();
    publish_raw(&link, "order.created", teleported.to_string().as_bytes(), "poison-unknown-type").await;
    // AND orders keep coming
    let mut ids = Vec::new();
    for quantity in 1..=5 {
        ids.push(client.create_order(&order_body("WIDGET-1", quantity, "FR"), None).await.expect("accepted"));
    }

    // THEN the orders ship regardless
    let orders = wait_all_terminal(&client, &ids, common::SAGA_TIMEOUT).await;
    assert!(orders.iter().all(|order| order["status"] == "SHIPPED"), "{orders:#?}");
    // AND the poison is dead-lettered without retries, saying why
    let reserve_dead = dead_letter_queue(Function::ReserveInventory);
    eventually("2 dead letters in reserve-inventory", common::SAGA_TIMEOUT, || async {
        match message_count(&link, &reserve_dead).await {
            2 => Ok(()),
            count => Err(format!("{count} dead letters")),
        }
    })
    .await;

    // WHEN an event fails retryably for good: order-status cannot find the order
    let missing = OrderId::new();
    let rejected = Event::new(
        Function::ReserveInventory,
        missing,
        None,
        Payload::InventoryRejected(InventoryRejected {
            reason: CancelReason::UnknownSku,
            detail: "unknown SKU: NOPE-404".into(),
        }),
    );
    link.publish_events(std::slice::from_ref(&rejected)).await.expect("published");
    let status_dead = dead_letter_queue(Function::OrderStatus);
    eventually("the event dead-lettered after its retries", common::SAGA_TIMEOUT, || async {
        match message_count(&link, &status_dead).await {
            1 => Ok(()),
            count => Err(format!("{count} dead letters")),
        }
    })
    .await;

    // THEN `choreo dlq list` shows all three, with the error and the attempts
    let letters = dead_letters(&vhost);
    assert_eq!(letters.len(), 3, "{letters:#?}");
    let poison = letters_of(&letters, "reserve-inventory");
    let poison_ids: BTreeSet<&str> = poison.iter().filter_map(|letter| letter["message_id"].as_str()).collect();
    assert_eq!(poison_ids, BTreeSet::from(["poison-not-json", "poison-unknown-type"]));
    for letter in &poison {
        assert_eq!(letter["attempts"], 1, "a permanent failure is not retried: {letter}");
        let error = letter["error"].as_str().unwrap_or_default();
        assert!(error.contains("undecodable message"), "{letter}");
    }
    let unknown = poison.iter().find(|letter| letter["message_id"] == "poison-unknown-type").expect("listed");
    assert!(unknown["error"].as_str().unwrap_or_default().contains("order.teleported"), "{unknown}");
    assert_eq!(
        poison.iter().find(|letter| letter["message_id"] == "poison-not-json").expect("listed")["body"],
        "not json"
    );
    let [exhausted] = letters_of(&letters, "order-status")[..] else { panic!("one order-status letter: {letters:#?}") };
    assert_eq!(
        exhausted["attempts"],
        settings.max_retries + 1,
        "tried once, then retried max_retries times: {exhausted}"
    );
    assert_eq!(exhausted["message_id"], rejected.id.to_string());
    assert_eq!(exhausted["order_id"], missing.to_string());
    assert_eq!(exhausted["event_type"], "inventory.rejected");
    assert!(exhausted["error"].as_str().unwrap_or_default().contains("not (yet) in the store"), "{exhausted}");
    // (listing leaves them where they are)
    assert_eq!(message_count(&link, &status_dead).await, 1);
    assert_eq!(message_count(&link, &reserve_dead).await, 2);

    // WHEN the cause is fixed (the order record exists) and order-status's letters are replayed
    let fix = Commit {
        function: Function::CreateOrder,
        key: format!("test-fix-{missing}"),
        writes: vec![Write::Order(pending_order(missing))],
        emitted: vec![],
    };
    assert_eq!(system.store.commit(fix).await.expect("the store answers"), CommitOutcome::Committed);
    assert_eq!(choreo_dlq(&vhost, &["replay", "--function", "order-status"]), ["replayed 1 dead letter(s)"]);

    // THEN its saga completes
    let order = wait_all_terminal(&client, &[missing.to_string()], common::SAGA_TIMEOUT).await.remove(0);
    assert_eq!(order["status"], "CANCELLED", "{order:#}");
    assert_eq!(order["cancel_reason"], "unknown_sku");
    assert_eq!(history_types(&order), ["inventory.rejected", "order.cancelled"]);
    // AND order-status has no dead letter left; the poison stays, being unfixable
    let letters = dead_letters(&vhost);
    assert!(letters_of(&letters, "order-status").is_empty(), "{letters:#?}");
    assert_eq!(letters_of(&letters, "reserve-inventory").len(), 2, "{letters:#?}");

    // WHEN everything is replayed, THEN the poison comes back to its dead-letter queue, once each
    assert_eq!(choreo_dlq(&vhost, &["replay"]), ["replayed 2 dead letter(s)"]);
    eventually("the poison dead-lettered again", common::SAGA_TIMEOUT, || async {
        let dead = message_count(&link, &reserve_dead).await;
        let work = message_count(&link, &Function::ReserveInventory.queue()).await;
        if (dead, work) == (2, 0) { Ok(()) } else { Err(format!("{dead} dead, {work} queued")) }
    })
    .await;

    // AND apart from the poison nothing is left, and the saga's end was announced
    system.shutdown().await;
    let drained = common::drain(&link, &reserve_dead).await;
    assert_eq!(drained.len(), 2);
    assert_function_queues_empty(&link, &settings).await;
    let ended = drain_saga_ended(&link).await;
    assert_eq!(ended, [common::Envelope { event_type: "order.cancelled".into(), order_id: missing.to_string() }]);
    link.close().await;
}

// ------------------------------------------------------------ SIGTERM

fn idempotency_key(n: usize) -> String {
    format!("sigterm-load-{n}")
}

/// GIVEN the `choreo up --amqp` binary under a burst of orders, WHEN it gets
/// SIGTERM, THEN it exits 0 promptly; AND started again on the same database
/// and vhost it finishes every order, losing nothing and doing nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_exits_cleanly_and_a_restart_finishes_every_order() {
    const ORDERS: usize = 100;
    let _shared = BROKER.read().await;
    let vhost = Vhost::new("sigterm");
    let scratch = Scratch::new();
    let catalog = mixed_catalog();
    let inventory = scratch.inventory_file(&catalog);
    let mut first = ChoreoProcess::spawn(&vhost, &scratch.db(), &inventory);
    let client = first.client();

    // GIVEN four clients posting orders (each with its Idempotency-Key)
    let posters = Posters::start(&client, 4, ORDERS, |n| mixed_order(n).1, idempotency_key);
    posters.until_accepted(40).await;

    // WHEN the process gets SIGTERM mid-way
    first.terminate();

    // THEN it exits 0, promptly
    let status = first.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "choreo up exited with {status} after SIGTERM");
    let before_restart = posters.finish().await;

    // WHEN it starts again on the same database and vhost, and the clients
    // retry what got no answer, with the same keys
    let mut second = ChoreoProcess::spawn(&vhost, &scratch.db(), &inventory);
    let client = second.client();
    let mut orders = Vec::new();
    assert!(before_restart.len() >= 40, "{} accepted", before_restart.len());
    for n in 0..ORDERS {
        let (path, body) = mixed_order(n);
        let id = client.create_order(&body, Some(&idempotency_key(n))).await.expect("accepted after the restart");
        if let Some(first_id) = before_restart.get(&n) {
            assert_eq!(&id, first_id, "the same key names the same order");
        }
        orders.push(Placed { path, id });
    }

    // THEN every order ends as its path says, each effect applied once
    let ids: Vec<String> = orders.iter().map(|placed| placed.id.clone()).collect();
    wait_all_terminal(&client, &ids, LONG_SAGA_TIMEOUT).await;
    let store = SqliteStore::open(&scratch.db()).expect("the database opens");
    eventually("the stock matching the orders", LONG_SAGA_TIMEOUT, || check_mixed(&store, &orders, &catalog)).await;

    // AND stopped again, nothing is left anywhere
    second.terminate();
    let status = second.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "choreo up exited with {status} after SIGTERM");
    let settings = DeliverySettings { retry_base: Duration::from_millis(50), ..DeliverySettings::default() };
    let link = AmqpLink::new(&vhost.url, "test-inspect");
    assert_function_queues_empty(&link, &settings).await;
    check_mixed(&store, &orders, &catalog).await.unwrap_or_else(|mismatch| panic!("{mismatch}"));
    assert_conserved(&store, &catalog).await;
    assert_outbox_empty(&store).await;
    assert_saga_ended(&link, &store, &orders).await;
    link.close().await;
}
