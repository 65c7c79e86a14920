//! `replenish-stock`: orders an order's shortfall from the supplier, within
//! each SKU's `max_replenish` (ARCHITECTURE.md §4). The supplier delivers at once,
//! so the step is deterministic and every path can be driven from outside.

use std::collections::BTreeMap;

use shared::contract::domain::{CancelReason, Sku};
use shared::contract::events::{ReplenishmentFailed, StockReplenished};
use shared::step::{Decision, reaction, run_idempotent};
use shared::store::{StockDelta, Write};
use shared::{Event, Function, Payload, Ports, Step, StepError};

pub const FUNCTION: Function = Function::ReplenishStock;

pub struct ReplenishStock;

#[async_trait::async_trait]
impl Step for ReplenishStock {
    fn function(&self) -> Function {
        FUNCTION
    }

    async fn handle(&self, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError> {
        let Payload::InventoryInsufficient(insufficient) = &event.payload else {
            return Err(shared::step::not_consumed(FUNCTION, event));
        };
        let store = &*ports.store;
        run_idempotent(FUNCTION, event, store, || async {
            // One write per SKU, even if a malformed event names a SKU twice.
            let mut wanted: BTreeMap<&Sku, u64> = BTreeMap::new();
            for short in &insufficient.shortfall {
                let total = wanted.entry(&short.sku).or_default();
                // Event data is untrusted: a sum past u64 is a malformed event, not a wrap to a small order.
                *total = total.checked_add(short.units).ok_or_else(|| {
                    StepError::Permanent(format!(
                        "{} is malformed: its shortfall of {} adds up to more than {} units",
                        event.event_type(),
                        short.sku,
                        u64::MAX
                    ))
                })?;
            }
            let skus: Vec<Sku> = wanted.keys().map(|&sku| sku.clone()).collect();
            let levels = store.stock(&skus).await?;
            let mut writes = Vec::with_capacity(levels.len());
            let mut refused = Vec::new();
            for (sku, units) in wanted {
                match levels.iter().find(|level| &level.sku == sku) {
                    None => refused.push(format!("{sku} is not in the catalog")),
                    Some(level) if level.max_replenish == 0 => refused.push(format!("{sku} is discontinued")),
                    Some(level) if units > level.max_replenish => refused.push(format!(
                        "{sku} is short {units} units, more than the supplier delivers at once ({})",
                        level.max_replenish
                    )),
                    Some(_) => writes.push(Write::StockDelta(StockDelta::replenish(sku.clone(), units))),
                }
            }
            // All or nothing, like the reservation it serves: a partial delivery
            // would strand stock for an order that is cancelled anyway.
            let payload = if refused.is_empty() {
                Payload::StockReplenished(StockReplenished {
                    items: insufficient.items.clone(),
                    shipping_address: insufficient.shipping_address.clone(),
                    replenished: insufficient.shortfall.clone(),
                    attempt: insufficient.attempt,
                })
            } else {
                writes.clear();
                Payload::ReplenishmentFailed(ReplenishmentFailed {
                    reason: CancelReason::OutOfStock,
                    detail: refused.join("; "),
                })
            };
            Ok(Decision { writes, emit: vec![reaction(FUNCTION, event, payload)] })
        })
        .await
    }
}
