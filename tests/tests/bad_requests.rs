//! Every way a request can be wrong (ARCHITECTURE.md §10, openapi.yaml): the right 4xx,
//! as `application/problem+json` with a `detail`, a 422 naming each bad field
//! by JSON pointer, and afterwards nothing stored and nothing published.
//! Each bound is tried on both sides: the valid side must be accepted (202),
//! which also proves that the "nothing stored" check can see an order.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use choreo_e2e::{RowCounts, TestApp, TestResponse, post_order_request, raw_request, spawn_app, stock};
use serde_json::{Value, json};
use shared::testkit::order_body;

async fn app() -> TestApp {
    spawn_app(&[stock("WIDGET-1", 5000, 1000), stock("BOLT-7", 1000, 1000)]).await
}

/// Sends a request that must be refused with `status`: a problem, and the
/// store, outbox and bus exactly as they were.
async fn assert_refused(app: &TestApp, request: Request<Body>, status: StatusCode) -> TestResponse {
    let before = app.snapshot().await;
    let response = app.send(request).await;
    app.settle().await;
    response.assert_problem(status);
    let after = app.snapshot().await;
    assert_eq!(after, before, "a refused request stored or published something; response: {}", response.text);
    assert_eq!(app.bus.in_flight(), 0);
    response
}

/// Posts a body that must fail validation, naming exactly these fields.
async fn assert_invalid(app: &TestApp, body: &Value, fields: &[&str]) {
    let response = assert_refused(app, post_order_request(body, None), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(response.assert_validation_error(), fields, "for body {body}");
}

/// Posts a body that must be accepted, and checks one more order was stored.
async fn assert_accepted(app: &TestApp, request: Request<Body>) {
    let orders = app.row_counts().orders;
    let response = app.send(request).await;
    app.settle().await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text);
    assert_eq!(app.row_counts().orders, orders + 1, "the accepted order was stored");
}

async fn assert_valid(app: &TestApp, body: &Value) {
    assert_accepted(app, post_order_request(body, None)).await;
}

/// After a test that only sent refused requests: the store holds no trace.
async fn assert_nothing_ever_stored(app: &TestApp) {
    assert_eq!(app.row_counts(), RowCounts::default());
    assert!(app.unpublished().await.is_empty());
    let levels = app.store.all_stock().await.unwrap();
    for level in levels {
        assert_eq!((level.available, level.reserved, level.shipped, level.replenished), (level.seeded, 0, 0, 0));
    }
    assert_eq!(app.bus.in_flight(), 0);
}

fn valid() -> Value {
    order_body("WIDGET-1", 2, "FR")
}

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    *body.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} is in the body")) = value;
    body
}

fn without(mut body: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() { &mut body } else { body.pointer_mut(parent).unwrap() };
    parent.as_object_mut().unwrap().remove(key).unwrap_or_else(|| panic!("{pointer} is in the body"));
    body
}

fn lines(count: usize) -> Value {
    json!(vec![json!({"sku": "WIDGET-1", "quantity": 1}); count])
}

fn post_raw(content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    raw_request(Method::POST, "/orders", content_type, body)
}

// ---------------------------------------------------------------- 400

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = app().await;
    for body in [r#"{"customer_id": "cust-42","#, "", "not json", r#"{"customer_id": "c"} trailing"#] {
        let response = assert_refused(&app, post_raw(Some("application/json"), body), StatusCode::BAD_REQUEST).await;
        assert!(response.body.get("errors").is_none(), "a syntax error is not a field error: {}", response.text);
    }
    assert_nothing_ever_stored(&app).await;
}

#[tokio::test]
async fn a_path_that_is_not_an_order_id_or_a_sku_is_a_400() {
    let app = app().await;
    for path in [
        "/orders/not-a-uuid",
        "/orders/42",
        "/inventory/lowercase",
        "/inventory/widget-1",
        &format!("/inventory/{}", "A".repeat(33)),
    ] {
        let response =
            assert_refused(&app, raw_request(Method::GET, path, None, Body::empty()), StatusCode::BAD_REQUEST).await;
        assert!(
            response.body["detail"].as_str().unwrap().contains(path.rsplit('/').next().unwrap()),
            "the detail quotes the value: {}",
            response.text
        );
    }
    assert_nothing_ever_stored(&app).await;
}

#[tokio::test]
async fn an_idempotency_key_longer_than_255_characters_is_a_400() {
    let app = app().await;
    assert_refused(&app, post_order_request(&valid(), Some(&"k".repeat(256))), StatusCode::BAD_REQUEST).await;
    assert_nothing_ever_stored(&app).await;
    assert_accepted(&app, post_order_request(&valid(), Some(&"k".repeat(255)))).await;
}

// ---------------------------------------------------------------- 422

#[tokio::test]
async fn wrong_types_are_422s_naming_each_field() {
    let app = app().await;
    assert_invalid(&app, &with(valid(), "/items/0/quantity", json!("2")), &["/items/0/quantity"]).await;
    assert_invalid(&app, &with(valid(), "/items/0/quantity", json!(1.5)), &["/items/0/quantity"]).await;
    assert_invalid(&app, &with(valid(), "/items", json!({"sku": "WIDGET-1", "quantity": 2})), &["/items"]).await;
    assert_invalid(&app, &with(valid(), "/customer_id", json!(42)), &["/customer_id"]).await;
    assert_invalid(&app, &with(valid(), "/items/0/sku", json!(null)), &["/items/0/sku"]).await;
    assert_invalid(&app, &with(valid(), "/items/0", json!("WIDGET-1")), &["/items/0"]).await;
    assert_invalid(&app, &with(valid(), "/shipping_address", json!("1 Main St")), &["/shipping_address"]).await;
    assert_invalid(
        &app,
        &with(valid(), "/shipping_address/postal_code", json!(75001)),
        &["/shipping_address/postal_code"],
    )
    .await;
    assert_invalid(&app, &json!([valid()]), &[""]).await;
    // Several at once: every one is listed.
    let body = with(with(valid(), "/customer_id", json!(7)), "/items/0/quantity", json!("2"));
    assert_invalid(&app, &body, &["/customer_id", "/items/0/quantity"]).await;
    assert_nothing_ever_stored(&app).await;
}

#[tokio::test]
async fn missing_and_unknown_fields_are_422s_naming_each_field() {
    let app = app().await;
    assert_invalid(&app, &json!({}), &["/customer_id", "/items", "/shipping_address"]).await;
    assert_invalid(&app, &json!({"customer_id": 7}), &["/customer_id", "/items", "/shipping_address"]).await;
    assert_invalid(&app, &without(valid(), "/customer_id"), &["/customer_id"]).await;
    assert_invalid(&app, &without(valid(), "/items"), &["/items"]).await;
    assert_invalid(&app, &without(valid(), "/shipping_address"), &["/shipping_address"]).await;
    assert_invalid(&app, &without(valid(), "/items/0/sku"), &["/items/0/sku"]).await;
    assert_invalid(&app, &without(valid(), "/items/0/quantity"), &["/items/0/quantity"]).await;
    for field in ["name", "line1", "city", "postal_code", "country"] {
        let pointer = format!("/shipping_address/{field}");
        assert_invalid(&app, &without(valid(), &pointer), &[&pointer]).await;
    }
    assert_invalid(
        &app,
        &with(valid(), "/items/0", json!({"sku": "WIDGET-1", "quantity": 1, "gift": true})),
        &["/items/0/gift"],
    )
    .await;
    let mut body = valid();
    body["coupon"] = json!("FREE");
    assert_invalid(&app, &body, &["/coupon"]).await;
    // Member names are escaped as JSON Pointer tokens (RFC 6901).
    let mut body = valid();
    body["a/b~c"] = json!(1);
    assert_invalid(&app, &body, &["/a~1b~0c"]).await;
    assert_nothing_ever_stored(&app).await;
}

#[tokio::test]
async fn customer_id_is_1_to_64_characters() {
    let app = app().await;
    assert_invalid(&app, &with(valid(), "/customer_id", json!("")), &["/customer_id"]).await;
    assert_invalid(&app, &with(valid(), "/customer_id", json!("c".repeat(65))), &["/customer_id"]).await;
    // Counted in code points: 65 two-byte characters are too many.
    assert_invalid(&app, &with(valid(), "/customer_id", json!("é".repeat(65))), &["/customer_id"]).await;
    assert_nothing_ever_stored(&app).await;

    assert_valid(&app, &with(valid(), "/customer_id", json!("c"))).await;
    assert_valid(&app, &with(valid(), "/customer_id", json!("c".repeat(64)))).await;
    assert_valid(&app, &with(valid(), "/customer_id", json!("é".repeat(64)))).await;
}

#[tokio::test]
async fn an_order_has_1_to_50_items() {
    let app = app().await;
    assert_invalid(&app, &with(valid(), "/items", lines(0)), &["/items"]).await;
    assert_invalid(&app, &with(valid(), "/items", lines(51)), &["/items"]).await;
    assert_nothing_ever_stored(&app).await;

    assert_valid(&app, &with(valid(), "/items", lines(1))).await;
    assert_valid(&app, &with(valid(), "/items", lines(50))).await;
}

#[tokio::test]
async fn a_sku_is_1_to_32_capitals_digits_or_dashes() {
    let app = app().await;
    assert_invalid(&app, &with(valid(), "/items/0/sku", json!("A".repeat(33))), &["/items/0/sku"]).await;
    assert_invalid(&app, &with(valid(), "/items/0/sku", json!("")), &["/items/0/sku"]).await;
    assert_invalid(&app, &with(valid(), "/items/0/sku", json!("widget-1")), &["/items/0/sku"]).await;
    assert_invalid(&app, &with(valid(), "/items/0/sku", json!("WIDGET 1")), &["/items/0/sku"]).await;
    assert_invalid(&app, &with(valid(), "/items/0/sku", json!("WIDGET_1")), &["/items/0/sku"]).await;
    assert_nothing_ever_stored(&app).await;

    // Valid SKUs, even ones the catalog lacks (their sagas cancel them later).
    assert_valid(&app, &with(valid(), "/items/0/sku", json!("A".repeat(32)))).await;
    assert_valid(&app, &with(valid(), "/items/0/sku", json!("A"))).await;
    assert_valid(&app, &with(valid(), "/items/0/sku", json!("0-9-Z"))).await;
}

#[tokio::test]
async fn a_quantity_is_1_to_1000() {
    let app = app().await;
    for quantity in [json!(0), json!(1001), json!(-1), json!(4294967297_u64)] {
        assert_invalid(&app, &with(valid(), "/items/0/quantity", quantity), &["/items/0/quantity"]).await;
    }
    assert_nothing_ever_stored(&app).await;

    assert_valid(&app, &with(valid(), "/items/0/quantity", json!(1))).await;
    // JSON Schema counts 2.0 as the integer 2.
    assert_valid(&app, &with(valid(), "/items/0/quantity", json!(2.0))).await;
    assert_valid(&app, &order_body("BOLT-7", 1000, "FR")).await;
}

#[tokio::test]
async fn every_address_field_is_required_non_empty() {
    let app = app().await;
    for field in ["name", "line1", "city", "postal_code"] {
        let pointer = format!("/shipping_address/{field}");
        assert_invalid(&app, &with(valid(), &pointer, json!("")), &[&pointer]).await;
        assert_invalid(&app, &with(valid(), &pointer, json!("x".repeat(201))), &[&pointer]).await;
    }
    let empty_address = json!({"name": "", "line1": "", "city": "", "postal_code": "", "country": ""});
    assert_invalid(
        &app,
        &with(valid(), "/shipping_address", empty_address),
        &[
            "/shipping_address/name",
            "/shipping_address/line1",
            "/shipping_address/city",
            "/shipping_address/postal_code",
            "/shipping_address/country",
        ],
    )
    .await;
    assert_nothing_ever_stored(&app).await;

    for field in ["name", "line1", "city", "postal_code"] {
        let pointer = format!("/shipping_address/{field}");
        assert_valid(&app, &with(valid(), &pointer, json!("x"))).await;
        assert_valid(&app, &with(valid(), &pointer, json!("x".repeat(200)))).await;
    }
    // Strings are taken as sent: blanks count.
    assert_valid(&app, &with(valid(), "/shipping_address/name", json!(" "))).await;
}

#[tokio::test]
async fn country_is_two_capital_letters() {
    let app = app().await;
    for country in ["fr", "FRA", "F", "", "Fr", "F1"] {
        let body = with(valid(), "/shipping_address/country", json!(country));
        assert_invalid(&app, &body, &["/shipping_address/country"]).await;
    }
    assert_nothing_ever_stored(&app).await;

    assert_valid(&app, &with(valid(), "/shipping_address/country", json!("FR"))).await;
}

// ---------------------------------------------------------------- 413, 415

/// A valid order padded with trailing spaces (still valid JSON) to `size` bytes.
fn padded_order(size: usize) -> Vec<u8> {
    let mut bytes = valid().to_string().into_bytes();
    assert!(bytes.len() < size);
    bytes.resize(size, b' ');
    bytes
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413() {
    let app = app().await;
    assert_refused(
        &app,
        post_raw(Some("application/json"), padded_order(65 * 1024 + 1)),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_refused(
        &app,
        post_raw(Some("application/json"), padded_order(64 * 1024 + 1)),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_refused(&app, post_raw(Some("application/json"), vec![b'x'; 65 * 1024]), StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    assert_nothing_ever_stored(&app).await;

    // Exactly 64 KiB is allowed.
    assert_accepted(&app, post_raw(Some("application/json"), padded_order(64 * 1024))).await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_a_415() {
    let app = app().await;
    let body = valid().to_string();
    for content_type in [Some("text/plain"), None, Some("application/x-www-form-urlencoded"), Some("application/jsonx")]
    {
        let response =
            assert_refused(&app, post_raw(content_type, body.clone()), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert!(
            response.body["detail"].as_str().unwrap().contains("application/json"),
            "the detail says what to send: {}",
            response.text
        );
    }
    assert_nothing_ever_stored(&app).await;

    // Media type parameters are fine.
    assert_accepted(&app, post_raw(Some("application/json; charset=utf-8"), body)).await;
}

// ---------------------------------------------------------------- 404, 405

#[tokio::test]
async fn an_unknown_route_is_a_404() {
    let app = app().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::POST, "/order"),
        (Method::GET, "/inventory"),
        (Method::GET, "/orders/0192f3c4-1e2a-7c3b-9a4d-5e6f7a8b9c0d/history"),
    ] {
        let request = raw_request(method, path, Some("application/json"), valid().to_string());
        assert_refused(&app, request, StatusCode::NOT_FOUND).await;
    }
    assert_nothing_ever_stored(&app).await;
}

#[tokio::test]
async fn a_wrong_method_is_a_405_with_allow() {
    let app = app().await;
    let id = "0192f3c4-1e2a-7c3b-9a4d-5e6f7a8b9c0d";
    for (method, path, allowed) in [
        (Method::DELETE, "/orders".to_owned(), "POST"),
        (Method::GET, "/orders".to_owned(), "POST"),
        (Method::POST, format!("/orders/{id}"), "GET,HEAD"),
        (Method::DELETE, format!("/orders/{id}"), "GET,HEAD"),
        (Method::PUT, "/inventory/WIDGET-1".to_owned(), "GET,HEAD"),
    ] {
        let request = raw_request(method.clone(), &path, Some("application/json"), valid().to_string());
        let response = assert_refused(&app, request, StatusCode::METHOD_NOT_ALLOWED).await;
        let allow = response.header(header::ALLOW).unwrap_or_else(|| panic!("{method} {path}: a 405 lists Allow"));
        let allow: Vec<&str> = allow.split(',').map(str::trim).collect();
        let expected: Vec<&str> = allowed.split(',').collect();
        assert_eq!(allow, expected, "{method} {path}");
    }
    assert_nothing_ever_stored(&app).await;
}

// ---------------------------------------------------------------- the order of checks, headers, paths

#[tokio::test]
async fn an_idempotency_key_is_visible_ascii_without_spaces_given_once() {
    let app = app().await;
    assert_refused(&app, post_order_request(&valid(), Some("has space")), StatusCode::BAD_REQUEST).await;
    let twice = Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "key-1")
        .header("Idempotency-Key", "key-2")
        .body(Body::from(valid().to_string()))
        .unwrap();
    assert_refused(&app, twice, StatusCode::BAD_REQUEST).await;
    assert_nothing_ever_stored(&app).await;
}

#[tokio::test]
async fn content_type_and_size_are_checked_before_the_idempotency_key() {
    let app = app().await;
    let bad_key = "k".repeat(256);
    let request = |content_type: &str, body: Vec<u8>| {
        Request::post("/orders")
            .header(header::CONTENT_TYPE, content_type)
            .header("Idempotency-Key", bad_key.as_str())
            .body(Body::from(body))
            .unwrap()
    };
    assert_refused(&app, request("text/plain", valid().to_string().into_bytes()), StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .await;
    assert_refused(&app, request("application/json", padded_order(64 * 1024 + 1)), StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_nothing_ever_stored(&app).await;
}

#[tokio::test]
async fn an_order_id_is_only_accepted_hyphenated() {
    let app = app().await;
    for path in [
        "/orders/0192f3c41e2a7c3b9a4d5e6f7a8b9c0d",
        "/orders/%7B0192f3c4-1e2a-7c3b-9a4d-5e6f7a8b9c0d%7D",
        "/orders/urn:uuid:0192f3c4-1e2a-7c3b-9a4d-5e6f7a8b9c0d",
    ] {
        assert_refused(&app, raw_request(Method::GET, path, None, Body::empty()), StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn address_fields_are_measured_as_sent() {
    let app = app().await;
    let pointer = "/shipping_address/name";
    assert_invalid(&app, &with(valid(), pointer, json!(format!(" {}", "x".repeat(200)))), &[pointer]).await;
    assert_nothing_ever_stored(&app).await;
}
