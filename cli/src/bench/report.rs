//! The one JSON object a bench run prints: throughput and latency percentiles.

use serde_json::{Value, json};

use super::BenchConfig;

/// The one JSON object a bench run prints.
pub(super) fn report(
    mode: &str,
    mix: &str,
    config: &BenchConfig,
    completed: serde_json::Map<String, Value>,
    mut latencies_ms: Vec<f64>,
    wall: f64,
    messages: usize,
) -> Value {
    latencies_ms.sort_by(f64::total_cmp);
    json!({
        "mode": mode,
        "mix": mix,
        "orders": latencies_ms.len(),
        "concurrency": config.concurrency,
        "rate": config.rate,
        "completed": completed,
        "wall_s": round3(wall),
        "sagas_per_s": round3(latencies_ms.len() as f64 / wall),
        "latency_ms": {
            "p50": round3(percentile(&latencies_ms, 0.50)),
            "p95": round3(percentile(&latencies_ms, 0.95)),
            "p99": round3(percentile(&latencies_ms, 0.99)),
            "max": round3(latencies_ms.last().copied().unwrap_or(0.0)),
        },
        "messages": messages,
        "messages_per_s": round3(messages as f64 / wall),
    })
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest-rank; the index is within bounds by construction.
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
    }
}
