//! The contracts every function shares: the domain's validated types, the
//! CloudEvents envelope with its payloads, the choreography table, and the
//! trace context every event carries.

pub mod choreography;
pub mod domain;
pub mod events;
pub mod trace;
