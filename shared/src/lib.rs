//! Shared core of choreo, laid out as ports and adapters (ARCHITECTURE.md):
//!
//! - `contract`: what every function agrees on — the order domain, the event
//!   envelope and payloads, and the choreography table (declared once).
//! - `step`: the port a saga step is written against (`Step`, `Ports`) and
//!   its idempotent read–decide–commit loop.
//! - `store`: the storage port (`Store`, its records and the rules every
//!   adapter keeps) and its adapters, SQLite and DynamoDB.
//! - `bus`: the publishing port (`Publisher`), the outbox relay and the bus
//!   adapters, RabbitMQ and the in-process bus of `choreo up`.
//! - `host`: how a step is hosted — on Lambda (every event shape) and over
//!   HTTP (problem+json plumbing shared by the HTTP functions).
//! - `saga`: saga supervision — the deadline sweeper and where a saga stands.
//! - `config`, `telemetry`: settings from the environment, logging.

pub mod bus;
pub mod config;
pub mod contract;
pub mod host;
pub mod saga;
pub mod step;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use contract::choreography::Function;
pub use contract::events::{Event, EventType, Payload};
pub use step::{Decision, Ports, Step, StepError};
