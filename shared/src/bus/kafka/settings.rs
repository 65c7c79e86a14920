//! Where the Kafka cluster is and how to reach it, from the environment
//! (flags of `choreo` override them):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAFKA_BOOTSTRAP_SERVERS` | `host:port,…` of the cluster | — (Kafka off) |
//! | `KAFKA_SECURITY_PROTOCOL` | `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` | `plaintext`, or `sasl_ssl` with credentials |
//! | `KAFKA_SASL_MECHANISM` | `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN` | `SCRAM-SHA-512` |
//! | `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD` | SASL credentials | — |
//! | `KAFKA_SECRET_ARN` | Secrets Manager secret `{"username","password"}` (MSK's SCRAM secrets) instead | — |
//! | `KAFKA_CA_FILE` | PEM roots for TLS | the system's |
//! | `KAFKA_PARTITIONS` | partitions of each topic choreo creates | 16 |
//! | `KAFKA_REPLICATION` | replication factor of those topics | 1 |
//! | `KAFKA_GROUP_PREFIX` | prefix of the consumer groups (`<prefix><function>`) | `choreo.` |
//! | `KAFKA_FETCH_WAIT_MS` | longest wait of a fetch that finds nothing (a broker that does not answer as soon as data arrives, like tansu, makes it each hop's latency) | 100 |

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::ConfigError;

/// How the client authenticates and encrypts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaSecurity {
    /// No TLS, no SASL: a local broker.
    Plaintext,
    /// TLS, no SASL (MSK with TLS only, or mutual TLS set up outside choreo).
    Tls { ca_file: Option<String> },
    /// SASL over TLS (MSK SCRAM, Confluent Cloud), or without TLS when `tls` is false.
    Sasl { mechanism: String, credentials: Credentials, tls: bool, ca_file: Option<String> },
}

/// SASL credentials, given or read from Secrets Manager at first use.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Given { username: String, password: String },
    Secret { arn: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given { username, .. } => write!(f, "Given {{ username: {username:?}, password: *** }}"),
            Self::Secret { arn } => write!(f, "Secret {{ arn: {arn:?} }}"),
        }
    }
}

/// Everything needed to reach the cluster and lay out choreo's topics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub security: KafkaSecurity,
    /// Partitions of each topic choreo creates: the most records of one
    /// function's topic handled at once (one partition is handled in order).
    pub partitions: i32,
    /// Replication factor of the topics choreo creates (3 on a production cluster).
    pub replication: i32,
    /// Consumer groups are `<group_prefix><function>`.
    pub group_prefix: String,
    /// `fetch.wait.max.ms` of the consumers.
    pub fetch_wait_ms: u32,
}

pub const DEFAULT_PARTITIONS: i32 = 16;
pub const DEFAULT_GROUP_PREFIX: &str = "choreo.";
pub const DEFAULT_FETCH_WAIT_MS: u32 = 100;
const SECRET_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaSettings {
    /// A plaintext cluster at `bootstrap_servers` with the defaults.
    pub fn plaintext(bootstrap_servers: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_owned(),
            security: KafkaSecurity::Plaintext,
            partitions: DEFAULT_PARTITIONS,
            replication: 1,
            group_prefix: DEFAULT_GROUP_PREFIX.to_owned(),
            fetch_wait_ms: DEFAULT_FETCH_WAIT_MS,
        }
    }

    /// The settings the environment names; `Ok(None)` when
    /// `KAFKA_BOOTSTRAP_SERVERS` is not set; `bootstrap_servers` (a flag) wins over it.
    pub fn from_env(bootstrap_servers: Option<&str>) -> Result<Option<Self>, ConfigError> {
        let var = |key: &str| std::env::var(key).ok().map(|value| value.trim().to_owned()).filter(|v| !v.is_empty());
        Self::parse(bootstrap_servers.map(str::to_owned).or_else(|| var("KAFKA_BOOTSTRAP_SERVERS")), var)
    }

    /// [`KafkaSettings::from_env`] over any source of variables (tests).
    pub fn parse(
        bootstrap_servers: Option<String>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(bootstrap_servers) = bootstrap_servers.filter(|servers| !servers.trim().is_empty()) else {
            return Ok(None);
        };
        let invalid = |message: String| ConfigError::Invalid(message);
        let credentials = match (var("KAFKA_SASL_USERNAME"), var("KAFKA_SASL_PASSWORD"), var("KAFKA_SECRET_ARN")) {
            (Some(username), Some(password), _) => Some(Credentials::Given { username, password }),
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(invalid(
                    "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD go together: set both, or KAFKA_SECRET_ARN".into(),
                ));
            }
            (None, None, Some(arn)) => Some(Credentials::Secret { arn }),
            (None, None, None) => None,
        };
        let ca_file = var("KAFKA_CA_FILE");
        let protocol = var("KAFKA_SECURITY_PROTOCOL").map(|protocol| protocol.to_ascii_lowercase());
        let protocol = protocol.as_deref().unwrap_or(if credentials.is_some() { "sasl_ssl" } else { "plaintext" });
        let mechanism = var("KAFKA_SASL_MECHANISM").unwrap_or_else(|| "SCRAM-SHA-512".into()).to_ascii_uppercase();
        if !["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"].contains(&mechanism.as_str()) {
            return Err(invalid(format!(
                "KAFKA_SASL_MECHANISM: '{mechanism}' is not one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"
            )));
        }
        let security = match (protocol, credentials) {
            ("plaintext", None) => KafkaSecurity::Plaintext,
            ("ssl", None) => KafkaSecurity::Tls { ca_file },
            ("sasl_ssl" | "sasl_plaintext", Some(credentials)) => {
                KafkaSecurity::Sasl { mechanism, credentials, tls: protocol == "sasl_ssl", ca_file }
            }
            ("sasl_ssl" | "sasl_plaintext", None) => {
                return Err(invalid(format!(
                    "KAFKA_SECURITY_PROTOCOL={protocol} needs credentials: KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, or KAFKA_SECRET_ARN"
                )));
            }
            ("plaintext" | "ssl", Some(_)) => {
                return Err(invalid(format!(
                    "KAFKA_SECURITY_PROTOCOL={protocol} sends no credentials, yet some are set: use sasl_ssl"
                )));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "KAFKA_SECURITY_PROTOCOL: '{other}' is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"
                )));
            }
        };
        let number = |key: &str, default: i32| -> Result<i32, ConfigError> {
            match var(key) {
                None => Ok(default),
                Some(text) => text
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| invalid(format!("{key}: '{text}' is not a whole number from 1 to 1000"))),
            }
        };
        Ok(Some(Self {
            bootstrap_servers,
            security,
            partitions: number("KAFKA_PARTITIONS", DEFAULT_PARTITIONS)?,
            replication: number("KAFKA_REPLICATION", 1)?,
            group_prefix: var("KAFKA_GROUP_PREFIX").unwrap_or_else(|| DEFAULT_GROUP_PREFIX.to_owned()),
            fetch_wait_ms: number("KAFKA_FETCH_WAIT_MS", DEFAULT_FETCH_WAIT_MS as i32)?.unsigned_abs(),
        }))
    }

    /// The librdkafka settings every client of choreo's starts from:
    /// reaching the cluster, authenticating, and failing a request in
    /// bounded time so that a step's retry policy, not librdkafka's, decides.
    pub(super) async fn client_config(&self, client_id: &str) -> Result<ClientConfig, String> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers).set("client.id", client_id);
        match &self.security {
            KafkaSecurity::Plaintext => {
                config.set("security.protocol", "plaintext");
            }
            KafkaSecurity::Tls { ca_file } => {
                config.set("security.protocol", "ssl").set("ssl.ca.location", ca_file.as_deref().unwrap_or("probe"));
            }
            KafkaSecurity::Sasl { mechanism, credentials, tls, ca_file } => {
                let (username, password) = match credentials {
                    Credentials::Given { username, password } => (username.clone(), password.clone()),
                    Credentials::Secret { arn } => read_credentials(arn).await?,
                };
                config
                    .set("security.protocol", if *tls { "sasl_ssl" } else { "sasl_plaintext" })
                    .set("sasl.mechanism", mechanism)
                    .set("sasl.username", username)
                    .set("sasl.password", password);
                if *tls {
                    config.set("ssl.ca.location", ca_file.as_deref().unwrap_or("probe"));
                }
            }
        }
        Ok(config)
    }

    /// The consumer group of `function`'s event topics.
    pub fn group(&self, function: crate::Function) -> String {
        format!("{}{}", self.group_prefix, function.name())
    }

    /// The consumer group of `function`'s retry topics (their own group, so a
    /// record waiting out its delay never holds up the event topics).
    pub fn retry_group(&self, function: crate::Function) -> String {
        format!("{}{}.retry", self.group_prefix, function.name())
    }
}

/// The SASL credentials in an MSK-style secret: `{"username","password"}`.
async fn read_credentials(arn: &str) -> Result<(String, String), String> {
    #[derive(serde::Deserialize)]
    struct Secret {
        username: String,
        password: String,
    }
    let config = crate::config::aws_sdk_config().await;
    let text = crate::bus::amqp::read_secret_within(&config, arn, SECRET_TIMEOUT).await?;
    let secret: Secret = serde_json::from_str(&text)
        .map_err(|error| format!("secret {arn} is not {{\"username\",\"password\"}} JSON: {error}"))?;
    Ok((secret.username, secret.password))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(servers: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<KafkaSettings>, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        KafkaSettings::parse(servers.map(str::to_owned), |key| vars.get(key).cloned())
    }

    #[test]
    fn no_bootstrap_servers_means_no_kafka() {
        assert_eq!(parse(None, &[("KAFKA_SASL_USERNAME", "u")]).unwrap(), None);
    }

    #[test]
    fn credentials_default_to_scram_over_tls() {
        let settings = parse(Some("b-1:9096"), &[("KAFKA_SASL_USERNAME", "alice"), ("KAFKA_SASL_PASSWORD", "pw")])
            .unwrap()
            .unwrap();
        assert_eq!(
            settings.security,
            KafkaSecurity::Sasl {
                mechanism: "SCRAM-SHA-512".into(),
                credentials: Credentials::Given { username: "alice".into(), password: "pw".into() },
                tls: true,
                ca_file: None,
            }
        );
        assert!(!format!("{settings:?}").contains("pw"), "the password is never printed");
    }

    #[test]
    fn a_secret_arn_stands_for_the_credentials() {
        let settings = parse(Some("b-1:9096"), &[("KAFKA_SECRET_ARN", "arn:aws:secretsmanager:x")]).unwrap().unwrap();
        assert!(matches!(
            settings.security,
            KafkaSecurity::Sasl { credentials: Credentials::Secret { ref arn }, .. } if arn == "arn:aws:secretsmanager:x"
        ));
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_variable_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")], "needs credentials"),
            (&[("KAFKA_SASL_USERNAME", "alice")], "go together"),
            (&[("KAFKA_SECURITY_PROTOCOL", "tls")], "'tls' is not one of"),
            (&[("KAFKA_SASL_MECHANISM", "GSSAPI"), ("KAFKA_SECRET_ARN", "a")], "'GSSAPI' is not one of"),
            (&[("KAFKA_SECURITY_PROTOCOL", "ssl"), ("KAFKA_SECRET_ARN", "a")], "sends no credentials"),
            (&[("KAFKA_PARTITIONS", "0")], "KAFKA_PARTITIONS: '0'"),
        ];
        for (vars, expected) in cases {
            let error = parse(Some("localhost:9092"), vars).expect_err("refused").to_string();
            assert!(error.contains(expected), "{vars:?}: {error}");
        }
    }
}
