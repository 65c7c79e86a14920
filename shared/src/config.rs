//! Typed settings from the environment (flags of `choreo` override them).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CHOREO_STORE` | `sqlite` or `dynamodb` | `sqlite` |
//! | `CHOREO_DB` | the SQLite file | `.choreo/choreo.db` |
//! | `CHOREO_TABLE_PREFIX` | prefix of the DynamoDB table names | `choreo-` |
//! | `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL` | a local DynamoDB endpoint (moto, DynamoDB Local); read by aws-config | AWS |
//! | `AWS_REGION`, credentials, … | the usual AWS SDK variables (set by Lambda) | |
//!
//! AWS clients are built from [`aws_sdk_config`]: once per process (Lambda
//! init), without any network call (credentials are resolved lazily, at the
//! first request; Lambda sets `AWS_REGION`). Its HTTP client depends on the
//! `aws-https` feature of this crate: off, a plain-HTTP client that reaches
//! local endpoints only; on (deployed builds), the SDK's default HTTPS client
//! (rustls), which reaches both.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Ports;
use crate::step::ShipCountries;
use crate::store::Store;
use crate::store::dynamodb::{DEFAULT_TABLE_PREFIX, DynamoStore};
use crate::store::sqlite::SqliteStore;

/// Where the SQLite database lives unless `CHOREO_DB` says otherwise.
pub const DEFAULT_DB: &str = ".choreo/choreo.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub fn db_path() -> PathBuf {
    std::env::var_os("CHOREO_DB").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
}

/// Which `Store` adapter to run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// The SQLite file at this path.
    Sqlite(PathBuf),
    /// DynamoDB tables named `<table_prefix><table>`.
    DynamoDb { table_prefix: String },
}

impl StoreChoice {
    /// From the values of `CHOREO_STORE`, `CHOREO_DB` and `CHOREO_TABLE_PREFIX`.
    /// An unknown `CHOREO_STORE` is an error rather than a silent SQLite file
    /// (in Lambda, a misspelt `dynamodb` would otherwise lose every write).
    pub fn parse(store: Option<&str>, db: Option<PathBuf>, table_prefix: Option<&str>) -> Result<Self, ConfigError> {
        match store.map(str::trim).unwrap_or_default() {
            "" | "sqlite" => Ok(Self::Sqlite(db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB)))),
            "dynamodb" => Ok(Self::DynamoDb { table_prefix: table_prefix.unwrap_or(DEFAULT_TABLE_PREFIX).to_owned() }),
            other => Err(ConfigError::Invalid(format!("CHOREO_STORE: '{other}' is neither 'sqlite' nor 'dynamodb'"))),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Self::parse(var("CHOREO_STORE").as_deref(), Some(db_path()), var("CHOREO_TABLE_PREFIX").as_deref())
    }
}

/// The store named by the environment (`CHOREO_STORE`, see the module doc).
/// Opening SQLite creates the file and schema; DynamoDB makes no request.
pub async fn store_from_env() -> Result<Arc<dyn Store>, ConfigError> {
    Ok(match StoreChoice::from_env()? {
        StoreChoice::Sqlite(path) => Arc::new(SqliteStore::open(&path)?),
        StoreChoice::DynamoDb { table_prefix } => {
            let client = aws_sdk_dynamodb::Client::new(&aws_sdk_config().await);
            Arc::new(DynamoStore::new(client, table_prefix))
        }
    })
}

/// The AWS SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL[_<SERVICE>]`), with the HTTP client of [`with_http_client`].
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    with_http_client(aws_config::defaults(aws_config::BehaviorVersion::latest())).load().await
}

/// Sets the HTTP client every AWS client of choreo uses: plain HTTP unless
/// the `aws-https` feature is on (then the SDK's default HTTPS client).
pub fn with_http_client(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    #[cfg(not(feature = "aws-https"))]
    let loader = loader.http_client(aws_smithy_http_client::Builder::new().build_http());
    loader
}

pub async fn ports_from_env() -> Result<Ports, ConfigError> {
    Ok(Ports {
        store: store_from_env().await?,
        ship_countries: ShipCountries::from_env().map_err(ConfigError::Invalid)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_is_the_default_store() {
        assert_eq!(StoreChoice::parse(None, None, None).unwrap(), StoreChoice::Sqlite(PathBuf::from(DEFAULT_DB)));
        let db = PathBuf::from("/tmp/x.db");
        assert_eq!(StoreChoice::parse(Some("sqlite"), Some(db.clone()), None).unwrap(), StoreChoice::Sqlite(db));
    }

    #[test]
    fn dynamodb_takes_the_table_prefix_or_the_default() {
        assert_eq!(
            StoreChoice::parse(Some("dynamodb"), None, None).unwrap(),
            StoreChoice::DynamoDb { table_prefix: "choreo-".to_owned() }
        );
        assert_eq!(
            StoreChoice::parse(Some("dynamodb"), None, Some("prod-")).unwrap(),
            StoreChoice::DynamoDb { table_prefix: "prod-".to_owned() }
        );
    }

    #[test]
    fn an_unknown_store_is_an_error() {
        let error = StoreChoice::parse(Some("dynamo"), None, None).unwrap_err();
        assert!(error.to_string().contains("'dynamo'"), "{error}");
    }
}
