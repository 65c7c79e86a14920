//! `choreo`: run the saga on this machine, talk to it, draw it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use choreo::amqp_host::{AmqpSystem, redact};
use choreo::client::Client;
use choreo::embedded::{DEFAULT_CATALOG, Embedded, EmbeddedConfig, parse_catalog, serve};
use choreo::inprocess::BusSettings;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use shared::Function;
use shared::amqp::{AmqpLink, QueueSettings, Topology};
use shared::step::ShipCountries;

#[derive(Parser)]
#[command(name = "choreo", version, about = "An order saga done by choreography, on Lambda and RabbitMQ")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on this machine: every step, the HTTP API, SQLite.
    Up(UpArgs),
    /// Print the choreography as a Mermaid flowchart.
    Graph,
    /// Re-publish events whose first publish failed (the outbox) until stopped:
    /// run it beside the bridge when the functions' store is DynamoDB.
    Relay {
        #[arg(long, env = "AMQP_URL", default_value = shared::amqp::DEFAULT_AMQP_URL)]
        amqp: String,
    },
    /// Print the AWS SAM template (template.yaml) derived from the choreography.
    Template,
    /// Print the RabbitMQ topology as management-plugin definitions (infra/rabbitmq/definitions.json).
    Topology {
        /// Virtual host the definitions are for.
        #[arg(long, default_value = "/")]
        vhost: String,
        #[command(flatten)]
        queues: QueueArgs,
    },
    /// Drive N orders through a system it starts itself; prints one JSON object.
    Bench(BenchArgs),
    /// Consume the functions' queues and invoke each function: Lambda Invoke API or its SQS queue.
    Bridge(BridgeArgs),
    /// Inspect or replay the dead-letter queues.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Create or show orders through the HTTP API.
    Order {
        #[command(subcommand)]
        command: OrderCommand,
    },
}

#[derive(Args)]
struct UpArgs {
    /// Port of the HTTP API.
    #[arg(long, env = "CHOREO_PORT", default_value_t = 3000)]
    port: u16,
    /// Address the HTTP API listens on.
    #[arg(long, env = "CHOREO_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// SQLite database file (created and seeded when new).
    #[arg(long, env = "CHOREO_DB", default_value = ".choreo/choreo.db")]
    db: PathBuf,
    /// Catalog to seed a new database with [default: infra/inventory.seed.json, built in]
    #[arg(long, env = "CHOREO_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Countries ship-order delivers to, comma-separated ISO codes [default: all but AQ]
    #[arg(long, env = "SHIP_COUNTRIES", default_value = "")]
    ship_countries: String,
    /// Use RabbitMQ at this URL instead of the in-process bus.
    #[arg(long, env = "AMQP_URL")]
    amqp: Option<String>,
    #[command(flatten)]
    queues: QueueArgs,
}

/// How each function's queue is consumed and retried.
#[derive(Args, Clone)]
struct QueueArgs {
    /// Events each function handles at once.
    #[arg(long, env = "CHOREO_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Unacknowledged messages RabbitMQ sends each consumer ahead.
    #[arg(long, env = "CHOREO_PREFETCH", default_value_t = 64)]
    prefetch: u16,
    /// Retries of a retryable failure before an event is dead-lettered.
    #[arg(long, env = "CHOREO_MAX_RETRIES", default_value_t = 5)]
    max_retries: u32,
    /// Delay before the first retry, in milliseconds; doubles on each retry.
    #[arg(long, env = "CHOREO_RETRY_DELAY_MS", default_value_t = 1000)]
    retry_delay_ms: u64,
}

impl QueueArgs {
    fn settings(&self) -> QueueSettings {
        QueueSettings {
            prefetch: self.prefetch.max(1),
            concurrency: self.concurrency.max(1),
            max_retries: self.max_retries,
            retry_base: Duration::from_millis(self.retry_delay_ms.max(1)),
        }
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Orders to drive through the saga.
    #[arg(long, default_value_t = 1000)]
    orders: usize,
    /// Orders in flight at once (closed loop: each client waits for its saga to end).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Start this many orders per second instead of as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Run over RabbitMQ at this URL (functions hosted in-process) instead of the in-process bus.
    #[arg(long)]
    amqp: Option<String>,
    /// Bare lapin through the broker (same messages, no handlers, no store): the physical limit.
    #[arg(long, requires = "amqp")]
    raw: bool,
    /// The saga paths the orders take.
    #[arg(long, value_enum, default_value_t = choreo::bench::Mix::Ship)]
    mix: choreo::bench::Mix,
    /// Messages each function's queue handles at once.
    #[arg(long, default_value_t = 32)]
    queue_concurrency: usize,
    /// Unacknowledged messages RabbitMQ sends each consumer ahead.
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
}

#[derive(Args)]
struct BridgeArgs {
    /// How each function is invoked.
    #[arg(long, value_enum, env = "CHOREO_INVOKE", default_value = "lambda")]
    invoke: choreo::bridge::InvokeMode,
    /// RabbitMQ to consume from.
    #[arg(long, env = "AMQP_URL", default_value = shared::amqp::DEFAULT_AMQP_URL)]
    amqp: String,
    /// AWS API endpoint instead of AWS (http://127.0.0.1:9000 for `cargo lambda watch`; moto for SQS).
    #[arg(long, env = "CHOREO_AWS_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// Prepended to each function name for the Invoke API (a deployed stack's prefix).
    #[arg(long, env = "CHOREO_FUNCTION_PREFIX", default_value = "")]
    function_prefix: String,
    /// SQS queue of a function, for --invoke sqs; repeat per function [or env CHOREO_SQS_URL_<FUNCTION>, e.g. CHOREO_SQS_URL_SHIP_ORDER]
    #[arg(long = "sqs-queue-url", value_name = "FUNCTION=URL")]
    sqs_queue_urls: Vec<String>,
    /// Bridge only these functions, comma-separated [default: every function that consumes events]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    functions: Vec<String>,
    #[command(flatten)]
    queues: QueueArgs,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Print dead letters (they stay in their queues).
    List {
        #[arg(long, env = "AMQP_URL", default_value = shared::amqp::DEFAULT_AMQP_URL)]
        amqp: String,
        /// Most messages shown per function.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead letters back to their function's queue.
    Replay {
        #[arg(long, env = "AMQP_URL", default_value = shared::amqp::DEFAULT_AMQP_URL)]
        amqp: String,
        /// Only this function's dead letters.
        #[arg(long)]
        function: Option<String>,
        /// Only the message with this id (the event id).
        #[arg(long)]
        message_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum OrderCommand {
    /// POST an order and print its id (and, with --wait, its final state).
    Create(CreateArgs),
    /// GET an order, with its saga history.
    Show {
        order_id: String,
        #[arg(long, env = "CHOREO_URL", default_value = "http://127.0.0.1:3000")]
        url: String,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// A line of the order as SKU:QUANTITY; repeat for more lines.
    #[arg(long = "item", required = true, value_name = "SKU:QUANTITY")]
    items: Vec<String>,
    #[arg(long, default_value = "customer-1")]
    customer: String,
    /// Destination country (ISO 3166-1 alpha-2); AQ is not served by default.
    #[arg(long, default_value = "FR")]
    country: String,
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait until the saga ends and print the order.
    #[arg(long)]
    wait: bool,
    #[arg(long, env = "CHOREO_URL", default_value = "http://127.0.0.1:3000")]
    url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bench logs only problems unless asked: a line per saga step would be
    // the bench's bottleneck.
    if matches!(cli.command, Command::Bench(_)) && std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: set before any other thread exists (the runtime's workers do
        // not read the environment).
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    shared::telemetry::init();
    let result = match cli.command {
        Command::Up(args) => up(args).await,
        Command::Graph => {
            print!("{}", shared::choreography::mermaid());
            Ok(())
        }
        Command::Relay { amqp } => relay(amqp).await,
        Command::Template => {
            print!("{}", choreo::template::sam_template());
            Ok(())
        }
        Command::Topology { vhost, queues } => {
            let definitions = Topology::derive(&queues.settings()).definitions_json(&vhost);
            println!("{}", serde_json::to_string_pretty(&definitions).unwrap_or_default());
            Ok(())
        }
        Command::Bridge(args) => bridge(args).await,
        Command::Dlq { command } => dlq(command).await,
        Command::Bench(args) => bench(args).await,
        Command::Order { command } => order(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("choreo: {error}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

async fn up(args: UpArgs) -> Result<(), AnyError> {
    let catalog = match &args.inventory {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            parse_catalog(&path.display().to_string(), &text)?
        }
        None => parse_catalog("infra/inventory.seed.json (built in)", DEFAULT_CATALOG)?,
    };
    let config = EmbeddedConfig {
        db: args.db.clone(),
        catalog,
        ship_countries: ShipCountries::parse(&args.ship_countries)?,
        bus: BusSettings { concurrency: args.queues.concurrency.max(1), ..BusSettings::default() },
    };
    let address = SocketAddr::new(args.host, args.port);
    if let Some(url) = &args.amqp {
        let system = AmqpSystem::start(config, url, args.queues.settings()).await?;
        let listener = bind(address).await?;
        println!(
            "choreo is up: http://{} (database {}; RabbitMQ {}; Ctrl-C stops)",
            listener.local_addr()?,
            args.db.display(),
            redact(url)
        );
        serve(listener, system.router.clone(), shutdown_signal()).await?;
        tracing::info!("stopping: finishing the messages in hand");
        system.shutdown().await;
        return Ok(());
    }
    let system = Embedded::start(config).await?;
    let listener = bind(address).await?;
    println!("choreo is up: http://{} (database {}; Ctrl-C stops)", listener.local_addr()?, args.db.display());
    serve(listener, system.router, shutdown_signal()).await?;
    tracing::info!(in_flight = system.bus.in_flight(), "stopping: finishing the sagas in flight");
    if tokio::time::timeout(Duration::from_secs(10), system.bus.idle()).await.is_err() {
        tracing::warn!("sagas still in flight after 10 s; they resume from the outbox at the next start");
    }
    Ok(())
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, AnyError> {
    Ok(tokio::net::TcpListener::bind(address).await.map_err(|error| format!("cannot listen on {address}: {error}"))?)
}

async fn bench(args: BenchArgs) -> Result<(), AnyError> {
    use choreo::bench::{BenchConfig, Target};
    let target = match (&args.amqp, args.raw) {
        (Some(url), true) => Target::Raw(url.clone()),
        (Some(url), false) => Target::Amqp(url.clone()),
        (None, _) => Target::Embedded,
    };
    let config = BenchConfig {
        target,
        orders: args.orders,
        concurrency: args.concurrency.max(1),
        rate: args.rate,
        mix: args.mix,
        queues: QueueSettings {
            prefetch: args.prefetch.max(1),
            concurrency: args.queue_concurrency.max(1),
            ..QueueSettings::default()
        },
        db_dir: std::env::temp_dir(),
    };
    let report = choreo::bench::run(config).await?;
    println!("{report}");
    Ok(())
}

async fn bridge(args: BridgeArgs) -> Result<(), AnyError> {
    use choreo::bridge::{self, BridgeConfig, InvokeMode, Target};
    let functions = bridge::parse_functions(&args.functions)?;
    let target = match args.invoke {
        InvokeMode::Lambda => {
            if !args.sqs_queue_urls.is_empty() {
                return Err("--sqs-queue-url applies to --invoke sqs only".into());
            }
            Target::Lambda { endpoint: args.endpoint, function_prefix: args.function_prefix }
        }
        InvokeMode::Sqs => {
            let queue_urls =
                bridge::resolve_queue_urls(&functions, &args.sqs_queue_urls, |name| std::env::var(name).ok())?;
            Target::Sqs { endpoint: args.endpoint, queue_urls }
        }
    };
    let config = BridgeConfig { amqp_url: args.amqp, functions, target, settings: args.queues.settings() };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: finishing the messages in hand (signal again to stop at once)");
        let _ = stop.send(true);
        shutdown_signal().await;
        std::process::exit(130);
    });
    bridge::run(config, stopped).await?;
    Ok(())
}

async fn relay(amqp: String) -> Result<(), AnyError> {
    // The store the functions use: CHOREO_STORE=dynamodb (+ CHOREO_TABLE_PREFIX) or CHOREO_DB.
    let store = shared::config::store_from_env().await?;
    let link = AmqpLink::new(&amqp, "choreo-relay");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(choreo::amqp_host::relay_forever(store, std::sync::Arc::clone(&link), stopped));
    println!("relaying the outbox to {} (Ctrl-C stops)", redact(&amqp));
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = relay.await;
    link.close().await;
    Ok(())
}

async fn dlq(command: DlqCommand) -> Result<(), AnyError> {
    match command {
        DlqCommand::List { amqp, limit } => {
            let link = AmqpLink::new(&amqp, "choreo-dlq");
            let letters = shared::amqp::list_dead_letters(&link, limit).await?;
            link.close().await;
            for letter in &letters {
                println!("{}", serde_json::to_string(letter)?);
            }
            eprintln!("{} dead letter(s)", letters.len());
        }
        DlqCommand::Replay { amqp, function, message_id } => {
            let function = match function {
                Some(name) => Some(Function::from_name(&name).ok_or_else(|| format!("no function named '{name}'"))?),
                None => None,
            };
            let link = AmqpLink::new(&amqp, "choreo-dlq");
            let replayed = shared::amqp::replay_dead_letters(&link, function, message_id.as_deref()).await?;
            link.close().await;
            println!("replayed {replayed} dead letter(s)");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = interrupt => {}, () = terminate => {} }
}

async fn order(command: OrderCommand) -> Result<(), AnyError> {
    match command {
        OrderCommand::Create(args) => {
            let mut items = Vec::new();
            for item in &args.items {
                let (sku, quantity) =
                    item.split_once(':').ok_or_else(|| format!("--item '{item}' must be SKU:QUANTITY"))?;
                let quantity: i64 =
                    quantity.parse().map_err(|_| format!("--item '{item}': '{quantity}' is not a number"))?;
                items.push(json!({"sku": sku, "quantity": quantity}));
            }
            let body = json!({
                "customer_id": args.customer,
                "items": items,
                "shipping_address": {"name": "Ada Lovelace", "line1": "12 Analytical Row", "city": "London", "postal_code": "N1 7AA", "country": args.country}
            });
            let client = Client::new(&args.url);
            let order_id = client.create_order(&body, args.idempotency_key.as_deref()).await?;
            if args.wait {
                let order = client.wait_terminal(&order_id, Duration::from_secs(30)).await?;
                println!("{}", serde_json::to_string_pretty(&order)?);
            } else {
                println!("{order_id}");
            }
        }
        OrderCommand::Show { order_id, url } => {
            let order = Client::new(&url).order(&order_id).await?;
            println!("{}", serde_json::to_string_pretty(&order)?);
        }
    }
    Ok(())
}
