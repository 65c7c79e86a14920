//! RabbitMQ on lapin: the topology derived from the choreography table, a
//! confirming publisher, and the consumer runner shared by `choreo up --amqp`
//! and `choreo bridge`.
//!
//! Topology (all durable):
//! - `choreo.events` (topic): every event, routing key = event type.
//! - per consuming function F: work queue `choreo.F` bound to the types F
//!   consumes, a quorum queue whose delivery limit dead-letters a message
//!   returned too often into `choreo.F.dead` (Amazon MQ redeliveries, crashed
//!   consumers); retry queues `choreo.F.retry.N` (TTL `retry_base · 2^(N-1)`,
//!   dead-lettering back to `choreo.F` through the default exchange); and the
//!   dead-letter queue `choreo.F.dead`.
//! - `choreo.saga-ended`: bound to the terminal events, capped in length, so
//!   every publish is routable and `mandatory` never has an exception.
//!
//! A consumer acks an input only after the events it caused are confirmed,
//! and after a retry or dead-letter copy of it is confirmed: nothing is lost
//! between the two, and a crash in between means a redelivery, which the
//! steps' idempotency absorbs.

mod acks;
pub mod amazon_mq;
mod broker_url;
mod consumer;
mod dead_letters;
mod link;
mod migration;
mod tls;
mod topology;

// Kafka reads its SCRAM secret the same way.
pub use self::acks::{AckWindow, InHand};
#[cfg(feature = "kafka")]
pub(crate) use self::broker_url::read_secret_within;
pub use self::broker_url::redact;
pub use self::consumer::{StepInvoker, run_consumers};
pub use self::dead_letters::{DeadMessage, ReplayError, list_dead_letters, park_dead_letter, replay_dead_letters};
pub use self::link::AmqpLink;
pub use self::migration::DeclareError;
pub use self::tls::{CA_FILE_VAR, ConnectError, connect_error};
pub use self::topology::{ArgValue, QueueSpec, Topology, dead_letter_queue, retry_queue};

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

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
