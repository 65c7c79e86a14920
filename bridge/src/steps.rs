//! Every saga step linked into this binary, looked up by function.

use std::sync::Arc;

use shared::{Function, Step};

/// One entry per consuming function of the choreography table (a test checks
/// that the two agree).
pub fn all() -> Vec<Arc<dyn Step>> {
    vec![
        Arc::new(reserve_inventory::ReserveInventory),
        Arc::new(replenish_stock::ReplenishStock),
        Arc::new(ship_order::ShipOrder),
        Arc::new(settle_inventory::SettleInventory),
        Arc::new(order_status::OrderStatusStep),
    ]
}

pub fn step_for(function: Function) -> Option<Arc<dyn Step>> {
    all().into_iter().find(|step| step.function() == function)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consuming_function_has_exactly_one_step() {
        let mut linked: Vec<Function> = all().iter().map(|step| step.function()).collect();
        linked.sort();
        let consumers: Vec<Function> = Function::consumers().collect();
        assert_eq!(linked, consumers);
    }
}
