//! Where the broker URL comes from, and how it is shown: never with its password.

use std::time::Duration;

/// How long reading the URL's secret may take: a Secrets Manager that does
/// not answer must fail the connection attempt (which is retried with
/// backoff), not hang the process.
const SECRET_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the broker URL comes from.
pub(super) enum BrokerUrl {
    Plain(String),
    /// A Secrets Manager secret whose value is the URL (deployed functions:
    /// credentials never sit in plain environment variables). Read at the
    /// first connection, then cached for the container's life.
    Secret {
        /// The secret's ARN (`AMQP_SECRET_ARN`).
        arn: String,
        /// The URL once read; read at most once per process.
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
    read_secret_within(&crate::config::aws_sdk_config().await, arn, SECRET_TIMEOUT).await
}

pub(crate) async fn read_secret_within(
    config: &aws_config::SdkConfig,
    arn: &str,
    timeout: Duration,
) -> Result<String, String> {
    tokio::time::timeout(timeout, fetch_secret(config, arn))
        .await
        .unwrap_or_else(|_| Err(format!("Secrets Manager did not answer within {timeout:?}")))
}

async fn fetch_secret(config: &aws_config::SdkConfig, arn: &str) -> Result<String, String> {
    let secret = aws_sdk_secretsmanager::Client::new(config)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())?;
    secret.secret_string().map(str::trim).map(str::to_owned).ok_or_else(|| "the secret has no string value".into())
}

/// The URL without its password, for messages and logs.
///
/// Conservative on purpose: the credentials end at the *last* `@` (a password
/// may hold a raw `@`), and whatever sits between the first `:` and that `@`
/// is hidden, even in URLs that do not parse (no scheme, odd characters).
/// A URL without `:` in its user information shows as given (a user name only).
pub fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |at| at + 3);
    let Some(at) = url[start..].rfind('@').map(|at| start + at) else {
        return url.to_owned();
    };
    match url[start..at].split_once(':') {
        Some((user, _password)) => format!("{}{user}:***{}", &url[..start], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_secrets_manager_that_never_answers_fails_the_read_within_its_bound() {
        let config = crate::testkit::aws::local_sdk_config(&crate::testkit::aws::silent_endpoint().await).await;
        let read =
            read_secret_within(&config, "arn:aws:secretsmanager:us-east-1:1:secret:amqp", Duration::from_millis(300))
                .await;

        assert_eq!(read, Err("Secrets Manager did not answer within 300ms".to_owned()));
    }

    /// Every shape shows its host and hides its password entirely.
    #[test]
    fn redact_hides_the_password_of_every_url_shape() {
        let cases = [
            ("amqp://guest:pa55@localhost:5672/%2f", "amqp://guest:***@localhost:5672/%2f", "pa55"),
            (
                "amqps://alice:s3cret@b-1.mq.eu-west-1.amazonaws.com:5671",
                "amqps://alice:***@b-1.mq.eu-west-1.amazonaws.com:5671",
                "s3cret",
            ),
            // a raw '@' (and ':') inside the password
            ("amqps://alice:p@ss:w@rd@broker:5671/vh", "amqps://alice:***@broker:5671/vh", "ss:w"),
            // no user, only a password
            ("amqps://:t0ken@broker/vh", "amqps://:***@broker/vh", "t0ken"),
            // percent-encoded password
            ("amqps://bob:p%40ss%2Fword@broker/%2f", "amqps://bob:***@broker/%2f", "p%40ss"),
            // query string kept
            (
                "amqps://bob:hunter2@broker:5671/vh?heartbeat=30&connection_timeout=5000",
                "amqps://bob:***@broker:5671/vh?heartbeat=30&connection_timeout=5000",
                "hunter2",
            ),
            // no scheme (an invalid URL still gets shown in errors)
            ("bob:hunter2@broker:5671", "bob:***@broker:5671", "hunter2"),
            // a raw '/' in the password, which no URL parser accepts
            ("amqp://bob:a/b?c#d@broker/vh", "amqp://bob:***@broker/vh", "a/b"),
        ];
        for (url, shown, secret) in cases {
            let redacted = redact(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(!redacted.contains(secret), "{url} leaks {secret}: {redacted}");
        }
    }

    #[test]
    fn redact_leaves_urls_without_a_password_alone() {
        for url in [
            "amqp://localhost:5672/%2f",
            "amqps://broker/vh?heartbeat=30",
            "amqp://guest@localhost/vh",
            "localhost:5672",
        ] {
            assert_eq!(redact(url), url);
        }
    }
}
