//! `choreo dlq list|replay` without RabbitMQ: the dead letters `choreo up`
//! (in-process bus) parked in its store, listed with the same fields as the
//! broker's, and replayed from this separate process into the running system.

use std::path::Path;
use std::time::Duration;

use choreo::up::{DEFAULT_CATALOG, Embedded, UpConfig, parse_catalog};
use serde_json::Value;
use shared::bus::{DeliverySettings, OutboxRef, publish_committed};
use shared::config::StoreSettings;
use shared::contract::domain::{CancelReason, OrderId, OrderStatus};
use shared::contract::events::InventoryRejected;
use shared::step::ShipCountries;
use shared::store::{Commit, CommitOutcome, Write};
use shared::testkit::{event, pending_order, sample_payload};
use shared::{Event, EventType, Function, Payload};

/// Runs `choreo dlq ARGS --db DB` with no broker configured; answers its stdout lines.
fn choreo_dlq(db: &Path, args: &[&str]) -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_choreo"))
        .arg("dlq")
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("AMQP_URL")
        .env_remove("CHOREO_STORE")
        .env("RUST_LOG", "warn")
        .output()
        .expect("choreo dlq runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "choreo dlq {args:?} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn choreo_dlq_lists_and_replays_the_dead_letters_choreo_up_parked_in_its_store() {
    // GIVEN `choreo up` on the in-process bus, retrying once
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("choreo.db");
    let delivery = DeliverySettings { max_retries: 1, retry_base: Duration::from_millis(10), ..Default::default() };
    let config = UpConfig {
        store: StoreSettings::sqlite(&db),
        catalog: parse_catalog("built-in", DEFAULT_CATALOG).expect("the built-in catalog"),
        ship_countries: ShipCountries::default(),
        delivery,
        observer: None,
        store_counts: None,
    };
    let system = Embedded::start(config).await.expect("choreo up starts");

    // WHEN inventory.rejected arrives for an order order-status cannot find (it fails retryably for good)
    let missing = OrderId::new();
    let rejected = Event::new(
        Function::ReserveInventory,
        missing,
        None,
        Payload::InventoryRejected(InventoryRejected {
            reason: CancelReason::UnknownSku,
            detail: "unknown SKU".into(),
        }),
    );
    let commit = Commit {
        function: Function::ReserveInventory,
        key: "test-cause".into(),
        writes: vec![],
        emitted: vec![rejected.clone()],
    };
    assert_eq!(system.store.commit(commit).await.expect("commit"), CommitOutcome::Committed);
    let origin = OutboxRef { function: Function::ReserveInventory, key: "test-cause".into() };
    publish_committed(&*system.store, &system.bus, &origin, std::slice::from_ref(&rejected)).await.expect("published");
    system.bus.idle().await;

    // THEN `choreo dlq list` (no broker) shows it with RabbitMQ's fields
    let letters: Vec<Value> = choreo_dlq(&db, &["list"])
        .iter()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let status: Vec<&Value> = letters.iter().filter(|letter| letter["function"] == "order-status").collect();
    let [letter] = status[..] else { panic!("one order-status dead letter: {letters:#?}") };
    assert_eq!(letter["message_id"], rejected.id.to_string());
    assert_eq!(letter["order_id"], missing.to_string());
    assert_eq!(letter["event_type"], "inventory.rejected");
    assert_eq!(letter["attempts"], 2, "tried once, retried once: {letter}");
    assert!(letter["error"].as_str().unwrap_or_default().contains("not (yet) in the store"), "{letter}");
    let body = letter["body"].as_str().expect("the body is text");
    assert_eq!(Event::from_json(body.as_bytes()).expect("the body is the event"), rejected);

    // WHEN the cause is fixed (the order exists) and order-status's letters are replayed
    let created = event(missing, sample_payload(EventType::OrderCreated));
    let fix = Commit {
        function: Function::CreateOrder,
        key: format!("test-fix-{missing}"),
        writes: vec![Write::Order(pending_order(&created))],
        emitted: vec![],
    };
    assert_eq!(system.store.commit(fix).await.expect("commit"), CommitOutcome::Committed);
    assert_eq!(choreo_dlq(&db, &["replay", "--function", "order-status"]), ["replayed 1 dead letter(s)"]);

    // THEN the running system delivers it and the saga ends
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let order = system.store.order(missing).await.expect("read").expect("the order exists");
        if order.status == OrderStatus::Cancelled {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replayed letter was not delivered: {order:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    system.bus.idle().await;
    // AND order-status has no dead letter left
    let left = choreo_dlq(&db, &["list"]);
    assert!(!left.iter().any(|line| line.contains("\"order-status\"")), "{left:#?}");
}
