//! `order-status`: owns the order record. It moves the status forward as the
//! saga reports progress, records the history, and cancels the order (emitting
//! `order.cancelled`) when any step fails.

use shared::contract::domain::{CancelReason, OrderStatus};
use shared::contract::events::OrderCancelled;
use shared::step::{Decision, reaction, run_idempotent};
use shared::store::Write;
use shared::{Event, Function, Payload, Ports, Step, StepError};

pub const FUNCTION: Function = Function::OrderStatus;

pub struct UpdateOrderStatus;

/// What an event means for the order.
enum Change<'a> {
    Advance(OrderStatus),
    Ship(&'a str),
    Cancel(CancelReason, &'a str),
}

#[async_trait::async_trait]
impl Step for UpdateOrderStatus {
    fn function(&self) -> Function {
        FUNCTION
    }

    async fn handle(&self, event: &Event, ports: &Ports) -> Result<Vec<Event>, StepError> {
        let change = match &event.payload {
            Payload::InventoryReserved(_) => Change::Advance(OrderStatus::Reserved),
            Payload::InventoryInsufficient(_) => Change::Advance(OrderStatus::AwaitingStock),
            Payload::OrderShipped(shipped) => Change::Ship(&shipped.tracking_number),
            Payload::InventoryRejected(rejected) => Change::Cancel(rejected.reason, &rejected.detail),
            Payload::ReplenishmentFailed(failed) => Change::Cancel(failed.reason, &failed.detail),
            // A release after the saga deadline (ARCHITECTURE.md §7.9) cancels
            // like any other; once terminal, later events change nothing.
            Payload::InventoryReleased(released) => Change::Cancel(
                released.reason,
                match released.reason {
                    CancelReason::TimedOut => {
                        "the saga deadline passed before it shipped; any reserved stock was released"
                    }
                    _ => "the carrier could not ship it; the reserved stock was released",
                },
            ),
            _ => return Err(shared::step::not_consumed(FUNCTION, event)),
        };
        let store = &*ports.store;
        run_idempotent(FUNCTION, event, store, || async {
            // create-order stores the order before publishing order.created, so a
            // missing order is one whose store write is not visible yet: retry.
            let Some(mut order) = store.order(event.subject).await? else {
                return Err(StepError::Retryable(format!("order {} is not (yet) in the store", event.subject)));
            };
            order.record(event);
            let mut emit = Vec::new();
            match change {
                // Only forward: events can arrive out of order, and terminal is final.
                Change::Advance(status) if status.rank() > order.status.rank() => order.status = status,
                Change::Advance(_) => {}
                Change::Ship(tracking_number) if !order.status.is_terminal() => {
                    order.status = OrderStatus::Shipped;
                    order.tracking_number = Some(tracking_number.to_owned());
                }
                Change::Ship(_) => {}
                Change::Cancel(reason, detail) if !order.status.is_terminal() => {
                    order.status = OrderStatus::Cancelled;
                    order.cancel_reason = Some(reason);
                    let cancelled = reaction(
                        FUNCTION,
                        event,
                        Payload::OrderCancelled(OrderCancelled { reason, detail: detail.to_owned() }),
                    );
                    order.record(&cancelled);
                    emit.push(cancelled);
                }
                Change::Cancel(..) => {}
            }
            Ok(Decision { writes: vec![Write::Order(order)], emit })
        })
        .await
    }
}
