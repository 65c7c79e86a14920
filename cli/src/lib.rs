//! The `choreo` command's library, shared by the binary and the tests:
//! `up` (every step in one process, over the in-process bus or RabbitMQ),
//! `bridge` (RabbitMQ to Lambda or SQS), `bench`, `client` (the HTTP API
//! from the command line), `stock` (import and list SKUs), `template` (the SAM template) and `steps` (the
//! steps linked into the binary), `workload` (the orders a load drives) and
//! `audit` (the invariants checked after one).

pub mod audit;
pub mod bench;
pub mod bridge;
pub mod client;
pub mod sagas;
pub mod steps;
pub mod stock;
pub mod template;
pub mod timeline;
pub mod up;
pub mod workload;
