//! One saga step as every hosting runs it (ARCHITECTURE.md §14.2): inside a
//! span that carries the order and its trace, so every log line the step
//! writes names both; then one line saying what it did and how long it took,
//! and the step's metrics. Off the happy path (a duplicate, a failure) it also
//! leaves a delivery note for the order's timeline; a step that succeeds the
//! first time costs no store call more.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::Instrument as _;

use super::metrics;
use crate::contract::choreography::Function;
use crate::contract::events::Event;
use crate::store::{DeliveryNote, DeliveryOutcome};
use crate::{Ports, Step, StepError};

tokio::task_local! {
    /// Set by `run_idempotent` when the store answered `Duplicate`: the step
    /// returns the same events either way, and only the host wants to know.
    static DUPLICATE: Cell<bool>;
}

/// Tells the step being run that its event was a duplicate (a no-op outside [`run_step`]).
pub(crate) fn note_duplicate() {
    let _ = DUPLICATE.try_with(|duplicate| duplicate.set(true));
}

/// How one run of a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Handled: its events (maybe none) are committed.
    Emitted,
    /// Handled before: nothing changed, the first run's events go out again.
    Duplicate,
    /// Failed, may succeed later: the host retries.
    Retryable,
    /// Failed for good: the host dead-letters it.
    Permanent,
}

impl StepOutcome {
    /// Every outcome, in the order metrics list them.
    pub const ALL: [StepOutcome; 4] = [Self::Emitted, Self::Duplicate, Self::Retryable, Self::Permanent];

    /// The name in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emitted => "emitted",
            Self::Duplicate => "duplicate",
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
        }
    }

    fn of(result: &Result<Vec<Event>, StepError>, duplicate: bool) -> Self {
        match result {
            Ok(_) if duplicate => Self::Duplicate,
            Ok(_) => Self::Emitted,
            Err(error) if error.is_retryable() => Self::Retryable,
            Err(_) => Self::Permanent,
        }
    }
}

/// The span of one step: every line logged inside it carries these fields.
pub fn step_span(function: Function, event: &Event) -> tracing::Span {
    tracing::info_span!(
        "step",
        function = function.name(),
        event = event.event_type().as_str(),
        order_id = %event.subject,
        trace_id = event.trace_id(),
    )
}

/// Runs `step` on `event`: the one way hosts call a step.
pub async fn run_step(step: &dyn Step, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError> {
    let function = step.function();
    let span = step_span(function, event);
    let started = Instant::now();
    let run = async {
        let result = step.handle(event, ports).await;
        (result, DUPLICATE.with(Cell::get))
    };
    let (result, duplicate) = DUPLICATE.scope(Cell::new(false), run).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let outcome = StepOutcome::of(&result, duplicate);
    {
        let _in_span = span.enter();
        log_step(function, event, outcome, &result, elapsed);
    }
    metrics::record_step(function, event, outcome, elapsed);
    let noted = match outcome {
        StepOutcome::Emitted => None,
        StepOutcome::Duplicate => Some(DeliveryOutcome::Duplicate),
        StepOutcome::Retryable => Some(DeliveryOutcome::Retried),
        // Every host dead-letters a permanent failure (ARCHITECTURE.md §7.5).
        StepOutcome::Permanent => Some(DeliveryOutcome::DeadLettered),
    };
    if let Some(noted) = noted {
        let detail = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
        note_delivery(ports, function, event, noted, detail).instrument(span).await;
    }
    result
}

/// Leaves a delivery note for the order's timeline; best effort (a failure
/// to note changes nothing in the saga, so it is only logged).
pub async fn note_delivery(ports: &Ports, function: Function, event: &Event, outcome: DeliveryOutcome, detail: String) {
    let note = DeliveryNote { order_id: event.subject, event_id: event.id, function, outcome, detail, at: Utc::now() };
    if let Err(error) = ports.store.note_delivery(&note).await {
        tracing::debug!(%error, outcome = outcome.as_str(), "could not note a delivery for the timeline");
    }
}

/// The one line per step: `<function>: <event> -> <what it emitted>`, with
/// the outcome and duration as fields (the span adds order and trace). On
/// Lambda the metrics line (EMF) carries the same fields and is the line of
/// a step that succeeded; a failure still gets this one, with its error.
fn log_step(
    function: Function,
    event: &Event,
    outcome: StepOutcome,
    result: &Result<Vec<Event>, StepError>,
    elapsed: Duration,
) {
    if result.is_ok() && metrics::emf_enabled() {
        return;
    }
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let kind = event.event_type();
    match result {
        Ok(emitted) => tracing::info!(
            target: "choreo::saga",
            outcome = outcome.as_str(),
            duration_ms,
            "{function}: {kind} -> {}",
            Emitted(emitted)
        ),
        // The order and trace again: at `RUST_LOG=warn` the (info) step span
        // is off, and this line must still say which saga it is about.
        Err(error) => tracing::warn!(
            target: "choreo::saga",
            order_id = %event.subject,
            trace_id = event.trace_id(),
            outcome = outcome.as_str(),
            duration_ms,
            %error,
            "{function}: {kind} failed"
        ),
    }
}

/// The emitted types, comma-separated, written without collecting them.
struct Emitted<'a>(&'a [Event]);

impl fmt::Display for Emitted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (index, event) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(event.event_type().as_str())?;
        }
        Ok(())
    }
}
