//! The five consuming functions: what each is given, fed, and leaves
//! behind, whatever the event source (`main.rs`: SQS and Amazon MQ;
//! `kafka.rs`: Amazon MSK and self-managed Kafka).

use std::sync::Arc;

use choreo_e2e::lambda_fixtures::cloudevent;
use shared::contract::domain::{CancelReason, OrderId, OrderStatus};
use shared::store::{ReservationState, Store};
use shared::testkit::{TestStore, event, item, order_created};
use shared::{EventType, Function, Payload, Step};

use order_status::UpdateOrderStatus;
use replenish_stock::ReplenishStock;
use reserve_inventory::ReserveInventory;
use settle_inventory::SettleInventory;
use ship_order::ShipOrder;

use shared::bus::amqp::SAGA_ENDED_QUEUE;

/// The one SKU of every fixture order (2 units each) and its stock.
pub const SKU: &str = "MUG-RED";
pub const UNITS: u64 = 2;
pub const AVAILABLE: u64 = 10;
pub const CATALOG: &[(&str, u64, u64)] = &[(SKU, AVAILABLE, 50)];

#[derive(Clone, Copy, Debug)]
pub enum Consumer {
    ReserveInventory,
    ReplenishStock,
    ShipOrder,
    SettleInventory,
    OrderStatus,
}

impl Consumer {
    pub fn step(self) -> Arc<dyn Step> {
        match self {
            Self::ReserveInventory => Arc::new(ReserveInventory),
            Self::ReplenishStock => Arc::new(ReplenishStock),
            Self::ShipOrder => Arc::new(ShipOrder),
            Self::SettleInventory => Arc::new(SettleInventory),
            Self::OrderStatus => Arc::new(UpdateOrderStatus),
        }
    }

    pub fn function(self) -> Function {
        self.step().function()
    }

    /// The CloudEvent fixture it is fed.
    pub fn input(self) -> &'static str {
        match self {
            Self::ReserveInventory => "cloudevent-order.created.json",
            Self::ReplenishStock => "cloudevent-inventory.insufficient.json",
            Self::ShipOrder => "cloudevent-inventory.reserved.json",
            Self::SettleInventory => "cloudevent-shipment.failed.json",
            Self::OrderStatus => "cloudevent-inventory.rejected.json",
        }
    }

    /// The event that input makes it emit, and a queue it is routed to.
    pub fn emits(self) -> (EventType, String) {
        match self {
            Self::ReserveInventory => (EventType::InventoryReserved, Function::ShipOrder.queue()),
            Self::ReplenishStock => (EventType::StockReplenished, Function::ReserveInventory.queue()),
            Self::ShipOrder => (EventType::OrderShipped, Function::SettleInventory.queue()),
            Self::SettleInventory => (EventType::InventoryReleased, Function::OrderStatus.queue()),
            Self::OrderStatus => (EventType::OrderCancelled, SAGA_ENDED_QUEUE.to_owned()),
        }
    }

    /// GIVEN what the saga left in the store before this step, for `order_id`.
    pub async fn given(self, given: &TestStore, order_id: OrderId) {
        match self {
            Self::ReserveInventory | Self::ReplenishStock | Self::ShipOrder => {}
            Self::SettleInventory => {
                given.given_reservation(order_id, &[item(SKU, 2)]).await;
            }
            Self::OrderStatus => {
                given.given_order(&event(order_id, Payload::OrderCreated(order_created(vec![item(SKU, 2)])))).await;
            }
        }
    }

    /// A fresh input event about `order_id`, as queue text.
    pub fn body(self, order_id: OrderId) -> String {
        cloudevent(self.input(), order_id)
    }

    /// THEN the step's effect is in the store for exactly the `handled` orders.
    pub async fn assert_effect(self, given: &TestStore, handled: &[OrderId]) {
        let n = handled.len() as u64;
        let stock = given.stock(SKU).await;
        let store = &given.store;
        match self {
            Self::ReserveInventory => {
                for &order_id in handled {
                    let reservation = store.reservation(order_id).await.expect("read").expect("a reservation");
                    assert_eq!(reservation.state, ReservationState::Reserved);
                }
                assert_eq!((stock.available, stock.reserved), (AVAILABLE - UNITS * n, UNITS * n));
            }
            Self::ReplenishStock => {
                assert_eq!((stock.available, stock.replenished), (AVAILABLE + UNITS * n, UNITS * n));
            }
            Self::ShipOrder => {
                for &order_id in handled {
                    let shipment = store.shipment(order_id).await.expect("read").expect("a shipment");
                    assert!(shipment.tracking_number.starts_with("CHR"), "{shipment:?}");
                }
            }
            Self::SettleInventory => {
                for &order_id in handled {
                    let reservation = store.reservation(order_id).await.expect("read").expect("a reservation");
                    assert_eq!(reservation.state, ReservationState::Released);
                }
                assert_eq!((stock.available, stock.reserved), (AVAILABLE, 0), "released units are back on the shelf");
            }
            Self::OrderStatus => {
                for &order_id in handled {
                    let order = store.order(order_id).await.expect("read").expect("the order");
                    assert_eq!(
                        (order.status, order.cancel_reason),
                        (OrderStatus::Cancelled, Some(CancelReason::UnknownSku))
                    );
                    let rejected =
                        order.history.iter().filter(|entry| entry.event_type == "inventory.rejected").count();
                    assert_eq!(rejected, 1, "the rejection is recorded once: {:?}", order.history);
                }
            }
        }
        given.assert_conserved().await;
    }
}
