//! Orders still in flight (not terminal) created before a time: what the
//! saga-deadline sweeper and `choreo sagas stuck` read (ARCHITECTURE.md §7.9).
//!
//! An order id is a UUID v7, whose first 48 bits are its creation time in
//! milliseconds; its text form sorts like that time. So "created before T"
//! is "id below the smallest v7 id of T", a range on the key both stores
//! already have, and no creation-time attribute is needed.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{OrderRecord, Store, StoreError};
use crate::contract::domain::{OrderId, OrderStatus};

/// Orders read per page by [`all_open_orders`].
pub const OPEN_ORDERS_PAGE: usize = 100;

/// One page of orders not terminal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpenOrdersPage {
    /// The orders of the page: non-terminal, created before the bound asked.
    pub orders: Vec<OrderRecord>,
    /// Where the next page starts (`after`); `None`: this was the last.
    pub next: Option<OrderId>,
}

/// The statuses of an order still in flight, the ones the sweep looks for.
pub fn open_statuses() -> impl Iterator<Item = OrderStatus> {
    OrderStatus::ALL.iter().copied().filter(|status| !status.is_terminal())
}

/// The text every order id created before `time` sorts below: the v7 id of
/// `time`'s millisecond with every other bit zero.
pub fn created_before_bound(time: DateTime<Utc>) -> String {
    let millis = u128::from(time.timestamp_millis().max(0).unsigned_abs());
    Uuid::from_u128(millis << 80).hyphenated().to_string()
}

/// When the order was created: its id's v7 timestamp (`None` for an id
/// that is no v7 UUID, which `create-order` never makes).
pub fn created_at(order_id: OrderId) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = order_id.0.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
}

/// Every open order created before `created_before`, all pages.
pub async fn all_open_orders<S: Store + ?Sized>(
    store: &S,
    created_before: DateTime<Utc>,
) -> Result<Vec<OrderRecord>, StoreError> {
    let mut orders = Vec::new();
    let mut after = None;
    loop {
        let page = store.open_orders_page(created_before, after, OPEN_ORDERS_PAGE).await?;
        orders.extend(page.orders);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(orders),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_created_before_a_time_sort_below_its_bound() {
        let before = OrderId::new();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let now = Utc::now();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let after = OrderId::new();
        let bound = created_before_bound(now);
        assert!(before.to_string() < bound, "{before} vs {bound}");
        assert!(after.to_string() > bound, "{after} vs {bound}");
        let created = created_at(before).expect("a v7 id");
        assert!(created <= now && now - created < chrono::Duration::seconds(5), "{created} vs {now}");
    }

    #[test]
    fn only_terminal_statuses_are_left_out() {
        let open: Vec<OrderStatus> = open_statuses().collect();
        assert_eq!(open, [OrderStatus::Pending, OrderStatus::AwaitingStock, OrderStatus::Reserved]);
    }
}
