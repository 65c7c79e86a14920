//! Shared core of choreo: the order domain, the event contracts, the
//! choreography table, the ports every step is written against and their
//! adapters. See DESIGN.md for the picture.

pub mod amqp;
pub mod bus;
pub mod choreography;
pub mod config;
pub mod domain;
pub mod dynamodb;
pub mod events;
pub mod http;
pub mod lambda;
pub mod ports;
pub mod sqlite;
pub mod step;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use choreography::Function;
pub use events::{Event, EventType, Payload};
pub use step::{Decision, Ports, Step, StepError};
