//! The trace a request belongs to (ARCHITECTURE.md §14.1): the caller's W3C
//! `traceparent`, else the X-Ray header API Gateway adds (`X-Amzn-Trace-Id`),
//! else the one Lambda gives the invocation (`_X_AMZN_TRACE_ID`), else a new trace.

use axum::http::HeaderMap;

use crate::contract::trace::TraceParent;

/// The W3C header.
pub const TRACEPARENT: &str = "traceparent";
/// The header API Gateway and the ALB add, in X-Ray form.
pub const XRAY_HEADER: &str = "x-amzn-trace-id";
/// Set by Lambda for the invocation being handled.
pub const XRAY_ENV: &str = "_X_AMZN_TRACE_ID";

/// The trace of the request with `headers`; a malformed header counts as none.
pub fn caller_trace(headers: &HeaderMap) -> TraceParent {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    header(TRACEPARENT)
        .and_then(TraceParent::parse)
        .or_else(|| header(XRAY_HEADER).and_then(TraceParent::from_xray))
        .or_else(|| std::env::var(XRAY_ENV).ok().as_deref().and_then(TraceParent::from_xray))
        .unwrap_or_else(TraceParent::new_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_w3c_header_wins_over_xray() {
        let mut headers = HeaderMap::new();
        headers
            .insert(XRAY_HEADER, "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8".parse().unwrap());
        assert_eq!(caller_trace(&headers).trace_id, "5759e988bd862e3fe1be46a994272793");
        headers.insert(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(caller_trace(&headers).trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        headers.insert(TRACEPARENT, "garbage".parse().unwrap());
        assert_eq!(caller_trace(&headers).trace_id, "5759e988bd862e3fe1be46a994272793");
    }
}
