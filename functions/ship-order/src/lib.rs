//! `ship-order`: hands a reserved order to the carrier, or reports that its
//! country is not served (`SHIP_COUNTRIES`), which starts the compensation.
//!
//! It is also the one place that decides whether goods leave when the saga
//! deadline passes (ARCHITECTURE.md §7.9). The shipment record, inserted at
//! version 0, is the single decision: either a parcel (shipped) or a
//! tombstone (timed out), never both, whichever commit comes first.
//! Interleavings, each tested in `tests/step.rs`:
//! - `inventory.reserved` then `order.deadline_reached`: shipped; the deadline
//!   changes nothing and the order completes as shipped.
//! - `order.deadline_reached` then `inventory.reserved` (a shipment in flight,
//!   or a reservation made after the deadline by a late `stock.replenished`):
//!   the tombstone answers the reservation with `shipment.failed` (timed_out),
//!   so `settle-inventory` releases it; nothing ships.
//! - Both at once: both try to insert the record at version 0; one commit
//!   conflicts, re-reads and sees the other's decision.
//! - The deadline twice (a redelivery, or a second sweep after its processed
//!   record was pruned): the processed record, or else the tombstone, answers
//!   it; a second `shipment.failed` is harmless downstream.
//! - No reservation yet at the deadline: `shipment.failed` names the order's
//!   lines anyway; `settle-inventory` releases what is reserved, if anything.

use shared::contract::domain::{CancelReason, Item};
use shared::contract::events::{OrderShipped, ShipmentFailed};
use shared::step::{Decision, reaction, run_idempotent};
use shared::store::{Shipment, Write};
use shared::{Event, Function, Payload, Ports, Step, StepError};

pub const FUNCTION: Function = Function::ShipOrder;

pub struct ShipOrder;

#[async_trait::async_trait]
impl Step for ShipOrder {
    fn function(&self) -> Function {
        FUNCTION
    }

    async fn handle(&self, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError> {
        match &event.payload {
            Payload::InventoryReserved(_) | Payload::OrderDeadlineReached(_) => {}
            _ => return Err(shared::step::not_consumed(FUNCTION, event)),
        }
        let store = &*ports.store;
        run_idempotent(FUNCTION, event, store, || async {
            let existing = store.shipment(event.subject).await?;
            match (&event.payload, existing) {
                (Payload::InventoryReserved(reserved), Some(shipment)) if shipment.is_timed_out() => {
                    tracing::warn!(order_id = %event.subject, "reserved after its deadline; not shipping");
                    Ok(timed_out(event, &reserved.items, vec![]))
                }
                (Payload::InventoryReserved(_), Some(_)) => {
                    tracing::warn!(order_id = %event.subject, "order already shipped; nothing to do");
                    Ok(Decision::default())
                }
                (Payload::InventoryReserved(reserved), None) => {
                    let country = &reserved.shipping_address.country;
                    if !ports.ship_countries.ships_to(country) {
                        let failed = ShipmentFailed {
                            items: reserved.items.clone(),
                            detail: format!("we do not ship to {country}"),
                            reason: CancelReason::ShipmentFailed,
                        };
                        return Ok(Decision {
                            writes: vec![],
                            emit: vec![reaction(FUNCTION, event, Payload::ShipmentFailed(failed))],
                        });
                    }
                    let tracking_number = tracking_number(event);
                    let shipment =
                        Shipment { order_id: event.subject, tracking_number: tracking_number.clone(), version: 0 };
                    let shipped = OrderShipped { items: reserved.items.clone(), tracking_number };
                    Ok(Decision {
                        writes: vec![Write::Shipment(shipment)],
                        emit: vec![reaction(FUNCTION, event, Payload::OrderShipped(shipped))],
                    })
                }
                (Payload::OrderDeadlineReached(_), Some(shipment)) => {
                    // Shipped first: the goods left, the order completes as shipped.
                    // Timed out already: the first deadline decided it.
                    tracing::info!(order_id = %event.subject, timed_out = shipment.is_timed_out(), "deadline: decided already");
                    Ok(Decision::default())
                }
                (Payload::OrderDeadlineReached(reached), None) => {
                    let tombstone = Write::Shipment(Shipment::timed_out(event.subject));
                    Ok(timed_out(event, &reached.items, vec![tombstone]))
                }
                _ => Err(shared::step::not_consumed(FUNCTION, event)),
            }
        })
        .await
    }
}

/// `shipment.failed` (timed_out) for `items`, with `writes`.
fn timed_out(event: &Event, items: &[Item], writes: Vec<Write>) -> Decision {
    let failed = ShipmentFailed {
        items: items.to_vec(),
        detail: "the saga deadline passed before the order shipped".to_owned(),
        reason: CancelReason::TimedOut,
    };
    Decision { writes, emit: vec![reaction(FUNCTION, event, Payload::ShipmentFailed(failed))] }
}

/// The random tail of the order's UUID v7: unique per order, stable on retries.
fn tracking_number(event: &Event) -> String {
    let hex = event.subject.0.simple().to_string().to_ascii_uppercase();
    format!("CHR{}", &hex[20..])
}
