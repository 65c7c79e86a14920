//! Hostings of a step: Lambda (direct CloudEvent, SQS, Amazon MQ) and HTTP,
//! with who may call the API (`auth`) and the trace a request is in.

pub mod auth;
pub mod http;
pub mod lambda;
pub mod trace_context;
