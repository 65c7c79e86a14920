//! What happened to deliveries that changed nothing in the records: a
//! duplicate, a retried failure, a dead letter. The processed records say
//! what each consumer emitted; these notes say the rest, so a saga's
//! timeline (`saga::timeline`) shows every delivery (ARCHITECTURE.md §14.3).
//! They are written only off the happy path, so a step that succeeds the
//! first time costs nothing more.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::contract::choreography::Function;
use crate::contract::domain::OrderId;

/// How a delivery that committed nothing new ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// The event had been handled before: nothing changed, its first events went out again.
    Duplicate,
    /// A retryable failure: the bus delivers it again later.
    Retried,
    /// Retrying cannot help, or the retries ran out: parked as a dead letter.
    DeadLettered,
}

impl DeliveryOutcome {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Retried => "retried",
            Self::DeadLettered => "dead-lettered",
        }
    }

    /// The outcome a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Duplicate, Self::Retried, Self::DeadLettered].into_iter().find(|outcome| outcome.as_str() == name)
    }
}

/// One delivery of an event to a function that committed nothing new.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryNote {
    /// The saga it belongs to (the event's subject): notes are read per order.
    pub order_id: OrderId,
    /// The event delivered.
    pub event_id: Uuid,
    /// The function it was delivered to.
    pub function: Function,
    /// How the delivery ended.
    pub outcome: DeliveryOutcome,
    /// The error, for failures; empty for a duplicate.
    pub detail: String,
    /// When it ended.
    pub at: DateTime<Utc>,
}
