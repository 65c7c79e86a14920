//! The real `reserve-inventory` step never oversells, on either store: 50
//! orders race for 20 units of one SKU through `ReserveInventory::handle`
//! (the code every hosting runs), on SQLite and on DynamoDB (moto's server,
//! `scripts/with-moto`, which serializes requests so that its transactions
//! are atomic as DynamoDB's are).

use std::sync::Arc;

use reserve_inventory::ReserveInventory;
use shared::contract::domain::OrderId;
use shared::contract::events::{EventType, Payload};
use shared::step::ShipCountries;
use shared::store::dynamodb::DynamoStore;
use shared::store::sqlite::SqliteStore;
use shared::store::{SeedStock, StockLevel, Store};
use shared::testkit::aws::{local_sdk_config, moto_serializes_requests, moto_url};
use shared::testkit::{event, item, order_created, sku};
use shared::{Event, Ports, Step};

const ORDERS: usize = 50;
const UNITS: u64 = 20;

#[tokio::test(flavor = "multi_thread")]
async fn the_reservation_step_never_oversells_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("choreo.db")).expect("open SQLite");
    never_oversells(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reservation_step_never_oversells_on_dynamodb() {
    let url = moto_url();
    assert!(
        moto_serializes_requests(&url).await,
        "moto at {url} must be the serialized server of scripts/with-moto (plain moto's transactions are not atomic)"
    );
    let client = aws_sdk_dynamodb::Client::new(&local_sdk_config(&url).await);
    let prefix = format!("oversell-{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let store = DynamoStore::new(client, prefix);
    store.create_tables().await.expect("create the tables on moto");
    never_oversells(Arc::new(store)).await;
}

async fn never_oversells(store: Arc<dyn Store>) {
    // GIVEN 20 units of a hot SKU, none to be had from the supplier, and a cold SKU
    let catalog = [
        SeedStock { sku: sku("HOT-1"), available: UNITS, max_replenish: 0 },
        SeedStock { sku: sku("COLD-1"), available: 5, max_replenish: 0 },
    ];
    store.seed_if_empty(&catalog).await.expect("seed");
    let cold = stock(&*store, "COLD-1").await;
    let ports = Ports { store: Arc::clone(&store), ship_countries: ShipCountries::default() };

    // WHEN 50 orders of one unit each are reserved at once by the real step
    let orders: Vec<Event> = (0..ORDERS)
        .map(|_| event(OrderId::new(), Payload::OrderCreated(order_created(vec![item("HOT-1", 1)]))))
        .collect();
    let first = reserve_all(&ports, &orders).await;

    // THEN exactly the 20 units are reserved, the others are short, nothing is oversold
    let count = |outcomes: &[Vec<Event>], wanted: EventType| {
        outcomes.iter().filter(|emitted| emitted.iter().any(|event| event.event_type() == wanted)).count()
    };
    assert_eq!(count(&first, EventType::InventoryReserved), 20, "orders reserved");
    assert_eq!(count(&first, EventType::InventoryInsufficient), ORDERS - 20, "orders short of stock");
    let hot = stock(&*store, "HOT-1").await;
    assert_eq!((hot.available, hot.reserved), (0, UNITS), "{hot:?}");
    assert!(hot.is_conserved(), "{hot:?}");
    assert_eq!(stock(&*store, "COLD-1").await, cold, "an unrelated SKU is untouched");
    for (order, emitted) in orders.iter().zip(&first) {
        let reserved = emitted.iter().any(|event| event.event_type() == EventType::InventoryReserved);
        let held = store.reservation(order.subject).await.expect("read").is_some();
        assert_eq!(
            held, reserved,
            "order {}: a reservation exactly when inventory.reserved was emitted",
            order.subject
        );
    }

    // WHEN every event is delivered again, at once, THEN each gets its first answer and nothing moves
    let again = reserve_all(&ports, &orders).await;
    assert_eq!(again, first);
    assert_eq!(stock(&*store, "HOT-1").await, hot);
}

/// Runs the step for every order concurrently, retrying what it says may pass later.
async fn reserve_all(ports: &Ports, orders: &[Event]) -> Vec<Vec<Event>> {
    let tasks: Vec<_> = orders
        .iter()
        .cloned()
        .map(|order| {
            let ports = ports.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    match ReserveInventory.handle(&order, &ports).await {
                        Ok(emitted) => return emitted,
                        Err(error) if error.is_retryable() => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        Err(error) => panic!("reserve-inventory failed permanently: {error}"),
                    }
                }
                panic!("reserve-inventory kept failing for {}", order.id)
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.expect("a reservation task panicked"));
    }
    outcomes
}

async fn stock(store: &dyn Store, text: &str) -> StockLevel {
    store.stock(&[sku(text)]).await.expect("read the stock").pop().expect("a catalog SKU")
}
