//! A store that counts what goes through it: item reads, commits and the
//! items they write, and outbox marks. `choreo bench` reports these per saga,
//! the measured basis of what an order costs on a pay-per-request store
//! (README, "Cost per order"). It adds two atomic increments per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    Commit, CommitOutcome, DeliveryNote, LetterState, OpenOrdersPage, OrderRecord, OutboxCursor, OutboxPage,
    Reservation, SeedStock, Shipment, StockLevel, Store, StoreError, StoredDeadLetter,
};
use crate::contract::choreography::Function;
use crate::contract::domain::{OrderId, Sku};
use crate::contract::events::Event;

/// What went through a [`CountingStore`] so far.
#[derive(Debug, Default)]
pub struct StoreCounts {
    /// Records read by key (a DynamoDB `GetItem` each).
    item_reads: AtomicU64,
    /// Commits, each one transaction (a `TransactWriteItems` on DynamoDB).
    commits: AtomicU64,
    /// Items those commits wrote: their records plus the processed record.
    transactional_item_writes: AtomicU64,
    /// Writes outside any transaction: outbox marks and timeline notes (an `UpdateItem` each).
    single_item_writes: AtomicU64,
}

/// A snapshot of [`StoreCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreCountsSnapshot {
    pub item_reads: u64,
    pub commits: u64,
    pub transactional_item_writes: u64,
    pub single_item_writes: u64,
}

impl StoreCounts {
    pub fn snapshot(&self) -> StoreCountsSnapshot {
        StoreCountsSnapshot {
            item_reads: self.item_reads.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            transactional_item_writes: self.transactional_item_writes.load(Ordering::Relaxed),
            single_item_writes: self.single_item_writes.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, count: usize) {
        counter.fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// `inner`, counted into `counts`.
pub struct CountingStore {
    pub inner: Arc<dyn Store>,
    pub counts: Arc<StoreCounts>,
}

#[async_trait]
impl Store for CountingStore {
    async fn processed(&self, function: Function, key: &str) -> Result<Option<Vec<Event>>, StoreError> {
        StoreCounts::add(&self.counts.item_reads, 1);
        self.inner.processed(function, key).await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        StoreCounts::add(&self.counts.commits, 1);
        StoreCounts::add(&self.counts.transactional_item_writes, commit.writes.len() + 1);
        self.inner.commit(commit).await
    }

    async fn unpublished_page(
        &self,
        committed_before: DateTime<Utc>,
        after: Option<OutboxCursor>,
        limit: usize,
    ) -> Result<OutboxPage, StoreError> {
        self.inner.unpublished_page(committed_before, after, limit).await
    }

    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError> {
        StoreCounts::add(&self.counts.single_item_writes, 1);
        self.inner.mark_published(function, key).await
    }

    async fn mark_published_soon(&self, function: Function, key: &str) -> Result<(), StoreError> {
        StoreCounts::add(&self.counts.single_item_writes, 1);
        self.inner.mark_published_soon(function, key).await
    }

    async fn set_aside(&self, function: &str, key: &str, reason: &str) -> Result<(), StoreError> {
        self.inner.set_aside(function, key, reason).await
    }

    async fn prune_processed(&self) -> Result<usize, StoreError> {
        self.inner.prune_processed().await
    }

    async fn park_dead_letter(&self, letter: &StoredDeadLetter) -> Result<(), StoreError> {
        self.inner.park_dead_letter(letter).await
    }

    async fn dead_letters(&self, state: LetterState, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.inner.dead_letters(state, limit).await
    }

    async fn replay_dead_letters(
        &self,
        function: Option<Function>,
        event_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.inner.replay_dead_letters(function, event_id).await
    }

    async fn discard_dead_letter(&self, function: Function, event_id: &str) -> Result<(), StoreError> {
        self.inner.discard_dead_letter(function, event_id).await
    }

    async fn note_delivery(&self, note: &DeliveryNote) -> Result<(), StoreError> {
        StoreCounts::add(&self.counts.single_item_writes, 1);
        self.inner.note_delivery(note).await
    }

    async fn delivery_notes(&self, order_id: OrderId) -> Result<Vec<DeliveryNote>, StoreError> {
        self.inner.delivery_notes(order_id).await
    }

    async fn prune_delivery_notes(&self) -> Result<usize, StoreError> {
        self.inner.prune_delivery_notes().await
    }

    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, StoreError> {
        StoreCounts::add(&self.counts.item_reads, skus.len());
        self.inner.stock(skus).await
    }

    async fn all_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.inner.all_stock().await
    }

    async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        StoreCounts::add(&self.counts.item_reads, 1);
        self.inner.reservation(order_id).await
    }

    async fn seed_if_empty(&self, catalog: &[SeedStock]) -> Result<usize, StoreError> {
        self.inner.seed_if_empty(catalog).await
    }

    async fn put_stock(&self, level: &StockLevel) -> Result<bool, StoreError> {
        self.inner.put_stock(level).await
    }

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        StoreCounts::add(&self.counts.item_reads, 1);
        self.inner.order(order_id).await
    }

    async fn open_orders_page(
        &self,
        created_before: DateTime<Utc>,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<OpenOrdersPage, StoreError> {
        self.inner.open_orders_page(created_before, after, limit).await
    }

    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError> {
        StoreCounts::add(&self.counts.item_reads, 1);
        self.inner.shipment(order_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;
    use crate::testkit::{TestStore, sku};

    #[tokio::test]
    async fn reads_commits_and_marks_are_counted_as_items() {
        let test = TestStore::with_stock(&[("A-1", 5, 0), ("B-2", 5, 0)]).await;
        let counts = Arc::new(StoreCounts::default());
        let store = CountingStore { inner: test.store.clone(), counts: Arc::clone(&counts) };

        store.stock(&[sku("A-1"), sku("B-2")]).await.unwrap();
        store.order(OrderId::new()).await.unwrap();
        let delta = |name| Write::StockDelta(crate::store::StockDelta::reserve(sku(name), 1));
        let commit = Commit {
            function: Function::ReserveInventory,
            key: "k-1".into(),
            writes: vec![delta("A-1"), delta("B-2")],
            emitted: vec![],
        };
        store.commit(commit).await.unwrap();
        store.mark_published(Function::ReserveInventory, "k-1").await.unwrap();

        assert_eq!(
            counts.snapshot(),
            StoreCountsSnapshot { item_reads: 3, commits: 1, transactional_item_writes: 3, single_item_writes: 1 }
        );
    }
}
