//! The process's Kafka clients: one idempotent producer (`acks=all`) shared
//! by every publish, made at first use so that a Lambda init makes no
//! network call; consumers and the admin client made on demand from the
//! same settings.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::OnceCell;

use super::settings::{KafkaSecurity, KafkaSettings};
use super::topology::{KafkaTopology, event_topic};
use super::{CONTENT_TYPE_HEADER, TRACEPARENT_HEADER};
use crate::bus::amqp::CONTENT_TYPE;
use crate::bus::{DeliverySettings, Handover, OutboxRef, PublishError, Publisher};
use crate::config::ConfigError;
use crate::contract::events::Event;

/// How long a produce may take before it fails as unavailable (as long as
/// an AMQP publish waits for its confirm): the step is then retried.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a consumer's poll interval allows beyond its workers' longest wait.
/// Measured against tansu: killed mid-load and restarted, a group came back at
/// once with 20 s in all (5 s + 15 s) and stayed stuck past a minute with 25 s or
/// librdkafka's 300 s default.
const MAX_POLL_SLACK: Duration = Duration::from_secs(15);

/// The producer, and what consumers and the admin client are made from.
pub struct KafkaLink {
    settings: KafkaSettings,
    client_id: String,
    producer: OnceCell<FutureProducer>,
}

impl KafkaLink {
    /// Nothing is opened until first use.
    pub fn new(settings: KafkaSettings, client_id: &str) -> Arc<Self> {
        Arc::new(Self { settings, client_id: client_id.to_owned(), producer: OnceCell::new() })
    }

    /// The link `KAFKA_BOOTSTRAP_SERVERS` (and the other `KAFKA_*` variables) name; `None` when unset.
    pub fn from_env(client_id: &str) -> Result<Option<Arc<Self>>, ConfigError> {
        Ok(KafkaSettings::from_env(None)?.map(|settings| Self::new(settings, client_id)))
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// The settings every client starts from (credentials read at first use).
    pub(super) async fn client_config(&self) -> Result<rdkafka::ClientConfig, String> {
        self.settings.client_config(&self.client_id).await
    }

    async fn producer(&self) -> Result<&FutureProducer, PublishError> {
        self.producer
            .get_or_try_init(|| async {
                let mut config = self.settings.client_config(&self.client_id).await?;
                config
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    // A step's few events leave together; waiting longer only adds latency.
                    .set("linger.ms", "1")
                    .set("message.timeout.ms", PRODUCE_TIMEOUT.as_millis().to_string());
                config.create::<FutureProducer>().map_err(|error| error.to_string())
            })
            .await
            .map_err(PublishError::Unavailable)
    }

    /// A consumer of `group` with offsets stored by hand (after a record is
    /// settled) and committed by librdkafka in the background and on close.
    /// `longest_wait` is the longest a worker may hold its partition's intake
    /// back (a retry record waiting for its due time).
    pub(super) async fn consumer(&self, group: &str, longest_wait: Duration) -> Result<StreamConsumer, String> {
        let mut config = self.settings.client_config(&self.client_id).await?;
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the beginning: the topics are choreo's own,
            // so nothing in them predates the saga they belong to.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", self.settings.fetch_wait_ms.to_string())
            // A member that is gone (a process killed) is dropped from its group
            // after this long without a heartbeat; a rebalance waits at most
            // `max.poll.interval.ms` for the members it knows of (tansu holds a
            // group until then when one of them died during a rebalance): kept
            // short, but longer than a worker may hold the intake back.
            .set("session.timeout.ms", "10000")
            .set("max.poll.interval.ms", (longest_wait + MAX_POLL_SLACK).as_millis().to_string())
            .set("heartbeat.interval.ms", "1000");
        config.create::<StreamConsumer>().map_err(|error| error.to_string())
    }

    /// Creates the topics of `delivery`'s retry policy that are missing. A
    /// failure names what the cluster last said (a TLS or SASL refusal is
    /// otherwise only a timeout).
    pub async fn create_topics(&self, delivery: &DeliverySettings) -> Result<(), String> {
        let config = self.settings.client_config(&self.client_id).await?;
        let admin: AdminClient<DefaultClientContext> = config.create().map_err(|error| error.to_string())?;
        let created = KafkaTopology::derive(&self.settings, delivery).create(&admin).await;
        // librdkafka reports a refused TLS handshake or SASL login only as a
        // timeout here: say what to check.
        created.map_err(|error| match &self.settings.security {
            KafkaSecurity::Plaintext => format!("{error} (is the cluster reachable, and does it take plaintext?)"),
            KafkaSecurity::Tls { .. } => format!("{error} (is the cluster reachable, and do the TLS roots — KAFKA_CA_FILE or the system's — trust its certificate?)"),
            KafkaSecurity::Sasl { .. } => format!("{error} (is the cluster reachable, do the TLS roots trust it, and are the SASL mechanism and credentials right?)"),
        })
    }

    /// Produces one record and waits until every in-sync replica has it.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), PublishError> {
        let producer = self.producer().await?;
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        match producer.send(record, PRODUCE_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(produce_error(topic, error)),
        }
    }

    /// Publishes events to their topics, keyed by order, all at once.
    pub async fn publish_events(&self, events: &[Event]) -> Result<(), PublishError> {
        try_join_all(events.iter().map(|event| async move {
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header { key: CONTENT_TYPE_HEADER, value: Some(CONTENT_TYPE) })
                .insert(Header { key: TRACEPARENT_HEADER, value: Some(event.traceparent.as_str()) });
            let topic = event_topic(event.event_type());
            let key = event.subject.to_string();
            self.send(&topic, Some(key.as_bytes()), &event.to_json(), headers).await.map_err(|error| match error {
                PublishError::Unroutable { .. } => PublishError::Unroutable {
                    event_type: event.event_type().as_str().to_owned(),
                    event_id: event.id.to_string(),
                },
                other => other,
            })
        }))
        .await
        .map(drop)
    }

    /// Waits (bounded) for what is still queued to leave.
    pub async fn close(&self) {
        if let Some(producer) = self.producer.get() {
            let producer = producer.clone();
            let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        }
    }
}

/// A topic that does not exist is a topology error, like an unroutable AMQP
/// message; anything else may pass.
fn produce_error(topic: &str, error: KafkaError) -> PublishError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            PublishError::Unroutable { event_type: topic.to_owned(), event_id: String::new() }
        }
        _ => PublishError::Unavailable(format!("producing to {topic}: {error}")),
    }
}

#[async_trait]
impl Publisher for KafkaLink {
    async fn publish(&self, _origin: &OutboxRef, events: &[Event]) -> Result<Handover, PublishError> {
        self.publish_events(events).await.map(|()| Handover::Confirmed)
    }
}
