//! Typed settings from the environment (flags of `choreo` override them).

use std::path::PathBuf;
use std::sync::Arc;

use crate::Ports;
use crate::ports::Store;
use crate::sqlite::SqliteStore;
use crate::step::ShipCountries;

/// Where the SQLite database lives unless `CHOREO_DB` says otherwise.
pub const DEFAULT_DB: &str = ".choreo/choreo.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

pub fn db_path() -> PathBuf {
    std::env::var_os("CHOREO_DB").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
}

/// The store named by the environment (`CHOREO_DB`: a SQLite file).
pub async fn store_from_env() -> Result<Arc<dyn Store>, ConfigError> {
    Ok(Arc::new(SqliteStore::open(&db_path())?))
}

pub async fn ports_from_env() -> Result<Ports, ConfigError> {
    Ok(Ports { store: store_from_env().await?, ship_countries: ShipCountries::from_env().map_err(ConfigError::Invalid)? })
}
