//! Per-customer access (ARCHITECTURE.md §14.4) on the embedded system with
//! `choreo up --auth jwt --jwks FILE`: GIVEN tokens signed by a key the test
//! made, THEN a customer orders only for themselves (403 otherwise, storing
//! nothing), sees only their own orders and timelines (404 for another's),
//! and a missing, expired or badly signed token gets 401.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use choreo_e2e::{TestApp, TestResponse, default_catalog, post_order_request, send, spawn_app};
use serde_json::Value;
use shared::host::auth::{ApiAuth, JwksVerifier};
use shared::testkit::jwt::TestIssuer;
use shared::testkit::order_body;

/// The system with its API checking tokens of `issuer`'s JWK set.
async fn app_with_jwt(issuer: &TestIssuer) -> (TestApp, axum::Router) {
    let app = spawn_app(&default_catalog()).await;
    let verifier = JwksVerifier::from_json(&issuer.jwks().to_string()).expect("the JWK set loads");
    let auth = ApiAuth::Jwt { claim: "sub".into(), verifier: Some(Arc::new(verifier)) };
    let router = choreo::up::app_router_with_auth(Arc::clone(&app.store), Arc::new(app.bus.clone()), Arc::new(auth));
    (app, router)
}

fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}").parse().expect("a valid header");
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request
}

async fn get(router: &axum::Router, path: &str, token: &str) -> TestResponse {
    send(
        router.clone(),
        with_token(Request::builder().method(Method::GET).uri(path).body(Body::empty()).unwrap(), token),
    )
    .await
}

async fn post(router: &axum::Router, body: &Value, token: &str) -> TestResponse {
    send(router.clone(), with_token(post_order_request(body, None), token)).await
}

fn without_customer(mut body: Value) -> Value {
    body.as_object_mut().expect("an object").remove("customer_id");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_orders_for_themselves_and_sees_only_their_own_orders() {
    // GIVEN customers A and B with valid tokens
    let issuer = TestIssuer::new("test-key");
    let (app, router) = app_with_jwt(&issuer).await;
    let (a, b) = (issuer.token("customer-a", 600), issuer.token("customer-b", 600));

    // WHEN each places an order without naming a customer
    let a_order = post(&router, &without_customer(order_body("WIDGET-1", 1, "FR")), &a).await.order_id();
    let b_order = post(&router, &without_customer(order_body("WIDGET-1", 1, "FR")), &b).await.order_id();
    app.settle().await;

    // THEN each order is its token's customer's, recorded as placed by them
    let mine = get(&router, &format!("/orders/{a_order}"), &a).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
    assert_eq!(mine.body["customer_id"], "customer-a");
    assert_eq!(mine.body["placed_by"], "customer:customer-a");
    assert_eq!(get(&router, &format!("/orders/{a_order}/timeline"), &a).await.status, StatusCode::OK);

    // AND A cannot read B's order nor its timeline: 404, as for an order that does not exist
    get(&router, &format!("/orders/{b_order}"), &a).await.assert_problem(StatusCode::NOT_FOUND);
    get(&router, &format!("/orders/{b_order}/timeline"), &a).await.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(get(&router, &format!("/orders/{b_order}"), &b).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_naming_another_customer_is_forbidden_and_stores_nothing() {
    let issuer = TestIssuer::new("test-key");
    let (app, router) = app_with_jwt(&issuer).await;
    let before = app.snapshot().await;

    // WHEN A's token places an order for customer-b
    let mut body = order_body("WIDGET-1", 1, "FR");
    body["customer_id"] = "customer-b".into();
    let response = post(&router, &body, &issuer.token("customer-a", 600)).await;

    // THEN it is refused with a problem, and nothing was stored or published
    let problem = response.assert_problem(StatusCode::FORBIDDEN);
    assert!(problem["detail"].as_str().unwrap_or_default().contains("another customer"), "{problem}");
    assert_eq!(app.snapshot().await, before);
    // (naming oneself is fine)
    body["customer_id"] = "customer-a".into();
    post(&router, &body, &issuer.token("customer-a", 600)).await.order_id();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_expired_or_badly_signed_tokens_are_401() {
    let issuer = TestIssuer::new("test-key");
    let (app, router) = app_with_jwt(&issuer).await;
    let order_id = post(&router, &order_body("WIDGET-1", 1, "FR"), &issuer.token("customer-1", 600)).await.order_id();
    app.settle().await;
    let before = app.snapshot().await;

    // A key nobody published, under the same kid: its signatures do not verify.
    let impostor = TestIssuer::new("test-key");
    let refused = [
        ("expired", issuer.token("customer-1", -3600)),
        ("badly signed", impostor.token("customer-1", 600)),
        ("not a JWT", "not-a-token".to_owned()),
        ("no subject", issuer.sign(&serde_json::json!({"exp": chrono::Utc::now().timestamp() + 600}))),
        ("no expiry", issuer.sign(&serde_json::json!({"sub": "customer-1"}))),
    ];
    for (why, token) in &refused {
        for response in [
            get(&router, &format!("/orders/{order_id}"), token).await,
            get(&router, &format!("/orders/{order_id}/timeline"), token).await,
            post(&router, &order_body("WIDGET-1", 1, "FR"), token).await,
        ] {
            response.assert_problem(StatusCode::UNAUTHORIZED);
            assert_eq!(response.header(header::WWW_AUTHENTICATE), Some("Bearer"), "{why}");
        }
    }
    let anonymous = send(router.clone(), post_order_request(&order_body("WIDGET-1", 1, "FR"), None)).await;
    anonymous.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(app.snapshot().await, before, "a refused caller changes nothing");
}
