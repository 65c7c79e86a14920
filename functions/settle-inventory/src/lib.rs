//! `settle-inventory`: once an order ships its reserved units leave the
//! warehouse (reserved → shipped); when shipping fails they go back on the
//! shelf (reserved → available), the saga's compensation.
//!
//! A `shipment.failed` for the saga deadline (`timed_out`, ARCHITECTURE.md
//! §7.9) may find no reservation (the order never got one, or not yet) or
//! one released already: there is nothing to release, but it still answers
//! `inventory.released` (no lines) so that `order-status` cancels the order.
//! A reservation made after that (a late `stock.replenished`) sends its own
//! `inventory.reserved` to `ship-order`, whose tombstone answers it with
//! another `shipment.failed`, and that one releases it: stock held for a
//! timed-out order is always given back.

use shared::contract::domain::{CancelReason, Item, Sku, units_per_sku};
use shared::contract::events::InventoryReleased;
use shared::step::{Decision, reaction, run_idempotent};
use shared::store::{ReservationState, StockDelta, Write};
use shared::{Event, Function, Payload, Ports, Step, StepError};

pub const FUNCTION: Function = Function::SettleInventory;

pub struct SettleInventory;

#[async_trait::async_trait]
impl Step for SettleInventory {
    fn function(&self) -> Function {
        FUNCTION
    }

    async fn handle(&self, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError> {
        let (items, outcome, reason): (&[Item], _, _) = match &event.payload {
            Payload::OrderShipped(shipped) => (&shipped.items, ReservationState::Shipped, None),
            Payload::ShipmentFailed(failed) => (&failed.items, ReservationState::Released, Some(failed.reason)),
            _ => return Err(shared::step::not_consumed(FUNCTION, event)),
        };
        let store = &*ports.store;
        run_idempotent(FUNCTION, event, store, || async {
            // Stock before reservation: if a twin delivery settles in between,
            // this step sees the reservation settled, never a still-reserved
            // order with released stock. The stock deltas carry no version;
            // the reservation's versioned write is what keeps a twin that read
            // it still reserved from settling it twice (its commit conflicts).
            let skus: Vec<Sku> = units_per_sku(items).into_keys().collect();
            let levels = store.stock(&skus).await?;
            let timed_out = reason == Some(CancelReason::TimedOut);
            let mut reservation = match store.reservation(event.subject).await? {
                Some(held) if held.state == ReservationState::Reserved => held,
                // Nothing held (yet), or released already: nothing to
                // release, and the order is cancelled all the same.
                None if timed_out => return Ok(cancel_only(event)),
                Some(settled) if timed_out && settled.state == ReservationState::Released => {
                    return Ok(cancel_only(event));
                }
                None => {
                    return Err(StepError::Permanent(format!(
                        "order {} holds no reservation to settle",
                        event.subject
                    )));
                }
                Some(settled) => {
                    // Shipped stays shipped, whatever arrives late.
                    tracing::warn!(order_id = %event.subject, state = ?settled.state, "reservation already settled");
                    return Ok(Decision::default());
                }
            };
            let units = units_per_sku(&reservation.items);
            if units.keys().ne(skus.iter()) {
                return Err(StepError::Permanent(format!(
                    "{} names other SKUs than order {}'s reservation",
                    event.event_type(),
                    event.subject
                )));
            }
            let mut writes = Vec::with_capacity(levels.len() + 1);
            for level in levels {
                let held = units[&level.sku];
                if level.reserved < held {
                    return Err(StepError::Permanent(format!(
                        "{} has {} reserved, fewer than the {held} held",
                        level.sku, level.reserved
                    )));
                }
                // Relative: settling does not conflict with other orders of the SKU.
                let delta = match outcome {
                    ReservationState::Shipped => StockDelta::ship(level.sku, held),
                    _ => StockDelta::release(level.sku, held),
                };
                writes.push(Write::StockDelta(delta));
            }
            reservation.state = outcome;
            writes.push(Write::Reservation(reservation));
            let emit = match reason {
                None => vec![],
                Some(reason) => vec![released(event, items.to_vec(), reason)],
            };
            Ok(Decision { writes, emit })
        })
        .await
    }
}

/// For a timed-out order with nothing held: `inventory.released` of no lines.
fn cancel_only(event: &Event) -> Decision {
    Decision { writes: vec![], emit: vec![released(event, vec![], CancelReason::TimedOut)] }
}

/// `inventory.released` of `items` (none: nothing was held) for `reason`.
fn released(event: &Event, items: Vec<Item>, reason: CancelReason) -> Event {
    reaction(FUNCTION, event, Payload::InventoryReleased(InventoryReleased { items, reason }))
}
