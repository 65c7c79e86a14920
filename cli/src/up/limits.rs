//! The HTTP API's limits: a request that takes too long is abandoned, and
//! past a number of requests in progress new ones are shed at once, both as
//! 503 problem+json with `Retry-After`, so that a saturated `choreo up`
//! answers clearly instead of queueing connections without end. (tower's
//! own timeout, concurrency-limit and load-shed layers: tower-http's
//! `TimeoutLayer` answers a bare 408, where clients here expect a problem.)

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use shared::host::http::Problem;
use tower::{BoxError, ServiceBuilder};

/// How long a request may take, and how many may be in progress at once.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// A request still running after this is answered 503 (`/problems/timeout`).
    pub request_timeout: Duration,
    /// Requests handled at once; one more is answered 503 (`/problems/overloaded`).
    pub max_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { request_timeout: Duration::from_secs(10), max_in_flight: 512 }
    }
}

/// Seconds a client is told to wait before retrying.
const RETRY_AFTER_SECONDS: u64 = 1;

/// `router` behind the limits, applied once to the whole API (a layer on
/// the router would give each route a limit of its own).
pub fn with_limits(router: Router, limits: HttpLimits) -> Router {
    let timeout = limits.request_timeout;
    let limited = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |error: BoxError| async move { problem(&error, timeout) }))
        .load_shed()
        .concurrency_limit(limits.max_in_flight.max(1))
        .timeout(timeout)
        .service(router);
    Router::new().fallback_service(limited)
}

fn problem(error: &BoxError, timeout: Duration) -> Problem {
    if error.is::<tower::timeout::error::Elapsed>() {
        Problem::timed_out(timeout, RETRY_AFTER_SECONDS)
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        Problem::overloaded("too many requests in progress; nothing was done, retry later", RETRY_AFTER_SECONDS)
    } else {
        Problem::internal(format!("the request failed: {error}"))
    }
}
