//! The consumer runner shared by `choreo up --amqp` and `choreo bridge`:
//! consumes each function's queue, invokes its step, publishes what it
//! emitted, and settles each delivery (ack, retry queue or dead letter) only
//! after the broker confirmed what it published.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::ATTEMPT_HEADER;
use super::acks::{AckWindow, InHand};

/// The header a quorum queue sets on a message it delivers again: how many
/// times it was returned.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
use super::dead_letters::{park_dead_letter, with_bookkeeping};
use super::link::AmqpLink;
use super::migration::DeclareError;
use super::topology::{Topology, retry_queue};
use crate::bus::DeliverySettings;
use crate::bus::PublishError;
use crate::contract::choreography::Function;
use crate::contract::events::Event;
use crate::step::StepError;

/// How the runner invokes the step of a function for each event of its queue. Returns the
/// events the runner must publish on the function's behalf (those a bridged
/// Lambda returned); a host that publishes by itself returns none.
#[async_trait]
pub trait StepInvoker: Send + Sync + 'static {
    async fn handle(&self, function: Function, event: &Event) -> Result<Vec<Event>, StepError>;

    /// What the runner calls for each message: `event` is its decoded body,
    /// `delivery` the message as the broker delivered it and `attempt` the
    /// runner's count. Only an invoker that hands the whole message on (the
    /// bridge's AWS event shapes) needs more than [`StepInvoker::handle`].
    async fn handle_delivery(
        &self,
        function: Function,
        event: &Event,
        _delivery: &lapin::message::Delivery,
        attempt: u32,
    ) -> Result<Vec<Event>, StepError> {
        self.handle_attempt(function, event, attempt).await
    }

    /// [`StepInvoker::handle`] knowing which attempt this is (the runner's
    /// count, 1-based): what the Kafka runner calls, and RabbitMQ's by default.
    async fn handle_attempt(&self, function: Function, event: &Event, _attempt: u32) -> Result<Vec<Event>, StepError> {
        self.handle(function, event).await
    }
}

/// Consumes the queues of `functions` until `shutdown` turns true; reconnects
/// with backoff when the broker goes away. On shutdown it stops consuming,
/// finishes the messages in hand, acks them, and closes the connection.
pub async fn run_consumers(
    link: Arc<AmqpLink>,
    functions: Vec<Function>,
    invoker: Arc<dyn StepInvoker>,
    settings: DeliverySettings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), lapin::Error> {
    let topology = Topology::derive(&settings);
    let mut backoff = MIN_BACKOFF;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = tokio::time::Instant::now();
        let session = match link.declare(&topology).await {
            Ok(()) => {
                consume_session(&link, &functions, &invoker, &settings, &mut shutdown).await.map_err(DeclareError::from)
            }
            Err(error) => Err(error),
        };
        // A session that ran for a while was healthy: start the backoff over.
        // One that ends at once (a queue deleted again and again) backs off.
        if started.elapsed() >= HEALTHY_SESSION {
            backoff = MIN_BACKOFF;
        }
        match session {
            Ok(()) => break, // clean shutdown
            Err(error) => {
                // A mismatch needs an operator; keep trying, so that the
                // runner resumes by itself once the queues are migrated.
                match &error {
                    DeclareError::Mismatch { .. } => tracing::error!(%error, ?backoff, "cannot declare the topology"),
                    DeclareError::Amqp(_) => tracing::warn!(%error, ?backoff, "consuming stopped; starting over"),
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                // The runner may be stopped while the broker is away.
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    link.close().await;
    Ok(())
}

/// First and longest wait before a session starts over.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// How long cancelling one consumer may take (its channel may be gone).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause before a message that could not be settled is requeued.
const MAX_REQUEUE_PAUSE: Duration = Duration::from_secs(5);

/// One session of consuming: every queue on a channel of its own. `Ok` on
/// shutdown; `Err` as soon as any one consumer or channel ends (the broker
/// cancelled it because its queue was deleted or a node failed over, closed
/// its channel, or the connection was lost): the others are then cancelled
/// and drained too, and the caller starts a new session with backoff, so
/// that no queue is left unconsumed.
async fn consume_session(
    link: &Arc<AmqpLink>,
    functions: &[Function],
    invoker: &Arc<dyn StepInvoker>,
    settings: &DeliverySettings,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), lapin::Error> {
    let mut consumers = JoinSet::new();
    let mut channels = Vec::new();
    for &function in functions {
        let channel = link.channel().await?;
        channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await?;
        let tag = format!("{}-{}", function.name(), std::process::id());
        let consumer = channel
            .basic_consume(
                function.queue().as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channels.push((channel.clone(), tag));
        let (link, invoker, settings) = (Arc::clone(link), Arc::clone(invoker), settings.clone());
        consumers.spawn(consume_queue(link, function, consumer, invoker, settings));
    }
    tracing::info!(queues = functions.len(), "consuming");
    let stopping = async {
        // The guard `wait_for` returns must not live across an await.
        let _ = shutdown.wait_for(|stop| *stop).await.map(drop);
    };
    let outcome = tokio::select! {
        () = stopping => Ok(()),
        Some(result) = consumers.join_next() => {
            let error = match result {
                Ok(Err(error)) => error,
                // Cancelled by the broker, or the task failed.
                _ => lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed)),
            };
            tracing::warn!(%error, "a consumer ended; stopping the others to start over");
            Err(error)
        }
    };
    // Stop deliveries on every channel; each queue task then drains what it
    // holds (every call a step makes is bounded in time), so this ends.
    for (channel, tag) in &channels {
        if channel.status().connected() {
            let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, cancel).await;
        }
    }
    while consumers.join_next().await.is_some() {}
    for (channel, _) in channels {
        let _ = tokio::time::timeout(CANCEL_TIMEOUT, channel.close(200, "bye".into())).await;
    }
    outcome
}

/// Handles one queue's deliveries with bounded concurrency. Returns when the
/// consumer stream ends (cancelled on shutdown: `Ok`) or fails (`Err`).
async fn consume_queue(
    link: Arc<AmqpLink>,
    function: Function,
    mut consumer: lapin::Consumer,
    invoker: Arc<dyn StepInvoker>,
    settings: DeliverySettings,
) -> Result<(), lapin::Error> {
    let workers = Arc::new(Semaphore::new(settings.concurrency));
    let (acks, sending_acks) = AckWindow::start();
    let mut in_hand = JoinSet::new();
    let outcome = loop {
        let delivery = match consumer.next().await {
            None => break Ok(()),
            Some(Err(error)) => break Err(error),
            Some(Ok(delivery)) => delivery,
        };
        // Never closed: acquiring only waits for a free worker.
        let Ok(permit) = Arc::clone(&workers).acquire_owned().await else { break Ok(()) };
        let (link, invoker, settings) = (Arc::clone(&link), Arc::clone(&invoker), settings.clone());
        let settle = acks.receive(&delivery);
        // Boxed: the task then holds a pointer, not the whole state machine,
        // which tokio would otherwise copy in and out of every task (profiled).
        in_hand.spawn(Box::pin(async move {
            process(&link, function, &*invoker, &settings, delivery, settle).await;
            drop(permit);
        }));
        // Reap finished tasks so the set stays small.
        while in_hand.try_join_next().is_some() {}
    };
    while in_hand.join_next().await.is_some() {}
    // Every delivery is settled: the last acks go out before the channel closes.
    drop(acks);
    let _ = sending_acks.await;
    outcome
}

/// The order (`correlation_id`) and trace (`traceparent`) a message is
/// about, for the runner's own lines; read only when one is written.
fn about(delivery: &lapin::message::Delivery) -> (String, String) {
    let order_id = delivery.properties.correlation_id().as_ref().map(ToString::to_string).unwrap_or_default();
    let trace_id = header_text(delivery, "traceparent")
        .and_then(|traceparent| traceparent.get(3..35).map(str::to_owned))
        .unwrap_or_default();
    (order_id, trace_id)
}

pub(super) fn header_text(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    delivery.properties.headers().as_ref()?.inner().get(name)?.as_long_string().map(|text| text.to_string())
}

pub(super) fn header_int(delivery: &lapin::message::Delivery, name: &str) -> Option<i64> {
    let value = delivery.properties.headers().as_ref()?.inner().get(name)?.clone();
    match value {
        AMQPValue::LongLongInt(number) => Some(number),
        AMQPValue::LongInt(number) => Some(i64::from(number)),
        AMQPValue::ShortInt(number) => Some(i64::from(number)),
        AMQPValue::ShortShortInt(number) => Some(i64::from(number)),
        AMQPValue::LongUInt(number) => Some(i64::from(number)),
        AMQPValue::ShortUInt(number) => Some(i64::from(number)),
        AMQPValue::ShortShortUInt(number) => Some(i64::from(number)),
        _ => None,
    }
}

/// Handles one delivery and settles it: ack after success, or after a retry /
/// dead-letter copy is confirmed. If even that copy cannot be published the
/// message is left unacked: the broker redelivers it on another connection.
async fn process(
    link: &AmqpLink,
    function: Function,
    invoker: &dyn StepInvoker,
    settings: &DeliverySettings,
    delivery: lapin::message::Delivery,
    settle: InHand,
) {
    let attempt = attempt_of(&delivery, settings.max_retries);
    let outcome = match Event::from_json(&delivery.data) {
        Err(error) => Err(StepError::Permanent(format!("undecodable message: {error}"))),
        Ok(event) => match invoker.handle_delivery(function, &event, &delivery, attempt).await {
            Ok(emitted) if emitted.is_empty() => Ok(()),
            Ok(emitted) => link.publish_events(&emitted).await.map_err(|error| match error {
                PublishError::Unroutable { .. } => StepError::Permanent(error.to_string()),
                PublishError::Unavailable(_) => StepError::Retryable(error.to_string()),
            }),
            Err(error) => Err(error),
        },
    };
    let settled = match outcome {
        Ok(()) => Ok(()),
        Err(error) if error.is_retryable() && attempt <= settings.max_retries => {
            let (order_id, trace_id) = about(&delivery);
            tracing::warn!(step = %function, %order_id, %trace_id, attempt, %error, "retrying after {:?}", settings.retry_delay(attempt));
            let properties = with_bookkeeping(delivery.properties.clone(), attempt + 1, &error.to_string(), function);
            link.send_to_queue(&retry_queue(function, attempt), delivery.data.clone(), properties).await
        }
        Err(error) => {
            let (order_id, trace_id) = about(&delivery);
            tracing::error!(step = %function, %order_id, %trace_id, attempt, %error, "dead-lettered");
            let properties = delivery.properties.clone();
            park_dead_letter(link, function, delivery.data.clone(), properties, attempt, &error.to_string()).await
        }
    };
    match settled {
        Ok(()) => settle.ack(),
        Err(error) => {
            // Not at once: the cause (a broker under an alarm, a queue being
            // migrated) needs time, and the message would come straight back.
            // The work queue's delivery limit dead-letters it after
            // `max_retries` such returns, so this cannot go on forever.
            let returns = header_int(&delivery, DELIVERY_COUNT_HEADER).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
            let pause = settings.retry_delay(returns.saturating_add(1)).min(MAX_REQUEUE_PAUSE);
            let (order_id, trace_id) = about(&delivery);
            tracing::warn!(%error, step = %function, %order_id, %trace_id, ?pause, returns, "could not settle a message; returning it to the queue");
            tokio::time::sleep(pause).await;
            let _ = settle.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        }
    }
}

/// The attempt a delivery stands for, from its `x-choreo-attempt` header,
/// always within `1..=max_retries + 1`: the header may come from anyone who
/// can publish (an old runner, a hand-made message). Missing or unreadable
/// means a first attempt; zero or negative is a first attempt too (there is
/// no `retry.0`); beyond the last retry means the retries are spent.
pub(super) fn attempt_of(delivery: &lapin::message::Delivery, max_retries: u32) -> u32 {
    let last = i64::from(max_retries).saturating_add(1);
    let header = header_int(delivery, ATTEMPT_HEADER)
        .or_else(|| header_text(delivery, ATTEMPT_HEADER).and_then(|text| text.trim().parse::<i64>().ok()));
    // Only `max_retries == u32::MAX` puts `last` beyond a u32.
    u32::try_from(header.unwrap_or(1).clamp(1, last)).unwrap_or(u32::MAX)
}
