//! Where the broker URL comes from, and how it is shown: never with its password.

/// Where the broker URL comes from.
pub(super) enum BrokerUrl {
    Plain(String),
    /// A Secrets Manager secret whose value is the URL (deployed functions:
    /// credentials never sit in plain environment variables). Read at the
    /// first connection, then cached for the container's life.
    Secret {
        arn: String,
        resolved: tokio::sync::OnceCell<String>,
    },
}

impl BrokerUrl {
    pub(super) async fn get(&self) -> Result<&str, lapin::Error> {
        match self {
            Self::Plain(url) => Ok(url),
            Self::Secret { arn, resolved } => {
                resolved.get_or_try_init(|| read_secret(arn)).await.map(String::as_str).map_err(|error| {
                    tracing::error!(%arn, %error, "cannot read the AMQP URL secret");
                    lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Error))
                })
            }
        }
    }
}

async fn read_secret(arn: &str) -> Result<String, String> {
    let config = crate::config::aws_sdk_config().await;
    let secret = aws_sdk_secretsmanager::Client::new(&config)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())?;
    secret.secret_string().map(str::trim).map(str::to_owned).ok_or_else(|| "the secret has no string value".into())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
