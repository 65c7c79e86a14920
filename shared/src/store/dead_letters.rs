//! Dead letters of the in-process bus (`choreo up` without RabbitMQ), kept
//! in the store so that they survive a restart, and their replay.
//!
//! A replay is requested from any process (`choreo dlq replay`) by turning
//! the letter's state to `Replaying` in the store: the letter becomes a
//! pending delivery to its one function, like an outbox entry addressed to a
//! single consumer. The running `choreo up` polls for such letters, hands
//! each to its function with a fresh attempt count, and discards the letter
//! once the function handled it; a letter that fails again is parked again
//! with its new error. If `choreo up` is not running, the next start picks the
//! letter up; if it dies mid-delivery, the letter is still `Replaying` and is
//! delivered again (steps are idempotent). So a replay is never lost and
//! never needs the two processes to talk to each other.

use crate::contract::choreography::Function;
use crate::contract::events::Event;

/// An event its function could not handle, parked by the in-process bus.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDeadLetter {
    /// The function that could not handle it.
    pub function: Function,
    /// The event, as delivered.
    pub event: Event,
    /// The last error.
    pub error: String,
    /// Attempts made before it was parked.
    pub attempts: u32,
}

/// Where a stored dead letter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LetterState {
    /// Parked: listed by `choreo dlq list`, waiting for an operator.
    Parked,
    /// Replay requested: `choreo up` delivers it to its function again.
    Replaying,
}
