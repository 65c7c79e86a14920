//! Lambda event fixtures (`tests/tests/fixtures/`): JSON shaped like what
//! AWS sends, with placeholders for what must match the test's store.
//!
//! Filled in: `{{EVENT_ID}}`/`{{ORDER_ID}}` in the CloudEvent bodies
//! (`cloudevent-<type>.json`), and per message slot `n` of an envelope
//! `{{BODY_n}}` (SQS body), `{{BODY_BASE64_n}}`/`{{BODY_SIZE_n}}` (Amazon MQ
//! data and `bodySize`, Kafka value), `{{KEY_BASE64_n}}` (Kafka key: the
//! order id), `{{EVENT_ID_n}}`, `{{ORDER_ID_n}}`, `{{TYPE_n}}`, plus
//! `{{FUNCTION}}`, `{{QUEUE}}` and `{{TOPIC}}` (the topic of slot 1's type:
//! a Kafka mapping reads one topic).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use shared::contract::domain::OrderId;
use shared::{Event, EventType, Function};
use uuid::Uuid;

/// The fixture `name` as JSON.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{name} is not JSON: {error}"))
}

fn placeholder(name: &str) -> String {
    format!("{{{{{name}}}}}")
}

/// Fills placeholders in keys and string values: a string that is exactly
/// one placeholder becomes its value (so `bodySize` becomes a number), and a
/// placeholder inside a longer string is replaced by the value's text.
pub fn fill(value: &mut Value, values: &[(String, Value)]) {
    let text_of = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    let fill_text = |text: &str| {
        values.iter().fold(text.to_owned(), |text, (name, value)| text.replace(&placeholder(name), &text_of(value)))
    };
    match value {
        Value::String(text) => {
            let whole = values.iter().find(|(name, _)| *text == placeholder(name)).map(|(_, value)| value.clone());
            *value = whole.unwrap_or_else(|| Value::String(fill_text(text)));
        }
        Value::Array(items) => items.iter_mut().for_each(|item| fill(item, values)),
        Value::Object(map) => {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(key, mut item)| {
                    fill(&mut item, values);
                    (fill_text(&key), item)
                })
                .collect();
        }
        _ => {}
    }
}

/// The CloudEvent of fixture `name` about `order_id`, with a fresh id, as
/// the text a queue carries.
pub fn cloudevent(name: &str, order_id: OrderId) -> String {
    let mut body = fixture(name);
    let values = [
        ("EVENT_ID".to_owned(), json!(Uuid::now_v7().to_string())),
        ("ORDER_ID".to_owned(), json!(order_id.to_string())),
    ];
    fill(&mut body, &values);
    body.to_string()
}

/// The AWS envelope of fixture `name` for `function`, carrying `bodies` in
/// its message slots 1, 2, …
pub fn envelope(name: &str, function: Function, bodies: &[&str]) -> Value {
    let mut values =
        vec![("FUNCTION".to_owned(), json!(function.name())), ("QUEUE".to_owned(), json!(function.queue()))];
    for (slot, body) in (1..).zip(bodies) {
        let cloudevent: Value = serde_json::from_str(body).expect("a body slot holds a JSON CloudEvent");
        let order_id = cloudevent["subject"].as_str().unwrap_or_default().to_owned();
        if slot == 1 {
            let event_type = cloudevent["type"].as_str().and_then(EventType::parse);
            let topic = event_type.map(shared::bus::kafka::event_topic).unwrap_or_default();
            values.push(("TOPIC".to_owned(), json!(topic)));
        }
        values.extend([
            (format!("BODY_{slot}"), json!(body)),
            (format!("BODY_BASE64_{slot}"), json!(BASE64.encode(body))),
            (format!("BODY_SIZE_{slot}"), json!(body.len())),
            (format!("KEY_BASE64_{slot}"), json!(BASE64.encode(&order_id))),
            (format!("EVENT_ID_{slot}"), cloudevent["id"].clone()),
            (format!("ORDER_ID_{slot}"), json!(order_id)),
            (format!("TYPE_{slot}"), cloudevent["type"].clone()),
        ]);
    }
    let mut envelope = fixture(name);
    fill(&mut envelope, &values);
    let text = envelope.to_string();
    assert!(!text.contains("{{"), "{name} has a placeholder this test does not fill: {text}");
    envelope
}

/// A fixture CloudEvent's text, decoded.
pub fn decode(body: &str) -> Event {
    Event::from_json(body.as_bytes()).unwrap_or_else(|error| panic!("a fixture CloudEvent does not decode: {error}"))
}
