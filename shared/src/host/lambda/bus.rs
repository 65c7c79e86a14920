//! The bus a function hosted on Lambda publishes what it emits to, and parks
//! records that can never be handled on: RabbitMQ (SQS and Amazon MQ
//! invocations) or Kafka (MSK and self-managed Kafka invocations). Chosen
//! from the environment here and nowhere else; the template sets the
//! variables of exactly one of them (`EventSource`).

use std::sync::Arc;

use crate::bus::Publisher;
use crate::bus::amqp::AmqpLink;
#[cfg(feature = "kafka")]
use crate::bus::kafka::KafkaLink;
use crate::config::ConfigError;

/// One link, opened at first use and reused while the container is warm.
#[derive(Clone)]
pub enum Bus {
    Amqp(Arc<AmqpLink>),
    #[cfg(feature = "kafka")]
    Kafka(Arc<KafkaLink>),
}

/// Which bus the variables name (see [`Bus::from_env`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    Amqp,
    Kafka,
}

/// Variables that name a Kafka cluster, and an AMQP broker.
const KAFKA_VARS: [&str; 2] = ["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECRET_ARN"];
const AMQP_VARS: [&str; 2] = ["AMQP_URL", "AMQP_SECRET_ARN"];

impl BusKind {
    /// Kafka when `KAFKA_BOOTSTRAP_SERVERS` or `KAFKA_SECRET_ARN` is set, AMQP
    /// when `AMQP_URL` or `AMQP_SECRET_ARN` is; both is a mistake (which bus
    /// would the events go to?), neither is `None`.
    pub fn choose(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let set = |names: [&'static str; 2]| names.into_iter().filter(|name| var(name).is_some()).collect::<Vec<_>>();
        match (set(KAFKA_VARS).as_slice(), set(AMQP_VARS).as_slice()) {
            ([], []) => Ok(None),
            (_, []) => Ok(Some(Self::Kafka)),
            ([], _) => Ok(Some(Self::Amqp)),
            (kafka, amqp) => Err(ConfigError::Invalid(format!(
                "both {} and {} are set: a function publishes to one bus, unset the other",
                kafka.join(", "),
                amqp.join(", ")
            ))),
        }
    }
}

impl Bus {
    /// The bus the environment names (`client_id` names this process to
    /// the broker); `None` when no variable names one.
    pub fn from_env(client_id: &str) -> Result<Option<Self>, ConfigError> {
        let var = |key: &str| std::env::var(key).ok().filter(|value| !value.trim().is_empty());
        match BusKind::choose(var)? {
            None => Ok(None),
            Some(BusKind::Amqp) => Ok(AmqpLink::from_env(client_id).map(Self::Amqp)),
            #[cfg(feature = "kafka")]
            Some(BusKind::Kafka) => match KafkaLink::from_env(client_id)? {
                Some(link) => Ok(Some(Self::Kafka(link))),
                None => Err(ConfigError::Invalid(
                    "KAFKA_SECRET_ARN is set but not KAFKA_BOOTSTRAP_SERVERS: the brokers to publish to".to_owned(),
                )),
            },
            #[cfg(not(feature = "kafka"))]
            Some(BusKind::Kafka) => Err(ConfigError::Invalid(
                "the KAFKA_* variables name a Kafka bus, but this build has none: build the functions with \
                 CARGO_LAMBDA_CONTEXT=kafka (CargoLambda.toml)"
                    .to_owned(),
            )),
        }
    }

    /// The link as the port the steps' events are published through.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        match self {
            Self::Amqp(link) => Arc::clone(link) as Arc<dyn Publisher>,
            #[cfg(feature = "kafka")]
            Self::Kafka(link) => Arc::clone(link) as Arc<dyn Publisher>,
        }
    }

    pub fn kind(&self) -> BusKind {
        match self {
            Self::Amqp(_) => BusKind::Amqp,
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => BusKind::Kafka,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(vars: &[(&str, &str)]) -> Result<Option<BusKind>, ConfigError> {
        BusKind::choose(|key| vars.iter().find(|(name, _)| *name == key).map(|(_, value)| (*value).to_owned()))
    }

    #[test]
    fn the_variables_choose_the_bus() {
        assert_eq!(choose(&[]).ok(), Some(None));
        assert_eq!(choose(&[("AMQP_URL", "amqp://x")]).ok(), Some(Some(BusKind::Amqp)));
        assert_eq!(choose(&[("AMQP_SECRET_ARN", "arn:a")]).ok(), Some(Some(BusKind::Amqp)));
        assert_eq!(choose(&[("KAFKA_BOOTSTRAP_SERVERS", "b:9096")]).ok(), Some(Some(BusKind::Kafka)));
        // The template's Kafka modes: servers and the SCRAM secret.
        let kafka = [("KAFKA_BOOTSTRAP_SERVERS", "b:9096"), ("KAFKA_SECRET_ARN", "arn:k")];
        assert_eq!(choose(&kafka).ok(), Some(Some(BusKind::Kafka)));
        assert_eq!(choose(&[("KAFKA_SECRET_ARN", "arn:k")]).ok(), Some(Some(BusKind::Kafka)));
    }

    #[test]
    fn both_buses_named_is_refused_with_the_variables() {
        let error = choose(&[("KAFKA_BOOTSTRAP_SERVERS", "b:9096"), ("AMQP_SECRET_ARN", "arn:a")])
            .expect_err("two buses are ambiguous");
        let message = error.to_string();
        assert!(message.contains("KAFKA_BOOTSTRAP_SERVERS") && message.contains("AMQP_SECRET_ARN"), "{message}");
    }
}
