//! Hostings of a step: Lambda (direct CloudEvent, SQS, Amazon MQ) and HTTP.

pub mod http;
pub mod lambda;
pub mod trace_context;
