//! `choreo stock import`: adding or updating SKUs on a live store, stated
//! once here so that every adapter only translates one versioned write
//! ([`Store::put_stock`]).
//!
//! The file states, per SKU, the units **available** now and its
//! **max_replenish**. An unknown SKU is added as if seeded with them. For a
//! known SKU, `available` is set to the stated value and `seeded` moves by the
//! same difference (units counted in or out of the warehouse by hand), so
//! `available + reserved + shipped = seeded + replenished` still holds;
//! `reserved`, `shipped` and `replenished` belong to the sagas and are never
//! touched. A SKU already at the stated values is not written: importing the
//! same file twice changes nothing the second time (unless sagas moved the
//! stock in between, in which case the second import states it again).
//!
//! A concurrent reservation moves the SKU's version, so the versioned write
//! fails and the import reads the SKU again and recomputes: a reservation is
//! never overwritten. The whole file is checked (duplicates, sizes, and
//! against the stock read before writing) before anything is written.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{SeedStock, StockLevel, Store, StoreError};

/// Largest unit count a file may state: far above any warehouse, far below
/// what the stores' integer columns hold.
pub const MAX_UNITS: u64 = 1_000_000_000_000;

/// Attempts at one SKU's write when concurrent sagas keep moving it.
const ATTEMPTS: usize = 50;

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// SKUs that did not exist.
    pub added: usize,
    /// Existing SKUs whose available units or max_replenish changed.
    pub updated: usize,
    /// SKUs already as stated.
    pub unchanged: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("SKU {sku} appears more than once")]
    Duplicate { sku: String },
    #[error("SKU {sku}: {field} {value} is more than {MAX_UNITS}")]
    TooLarge { sku: String, field: &'static str, value: u64 },
    #[error(
        "SKU {sku}: setting available from {current} to {stated} would remove more units than were ever seeded or \
         imported ({seeded}); the rest came from replenishments and cannot be counted out"
    )]
    BelowSeeded { sku: String, current: u64, stated: u64, seeded: u64 },
    #[error("SKU {sku}: still moving after {ATTEMPTS} attempts (sagas reserve it constantly); try again")]
    Contended { sku: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The level `entry` turns `current` into, keeping the conservation rule;
/// `None` when it is already as stated. The result carries the version read
/// (0 for a new SKU), as [`Store::put_stock`] expects.
pub fn imported_level(current: Option<&StockLevel>, entry: &SeedStock) -> Result<Option<StockLevel>, ImportError> {
    let Some(current) = current else { return Ok(Some(entry.initial_level())) };
    if current.available == entry.available && current.max_replenish == entry.max_replenish {
        return Ok(None);
    }
    // seeded + (stated - current), without going below zero.
    let seeded =
        (current.seeded + entry.available).checked_sub(current.available).ok_or_else(|| ImportError::BelowSeeded {
            sku: entry.sku.to_string(),
            current: current.available,
            stated: entry.available,
            seeded: current.seeded,
        })?;
    Ok(Some(StockLevel { seeded, available: entry.available, max_replenish: entry.max_replenish, ..current.clone() }))
}

/// Adds or updates every SKU of `entries` (see the module doc).
pub async fn import_stock(store: &dyn Store, entries: &[SeedStock]) -> Result<ImportReport, ImportError> {
    check(entries)?;
    let skus: Vec<_> = entries.iter().map(|entry| entry.sku.clone()).collect();
    let current: HashMap<String, StockLevel> =
        store.stock(&skus).await?.into_iter().map(|level| (level.sku.to_string(), level)).collect();
    // Everything is computed before anything is written.
    let mut planned = Vec::with_capacity(entries.len());
    for entry in entries {
        planned.push(imported_level(current.get(entry.sku.as_str()), entry)?);
    }
    let mut report = ImportReport::default();
    for (entry, mut level) in entries.iter().zip(planned) {
        let mut attempts = 0;
        loop {
            let Some(next) = level else {
                report.unchanged += 1;
                break;
            };
            if store.put_stock(&next).await? {
                if next.version == 0 {
                    report.added += 1;
                } else {
                    report.updated += 1;
                }
                break;
            }
            attempts += 1;
            if attempts >= ATTEMPTS {
                return Err(ImportError::Contended { sku: entry.sku.to_string() });
            }
            // Moved since it was read (a saga, another import): read it again.
            let fresh = store.stock(std::slice::from_ref(&entry.sku)).await?;
            level = imported_level(fresh.first(), entry)?;
        }
    }
    Ok(report)
}

/// The checks of a file that need no store.
fn check(entries: &[SeedStock]) -> Result<(), ImportError> {
    let mut seen = HashSet::with_capacity(entries.len());
    for entry in entries {
        if !seen.insert(entry.sku.as_str()) {
            return Err(ImportError::Duplicate { sku: entry.sku.to_string() });
        }
        for (field, value) in [("available", entry.available), ("max_replenish", entry.max_replenish)] {
            if value > MAX_UNITS {
                return Err(ImportError::TooLarge { sku: entry.sku.to_string(), field, value });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::domain::Sku;

    fn entry(available: u64, max_replenish: u64) -> SeedStock {
        SeedStock { sku: Sku::parse("A-1").unwrap(), available, max_replenish }
    }

    fn level(seeded: u64, available: u64, reserved: u64, shipped: u64, replenished: u64) -> StockLevel {
        StockLevel {
            sku: Sku::parse("A-1").unwrap(),
            seeded,
            available,
            reserved,
            shipped,
            replenished,
            max_replenish: 5,
            version: 7,
        }
    }

    #[test]
    fn a_new_sku_is_seeded_with_the_stated_units() {
        let added = imported_level(None, &entry(10, 3)).unwrap().unwrap();
        assert_eq!((added.seeded, added.available, added.max_replenish, added.version), (10, 10, 3, 0));
    }

    #[test]
    fn a_known_sku_moves_seeded_by_the_change_and_stays_conserved() {
        let current = level(10, 4, 3, 5, 2); // 4 + 3 + 5 = 10 + 2
        let more = imported_level(Some(&current), &entry(9, 5)).unwrap().unwrap();
        assert_eq!((more.seeded, more.available, more.reserved, more.shipped, more.version), (15, 9, 3, 5, 7));
        assert!(more.is_conserved());
        let fewer = imported_level(Some(&current), &entry(0, 8)).unwrap().unwrap();
        assert_eq!((fewer.seeded, fewer.available, fewer.max_replenish), (6, 0, 8));
        assert!(fewer.is_conserved());
    }

    #[test]
    fn a_sku_already_as_stated_is_not_written() {
        assert_eq!(imported_level(Some(&level(10, 4, 3, 5, 2)), &entry(4, 5)).unwrap(), None);
    }

    #[test]
    fn counting_out_replenished_units_is_refused() {
        let current = level(1, 30, 0, 0, 29);
        let error = imported_level(Some(&current), &entry(0, 5)).unwrap_err();
        assert!(error.to_string().contains("would remove more units than were ever seeded"), "{error}");
    }

    #[test]
    fn duplicates_and_huge_counts_are_refused() {
        assert!(matches!(check(&[entry(1, 1), entry(2, 2)]), Err(ImportError::Duplicate { .. })));
        assert!(matches!(check(&[entry(MAX_UNITS + 1, 1)]), Err(ImportError::TooLarge { field: "available", .. })));
    }
}
