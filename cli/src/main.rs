//! `choreo`: run the saga on this machine, talk to it, draw it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

mod args;

/// mimalloc: glibc's malloc and its heap trims showed in every profile of `choreo up`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use choreo::client::Client;
use choreo::up::{AmqpSystem, DEFAULT_CATALOG, Embedded, KafkaSystem, UpConfig, parse_catalog, serve};
use clap::Parser;
use serde_json::json;
use shared::Function;
use shared::bus::Publisher;
use shared::bus::amqp::{AmqpLink, Topology, redact};
use shared::bus::kafka::KafkaLink;
use shared::host::auth::{ApiAuth, JwksVerifier};
use shared::step::ShipCountries;

use self::args::{
    AuthArg, BenchArgs, BridgeArgs, Cli, Command, DlqCommand, KafkaArgs, OrderCommand, SagaArgs, SagasCommand,
    StockCommand, StoreArgs, UpArgs,
};

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
            print!("{}", shared::contract::choreography::mermaid());
            Ok(())
        }
        Command::Relay { amqp, kafka, store } => relay(amqp, kafka, store).await,
        Command::Stock { command } => stock(command).await,
        Command::Template => {
            print!("{}", choreo::template::sam_template());
            Ok(())
        }
        Command::Topology { kafka: true, create, queues, .. } => kafka_topology(create, &queues.settings()).await,
        Command::Topology { vhost, queues, .. } => {
            let definitions = Topology::derive(&queues.settings()).definitions_json(&vhost);
            println!("{}", serde_json::to_string_pretty(&definitions).unwrap_or_default());
            Ok(())
        }
        Command::Bridge(args) => bridge(args).await,
        Command::Dlq { command } => dlq(command).await,
        Command::Bench(args) => bench(args).await,
        Command::Order { command } => order(command).await,
        Command::Sagas { command } => sagas(command).await,
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
    if args.amqp.is_none() && args.queues.prefetch.is_some() {
        // Kafka has no prefetch: a group fetches what its partitions hold.
        return Err("--prefetch (CHOREO_PREFETCH) applies to RabbitMQ only: add --amqp URL or drop it".into());
    }
    let store = args.store.settings()?;
    // --kafka (or KAFKA_BOOTSTRAP_SERVERS) wins over an AMQP_URL the environment may hold for other commands.
    let kafka = args.kafka.settings()?;
    let config = UpConfig {
        store: store.clone(),
        catalog,
        ship_countries: ShipCountries::parse(&args.ship_countries)?,
        delivery: if args.amqp.is_none() && kafka.is_none() {
            args.queues.in_process_settings()
        } else {
            args.queues.settings()
        },
        observer: None,
        store_counts: None,
    };
    let address = SocketAddr::new(args.host, args.port);
    let auth = Arc::new(api_auth(&args)?);
    if auth.is_open() && !args.host.is_loopback() {
        tracing::warn!(%address, "the API listens beyond this machine with no authorization: anyone who reaches it reads and places any customer's orders; add --auth jwt --jwks FILE");
    }
    if let Some(kafka) = kafka {
        let servers = kafka.bootstrap_servers.clone();
        let system = KafkaSystem::start(config, kafka, args.saga_deadline).await?.with_auth(auth);
        let listener = bind(address).await?;
        println!("choreo is up: http://{} (store {}; Kafka {}; Ctrl-C stops)", listener.local_addr()?, store, servers);
        serve(listener, system.router.clone(), shutdown_signal()).await?;
        tracing::info!("stopping: finishing the records in hand");
        system.shutdown().await;
        return Ok(());
    }
    if let Some(url) = &args.amqp {
        let system = AmqpSystem::start_with_deadline(config, url, args.saga_deadline).await?.with_auth(auth);
        let listener = bind(address).await?;
        println!(
            "choreo is up: http://{} (store {}; RabbitMQ {}; Ctrl-C stops)",
            listener.local_addr()?,
            store,
            redact(url)
        );
        serve(listener, system.router.clone(), shutdown_signal()).await?;
        tracing::info!("stopping: finishing the messages in hand");
        system.shutdown().await;
        return Ok(());
    }
    let system = Embedded::start_with_deadline(config, args.saga_deadline).await?.with_auth(auth);
    let listener = bind(address).await?;
    println!("choreo is up: http://{} (store {}; Ctrl-C stops)", listener.local_addr()?, store);
    serve(listener, system.router, shutdown_signal()).await?;
    tracing::info!(in_flight = system.bus.in_flight(), "stopping: finishing the sagas in flight");
    if tokio::time::timeout(Duration::from_secs(10), system.bus.idle()).await.is_err() {
        tracing::warn!("sagas still in flight after 10 s; they resume from the outbox at the next start");
    }
    Ok(())
}

/// How `choreo up` checks callers (ARCHITECTURE.md §14.4).
fn api_auth(args: &UpArgs) -> Result<ApiAuth, AnyError> {
    match (args.auth, &args.jwks) {
        (AuthArg::Open, _) => Ok(ApiAuth::Open),
        (AuthArg::Jwt, None) => Err("--auth jwt needs --jwks FILE, the public keys that sign the tokens".into()),
        (AuthArg::Jwt, Some(path)) => {
            let verifier = JwksVerifier::from_file(path)?.expecting(args.jwt_issuer.clone(), args.jwt_audience.clone());
            Ok(ApiAuth::Jwt { claim: args.customer_claim.clone(), verifier: Some(Arc::new(verifier)) })
        }
    }
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, AnyError> {
    Ok(tokio::net::TcpListener::bind(address).await.map_err(|error| format!("cannot listen on {address}: {error}"))?)
}

async fn bench(args: BenchArgs) -> Result<(), AnyError> {
    use choreo::bench::{BenchConfig, BenchSystem};
    // Only the flag: KAFKA_BOOTSTRAP_SERVERS set for other commands must not turn a bench into a Kafka one.
    let kafka = match &args.kafka {
        Some(servers) => KafkaArgs { bootstrap_servers: Some(servers.clone()) }.settings()?,
        None => None,
    };
    let system = match (&args.amqp, args.raw, kafka) {
        (Some(url), true, _) => BenchSystem::Raw(url.clone()),
        (Some(url), false, _) => BenchSystem::Amqp(url.clone()),
        (None, _, Some(kafka)) => BenchSystem::Kafka(kafka),
        (None, _, None) => BenchSystem::Embedded,
    };
    let defaults = match system {
        BenchSystem::Embedded => shared::bus::DeliverySettings::in_process(),
        _ => shared::bus::DeliverySettings::default(),
    };
    let config = BenchConfig {
        system,
        orders: args.orders,
        concurrency: args.concurrency.max(1),
        rate: args.rate,
        mix: args.mix,
        delivery: shared::bus::DeliverySettings {
            prefetch: args.prefetch.max(1),
            concurrency: args.queue_concurrency.unwrap_or(defaults.concurrency).max(1),
            ..defaults
        },
        db_dir: std::env::temp_dir(),
    };
    let report = choreo::bench::run(config).await?;
    println!("{report}");
    Ok(())
}

async fn bridge(args: BridgeArgs) -> Result<(), AnyError> {
    use choreo::bridge::{self, BridgeConfig, InvokeMode, InvokeTarget};
    let functions = bridge::parse_functions(&args.functions)?;
    let target = match args.invoke {
        InvokeMode::Lambda => {
            if !args.sqs_queue_urls.is_empty() {
                return Err("--sqs-queue-url applies to --invoke sqs only".into());
            }
            InvokeTarget::Lambda {
                endpoint: args.endpoint,
                function_prefix: args.function_prefix,
                event_shape: args.event_shape,
            }
        }
        InvokeMode::Sqs if args.event_shape != bridge::EventShape::CloudEvent => {
            return Err("--event-shape applies to --invoke lambda only".into());
        }
        InvokeMode::Sqs => {
            let queue_urls =
                bridge::resolve_queue_urls(&functions, &args.sqs_queue_urls, |name| std::env::var(name).ok())?;
            InvokeTarget::Sqs { endpoint: args.endpoint, queue_urls }
        }
    };
    let call_timeout = std::time::Duration::from_secs(args.call_timeout_secs);
    let config = BridgeConfig {
        amqp_url: args.amqp,
        kafka: args.kafka.settings()?,
        functions,
        target,
        settings: args.queues.settings(),
        call_timeout,
    };
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

/// `choreo topology --kafka [--create]`: the topics and groups, as JSON;
/// with `--create`, made on the cluster first (a deployment's one set-up step).
async fn kafka_topology(create: bool, delivery: &shared::bus::DeliverySettings) -> Result<(), AnyError> {
    let kafka = if create {
        let kafka = KafkaArgs::default().settings()?;
        let kafka = kafka.ok_or("--create needs the cluster: set KAFKA_BOOTSTRAP_SERVERS")?;
        KafkaLink::new(kafka.clone(), "choreo-topology").create_topics(delivery).await?;
        kafka
    } else {
        // The servers do not shape the topics (KAFKA_PARTITIONS and KAFKA_REPLICATION do): any will do.
        KafkaArgs { bootstrap_servers: Some("-".into()) }.settings()?.ok_or("servers are given")?
    };
    let topology = shared::bus::kafka::KafkaTopology::derive(&kafka, delivery);
    println!("{}", serde_json::to_string_pretty(&topology)?);
    Ok(())
}

async fn relay(amqp: String, kafka: KafkaArgs, store: StoreArgs) -> Result<(), AnyError> {
    // The store the functions use: CHOREO_STORE=dynamodb (+ CHOREO_TABLE_PREFIX) or CHOREO_DB.
    let settings = store.settings()?;
    let store = settings.open().await?;
    let (publisher, target): (Arc<dyn Publisher>, String) = match kafka.settings()? {
        Some(kafka) => {
            let servers = kafka.bootstrap_servers.clone();
            (KafkaLink::new(kafka, "choreo-relay"), format!("Kafka {servers}"))
        }
        None => (AmqpLink::new(&amqp, "choreo-relay"), redact(&amqp)),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(shared::bus::relay_forever(store, Arc::clone(&publisher), stopped));
    println!("relaying the outbox of {settings} to {target} (Ctrl-C stops)");
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = relay.await;
    Ok(())
}

async fn stock(command: StockCommand) -> Result<(), AnyError> {
    match command {
        StockCommand::Import { file, create_tables, store } => {
            let settings = store.settings()?;
            let opened = if create_tables { settings.open_creating_tables().await? } else { settings.open().await? };
            let report = choreo::stock::import_file(&*opened, &file).await?;
            println!(
                "{}",
                json!({"file": file.display().to_string(), "store": settings.to_string(), "added": report.added, "updated": report.updated, "unchanged": report.unchanged})
            );
        }
        StockCommand::List { store } => {
            for level in choreo::stock::list(&*store.settings()?.open().await?).await? {
                println!("{}", serde_json::to_string(&level)?);
            }
        }
    }
    Ok(())
}

async fn dlq(command: DlqCommand) -> Result<(), AnyError> {
    match command {
        DlqCommand::List { amqp, kafka, store, limit } => {
            let letters = match (kafka.settings()?, amqp) {
                (Some(kafka), _) => {
                    let link = KafkaLink::new(kafka, "choreo-dlq");
                    shared::bus::kafka::list_dead_records(&link, limit).await?
                }
                (None, Some(amqp)) => {
                    let link = AmqpLink::new(&amqp, "choreo-dlq");
                    let letters = shared::bus::amqp::list_dead_letters(&link, limit).await?;
                    link.close().await;
                    letters
                }
                (None, None) => {
                    let store = store.settings()?.open().await?;
                    shared::bus::inprocess::list_stored_dead_letters(&*store, limit).await?
                }
            };
            print_dead_letters(&letters)?;
        }
        DlqCommand::Replay { amqp, kafka, store, function, message_id } => {
            let function = match function {
                Some(name) => Some(Function::from_name(&name).ok_or_else(|| format!("no function named '{name}'"))?),
                None => None,
            };
            let replayed = match (kafka.settings()?, amqp) {
                (Some(kafka), _) => {
                    let link = KafkaLink::new(kafka, "choreo-dlq");
                    let replayed =
                        shared::bus::kafka::replay_dead_records(&link, function, message_id.as_deref()).await?;
                    link.close().await;
                    replayed
                }
                (None, Some(amqp)) => {
                    let link = AmqpLink::new(&amqp, "choreo-dlq");
                    let replayed =
                        shared::bus::amqp::replay_dead_letters(&link, function, message_id.as_deref()).await?;
                    link.close().await;
                    replayed
                }
                // Marked for replay in the store; `choreo up` delivers them.
                (None, None) => {
                    store.settings()?.open().await?.replay_dead_letters(function, message_id.as_deref()).await?
                }
            };
            println!("replayed {replayed} dead letter(s)");
        }
    }
    Ok(())
}

fn print_dead_letters(letters: &[shared::bus::amqp::DeadMessage]) -> Result<(), AnyError> {
    for letter in letters {
        println!("{}", serde_json::to_string(letter)?);
    }
    eprintln!("{} dead letter(s)", letters.len());
    Ok(())
}

async fn sagas(command: SagasCommand) -> Result<(), AnyError> {
    use choreo::sagas::{RedriveTo, describe, progress_of_order, redrive, stuck_progress};
    match command {
        SagasCommand::Stuck { sagas: SagaArgs { older_than, amqp, kafka, store } } => {
            let store = store.settings()?.open().await?;
            let sagas = stuck_progress(&*store, older_than).await?;
            // Every dead letter, to find each saga's (a handful per function at most).
            let dead = match (kafka.settings()?, &amqp) {
                (Some(kafka), _) => {
                    let link = KafkaLink::new(kafka, "choreo-sagas");
                    shared::bus::kafka::list_dead_records(&link, 10_000).await?
                }
                (None, Some(amqp)) => {
                    let link = AmqpLink::new(amqp, "choreo-sagas");
                    let letters = shared::bus::amqp::list_dead_letters(&link, 10_000).await;
                    link.close().await;
                    letters?
                }
                (None, None) => {
                    shared::bus::inprocess::list_stored_dead_letters(&*store, 10_000).await.unwrap_or_else(|error| {
                        tracing::warn!(%error, "cannot read the store's dead letters");
                        vec![]
                    })
                }
            };
            for saga in &sagas {
                println!("{}", serde_json::to_string(&describe(saga, &dead))?);
            }
            eprintln!("{} stuck saga(s)", sagas.len());
        }
        SagasCommand::Redrive { order_id, all_stuck, sagas: SagaArgs { older_than, amqp, kafka, store } } => {
            let store = store.settings()?.open().await?;
            let sagas = match order_id {
                Some(id) if !all_stuck => {
                    let order_id = shared::contract::domain::OrderId::parse(&id)
                        .map_err(|_| format!("'{id}' is not an order id"))?;
                    vec![progress_of_order(&*store, order_id).await?.ok_or_else(|| format!("no order {id}"))?]
                }
                _ => stuck_progress(&*store, older_than).await?,
            };
            let (amqp_link, kafka_link) = match (kafka.settings()?, amqp) {
                (Some(kafka), _) => (None, Some(KafkaLink::new(kafka, "choreo-sagas"))),
                (None, amqp) => (amqp.map(|amqp| AmqpLink::new(&amqp, "choreo-sagas")), None),
            };
            let to = match (&amqp_link, &kafka_link) {
                (_, Some(link)) => RedriveTo::Broker(&**link),
                (Some(link), None) => RedriveTo::Broker(&**link),
                (None, None) => RedriveTo::Store,
            };
            let mut handed = 0;
            for saga in &sagas {
                handed += redrive(&*store, saga, &to).await?;
            }
            if let Some(link) = amqp_link {
                link.close().await;
            }
            if let Some(link) = kafka_link {
                link.close().await;
            }
            println!("redrove {} saga(s): {handed} event deliveries handed back", sagas.len());
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
            let client = Client::new(&args.url).with_token(args.token);
            let order_id = client.create_order(&body, args.idempotency_key.as_deref()).await?;
            if args.wait {
                let order = client.wait_terminal(&order_id, Duration::from_secs(30)).await?;
                println!("{}", serde_json::to_string_pretty(&order)?);
            } else {
                println!("{order_id}");
            }
        }
        OrderCommand::Show { order_id, url, timeline: false, token } => {
            let order = Client::new(&url).with_token(token).order(&order_id).await?;
            println!("{}", serde_json::to_string_pretty(&order)?);
        }
        OrderCommand::Show { order_id, url, timeline: true, token } => {
            let client = Client::new(&url).with_token(token);
            let timeline: shared::saga::Timeline = serde_json::from_value(client.timeline(&order_id).await?)?;
            print!("{}", choreo::timeline::render(&timeline));
        }
    }
    Ok(())
}
