//! Kafka, the alternative bus (ARCHITECTURE.md §15), on rdkafka with its
//! bundled librdkafka: the topics derived from the choreography table, an
//! idempotent `acks=all` producer behind the same [`Publisher`] port as
//! RabbitMQ, the consumer runner with retry topics and a dead-letter topic
//! per function, and the dead letters' listing and replay.
//!
//! [`Publisher`]: crate::bus::Publisher

mod consumer;
mod dead_letters;
mod link;
mod offsets;
mod settings;
mod topology;

pub use self::consumer::run_kafka_consumers;
pub use self::dead_letters::{list_dead_records, park_dead_record, replay_dead_records};
pub use self::link::KafkaLink;
pub use self::offsets::start_group_at_end;
pub use self::settings::{Credentials, DEFAULT_GROUP_PREFIX, DEFAULT_PARTITIONS, KafkaSecurity, KafkaSettings};
pub use self::topology::{
    GroupSpec, KafkaTopology, TopicSpec, dead_letter_topic, event_topic, retry_topic, retry_topics, subscriptions,
};

/// Record headers choreo writes and reads (the AMQP headers' names, so a
/// dead letter reads the same on either bus).
pub use super::amqp::{ATTEMPT_HEADER, ERROR_HEADER, FUNCTION_HEADER};
/// When a retry record is due, in milliseconds since the epoch.
pub const DUE_HEADER: &str = "x-choreo-due";
pub const TRACEPARENT_HEADER: &str = "traceparent";
pub const CONTENT_TYPE_HEADER: &str = "content-type";
