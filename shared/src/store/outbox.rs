//! Reading the outbox in pages: the page, its cursor, and the entries a
//! store could not decode. The relay (`crate::bus::relay`) walks the pages.

use chrono::{DateTime, Utc};

use super::{OutboxEntry, Store, StoreError};

/// How many entries [`read_all`] asks for per page.
const READ_ALL_PAGE: usize = 500;

/// Where the next page of the outbox starts: the last entry of the page
/// before. Stores read the outbox by commit time; entries committed in the
/// same millisecond come in an order of the store's own, the same on every
/// read (SQLite: function name, then key; DynamoDB: the index's order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxCursor {
    /// Commit time of that entry, Unix milliseconds.
    pub committed_at_ms: i64,
    /// Its function's stored name.
    pub function: String,
    /// Its key (event id or idempotency key).
    pub key: String,
}

/// An outbox record a store could not turn into an [`OutboxEntry`] (an
/// unknown function name, events that no longer decode): it can never be
/// published, so the relay sets it aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndecodableEntry {
    /// The stored function name.
    pub function: String,
    /// The stored key.
    pub key: String,
    /// Why it cannot be decoded.
    pub reason: String,
}

/// One page of the outbox.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutboxPage {
    /// The entries that decoded, in commit order.
    pub entries: Vec<OutboxEntry>,
    /// The records of this page that did not decode.
    pub undecodable: Vec<UndecodableEntry>,
    /// Where the next page starts; `None` when this page was the last.
    pub next: Option<OutboxCursor>,
}

/// Every page of the outbox, as one list; an undecodable record is an error.
pub(super) async fn read_all<S: Store + ?Sized>(
    store: &S,
    committed_before: DateTime<Utc>,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let page = store.unpublished_page(committed_before, after, READ_ALL_PAGE).await?;
        if let Some(bad) = page.undecodable.first() {
            return Err(StoreError::Corrupt(format!(
                "outbox entry {} of {} cannot be decoded: {}",
                bad.key, bad.function, bad.reason
            )));
        }
        entries.extend(page.entries);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(entries),
        }
    }
}
