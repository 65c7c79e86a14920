//! `choreo bench`: drives N orders through a system it starts itself and
//! prints one JSON object with throughput and end-to-end latency.
//!
//! Orders go in through real HTTP (`POST /orders` on a local port); a saga is
//! timed from the POST until `order-status` records its terminal status,
//! observed in-process (no polling, which would add load and blur latency).
//! `--raw` pushes the same message pattern through the broker with bare
//! lapin and no handlers or store: the physical limit to compare against.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use shared::amqp::{AmqpLink, QueueSettings, Topology};
use shared::choreography::{EXCHANGE, consumers_of};
use shared::domain::OrderId;
use shared::ports::SeedStock;
use shared::step::ShipCountries;
use shared::{Event, EventType, Function, Payload};
use tokio::sync::Notify;

use crate::amqp_host::AmqpSystem;
use crate::client::Client;
use crate::embedded::{Embedded, EmbeddedConfig, serve};
use crate::inprocess::{BusSettings, StepObserver};

/// Which system the bench drives.
#[derive(Clone, Debug)]
pub enum Target {
    Embedded,
    Amqp(String),
    /// Bare lapin through the broker at this URL: no handlers, no store.
    Raw(String),
}

/// Which saga paths the orders take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Every order ships straight away.
    Ship,
    /// All five paths of DESIGN §3, in fixed proportions.
    Mixed,
}

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub target: Target,
    pub orders: usize,
    pub concurrency: usize,
    /// Orders started per second (open loop); `None`: as fast as `concurrency` allows.
    pub rate: Option<f64>,
    pub mix: Mix,
    pub queues: QueueSettings,
    pub db_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Start(#[from] crate::embedded::StartError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// The paths, each with the order line and country that drives it.
const PATHS: &[(&str, &str, u32, &str)] = &[
    ("shipped", "BENCH-STOCKED", 1, "FR"),
    ("replenished_shipped", "BENCH-SCARCE", 3, "FR"),
    ("out_of_stock", "BENCH-DISCONTINUED", 5, "FR"),
    ("shipment_failed", "BENCH-STOCKED", 1, "AQ"),
    ("unknown_sku", "BENCH-MISSING", 1, "FR"),
];

fn path_of(index: usize, mix: Mix) -> usize {
    match mix {
        Mix::Ship => 0,
        // 60% ship, 10% each other path.
        Mix::Mixed => [0, 0, 0, 0, 0, 0, 1, 2, 3, 4][index % 10],
    }
}

fn catalog(orders: usize) -> Vec<SeedStock> {
    let units = u64::try_from(orders).unwrap_or(u64::MAX / 4) * 4;
    let entry = |sku: &str, available, max_replenish| SeedStock {
        // Fixed, valid SKUs.
        sku: shared::domain::Sku::parse(sku).expect("bench SKUs are valid"),
        available,
        max_replenish,
    };
    vec![entry("BENCH-STOCKED", units, 0), entry("BENCH-SCARCE", 0, 1000), entry("BENCH-DISCONTINUED", 0, 0)]
}

fn order_body(index: usize, path: usize) -> Value {
    let (_, sku, quantity, country) = PATHS[path];
    json!({
        "customer_id": format!("bench-{}", index % 100),
        "items": [{"sku": sku, "quantity": quantity}],
        "shipping_address": {"name": "Bench", "line1": "1 Load St", "city": "Lyon", "postal_code": "69001", "country": country}
    })
}

/// Terminal instants recorded by the step observer, and the step count.
#[derive(Default)]
struct Finish {
    done: Mutex<HashMap<OrderId, (Instant, &'static str)>>,
    changed: Notify,
    steps: AtomicUsize,
}

impl Finish {
    fn observer(self: &Arc<Self>) -> StepObserver {
        let finish = Arc::clone(self);
        StepObserver(Arc::new(move |function: Function, event: &Event, emitted: &[Event]| {
            finish.steps.fetch_add(1, Ordering::Relaxed);
            if function != Function::OrderStatus {
                return;
            }
            let outcome = match (&event.payload, emitted.first().map(|event| &event.payload)) {
                (Payload::OrderShipped(_), _) => "SHIPPED",
                (_, Some(Payload::OrderCancelled(_))) => "CANCELLED",
                _ => return,
            };
            let mut done = finish.done.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            done.entry(event.subject).or_insert((Instant::now(), outcome));
            drop(done);
            finish.changed.notify_waiters();
        }))
    }

    async fn wait(&self, order_id: OrderId, timeout: Duration) -> Option<(Instant, &'static str)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some(done) = self.done.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&order_id) {
                return Some(*done);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest-rank; the index is within bounds by construction.
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Runs the benchmark and answers its report.
pub async fn run(config: BenchConfig) -> Result<Value, BenchError> {
    match config.target.clone() {
        Target::Raw(url) => raw(&config, &url).await,
        target => saga(&config, target).await,
    }
}

async fn saga(config: &BenchConfig, target: Target) -> Result<Value, BenchError> {
    let finish = Arc::new(Finish::default());
    let db = config.db_dir.join(format!("bench-{}.db", OrderId::new()));
    let embedded_config = EmbeddedConfig {
        db: db.clone(),
        catalog: catalog(config.orders),
        ship_countries: ShipCountries::default(),
        bus: BusSettings {
            concurrency: config.queues.concurrency,
            observer: Some(finish.observer()),
            ..BusSettings::default()
        },
    };
    let (router, mode, amqp) = match &target {
        Target::Amqp(url) => {
            let system = AmqpSystem::start(embedded_config, url, config.queues.clone()).await?;
            (system.router.clone(), "amqp", Some(system))
        }
        _ => {
            let system = Embedded::start(embedded_config).await?;
            (system.router.clone(), "embedded", None)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router, async {
        let _ = server_stopped.await;
    }));

    let client = Client::new(&base);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (client, next, finish, config) = (client.clone(), Arc::clone(&next), Arc::clone(&finish), config.clone());
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.orders {
                    return Ok::<_, BenchError>(samples);
                }
                if let Some(rate) = config.rate {
                    let due = started + Duration::from_secs_f64(index as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let path = path_of(index, config.mix);
                let posted = Instant::now();
                let order_id = client.create_order(&order_body(index, path), None).await?;
                let order_id = OrderId::parse(&order_id).map_err(BenchError::Other)?;
                let (at, status) = finish
                    .wait(order_id, Duration::from_secs(120))
                    .await
                    .ok_or_else(|| BenchError::Other(format!("order {order_id} did not finish within 120 s")))?;
                samples.push((path, status, at.duration_since(posted)));
            }
        });
    }
    let mut samples = Vec::with_capacity(config.orders);
    while let Some(worker) = workers.join_next().await {
        samples.extend(worker.map_err(|error| BenchError::Other(error.to_string()))??);
    }
    let wall = started.elapsed().as_secs_f64();
    // Steps off the critical path (settle-inventory) may still be running:
    // let them finish so the count is whole and no message outlives the run.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut steps = finish.steps.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = finish.steps.load(Ordering::Relaxed);
        if now == steps {
            break;
        }
        steps = now;
    }

    let _ = stop_server.send(());
    let _ = server.await;
    if let Some(system) = amqp {
        system.shutdown().await;
    }
    let _ = std::fs::remove_file(&db);

    let mut completed = serde_json::Map::new();
    for (path, status, _) in &samples {
        let key = format!("{}:{}", PATHS[*path].0, status.to_ascii_lowercase());
        let count = completed.get(&key).and_then(Value::as_u64).unwrap_or(0);
        completed.insert(key, json!(count + 1));
    }
    let latencies = samples.iter().map(|(_, _, latency)| latency.as_secs_f64() * 1000.0).collect();
    let mix = format!("{:?}", config.mix).to_ascii_lowercase();
    Ok(report(mode, &mix, config, completed, latencies, wall, steps))
}

/// The one JSON object a bench run prints.
fn report(
    mode: &str,
    mix: &str,
    config: &BenchConfig,
    completed: serde_json::Map<String, Value>,
    mut latencies_ms: Vec<f64>,
    wall: f64,
    messages: usize,
) -> Value {
    latencies_ms.sort_by(f64::total_cmp);
    json!({
        "mode": mode,
        "mix": mix,
        "orders": latencies_ms.len(),
        "concurrency": config.concurrency,
        "rate": config.rate,
        "completed": completed,
        "wall_s": round3(wall),
        "sagas_per_s": round3(latencies_ms.len() as f64 / wall),
        "latency_ms": {
            "p50": round3(percentile(&latencies_ms, 0.50)),
            "p95": round3(percentile(&latencies_ms, 0.95)),
            "p99": round3(percentile(&latencies_ms, 0.99)),
            "max": round3(latencies_ms.last().copied().unwrap_or(0.0)),
        },
        "messages": messages,
        "messages_per_s": round3(messages as f64 / wall),
    })
}

/// The events the ship path publishes, in order, with the function that
/// publishes each next one in reaction to the previous.
fn ship_path_reaction(event_type: EventType, consumer: Function) -> Option<EventType> {
    match (event_type, consumer) {
        (EventType::OrderCreated, Function::ReserveInventory) => Some(EventType::InventoryReserved),
        (EventType::InventoryReserved, Function::ShipOrder) => Some(EventType::OrderShipped),
        _ => None,
    }
}

/// Bare lapin: the ship path's exact message pattern (the same exchange,
/// queues, bindings, persistence, confirms, mandatory, ack-after-confirm and
/// concurrency), with each consumer republishing the next event type at once.
async fn raw(config: &BenchConfig, url: &str) -> Result<Value, BenchError> {
    let topology = Topology::derive(&config.queues);
    let link = AmqpLink::new(url, "choreo-bench-setup");
    link.declare(&topology).await?;
    link.close().await;
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let purge = connection.create_channel().await?;
    for function in Function::consumers() {
        purge.queue_purge(function.queue().as_str().into(), QueuePurgeOptions::default()).await?;
    }
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;

    let finish = Arc::new(Finish::default());
    let deliveries = Arc::new(AtomicUsize::new(0));
    for function in Function::consumers() {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channel.basic_qos(config.queues.prefetch, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                function.queue().as_str().into(),
                format!("raw-{}", function.name()).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (finish, deliveries) = (Arc::clone(&finish), Arc::clone(&deliveries));
        let workers = Arc::new(tokio::sync::Semaphore::new(config.queues.concurrency));
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let Ok(permit) = Arc::clone(&workers).acquire_owned().await else { break };
                let (channel, finish, deliveries) = (channel.clone(), Arc::clone(&finish), Arc::clone(&deliveries));
                tokio::spawn(async move {
                    deliveries.fetch_add(1, Ordering::Relaxed);
                    let kind = delivery.properties.kind().as_ref().map(|kind| kind.to_string()).unwrap_or_default();
                    let event_type = EventType::parse(&kind);
                    let order = delivery.properties.correlation_id().as_ref().map(|id| id.to_string());
                    if let Some(next) = event_type.and_then(|event_type| ship_path_reaction(event_type, function)) {
                        let properties = delivery.properties.clone().with_type(next.as_str().into());
                        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                        if let Ok(confirm) = channel
                            .basic_publish(EXCHANGE.into(), next.as_str().into(), options, &delivery.data, properties)
                            .await
                        {
                            let _ = confirm.await;
                        }
                    }
                    if function == Function::OrderStatus
                        && event_type == Some(EventType::OrderShipped)
                        && let Some(order) = order.and_then(|order| OrderId::parse(&order).ok())
                    {
                        finish
                            .done
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(order, (Instant::now(), "SHIPPED"));
                        finish.changed.notify_waiters();
                    }
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                    drop(permit);
                });
            }
        });
    }

    // A real order.created body, so message sizes match the saga run.
    let sample = Event::new(
        Function::CreateOrder,
        OrderId::new(),
        None,
        Payload::OrderCreated(
            serde_json::from_value(order_body(0, 0)).map_err(|error| BenchError::Other(error.to_string()))?,
        ),
    );
    let body = sample.to_json();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (publisher, next, finish, body, config) =
            (publisher.clone(), Arc::clone(&next), Arc::clone(&finish), body.clone(), config.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.orders {
                    return Ok::<_, BenchError>(latencies);
                }
                if let Some(rate) = config.rate {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(index as f64 / rate)).into()).await;
                }
                let order_id = OrderId::new();
                let properties = BasicProperties::default()
                    .with_message_id(uuid::Uuid::now_v7().to_string().into())
                    .with_correlation_id(order_id.to_string().into())
                    .with_content_type(shared::amqp::CONTENT_TYPE.into())
                    .with_type(EventType::OrderCreated.as_str().into())
                    .with_delivery_mode(2);
                let posted = Instant::now();
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                publisher
                    .basic_publish(EXCHANGE.into(), EventType::OrderCreated.as_str().into(), options, &body, properties)
                    .await?
                    .await?;
                let (at, _) = finish
                    .wait(order_id, Duration::from_secs(120))
                    .await
                    .ok_or_else(|| BenchError::Other(format!("raw saga {order_id} did not finish")))?;
                latencies.push(at.duration_since(posted).as_secs_f64() * 1000.0);
            }
        });
    }
    let mut latencies = Vec::with_capacity(config.orders);
    while let Some(worker) = workers.join_next().await {
        latencies.extend(worker.map_err(|error| BenchError::Other(error.to_string()))??);
    }
    let wall = started.elapsed().as_secs_f64();
    // Let the last settle-inventory deliveries (off the critical path) land.
    let expected = config.orders * ship_path_deliveries();
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let messages = deliveries.load(Ordering::Relaxed);
    let _ = connection.close(200, "bench done".into()).await;
    let mut completed = serde_json::Map::new();
    completed.insert("shipped:shipped".into(), json!(latencies.len()));
    Ok(report("raw", "ship", config, completed, latencies, wall, messages))
}

/// Deliveries of one ship-path saga: each published event times its consumers.
fn ship_path_deliveries() -> usize {
    [EventType::OrderCreated, EventType::InventoryReserved, EventType::OrderShipped]
        .into_iter()
        .map(|event_type| consumers_of(event_type).count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
    }

    #[test]
    fn the_ship_path_has_five_deliveries() {
        assert_eq!(ship_path_deliveries(), 5);
    }

    #[test]
    fn the_mixed_bench_covers_every_path() {
        let paths: std::collections::BTreeSet<usize> = (0..10).map(|index| path_of(index, Mix::Mixed)).collect();
        assert_eq!(paths.len(), PATHS.len());
    }
}
