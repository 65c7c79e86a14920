//! Many orders at once for the same scarce stock: nothing is oversold, stock
//! is conserved while the sagas run and after, and every saga ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use choreo_e2e::{TestApp, history_types, post_order_request, send, spawn_app, stock};
use serde_json::{Value, json};
use shared::Payload;
use shared::store::{SeedStock, Store};
use shared::testkit::{order_body, with_item};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Posts every body at once, each from its own task; answers the order ids.
async fn post_all_at_once(app: &TestApp, bodies: Vec<Value>) -> Vec<String> {
    let mut tasks = JoinSet::new();
    for body in bodies {
        let router = app.router.clone();
        tasks.spawn(async move { send(router, post_order_request(&body, None)).await });
    }
    let mut ids = Vec::new();
    while let Some(response) = tasks.join_next().await {
        ids.push(response.expect("the request task ran").order_id());
    }
    ids
}

/// `count` copies of `body`, each from a customer of its own.
fn bodies(count: usize, body: &Value) -> Vec<Value> {
    (0..count)
        .map(|n| {
            let mut body = body.clone();
            body["customer_id"] = json!(format!("cust-{n}"));
            body
        })
        .collect()
}

/// Watches the stock while sagas run: every read must be conserved and
/// within what exists, and `shipped` never goes down. Stop it with `stop()`.
struct StockWatch {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<usize>,
}

impl StockWatch {
    fn start(store: Arc<dyn Store>, catalog: Vec<SeedStock>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut shipped_before: BTreeMap<String, u64> = BTreeMap::new();
            // Paces the reads so they do not crowd the store; not a wait for the sagas.
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            let mut reads = 0;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return reads,
                    _ = pace.tick() => {}
                }
                reads += 1;
                for level in store.all_stock().await.expect("the store answers") {
                    assert!(level.is_conserved(), "mid-run read not conserved: {level:?}");
                    let seeded = catalog.iter().find(|entry| entry.sku == level.sku).unwrap().available;
                    assert_eq!(level.seeded, seeded);
                    assert!(level.reserved + level.shipped <= level.seeded + level.replenished, "oversold: {level:?}");
                    let before = shipped_before.insert(level.sku.to_string(), level.shipped).unwrap_or(0);
                    assert!(level.shipped >= before, "shipped went down: {before} -> {level:?}");
                }
            }
        });
        Self { stop, task }
    }

    /// Stops watching; fails the test if any read broke a rule.
    async fn stop(self) -> usize {
        let _ = self.stop.send(true);
        self.task.await.expect("every stock read kept the rules")
    }
}

/// The orders, grouped by final status.
async fn outcomes(app: &TestApp, ids: &[String]) -> BTreeMap<String, Vec<Value>> {
    let mut by_status: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for id in ids {
        let order = app.order(id).await;
        let status = order["status"].as_str().unwrap().to_owned();
        by_status.entry(status).or_default().push(order);
    }
    by_status
}

fn count(by_status: &BTreeMap<String, Vec<Value>>, status: &str) -> usize {
    by_status.get(status).map_or(0, Vec::len)
}

/// 200 orders of one unit each against `seeded` units of a discontinued SKU.
async fn two_hundred_orders_against(seeded: u64) {
    // GIVEN `seeded` units the supplier will never replenish
    let app = spawn_app(&[stock("LIMITED-1", seeded, 0)]).await;
    let watch = StockWatch::start(app.store.clone(), app.catalog.clone());

    // WHEN 200 customers each order one unit at the same moment
    let ids = post_all_at_once(&app, bodies(200, &order_body("LIMITED-1", 1, "FR"))).await;
    app.settle().await;
    watch.stop().await;

    // THEN 200 distinct orders, each finished
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 200);
    let by_status = outcomes(&app, &ids).await;
    let (shipped, cancelled) = (count(&by_status, "SHIPPED"), count(&by_status, "CANCELLED"));
    assert_eq!(shipped + cancelled, 200, "every order is terminal: {:?}", by_status.keys());

    // AND exactly as many shipped as there were units, no more
    let expected_shipped = seeded.min(200);
    assert_eq!(shipped as u64, expected_shipped);
    for order in by_status.get("SHIPPED").into_iter().flatten() {
        assert_eq!(history_types(order), ["order.created", "inventory.reserved", "order.shipped"]);
        assert!(order["tracking_number"].is_string());
    }
    for order in by_status.get("CANCELLED").into_iter().flatten() {
        assert_eq!(order["cancel_reason"], "out_of_stock", "{order}");
        assert_eq!(
            history_types(order),
            ["order.created", "inventory.insufficient", "replenishment.failed", "order.cancelled"]
        );
    }
    let level = app.stock_of("LIMITED-1").await;
    assert_eq!(
        (level.available, level.reserved, level.shipped, level.replenished),
        (seeded - expected_shipped, 0, expected_shipped, 0)
    );
    let rows = app.row_counts();
    assert_eq!((rows.orders, rows.reservations, rows.shipments), (200, expected_shipped, expected_shipped));
    app.assert_stock_conserved().await;
    assert!(app.unpublished().await.is_empty(), "every emitted event was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_orders_for_fifty_units_ship_exactly_fifty() {
    two_hundred_orders_against(50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_orders_for_two_hundred_and_fifty_units_all_ship() {
    two_hundred_orders_against(250).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_multi_sku_reservations_are_all_or_nothing() {
    // GIVEN 30 A and 40 B, neither replenishable
    let app = spawn_app(&[stock("PART-A", 30, 0), stock("PART-B", 40, 0)]).await;
    let watch = StockWatch::start(app.store.clone(), app.catalog.clone());

    // WHEN 100 orders each want 1 A and 2 B (so B runs out after 20 orders)
    let ids = post_all_at_once(&app, bodies(100, &with_item(order_body("PART-A", 1, "FR"), "PART-B", 2))).await;
    app.settle().await;
    watch.stop().await;

    // THEN exactly 20 shipped, and no A was held for an order that could not get its B
    let by_status = outcomes(&app, &ids).await;
    assert_eq!((count(&by_status, "SHIPPED"), count(&by_status, "CANCELLED")), (20, 80));
    let (a, b) = (app.stock_of("PART-A").await, app.stock_of("PART-B").await);
    assert_eq!((a.available, a.reserved, a.shipped), (10, 0, 20));
    assert_eq!((b.available, b.reserved, b.shipped), (0, 0, 40));
    app.assert_stock_conserved().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_replenishment_every_order_ends_and_stock_is_conserved() {
    // GIVEN 50 units and a supplier that delivers up to 5 at once
    let app = spawn_app(&[stock("LIMITED-2", 50, 5)]).await;
    let watch = StockWatch::start(app.store.clone(), app.catalog.clone());

    // WHEN 200 customers each order one unit at the same moment
    let ids = post_all_at_once(&app, bodies(200, &order_body("LIMITED-2", 1, "FR"))).await;
    app.settle().await;
    watch.stop().await;

    // THEN every order ended: shipped, or cancelled after its retries ran out
    let by_status = outcomes(&app, &ids).await;
    let (shipped, cancelled) = (count(&by_status, "SHIPPED"), count(&by_status, "CANCELLED"));
    assert_eq!(shipped + cancelled, 200, "every order is terminal: {:?}", by_status.keys());
    for order in by_status.get("SHIPPED").into_iter().flatten() {
        assert_eq!(history_types(order).last().map(String::as_str), Some("order.shipped"), "{order}");
        let waits = history_types(order).iter().filter(|event| *event == "inventory.insufficient").count();
        assert!(waits <= 3, "at most 3 replenishments per order: {order}");
    }
    for order in by_status.get("CANCELLED").into_iter().flatten() {
        assert_eq!(order["cancel_reason"], "out_of_stock", "{order}");
        assert_eq!(history_types(order).last().map(String::as_str), Some("order.cancelled"), "{order}");
    }

    // AND the first 50 units went to someone, what shipped is what left the
    // warehouse, and the supplier's deliveries are all accounted for
    let level = app.stock_of("LIMITED-2").await;
    assert!(shipped >= 50, "the seeded units cannot go unsold while orders wait: {shipped}");
    assert_eq!(level.shipped, shipped as u64);
    assert_eq!(level.reserved, 0);
    let delivered: u64 = app
        .recorded()
        .iter()
        .flat_map(|entry| &entry.events)
        .filter_map(|event| match &event.payload {
            Payload::StockReplenished(replenished) => {
                Some(replenished.replenished.iter().map(|u| u.units).sum::<u64>())
            }
            _ => None,
        })
        .sum();
    assert_eq!(level.replenished, delivered, "replenished counts every stock.replenished, once");
    assert!(level.replenished > 0, "the supplier was called on");
    app.assert_stock_conserved().await;
}
