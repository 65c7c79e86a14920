//! Step metrics (ARCHITECTURE.md §14.5), one set of names everywhere:
//! `choreo_steps_total{function,event,outcome}` counts steps,
//! `choreo_step_duration_seconds{function}` times them, and
//! `choreo_orders_accepted_total` counts new orders. Locally they are
//! counters in memory that `GET /metrics` renders in Prometheus text format;
//! on Lambda each step also writes one CloudWatch Embedded Metric Format
//! line, which CloudWatch turns into metrics with no agent.
//!
//! Recording is a few relaxed atomic adds into fixed arrays indexed by the
//! enums: no lock, no allocation on the hot path.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::step::StepOutcome;
use crate::contract::choreography::{CHOREOGRAPHY, Function};
use crate::contract::events::{Event, EventType};

/// Step counter name.
pub const STEPS_TOTAL: &str = "choreo_steps_total";
/// Step duration histogram name.
pub const STEP_DURATION: &str = "choreo_step_duration_seconds";
/// New orders counter name.
pub const ORDERS_ACCEPTED: &str = "choreo_orders_accepted_total";
/// The CloudWatch namespace of the EMF lines.
pub const EMF_NAMESPACE: &str = "choreo";

const FUNCTIONS: usize = CHOREOGRAPHY.len();
const EVENTS: usize = EventType::ALL.len();
const OUTCOMES: usize = StepOutcome::ALL.len();
/// Upper bounds of the duration buckets, in seconds (`+Inf` is the count).
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

static STEPS: [[[AtomicU64; OUTCOMES]; EVENTS]; FUNCTIONS] =
    [const { [const { [const { AtomicU64::new(0) }; OUTCOMES] }; EVENTS] }; FUNCTIONS];
static DURATION_BUCKETS: [[AtomicU64; BUCKETS.len()]; FUNCTIONS] =
    [const { [const { AtomicU64::new(0) }; BUCKETS.len()] }; FUNCTIONS];
static DURATION_SUM_MICROS: [AtomicU64; FUNCTIONS] = [const { AtomicU64::new(0) }; FUNCTIONS];
static DURATION_COUNT: [AtomicU64; FUNCTIONS] = [const { AtomicU64::new(0) }; FUNCTIONS];
static ORDERS: AtomicU64 = AtomicU64::new(0);

fn outcome_index(outcome: StepOutcome) -> usize {
    StepOutcome::ALL.iter().position(|candidate| *candidate == outcome).unwrap_or(0)
}

/// Counts one step and its duration; on Lambda writes its EMF line.
pub fn record_step(function: Function, event: &Event, outcome: StepOutcome, elapsed: Duration) {
    // Rows follow the enum and so do event types (both checked by tests).
    let (f, e) = (function as usize, event.event_type() as usize);
    STEPS[f][e][outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    let seconds = elapsed.as_secs_f64();
    if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
        DURATION_BUCKETS[f][bucket].fetch_add(1, Ordering::Relaxed);
    }
    DURATION_SUM_MICROS[f].fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    DURATION_COUNT[f].fetch_add(1, Ordering::Relaxed);
    if emf_enabled() {
        let line = emf_line(function, event, outcome, elapsed, chrono::Utc::now().timestamp_millis());
        // One write per line, so concurrent invocations' lines never interleave.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// Counts an order `create-order` accepted (not a repeated Idempotency-Key).
pub fn record_order_accepted() {
    ORDERS.fetch_add(1, Ordering::Relaxed);
}

/// Whether steps write EMF lines: on Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set).
pub fn emf_enabled() -> bool {
    static ON_LAMBDA: OnceLock<bool> = OnceLock::new();
    *ON_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some())
}

/// One EMF line: the step's metrics with `function` and `outcome` as
/// dimensions, and the step line's fields (event, order, trace) as properties.
/// Every value is a name from our own lists, a UUID or hex: nothing to escape.
pub fn emf_line(function: Function, event: &Event, outcome: StepOutcome, elapsed: Duration, now_ms: i64) -> String {
    format!(
        concat!(
            r#"{{"_aws":{{"Timestamp":{now},"CloudWatchMetrics":[{{"Namespace":"{ns}","Dimensions":[["function","outcome"]],"#,
            r#""Metrics":[{{"Name":"{steps}","Unit":"Count"}},{{"Name":"{duration}","Unit":"Seconds"}}]}}]}},"#,
            r#""function":"{function}","outcome":"{outcome}","event":"{event}","order_id":"{order}","trace_id":"{trace}","#,
            r#""{steps}":1,"{duration}":{seconds}}}"#,
            "\n"
        ),
        now = now_ms,
        ns = EMF_NAMESPACE,
        steps = STEPS_TOTAL,
        duration = STEP_DURATION,
        function = function.name(),
        outcome = outcome.as_str(),
        event = event.event_type().as_str(),
        order = event.subject,
        trace = event.trace_id(),
        seconds = elapsed.as_secs_f64(),
    )
}

/// Every metric in Prometheus text exposition format (version 0.0.4): each
/// step a function consumes, by outcome, then the durations and the orders.
pub fn prometheus_text() -> String {
    let mut text = String::with_capacity(8 * 1024);
    let _ = writeln!(text, "# HELP {STEPS_TOTAL} Saga steps run, by function, event type and outcome.");
    let _ = writeln!(text, "# TYPE {STEPS_TOTAL} counter");
    for row in CHOREOGRAPHY {
        for event in row.consumes {
            for outcome in StepOutcome::ALL {
                let count =
                    STEPS[row.function as usize][*event as usize][outcome_index(outcome)].load(Ordering::Relaxed);
                let _ = writeln!(
                    text,
                    "{STEPS_TOTAL}{{function=\"{}\",event=\"{event}\",outcome=\"{}\"}} {count}",
                    row.name,
                    outcome.as_str()
                );
            }
        }
    }
    let _ = writeln!(text, "# HELP {STEP_DURATION} How long saga steps took, by function.");
    let _ = writeln!(text, "# TYPE {STEP_DURATION} histogram");
    for row in CHOREOGRAPHY.iter().filter(|row| !row.consumes.is_empty()) {
        let f = row.function as usize;
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&DURATION_BUCKETS[f]) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(text, "{STEP_DURATION}_bucket{{function=\"{}\",le=\"{bound}\"}} {cumulative}", row.name);
        }
        let count = DURATION_COUNT[f].load(Ordering::Relaxed);
        let sum = DURATION_SUM_MICROS[f].load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(text, "{STEP_DURATION}_bucket{{function=\"{}\",le=\"+Inf\"}} {count}", row.name);
        let _ = writeln!(text, "{STEP_DURATION}_sum{{function=\"{}\"}} {sum}", row.name);
        let _ = writeln!(text, "{STEP_DURATION}_count{{function=\"{}\"}} {count}", row.name);
    }
    let _ = writeln!(text, "# HELP {ORDERS_ACCEPTED} Orders accepted by POST /orders.");
    let _ = writeln!(text, "# TYPE {ORDERS_ACCEPTED} counter");
    let _ = writeln!(text, "{ORDERS_ACCEPTED} {}", ORDERS.load(Ordering::Relaxed));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::domain::{CancelReason, OrderId};
    use crate::contract::events::{OrderCancelled, Payload};

    fn sample_event() -> Event {
        let cancelled = OrderCancelled { reason: CancelReason::OutOfStock, detail: "none".into() };
        Event::new(Function::OrderStatus, OrderId::new(), None, Payload::OrderCancelled(cancelled))
    }

    #[test]
    fn functions_and_event_types_index_the_arrays() {
        for (index, row) in CHOREOGRAPHY.iter().enumerate() {
            assert_eq!(row.function as usize, index);
        }
        for (index, event) in EventType::ALL.iter().enumerate() {
            assert_eq!(*event as usize, index);
        }
    }

    #[test]
    fn an_emf_line_is_json_with_its_metrics_declared() {
        let event = sample_event();
        let line =
            emf_line(Function::ShipOrder, &event, StepOutcome::Emitted, Duration::from_millis(3), 1_700_000_000_000);
        assert!(line.ends_with('\n'));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let declared = &json["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "choreo");
        assert_eq!(declared["Dimensions"], serde_json::json!([["function", "outcome"]]));
        assert_eq!(declared["Metrics"][0]["Name"], STEPS_TOTAL);
        assert_eq!(json["function"], "ship-order");
        assert_eq!(json["outcome"], "emitted");
        assert_eq!(json["order_id"], event.subject.to_string());
        assert_eq!(json["trace_id"], event.trace_id());
        assert_eq!(json[STEPS_TOTAL], 1);
        assert_eq!(json[STEP_DURATION], 0.003);
    }
}
