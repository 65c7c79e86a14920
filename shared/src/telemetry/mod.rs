//! What a person sees of the running system (ARCHITECTURE.md §14): logging
//! (human-readable lines locally, JSON when Lambda asks for it,
//! `AWS_LAMBDA_LOG_FORMAT=JSON`; filter with `RUST_LOG`, default `info`),
//! each step's span and line (`step`), and the metrics (`metrics`).

pub mod metrics;
pub mod step;

pub use self::step::{StepOutcome, run_step, step_span};

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    // Colours only for a person at a terminal, not in files or CloudWatch.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // try_init: a second call (tests, embedded hosts) keeps the first subscriber.
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.compact().try_init() };
}
