//! Every saga step linked into this binary, found from the choreography
//! table: `step_for` matches on every `Function`, so a new function does
//! not compile until it says which step (if any) consumes its queue.

use std::sync::Arc;

use shared::{Function, Step};

/// The step that handles `function`'s events; `None` for the HTTP-only
/// functions and the scheduled sweeper (`shared::saga`), which consume nothing.
pub fn step_for(function: Function) -> Option<Arc<dyn Step>> {
    Some(match function {
        Function::ReserveInventory => Arc::new(reserve_inventory::ReserveInventory),
        Function::ReplenishStock => Arc::new(replenish_stock::ReplenishStock),
        Function::ShipOrder => Arc::new(ship_order::ShipOrder),
        Function::SettleInventory => Arc::new(settle_inventory::SettleInventory),
        Function::OrderStatus => Arc::new(order_status::UpdateOrderStatus),
        Function::CreateOrder | Function::OrderQuery | Function::SagaDeadline => return None,
    })
}

/// One step per consuming function of the choreography table.
pub fn all() -> Vec<Arc<dyn Step>> {
    Function::consumers().filter_map(step_for).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consuming_function_has_exactly_its_own_step() {
        for function in Function::all() {
            let step = step_for(function);
            assert_eq!(
                step.is_some(),
                !function.spec().consumes.is_empty(),
                "{function}: step presence disagrees with the table"
            );
            if let Some(step) = step {
                assert_eq!(step.function(), function, "the step linked for {function} is another function's");
            }
        }
    }
}
