//! `choreo bridge`: consumes each function's RabbitMQ queue and invokes the
//! function where it is hosted (ARCHITECTURE.md §11.3, §11.4).
//!
//! - `--invoke lambda`: the Lambda Invoke API (`cargo lambda watch` locally,
//!   AWS otherwise). By default the payload is the CloudEvent; the function
//!   answers the events it emitted, which the consumer runner publishes (with
//!   confirms) before it acks the input. With `--event-shape amazon-mq` or
//!   `sqs` the payload is what that AWS event source mapping would send, the
//!   function publishes by itself, and the input is acked once it succeeded.
//! - `--invoke sqs`: the CloudEvent is sent to the function's SQS queue; the
//!   function, invoked by its SQS event source, publishes its own events.
//!
//! With `--kafka` the functions' consumer groups feed the same invocations.
//!
//! Retries, dead letters, reconnects and the drain on shutdown are those of
//! [`shared::bus::amqp::run_consumers`] (or of its Kafka twin); this module only says how a function is
//! reached and how its answer maps to [`StepError`].

mod event_shape;
mod lambda;
mod sqs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shared::Function;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, DeclareError, StepInvoker, Topology, redact, run_consumers};
use shared::bus::kafka::{KafkaLink, KafkaSettings, run_kafka_consumers};
use tokio::sync::watch;

pub use self::event_shape::{EventShape, EventSource};
pub use self::lambda::{LambdaInvoker, emitted_events, function_error};
pub use self::sqs::{SQS_ID_ATTRIBUTE, SQS_SUBJECT_ATTRIBUTE, SQS_TYPE_ATTRIBUTE, SqsForwarder};

/// How long one Invoke or SendMessage may take by default: longer than a
/// function's own timeout (the template's is 30 s), so that only a call that
/// hangs (a lost connection, an unanswering endpoint) is cut short. A call
/// cut short is a retryable failure, retried through the retry queues; a
/// call with no bound would hold its message until the broker's
/// `consumer_timeout` cancels the whole consumer.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Prefix of the environment variables naming a function's SQS queue URL:
/// `CHOREO_SQS_URL_RESERVE_INVENTORY` for `reserve-inventory`.
pub const SQS_URL_ENV_PREFIX: &str = "CHOREO_SQS_URL_";

/// How the bridge reaches the functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InvokeMode {
    /// The Lambda Invoke API; the bridge publishes what the function returns.
    Lambda,
    /// The function's SQS queue; the function publishes by itself.
    Sqs,
}

/// Where the invocations go.
#[derive(Clone, Debug)]
pub enum InvokeTarget {
    Lambda {
        /// An Invoke API other than AWS's (`cargo lambda watch`: `http://127.0.0.1:9000`).
        endpoint: Option<String>,
        /// Prepended to each function's name (a deployed stack's prefix).
        function_prefix: String,
        /// What each invocation carries.
        event_shape: EventShape,
    },
    Sqs {
        /// An SQS API other than AWS's (moto, ElasticMQ).
        endpoint: Option<String>,
        /// The queue of each bridged function.
        queue_urls: BTreeMap<Function, String>,
    },
}

/// Everything `run` needs; built from the command line by `choreo bridge`.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// RabbitMQ whose queues are consumed.
    pub amqp_url: String,
    /// Kafka whose topics are consumed instead, when given.
    pub kafka: Option<KafkaSettings>,
    /// The consuming functions whose queues are bridged.
    pub functions: Vec<Function>,
    /// How the functions are reached.
    pub target: InvokeTarget,
    /// Prefetch, concurrency and retry policy of the consumer runner.
    pub settings: DeliverySettings,
    /// Bound on each Invoke or SendMessage call ([`DEFAULT_CALL_TIMEOUT`]).
    pub call_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Broker(String),
    #[error("consuming stopped: {0}")]
    Amqp(#[from] lapin::Error),
}

/// The functions named by `--functions` (all consumers when none is named).
/// Each must exist and consume events.
pub fn parse_functions(names: &[String]) -> Result<Vec<Function>, BridgeError> {
    let names: Vec<&str> = names.iter().map(|name| name.trim()).filter(|name| !name.is_empty()).collect();
    if names.is_empty() {
        return Ok(Function::consumers().collect());
    }
    let consumers = || Function::consumers().map(Function::name).collect::<Vec<_>>().join(", ");
    let mut functions = BTreeSet::new();
    for name in names {
        let function = Function::from_name(name).ok_or_else(|| {
            BridgeError::Config(format!("--functions: no function named '{name}' (bridgeable: {})", consumers()))
        })?;
        if function.spec().consumes.is_empty() {
            return Err(BridgeError::Config(format!(
                "--functions: '{name}' consumes no events, so it has no queue to bridge (bridgeable: {})",
                consumers()
            )));
        }
        functions.insert(function);
    }
    Ok(functions.into_iter().collect())
}

/// The environment variable that names `function`'s SQS queue URL.
pub fn sqs_url_env_var(function: Function) -> String {
    format!("{SQS_URL_ENV_PREFIX}{}", function.name().to_uppercase().replace('-', "_"))
}

/// The SQS queue URL of each function: `--sqs-queue-url FUNCTION=URL` flags
/// over `CHOREO_SQS_URL_<FUNCTION>` variables (read through `env`). Every
/// function must have one; the error lists all that are missing.
pub fn resolve_queue_urls(
    functions: &[Function],
    flags: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<Function, String>, BridgeError> {
    let mut from_flags = BTreeMap::new();
    for flag in flags {
        let (name, url) = flag
            .split_once('=')
            .map(|(name, url)| (name.trim(), url.trim()))
            .filter(|(name, url)| !name.is_empty() && !url.is_empty())
            .ok_or_else(|| BridgeError::Config(format!("--sqs-queue-url '{flag}' must be FUNCTION=URL")))?;
        let function = Function::from_name(name)
            .ok_or_else(|| BridgeError::Config(format!("--sqs-queue-url '{flag}': no function named '{name}'")))?;
        from_flags.insert(function, url.to_owned());
    }
    let mut urls = BTreeMap::new();
    let mut missing = Vec::new();
    for &function in functions {
        let url = from_flags
            .get(&function)
            .cloned()
            .or_else(|| env(&sqs_url_env_var(function)).map(|url| url.trim().to_owned()).filter(|url| !url.is_empty()));
        match url {
            Some(url) => {
                urls.insert(function, url);
            }
            None => missing.push(function),
        }
    }
    if !missing.is_empty() {
        return Err(missing_urls(&missing));
    }
    Ok(urls)
}

fn missing_urls(missing: &[Function]) -> BridgeError {
    let lines: Vec<String> = missing
        .iter()
        .map(|&function| {
            format!("  {}: --sqs-queue-url {}=URL or {}", function.name(), function.name(), sqs_url_env_var(function))
        })
        .collect();
    BridgeError::Config(format!(
        "--invoke sqs needs the SQS queue URL of every bridged function; missing for {}:\n{}",
        missing.iter().map(|function| function.name()).collect::<Vec<_>>().join(", "),
        lines.join("\n")
    ))
}

/// Consumes the queues of `config.functions` and invokes each function until
/// `shutdown` turns true; then stops consuming, finishes and acks the
/// messages in hand, and closes the connection. Clients are built once here.
pub async fn run(config: BridgeConfig, shutdown: watch::Receiver<bool>) -> Result<(), BridgeError> {
    if config.functions.is_empty() {
        return Err(BridgeError::Config("no function to bridge".to_owned()));
    }
    let link = AmqpLink::new(&config.amqp_url, "choreo-bridge");
    // Each AWS shape belongs to its bus: the function publishes where its payload came from.
    if let InvokeTarget::Lambda { event_shape, .. } = config.target {
        match (event_shape, config.kafka.is_some()) {
            (EventShape::AmazonMq | EventShape::Sqs, true) => {
                return Err(BridgeError::Config(format!("--event-shape {event_shape:?} needs RabbitMQ, not --kafka")));
            }
            (EventShape::Kafka, false) => {
                return Err(BridgeError::Config("--event-shape kafka needs --kafka".to_owned()));
            }
            _ => {}
        }
    }
    let invoker: Arc<dyn StepInvoker> = match &config.target {
        InvokeTarget::Lambda { endpoint, function_prefix, event_shape } => {
            // No retries inside the SDK: a failed invocation goes through
            // the runner's retry queues (with backoff, then a dead letter),
            // and a function error the SDK sees as a 500 (`cargo lambda
            // watch`) must not run the function again on the spot.
            let sdk = sdk_config(endpoint.as_deref()).await;
            let lambda = aws_sdk_lambda::config::Builder::from(&sdk)
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .build();
            let client = aws_sdk_lambda::Client::from_conf(lambda);
            tracing::info!(endpoint = endpoint.as_deref().unwrap_or("AWS"), prefix = %function_prefix, shape = ?event_shape, "invoking functions over the Lambda Invoke API");
            let source = match &config.kafka {
                Some(kafka) => EventSource {
                    vhost: String::new(),
                    function_prefix: function_prefix.clone(),
                    bootstrap_servers: kafka.bootstrap_servers.clone(),
                },
                None => EventSource {
                    vhost: link.vhost().await.map_err(|error| BridgeError::Broker(error.to_string()))?,
                    function_prefix: function_prefix.clone(),
                    bootstrap_servers: String::new(),
                },
            };
            Arc::new(LambdaInvoker::new(client, function_prefix, *event_shape, source, config.call_timeout))
        }
        InvokeTarget::Sqs { endpoint, queue_urls } => {
            let missing: Vec<Function> =
                config.functions.iter().copied().filter(|function| !queue_urls.contains_key(function)).collect();
            if !missing.is_empty() {
                return Err(missing_urls(&missing));
            }
            let client = aws_sdk_sqs::Client::new(&sdk_config(endpoint.as_deref()).await);
            tracing::info!(
                endpoint = endpoint.as_deref().unwrap_or("AWS"),
                "forwarding events to the functions' SQS queues"
            );
            Arc::new(SqsForwarder::new(client, queue_urls.clone(), config.call_timeout))
        }
    };
    if let Some(kafka) = config.kafka {
        return run_from_kafka(kafka, config.functions, invoker, config.settings, shutdown).await;
    }
    // Fail fast with a clear message when the broker is not there at start
    // (or holds queues to migrate); after that, `run_consumers` reconnects by itself.
    link.declare(&Topology::derive(&config.settings)).await.map_err(|error| {
        let doing = if matches!(error, DeclareError::Mismatch { .. }) { "set up" } else { "reach" };
        BridgeError::Broker(format!("cannot {doing} RabbitMQ at {}: {error}", redact(&config.amqp_url)))
    })?;
    let names: Vec<&str> = config.functions.iter().map(|function| function.name()).collect();
    tracing::info!(functions = %names.join(","), amqp = %redact(&config.amqp_url), "bridge started");
    run_consumers(link, config.functions, invoker, config.settings, shutdown).await?;
    tracing::info!("bridge stopped");
    Ok(())
}

/// `choreo bridge --kafka`: the same invocations, fed by the functions' consumer groups.
async fn run_from_kafka(
    kafka: KafkaSettings,
    functions: Vec<Function>,
    invoker: Arc<dyn StepInvoker>,
    settings: DeliverySettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), BridgeError> {
    let servers = kafka.bootstrap_servers.clone();
    let link = KafkaLink::new(kafka, "choreo-bridge");
    // Fail fast with a clear message when the cluster is not there at start.
    link.create_topics(&settings)
        .await
        .map_err(|error| BridgeError::Broker(format!("cannot set up Kafka at {servers}: {error}")))?;
    let names: Vec<&str> = functions.iter().map(|function| function.name()).collect();
    tracing::info!(functions = %names.join(","), kafka = %servers, "bridge started");
    run_kafka_consumers(link, functions, invoker, settings, shutdown).await;
    tracing::info!("bridge stopped");
    Ok(())
}

/// The AWS configuration of the bridge's clients. With an `endpoint` (a local
/// emulator) and no credentials or region in the environment, it uses dummy
/// credentials and `us-east-1`, so that nothing looks for instance metadata.
async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = shared::config::with_http_client(aws_config::defaults(aws_config::BehaviorVersion::latest()));
    if let Some(endpoint) = endpoint {
        let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
        loader = loader.endpoint_url(endpoint);
        if !set("AWS_ACCESS_KEY_ID") && !set("AWS_PROFILE") {
            let credentials = aws_sdk_lambda::config::Credentials::new("local", "local", None, None, "choreo-local");
            loader = loader.credentials_provider(credentials);
        }
        if !set("AWS_REGION") && !set("AWS_DEFAULT_REGION") && !set("AWS_PROFILE") {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    loader.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[tokio::test]
    async fn each_aws_event_shape_needs_its_own_bus() {
        let config = |event_shape, kafka: Option<KafkaSettings>| BridgeConfig {
            amqp_url: "amqp://127.0.0.1:1/%2f".to_owned(),
            kafka,
            functions: vec![Function::ShipOrder],
            target: InvokeTarget::Lambda { endpoint: None, function_prefix: String::new(), event_shape },
            settings: DeliverySettings::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        };
        let kafka = || Some(KafkaSettings::plaintext("127.0.0.1:1"));
        let refused = |config| async move {
            let (_stop, stopped) = watch::channel(false);
            match run(config, stopped).await {
                Err(BridgeError::Config(message)) => message,
                other => panic!("refused as a configuration error, not {other:?}"),
            }
        };
        assert!(refused(config(EventShape::Kafka, None)).await.contains("needs --kafka"));
        assert!(refused(config(EventShape::AmazonMq, kafka())).await.contains("needs RabbitMQ"));
        assert!(refused(config(EventShape::Sqs, kafka())).await.contains("needs RabbitMQ"));
    }

    #[test]
    fn every_consumer_is_bridged_unless_some_are_named() {
        assert_eq!(parse_functions(&[]).unwrap(), Function::consumers().collect::<Vec<_>>());
        assert_eq!(
            parse_functions(&names(&["order-status", "ship-order", "ship-order"])).unwrap(),
            vec![Function::ShipOrder, Function::OrderStatus]
        );
    }

    #[test]
    fn unknown_and_non_consuming_functions_are_refused() {
        let error = parse_functions(&names(&["ship-orders"])).unwrap_err().to_string();
        assert!(error.contains("'ship-orders'") && error.contains("reserve-inventory"), "{error}");
        let error = parse_functions(&names(&["create-order"])).unwrap_err().to_string();
        assert!(error.contains("consumes no events"), "{error}");
    }

    #[test]
    fn queue_urls_come_from_flags_over_the_environment() {
        let functions = [Function::ShipOrder, Function::OrderStatus];
        let env = |name: &str| match name {
            "CHOREO_SQS_URL_SHIP_ORDER" => Some("http://env/ship".to_owned()),
            "CHOREO_SQS_URL_ORDER_STATUS" => Some("http://env/status".to_owned()),
            _ => None,
        };
        let urls = resolve_queue_urls(&functions, &names(&["ship-order=http://flag/ship"]), env).unwrap();
        assert_eq!(urls[&Function::ShipOrder], "http://flag/ship");
        assert_eq!(urls[&Function::OrderStatus], "http://env/status");
    }

    #[test]
    fn every_missing_queue_url_is_named_with_how_to_set_it() {
        let functions: Vec<Function> = Function::consumers().collect();
        let error = resolve_queue_urls(&functions, &names(&["ship-order=http://q"]), |_| None).unwrap_err().to_string();
        for function in Function::consumers().filter(|function| *function != Function::ShipOrder) {
            assert!(error.contains(function.name()), "{error}");
            assert!(error.contains(&sqs_url_env_var(function)), "{error}");
        }
        assert!(!error.contains("CHOREO_SQS_URL_SHIP_ORDER"), "{error}");
        let error = resolve_queue_urls(&functions, &names(&["ship-order"]), |_| None).unwrap_err().to_string();
        assert!(error.contains("FUNCTION=URL"), "{error}");
    }
}
