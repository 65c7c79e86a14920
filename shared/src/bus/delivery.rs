//! How every bus delivers events to the steps: one settings type for the
//! in-process bus and RabbitMQ alike, and the observer the bench times
//! sagas with (each step's log line is `telemetry::step`'s).

use std::sync::Arc;
use std::time::Duration;

use crate::contract::choreography::Function;
use crate::contract::events::Event;

/// How each function's queue is consumed and retried, on either bus.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Unacknowledged messages RabbitMQ sends each consumer ahead (`basic.qos`);
    /// the in-process bus has no broker to prefetch from.
    pub prefetch: u16,
    /// Messages each function handles at once.
    pub concurrency: usize,
    /// Retries of a `Retryable` failure before the event is dead-lettered.
    pub max_retries: u32,
    /// Delay before the first retry; doubles with each retry.
    pub retry_base: Duration,
}

/// Messages each function handles at once from a broker, unless told
/// otherwise; through the bridge, the most concurrent invocations of each
/// function (kept well under an account's Lambda concurrency). 32 held
/// sagas back: `order-status` takes two of a saga's five events, and at
/// concurrency 64 its handlers, each waiting for a group commit, were all
/// busy; 64 gave 25% more sagas/s embedded and changed nothing over RabbitMQ
/// (interleaved runs, README "Performance").
pub const DEFAULT_CONCURRENCY: usize = 64;
/// The same on the in-process bus, where a handler is a task and costs
/// nothing while idle: with 256 sagas in flight, 64 handlers per queue held
/// them back (256 gave 24% more sagas/s there, and the same at 64 in flight).
pub const IN_PROCESS_CONCURRENCY: usize = 256;
/// Unacknowledged messages RabbitMQ sends each consumer ahead, unless told
/// otherwise: twice the handlers, so that a freed handler finds one waiting.
pub const DEFAULT_PREFETCH: u16 = 128;

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            prefetch: DEFAULT_PREFETCH,
            concurrency: DEFAULT_CONCURRENCY,
            max_retries: 5,
            retry_base: Duration::from_secs(1),
        }
    }
}

impl DeliverySettings {
    /// The defaults on the in-process bus: [`IN_PROCESS_CONCURRENCY`] handlers.
    pub fn in_process() -> Self {
        Self { concurrency: IN_PROCESS_CONCURRENCY, ..Self::default() }
    }

    /// The wait before retry number `retry` (1-based): `retry_base · 2^(retry-1)`.
    pub fn retry_delay(&self, retry: u32) -> Duration {
        self.retry_base * 2u32.saturating_pow(retry.saturating_sub(1))
    }
}

/// Called after every successful saga step with the event handled and the
/// events emitted (`choreo bench` uses it to time sagas without polling).
#[derive(Clone)]
pub struct StepObserver(pub Arc<ObserveFn>);

/// The observer's callback: (function, event handled, events emitted).
pub type ObserveFn = dyn Fn(Function, &Event, &[Event]) + Send + Sync;

impl std::fmt::Debug for StepObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepObserver")
    }
}
