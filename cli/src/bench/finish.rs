//! When each benchmarked order ended, as its waiting client learns it.
//!
//! Each waiting client has a slot of its own: an order that ends wakes only
//! its own client. (A shared `Notify` woke every one of them at every end,
//! work that grew with concurrency squared and showed in profiles at 256.)

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use shared::contract::domain::OrderId;
use tokio::sync::oneshot;

/// When and how an order ended.
pub(super) type Ended = (Instant, &'static str);

enum Slot {
    /// Ended before its client asked.
    Ended(Ended),
    /// Its client waits for it.
    Awaited(oneshot::Sender<Ended>),
}

/// Terminal instants of the run's orders, and its step count.
#[derive(Default)]
pub(super) struct Finish {
    slots: Mutex<HashMap<OrderId, Slot>>,
    /// Saga steps handled so far (the report's message count).
    pub(super) steps: AtomicUsize,
    /// Events those steps emitted.
    pub(super) emitted: AtomicUsize,
}

impl Finish {
    /// Records that `order_id` ended now with `outcome`; only its first end counts.
    pub(super) fn record(&self, order_id: OrderId, outcome: &'static str) {
        let ended = (Instant::now(), outcome);
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match slots.entry(order_id) {
            Entry::Vacant(vacant) => {
                vacant.insert(Slot::Ended(ended));
            }
            // An end recorded already stays: only the first counts.
            Entry::Occupied(mut occupied) => {
                if matches!(occupied.get(), Slot::Awaited(_))
                    && let Slot::Awaited(waiter) = occupied.insert(Slot::Ended(ended))
                {
                    let _ = waiter.send(ended);
                }
            }
        }
    }

    /// When `order_id` ended, waiting up to `timeout` for it.
    pub(super) async fn wait(&self, order_id: OrderId, timeout: Duration) -> Option<Ended> {
        let ended = {
            let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(Slot::Ended(ended)) = slots.get(&order_id) {
                return Some(*ended);
            }
            let (waiter, ended) = oneshot::channel();
            slots.insert(order_id, Slot::Awaited(waiter));
            ended
        };
        tokio::time::timeout(timeout, ended).await.ok()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_end_before_the_wait_is_kept_and_the_first_end_counts() {
        let finish = Finish::default();
        let order = OrderId::new();
        finish.record(order, "SHIPPED");
        finish.record(order, "CANCELLED");
        let (_, outcome) = finish.wait(order, Duration::from_millis(10)).await.unwrap();
        assert_eq!(outcome, "SHIPPED");
    }

    #[tokio::test]
    async fn a_waiting_client_is_woken_by_its_own_order_only() {
        let finish = std::sync::Arc::new(Finish::default());
        let (mine, other) = (OrderId::new(), OrderId::new());
        let waiting = tokio::spawn({
            let finish = std::sync::Arc::clone(&finish);
            async move { finish.wait(mine, Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        finish.record(other, "SHIPPED");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "another order's end must not answer this wait");
        finish.record(mine, "CANCELLED");
        assert_eq!(waiting.await.unwrap().map(|(_, outcome)| outcome), Some("CANCELLED"));
    }

    #[tokio::test]
    async fn a_wait_gives_up_after_its_timeout() {
        let finish = Finish::default();
        assert!(finish.wait(OrderId::new(), Duration::from_millis(10)).await.is_none());
    }
}
