//! The orders a load drives through the saga: which path each takes, the
//! body that drives it there, the catalog that makes it so, and how each
//! path may end. Shared by `choreo bench` and the fault suite.

use serde_json::{Value, json};
use shared::contract::domain::{CancelReason, OrderStatus, Sku};
use shared::store::SeedStock;

/// Which saga paths the orders take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Every order ships straight away.
    Ship,
    /// All five paths of ARCHITECTURE.md §4, in fixed proportions.
    Mixed,
}

/// How an order may end: its status and, when cancelled, why.
pub type Ending = (OrderStatus, Option<CancelReason>);

/// One saga path: the order line and country that drive it, and its endings.
#[derive(Debug)]
pub struct PathSpec {
    /// The path's name in reports.
    pub name: &'static str,
    pub sku: &'static str,
    pub quantity: u32,
    pub country: &'static str,
    /// How an order on this path may end.
    pub endings: &'static [Ending],
}

const SHIPPED: Ending = (OrderStatus::Shipped, None);
const OUT_OF_STOCK: Ending = (OrderStatus::Cancelled, Some(CancelReason::OutOfStock));

/// The paths, declared once.
pub const PATHS: &[PathSpec] = &[
    PathSpec { name: "shipped", sku: "BENCH-STOCKED", quantity: 1, country: "FR", endings: &[SHIPPED] },
    // Replenished units are free for any order: one that keeps losing them to
    // others runs out of replenishment attempts and is cancelled out_of_stock.
    PathSpec {
        name: "replenished_shipped",
        sku: "BENCH-SCARCE",
        quantity: 3,
        country: "FR",
        endings: &[SHIPPED, OUT_OF_STOCK],
    },
    PathSpec { name: "out_of_stock", sku: "BENCH-DISCONTINUED", quantity: 5, country: "FR", endings: &[OUT_OF_STOCK] },
    PathSpec {
        name: "shipment_failed",
        sku: "BENCH-STOCKED",
        quantity: 1,
        country: "AQ",
        endings: &[(OrderStatus::Cancelled, Some(CancelReason::ShipmentFailed))],
    },
    PathSpec {
        name: "unknown_sku",
        sku: "BENCH-MISSING",
        quantity: 1,
        country: "FR",
        endings: &[(OrderStatus::Cancelled, Some(CancelReason::UnknownSku))],
    },
];

/// The path of the `index`-th order.
pub fn path_of(index: usize, mix: Mix) -> &'static PathSpec {
    match mix {
        Mix::Ship => &PATHS[0],
        // 60% ship, 10% each other path.
        Mix::Mixed => &PATHS[[0, 0, 0, 0, 0, 0, 1, 2, 3, 4][index % 10]],
    }
}

/// Stock for `orders` orders of any mix: the stocked SKU never runs out, the
/// scarce one always needs the supplier, the discontinued one never comes.
pub fn catalog(orders: usize) -> Vec<SeedStock> {
    let units = u64::try_from(orders).unwrap_or(u64::MAX / 4) * 4;
    let entry = |sku: &str, available, max_replenish| SeedStock {
        // Fixed, valid SKUs.
        sku: Sku::parse(sku).expect("bench SKUs are valid"),
        available,
        max_replenish,
    };
    vec![entry("BENCH-STOCKED", units, 0), entry("BENCH-SCARCE", 0, 1000), entry("BENCH-DISCONTINUED", 0, 0)]
}

/// The body of the `index`-th order on `path`.
pub fn order_body(index: usize, path: &PathSpec) -> Value {
    json!({
        "customer_id": format!("bench-{}", index % 100),
        "items": [{"sku": path.sku, "quantity": path.quantity}],
        "shipping_address": {"name": "Bench", "line1": "1 Load St", "city": "Lyon", "postal_code": "69001", "country": path.country}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixed_bench_covers_every_path() {
        let paths: std::collections::BTreeSet<&str> = (0..10).map(|index| path_of(index, Mix::Mixed).name).collect();
        assert_eq!(paths.len(), PATHS.len());
    }
}
