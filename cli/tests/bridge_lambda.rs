//! `choreo bridge --invoke lambda` (`choreo::bridge::run`, in process) against
//! RabbitMQ (a fresh vhost per test) and a Lambda Invoke API:
//!
//! - `cargo lambda watch` running the real function binaries (PyPI
//!   `cargo-lambda`): a saga goes all the way to SHIPPED, and one to AQ ends
//!   CANCELLED with its stock released exactly;
//! - a fake Invoke API that holds or fails invocations on purpose: shutdown
//!   finishes the invocations in hand, and function errors are retried or
//!   dead-lettered as the function says.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::post;
use choreo::bridge::{BridgeConfig, BridgeError, EventShape, InvokeTarget};
use common::bridge::{inventory_reserved, new_order, start_cargo_lambda_watch};
use common::{Vhost, eventually, init_logging, queue_state};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use serde_json::json;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, Topology, dead_letter_queue, list_dead_letters, retry_queue};
use shared::contract::domain::{CancelReason, OrderId, OrderStatus, Sku};
use shared::contract::events::OrderShipped;
use shared::store::sqlite::SqliteStore;
use shared::store::{StockLevel, Store};
use shared::testkit::aws::local_sdk_config;
use shared::{Event, Function, Payload};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

/// A bridge running in this test, stopped like `choreo bridge` on SIGTERM.
struct RunningBridge {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), BridgeError>>,
}

impl RunningBridge {
    fn start(vhost: &Vhost, endpoint: &str, functions: Vec<Function>, settings: DeliverySettings) -> Self {
        Self::start_with(EventShape::CloudEvent, vhost, endpoint, functions, settings)
    }

    /// A bridge whose invocations carry `event_shape`.
    fn start_with(
        event_shape: EventShape,
        vhost: &Vhost,
        endpoint: &str,
        functions: Vec<Function>,
        settings: DeliverySettings,
    ) -> Self {
        let endpoint = Some(endpoint.to_owned());
        let config = BridgeConfig {
            amqp_url: vhost.url.clone(),
            kafka: None,
            functions,
            target: InvokeTarget::Lambda { endpoint, function_prefix: String::new(), event_shape },
            settings,
            call_timeout: choreo::bridge::DEFAULT_CALL_TIMEOUT,
        };
        let (stop, stopped) = watch::channel(false);
        Self { stop, task: tokio::spawn(choreo::bridge::run(config, stopped)) }
    }

    /// Signals the stop and waits (bounded) for `run` to return `Ok`.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let finished = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
        match finished {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("the bridge stopped with an error: {error}"),
            Ok(Err(panic)) => panic!("the bridge panicked: {panic}"),
            Err(_) => panic!("the bridge did not stop within 30 s of the stop signal"),
        }
    }
}

impl Drop for RunningBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every work and retry queue of `functions` is empty, with no consumer.
/// The broker drops a closed connection's consumers from its queues a moment
/// after the close (each queue learns of it on its own), so this waits up to
/// a few seconds for that; a message left behind stays, and fails it.
async fn assert_queues_empty(link: &AmqpLink, functions: &[Function], settings: &DeliverySettings) {
    for &function in functions {
        let mut queues = vec![function.queue()];
        queues.extend((1..=settings.max_retries).map(|retry| retry_queue(function, retry)));
        for queue in queues {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut state = queue_state(link, &queue).await;
            while state != (0, 0) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                state = queue_state(link, &queue).await;
            }
            assert_eq!(state, (0, 0), "{queue}: messages, consumers");
        }
    }
}

async fn stock(store: &dyn Store, sku: &str) -> StockLevel {
    let sku = Sku::parse(sku).expect("a valid SKU");
    store.stock(std::slice::from_ref(&sku)).await.expect("the store answers").pop().expect("a catalog SKU")
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_runs_sagas_through_cargo_lambda_watch_and_the_real_functions() {
    sagas_through_cargo_lambda_watch(EventShape::CloudEvent).await;
}

/// The functions receive each message as Amazon MQ's event source mapping
/// would hand it over (`RabbitMqEvent`) and publish their own events.
#[tokio::test(flavor = "multi_thread")]
async fn bridge_runs_sagas_through_cargo_lambda_watch_as_amazon_mq_events() {
    sagas_through_cargo_lambda_watch(EventShape::AmazonMq).await;
}

/// The functions receive each message as an SQS event source mapping would
/// hand it over (`SqsEvent`) and publish their own events.
#[tokio::test(flavor = "multi_thread")]
async fn bridge_runs_sagas_through_cargo_lambda_watch_as_sqs_events() {
    sagas_through_cargo_lambda_watch(EventShape::Sqs).await;
}

async fn sagas_through_cargo_lambda_watch(shape: EventShape) {
    init_logging();
    // GIVEN a seeded SQLite file, a vhost with the topology, and `cargo lambda
    // watch` serving the real functions on them
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("choreo.db");
    let store = SqliteStore::open(&db).expect("open the database");
    let catalog = choreo::up::parse_catalog("seed", choreo::up::DEFAULT_CATALOG).expect("the catalog");
    store.seed_if_empty(&catalog).await.expect("seed the catalog");
    let vhost = Vhost::new("bridge-lambda");
    let settings =
        DeliverySettings { max_retries: 3, retry_base: Duration::from_millis(500), ..DeliverySettings::default() };
    let link = vhost.link("test-publisher");
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let db_path = db.to_str().expect("a UTF-8 path");
    let functions: Vec<&str> = Function::consumers().map(Function::name).collect();
    let watch =
        start_cargo_lambda_watch(dir.path(), &functions, &[("CHOREO_DB", db_path), ("AMQP_URL", &vhost.url)]).await;

    // Start each function once (an invalid payload: each says so, as a
    // permanent error), so the saga below is timed without the starts.
    let lambda = aws_sdk_lambda::Client::new(&local_sdk_config(&watch.endpoint).await);
    for function in Function::consumers() {
        let started = Instant::now();
        let invocation = lambda.invoke().function_name(function.name()).payload(b"{}".to_vec().into()).send();
        let Ok(answer) = tokio::time::timeout(Duration::from_secs(120), invocation).await else {
            panic!("{function} did not start within 2 minutes\n{}", watch.process.log_tail());
        };
        let said = match answer {
            Ok(output) => {
                String::from_utf8_lossy(output.payload().map(|blob| blob.as_ref()).unwrap_or_default()).into_owned()
            }
            Err(error) => format!("{}", aws_sdk_lambda::error::DisplayErrorContext(&error)),
        };
        assert!(said.contains("choreo.Permanent"), "{function} answered {said}\n{}", watch.process.log_tail());
        eprintln!("{function} started in {:?}", started.elapsed());
    }
    let bridge =
        RunningBridge::start_with(shape, &vhost, &watch.endpoint, Function::consumers().collect(), settings.clone());

    // WHEN two orders are created (as create-order does) and their
    // order.created published: one to France, one to Antarctica
    let mut order_ids = Vec::new();
    let mut traces = Vec::new();
    for (sku, quantity, country) in [("WIDGET-1", 2, "FR"), ("GADGET-2", 3, "AQ")] {
        let accepted =
            create_order::create(&store, new_order(sku, quantity, country), None).await.expect("the order is stored");
        link.publish_events(std::slice::from_ref(&accepted.event)).await.expect("publish order.created");
        order_ids.push(accepted.order_id);
        traces.push(accepted.event.trace_id().to_owned());
    }
    let [shipped, antarctic]: [OrderId; 2] = order_ids.try_into().expect("two orders");

    // THEN the first ships, and its reserved units become shipped
    let store_ref = &store;
    let ended = |order_id: OrderId, status: OrderStatus| async move {
        let order = store_ref.order(order_id).await.expect("the store answers").expect("the order exists");
        (order.status == status).then_some(order)
    };
    let saga = Duration::from_secs(60);
    let order = eventually("the first order SHIPPED", saga, || async {
        ended(shipped, OrderStatus::Shipped).await.ok_or_else(|| watch.process.log_tail())
    })
    .await;
    assert!(order.tracking_number.is_some(), "{order:?}");
    let types: Vec<&str> = order.history.iter().map(|entry| entry.event_type.as_str()).collect();
    assert_eq!(types, ["order.created", "inventory.reserved", "order.shipped"], "{order:?}");
    let widgets = eventually("2 widgets shipped", saga, || async {
        let level = stock(store_ref, "WIDGET-1").await;
        (level.shipped == 2 && level.reserved == 0).then_some(level).ok_or_else(|| watch.process.log_tail())
    })
    .await;
    assert_eq!((widgets.available, widgets.reserved, widgets.shipped), (98, 0, 2));

    // AND its saga is one trace through the real functions: every event in
    // order.created's trace, each a child span of its cause (ARCHITECTURE.md §14.1),
    // and every line the functions logged about the order names the trace
    let events = shared::saga::saga_records(&store, &order).await.expect("the records read").events;
    assert_eq!(events.len(), 3, "{events:#?}");
    for event in &events {
        assert_eq!(event.trace_id(), traces[0], "{} is in the saga's trace", event.event_type());
        if let Some(cause) = event.causation_id {
            let cause = events.iter().find(|other| other.id == cause).expect("its cause is in the saga");
            assert_eq!(event.parent_span.as_deref(), Some(cause.span_id()), "{}", event.event_type());
        }
    }
    let log = std::fs::read_to_string(dir.path().join("watch.log")).expect("the functions' log");
    let about_it: Vec<&str> = log.lines().filter(|line| line.contains(&shipped.to_string())).collect();
    assert!(about_it.len() >= 5, "a line per step of the order:\n{}", about_it.join("\n"));
    for line in &about_it {
        assert!(line.contains(&traces[0]), "a line about the order without its trace: {line}");
    }

    // AND the second is cancelled (shipment_failed) with its stock released exactly
    let order = eventually("the Antarctic order CANCELLED", saga, || async {
        ended(antarctic, OrderStatus::Cancelled).await.ok_or_else(|| watch.process.log_tail())
    })
    .await;
    assert_eq!(order.cancel_reason, Some(CancelReason::ShipmentFailed), "{order:?}");
    let gadgets = stock(&store, "GADGET-2").await;
    assert_eq!((gadgets.available, gadgets.reserved, gadgets.shipped, gadgets.replenished), (5, 0, 0, 0));
    for level in store.all_stock().await.expect("the store answers") {
        assert!(level.is_conserved(), "{level:?}");
    }

    // AND nothing was dead-lettered, and once stopped the bridge left no work behind
    let dead = list_dead_letters(&link, 10).await.expect("list dead letters");
    assert!(dead.is_empty(), "dead letters: {dead:#?}\n{}", watch.process.log_tail());
    bridge.stop().await;
    assert_queues_empty(&link, &Function::consumers().collect::<Vec<_>>(), &settings).await;
    link.close().await;
}

// ------------------------------------------------------------ a fake Invoke API

type Answer = (StatusCode, HeaderMap, String);
type Respond = Arc<dyn Fn(String, Event) -> Pin<Box<dyn Future<Output = Answer> + Send>> + Send + Sync>;

/// An Invoke API (`POST /2015-03-31/functions/{name}/invocations`) that
/// records each call and answers with `respond`.
struct FakeLambda {
    endpoint: String,
    calls: Arc<Mutex<Vec<(String, Event)>>>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct FakeState {
    calls: Arc<Mutex<Vec<(String, Event)>>>,
    respond: Respond,
}

async fn invoke(State(state): State<FakeState>, Path(name): Path<String>, body: Bytes) -> Answer {
    let Ok(event) = Event::from_json(&body) else {
        return (StatusCode::BAD_REQUEST, HeaderMap::new(), "not a CloudEvent".to_owned());
    };
    state.calls.lock().expect("not poisoned").push((name.clone(), event.clone()));
    (state.respond)(name, event).await
}

impl FakeLambda {
    async fn start(respond: Respond) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState { calls: Arc::clone(&calls), respond };
        let router = Router::new().route("/2015-03-31/functions/{name}/invocations", post(invoke)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a local port");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { endpoint, calls, server }
    }

    fn calls_to(&self, name: &str) -> usize {
        self.calls.lock().expect("not poisoned").iter().filter(|(called, _)| called == name).count()
    }
}

impl Drop for FakeLambda {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A successful invocation that emitted `events`.
fn emitted(events: &[Event]) -> Answer {
    (StatusCode::OK, HeaderMap::new(), serde_json::to_string(events).expect("events serialize"))
}

/// A function error as AWS answers it: 200 with `X-Amz-Function-Error`.
fn aws_function_error(error_type: &str) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("x-amz-function-error"), HeaderValue::from_static("Unhandled"));
    let body = json!({"errorType": error_type, "errorMessage": format!("{error_type} on purpose")});
    (StatusCode::OK, headers, body.to_string())
}

/// A function error as `cargo lambda watch` answers it: 500 with the error document.
fn watch_function_error(error_type: &str) -> Answer {
    let body = json!({"errorType": error_type, "errorMessage": format!("{error_type} on purpose")});
    (StatusCode::INTERNAL_SERVER_ERROR, HeaderMap::new(), body.to_string())
}

/// What ship-order emits for an `inventory.reserved`.
fn shipped_for(reserved: &Event) -> Event {
    let Payload::InventoryReserved(data) = &reserved.payload else { panic!("not inventory.reserved: {reserved:?}") };
    let shipped = OrderShipped { items: data.items.clone(), tracking_number: "TRACK-TEST".to_owned() };
    shared::step::reaction(Function::ShipOrder, reserved, Payload::OrderShipped(shipped))
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_shutdown_finishes_the_invocations_in_hand_publishes_their_events_and_acks() {
    init_logging();
    // GIVEN an Invoke API whose ship-order holds each invocation until released
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let respond: Respond = {
        let release = Arc::clone(&release);
        Arc::new(move |_name: String, event: Event| {
            let (arrived, release) = (arrived.clone(), Arc::clone(&release));
            Box::pin(async move {
                let _ = arrived.send(event.id);
                let _permit = release.acquire().await;
                emitted(&[shipped_for(&event)])
            })
        })
    };
    let fake = FakeLambda::start(respond).await;
    let vhost = Vhost::new("bridge-drain");
    let settings = DeliverySettings::default();
    let link = vhost.link("test-publisher");
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let bridge = RunningBridge::start(&vhost, &fake.endpoint, vec![Function::ShipOrder], settings.clone());

    // WHEN an inventory.reserved is being handled as the bridge is told to stop
    let reserved = inventory_reserved("WIDGET-1", 1);
    link.publish_events(std::slice::from_ref(&reserved)).await.expect("publish");
    let held = tokio::time::timeout(Duration::from_secs(30), arrivals.recv()).await;
    assert_eq!(held.ok().flatten(), Some(reserved.id), "ship-order was invoked with the event");
    let _ = bridge.stop.send(true);

    // THEN it does not stop while the invocation is in hand...
    let mut bridge = bridge;
    let early = tokio::time::timeout(Duration::from_millis(500), &mut bridge.task).await;
    assert!(early.is_err(), "the bridge stopped before its invocation answered: {early:?}");

    // ...and once the function answers, it publishes what it emitted, acks, and stops
    release.add_permits(1);
    bridge.stop().await;
    assert_eq!(fake.calls_to("ship-order"), 1);
    assert_queues_empty(&link, &[Function::ShipOrder], &settings).await;
    let channel = link.channel().await.expect("a channel");
    let message = channel
        .basic_get(Function::SettleInventory.queue().as_str().into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
        .expect("order.shipped reached settle-inventory's queue");
    let published = Event::from_json(&message.delivery.data).expect("a CloudEvent");
    assert_eq!(published.event_type().as_str(), "order.shipped");
    assert_eq!(published.causation_id, Some(reserved.id));
    message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    // order-status consumes both events: the input's copy and the output
    assert_eq!(queue_state(&link, &Function::OrderStatus.queue()).await, (2, 0));
    link.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_retries_or_dead_letters_a_failed_invocation_as_the_function_says() {
    init_logging();
    // GIVEN an Invoke API where ship-order fails permanently (AWS style),
    // settle-inventory crashes every time (cargo lambda watch style), and
    // order-status fails retryably once per event, then succeeds
    let seen: Arc<Mutex<BTreeMap<uuid::Uuid, u32>>> = Arc::default();
    let respond: Respond = {
        let seen = Arc::clone(&seen);
        Arc::new(move |name: String, event: Event| {
            let answer = match name.as_str() {
                "ship-order" => aws_function_error("choreo.Permanent"),
                "settle-inventory" => watch_function_error("Runtime.ExitError"),
                "order-status" => {
                    let mut seen = seen.lock().expect("not poisoned");
                    let calls = seen.entry(event.id).or_default();
                    *calls += 1;
                    if *calls == 1 { aws_function_error("choreo.Retryable") } else { emitted(&[]) }
                }
                _ => (StatusCode::NOT_FOUND, HeaderMap::new(), String::new()),
            };
            Box::pin(async move { answer })
        })
    };
    let fake = FakeLambda::start(respond).await;
    let vhost = Vhost::new("bridge-errors");
    let settings =
        DeliverySettings { max_retries: 2, retry_base: Duration::from_millis(50), ..DeliverySettings::default() };
    let link = vhost.link("test-publisher");
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let functions = vec![Function::ShipOrder, Function::SettleInventory, Function::OrderStatus];
    let bridge = RunningBridge::start(&vhost, &fake.endpoint, functions.clone(), settings.clone());

    // WHEN an inventory.reserved and an order.shipped are published
    let reserved = inventory_reserved("WIDGET-1", 1);
    let shipped = shipped_for(&reserved);
    link.publish_events(&[reserved.clone(), shipped.clone()]).await.expect("publish");

    // THEN ship-order's permanent failure is dead-lettered at once, settle-inventory's
    // crash after every retry, and order-status's retryable failure is retried and handled
    let fake_ref = &fake;
    eventually("two dead letters and every retry done", Duration::from_secs(30), || async {
        let dead = list_dead_letters(&link, 10).await.expect("list dead letters");
        let done =
            dead.len() == 2 && fake_ref.calls_to("settle-inventory") == 3 && fake_ref.calls_to("order-status") == 4;
        done.then_some(()).ok_or_else(|| {
            let calls = fake_ref.calls.lock().expect("not poisoned");
            format!("{} dead letters; calls: {:?}", dead.len(), calls.iter().map(|(name, _)| name).collect::<Vec<_>>())
        })
    })
    .await;
    bridge.stop().await;
    let dead = list_dead_letters(&link, 10).await.expect("list dead letters");
    let ship = dead.iter().find(|letter| letter.function == "ship-order").expect("ship-order's dead letter");
    assert_eq!(ship.attempts, Some(1), "{ship:?}");
    assert!(ship.error.as_deref().is_some_and(|error| error.contains("choreo.Permanent")), "{ship:?}");
    assert_eq!(ship.message_id.as_deref(), Some(reserved.id.to_string().as_str()));
    let settle = dead.iter().find(|letter| letter.function == "settle-inventory").expect("settle's dead letter");
    assert_eq!(settle.attempts, Some(3), "{settle:?}");
    assert!(settle.error.as_deref().is_some_and(|error| error.contains("Runtime.ExitError")), "{settle:?}");
    assert_eq!(settle.message_id.as_deref(), Some(shipped.id.to_string().as_str()));
    assert_eq!(
        (fake.calls_to("ship-order"), fake.calls_to("settle-inventory"), fake.calls_to("order-status")),
        (1, 3, 4)
    );
    assert_queues_empty(&link, &functions, &settings).await;
    assert_eq!(queue_state(&link, &dead_letter_queue(Function::OrderStatus)).await, (0, 0));
    link.close().await;
}
