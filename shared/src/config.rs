//! Typed settings from the environment (flags of `choreo` override them).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CHOREO_STORE` | `sqlite` or `dynamodb` | `sqlite` |
//! | `CHOREO_DB` | the SQLite file | `.choreo/choreo.db` |
//! | `CHOREO_TABLE_PREFIX` | prefix of the DynamoDB table names | `choreo-` |
//! | `CHOREO_PROCESSED_RETENTION` | how long published processed-event records are kept (`7d`, `36h`; see `store::retention`) | `7d` |
//! | `CHOREO_SAGA_DEADLINE` | how long an order may stay unfinished before it is cancelled as `timed_out` (`15m`, `2h`; read by `choreo up` and `relay-outbox`, see `saga`) | `15m` |
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
use std::time::Duration;

use crate::Ports;
use crate::step::ShipCountries;
use crate::store::dynamodb::{DEFAULT_TABLE_PREFIX, DynamoStore};
#[cfg(feature = "sqlite")]
use crate::store::sqlite::SqliteStore;
use crate::store::{DEFAULT_PROCESSED_RETENTION, Store, parse_retention};

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

/// Everything needed to open a store: which adapter, and how long published
/// processed records are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// The adapter and where its data lives.
    pub choice: StoreChoice,
    /// Retention of published processed-event records (`CHOREO_PROCESSED_RETENTION`).
    pub retention: Duration,
}

impl StoreSettings {
    /// SQLite at `path`, default retention.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self { choice: StoreChoice::Sqlite(path.into()), retention: DEFAULT_PROCESSED_RETENTION }
    }

    /// From `CHOREO_STORE`, `CHOREO_DB`, `CHOREO_TABLE_PREFIX` and `CHOREO_PROCESSED_RETENTION`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let retention = std::env::var("CHOREO_PROCESSED_RETENTION").ok().filter(|value| !value.is_empty());
        Ok(Self { choice: StoreChoice::from_env()?, retention: parse_retention_setting(retention.as_deref())? })
    }

    /// Opens the store. SQLite creates the file and schema; DynamoDB makes no request.
    pub async fn open(&self) -> Result<Arc<dyn Store>, ConfigError> {
        Ok(match &self.choice {
            #[cfg(feature = "sqlite")]
            StoreChoice::Sqlite(path) => Arc::new(SqliteStore::open(path)?.with_retention(self.retention)),
            // A deployed build (CargoLambda.toml) leaves SQLite out.
            #[cfg(not(feature = "sqlite"))]
            StoreChoice::Sqlite(_) => {
                return Err(ConfigError::Invalid(
                    "CHOREO_STORE is sqlite (the default), but this build has no SQLite store: set \
                     CHOREO_STORE=dynamodb, or build with the default features"
                        .to_owned(),
                ));
            }
            StoreChoice::DynamoDb { .. } => Arc::new(self.open_dynamodb().await),
        })
    }

    /// Opens the store for a local host (`choreo up`, `choreo stock`): as
    /// [`StoreSettings::open`], and on DynamoDB first creates the tables that
    /// do not exist yet, from the same list the SAM template declares.
    pub async fn open_creating_tables(&self) -> Result<Arc<dyn Store>, ConfigError> {
        if let StoreChoice::DynamoDb { .. } = self.choice {
            let store = self.open_dynamodb().await;
            store.create_tables().await?;
            return Ok(Arc::new(store));
        }
        self.open().await
    }

    async fn open_dynamodb(&self) -> DynamoStore {
        let prefix = match &self.choice {
            StoreChoice::DynamoDb { table_prefix } => table_prefix.clone(),
            StoreChoice::Sqlite(_) => DEFAULT_TABLE_PREFIX.to_owned(),
        };
        let client = aws_sdk_dynamodb::Client::new(&aws_sdk_config().await);
        DynamoStore::new(client, prefix).with_retention(self.retention)
    }
}

impl std::fmt::Display for StoreSettings {
    /// For start-up lines: `SQLite .choreo/choreo.db` or `DynamoDB tables choreo-*`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.choice {
            StoreChoice::Sqlite(path) => write!(f, "SQLite {}", path.display()),
            StoreChoice::DynamoDb { table_prefix } => {
                write!(f, "DynamoDB tables {table_prefix}*")?;
                match std::env::var("AWS_ENDPOINT_URL_DYNAMODB").or_else(|_| std::env::var("AWS_ENDPOINT_URL")) {
                    Ok(endpoint) if !endpoint.is_empty() => write!(f, " at {endpoint}"),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// `CHOREO_PROCESSED_RETENTION`'s value, or the default when unset.
pub fn parse_retention_setting(value: Option<&str>) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(DEFAULT_PROCESSED_RETENTION),
        Some(text) => {
            parse_retention(text).map_err(|error| ConfigError::Invalid(format!("CHOREO_PROCESSED_RETENTION: {error}")))
        }
    }
}

/// The store named by the environment (`CHOREO_STORE`, see the module doc).
/// Opening SQLite creates the file and schema; DynamoDB makes no request.
pub async fn store_from_env() -> Result<Arc<dyn Store>, ConfigError> {
    StoreSettings::from_env()?.open().await
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
    fn the_retention_defaults_to_seven_days_and_names_its_variable_when_bad() {
        assert_eq!(parse_retention_setting(None).unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_retention_setting(Some("2d")).unwrap(), Duration::from_secs(2 * 86_400));
        let error = parse_retention_setting(Some("soon")).unwrap_err();
        assert!(error.to_string().starts_with("CHOREO_PROCESSED_RETENTION: "), "{error}");
    }

    #[test]
    fn an_unknown_store_is_an_error() {
        let error = StoreChoice::parse(Some("dynamo"), None, None).unwrap_err();
        assert!(error.to_string().contains("'dynamo'"), "{error}");
    }
}
