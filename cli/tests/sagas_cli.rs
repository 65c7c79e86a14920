//! `choreo sagas stuck|redrive` as a user runs them, on a SQLite store with
//! no broker (ARCHITECTURE.md §7.9): one JSON line per stuck saga, and a
//! redrive that requests the replay through the store.

use std::process::Command;

use shared::Function;
use shared::contract::domain::OrderId;
use shared::store::sqlite::SqliteStore;
use shared::store::{LetterState, Store};
use shared::testkit::given_lost_order;

fn choreo(args: &[&str], db: &std::path::Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("AMQP_URL")
        .env_remove("CHOREO_STORE")
        .output()
        .expect("choreo runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn sagas_stuck_prints_each_stuck_saga_and_redrive_hands_its_event_back() {
    // GIVEN a store holding an order whose order.created was lost
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("choreo.db");
    let store = SqliteStore::open(&db).expect("the store opens");
    let created = given_lost_order(&store, "WIDGET-1", 1).await;

    // WHEN `choreo sagas stuck --older-than 0s` runs
    let (ok, stdout, stderr) = choreo(&["sagas", "stuck", "--older-than", "0s"], &db);

    // THEN it prints the saga: its status, last event and what it waits on
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["order_id"], created.subject.to_string());
    assert_eq!(lines[0]["status"], "PENDING");
    assert_eq!(lines[0]["last_event"]["type"], "order.created");
    assert_eq!(lines[0]["waits_on"], serde_json::json!(["reserve-inventory"]));
    assert!(stderr.contains("1 stuck saga(s)"), "{stderr}");

    // AND WHEN it is redriven (no broker: through the store)
    let (ok, stdout, stderr) = choreo(&["sagas", "redrive", &created.subject.to_string()], &db);

    // THEN the event is waiting for the running choreo up to replay it to reserve-inventory
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 event deliveries"), "{stdout}");
    let replaying = store.dead_letters(LetterState::Replaying, 10).await.expect("the store answers");
    assert_eq!(replaying.len(), 1);
    assert_eq!((replaying[0].function, replaying[0].event.id), (Function::ReserveInventory, created.id));

    // AND an unknown order is an error that says so
    let (ok, _, stderr) = choreo(&["sagas", "redrive", &OrderId::new().to_string()], &db);
    assert!(!ok && stderr.contains("no order"), "{stderr}");
}
