//! `reserve-inventory`: reserves an order's units, all or nothing, or reports
//! the shortfall so `replenish-stock` can order it (ARCHITECTURE.md §4).

use std::collections::BTreeMap;

use shared::contract::domain::{Address, CancelReason, Item, OrderId, Sku, units_per_sku};
use shared::contract::events::{Attempt, InventoryInsufficient, InventoryRejected, InventoryReserved, SkuUnits};
use shared::step::{Decision, reaction, run_idempotent};
use shared::store::{Reservation, ReservationState, StockDelta, StockLevel, Write};
use shared::{Event, Function, Payload, Ports, Step, StepError};

pub const FUNCTION: Function = Function::ReserveInventory;

/// A reservation is retried after `stock.replenished` at most this many times.
pub const MAX_RESERVATION_RETRIES: Attempt = 3;

pub struct ReserveInventory;

#[async_trait::async_trait]
impl Step for ReserveInventory {
    fn function(&self) -> Function {
        FUNCTION
    }

    async fn handle(&self, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError> {
        let (items, address, attempt) = match &event.payload {
            Payload::OrderCreated(order) => (&order.items, &order.shipping_address, 1),
            Payload::StockReplenished(replenished) => {
                (&replenished.items, &replenished.shipping_address, replenished.attempt.saturating_add(1))
            }
            _ => return Err(shared::step::not_consumed(FUNCTION, event)),
        };
        let store = &*ports.store;
        run_idempotent(FUNCTION, event, store, || async {
            if store.reservation(event.subject).await?.is_some() {
                tracing::warn!(order_id = %event.subject, "order already holds a reservation; nothing to do");
                return Ok(Decision::default());
            }
            let wanted = units_per_sku(items);
            let skus: Vec<Sku> = wanted.keys().cloned().collect();
            let levels = store.stock(&skus).await?;
            Ok(decide(event, Request { order_id: event.subject, items, address, attempt }, &wanted, levels))
        })
        .await
    }
}

struct Request<'a> {
    /// The order to reserve for.
    order_id: OrderId,
    /// Its lines, as the event carried them.
    items: &'a [Item],
    /// Passed on in the event this step emits.
    address: &'a Address,
    /// This try's number; caps the reservation retries.
    attempt: Attempt,
}

fn decide(event: &Event, request: Request<'_>, wanted: &BTreeMap<Sku, u64>, levels: Vec<StockLevel>) -> Decision {
    let emit = |payload| Decision { writes: vec![], emit: vec![reaction(FUNCTION, event, payload)] };
    let levels: BTreeMap<Sku, StockLevel> = levels.into_iter().map(|level| (level.sku.clone(), level)).collect();

    let unknown: Vec<&str> = wanted.keys().filter(|sku| !levels.contains_key(*sku)).map(Sku::as_str).collect();
    if !unknown.is_empty() {
        return emit(Payload::InventoryRejected(InventoryRejected {
            reason: CancelReason::UnknownSku,
            detail: format!("unknown SKU: {}", unknown.join(", ")),
        }));
    }

    let shortfall: Vec<SkuUnits> = wanted
        .iter()
        .filter_map(|(sku, &units)| {
            let available = levels[sku].available;
            (units > available).then(|| SkuUnits { sku: sku.clone(), units: units - available })
        })
        .collect();
    if shortfall.is_empty() {
        // Relative writes: orders racing for one SKU do not conflict unless
        // the stock runs out meanwhile (then this step decides again).
        let mut writes: Vec<Write> =
            wanted.iter().map(|(sku, &units)| Write::StockDelta(StockDelta::reserve(sku.clone(), units))).collect();
        writes.push(Write::Reservation(Reservation {
            order_id: request.order_id,
            items: request.items.to_vec(),
            state: ReservationState::Reserved,
            version: 0,
        }));
        let reserved = InventoryReserved { items: request.items.to_vec(), shipping_address: request.address.clone() };
        return Decision { writes, emit: vec![reaction(FUNCTION, event, Payload::InventoryReserved(reserved))] };
    }

    let retries_done = request.attempt - 1;
    if retries_done >= MAX_RESERVATION_RETRIES {
        let missing: Vec<String> = shortfall.iter().map(|short| format!("{} x{}", short.sku, short.units)).collect();
        return emit(Payload::InventoryRejected(InventoryRejected {
            reason: CancelReason::OutOfStock,
            detail: format!("still short of {} after {MAX_RESERVATION_RETRIES} replenishments", missing.join(", ")),
        }));
    }
    emit(Payload::InventoryInsufficient(InventoryInsufficient {
        items: request.items.to_vec(),
        shipping_address: request.address.clone(),
        shortfall,
        attempt: request.attempt,
    }))
}
