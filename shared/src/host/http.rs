//! HTTP plumbing shared by the HTTP functions: RFC 9457 problem responses,
//! JSON body reading with the ARCHITECTURE.md §10 limits, and the fallbacks that turn
//! unknown routes and methods into problems too.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::contract::domain::FieldError;

/// Largest request body accepted (ARCHITECTURE.md §10).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An `application/problem+json` body (RFC 9457).
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A relative URI naming the kind of problem; stable, so clients can branch on it.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem, the same for every occurrence.
    pub title: &'static str,
    /// The HTTP status, repeated in the body as RFC 9457 suggests.
    pub status: u16,
    /// What went wrong this time, in words a person can act on.
    pub detail: String,
    /// Every bad field of a validation error; left out otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed, sent as `Retry-After`; not in the body.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: vec![],
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`: the service is saturated, nothing was done,
    /// the same request may succeed after `retry_after_seconds`.
    pub fn overloaded(detail: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self {
            retry_after: Some(retry_after_seconds),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Service overloaded", detail)
        }
    }

    /// 503 with `Retry-After`: the request took longer than `limit` and was
    /// abandoned; whatever it committed stands (retry with the same Idempotency-Key).
    pub fn timed_out(limit: std::time::Duration, retry_after_seconds: u64) -> Self {
        Self {
            retry_after: Some(retry_after_seconds),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
                format!(
                    "the request took longer than {} ms; retry it (with the same Idempotency-Key for an order)",
                    limit.as_millis()
                ),
            )
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        let detail = format!("the request has {} invalid field(s): {}", errors.len(), fields.join(", "));
        Self { errors, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation-error", "Invalid request", detail) }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A struct of strings and numbers: serializing cannot fail.
        let body = serde_json::to_vec(&self).expect("problem serializes");
        let mut response = (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Reads a JSON request body: checks the content type, the size limit and the
/// JSON syntax, each with its own status (415, 413, 400).
pub async fn read_json(headers: &HeaderMap, body: Body) -> Result<serde_json::Value, Problem> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media_type != "application/json" {
        let shown = if content_type.is_empty() { "none".to_owned() } else { format!("'{content_type}'") };
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("send the body as JSON with 'Content-Type: application/json' (got {shown})"),
        ));
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the body must be at most {MAX_BODY_BYTES} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|error| Problem::bad_request(format!("the body is not valid JSON: {error}")))
}

/// Adds problem+json answers for unknown paths (404) and methods (405, with
/// the `Allow` header the routes of the choreography table imply).
pub fn with_fallbacks(router: Router) -> Router {
    router
        .method_not_allowed_fallback(|uri: axum::http::Uri| async move {
            let allow = allowed_methods(uri.path());
            let problem = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                format!("{} accepts only {allow}", uri.path()),
            );
            ([(header::ALLOW, allow)], problem)
        })
        .fallback(|| async { Problem::not_found("no such route; the API serves /orders and /inventory/{sku}") })
}

/// Methods the table's routes accept at `path` (GET implies HEAD).
fn allowed_methods(path: &str) -> String {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut methods: Vec<&str> = crate::contract::choreography::CHOREOGRAPHY
        .iter()
        .flat_map(|spec| spec.routes)
        .filter(|route| {
            let pattern: Vec<&str> = route.path.split('/').collect();
            pattern.len() == segments.len()
                && pattern.iter().zip(&segments).all(|(want, got)| want.starts_with('{') || want == got)
        })
        .flat_map(|route| if route.method == "GET" { vec!["GET", "HEAD"] } else { vec![route.method] })
        .collect();
    methods.dedup();
    methods.join(", ")
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn is_valid_idempotency_key(key: &[u8]) -> bool {
    (1..=255).contains(&key.len()) && key.iter().all(|byte| (0x21..=0x7e).contains(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_the_methods_of_the_matching_route() {
        assert_eq!(allowed_methods("/orders"), "POST");
        assert_eq!(allowed_methods("/orders/abc"), "GET, HEAD");
        assert_eq!(allowed_methods("/inventory/X-1"), "GET, HEAD");
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(is_valid_idempotency_key(b"order-1"));
        assert!(!is_valid_idempotency_key(b"has space") && !is_valid_idempotency_key(b""));
        assert!(!is_valid_idempotency_key(&[b'k'; 256]));
    }
}
