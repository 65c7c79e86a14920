//! `choreo order show ID --timeline`: a saga's timeline (`GET
//! /orders/{order_id}/timeline`) for a person, one line per hop: the gap
//! since its cause, the event, who produced it, and what each consumer did
//! with it; the slowest hop is marked, since that is where the time went.

use std::fmt::Write as _;

use shared::saga::Timeline;

/// Marks the hop that took longest.
pub const SLOWEST: &str = "<- slowest";

/// The timeline as text, one line per hop after a heading line.
pub fn render(timeline: &Timeline) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "order {} {}  trace {}",
        timeline.order_id,
        timeline.status.as_str(),
        if timeline.trace_id.is_empty() { "-" } else { &timeline.trace_id }
    );
    let slowest = timeline
        .hops
        .iter()
        .enumerate()
        .filter_map(|(index, hop)| hop.gap_ms.map(|gap| (index, gap)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(index, _)| index);
    let type_width = timeline.hops.iter().map(|hop| hop.event_type.len()).max().unwrap_or(0);
    let producer_width = timeline.hops.iter().map(|hop| hop.producer.len()).max().unwrap_or(0);
    for (index, hop) in timeline.hops.iter().enumerate() {
        let gap = hop.gap_ms.map_or_else(|| "start".to_owned(), |gap| format!("+{gap:.1} ms"));
        let consumers = if hop.consumers.is_empty() {
            "(ends the saga)".to_owned()
        } else {
            hop.consumers
                .iter()
                .map(|consumer| format!("{}: {}", consumer.function, consumer.outcomes.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mark = if Some(index) == slowest { format!("  {SLOWEST}") } else { String::new() };
        let _ = writeln!(
            text,
            "{gap:>12}  {:<type_width$}  by {:<producer_width$}  -> {consumers}{mark}",
            hop.event_type, hop.producer
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use shared::contract::domain::{OrderId, OrderStatus};
    use shared::saga::{Consumption, Hop};

    use super::*;

    fn hop(event_type: &str, producer: &str, gap_ms: Option<f64>, consumers: &[(&str, &str)]) -> Hop {
        Hop {
            event_id: uuid::Uuid::now_v7(),
            event_type: event_type.into(),
            time: "2026-01-01T00:00:00.000000Z".into(),
            producer: producer.into(),
            cause_id: None,
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: None,
            gap_ms,
            consumers: consumers
                .iter()
                .map(|(function, outcome)| Consumption {
                    function: (*function).into(),
                    outcomes: vec![(*outcome).into()],
                })
                .collect(),
        }
    }

    #[test]
    fn one_line_per_hop_and_the_slowest_is_marked() {
        let timeline = Timeline {
            order_id: OrderId::new(),
            status: OrderStatus::Shipped,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            hops: vec![
                hop("order.created", "create-order", None, &[("reserve-inventory", "emitted inventory.reserved")]),
                hop("inventory.reserved", "reserve-inventory", Some(2.5), &[("ship-order", "emitted order.shipped")]),
                hop("order.shipped", "ship-order", Some(40.0), &[("order-status", "duplicate")]),
            ],
        };
        let text = render(&timeline);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("SHIPPED") && lines[0].contains("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(lines[1].contains("start") && lines[1].contains("reserve-inventory: emitted inventory.reserved"));
        assert!(lines[3].contains("+40.0 ms") && lines[3].ends_with(SLOWEST), "{text}");
        assert!(!lines[2].contains(SLOWEST));
    }
}
