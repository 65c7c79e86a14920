//! `settle-inventory`: once an order ships its reserved units leave the
//! warehouse (reserved → shipped); when shipping fails they go back on the
//! shelf (reserved → available), the saga's compensation.

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
        let (items, outcome): (&[Item], _) = match &event.payload {
            Payload::OrderShipped(shipped) => (&shipped.items, ReservationState::Shipped),
            Payload::ShipmentFailed(failed) => (&failed.items, ReservationState::Released),
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
            let Some(mut reservation) = store.reservation(event.subject).await? else {
                return Err(StepError::Permanent(format!("order {} holds no reservation to settle", event.subject)));
            };
            if reservation.state != ReservationState::Reserved {
                tracing::warn!(order_id = %event.subject, state = ?reservation.state, "reservation already settled");
                return Ok(Decision::default());
            }
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
            let emit = match outcome {
                ReservationState::Shipped => vec![],
                _ => vec![reaction(
                    FUNCTION,
                    event,
                    Payload::InventoryReleased(InventoryReleased {
                        items: items.to_vec(),
                        reason: CancelReason::ShipmentFailed,
                    }),
                )],
            };
            Ok(Decision { writes, emit })
        })
        .await
    }
}
