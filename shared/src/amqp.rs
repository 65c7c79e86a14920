//! RabbitMQ on lapin: the topology derived from the choreography table, a
//! confirming publisher, and the consumer runner shared by `choreo up --amqp`
//! and `choreo bridge`.
//!
//! Topology (all durable):
//! - `choreo.events` (topic): every event, routing key = event type.
//! - per consuming function F: work queue `choreo.F` bound to the types F
//!   consumes; retry queues `choreo.F.retry.N` (TTL `retry_base · 2^(N-1)`,
//!   dead-lettering back to `choreo.F` through the default exchange); and the
//!   dead-letter queue `choreo.F.dead`.
//! - `choreo.saga-ended`: bound to the terminal events, capped in length, so
//!   every publish is routable and `mandatory` never has an exception.
//!
//! A consumer acks an input only after the events it caused are confirmed,
//! and after a retry or dead-letter copy of it is confirmed: nothing is lost
//! between the two, and a crash in between means a redelivery, which the
//! steps' idempotency absorbs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use crate::bus::{Handover, OutboxRef, PublishError, Publisher};
use crate::choreography::{EXCHANGE, Function, TERMINAL_EVENTS};
use crate::events::Event;
use crate::step::StepError;

/// Queue that collects the events ending a saga (capped; nothing consumes it by default).
pub const SAGA_ENDED_QUEUE: &str = "choreo.saga-ended";
/// Most recent saga-ending events kept in `choreo.saga-ended`.
pub const SAGA_ENDED_MAX_LENGTH: i32 = 100_000;
/// Content type of every message (CloudEvents structured mode).
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Headers this module writes and reads.
pub const ATTEMPT_HEADER: &str = "x-choreo-attempt";
pub const ERROR_HEADER: &str = "x-choreo-error";
pub const FUNCTION_HEADER: &str = "x-choreo-function";

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish may wait for the broker's confirms.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How a function's queue is consumed and retried.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// Unacknowledged messages the broker sends ahead (`basic.qos`).
    pub prefetch: u16,
    /// Messages handled at once per queue.
    pub concurrency: usize,
    /// Retries of a `Retryable` failure before dead-lettering.
    pub max_retries: u32,
    /// Delay before the first retry; doubles each time.
    pub retry_base: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self { prefetch: 64, concurrency: 32, max_retries: 5, retry_base: Duration::from_secs(1) }
    }
}

impl QueueSettings {
    pub fn retry_delay(&self, retry: u32) -> Duration {
        self.retry_base * 2u32.saturating_pow(retry.saturating_sub(1))
    }
}

pub fn retry_queue(function: Function, retry: u32) -> String {
    format!("{}.retry.{retry}", function.queue())
}

pub fn dead_letter_queue(function: Function) -> String {
    format!("{}.dead", function.queue())
}

/// Everything to declare, derived from the choreography table. Used both to
/// declare the topology and to export `infra/rabbitmq/definitions.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub queues: Vec<QueueSpec>,
    pub bindings: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    /// `x-` arguments: integers or strings.
    pub arguments: Vec<(&'static str, ArgValue)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    Int(i64),
    Text(String),
}

impl Topology {
    pub fn derive(settings: &QueueSettings) -> Self {
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for function in Function::consumers() {
            queues.push(QueueSpec { name: function.queue(), arguments: vec![] });
            for event in function.spec().consumes {
                bindings.push((function.queue(), event.as_str().to_owned()));
            }
            for retry in 1..=settings.max_retries {
                let ttl = i64::try_from(settings.retry_delay(retry).as_millis()).unwrap_or(i64::MAX);
                queues.push(QueueSpec {
                    name: retry_queue(function, retry),
                    arguments: vec![
                        ("x-message-ttl", ArgValue::Int(ttl)),
                        ("x-dead-letter-exchange", ArgValue::Text(String::new())),
                        ("x-dead-letter-routing-key", ArgValue::Text(function.queue())),
                    ],
                });
            }
            queues.push(QueueSpec { name: dead_letter_queue(function), arguments: vec![] });
        }
        queues.push(QueueSpec {
            name: SAGA_ENDED_QUEUE.to_owned(),
            arguments: vec![
                ("x-max-length", ArgValue::Int(i64::from(SAGA_ENDED_MAX_LENGTH))),
                ("x-overflow", ArgValue::Text("drop-head".into())),
            ],
        });
        for event in TERMINAL_EVENTS {
            bindings.push((SAGA_ENDED_QUEUE.to_owned(), event.as_str().to_owned()));
        }
        Self { queues, bindings }
    }

    /// The RabbitMQ management plugin's definitions format (importable with
    /// `rabbitmqadmin import` or `load_definitions`).
    pub fn definitions_json(&self, vhost: &str) -> serde_json::Value {
        let arguments = |spec: &QueueSpec| {
            let map: serde_json::Map<String, serde_json::Value> = spec
                .arguments
                .iter()
                .map(|(key, value)| {
                    let value = match value {
                        ArgValue::Int(number) => serde_json::json!(number),
                        ArgValue::Text(text) => serde_json::json!(text),
                    };
                    ((*key).to_owned(), value)
                })
                .collect();
            serde_json::Value::Object(map)
        };
        serde_json::json!({
            "exchanges": [{
                "name": EXCHANGE, "vhost": vhost, "type": "topic", "durable": true,
                "auto_delete": false, "internal": false, "arguments": {}
            }],
            "queues": self.queues.iter().map(|spec| serde_json::json!({
                "name": spec.name, "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": arguments(spec)
            })).collect::<Vec<_>>(),
            "bindings": self.bindings.iter().map(|(queue, key)| serde_json::json!({
                "source": EXCHANGE, "vhost": vhost, "destination": queue, "destination_type": "queue",
                "routing_key": key, "arguments": {}
            })).collect::<Vec<_>>(),
        })
    }

    async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
        for spec in &self.queues {
            let mut arguments = FieldTable::default();
            for (key, value) in &spec.arguments {
                let value = match value {
                    ArgValue::Int(number) => AMQPValue::LongLongInt(*number),
                    ArgValue::Text(text) => AMQPValue::LongString(text.as_str().into()),
                };
                arguments.insert((*key).into(), value);
            }
            channel.queue_declare(spec.name.as_str().into(), QueueDeclareOptions::durable(), arguments).await?;
        }
        for (queue, key) in &self.bindings {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    EXCHANGE.into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// AMQP properties of an event message (DESIGN §4).
fn properties(event: &Event) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(event.traceparent.as_str().into()));
    BasicProperties::default()
        .with_message_id(event.id.to_string().into())
        .with_correlation_id(event.subject.to_string().into())
        .with_content_type(CONTENT_TYPE.into())
        .with_type(event.event_type().as_str().into())
        .with_timestamp(u64::try_from(event.time.timestamp()).unwrap_or(0))
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn unavailable(error: lapin::Error) -> PublishError {
    PublishError::Unavailable(error.to_string())
}

/// One AMQP connection for the whole process, reopened after it is lost, and
/// one confirming channel for publishing.
pub struct AmqpLink {
    url: BrokerUrl,
    name: String,
    session: Mutex<Option<Arc<Session>>>,
}

/// Where the broker URL comes from.
enum BrokerUrl {
    Plain(String),
    /// A Secrets Manager secret whose value is the URL (deployed functions:
    /// credentials never sit in plain environment variables). Read at the
    /// first connection, then cached for the container's life.
    Secret {
        arn: String,
        resolved: tokio::sync::OnceCell<String>,
    },
}

impl BrokerUrl {
    async fn get(&self) -> Result<&str, lapin::Error> {
        match self {
            Self::Plain(url) => Ok(url),
            Self::Secret { arn, resolved } => {
                resolved.get_or_try_init(|| read_secret(arn)).await.map(String::as_str).map_err(|error| {
                    tracing::error!(%arn, %error, "cannot read the AMQP URL secret");
                    lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Error))
                })
            }
        }
    }
}

async fn read_secret(arn: &str) -> Result<String, String> {
    let config = crate::config::aws_sdk_config().await;
    let secret = aws_sdk_secretsmanager::Client::new(&config)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())?;
    secret.secret_string().map(str::trim).map(str::to_owned).ok_or_else(|| "the secret has no string value".into())
}

struct Session {
    connection: Connection,
    publisher: Channel,
}

impl AmqpLink {
    /// Nothing is opened until first use, so a Lambda init makes no network call.
    pub fn new(url: &str, name: &str) -> Arc<Self> {
        Arc::new(Self { url: BrokerUrl::Plain(url.to_owned()), name: name.to_owned(), session: Mutex::new(None) })
    }

    /// The link named by the environment: `AMQP_URL`, or else the secret
    /// `AMQP_SECRET_ARN` holds the URL. `None` when neither is set.
    pub fn from_env(name: &str) -> Option<Arc<Self>> {
        let var = |key: &str| std::env::var(key).ok().filter(|value| !value.is_empty());
        let url = match (var("AMQP_URL"), var("AMQP_SECRET_ARN")) {
            (Some(url), _) => BrokerUrl::Plain(url),
            (None, Some(arn)) => BrokerUrl::Secret { arn, resolved: tokio::sync::OnceCell::new() },
            (None, None) => return None,
        };
        Some(Arc::new(Self { url, name: name.to_owned(), session: Mutex::new(None) }))
    }

    async fn session(&self) -> Result<Arc<Session>, lapin::Error> {
        let mut guard = self.session.lock().await;
        if let Some(session) = guard.as_ref()
            && session.connection.status().connected()
            && session.publisher.status().connected()
        {
            return Ok(Arc::clone(session));
        }
        let properties = ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        // Bounded: a broker that drops packets must not hold every publisher
        // (and so every POST) for the TCP connect timeout.
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(self.url.get().await?, properties))
            .await
            .map_err(|_| {
                lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(std::io::ErrorKind::TimedOut.into())))
            })??;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        let session = Arc::new(Session { connection, publisher });
        *guard = Some(Arc::clone(&session));
        Ok(session)
    }

    /// A new channel on the shared connection (consumers, admin work).
    pub async fn channel(&self) -> Result<Channel, lapin::Error> {
        self.session().await?.connection.create_channel().await
    }

    /// Declares the whole topology.
    pub async fn declare(&self, topology: &Topology) -> Result<(), lapin::Error> {
        let channel = self.channel().await?;
        topology.declare(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Closes the connection (on shutdown).
    pub async fn close(&self) {
        if let Some(session) = self.session.lock().await.take() {
            let _ = session.publisher.close(200, "bye".into()).await;
            let _ = session.connection.close(200, "bye".into()).await;
        }
    }

    pub async fn is_connected(&self) -> bool {
        self.session.lock().await.as_ref().is_some_and(|session| session.connection.status().connected())
    }

    /// Publishes raw messages with `mandatory` and waits for all confirms
    /// together, within `PUBLISH_TIMEOUT`: a broker that vanishes mid-publish
    /// must not leave a caller (a consumer, the relay, a POST) waiting forever.
    async fn publish_all(&self, messages: Vec<(String, String, Vec<u8>, BasicProperties)>) -> Result<(), PublishError> {
        tokio::time::timeout(PUBLISH_TIMEOUT, self.publish_confirmed(messages))
            .await
            .map_err(|_| PublishError::Unavailable(format!("no publisher confirm within {PUBLISH_TIMEOUT:?}")))?
    }

    async fn publish_confirmed(
        &self,
        messages: Vec<(String, String, Vec<u8>, BasicProperties)>,
    ) -> Result<(), PublishError> {
        let session = self.session().await.map_err(unavailable)?;
        let mut confirms = Vec::with_capacity(messages.len());
        let mut identities = Vec::with_capacity(messages.len());
        for (exchange, routing_key, body, properties) in messages {
            let id = properties.message_id().as_ref().map(ShortString::to_string).unwrap_or_default();
            let confirm = session
                .publisher
                .basic_publish(
                    exchange.into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    properties,
                )
                .await
                .map_err(unavailable)?;
            identities.push((routing_key, id));
            confirms.push(confirm);
        }
        // All confirms awaited together: one round trip for the whole batch.
        let outcomes = try_join_all(confirms).await.map_err(unavailable)?;
        for (outcome, (routing_key, id)) in outcomes.into_iter().zip(identities) {
            match outcome {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_returned)) => {
                    return Err(PublishError::Unroutable { event_type: routing_key, event_id: id });
                }
                Confirmation::Nack(_) => {
                    return Err(PublishError::Unavailable(format!("the broker refused message {id} (nack)")));
                }
                Confirmation::NotRequested => {
                    return Err(PublishError::Unavailable("publisher confirms are off on this channel".into()));
                }
            }
        }
        Ok(())
    }

    /// Publishes events to the topic exchange.
    pub async fn publish_events(&self, events: &[Event]) -> Result<(), PublishError> {
        let messages = events
            .iter()
            .map(|event| {
                (EXCHANGE.to_owned(), event.event_type().as_str().to_owned(), event.to_json(), properties(event))
            })
            .collect();
        self.publish_all(messages).await
    }

    /// Sends a message straight to one queue (through the default exchange).
    async fn send_to_queue(&self, queue: &str, body: Vec<u8>, properties: BasicProperties) -> Result<(), PublishError> {
        self.publish_all(vec![(String::new(), queue.to_owned(), body, properties)]).await
    }
}

#[async_trait]
impl Publisher for AmqpLink {
    async fn publish(&self, _origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError> {
        self.publish_events(events).await?;
        Ok(Handover::Confirmed)
    }
}

/// What a consumer does with each event of a function's queue. Returns the
/// events the runner must publish on the function's behalf (those a bridged
/// Lambda returned); a host that publishes by itself returns none.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, function: Function, event: &Event) -> Result<Vec<Event>, StepError>;
}

/// Consumes the queues of `functions` until `shutdown` turns true; reconnects
/// with backoff when the broker goes away. On shutdown it stops consuming,
/// finishes the messages in hand, acks them, and closes the connection.
pub async fn run_consumers(
    link: Arc<AmqpLink>,
    functions: Vec<Function>,
    handler: Arc<dyn Handler>,
    settings: QueueSettings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), lapin::Error> {
    let topology = Topology::derive(&settings);
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let session = match link.declare(&topology).await {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                consume_session(&link, &functions, &handler, &settings, &mut shutdown).await
            }
            Err(error) => Err(error),
        };
        match session {
            Ok(()) => break, // clean shutdown
            Err(error) => {
                tracing::warn!(%error, ?backoff, "broker connection lost; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                // The runner may be stopped while the broker is away.
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    link.close().await;
    Ok(())
}

/// One connection's worth of consuming. `Ok` on shutdown, `Err` on broker loss.
async fn consume_session(
    link: &Arc<AmqpLink>,
    functions: &[Function],
    handler: &Arc<dyn Handler>,
    settings: &QueueSettings,
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
        let (link, handler, settings) = (Arc::clone(link), Arc::clone(handler), settings.clone());
        consumers.spawn(consume_queue(link, function, consumer, handler, settings));
    }
    tracing::info!(queues = functions.len(), "consuming");
    let stopping = async {
        // The guard `wait_for` returns must not live across an await.
        let _ = shutdown.wait_for(|stop| *stop).await.map(drop);
    };
    let outcome = tokio::select! {
        () = stopping => {
            // Stop deliveries; each queue task then drains what it holds.
            for (channel, tag) in &channels {
                let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
            }
            Ok(())
        }
        Some(result) = consumers.join_next() => match result {
            Ok(Err(error)) => Err(error),
            _ => Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed))),
        },
    };
    // Wait for in-hand messages (on shutdown) or for the other queue tasks to
    // notice the broken connection.
    while consumers.join_next().await.is_some() {}
    for (channel, _) in channels {
        let _ = channel.close(200, "bye".into()).await;
    }
    outcome
}

/// Handles one queue's deliveries with bounded concurrency. Returns when the
/// consumer stream ends (cancelled on shutdown: `Ok`) or fails (`Err`).
async fn consume_queue(
    link: Arc<AmqpLink>,
    function: Function,
    mut consumer: lapin::Consumer,
    handler: Arc<dyn Handler>,
    settings: QueueSettings,
) -> Result<(), lapin::Error> {
    let workers = Arc::new(Semaphore::new(settings.concurrency));
    let mut in_hand = JoinSet::new();
    let outcome = loop {
        let delivery = match consumer.next().await {
            None => break Ok(()),
            Some(Err(error)) => break Err(error),
            Some(Ok(delivery)) => delivery,
        };
        // Never closed: acquiring only waits for a free worker.
        let Ok(permit) = Arc::clone(&workers).acquire_owned().await else { break Ok(()) };
        let (link, handler, settings) = (Arc::clone(&link), Arc::clone(&handler), settings.clone());
        in_hand.spawn(async move {
            process(&link, function, &*handler, &settings, delivery).await;
            drop(permit);
        });
        // Reap finished tasks so the set stays small.
        while in_hand.try_join_next().is_some() {}
    };
    while in_hand.join_next().await.is_some() {}
    outcome
}

fn header_text(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    delivery.properties.headers().as_ref()?.inner().get(name)?.as_long_string().map(|text| text.to_string())
}

fn header_int(delivery: &lapin::message::Delivery, name: &str) -> Option<i64> {
    let value = delivery.properties.headers().as_ref()?.inner().get(name)?.clone();
    match value {
        AMQPValue::LongLongInt(number) => Some(number),
        AMQPValue::LongInt(number) => Some(i64::from(number)),
        AMQPValue::ShortInt(number) => Some(i64::from(number)),
        _ => None,
    }
}

/// Handles one delivery and settles it: ack after success, or after a retry /
/// dead-letter copy is confirmed. If even that copy cannot be published the
/// message is left unacked: the broker redelivers it on another connection.
async fn process(
    link: &AmqpLink,
    function: Function,
    handler: &dyn Handler,
    settings: &QueueSettings,
    delivery: lapin::message::Delivery,
) {
    let attempt = header_int(&delivery, ATTEMPT_HEADER).and_then(|n| u32::try_from(n).ok()).unwrap_or(1);
    let outcome = match Event::from_json(&delivery.data) {
        Err(error) => Err(StepError::Permanent(format!("undecodable message: {error}"))),
        Ok(event) => match handler.handle(function, &event).await {
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
            tracing::warn!(step = %function, attempt, %error, "retrying after {:?}", settings.retry_delay(attempt));
            let properties = with_headers(&delivery, attempt + 1, &error.to_string(), function);
            link.send_to_queue(&retry_queue(function, attempt), delivery.data.clone(), properties).await
        }
        Err(error) => {
            tracing::error!(step = %function, attempt, %error, "dead-lettered");
            let properties = with_headers(&delivery, attempt, &error.to_string(), function);
            link.send_to_queue(&dead_letter_queue(function), delivery.data.clone(), properties).await
        }
    };
    match settled {
        Ok(()) => {
            if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                tracing::warn!(%error, step = %function, "ack failed; the broker will redeliver (idempotent)");
            }
        }
        Err(error) => {
            tracing::warn!(%error, step = %function, "could not settle a message; returning it to the queue");
            let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        }
    }
}

/// The delivery's properties plus the retry bookkeeping headers.
fn with_headers(delivery: &lapin::message::Delivery, attempt: u32, error: &str, function: Function) -> BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempt)));
    headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(error.into()));
    headers.insert(FUNCTION_HEADER.into(), AMQPValue::LongString(function.name().into()));
    delivery.properties.clone().with_headers(headers).with_delivery_mode(2)
}

/// A message parked in a dead-letter queue.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadMessage {
    pub function: String,
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub order_id: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    pub body: String,
}

/// Reads (without removing) up to `limit` dead letters of each function.
pub async fn list_dead_letters(link: &AmqpLink, limit: usize) -> Result<Vec<DeadMessage>, lapin::Error> {
    let mut letters = Vec::new();
    for function in Function::consumers() {
        // Unacked gets return to the queue when this channel closes.
        let channel = link.channel().await?;
        for _ in 0..limit {
            let Some(message) =
                channel.basic_get(dead_letter_queue(function).as_str().into(), BasicGetOptions::default()).await?
            else {
                break;
            };
            letters.push(dead_message(function, &message.delivery));
        }
        let _ = channel.close(200, "listed".into()).await;
    }
    Ok(letters)
}

fn dead_message(function: Function, delivery: &lapin::message::Delivery) -> DeadMessage {
    DeadMessage {
        function: function.name().to_owned(),
        message_id: delivery.properties.message_id().as_ref().map(ShortString::to_string),
        event_type: delivery.properties.kind().as_ref().map(ShortString::to_string),
        order_id: delivery.properties.correlation_id().as_ref().map(ShortString::to_string),
        error: header_text(delivery, ERROR_HEADER),
        attempts: header_int(delivery, ATTEMPT_HEADER),
        body: String::from_utf8_lossy(&delivery.data).into_owned(),
    }
}

/// Sends dead letters back to their function's work queue (fresh attempt
/// count), optionally only the one with `message_id`. Answers how many.
pub async fn replay_dead_letters(
    link: &AmqpLink,
    function: Option<Function>,
    message_id: Option<&str>,
) -> Result<usize, ReplayError> {
    let mut replayed = 0;
    let functions: Vec<Function> = match function {
        Some(function) => vec![function],
        None => Function::consumers().collect(),
    };
    for function in functions {
        let queue = dead_letter_queue(function);
        let channel = link.channel().await?;
        // Only the letters there now: one that fails again while the consumers
        // run comes back to this queue behind them, and is not replayed twice.
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let present =
            channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await?.message_count();
        let mut kept = Vec::new();
        for _ in 0..present {
            let Some(message) = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await? else {
                break;
            };
            let delivery = message.delivery;
            let id = delivery.properties.message_id().as_ref().map(ShortString::to_string);
            if message_id.is_some_and(|wanted| id.as_deref() != Some(wanted)) {
                kept.push(delivery);
                continue;
            }
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(1));
            let properties = delivery.properties.clone().with_headers(headers);
            link.send_to_queue(&function.queue(), delivery.data.clone(), properties).await?;
            delivery.ack(BasicAckOptions::default()).await?;
            replayed += 1;
        }
        for delivery in kept {
            delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
        }
        let _ = channel.close(200, "replayed".into()).await;
    }
    Ok(replayed)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_binds_every_consumed_type_and_every_terminal_event() {
        let topology = Topology::derive(&QueueSettings::default());
        for function in Function::consumers() {
            for event in function.spec().consumes {
                assert!(topology.bindings.contains(&(function.queue(), event.as_str().to_owned())));
            }
            assert!(topology.queues.iter().any(|queue| queue.name == dead_letter_queue(function)));
            assert!(topology.queues.iter().any(|queue| queue.name == retry_queue(function, 5)));
            assert!(!topology.queues.iter().any(|queue| queue.name == retry_queue(function, 6)));
        }
        let terminal = topology.bindings.iter().filter(|(queue, _)| queue == SAGA_ENDED_QUEUE).count();
        assert_eq!(terminal, TERMINAL_EVENTS.len());
    }

    #[test]
    fn retry_delays_double() {
        let settings = QueueSettings::default();
        assert_eq!(settings.retry_delay(1), Duration::from_secs(1));
        assert_eq!(settings.retry_delay(3), Duration::from_secs(4));
        let topology = Topology::derive(&settings);
        let third = topology.queues.iter().find(|queue| queue.name == retry_queue(Function::ShipOrder, 3)).unwrap();
        assert!(third.arguments.contains(&("x-message-ttl", ArgValue::Int(4000))));
    }
}
