//! The Kafka topics, derived from the choreography table like the RabbitMQ
//! topology: created at start by every process that publishes or consumes,
//! printed by `choreo topology --kafka`.
//!
//! - `choreo.<event type>`: one topic per event type, keyed by order id, so
//!   one order's events of a type stay in order; a function's consumer group
//!   subscribes to the topics of the types it consumes (and Lambda's Kafka
//!   event source mappings, which take one topic each, follow the same list).
//! - `choreo.<function>.retry.N`: a function's N-th retry, consumed by its
//!   own retry group after the record's due time (`retry_base · 2^(N-1)`).
//! - `choreo.<function>.dead`: records that can never be handled, listed and
//!   replayed by `choreo dlq`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;

use super::settings::KafkaSettings;
use crate::bus::DeliverySettings;
use crate::contract::choreography::{CHOREOGRAPHY, Function};
use crate::contract::events::EventType;

/// The topic events of `event_type` are published to.
pub fn event_topic(event_type: EventType) -> String {
    format!("choreo.{}", event_type.as_str())
}

/// The topic of `function`'s retry number `retry` (1-based).
pub fn retry_topic(function: Function, retry: u32) -> String {
    format!("choreo.{}.retry.{retry}", function.name())
}

/// The topic `function`'s records that can never be handled are parked on.
pub fn dead_letter_topic(function: Function) -> String {
    format!("choreo.{}.dead", function.name())
}

/// Dead letters are kept until replayed or for this long (the work of
/// someone who was away for a long weekend and then some).
const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// Event and retry topics keep a week: longer than any saga's deadline, so a
/// consumer group that was down for a while still finds its records.
const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One topic to create.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Topic-level settings (`retention.ms`, `min.insync.replicas`, …).
    pub config: BTreeMap<&'static str, String>,
}

/// Every topic, and which topics each function's groups subscribe to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KafkaTopology {
    pub topics: Vec<TopicSpec>,
    /// Each consuming function's event group and what it subscribes to.
    pub groups: Vec<GroupSpec>,
}

/// A consumer group and its topics.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupSpec {
    pub group: String,
    pub topics: Vec<String>,
}

impl KafkaTopology {
    pub fn derive(kafka: &KafkaSettings, delivery: &DeliverySettings) -> Self {
        let topic = |name: String, retention: Duration| {
            let mut config = BTreeMap::from([("retention.ms", retention.as_millis().to_string())]);
            if kafka.replication > 1 {
                // With acks=all, a write needs this many replicas in sync.
                config.insert("min.insync.replicas", (kafka.replication - 1).min(2).to_string());
            }
            TopicSpec { name, partitions: kafka.partitions, replication: kafka.replication, config }
        };
        let mut event_types: Vec<EventType> = CHOREOGRAPHY.iter().flat_map(|spec| spec.emits.iter().copied()).collect();
        event_types.sort_by_key(|event_type| event_type.as_str());
        event_types.dedup();
        let mut topics: Vec<TopicSpec> =
            event_types.into_iter().map(|event_type| topic(event_topic(event_type), EVENT_RETENTION)).collect();
        let mut groups = Vec::new();
        for function in Function::consumers() {
            topics.extend(retry_topics(function, delivery).into_iter().map(|name| topic(name, EVENT_RETENTION)));
            topics.push(topic(dead_letter_topic(function), DEAD_LETTER_RETENTION));
            groups.push(GroupSpec { group: kafka.group(function), topics: subscriptions(function) });
        }
        Self { topics, groups }
    }

    /// Creates the topics that do not exist yet; existing ones are left as
    /// they are (their partition count is the operator's to change).
    pub async fn create<C: ClientContext + 'static>(&self, admin: &AdminClient<C>) -> Result<(), String> {
        let new_topics: Vec<NewTopic<'_>> = self
            .topics
            .iter()
            .map(|spec| {
                let new = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(spec.replication));
                spec.config.iter().fold(new, |new, (key, value)| new.set(key, value))
            })
            .collect();
        let bound = Some(Duration::from_secs(10));
        let options = AdminOptions::new().operation_timeout(bound).request_timeout(bound);
        let results = admin.create_topics(&new_topics, &options).await.map_err(|error| error.to_string())?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(format!("cannot create topic {topic}: {code}")),
            }
        }
        Ok(())
    }
}

/// The retry topics of `function`, first to last, which its retry group reads.
pub fn retry_topics(function: Function, delivery: &DeliverySettings) -> Vec<String> {
    (1..=delivery.max_retries).map(|retry| retry_topic(function, retry)).collect()
}

/// The event topics `function`'s group subscribes to.
pub fn subscriptions(function: Function) -> Vec<String> {
    function.spec().consumes.iter().map(|event_type| event_topic(*event_type)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_emitted_event_has_a_topic_and_every_subscription_exists() {
        let topology = KafkaTopology::derive(&KafkaSettings::plaintext("x:9092"), &DeliverySettings::default());
        let names: Vec<&str> = topology.topics.iter().map(|topic| topic.name.as_str()).collect();
        for spec in CHOREOGRAPHY {
            for event_type in spec.emits {
                assert!(names.contains(&event_topic(*event_type).as_str()), "{event_type:?} has a topic");
            }
        }
        for GroupSpec { group, topics } in &topology.groups {
            assert!(!topics.is_empty(), "{group} subscribes to something");
            assert!(topics.iter().all(|topic| names.contains(&topic.as_str())), "{group}: {topics:?}");
        }
        assert!(names.contains(&"choreo.ship-order.retry.5") && names.contains(&"choreo.ship-order.dead"));
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "no topic twice");
    }
}
