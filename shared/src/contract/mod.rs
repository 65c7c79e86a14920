//! The contracts every function shares: the domain's validated types, the
//! CloudEvents envelope with its payloads, and the choreography table.

pub mod choreography;
pub mod domain;
pub mod events;
