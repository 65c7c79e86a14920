//! The storage port (ARCHITECTURE.md §8): the `Store` every
//! adapter (SQLite, DynamoDB) implements, and the rules of a commit, stated
//! here once so that adapters only translate them.
//!
//! Steps use optimistic concurrency: they read records with a `version`,
//! decide in pure code, then `commit` their writes, the consumed event's key
//! and the events they emit in one transaction. A commit fails with
//! `Conflict` when any record moved since it was read (the step re-reads and
//! decides again) and answers `Duplicate` with the first run's events when the
//! key was already processed. That one shape maps onto a SQLite transaction
//! and onto a DynamoDB `TransactWriteItems` with condition expressions.

pub mod counting;
mod dead_letters;
mod deliveries;
pub mod dynamodb;
mod open_orders;
mod outbox;
mod records;
mod retention;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod stock_import;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::contract::choreography::Function;
use crate::contract::domain::{OrderId, Sku};
use crate::contract::events::Event;

pub use dead_letters::{LetterState, StoredDeadLetter};
pub use deliveries::{DeliveryNote, DeliveryOutcome};
pub use open_orders::{
    OPEN_ORDERS_PAGE, OpenOrdersPage, all_open_orders, created_at, created_before_bound, open_statuses,
};
pub use outbox::{OutboxCursor, OutboxPage, UndecodableEntry};
pub use records::{
    HistoryEntry, OrderRecord, Reservation, ReservationState, SeedStock, Shipment, StockDelta, StockLevel,
};
pub use retention::{DEFAULT_PROCESSED_RETENTION, parse_retention, prune_forever};
pub use stock_import::{ImportError, ImportReport, import_stock, imported_level};

/// One record a step writes; its `version` is the version it read (0: must
/// not exist yet), except for `StockDelta`, which is relative and unversioned.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// A whole stock level: version 0 inserts it (seeding); a later version
    /// rewrites it if still at that version. Steps emit `StockDelta` instead.
    Stock(StockLevel),
    StockDelta(StockDelta),
    Reservation(Reservation),
    Order(OrderRecord),
    Shipment(Shipment),
}

/// The kinds of record a write can target (one table each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Stock,
    Reservation,
    Order,
    Shipment,
}

impl Write {
    /// The record this write targets: its kind and key.
    pub fn target(&self) -> (RecordKind, String) {
        match self {
            Self::Stock(level) => (RecordKind::Stock, level.sku.as_str().to_owned()),
            Self::StockDelta(delta) => (RecordKind::Stock, delta.sku.as_str().to_owned()),
            Self::Reservation(reservation) => (RecordKind::Reservation, reservation.order_id.to_string()),
            Self::Order(order) => (RecordKind::Order, order.order_id.to_string()),
            Self::Shipment(shipment) => (RecordKind::Shipment, shipment.order_id.to_string()),
        }
    }
}

/// A step's whole effect, applied atomically.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    /// Whose processed record it is: keys are unique per function.
    pub function: Function,
    /// The consumed event's id, or for `create-order` the idempotency key.
    pub key: String,
    /// The records it changes, all or none.
    pub writes: Vec<Write>,
    /// Stored with the key: a duplicate gets these back, and they form the
    /// outbox until `mark_published`.
    pub emitted: Vec<Event>,
}

impl Commit {
    /// Rule: a commit that writes one record twice answers `Conflict`
    /// without touching the store. A versioned second write is stale once the
    /// first applies, and DynamoDB refuses two operations on one item in a
    /// transaction; SQLite answers the same so that both stores agree.
    pub fn writes_a_record_twice(&self) -> bool {
        let mut targets = std::collections::HashSet::with_capacity(self.writes.len());
        !self.writes.iter().all(|write| targets.insert(write.target()))
    }

    /// Rule: a commit that emitted nothing is stored as published already
    /// (it never enters the outbox).
    pub fn is_published_when_committed(&self) -> bool {
        self.emitted.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    Committed,
    /// The key was processed before; these are the events emitted then.
    Duplicate(Vec<Event>),
    /// A record changed since it was read; read again and decide again.
    Conflict,
}

/// Events committed but not yet confirmed as published.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// The function that committed the events.
    pub function: Function,
    /// The commit's key, which `mark_published` takes.
    pub key: String,
    /// The events to publish, in emission order.
    pub events: Vec<Event>,
}

/// Store failures, split by whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- processed events (idempotency) and outbox ---
    async fn processed(&self, function: Function, key: &str) -> Result<Option<Vec<Event>>, StoreError>;
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError>;
    /// Every outbox entry committed before `committed_before` and neither
    /// published nor set aside, oldest first (all pages of
    /// [`Store::unpublished_page`]; an undecodable entry is an error here).
    async fn unpublished(&self, committed_before: DateTime<Utc>) -> Result<Vec<OutboxEntry>, StoreError> {
        outbox::read_all(self, committed_before).await
    }
    /// Rule: one page of the outbox, at most `limit` entries committed before
    /// `committed_before` and neither published nor set aside, in commit
    /// order, starting after `after` (the `next` of the previous page). An
    /// entry the store cannot decode comes back in `undecodable` instead of
    /// failing the page, so that one bad record never hides the others.
    async fn unpublished_page(
        &self,
        committed_before: DateTime<Utc>,
        after: Option<OutboxCursor>,
        limit: usize,
    ) -> Result<OutboxPage, StoreError>;
    /// Rule: publishing a processed record's events succeeded; it leaves the
    /// outbox and becomes prunable (see [`Store::prune_processed`]).
    async fn mark_published(&self, function: Function, key: &str) -> Result<(), StoreError>;
    /// The same mark, for a step that just published its own commit's
    /// events: it may return before the mark is stored (a mark lost in a
    /// crash only means the relay publishes the entry again, and consumers
    /// are idempotent), so a step does not wait for a second write. By
    /// default it is [`Store::mark_published`].
    async fn mark_published_soon(&self, function: Function, key: &str) -> Result<(), StoreError> {
        self.mark_published(function, key).await
    }
    /// Rule: an outbox entry that can never be published (unroutable,
    /// undecodable) leaves the outbox for good, durably, with `reason`; it is
    /// never retried and never pruned (an operator looks at it). `function`
    /// is the stored name, which may not be a known function. Setting aside
    /// an entry that was published meanwhile, or an unknown one, does nothing.
    async fn set_aside(&self, function: &str, key: &str, reason: &str) -> Result<(), StoreError>;
    /// Rule (retention): deletes the processed records that were published and
    /// committed more than the store's retention ago; answers how many. A
    /// store that expires them by itself (DynamoDB TTL on `expires_at`)
    /// answers 0. Unpublished and set-aside records are never pruned.
    async fn prune_processed(&self) -> Result<usize, StoreError>;

    // --- dead letters of the in-process bus (see `dead_letters.rs`) ---
    /// Rule: parks `letter` durably, one per (function, event id): parking it
    /// again replaces its error and attempts and makes it `Parked` again.
    /// Answers once the letter is durable. Test doubles may keep the default,
    /// which keeps nothing and says so.
    async fn park_dead_letter(&self, letter: &StoredDeadLetter) -> Result<(), StoreError> {
        Err(no_dead_letters(&letter.event.id.to_string()))
    }
    /// Rule: at most `limit` letters in `state`, oldest parked first.
    async fn dead_letters(&self, state: LetterState, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let _ = (state, limit);
        Err(no_dead_letters("any"))
    }
    /// Rule: turns the `Parked` letters of `function` (every function when
    /// `None`), only the one of event `event_id` when given, `Replaying`;
    /// answers how many. Letters already replaying are left (and not counted).
    async fn replay_dead_letters(
        &self,
        function: Option<Function>,
        event_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        let _ = function;
        Err(no_dead_letters(event_id.unwrap_or("any")))
    }
    /// Rule: the letter of (`function`, `event_id`) was handled after its
    /// replay: it leaves the store. An unknown letter is no error.
    async fn discard_dead_letter(&self, function: Function, event_id: &str) -> Result<(), StoreError> {
        let _ = function;
        Err(no_dead_letters(event_id))
    }

    // --- notes of deliveries that committed nothing new (see `deliveries.rs`) ---
    /// Rule: keeps `note` for the order's timeline; best effort (a failure
    /// changes nothing in the saga). A store that keeps none answers `Ok`,
    /// and its timelines show only what the processed records hold.
    async fn note_delivery(&self, note: &DeliveryNote) -> Result<(), StoreError> {
        let _ = note;
        Ok(())
    }
    /// Rule: every note kept of `order_id`'s deliveries, oldest first.
    async fn delivery_notes(&self, order_id: OrderId) -> Result<Vec<DeliveryNote>, StoreError> {
        let _ = order_id;
        Ok(vec![])
    }
    /// Rule (retention): deletes the notes older than the store's retention of
    /// processed records, whose deliveries they annotate; answers how many.
    async fn prune_delivery_notes(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    // --- inventory ---
    /// Stock of the SKUs that exist; unknown SKUs are simply absent.
    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockLevel>, StoreError>;
    async fn all_stock(&self) -> Result<Vec<StockLevel>, StoreError>;
    async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError>;
    /// Seeds the catalog when it is empty; answers how many SKUs it wrote.
    async fn seed_if_empty(&self, catalog: &[SeedStock]) -> Result<usize, StoreError>;
    /// A versioned write of one whole stock level, outside any step: version
    /// 0 inserts it if the SKU is absent, a later version rewrites it if it is
    /// still at that version (the stored version becomes `version + 1`).
    /// Answers `false`, writing nothing, when the condition fails. Stock
    /// imports ([`import_stock`]) are built on it.
    async fn put_stock(&self, level: &StockLevel) -> Result<bool, StoreError>;

    // --- orders ---
    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError>;
    /// Rule: at most `limit` orders whose status is not terminal and that
    /// were created before `created_before` (by their id's v7 time, see
    /// `open_orders.rs`), starting after order `after` (the `next` of the
    /// previous page); `next` is `None` on the last page. Pages may hold
    /// fewer than `limit` orders and still have a `next`. Test doubles may
    /// keep the default, which lists nothing and says so.
    async fn open_orders_page(
        &self,
        created_before: DateTime<Utc>,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<OpenOrdersPage, StoreError> {
        let _ = (created_before, after, limit);
        Err(StoreError::Unavailable("this store cannot list open orders".to_owned()))
    }

    // --- shipping ---
    async fn shipment(&self, order_id: OrderId) -> Result<Option<Shipment>, StoreError>;
}

/// What the default dead-letter methods answer: this store keeps none.
fn no_dead_letters(event_id: &str) -> StoreError {
    StoreError::Unavailable(format!("this store keeps no dead letters (event {event_id})"))
}
