//! Reading where a topic's partitions begin and end, and placing a group at
//! their end: blocking librdkafka calls, run on the blocking pool.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::link::KafkaLink;

/// How long each metadata, watermark or commit call may wait on the cluster.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition of a topic: its id, first and next offset.
#[derive(Clone, Copy, Debug)]
pub(super) struct PartitionEnds {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// The partitions of `topic` with their watermarks.
pub(super) fn partition_ends(consumer: &BaseConsumer, topic: &str) -> Result<Vec<PartitionEnds>, String> {
    let text = |error: rdkafka::error::KafkaError| format!("{topic}: {error}");
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT).map_err(text)?;
    let partitions = metadata
        .topics()
        .iter()
        .filter(|described| described.name() == topic)
        .flat_map(|described| described.partitions().iter().map(|partition| partition.id()));
    partitions
        .map(|partition| {
            let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT).map_err(text)?;
            Ok(PartitionEnds { partition, low, high })
        })
        .collect()
}

/// A consumer of `group` that never commits by itself.
pub(super) async fn group_consumer(link: &KafkaLink, group: &str) -> Result<BaseConsumer, String> {
    let mut config = link.client_config().await?;
    config.set("group.id", group).set("enable.auto.commit", "false");
    config.create::<BaseConsumer>().map_err(|error| error.to_string())
}

/// Commits the end of each of `topics` as `group`'s position, so that a new
/// group reads only what is produced from now on.
pub async fn start_group_at_end(link: &KafkaLink, group: &str, topics: Vec<String>) -> Result<(), String> {
    let consumer = group_consumer(link, group).await?;
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut ends = TopicPartitionList::new();
        for topic in &topics {
            for end in partition_ends(&consumer, topic)? {
                ends.add_partition_offset(topic, end.partition, Offset::Offset(end.high))
                    .map_err(|error| error.to_string())?;
            }
        }
        consumer.commit(&ends, CommitMode::Sync).map_err(|error| format!("group {group}: {error}"))
    })
    .await
    .map_err(|error| error.to_string())?
}
