//! The consumer runner when the broker or the messages misbehave: a consumer
//! the broker cancels (its queue deleted), attempt headers no runner wrote,
//! a retry copy that cannot be published, an event nobody is bound to, a
//! publish whose confirm is withheld, and a memory alarm. Each test runs
//! `run_consumers` in process with a scripted step, in a vhost of its own.
//!
//! `broker_alarm_*` raises a broker-wide memory alarm (every connection that
//! publishes is blocked while it lasts): like `broker_outage_*` it takes every
//! test thread (`.config/nextest.toml`) and runs in the broker-wide pass of
//! `scripts/test`; a guard restores the watermark even when the test fails.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::bridge::inventory_reserved;
use common::runner::{BOUND, Runner, send, unacked, wait_consumers};
use common::{Vhost, eventually, message_count};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, StepInvoker, Topology, dead_letter_queue, retry_queue};
use shared::contract::choreography::EXCHANGE;
use shared::contract::events::OrderShipped;
use shared::testkit::broker::{rabbitmqctl, try_rabbitmqctl};
use shared::{Event, Function, Payload, StepError};
use tokio::sync::watch;

/// Quick retries: 50 ms, doubling; two of them.
fn settings() -> DeliverySettings {
    DeliverySettings { max_retries: 2, retry_base: Duration::from_millis(50), ..DeliverySettings::default() }
}

/// What the scripted step does with an event.
type Behaviour = Arc<dyn Fn(&Event) -> Result<Vec<Event>, StepError> + Send + Sync>;

/// A step that does what its behaviour says and records each call: the
/// event id, the attempt the runner passed, and when.
struct Scripted {
    /// What to answer.
    behaviour: Behaviour,
    /// `(event id, attempt, when)` of every call, in order.
    calls: Mutex<Vec<(String, u32, tokio::time::Instant)>>,
}

impl Scripted {
    fn new(behaviour: impl Fn(&Event) -> Result<Vec<Event>, StepError> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self { behaviour: Arc::new(behaviour), calls: Mutex::new(Vec::new()) })
    }

    /// The attempts the runner passed for event `id`, in order.
    fn attempts(&self, id: &str) -> Vec<u32> {
        self.calls.lock().unwrap().iter().filter(|(event, _, _)| event == id).map(|(_, attempt, _)| *attempt).collect()
    }

    fn calls_of(&self, id: &str) -> Vec<tokio::time::Instant> {
        self.calls.lock().unwrap().iter().filter(|(event, _, _)| event == id).map(|(_, _, at)| *at).collect()
    }

    fn handled(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl StepInvoker for Scripted {
    async fn handle(&self, _function: Function, event: &Event) -> Result<Vec<Event>, StepError> {
        (self.behaviour)(event)
    }

    async fn handle_delivery(
        &self,
        _function: Function,
        event: &Event,
        _delivery: &lapin::message::Delivery,
        attempt: u32,
    ) -> Result<Vec<Event>, StepError> {
        self.calls.lock().unwrap().push((event.id.to_string(), attempt, tokio::time::Instant::now()));
        (self.behaviour)(event)
    }
}

fn attempt_header(value: AMQPValue) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert("x-choreo-attempt".into(), value);
    headers
}

/// A dead letter read back: its `x-choreo-attempt` and `x-choreo-error` headers.
#[derive(Debug)]
struct Letter {
    /// The message id (the event's id).
    id: String,
    /// The runner's attempt count, if it wrote one.
    attempt: Option<AMQPValue>,
    /// The runner's error, if it wrote one.
    error: Option<String>,
}

/// Takes every message off `queue`.
async fn take_all(link: &AmqpLink, queue: &str) -> Vec<Letter> {
    let channel = link.channel().await.expect("a channel");
    let mut letters = Vec::new();
    while let Some(message) =
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
    {
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let headers = headers.inner();
        letters.push(Letter {
            id: delivery.properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default(),
            attempt: headers.get("x-choreo-attempt").cloned(),
            error: headers.get("x-choreo-error").and_then(|value| value.as_long_string()).map(ToString::to_string),
        });
    }
    let _ = channel.close(200, "taken".into()).await;
    letters
}

/// Waits for `count` messages in `queue`, then takes them.
async fn wait_letters(link: &AmqpLink, queue: &str, count: u32) -> Vec<Letter> {
    eventually(&format!("{count} message(s) in {queue}"), BOUND, || async {
        let ready = message_count(link, queue).await;
        if ready >= count { Ok(()) } else { Err(format!("{ready} ready")) }
    })
    .await;
    take_all(link, queue).await
}

fn shipped_for(input: &Event) -> Event {
    let items = match &input.payload {
        Payload::InventoryReserved(reserved) => reserved.items.clone(),
        _ => Vec::new(),
    };
    Event::new(
        Function::ShipOrder,
        input.subject,
        Some(input),
        Payload::OrderShipped(OrderShipped { items, tracking_number: "TRACK-1".into() }),
    )
}

/// `[ready, unacked]` of `queue` (only its consumers' channels are open
/// besides the test's own, which take nothing).
async fn counts(link: &AmqpLink, vhost: &Vhost, queue: &str) -> Vec<u64> {
    vec![u64::from(message_count(link, queue).await), unacked(vhost)]
}

// ------------------------------------------------------------ problem 1

/// The broker cancels one consumer (its queue is deleted) while the other
/// goes on: the runner must notice, declare the queue again and consume it,
/// and still stop promptly when asked.
#[tokio::test]
async fn a_cancelled_consumer_is_consumed_again_and_stop_still_ends_the_runner() {
    let vhost = Vhost::new("faults-cancel");
    let link = vhost.link("faults-test");
    let settings = settings();
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let step = Scripted::new(|_| Ok(vec![]));
    let runner =
        Runner::start(&vhost.url, vec![Function::ShipOrder, Function::OrderStatus], Arc::clone(&step), settings);
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;
    wait_consumers(&link, &Function::OrderStatus.queue(), 1).await;

    // WHEN the ship-order queue is deleted under its consumer
    let channel = link.channel().await.expect("a channel");
    channel.queue_delete(ship.as_str().into(), QueueDeleteOptions::default()).await.expect("delete the queue");
    let _ = channel.close(200, "deleted".into()).await;

    // THEN the runner declares it again and consumes it
    wait_consumers(&link, &ship, 1).await;
    let event = inventory_reserved("SKU-1", 1);
    send(&link, &ship, &event, FieldTable::default()).await;
    let id = event.id.to_string();
    eventually("the event sent after the deletion is handled", BOUND, || async {
        if step.attempts(&id).is_empty() { Err(format!("{} calls so far", step.handled())) } else { Ok(()) }
    })
    .await;
    assert_eq!(step.attempts(&id), vec![1]);

    // AND a stop still ends it
    runner.stop().await;
}

/// The same when the broker closes the consumers' connection.
#[tokio::test]
async fn a_closed_consuming_connection_is_reopened() {
    let vhost = Vhost::new("faults-conn");
    let link = vhost.link("faults-test");
    let settings = settings();
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let step = Scripted::new(|_| Ok(vec![]));
    let runner = Runner::start(&vhost.url, vec![Function::ShipOrder], Arc::clone(&step), settings);
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;

    let listed = rabbitmqctl(&["-q", "--no-table-headers", "list_connections", "pid", "vhost", "client_properties"]);
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(&vhost.name) && line.contains("faults-runner"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(!pids.is_empty(), "the runner's connections are listed: {listed}");
    for pid in pids {
        let _ = try_rabbitmqctl(&["close_connection", pid, "closed by a test"]);
    }

    wait_consumers(&link, &ship, 1).await;
    let event = inventory_reserved("SKU-1", 1);
    send(&link, &ship, &event, FieldTable::default()).await;
    let id = event.id.to_string();
    eventually("the event sent after the close is handled", BOUND, || async {
        if step.attempts(&id).is_empty() { Err("not yet".to_owned()) } else { Ok(()) }
    })
    .await;
    runner.stop().await;
}

// ------------------------------------------------------------ problem 4

/// Attempt headers that no runner wrote are read within `1..=max_retries+1`:
/// zero and text start at the first attempt and go through every retry
/// queue to the dead queue with the runner's error; a huge one means the
/// retries are spent. Nothing spins.
#[tokio::test]
async fn odd_attempt_headers_are_retried_and_dead_lettered_by_the_book() {
    let vhost = Vhost::new("faults-attempt");
    let link = vhost.link("faults-test");
    let settings = settings();
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let step = Scripted::new(|_| Err(StepError::Retryable("the carrier is down".into())));
    let runner = Runner::start(&vhost.url, vec![Function::ShipOrder], Arc::clone(&step), settings.clone());
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;

    let last = settings.max_retries + 1;
    let cases: Vec<(&str, AMQPValue, Vec<u32>)> = vec![
        ("zero", AMQPValue::LongLongInt(0), (1..=last).collect()),
        ("negative", AMQPValue::LongLongInt(-7), (1..=last).collect()),
        ("huge", AMQPValue::LongLongInt(i64::MAX), vec![last]),
        ("beyond the retries", AMQPValue::LongLongInt(1_000_000), vec![last]),
        ("text", AMQPValue::LongString("soon".into()), (1..=last).collect()),
        ("a number as text", AMQPValue::LongString("2".into()), (2..=last).collect()),
    ];
    let mut ids = Vec::new();
    for (_, header, _) in &cases {
        let event = inventory_reserved("SKU-1", 1);
        send(&link, &ship, &event, attempt_header(header.clone())).await;
        ids.push(event.id.to_string());
    }
    let letters =
        wait_letters(&link, &dead_letter_queue(Function::ShipOrder), u32::try_from(cases.len()).unwrap()).await;
    runner.stop().await;

    for ((name, _, expected), id) in cases.iter().zip(&ids) {
        assert_eq!(&step.attempts(id), expected, "{name}: the attempts the step saw");
        let letter = letters.iter().find(|letter| &letter.id == id).unwrap_or_else(|| panic!("{name}: dead-lettered"));
        assert_eq!(
            letter.attempt,
            Some(AMQPValue::LongLongInt(i64::from(last))),
            "{name}: the last attempt is recorded"
        );
        assert!(
            letter.error.as_deref().is_some_and(|error| error.contains("the carrier is down")),
            "{name}: dead-lettered by the runner with the step's error: {letter:?}"
        );
    }
    for retry in 1..=settings.max_retries {
        assert_eq!(message_count(&link, &retry_queue(Function::ShipOrder, retry)).await, 0);
    }
}

/// An `x-choreo-attempt: 0` whose step succeeds is handled once, as attempt 1.
#[tokio::test]
async fn an_attempt_header_of_zero_is_a_first_attempt() {
    let vhost = Vhost::new("faults-attempt0");
    let link = vhost.link("faults-test");
    let settings = settings();
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let step = Scripted::new(|_| Ok(vec![]));
    let runner = Runner::start(&vhost.url, vec![Function::ShipOrder], Arc::clone(&step), settings);
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;
    let event = inventory_reserved("SKU-1", 1);
    send(&link, &ship, &event, attempt_header(AMQPValue::LongLongInt(0))).await;
    let id = event.id.to_string();
    eventually("handled", BOUND, || async {
        if step.attempts(&id).is_empty() { Err("no".to_owned()) } else { Ok(()) }
    })
    .await;
    eventually("acked", BOUND, || async {
        let now = counts(&link, &vhost, &ship).await;
        if now == vec![0, 0] { Ok(()) } else { Err(format!("[ready, unacked] = {now:?}")) }
    })
    .await;
    runner.stop().await;
    assert_eq!(step.attempts(&id), vec![1]);
}

/// When the retry copy cannot be published (its retry queue is gone), the
/// message goes back to its queue after a pause, not at once, and the work
/// queue's delivery limit parks it in the dead queue after `max_retries`
/// returns: bounded, never a hot loop.
#[tokio::test]
async fn a_message_that_cannot_be_settled_is_requeued_after_a_pause_and_dead_lettered_at_the_delivery_limit() {
    let vhost = Vhost::new("faults-requeue");
    let link = vhost.link("faults-test");
    // A pause long enough to tell from the broker's own redelivery time.
    let settings = DeliverySettings { retry_base: Duration::from_millis(400), ..settings() };
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let step = Scripted::new(|_| Err(StepError::Retryable("the carrier is down".into())));
    let runner = Runner::start(&vhost.url, vec![Function::ShipOrder], Arc::clone(&step), settings.clone());
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;
    // After the runner declared its topology: nothing declares it again.
    let channel = link.channel().await.expect("a channel");
    let retry = retry_queue(Function::ShipOrder, 1);
    channel.queue_delete(retry.as_str().into(), QueueDeleteOptions::default()).await.expect("delete retry.1");
    let _ = channel.close(200, "deleted".into()).await;
    let event = inventory_reserved("SKU-1", 1);
    send(&link, &ship, &event, FieldTable::default()).await;

    let letters = wait_letters(&link, &dead_letter_queue(Function::ShipOrder), 1).await;
    // Let a spinning runner show itself before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner.stop().await;
    assert_eq!(letters.len(), 1);
    let calls = step.calls_of(&event.id.to_string());
    assert_eq!(
        calls.len(),
        usize::try_from(settings.max_retries).unwrap() + 1,
        "one call per delivery, then the limit"
    );
    for pair in calls.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= settings.retry_base, "a requeue waits at least {:?}; the gap was {gap:?}", settings.retry_base);
    }
}

// ------------------------------------------------------------ mandatory

/// An event nobody is bound to is never dropped: the publish is refused,
/// and the input that caused it lands in the dead queue with the
/// unroutable error.
#[tokio::test]
async fn an_emitted_event_nobody_is_bound_to_dead_letters_its_input() {
    let vhost = Vhost::new("faults-mandatory");
    let link = vhost.link("faults-test");
    let settings = settings();
    let topology = Topology::derive(&settings);
    link.declare(&topology).await.expect("declare the topology");
    let step = Scripted::new(|input| Ok(vec![shipped_for(input)]));
    let runner = Runner::start(&vhost.url, vec![Function::ShipOrder], Arc::clone(&step), settings);
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;

    // Nobody hears order.shipped any more (the runner declared before this).
    let channel = link.channel().await.expect("a channel");
    for (queue, key) in topology.bindings.iter().filter(|(_, key)| key == "order.shipped") {
        channel
            .queue_unbind(queue.as_str().into(), EXCHANGE.into(), key.as_str().into(), FieldTable::default())
            .await
            .expect("unbind");
    }
    let _ = channel.close(200, "unbound".into()).await;

    let event = inventory_reserved("SKU-1", 1);
    send(&link, &ship, &event, FieldTable::default()).await;
    let letters = wait_letters(&link, &dead_letter_queue(Function::ShipOrder), 1).await;
    runner.stop().await;
    assert_eq!(letters[0].id, event.id.to_string());
    assert!(
        letters[0].error.as_deref().is_some_and(|error| error.contains("unroutable")),
        "the dead letter says why: {:?}",
        letters[0]
    );
    assert_eq!(message_count(&link, &ship).await, 0);
}

// ------------------------------------------------------------ ack only after confirm

/// A TCP proxy to the broker that holds back every publisher confirm
/// (`basic.ack` from the broker, AMQP class 60 method 80) while `hold` is
/// true, and whatever follows it on that connection; everything else flows.
async fn confirm_holding_proxy(hold: watch::Receiver<bool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    let broker = broker_address();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(&broker).await else { continue };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut broker_read, mut broker_write) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
            });
            let mut hold = hold.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                loop {
                    // A frame: type (1), channel (2), size (4), payload, 0xCE.
                    let mut header = [0u8; 7];
                    if broker_read.read_exact(&mut header).await.is_err() {
                        break;
                    }
                    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
                    let mut rest = vec![0u8; size + 1];
                    if broker_read.read_exact(&mut rest).await.is_err() {
                        break;
                    }
                    let is_confirm = header[0] == 1 && rest.len() >= 4 && rest[..4] == [0, 60, 0, 80];
                    eprintln!(
                        "proxy frame type {} {:?} held={}",
                        header[0],
                        &rest[..rest.len().min(4)],
                        *hold.borrow()
                    );
                    if is_confirm {
                        let _ = hold.wait_for(|held| !*held).await.map(drop);
                    }
                    if client_write.write_all(&header).await.is_err() || client_write.write_all(&rest).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// `host:port` of the test broker.
fn broker_address() -> String {
    let base = common::broker_base();
    let authority = base.split_once("://").map_or(base.as_str(), |(_, rest)| rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_owned()
}

/// The vhost's URL, through the proxy on `port`.
fn proxied_url(vhost: &Vhost, port: u16) -> String {
    let base = common::broker_base();
    let address = broker_address();
    format!("{}/{}", base.replace(&address, &format!("127.0.0.1:{port}")), vhost.name)
}

/// The input stays unacknowledged while the broker's confirm of the event
/// it caused is withheld, although the event is already in its queue; it is
/// acked once the confirm arrives. `start` starts the consumer under test
/// (the runner or the bridge) on the proxied URL.
async fn input_is_acked_only_after_the_confirm<F, Fut>(vhost: &Vhost, start: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send>>,
{
    let link = vhost.link("faults-test");
    let settings = settings();
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let (hold, held) = watch::channel(false);
    let port = confirm_holding_proxy(held).await;
    let stop = start(proxied_url(vhost, port)).await;
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;

    hold.send_replace(true);
    let event = inventory_reserved("SKU-1", 1);
    send(&link, &ship, &event, FieldTable::default()).await;
    // The event it caused reached the broker (order-status hears order.shipped)...
    let status = Function::OrderStatus.queue();
    eventually("the emitted event reaches its queue", BOUND, || async {
        let ready = message_count(&link, &status).await;
        if ready == 1 { Ok(()) } else { Err(format!("{ready} in {status}")) }
    })
    .await;
    // ...and, its confirm withheld, the input stays unacknowledged.
    for _ in 0..4 {
        assert_eq!(
            counts(&link, vhost, &ship).await,
            vec![0, 1],
            "[ready, unacked] of {ship} while the confirm is withheld"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    hold.send_replace(false);
    eventually("the input is acked once the confirm arrives", BOUND, || async {
        let now = counts(&link, vhost, &ship).await;
        if now == vec![0, 0] { Ok(()) } else { Err(format!("[ready, unacked] = {now:?}")) }
    })
    .await;
    stop().await;
    assert_eq!(message_count(&link, &dead_letter_queue(Function::ShipOrder)).await, 0);
    assert_eq!(message_count(&link, &status).await, 1, "published once");
}

#[tokio::test]
async fn the_runner_acks_an_input_only_after_the_confirm_of_what_it_caused() {
    let vhost = Vhost::new("faults-confirm");
    input_is_acked_only_after_the_confirm(&vhost, |url| async move {
        let step = Scripted::new(|input| Ok(vec![shipped_for(input)]));
        let runner = Runner::start(&url, vec![Function::ShipOrder], step, settings());
        let stop: Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send> =
            Box::new(move || Box::pin(runner.stop()));
        stop
    })
    .await;
}

#[tokio::test]
async fn the_bridge_acks_an_input_only_after_the_confirm_of_what_the_function_answered() {
    use axum::Router;
    use axum::body::Bytes;
    use axum::routing::post;
    use choreo::bridge::{BridgeConfig, DEFAULT_CALL_TIMEOUT, EventShape, InvokeTarget};

    // An Invoke API whose function ships whatever it is given.
    async fn invoke(body: Bytes) -> Vec<u8> {
        let input = Event::from_json(&body).expect("the payload is a CloudEvent");
        serde_json::to_vec(&[shipped_for(&input)]).expect("events serialize")
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    let router = Router::new().route("/2015-03-31/functions/{name}/invocations", post(invoke));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let vhost = Vhost::new("faults-bridge-confirm");
    input_is_acked_only_after_the_confirm(&vhost, |url| async move {
        let config = BridgeConfig {
            amqp_url: url,
            kafka: None,
            functions: vec![Function::ShipOrder],
            target: InvokeTarget::Lambda {
                endpoint: Some(endpoint),
                function_prefix: String::new(),
                event_shape: EventShape::CloudEvent,
            },
            settings: settings(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(choreo::bridge::run(config, stopped));
        let stop: Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send> = Box::new(move || {
            Box::pin(async move {
                let _ = stop.send(true);
                let finished = tokio::time::timeout(BOUND, task).await.expect("the bridge stops");
                finished.expect("no panic").expect("the bridge stops cleanly");
            })
        });
        stop
    })
    .await;
}

// ------------------------------------------------------------ problem 5

/// Restores the broker's memory watermark when dropped, also when the test
/// panics: other tests share this broker.
struct MemoryAlarm;

impl MemoryAlarm {
    /// Sets a watermark below what the broker uses, and waits for the alarm.
    async fn raise() -> Self {
        let alarm = Self;
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.0000001"]);
        eventually("the memory alarm", Duration::from_secs(20), || async {
            let alarms = rabbitmqctl(&["eval", "rabbit_alarm:get_alarms()."]);
            if alarms.contains("memory") { Ok(()) } else { Err(alarms) }
        })
        .await;
        alarm
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        if let Err(error) = try_rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]) {
            eprintln!(
                "could not restore the memory watermark (run `rabbitmqctl set_vm_memory_high_watermark 0.4`): {error}"
            );
        }
    }
}

/// Under a memory alarm the broker blocks every connection that publishes.
/// The runner's acks travel on a connection that never publishes, so the
/// messages it can finish (those that cause no event) are acked during the
/// alarm, and the rest complete once it clears.
#[tokio::test]
async fn broker_alarm_consumers_keep_acking_and_everything_completes_after_it_clears() {
    let vhost = Vhost::new("faults-alarm");
    let link = vhost.link("faults-test");
    let settings = DeliverySettings { retry_base: Duration::from_millis(50), ..DeliverySettings::default() };
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let ship = Function::ShipOrder.queue();
    // 20 inputs that cause an event (a publish), then 20 that cause none.
    let loud: Vec<Event> = (0..20).map(|_| inventory_reserved("SKU-1", 1)).collect();
    let quiet: Vec<Event> = (0..20).map(|_| inventory_reserved("SKU-2", 1)).collect();
    for event in loud.iter().chain(&quiet) {
        send(&link, &ship, event, FieldTable::default()).await;
    }
    let loud_ids: std::collections::BTreeSet<String> = loud.iter().map(|event| event.id.to_string()).collect();
    let step =
        Scripted::new(
            move |input| {
                if loud_ids.contains(&input.id.to_string()) { Ok(vec![shipped_for(input)]) } else { Ok(vec![]) }
            },
        );

    let alarm = MemoryAlarm::raise().await;
    let runner = Runner::start(&vhost.url, vec![Function::ShipOrder], Arc::clone(&step), settings.clone());
    // Kept short (other tests share the broker): the quiet ones must be acked
    // within a few seconds, while the loud ones wait for their confirms.
    let during = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let now = counts(&link, &vhost, &ship).await;
            if now == vec![0, 20] && step.handled() >= 40 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let last = counts(&link, &vhost, &ship).await;
    drop(alarm);
    let during = during.unwrap_or_else(|_| {
        panic!("during the alarm the 20 inputs that publish nothing were not all acked: [ready, unacked] = {last:?}, {} handled", step.handled())
    });
    assert_eq!(during, vec![0, 20], "the 20 that publish wait, unacked, for their confirms");

    eventually("every input acked after the alarm", BOUND, || async {
        let now = counts(&link, &vhost, &ship).await;
        if now == vec![0, 0] { Ok(()) } else { Err(format!("[ready, unacked] = {now:?}")) }
    })
    .await;
    runner.stop().await;
    assert!(message_count(&link, &Function::OrderStatus.queue()).await >= 20, "every loud input's event was published");
    assert_eq!(message_count(&link, &dead_letter_queue(Function::ShipOrder)).await, 0);
}

// ------------------------------------------------------------ outbound timeouts

/// An Invoke that never answers is cut short after the bridge's call
/// timeout: a retryable failure, retried, then dead-lettered with the
/// timeout as its error; it never holds its message (and, with it, the
/// consumer) forever.
#[tokio::test]
async fn a_hung_invocation_is_cut_short_retried_and_dead_lettered() {
    use axum::Router;
    use axum::routing::post;
    use choreo::bridge::{BridgeConfig, EventShape, InvokeTarget};

    async fn never() -> Vec<u8> {
        std::future::pending::<()>().await;
        Vec::new()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    let router = Router::new().route("/2015-03-31/functions/{name}/invocations", post(never));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let vhost = Vhost::new("faults-hung");
    let link = vhost.link("faults-test");
    let settings = DeliverySettings { max_retries: 1, ..settings() };
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let config = BridgeConfig {
        amqp_url: vhost.url.clone(),
        kafka: None,
        functions: vec![Function::ShipOrder],
        target: InvokeTarget::Lambda {
            endpoint: Some(endpoint),
            function_prefix: String::new(),
            event_shape: EventShape::CloudEvent,
        },
        settings,
        call_timeout: Duration::from_millis(500),
    };
    let (stop, stopped) = watch::channel(false);
    let bridge = tokio::spawn(choreo::bridge::run(config, stopped));
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;
    let event = inventory_reserved("SKU-1", 1);
    send(&link, &ship, &event, FieldTable::default()).await;

    let letters = wait_letters(&link, &dead_letter_queue(Function::ShipOrder), 1).await;
    assert_eq!(letters[0].id, event.id.to_string());
    assert!(
        letters[0].error.as_deref().is_some_and(|error| error.contains("no answer within")),
        "the dead letter says the call timed out: {:?}",
        letters[0]
    );
    assert_eq!(letters[0].attempt, Some(AMQPValue::LongLongInt(2)), "retried once first");
    let _ = stop.send(true);
    let finished = tokio::time::timeout(BOUND, bridge).await.expect("the bridge stops");
    finished.expect("no panic").expect("the bridge stops cleanly");
}
