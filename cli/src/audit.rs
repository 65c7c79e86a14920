//! The saga's invariants, checked over a store once a load is over: every
//! accepted order ended, none shipped twice or both shipped and cancelled,
//! and the stock says each effect happened exactly once (ARCHITECTURE.md §7.8).
//! `choreo bench` and the fault suite both end with it.
//!
//! It reads the store through its port, so it holds on every store. It
//! assumes the store was seeded for this load alone: the units shipped of
//! each SKU must be exactly what the shipped orders among `orders` hold.

use std::collections::BTreeMap;

use serde::Serialize;
use shared::contract::domain::{CancelReason, OrderId, OrderStatus};
use shared::contract::events::EventType;
use shared::store::{Store, StoreError};

use crate::workload::PathSpec;

/// What the audit found. [`Audit::holds`] says whether every invariant held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Orders the load was told were accepted.
    pub accepted: usize,
    /// Of those, orders shipped or cancelled.
    pub terminal: usize,
    /// Accepted, yet not terminal (or not stored at all).
    pub lost: usize,
    /// Cancelled because their saga deadline passed: terminal, but a sign that an event went missing.
    pub timed_out: usize,
    /// Terminal, but not as their path may end (e.g. a stocked order cancelled).
    pub unexpected_endings: usize,
    /// Orders whose history holds `order.shipped` more than once.
    pub shipped_twice: usize,
    /// Orders cancelled although they shipped.
    pub shipped_and_cancelled: usize,
    /// SKUs with more units shipped or held than ever existed.
    pub oversold_skus: Vec<String>,
    /// Each broken conservation rule, said in words.
    pub conservation_violations: Vec<String>,
}

impl Audit {
    /// Every order ended, nothing twice, nothing oversold, stock conserved.
    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.unexpected_endings == 0
            && self.shipped_twice == 0
            && self.shipped_and_cancelled == 0
            && self.oversold_skus.is_empty()
            && self.conservation_violations.is_empty()
    }
}

/// Audits `orders` (the ids a load was given, each with its path) and every SKU in `store`.
pub async fn audit(store: &dyn Store, orders: &[(OrderId, &PathSpec)]) -> Result<Audit, StoreError> {
    let mut audit = Audit { accepted: orders.len(), ..Audit::default() };
    let mut shipped_units: BTreeMap<String, u64> = BTreeMap::new();
    for &(order_id, path) in orders {
        let Some(order) = store.order(order_id).await? else {
            audit.lost += 1;
            continue;
        };
        let shipments =
            order.history.iter().filter(|entry| entry.event_type == EventType::OrderShipped.as_str()).count();
        audit.shipped_twice += usize::from(shipments > 1);
        match order.status {
            OrderStatus::Shipped => {
                audit.terminal += 1;
                for item in &order.items {
                    *shipped_units.entry(item.sku.to_string()).or_default() += u64::from(item.quantity.get());
                }
            }
            OrderStatus::Cancelled => {
                audit.terminal += 1;
                audit.shipped_and_cancelled += usize::from(shipments > 0 || order.tracking_number.is_some());
                audit.timed_out += usize::from(order.cancel_reason == Some(CancelReason::TimedOut));
            }
            _ => audit.lost += 1,
        }
        if order.status.is_terminal() && !path.endings.contains(&(order.status, order.cancel_reason)) {
            audit.unexpected_endings += 1;
        }
    }
    for level in store.all_stock().await? {
        let sku = level.sku.to_string();
        let existed = level.seeded + level.replenished;
        if level.shipped + level.reserved > existed {
            audit.oversold_skus.push(sku.clone());
        }
        if !level.is_conserved() {
            audit.conservation_violations.push(format!(
                "{sku}: available {} + reserved {} + shipped {} != seeded {} + replenished {}",
                level.available, level.reserved, level.shipped, level.seeded, level.replenished
            ));
        }
        let expected = shipped_units.remove(&sku).unwrap_or(0);
        if level.shipped != expected {
            audit
                .conservation_violations
                .push(format!("{sku}: {} units shipped, but the shipped orders hold {expected}", level.shipped));
        }
        // With every saga over, nothing may still be held.
        if audit.lost == 0 && level.reserved != 0 {
            audit
                .conservation_violations
                .push(format!("{sku}: {} units still reserved after every saga ended", level.reserved));
        }
    }
    for (sku, units) in shipped_units {
        audit
            .conservation_violations
            .push(format!("{sku}: shipped orders hold {units} units of a SKU the store lacks"));
    }
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use shared::contract::domain::Sku;
    use shared::contract::events::OrderShipped;
    use shared::store::{Commit, CommitOutcome, OrderRecord, StockDelta, Write};
    use shared::testkit::{TestStore, event, item, order_created, sku};
    use shared::{Function, Payload};

    use super::*;
    use crate::workload::PATHS;

    const SHIPS: &PathSpec = &PATHS[0];

    async fn commit(store: &TestStore, function: Function, writes: Vec<Write>) {
        let key = OrderId::new().to_string();
        let outcome = store.store.commit(Commit { function, key, writes, emitted: vec![] }).await.unwrap();
        assert_eq!(outcome, CommitOutcome::Committed);
    }

    /// GIVEN a stored order for 2 units of BENCH-STOCKED, changed by `change`.
    async fn order(store: &TestStore, change: impl FnOnce(&mut OrderRecord)) -> OrderId {
        let created = event(OrderId::new(), Payload::OrderCreated(order_created(vec![item("BENCH-STOCKED", 2)])));
        store.given_order(&created).await;
        let mut record = store.store.order(created.subject).await.unwrap().expect("stored");
        change(&mut record);
        commit(store, Function::OrderStatus, vec![Write::Order(record)]).await;
        created.subject
    }

    fn shipped(record: &mut OrderRecord) {
        let items = record.items.clone();
        let parcel = OrderShipped { items, tracking_number: "T-1".into() };
        record.record(&event(record.order_id, Payload::OrderShipped(parcel)));
        record.status = OrderStatus::Shipped;
        record.tracking_number = Some("T-1".into());
    }

    async fn ship_units(store: &TestStore, units: u64) {
        let delta = |make: fn(Sku, u64) -> StockDelta| Write::StockDelta(make(sku("BENCH-STOCKED"), units));
        commit(store, Function::ReserveInventory, vec![delta(StockDelta::reserve)]).await;
        commit(store, Function::SettleInventory, vec![delta(StockDelta::ship)]).await;
    }

    #[tokio::test]
    async fn a_shipped_order_whose_units_left_once_holds() {
        let store = TestStore::with_stock(&[("BENCH-STOCKED", 10, 0)]).await;
        let id = order(&store, shipped).await;
        ship_units(&store, 2).await;

        let audit = audit(&*store.store, &[(id, SHIPS)]).await.unwrap();
        assert!(audit.holds(), "{audit:?}");
        assert_eq!((audit.accepted, audit.terminal, audit.lost), (1, 1, 0));
    }

    #[tokio::test]
    async fn an_order_still_open_is_lost_and_its_held_units_are_not_flagged() {
        let store = TestStore::with_stock(&[("BENCH-STOCKED", 10, 0)]).await;
        let id = order(&store, |_| ()).await;
        commit(
            &store,
            Function::ReserveInventory,
            vec![Write::StockDelta(StockDelta::reserve(sku("BENCH-STOCKED"), 2))],
        )
        .await;

        let audit = audit(&*store.store, &[(id, SHIPS)]).await.unwrap();
        assert_eq!(audit.lost, 1);
        assert!(audit.conservation_violations.is_empty(), "{audit:?}");
        assert!(!audit.holds());
    }

    #[tokio::test]
    async fn units_shipped_twice_for_one_order_break_conservation() {
        let store = TestStore::with_stock(&[("BENCH-STOCKED", 10, 0)]).await;
        let id = order(&store, shipped).await;
        ship_units(&store, 2).await;
        ship_units(&store, 2).await;

        let audit = audit(&*store.store, &[(id, SHIPS)]).await.unwrap();
        assert_eq!(audit.conservation_violations, ["BENCH-STOCKED: 4 units shipped, but the shipped orders hold 2"]);
        assert!(!audit.holds());
    }

    #[tokio::test]
    async fn two_shipments_of_one_order_and_a_cancelled_shipped_order_are_counted() {
        let store = TestStore::with_stock(&[("BENCH-STOCKED", 10, 0)]).await;
        let twice = order(&store, |record| {
            shipped(record);
            shipped(record);
        })
        .await;
        let cancelled = order(&store, |record| {
            shipped(record);
            record.status = OrderStatus::Cancelled;
            record.cancel_reason = Some(CancelReason::ShipmentFailed);
        })
        .await;
        ship_units(&store, 2).await;

        let audit = audit(&*store.store, &[(twice, SHIPS), (cancelled, SHIPS)]).await.unwrap();
        assert_eq!((audit.shipped_twice, audit.shipped_and_cancelled, audit.unexpected_endings), (1, 1, 1));
        assert!(!audit.holds());
    }

    #[tokio::test]
    async fn units_held_after_every_saga_ended_are_a_violation() {
        let store = TestStore::with_stock(&[("BENCH-STOCKED", 10, 0)]).await;
        let id = order(&store, shipped).await;
        ship_units(&store, 2).await;
        commit(
            &store,
            Function::ReserveInventory,
            vec![Write::StockDelta(StockDelta::reserve(sku("BENCH-STOCKED"), 1))],
        )
        .await;

        let audit = audit(&*store.store, &[(id, SHIPS)]).await.unwrap();
        assert_eq!(audit.conservation_violations, ["BENCH-STOCKED: 1 units still reserved after every saga ended"]);
    }
}
