//! W3C trace context (`traceparent`), the one trace a saga runs in
//! (ARCHITECTURE.md §14.1). A saga's trace starts at `POST /orders`, taken
//! from the caller's `traceparent`, or on AWS from the X-Ray trace header,
//! or new; every event of the saga carries it with a span of its own.

use std::fmt;

/// A parsed `traceparent`: version 00, 32 hex digits of trace id, 16 of
/// span id, and the flags (bit 0: sampled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// Lower-case hex, 32 digits, not all zero.
    pub trace_id: String,
    /// Lower-case hex, 16 digits, not all zero: the span of whoever sent it.
    pub span_id: String,
    /// Trace flags; only `sampled` (bit 0) is defined.
    pub flags: u8,
}

impl TraceParent {
    /// A new trace (sampled), for a saga whose caller sent none.
    pub fn new_root() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self { trace_id: random, span_id: new_span_id(), flags: 1 }
    }

    /// Parses `00-<trace id>-<span id>-<flags>`; `None` for anything else,
    /// which the spec says to treat as no trace context at all.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version ff is invalid; a future version may append fields, version 00 may not.
        if version.len() != 2 || version == "ff" || !is_hex(version) || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !is_id(trace_id, 32) || !is_id(span_id, 16) || flags.len() != 2 {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self { trace_id: trace_id.to_ascii_lowercase(), span_id: span_id.to_ascii_lowercase(), flags })
    }

    /// Reads an X-Ray trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1`,
    /// as API Gateway and `_X_AMZN_TRACE_ID` give it). X-Ray's root is a W3C
    /// trace id with the dashes removed, so the trace stays one on both sides.
    pub fn from_xray(header: &str) -> Option<Self> {
        let (mut root, mut parent, mut sampled) = (None, None, true);
        for field in header.split(';') {
            match field.trim().split_once('=') {
                Some(("Root", value)) => root = Some(value),
                Some(("Parent", value)) => parent = Some(value),
                Some(("Sampled", value)) => sampled = value != "0",
                _ => {}
            }
        }
        let mut root_parts = root?.split('-');
        let (version, epoch, unique) = (root_parts.next()?, root_parts.next()?, root_parts.next()?);
        if version != "1" || epoch.len() != 8 || unique.len() != 24 {
            return None;
        }
        let trace_id = format!("{epoch}{unique}");
        if !is_id(&trace_id, 32) {
            return None;
        }
        // API Gateway may pass a root alone: the POST then is the first span.
        let span_id = match parent {
            Some(parent) if is_id(parent, 16) => parent.to_ascii_lowercase(),
            _ => new_span_id(),
        };
        Some(Self { trace_id: trace_id.to_ascii_lowercase(), span_id, flags: u8::from(sampled) })
    }

    /// The same trace, as an X-Ray trace header (what SQS's `AWSTraceHeader` takes).
    pub fn to_xray(&self) -> String {
        let (epoch, unique) = self.trace_id.split_at(8);
        format!("Root=1-{epoch}-{unique};Parent={};Sampled={}", self.span_id, self.flags & 1)
    }

    /// The same trace with `span_id` as the current span.
    pub fn with_span(&self, span_id: String) -> Self {
        Self { trace_id: self.trace_id.clone(), span_id, flags: self.flags }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

/// A random span id (16 hex digits, never all zero: v4 UUIDs carry version bits).
pub fn new_span_id() -> String {
    let mut text = uuid::Uuid::new_v4().simple().to_string();
    text.truncate(16);
    text
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn is_id(text: &str, len: usize) -> bool {
    text.len() == len && is_hex(text) && text.bytes().any(|byte| byte != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(text).unwrap();
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id, "00f067aa0ba902b7");
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn invalid_traceparents_are_no_trace_at_all() {
        for text in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(text), None, "{text}");
        }
    }

    #[test]
    fn an_xray_header_is_the_same_trace() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let parsed = TraceParent::from_xray(header).unwrap();
        assert_eq!(parsed.to_string(), "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01");
        assert_eq!(parsed.to_xray(), header);
        assert_eq!(TraceParent::from_xray("Root=1-5759e988;Sampled=1"), None);
        let root_only = TraceParent::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0").unwrap();
        assert_eq!((root_only.span_id.len(), root_only.flags), (16, 0));
    }
}
