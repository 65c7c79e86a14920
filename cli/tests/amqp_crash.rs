//! A crash, not a stop: `kill -9` of the `choreo up --amqp` binary in the
//! middle of a load, then a restart on the same database and vhost. Nothing
//! is lost (every order ends) and nothing is applied twice (stock conserved
//! exactly, no event twice in an order's history).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ChoreoProcess, Scratch, Vhost, assert_conserved, eventually, history_types, stock, wait_all_terminal};
use serde_json::Value;
use shared::store::sqlite::SqliteStore;
use shared::store::{SeedStock, Store};
use shared::testkit::order_body;

const ORDERS: usize = 200;
const BOUND: Duration = Duration::from_secs(240);

fn catalog() -> Vec<SeedStock> {
    vec![stock("WIDGET-1", 1000, 500), stock("BOLT-7", 1000, 1000)]
}

/// Even orders: 1–3 widgets shipped to FR. Odd: 2 bolts to AQ, where the
/// shipment fails and the reservation is released.
fn order(n: usize) -> Value {
    if n % 2 == 0 {
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
    let next = Arc::new(AtomicUsize::new(0));
    let accepted: Arc<Mutex<BTreeMap<usize, String>>> = Arc::default();
    let mut posters = Vec::new();
    for _ in 0..4 {
        let (client, next, accepted) = (client.clone(), Arc::clone(&next), Arc::clone(&accepted));
        posters.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= ORDERS {
                    break;
                }
                match client.create_order(&order(n), Some(&key(n))).await {
                    Ok(id) => {
                        accepted.lock().unwrap().insert(n, id);
                    }
                    Err(_) => break, // the process is gone
                }
            }
        }));
    }
    eventually("80 orders accepted", Duration::from_secs(60), || async {
        let count = accepted.lock().unwrap().len();
        if count >= 80 { Ok(()) } else { Err(format!("{count} accepted")) }
    })
    .await;

    // WHEN the process is killed outright mid-load
    kill_9(first.pid());
    let status = first.wait_exit(Duration::from_secs(15)).await;
    assert!(!status.success(), "killed, not stopped: {status}");
    for poster in posters {
        poster.await.expect("a poster");
    }

    // AND started again; the clients retry every order with the same key
    let mut second = ChoreoProcess::spawn(&vhost, &scratch.db(), &inventory);
    let client = second.client();
    let before = accepted.lock().unwrap().clone();
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
        let expected = if n % 2 == 0 { "SHIPPED" } else { "CANCELLED" };
        assert_eq!(placed["status"].as_str(), Some(expected), "order {n}: {placed}");
        if n % 2 == 0 {
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
