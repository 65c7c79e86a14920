//! The command line: every subcommand, its flags and the environment
//! variables behind them (flags win).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shared::bus::DeliverySettings;
use shared::config::{ConfigError, StoreChoice, StoreSettings, parse_retention_setting};

#[derive(Parser)]
#[command(name = "choreo", version, about = "An order saga done by choreography, on Lambda and RabbitMQ")]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the whole system on this machine: every step, the HTTP API, SQLite.
    Up(UpArgs),
    /// Print the choreography as a Mermaid flowchart.
    Graph,
    /// Re-publish events whose first publish failed (the outbox) until stopped:
    /// run it beside the bridge when the functions' store is DynamoDB.
    Relay {
        /// RabbitMQ to publish to.
        #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = shared::bus::amqp::DEFAULT_AMQP_URL)]
        amqp: String,
        /// Publish to Kafka instead.
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The store whose outbox is relayed.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Add or update SKUs (`stock import FILE`) or list them, on the configured store.
    Stock {
        /// What to do with the stock.
        #[command(subcommand)]
        command: StockCommand,
    },
    /// Print the AWS SAM template (template.yaml) derived from the choreography.
    Template,
    /// Print the RabbitMQ topology as management-plugin definitions (infra/rabbitmq/definitions.json).
    Topology {
        /// Print the Kafka topics and consumer groups instead (partitions and replication from
        /// KAFKA_PARTITIONS and KAFKA_REPLICATION).
        #[arg(long)]
        kafka: bool,
        /// With --kafka: create the missing topics on the cluster KAFKA_BOOTSTRAP_SERVERS names (TLS and SASL
        /// from the KAFKA_* variables), then print them.
        #[arg(long, requires = "kafka")]
        create: bool,
        /// Virtual host the definitions are for.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// The retry settings the queue arguments are derived from.
        #[command(flatten)]
        queues: QueueArgs,
    },
    /// Drive N orders through a system it starts itself; prints one JSON object.
    Bench(BenchArgs),
    /// Consume the functions' queues and invoke each function: Lambda Invoke API or its SQS queue.
    Bridge(BridgeArgs),
    /// Inspect or replay the dead-letter queues.
    Dlq {
        /// What to do with the dead letters.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Find sagas that have not finished, and hand their waiting events back.
    Sagas {
        /// What to do with the sagas.
        #[command(subcommand)]
        command: SagasCommand,
    },
    /// Create or show orders through the HTTP API.
    Order {
        /// What to do with orders.
        #[command(subcommand)]
        command: OrderCommand,
    },
}

#[derive(Args)]
pub struct UpArgs {
    /// Port of the HTTP API.
    #[arg(long, env = "CHOREO_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address the HTTP API listens on (another than loopback without --auth jwt is warned about).
    #[arg(long, env = "CHOREO_HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Who may call the API: open (anyone, as any customer) or jwt (a token
    /// checked against --jwks names the customer, who sees only their orders).
    #[arg(long, env = "CHOREO_AUTH", value_enum, default_value = "open")]
    pub auth: AuthArg,
    /// JWK set (RFC 7517 JSON) whose public keys sign the tokens of --auth jwt.
    #[arg(long, env = "CHOREO_JWKS", required_if_eq("auth", "jwt"))]
    pub jwks: Option<PathBuf>,
    /// The token claim naming the customer.
    #[arg(long, env = "CHOREO_CUSTOMER_CLAIM", default_value = shared::host::auth::DEFAULT_CUSTOMER_CLAIM)]
    pub customer_claim: String,
    /// The `iss` tokens must have (any when not given).
    #[arg(long, env = "CHOREO_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` tokens must name (not checked when not given).
    #[arg(long, env = "CHOREO_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The store the steps share (created when missing, seeded when its stock is empty).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Catalog to seed an empty store with [default: infra/inventory.seed.json, built in]
    #[arg(long, env = "CHOREO_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Countries ship-order delivers to, comma-separated ISO codes [default: all but AQ]
    #[arg(long, env = "SHIP_COUNTRIES", default_value = "")]
    pub ship_countries: String,
    /// Use RabbitMQ at this URL instead of the in-process bus.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp: Option<String>,
    /// Use Kafka instead of the in-process bus.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// How queues are consumed and retried.
    #[command(flatten)]
    pub queues: QueueArgs,
    /// Orders unfinished this long after they were placed are cancelled as timed_out, e.g. 15m, 2h, 30s.
    #[arg(long, env = "CHOREO_SAGA_DEADLINE", default_value = "15m", value_parser = shared::saga::parse_deadline)]
    pub saga_deadline: Duration,
}

/// `choreo up --auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    /// Nobody is checked.
    Open,
    /// Bearer tokens checked against --jwks.
    Jwt,
}

/// A duration such as `15m`, `30s`, `2h` or `500ms` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    shared::saga::parse_duration(text)
}

#[derive(Subcommand)]
pub enum SagasCommand {
    /// List every unfinished order older than --older-than: its last event, the functions it waits on, and the
    /// dead letters holding it (Kafka's with --kafka, RabbitMQ's with --amqp or AMQP_URL, else those `choreo up`
    /// parked in the store).
    Stuck {
        /// Which sagas, and where their events and dead letters live.
        #[command(flatten)]
        sagas: SagaArgs,
    },
    /// Hand the events a saga waits on back to their functions (safe: steps are idempotent): published to
    /// Kafka with --kafka, RabbitMQ with --amqp (or AMQP_URL), else replayed by the running `choreo up` from the store.
    Redrive {
        /// The order whose saga to redrive.
        #[arg(required_unless_present = "all_stuck", conflicts_with = "all_stuck")]
        order_id: Option<String>,
        /// Every saga `sagas stuck --older-than` lists.
        #[arg(long)]
        all_stuck: bool,
        /// With --all-stuck, which sagas; and where their events and dead letters live.
        #[command(flatten)]
        sagas: SagaArgs,
    },
}

/// The sagas `choreo sagas` looks at, and where their events live.
#[derive(Args)]
pub struct SagaArgs {
    /// Only orders placed at least this long ago.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub older_than: Duration,
    /// RabbitMQ whose dead-letter queues are searched and redriven to [default: the store's dead letters,
    /// replayed by the running `choreo up`]
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp: Option<String>,
    /// Kafka whose dead-letter topics are searched and redriven to instead.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The store the steps use.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Which store to use, as the functions read it (`CHOREO_STORE`, …).
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// Store adapter: sqlite or dynamodb.
    #[arg(long = "store", env = "CHOREO_STORE", default_value = "sqlite", value_name = "STORE")]
    pub kind: String,
    /// SQLite database file.
    #[arg(long, env = "CHOREO_DB", default_value = shared::config::DEFAULT_DB)]
    pub db: PathBuf,
    /// Prefix of the DynamoDB table names.
    #[arg(long, env = "CHOREO_TABLE_PREFIX", default_value = shared::store::dynamodb::DEFAULT_TABLE_PREFIX)]
    pub table_prefix: String,
    /// How long published processed-event records are kept, e.g. 7d, 36h.
    #[arg(long, env = "CHOREO_PROCESSED_RETENTION", default_value = "7d")]
    pub processed_retention: String,
}

impl StoreArgs {
    pub fn settings(&self) -> Result<StoreSettings, ConfigError> {
        Ok(StoreSettings {
            choice: StoreChoice::parse(Some(&self.kind), Some(self.db.clone()), Some(&self.table_prefix))?,
            retention: parse_retention_setting(Some(&self.processed_retention))?,
        })
    }
}

#[derive(Subcommand)]
pub enum StockCommand {
    /// Add or update the SKUs of a JSON file ([{"sku","available","max_replenish"}]); idempotent.
    Import {
        /// The file: per SKU, the units available now and its max_replenish.
        file: PathBuf,
        /// Create the DynamoDB tables that do not exist yet (a local DynamoDB or
        /// moto; on AWS the stack creates them).
        #[arg(long)]
        create_tables: bool,
        /// The store to import into.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print every SKU's stock, one JSON object a line.
    List {
        /// The store to read.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// How each function's queue is consumed and retried, on either bus.
#[derive(Args, Clone)]
pub struct QueueArgs {
    /// Events each function handles at once [default: 256 on the in-process bus, 64 from a broker and
    /// through the bridge]
    #[arg(long, env = "CHOREO_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Unacknowledged messages RabbitMQ sends each consumer ahead [default: 128; RabbitMQ only]
    #[arg(long, env = "CHOREO_PREFETCH")]
    pub prefetch: Option<u16>,
    /// Retries of a retryable failure before an event is dead-lettered.
    #[arg(long, env = "CHOREO_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,
    /// Delay before the first retry, in milliseconds; doubles on each retry.
    #[arg(long, env = "CHOREO_RETRY_DELAY_MS", default_value_t = 1000)]
    pub retry_delay_ms: u64,
}

impl QueueArgs {
    /// The settings for a host consuming from a broker, or through the bridge.
    pub fn settings(&self) -> DeliverySettings {
        self.settings_over(DeliverySettings::default())
    }

    /// The settings for the in-process bus.
    pub fn in_process_settings(&self) -> DeliverySettings {
        self.settings_over(DeliverySettings::in_process())
    }

    /// These flags over `defaults`.
    fn settings_over(&self, defaults: DeliverySettings) -> DeliverySettings {
        DeliverySettings {
            prefetch: self.prefetch.unwrap_or(defaults.prefetch).max(1),
            concurrency: self.concurrency.unwrap_or(defaults.concurrency).max(1),
            max_retries: self.max_retries,
            retry_base: Duration::from_millis(self.retry_delay_ms.max(1)),
        }
    }
}

#[derive(Args)]
pub struct BenchArgs {
    /// Orders to drive through the saga.
    #[arg(long, default_value_t = 1000)]
    pub orders: usize,
    /// Orders in flight at once (closed loop: each client waits for its saga to end).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Start this many orders per second instead of as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run over RabbitMQ at this URL (functions hosted in-process) instead of the in-process bus.
    #[arg(long)]
    pub amqp: Option<String>,
    /// Bare lapin through the broker (same messages, no handlers, no store): the physical limit.
    #[arg(long, requires = "amqp")]
    pub raw: bool,
    /// Run over Kafka at these bootstrap servers (functions hosted in-process) instead.
    #[arg(long, value_name = "BOOTSTRAP_SERVERS", conflicts_with = "amqp")]
    pub kafka: Option<String>,
    /// The saga paths the orders take.
    #[arg(long, value_enum, default_value_t = choreo::bench::Mix::Ship)]
    pub mix: choreo::bench::Mix,
    /// Messages each function's queue handles at once [default: as `choreo up`: 256 on the in-process bus,
    /// 64 from a broker]
    #[arg(long)]
    pub queue_concurrency: Option<usize>,
    /// Unacknowledged messages RabbitMQ sends each consumer ahead.
    #[arg(long, default_value_t = shared::bus::DEFAULT_PREFETCH)]
    pub prefetch: u16,
}

#[derive(Args)]
pub struct BridgeArgs {
    /// How each function is invoked.
    #[arg(long, value_enum, env = "CHOREO_INVOKE", default_value = "lambda")]
    pub invoke: choreo::bridge::InvokeMode,
    /// RabbitMQ to consume from.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = shared::bus::amqp::DEFAULT_AMQP_URL)]
    pub amqp: String,
    /// Consume from Kafka instead.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// AWS API endpoint instead of AWS (http://127.0.0.1:9000 for `cargo lambda watch`; moto for SQS).
    #[arg(long, env = "CHOREO_AWS_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Prepended to each function name for the Invoke API: the stack's NamePrefix [default: `choreo-`, the
    /// template's, on AWS; none with --endpoint, where `cargo lambda watch` names functions by their binary]
    #[arg(
        long,
        env = "CHOREO_FUNCTION_PREFIX",
        default_value = choreo::template::DEFAULT_NAME_PREFIX,
        default_value_if("endpoint", clap::builder::ArgPredicate::IsPresent, ""),
        hide_default_value = true
    )]
    pub function_prefix: String,
    /// What a Lambda invocation carries (--invoke lambda): the CloudEvent, or what Amazon MQ's, SQS's or (with --kafka) a Kafka
    /// event source mapping would send (the functions then publish their own events, as on AWS)
    #[arg(long, value_enum, env = "CHOREO_EVENT_SHAPE", default_value = "cloudevent")]
    pub event_shape: choreo::bridge::EventShape,
    /// SQS queue of a function, for --invoke sqs; repeat per function [or env CHOREO_SQS_URL_<FUNCTION>, e.g. CHOREO_SQS_URL_SHIP_ORDER]
    #[arg(long = "sqs-queue-url", value_name = "FUNCTION=URL")]
    pub sqs_queue_urls: Vec<String>,
    /// Bridge only these functions, comma-separated [default: every function that consumes events]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub functions: Vec<String>,
    /// Seconds one Invoke or SQS SendMessage may take before it counts as a retryable failure (keep it above the
    /// functions' timeout)
    #[arg(long, env = "CHOREO_CALL_TIMEOUT_SECS", default_value_t = choreo::bridge::DEFAULT_CALL_TIMEOUT.as_secs(), value_name = "SECS")]
    pub call_timeout_secs: u64,
    /// How queues are consumed and retried.
    #[command(flatten)]
    pub queues: QueueArgs,
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print dead letters (they stay where they are): Kafka's with --kafka, RabbitMQ's with --amqp
    /// (or AMQP_URL), else those `choreo up` parked in the configured store.
    List {
        /// RabbitMQ holding the dead-letter queues [default: the store's dead letters]
        #[arg(long, env = "AMQP_URL", hide_env_values = true)]
        amqp: Option<String>,
        /// Kafka holding the dead-letter topics instead.
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The store `choreo up` (in-process bus) parks its dead letters in.
        #[command(flatten)]
        store: StoreArgs,
        /// Most messages shown per function.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead letters back to their function: Kafka's through its first retry topic with --kafka,
    /// RabbitMQ's to its queue with --amqp (or AMQP_URL), else the store's, which the running
    /// `choreo up` (or its next start) delivers again.
    Replay {
        /// RabbitMQ holding the dead-letter queues [default: the store's dead letters]
        #[arg(long, env = "AMQP_URL", hide_env_values = true)]
        amqp: Option<String>,
        /// Kafka holding the dead-letter topics instead.
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The store `choreo up` (in-process bus) parks its dead letters in.
        #[command(flatten)]
        store: StoreArgs,
        /// Only this function's dead letters.
        #[arg(long)]
        function: Option<String>,
        /// Only the message with this id (the event id).
        #[arg(long)]
        message_id: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum OrderCommand {
    /// POST an order and print its id (and, with --wait, its final state).
    Create(CreateArgs),
    /// GET an order, with its saga history; with --timeline, what happened to it hop by hop.
    Show {
        /// The order's id.
        order_id: String,
        /// Print the saga's timeline instead: one line per hop, who handled it
        /// and how, the time since its cause, the slowest hop marked.
        #[arg(long)]
        timeline: bool,
        /// Base URL of the HTTP API.
        #[arg(long, env = "CHOREO_URL", default_value = "http://127.0.0.1:3000")]
        url: String,
        /// Bearer token, when the API checks callers (JWT).
        #[arg(long, env = "CHOREO_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// A line of the order as SKU:QUANTITY; repeat for more lines.
    #[arg(long = "item", required = true, value_name = "SKU:QUANTITY")]
    pub items: Vec<String>,
    /// Customer id of the order.
    #[arg(long, default_value = "customer-1")]
    pub customer: String,
    /// Destination country (ISO 3166-1 alpha-2); AQ is not served by default.
    #[arg(long, default_value = "FR")]
    pub country: String,
    /// Makes a retry safe: the same key and order return the first order.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait until the saga ends and print the order.
    #[arg(long)]
    pub wait: bool,
    /// Base URL of the HTTP API.
    #[arg(long, env = "CHOREO_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Bearer token, when the API checks callers (JWT).
    #[arg(long, env = "CHOREO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge's function prefix, from these flags (and the test's environment, which sets neither variable).
    fn prefix(flags: &[&str]) -> String {
        let cli = Cli::try_parse_from([&["choreo", "bridge"], flags].concat()).expect("valid flags");
        match cli.command {
            Command::Bridge(args) => args.function_prefix,
            _ => unreachable!("parsed as the bridge"),
        }
    }

    #[test]
    fn the_function_prefix_is_the_templates_on_aws_and_none_locally() {
        assert_eq!(prefix(&[]), choreo::template::DEFAULT_NAME_PREFIX);
        assert_eq!(prefix(&["--endpoint", "http://127.0.0.1:9000"]), "");
        assert_eq!(prefix(&["--endpoint", "http://127.0.0.1:9000", "--function-prefix", "prod-"]), "prod-");
        assert_eq!(prefix(&["--function-prefix", ""]), "");
    }

    /// `choreo up`'s queue settings, from these flags (the test's environment sets no CHOREO_* variable).
    fn up_queues(flags: &[&str]) -> QueueArgs {
        let cli = Cli::try_parse_from([&["choreo", "up"], flags].concat()).expect("valid flags");
        match cli.command {
            Command::Up(args) => args.queues,
            _ => unreachable!("parsed as up"),
        }
    }

    #[test]
    fn handlers_default_to_more_on_the_in_process_bus_than_from_a_broker_unless_told() {
        let defaults = up_queues(&[]);
        assert_eq!(defaults.in_process_settings().concurrency, shared::bus::IN_PROCESS_CONCURRENCY);
        assert_eq!(defaults.settings().concurrency, shared::bus::DEFAULT_CONCURRENCY);
        assert_ne!(shared::bus::IN_PROCESS_CONCURRENCY, shared::bus::DEFAULT_CONCURRENCY);
        let told = up_queues(&["--concurrency", "10"]);
        assert_eq!((told.in_process_settings().concurrency, told.settings().concurrency), (10, 10));
    }
}

/// `--kafka BOOTSTRAP_SERVERS`: Kafka instead of RabbitMQ (or of the in-process
/// bus); TLS and SASL come from the `KAFKA_*` variables (`shared::bus::kafka`).
#[derive(Args, Clone, Debug, Default)]
pub struct KafkaArgs {
    /// Kafka's bootstrap servers (host:port,…); TLS and SASL from the KAFKA_* variables (README, "Kafka").
    #[arg(long = "kafka", env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
}

impl KafkaArgs {
    /// The cluster's settings when `--kafka` (or `KAFKA_BOOTSTRAP_SERVERS`) is given.
    pub fn settings(&self) -> Result<Option<shared::bus::kafka::KafkaSettings>, ConfigError> {
        shared::bus::kafka::KafkaSettings::from_env(self.bootstrap_servers.as_deref())
    }
}
