//! The dead-letter topics: parking a record, listing what is parked, and
//! replaying it. A topic cannot remove one record, so each function's
//! dead-letter topic has a replay group (`<prefix><function>.dead-replay`)
//! whose committed offsets mark what was replayed: `list` shows the records
//! after them, `replay` sends those back and commits past them.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::consumer::{header_text, with_bookkeeping};
use super::link::KafkaLink;
use super::offsets::{CALL_TIMEOUT, PartitionEnds, group_consumer, partition_ends};
use super::topology::{dead_letter_topic, retry_topic};
use super::{ATTEMPT_HEADER, ERROR_HEADER};
use crate::bus::PublishError;
use crate::bus::amqp::DeadMessage;
use crate::contract::choreography::Function;

/// Parks a record that can never be handled on `function`'s dead-letter
/// topic with the headers it came with (its `traceparent`) and the
/// bookkeeping headers; returns once the cluster has it.
pub async fn park_dead_record(
    link: &KafkaLink,
    function: Function,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[(String, Vec<u8>)],
    attempt: u32,
    error: &str,
) -> Result<(), PublishError> {
    let came_with = headers.iter().fold(OwnedHeaders::new(), |owned, (key, value)| {
        owned.insert(Header { key: key.as_str(), value: Some(value.as_slice()) })
    });
    let headers = with_bookkeeping(Some(&came_with), attempt, error, function);
    link.send(&dead_letter_topic(function), key, payload, headers).await
}

/// The replay group of `function`'s dead-letter topic.
fn replay_group(link: &KafkaLink, function: Function) -> String {
    format!("{}.dead-replay", link.settings().group(function))
}

/// Reads (without removing) up to `limit` unreplayed dead letters of each function.
pub async fn list_dead_records(link: &KafkaLink, limit: usize) -> Result<Vec<DeadMessage>, String> {
    let mut letters = Vec::new();
    for function in Function::consumers() {
        let (records, _) = read_unreplayed(link, function, limit).await?;
        letters.extend(records.iter().map(|record| dead_message(function, record)));
    }
    Ok(letters)
}

/// Sends the unreplayed dead letters of `function` (or every function) back
/// to the function with a fresh attempt count, through its first retry topic
/// (due at once); with `message_id`, only that event's, and the others are
/// parked again behind. Answers how many were replayed.
pub async fn replay_dead_records(
    link: &KafkaLink,
    function: Option<Function>,
    message_id: Option<&str>,
) -> Result<usize, String> {
    let functions: Vec<Function> = match function {
        Some(function) => vec![function],
        None => Function::consumers().collect(),
    };
    let mut replayed = 0;
    for function in functions {
        let (records, end) = read_unreplayed(link, function, usize::MAX).await?;
        for record in &records {
            let payload = record.payload().unwrap_or_default();
            let chosen = message_id.is_none_or(|wanted| about_event(payload).0.as_deref() == Some(wanted));
            let sent = if chosen {
                let headers = with_bookkeeping(record.headers(), 1, "", function)
                    .insert(Header { key: super::DUE_HEADER, value: Some("0") });
                replayed += 1;
                link.send(&retry_topic(function, 1), record.key(), payload, headers).await
            } else {
                let headers = record.headers().cloned().unwrap_or_else(OwnedHeaders::new);
                link.send(&dead_letter_topic(function), record.key(), payload, headers).await
            };
            sent.map_err(|error: PublishError| error.to_string())?;
        }
        if !records.is_empty() {
            commit(link, function, end).await?;
        }
    }
    Ok(replayed)
}

/// The records of `function`'s dead-letter topic after its replay group's
/// committed offsets (at most `limit`), and the offsets that end them.
async fn read_unreplayed(
    link: &KafkaLink,
    function: Function,
    limit: usize,
) -> Result<(Vec<OwnedMessage>, TopicPartitionList), String> {
    let consumer = group_consumer(link, &replay_group(link, function)).await?;
    tokio::task::spawn_blocking(move || read_blocking(&consumer, function, limit))
        .await
        .map_err(|error| error.to_string())?
}

fn read_blocking(
    consumer: &BaseConsumer,
    function: Function,
    limit: usize,
) -> Result<(Vec<OwnedMessage>, TopicPartitionList), String> {
    let topic = dead_letter_topic(function);
    let text = |error: rdkafka::error::KafkaError| format!("{topic}: {error}");
    let ends = partition_ends(consumer, &topic)?;
    let mut wanted = TopicPartitionList::new();
    for end in &ends {
        wanted.add_partition(&topic, end.partition);
    }
    let committed = consumer.committed_offsets(wanted, CALL_TIMEOUT).map_err(text)?;
    let (mut start, mut end) = (TopicPartitionList::new(), TopicPartitionList::new());
    // Partitions still being read, with the offset that ends each.
    let mut remaining: Vec<(i32, i64)> = Vec::new();
    for PartitionEnds { partition, low, high } in ends {
        let from = match committed.find_partition(&topic, partition).map(|element| element.offset()) {
            Some(Offset::Offset(offset)) => offset.max(low),
            _ => low,
        };
        end.add_partition_offset(&topic, partition, Offset::Offset(high)).map_err(text)?;
        if from < high {
            start.add_partition_offset(&topic, partition, Offset::Offset(from)).map_err(text)?;
            remaining.push((partition, high));
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok((records, end));
    }
    consumer.assign(&start).map_err(text)?;
    while !remaining.is_empty() && records.len() < limit {
        let message = match consumer.poll(CALL_TIMEOUT) {
            None => return Err(format!("{topic}: no record within {CALL_TIMEOUT:?} though some are there")),
            Some(message) => message.map_err(text)?,
        };
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(at) = remaining.iter().position(|(p, high)| *p == partition && offset + 1 >= *high) {
            remaining.swap_remove(at);
        }
        records.push(message.detach());
    }
    Ok((records, end))
}

/// Marks everything before `end` replayed.
async fn commit(link: &KafkaLink, function: Function, end: TopicPartitionList) -> Result<(), String> {
    let consumer = group_consumer(link, &replay_group(link, function)).await?;
    tokio::task::spawn_blocking(move || consumer.commit(&end, CommitMode::Sync))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("{}: {error}", dead_letter_topic(function)))
}

/// The id and type of the CloudEvent a record holds, if it holds one.
fn about_event(payload: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct About {
        id: Option<String>,
        #[serde(rename = "type")]
        event_type: Option<String>,
    }
    serde_json::from_slice::<About>(payload).map(|about| (about.id, about.event_type)).unwrap_or_default()
}

fn dead_message(function: Function, record: &OwnedMessage) -> DeadMessage {
    let payload = record.payload().unwrap_or_default();
    let (message_id, event_type) = about_event(payload);
    DeadMessage {
        function: function.name().to_owned(),
        message_id,
        event_type,
        order_id: record.key().map(|key| String::from_utf8_lossy(key).into_owned()),
        error: header_text(record, ERROR_HEADER).map(str::to_owned),
        attempts: header_text(record, ATTEMPT_HEADER).and_then(|text| text.parse().ok()),
        body: String::from_utf8_lossy(payload).into_owned(),
    }
}
