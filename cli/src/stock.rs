//! `choreo stock import FILE` and `choreo stock list`: the catalog of
//! whichever store is configured. The rule an import follows is the port's
//! (`shared::store::import_stock`); this module reads the file and names it
//! in every error.

use std::path::Path;

use shared::store::{ImportError, ImportReport, SeedStock, StockLevel, Store, StoreError, import_stock};

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// The file cannot be read or is not a catalog; nothing was imported.
    #[error("stock file {path}: {error}; nothing was imported")]
    File { path: String, error: String },
    /// The file is a catalog the store cannot take as it is; nothing was imported.
    #[error("stock file {path}: {error}; nothing was imported")]
    Rejected { path: String, error: ImportError },
    /// The import stopped midway (store failure, endless contention): SKUs
    /// before the failure may be imported; importing again is safe.
    #[error("stock file {path}: {error} (SKUs before it may be imported; importing the file again is safe)")]
    Interrupted { path: String, error: ImportError },
}

/// Reads a catalog file: a JSON array of `{"sku","available","max_replenish"}`.
pub fn read_catalog(path: &Path) -> Result<Vec<SeedStock>, StockError> {
    let file_error = |error: String| StockError::File { path: path.display().to_string(), error };
    let text = std::fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
    serde_json::from_str(&text).map_err(|error| file_error(error.to_string()))
}

/// Adds or updates every SKU of the file at `path` on `store`.
pub async fn import_file(store: &dyn Store, path: &Path) -> Result<ImportReport, StockError> {
    let catalog = read_catalog(path)?;
    let path = path.display().to_string();
    import_stock(store, &catalog).await.map_err(|error| match error {
        error @ (ImportError::Store(_) | ImportError::Contended { .. }) => StockError::Interrupted { path, error },
        error => StockError::Rejected { path, error },
    })
}

/// Every SKU's stock, by SKU.
pub async fn list(store: &dyn Store) -> Result<Vec<StockLevel>, StoreError> {
    store.all_stock().await
}
