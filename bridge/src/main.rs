//! `choreo`: run the saga on this machine, talk to it, draw it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use choreo::client::Client;
use choreo::embedded::{DEFAULT_CATALOG, Embedded, EmbeddedConfig, parse_catalog, serve};
use choreo::inprocess::BusSettings;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
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
    /// Events each function handles at once.
    #[arg(long, env = "CHOREO_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
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
    shared::telemetry::init();
    let result = match Cli::parse().command {
        Command::Up(args) => up(args).await,
        Command::Graph => {
            print!("{}", shared::choreography::mermaid());
            Ok(())
        }
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
        bus: BusSettings { concurrency: args.concurrency.max(1), ..BusSettings::default() },
    };
    let system = Embedded::start(config).await?;
    let address = SocketAddr::new(args.host, args.port);
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|error| format!("cannot listen on {address}: {error}"))?;
    println!("choreo is up: http://{} (database {}; Ctrl-C stops)", listener.local_addr()?, args.db.display());
    serve(listener, system.router, shutdown_signal()).await?;
    tracing::info!(in_flight = system.bus.in_flight(), "stopping: finishing the sagas in flight");
    if tokio::time::timeout(Duration::from_secs(10), system.bus.idle()).await.is_err() {
        tracing::warn!("sagas still in flight after 10 s; they resume from the outbox at the next start");
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
