//! The `choreo` command's library: the embedded runner, the in-process bus,
//! the step registry and the HTTP client, shared by the binary and the tests.

pub mod amqp_host;
pub mod bench;
pub mod bridge;
pub mod client;
pub mod embedded;
pub mod inprocess;
pub mod steps;
pub mod template;
