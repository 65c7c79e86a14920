//! The consumer runner on Kafka, shared by `choreo up --kafka` and `choreo
//! bridge --kafka`: the same [`StepInvoker`] as on RabbitMQ, the same retry
//! policy, the same rule that nothing is acknowledged before what it caused
//! is safe.
//!
//! Each consuming function has two consumer groups: `<prefix><function>` on
//! the topics of the event types it consumes, `<prefix><function>.retry` on
//! its retry topics (their records wait for their due time without holding
//! up new events). A record is handled by the worker of its partition, one
//! at a time and in order, so one order's events of a type are handled in
//! the order they were published; partitions run side by side.
//!
//! A record's offset is stored for commit only once it is settled: the
//! events it caused are acknowledged by every in-sync replica, or a retry or
//! dead-letter copy of it is. A crash before that means the record comes
//! again, which the steps' idempotency absorbs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::link::KafkaLink;
use super::topology::{dead_letter_topic, retry_topic, retry_topics, subscriptions};
use super::{ATTEMPT_HEADER, DUE_HEADER, ERROR_HEADER, FUNCTION_HEADER, TRACEPARENT_HEADER};
use crate::bus::amqp::StepInvoker;
use crate::bus::{DeliverySettings, PublishError};
use crate::contract::choreography::Function;
use crate::contract::events::Event;
use crate::step::StepError;

/// Longest pause before a record whose settling failed is tried again.
const MAX_SETTLE_PAUSE: Duration = Duration::from_secs(5);
/// Records queued for one partition's worker before the group's intake waits.
const PARTITION_BACKLOG: usize = 256;

/// Which topics a group reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Events,
    Retries,
}

/// Consumes the topics of `functions` until `shutdown` turns true; on
/// shutdown every worker finishes the record in hand, the stored offsets are
/// committed and the consumers leave their groups. librdkafka reconnects by
/// itself when the cluster goes away; a group whose consumer cannot be made
/// (credentials not readable yet) tries again with backoff.
pub async fn run_kafka_consumers(
    link: Arc<KafkaLink>,
    functions: Vec<Function>,
    invoker: Arc<dyn StepInvoker>,
    settings: DeliverySettings,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = link.create_topics(&settings).await {
        // Consuming a missing topic waits for it; someone may create them.
        tracing::warn!(%error, "cannot create the Kafka topics");
    }
    let mut groups = JoinSet::new();
    for function in functions {
        for lane in [Lane::Events, Lane::Retries] {
            let (link, invoker, settings, shutdown) =
                (Arc::clone(&link), Arc::clone(&invoker), settings.clone(), shutdown.clone());
            groups.spawn(consume_group(link, function, lane, invoker, settings, shutdown));
        }
    }
    tracing::info!(groups = groups.len(), "consuming from Kafka");
    while groups.join_next().await.is_some() {}
    link.close().await;
}

/// A consumer of `group` subscribed to `topics`, made again with backoff
/// until it can be; `None` on shutdown.
async fn subscribed(
    link: &KafkaLink,
    group: &str,
    topics: &[String],
    longest_wait: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<StreamConsumer> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let made = link.consumer(group, longest_wait).await.and_then(|consumer| {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&names).map_err(|error| error.to_string()).map(|()| consumer)
        });
        match made {
            Ok(consumer) => return Some(consumer),
            Err(error) => tracing::error!(%group, %error, ?backoff, "cannot consume; trying again"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
        backoff = (backoff * 2).min(MAX_SETTLE_PAUSE);
    }
}

/// One consumer group: its intake hands each record to its partition's worker.
async fn consume_group(
    link: Arc<KafkaLink>,
    function: Function,
    lane: Lane,
    invoker: Arc<dyn StepInvoker>,
    settings: DeliverySettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let (group, topics) = match lane {
        Lane::Events => (link.settings().group(function), subscriptions(function)),
        Lane::Retries => (link.settings().retry_group(function), retry_topics(function, &settings)),
    };
    // A retry worker may wait up to the longest retry delay for a record's due time.
    let longest_wait = match lane {
        Lane::Events => MAX_SETTLE_PAUSE,
        Lane::Retries => settings.retry_delay(settings.max_retries).max(MAX_SETTLE_PAUSE),
    };
    let Some(consumer) = subscribed(&link, &group, &topics, longest_wait, &mut shutdown).await else { return };
    let consumer = Arc::new(consumer);
    let worker = Worker { link, function, lane, invoker, settings, consumer: Arc::clone(&consumer) };
    let worker = Arc::new(worker);
    let mut partitions: HashMap<(String, i32), mpsc::Sender<OwnedMessage>> = HashMap::new();
    let mut workers = JoinSet::new();
    loop {
        let received = tokio::select! {
            received = consumer.recv() => received.map(|message| message.detach()),
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%group, %error, "consuming from Kafka");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let key = (message.topic().to_owned(), message.partition());
        let sender = partitions.entry(key).or_insert_with(|| {
            let (sender, records) = mpsc::channel(PARTITION_BACKLOG);
            workers.spawn(Arc::clone(&worker).run(records, shutdown.clone()));
            sender
        });
        // A worker ends only on shutdown, so a failed send means stopping.
        tokio::select! {
            sent = sender.send(message) => if sent.is_err() { break },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        while workers.try_join_next().is_some() {}
    }
    drop(partitions);
    while workers.join_next().await.is_some() {}
    let consumer = Arc::clone(&consumer);
    let committed = tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await;
    if let Ok(Err(error)) = committed {
        tracing::debug!(%group, %error, "nothing to commit on shutdown");
    }
}

/// What every partition worker of a group shares.
struct Worker {
    link: Arc<KafkaLink>,
    function: Function,
    lane: Lane,
    invoker: Arc<dyn StepInvoker>,
    settings: DeliverySettings,
    consumer: Arc<StreamConsumer>,
}

impl Worker {
    /// Handles one partition's records in order until its channel closes or
    /// shutdown; a record left unsettled on shutdown is not committed.
    async fn run(self: Arc<Self>, mut records: mpsc::Receiver<OwnedMessage>, mut shutdown: watch::Receiver<bool>) {
        while let Some(message) = records.recv().await {
            // Records fetched but not begun stay uncommitted: they come again after a restart.
            if *shutdown.borrow() {
                return;
            }
            if self.lane == Lane::Retries
                && let Some(wait) = due_in(&message)
            {
                // Anyone who can produce sets the due time: never wait longer than the longest retry delay.
                let wait = wait.min(self.settings.retry_delay(self.settings.max_retries));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
            let mut failures = 0u32;
            loop {
                match self.settle(&message).await {
                    Ok(()) => break,
                    Err(error) => {
                        // The cluster is away or refuses: the record stays
                        // first in its partition until a copy of it is safe.
                        failures = failures.saturating_add(1);
                        let pause = self.settings.retry_delay(failures).min(MAX_SETTLE_PAUSE);
                        let (order_id, trace_id) = about(&message);
                        tracing::warn!(step = %self.function, %order_id, %trace_id, %error, ?pause, "could not settle a record; trying it again");
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            _ = shutdown.wait_for(|stop| *stop) => return,
                        }
                    }
                }
            }
            // Revoked meanwhile: the new owner gets it again (idempotent).
            let _ = self.consumer.store_offset(message.topic(), message.partition(), message.offset());
        }
    }

    /// Invokes the step and settles the record: done, or a copy of it safe
    /// on a retry topic or the dead-letter topic.
    async fn settle(&self, message: &OwnedMessage) -> Result<(), PublishError> {
        let function = self.function;
        let attempt = attempt_of(message, self.settings.max_retries);
        let payload = message.payload().unwrap_or_default();
        let outcome = match Event::from_json(payload) {
            Err(error) => Err(StepError::Permanent(format!("undecodable record: {error}"))),
            Ok(event) => match self.invoker.handle_attempt(function, &event, attempt).await {
                Ok(emitted) if emitted.is_empty() => Ok(()),
                Ok(emitted) => self.link.publish_events(&emitted).await.map_err(|error| match error {
                    PublishError::Unroutable { .. } => StepError::Permanent(error.to_string()),
                    PublishError::Unavailable(_) => StepError::Retryable(error.to_string()),
                }),
                Err(error) => Err(error),
            },
        };
        let (order_id, trace_id) = about(message);
        match outcome {
            Ok(()) => Ok(()),
            Err(error) if error.is_retryable() && attempt <= self.settings.max_retries => {
                let delay = self.settings.retry_delay(attempt);
                tracing::warn!(step = %function, %order_id, %trace_id, attempt, %error, "retrying after {delay:?}");
                let headers = with_bookkeeping(message.headers(), attempt + 1, &error.to_string(), function)
                    .insert(Header { key: DUE_HEADER, value: Some(&due_at(delay).to_string()) });
                self.link.send(&retry_topic(function, attempt), message.key(), payload, headers).await
            }
            Err(error) => {
                tracing::error!(step = %function, %order_id, %trace_id, attempt, %error, "dead-lettered");
                let headers = with_bookkeeping(message.headers(), attempt, &error.to_string(), function);
                self.link.send(&dead_letter_topic(function), message.key(), payload, headers).await
            }
        }
    }
}

/// The headers of a record with the bookkeeping of a retried or parked copy
/// replaced: which attempt comes (or failed) last, the error, the function.
pub(super) fn with_bookkeeping(
    headers: Option<&OwnedHeaders>,
    attempt: u32,
    error: &str,
    function: Function,
) -> OwnedHeaders {
    let replaced = [ATTEMPT_HEADER, ERROR_HEADER, FUNCTION_HEADER, DUE_HEADER];
    let kept = headers.map(|headers| headers.iter().filter(|header| !replaced.contains(&header.key)).collect());
    let kept: Vec<Header<'_, &[u8]>> = kept.unwrap_or_default();
    let attempt = attempt.to_string();
    kept.into_iter()
        .fold(OwnedHeaders::new(), |owned, header| owned.insert(header))
        .insert(Header { key: ATTEMPT_HEADER, value: Some(&attempt) })
        .insert(Header { key: ERROR_HEADER, value: Some(error) })
        .insert(Header { key: FUNCTION_HEADER, value: Some(function.name()) })
}

/// The text of a record's header `name`, if present and UTF-8.
pub(super) fn header_text<'m>(message: &'m impl Message, name: &str) -> Option<&'m str> {
    let headers = message.headers()?;
    headers.iter().find(|header| header.key == name).and_then(|header| std::str::from_utf8(header.value?).ok())
}

/// The attempt a record stands for, from its `x-choreo-attempt` header,
/// always within `1..=max_retries + 1` (anyone who can produce can set it).
fn attempt_of(message: &OwnedMessage, max_retries: u32) -> u32 {
    let last = i64::from(max_retries).saturating_add(1);
    let header = header_text(message, ATTEMPT_HEADER).and_then(|text| text.trim().parse::<i64>().ok());
    u32::try_from(header.unwrap_or(1).clamp(1, last)).unwrap_or(u32::MAX)
}

/// Milliseconds since the epoch `delay` from now.
fn due_at(delay: Duration) -> u128 {
    (SystemTime::now() + delay).duration_since(UNIX_EPOCH).map(|since| since.as_millis()).unwrap_or_default()
}

/// How long until a retry record is due (`None`: now, or no due time).
fn due_in(message: &OwnedMessage) -> Option<Duration> {
    let due = header_text(message, DUE_HEADER)?.trim().parse::<u64>().ok()?;
    let due = UNIX_EPOCH + Duration::from_millis(due);
    due.duration_since(SystemTime::now()).ok()
}

/// The order (the record's key) and trace a record is about, for log lines.
fn about(message: &OwnedMessage) -> (String, String) {
    let order_id = message.key().map(|key| String::from_utf8_lossy(key).into_owned()).unwrap_or_default();
    let trace_id = header_text(message, TRACEPARENT_HEADER).and_then(|t| t.get(3..35)).unwrap_or_default().to_owned();
    (order_id, trace_id)
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn record(headers: &[(&str, &str)]) -> OwnedMessage {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |owned, (key, value)| owned.insert(Header { key, value: Some(*value) }));
        OwnedMessage::new(None, None, "choreo.order.created".into(), Timestamp::NotAvailable, 0, 0, Some(headers))
    }

    #[test]
    fn a_copy_has_one_of_each_bookkeeping_header_and_keeps_the_others() {
        let came = record(&[("traceparent", "00-a-b-01"), (ATTEMPT_HEADER, "2"), (DUE_HEADER, "5")]);
        let copy = OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(with_bookkeeping(came.headers(), 3, "boom", Function::ShipOrder)),
        );
        let names: Vec<&str> = copy.headers().map(|h| h.iter().map(|header| header.key).collect()).unwrap_or_default();
        assert_eq!(names, ["traceparent", ATTEMPT_HEADER, ERROR_HEADER, FUNCTION_HEADER], "the old due time is gone");
        assert_eq!(header_text(&copy, ATTEMPT_HEADER), Some("3"));
        assert_eq!(header_text(&copy, FUNCTION_HEADER), Some("ship-order"));
    }

    #[test]
    fn the_attempt_header_is_clamped_to_the_retries_there_are() {
        assert_eq!(attempt_of(&record(&[]), 5), 1, "missing: a first attempt");
        assert_eq!(attempt_of(&record(&[(ATTEMPT_HEADER, "0")]), 5), 1);
        assert_eq!(attempt_of(&record(&[(ATTEMPT_HEADER, "4")]), 5), 4);
        assert_eq!(attempt_of(&record(&[(ATTEMPT_HEADER, "99")]), 5), 6, "beyond: the retries are spent");
        assert_eq!(attempt_of(&record(&[(ATTEMPT_HEADER, "x")]), 5), 1);
    }

    #[test]
    fn a_retry_record_waits_until_its_due_time_and_not_for_a_past_one() {
        let soon = due_at(Duration::from_secs(30)).to_string();
        let wait = due_in(&record(&[(DUE_HEADER, &soon)])).expect("a wait");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(due_in(&record(&[(DUE_HEADER, "0")])), None, "due long ago");
        assert_eq!(due_in(&record(&[])), None, "no due time");
    }
}
