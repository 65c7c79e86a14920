//! How long processed-event records (the idempotency keys and the outbox)
//! are kept once their events are published, and the loop that prunes them
//! on stores that do not expire records themselves.
//!
//! A processed record is what makes a redelivered event a `Duplicate`: once
//! it is gone, the same event delivered again runs its step again (a second
//! reservation, a second shipment). So the retention must exceed the longest
//! time an event can still arrive after it was first handled: the broker's
//! retry chain (seconds to minutes), an SQS queue's message retention (4 days
//! by default, 14 at most), and above all a dead letter waiting for
//! `choreo dlq replay`. The default, 7 days, covers SQS's default and leaves a
//! working week to replay dead letters; replaying one older than the
//! retention is not safe. Unpublished and set-aside records are never pruned.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::Store;

/// `CHOREO_PROCESSED_RETENTION` when unset: 7 days.
pub const DEFAULT_PROCESSED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Shortest retention accepted: below it a record could vanish while the
/// broker is still retrying its event.
const MINIMUM: Duration = Duration::from_secs(3600);

/// How often `prune_forever` prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Parses a retention such as `7d`, `36h`, `90m` or `86400s` (a bare number
/// is seconds); at least one hour.
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{text}' is not a duration: use a number with d, h, m or s, e.g. 7d")),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(seconds_per_unit))
        .ok_or_else(|| format!("'{text}' is not a duration: use a number with d, h, m or s, e.g. 7d"))?;
    let retention = Duration::from_secs(seconds);
    if retention < MINIMUM {
        return Err(format!("'{text}' is too short: processed records must be kept at least 1h"));
    }
    Ok(retention)
}

/// Prunes published processed records now and then every hour, until `stop`
/// resolves. Failures are logged at warn and tried again at the next round.
pub async fn prune_forever(store: Arc<dyn Store>, stop: impl Future<Output = ()> + Send) {
    tokio::pin!(stop);
    loop {
        match store.prune_processed().await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(records = pruned, "pruned processed-event records past their retention"),
            Err(error) => tracing::warn!(%error, "pruning processed-event records failed; trying again in an hour"),
        }
        // The timeline's notes go with the records they annotate (ARCHITECTURE.md §14.3).
        match store.prune_delivery_notes().await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(notes = pruned, "pruned delivery notes past their retention"),
            Err(error) => tracing::warn!(%error, "pruning delivery notes failed; trying again in an hour"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_days_hours_minutes_and_seconds() {
        assert_eq!(parse_retention("7d"), Ok(DEFAULT_PROCESSED_RETENTION));
        assert_eq!(parse_retention("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_retention("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_retention("86400"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn rejects_other_units_and_too_short_retentions() {
        assert!(parse_retention("7 days").unwrap_err().contains("not a duration"));
        assert!(parse_retention("d").unwrap_err().contains("not a duration"));
        assert!(parse_retention("10m").unwrap_err().contains("at least 1h"));
    }
}
