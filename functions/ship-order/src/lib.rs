//! `ship-order`: hands a reserved order to the carrier, or reports that its
//! country is not served (`SHIP_COUNTRIES`), which starts the compensation.

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
        let Payload::InventoryReserved(reserved) = &event.payload else {
            return Err(shared::step::not_consumed(FUNCTION, event));
        };
        let store = &*ports.store;
        run_idempotent(FUNCTION, event, store, || async {
            if store.shipment(event.subject).await?.is_some() {
                tracing::warn!(order_id = %event.subject, "order already shipped; nothing to do");
                return Ok(Decision::default());
            }
            let country = &reserved.shipping_address.country;
            if !ports.ship_countries.ships_to(country) {
                let failed =
                    ShipmentFailed { items: reserved.items.clone(), detail: format!("we do not ship to {country}") };
                return Ok(Decision {
                    writes: vec![],
                    emit: vec![reaction(FUNCTION, event, Payload::ShipmentFailed(failed))],
                });
            }
            let tracking_number = tracking_number(event);
            let shipment = Shipment { order_id: event.subject, tracking_number: tracking_number.clone(), version: 0 };
            let shipped = OrderShipped { items: reserved.items.clone(), tracking_number };
            Ok(Decision {
                writes: vec![Write::Shipment(shipment)],
                emit: vec![reaction(FUNCTION, event, Payload::OrderShipped(shipped))],
            })
        })
        .await
    }
}

/// The random tail of the order's UUID v7: unique per order, stable on retries.
fn tracking_number(event: &Event) -> String {
    let hex = event.subject.0.simple().to_string().to_ascii_uppercase();
    format!("CHR{}", &hex[20..])
}
