//! Two AMQP connections per process, each reopened after it is lost: one for
//! consuming (and declaring, reading), one with a confirming channel for
//! publishing, where every publish is `mandatory` and waits for the broker's
//! confirm. Under a memory or disk alarm RabbitMQ blocks the connections that
//! publish; were acks on the same connection, they could not flow, consumers
//! could not free the memory, and the alarm would never clear.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::CONTENT_TYPE;
use super::broker_url::BrokerUrl;
use super::migration::DeclareError;
use super::tls::{self, Trust};
use super::topology::Topology;
use crate::bus::{Handover, OutboxRef, PublishError, Publisher};
use crate::contract::choreography::EXCHANGE;
use crate::contract::events::Event;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish may wait for the broker's confirms.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// AMQP properties of an event message (ARCHITECTURE.md §5).
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

/// The process's consuming connection and its publishing connection (with
/// one confirming channel), each reopened after it is lost.
pub struct AmqpLink {
    /// Where the broker URL comes from.
    url: BrokerUrl,
    /// The connection name the broker shows.
    name: String,
    /// Roots for `amqps://` (`AMQP_CA_FILE` is read when the link is made).
    trust: Trust,
    /// The open publishing connection and its channel, if any.
    session: Mutex<Option<Arc<Session>>>,
    /// The open consuming connection, if any (consumers, acks, declares, gets).
    consuming: Mutex<Option<Arc<Connection>>>,
}

struct Session {
    /// The connection that only publishes (the one an alarm blocks).
    connection: Connection,
    /// The confirming channel events are published on.
    publisher: Channel,
}

/// The name the broker shows for the publishing connection of a link named `name`.
fn publishing_name(name: &str) -> String {
    format!("{name} (publish)")
}

impl AmqpLink {
    /// Nothing is opened until first use, so a Lambda init makes no network call.
    pub fn new(url: &str, name: &str) -> Arc<Self> {
        Arc::new(Self {
            url: BrokerUrl::Plain(url.to_owned()),
            name: name.to_owned(),
            trust: Trust::from_env(),
            session: Mutex::new(None),
            consuming: Mutex::new(None),
        })
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
        Some(Arc::new(Self {
            url,
            name: name.to_owned(),
            trust: Trust::from_env(),
            session: Mutex::new(None),
            consuming: Mutex::new(None),
        }))
    }

    async fn session(&self) -> Result<Arc<Session>, lapin::Error> {
        let mut guard = self.session.lock().await;
        if let Some(session) = guard.as_ref()
            && session.connection.status().connected()
            && session.publisher.status().connected()
        {
            return Ok(Arc::clone(session));
        }
        let connection = self.connect(&publishing_name(&self.name)).await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        let session = Arc::new(Session { connection, publisher });
        *guard = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Opens a connection named `name`: every connection of the link goes
    /// through here (TLS, trust, timeout).
    async fn connect(&self, name: &str) -> Result<Connection, lapin::Error> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        tls::connect(self.url.get().await?, properties, &self.trust, CONNECT_TIMEOUT).await
    }

    /// A connection of its own, opened as the link opens its shared ones (TLS,
    /// trust, timeout): for callers that must not share it (`choreo bench --raw`).
    pub async fn dedicated_connection(&self) -> Result<Connection, lapin::Error> {
        self.connect(&self.name).await
    }

    /// The consuming connection, opened or reopened as needed.
    async fn consuming(&self) -> Result<Arc<Connection>, lapin::Error> {
        let mut guard = self.consuming.lock().await;
        if let Some(connection) = guard.as_ref()
            && connection.status().connected()
        {
            return Ok(Arc::clone(connection));
        }
        let connection = Arc::new(self.connect(&self.name).await?);
        *guard = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// A new channel on the consuming connection (consumers, admin work),
    /// never on the publishing one, which an alarm may block.
    pub async fn channel(&self) -> Result<Channel, lapin::Error> {
        self.consuming().await?.create_channel().await
    }

    /// Declares the whole topology; a queue that exists with other
    /// arguments is a [`DeclareError::Mismatch`] that says how to migrate.
    pub async fn declare(&self, topology: &Topology) -> Result<(), DeclareError> {
        topology.declare(self, &self.vhost().await?).await
    }

    /// The virtual host the URL names (`/` when it names none).
    pub async fn vhost(&self) -> Result<String, lapin::Error> {
        let url = self.url.get().await?;
        Ok(url.parse::<lapin::uri::AMQPUri>().map_or_else(|_| "/".to_owned(), |uri| uri.vhost))
    }

    /// Closes both connections (on shutdown).
    pub async fn close(&self) {
        if let Some(session) = self.session.lock().await.take() {
            let _ = session.publisher.close(200, "bye".into()).await;
            let _ = session.connection.close(200, "bye".into()).await;
        }
        if let Some(connection) = self.consuming.lock().await.take() {
            let _ = connection.close(200, "bye".into()).await;
        }
    }

    /// Whether either connection is open.
    pub async fn is_connected(&self) -> bool {
        let publishing =
            self.session.lock().await.as_ref().is_some_and(|session| session.connection.status().connected());
        publishing || self.consuming.lock().await.as_ref().is_some_and(|connection| connection.status().connected())
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
    pub(super) async fn send_to_queue(
        &self,
        queue: &str,
        body: Vec<u8>,
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
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
