//! `choreo bench`: drives N orders through a system it starts itself and
//! prints one JSON object with throughput and end-to-end latency.
//!
//! Orders go in through real HTTP (`POST /orders` on a local port); a saga is
//! timed from the POST until `order-status` records its terminal status,
//! observed in-process (no polling, which would add load and blur latency).
//! `--raw` pushes the same message pattern through the broker with bare
//! lapin and no handlers or store: the physical limit to compare against.

mod finish;
mod raw;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::bus::kafka::{KafkaLink, KafkaSettings, retry_topics, start_group_at_end, subscriptions};
use shared::bus::{DeliverySettings, StepObserver};
use shared::contract::domain::OrderId;
use shared::step::ShipCountries;
use shared::store::counting::{StoreCounts, StoreCountsSnapshot};
use shared::{Event, Function, Payload};

use self::finish::Finish;
use self::report::report;
use crate::audit::audit;
use crate::client::Client;
use crate::up::{AmqpSystem, Embedded, KafkaSystem, UpConfig, serve};
pub use crate::workload::Mix;
use crate::workload::{catalog, order_body, path_of};

/// Which system the bench drives.
#[derive(Clone, Debug)]
pub enum BenchSystem {
    Embedded,
    Amqp(String),
    /// Over Kafka (functions in-process), at these settings.
    Kafka(KafkaSettings),
    /// Bare lapin through the broker at this URL: no handlers, no store.
    Raw(String),
}

#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Which system to start and drive.
    pub system: BenchSystem,
    /// Orders to drive through the saga.
    pub orders: usize,
    /// Orders in flight at once (closed loop).
    pub concurrency: usize,
    /// Orders started per second (open loop); `None`: as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Which saga paths the orders take.
    pub mix: Mix,
    /// How each function's queue is consumed (both buses) and prefetched (RabbitMQ).
    pub delivery: DeliverySettings,
    /// Where the bench's throwaway SQLite file goes.
    pub db_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Start(#[from] crate::up::StartError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Declare(#[from] shared::bus::amqp::DeclareError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl Finish {
    /// Tells this of each step run and of each order's end.
    fn observer(self: &Arc<Self>) -> StepObserver {
        let finish = Arc::clone(self);
        StepObserver(Arc::new(move |function: Function, event: &Event, emitted: &[Event]| {
            finish.steps.fetch_add(1, Ordering::Relaxed);
            finish.emitted.fetch_add(emitted.len(), Ordering::Relaxed);
            if function != Function::OrderStatus {
                return;
            }
            let outcome = match (&event.payload, emitted.first().map(|event| &event.payload)) {
                (Payload::OrderShipped(_), _) => "SHIPPED",
                (_, Some(Payload::OrderCancelled(_))) => "CANCELLED",
                _ => return,
            };
            finish.record(event.subject, outcome);
        }))
    }
}

/// What one saga costs in requests, measured: the basis of the README's cost per order.
fn per_saga(orders: usize, steps: usize, emitted: usize, store: StoreCountsSnapshot) -> Value {
    let each = |count: f64| (count / orders.max(1) as f64 * 100.0).round() / 100.0;
    json!({
        // The POST (create-order) and every step run: one Lambda invocation each.
        "function_invocations": each((orders + steps) as f64),
        // order.created, and what the steps emitted.
        "events_published": each((orders + emitted) as f64),
        // Each delivery of an event to a consuming function.
        "deliveries": each(steps as f64),
        "store_item_reads": each(store.item_reads as f64),
        "store_commits": each(store.commits as f64),
        "store_transactional_item_writes": each(store.transactional_item_writes as f64),
        "store_single_item_writes": each(store.single_item_writes as f64),
    })
}

/// The system a run drives, kept until its end.
enum Running {
    Embedded(Embedded),
    Amqp(AmqpSystem),
    Kafka(KafkaSystem),
}

/// The settings with consumer groups of this run only, each placed at the
/// end of its topics: the records of earlier runs on the same cluster belong
/// to another database.
async fn fresh_groups(kafka: &KafkaSettings, delivery: &DeliverySettings) -> Result<KafkaSettings, BenchError> {
    let kafka = KafkaSettings { group_prefix: format!("bench-{}.", OrderId::new()), ..kafka.clone() };
    let link = KafkaLink::new(kafka.clone(), "choreo-bench");
    link.create_topics(delivery).await.map_err(BenchError::Other)?;
    for function in Function::consumers() {
        start_group_at_end(&link, &kafka.group(function), subscriptions(function)).await.map_err(BenchError::Other)?;
        let retries = retry_topics(function, delivery);
        start_group_at_end(&link, &kafka.retry_group(function), retries).await.map_err(BenchError::Other)?;
    }
    Ok(kafka)
}

/// Runs the benchmark and answers its report.
pub async fn run(config: BenchConfig) -> Result<Value, BenchError> {
    match config.system.clone() {
        BenchSystem::Raw(url) => raw::run(&config, &url).await,
        target => saga(&config, target).await,
    }
}

async fn saga(config: &BenchConfig, target: BenchSystem) -> Result<Value, BenchError> {
    let finish = Arc::new(Finish::default());
    let store_counts = Arc::new(StoreCounts::default());
    let db = config.db_dir.join(format!("bench-{}.db", OrderId::new()));
    let up_config = UpConfig {
        store: shared::config::StoreSettings::sqlite(db.clone()),
        catalog: catalog(config.orders),
        ship_countries: ShipCountries::default(),
        delivery: config.delivery.clone(),
        observer: Some(finish.observer()),
        store_counts: Some(Arc::clone(&store_counts)),
    };
    let (router, store, mode, running) = match &target {
        BenchSystem::Amqp(url) => {
            let system = AmqpSystem::start(up_config, url).await?;
            (system.router.clone(), Arc::clone(&system.store), "amqp", Running::Amqp(system))
        }
        BenchSystem::Kafka(kafka) => {
            let kafka = fresh_groups(kafka, &config.delivery).await?;
            let deadline = shared::saga::DEFAULT_SAGA_DEADLINE;
            let system = KafkaSystem::start(up_config, kafka, deadline).await?;
            (system.router.clone(), Arc::clone(&system.store), "kafka", Running::Kafka(system))
        }
        _ => {
            let system = Embedded::start(up_config).await?;
            (system.router.clone(), Arc::clone(&system.store), "embedded", Running::Embedded(system))
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
                samples.push((order_id, path, status, at.duration_since(posted)));
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

    // What the sagas cost, counted before the audit's own reads.
    let counted = store_counts.snapshot();
    // The invariants, checked before anything is torn down: a fast run that
    // broke one is a failure, not a figure.
    let placed: Vec<_> = samples.iter().map(|&(order_id, path, ..)| (order_id, path)).collect();
    let audit = audit(&*store, &placed).await.map_err(|error| BenchError::Other(error.to_string()))?;

    let _ = stop_server.send(());
    let _ = server.await;
    match running {
        Running::Amqp(system) => system.shutdown().await,
        Running::Kafka(system) => system.shutdown().await,
        // Its bus stops when dropped, after the run.
        Running::Embedded(system) => drop(system),
    }
    let _ = std::fs::remove_file(&db);
    if !audit.holds() {
        return Err(BenchError::Other(format!("the saga's invariants broke in this run: {audit:?}")));
    }

    let mut completed = serde_json::Map::new();
    for (_, path, status, _) in &samples {
        let key = format!("{}:{}", path.name, status.to_ascii_lowercase());
        let count = completed.get(&key).and_then(Value::as_u64).unwrap_or(0);
        completed.insert(key, json!(count + 1));
    }
    let latencies = samples.iter().map(|(.., latency)| latency.as_secs_f64() * 1000.0).collect();
    let mix = format!("{:?}", config.mix).to_ascii_lowercase();
    let mut report = report(mode, &mix, config, completed, latencies, wall, steps);
    report["audit"] = json!(audit);
    report["per_saga"] = per_saga(config.orders, steps, finish.emitted.load(Ordering::Relaxed), counted);
    Ok(report)
}
