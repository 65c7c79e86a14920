//! Every path of the saga (ARCHITECTURE.md §4), driven through the HTTP API of
//! `choreo up`: the final status, the exact history, the stock counts, and
//! the conservation rule for every SKU afterwards. Plus the API details that
//! go with placing an order: `Idempotency-Key`, `Location`, the query routes.

use axum::http::{StatusCode, header};
use choreo_e2e::{TestApp, history_types, order_id, spawn_app, stock};
use serde_json::{Value, json};
use shared::store::ReservationState;
use shared::testkit::{order_body, with_item};

/// `GET /inventory/{sku}`, which must answer 200.
async fn inventory(app: &TestApp, sku: &str) -> Value {
    let response = app.get(&format!("/inventory/{sku}")).await;
    assert_eq!(response.status, StatusCode::OK, "GET /inventory/{sku}: {}", response.text);
    response.body
}

fn levels(sku: &str, available: u64, reserved: u64, shipped: u64, replenished: u64) -> Value {
    json!({"sku": sku, "available": available, "reserved": reserved, "shipped": shipped, "replenished": replenished})
}

#[tokio::test]
async fn an_order_in_stock_is_reserved_and_shipped() {
    // GIVEN 100 widgets
    let app = spawn_app(&[stock("WIDGET-1", 100, 500)]).await;

    // WHEN an order for 2 runs its saga
    let order = app.place_and_settle(&order_body("WIDGET-1", 2, "FR")).await;

    // THEN it shipped, with a tracking number, after exactly these events
    assert_eq!(order["status"], "SHIPPED");
    assert_eq!(history_types(&order), ["order.created", "inventory.reserved", "order.shipped"]);
    let sources: Vec<&str> =
        order["history"].as_array().unwrap().iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["/functions/create-order", "/functions/reserve-inventory", "/functions/ship-order"]);
    let tracking = order["tracking_number"].as_str().expect("a shipped order has a tracking number");
    assert!(!tracking.is_empty());
    assert!(order.get("cancel_reason").is_none(), "a shipped order has no cancel_reason: {order}");
    let id = order_id(order["order_id"].as_str().unwrap());
    let shipment = app.store.shipment(id).await.unwrap().expect("ship-order recorded the shipment");
    assert_eq!(shipment.tracking_number, tracking);

    // AND the 2 units went reserved → shipped
    assert_eq!(inventory(&app, "WIDGET-1").await, levels("WIDGET-1", 98, 0, 2, 0));
    let reservation = app.store.reservation(id).await.unwrap().expect("a reservation was made");
    assert_eq!(reservation.state, ReservationState::Shipped);
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn an_order_short_of_stock_waits_for_a_replenishment_then_ships() {
    // GIVEN 5 gadgets, of which the supplier delivers up to 50 at once
    let app = spawn_app(&[stock("GADGET-2", 5, 50)]).await;

    // WHEN an order for 10 runs its saga
    let order = app.place_and_settle(&order_body("GADGET-2", 10, "FR")).await;

    // THEN it waited for stock, got it, and shipped
    assert_eq!(order["status"], "SHIPPED");
    assert_eq!(
        history_types(&order),
        ["order.created", "inventory.insufficient", "inventory.reserved", "order.shipped"]
    );
    assert!(order["tracking_number"].as_str().is_some_and(|tracking| !tracking.is_empty()));

    // AND exactly the shortfall (5) was replenished, and all 10 shipped
    assert_eq!(inventory(&app, "GADGET-2").await, levels("GADGET-2", 0, 0, 10, 5));
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn a_shortfall_equal_to_max_replenish_is_filled() {
    // GIVEN 2 gizmos and a supplier that delivers at most 10 at once
    let app = spawn_app(&[stock("GIZMO-3", 2, 10)]).await;

    // WHEN an order for 12 is short by exactly 10
    let order = app.place_and_settle(&order_body("GIZMO-3", 12, "FR")).await;

    // THEN the supplier fills it and the order ships
    assert_eq!(order["status"], "SHIPPED");
    assert_eq!(inventory(&app, "GIZMO-3").await, levels("GIZMO-3", 0, 0, 12, 10));
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn a_shortfall_above_max_replenish_is_cancelled_out_of_stock() {
    // GIVEN 2 gizmos and a supplier that delivers at most 10 at once
    let app = spawn_app(&[stock("GIZMO-3", 2, 10)]).await;
    let before = app.stock_of("GIZMO-3").await;

    // WHEN an order for 13 is short by 11
    let order = app.place_and_settle(&order_body("GIZMO-3", 13, "FR")).await;

    // THEN it is cancelled and nothing was reserved or replenished
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancel_reason"], "out_of_stock");
    assert_eq!(
        history_types(&order),
        ["order.created", "inventory.insufficient", "replenishment.failed", "order.cancelled"]
    );
    assert_eq!(app.stock_of("GIZMO-3").await, before, "the stock record was not even written");
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn an_order_whose_replenishment_fails_is_cancelled_and_reserves_nothing() {
    // GIVEN 1 relic, discontinued (max_replenish 0)
    let app = spawn_app(&[stock("RELIC-9", 1, 0)]).await;

    // WHEN an order for 5 runs its saga
    let order = app.place_and_settle(&order_body("RELIC-9", 5, "FR")).await;

    // THEN it is cancelled as out of stock
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancel_reason"], "out_of_stock");
    assert_eq!(
        history_types(&order),
        ["order.created", "inventory.insufficient", "replenishment.failed", "order.cancelled"]
    );
    assert!(order.get("tracking_number").is_none(), "a cancelled order has no tracking number: {order}");

    // AND nothing was reserved, shipped or replenished
    assert_eq!(inventory(&app, "RELIC-9").await, levels("RELIC-9", 1, 0, 0, 0));
    let id = order_id(order["order_id"].as_str().unwrap());
    assert_eq!(app.store.reservation(id).await.unwrap(), None);
    assert_eq!(app.store.shipment(id).await.unwrap(), None);
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_across_items() {
    // GIVEN plenty of widgets but a single, discontinued relic
    let app = spawn_app(&[stock("WIDGET-1", 100, 500), stock("RELIC-9", 1, 0)]).await;
    let before = app.store.all_stock().await.unwrap();

    // WHEN one order wants 2 widgets and 5 relics
    let order = app.place_and_settle(&with_item(order_body("WIDGET-1", 2, "FR"), "RELIC-9", 5)).await;

    // THEN it is cancelled and not even the widgets were touched
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancel_reason"], "out_of_stock");
    assert_eq!(app.store.all_stock().await.unwrap(), before);
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn a_shipment_to_antarctica_fails_and_the_reserved_stock_is_released() {
    // GIVEN 1000 bolts
    let app = spawn_app(&[stock("BOLT-7", 1000, 1000)]).await;
    let before = inventory(&app, "BOLT-7").await;

    // WHEN an order for 20 is to be shipped to AQ, where nobody ships
    let order = app.place_and_settle(&order_body("BOLT-7", 20, "AQ")).await;

    // THEN it was reserved, the shipment failed, the stock came back, and it is cancelled
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancel_reason"], "shipment_failed");
    assert_eq!(history_types(&order), ["order.created", "inventory.reserved", "inventory.released", "order.cancelled"]);
    assert!(order.get("tracking_number").is_none(), "nothing shipped: {order}");

    // AND the stock is exactly at its pre-order level
    assert_eq!(inventory(&app, "BOLT-7").await, before);
    assert_eq!(before, levels("BOLT-7", 1000, 0, 0, 0));
    let id = order_id(order["order_id"].as_str().unwrap());
    let reservation = app.store.reservation(id).await.unwrap().expect("the units were reserved first");
    assert_eq!(reservation.state, ReservationState::Released);
    assert_eq!(app.store.shipment(id).await.unwrap(), None);
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn an_unknown_sku_cancels_the_order_and_leaves_stock_untouched() {
    // GIVEN a catalog without NOPE-404
    let app = spawn_app(&[stock("WIDGET-1", 100, 500)]).await;
    let before = app.store.all_stock().await.unwrap();

    // WHEN an order names a known and an unknown SKU
    let order = app.place_and_settle(&with_item(order_body("WIDGET-1", 1, "FR"), "NOPE-404", 1)).await;

    // THEN it is rejected as a whole
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["cancel_reason"], "unknown_sku");
    assert_eq!(history_types(&order), ["order.created", "inventory.rejected", "order.cancelled"]);
    assert_eq!(app.store.all_stock().await.unwrap(), before, "no stock record was written");
    let id = order_id(order["order_id"].as_str().unwrap());
    assert_eq!(app.store.reservation(id).await.unwrap(), None);
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_give_the_same_order_and_use_stock_once() {
    // GIVEN 100 widgets
    let app = spawn_app(&[stock("WIDGET-1", 100, 500)]).await;
    let body = order_body("WIDGET-1", 2, "FR");

    // WHEN the same order is posted twice with the same key
    let first = app.post_order_with_key(&body, "key-0001").await;
    let second = app.post_order_with_key(&body, "key-0001").await;
    app.settle().await;
    // AND once more after its saga finished, with the JSON reformatted
    let reformatted = serde_json::to_string_pretty(&body).unwrap();
    let request = axum::http::Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "key-0001")
        .body(axum::body::Body::from(reformatted))
        .unwrap();
    let third = app.send(request).await;
    app.settle().await;

    // THEN every answer is the first 202, naming the same order
    let id = first.order_id();
    for repeat in [&second, &third] {
        assert_eq!(repeat.status, StatusCode::ACCEPTED, "{}", repeat.text);
        assert_eq!(repeat.body, json!({"order_id": id, "status": "PENDING"}));
        assert_eq!(repeat.header(header::LOCATION), first.header(header::LOCATION));
    }
    // AND one order's worth of stock was used
    assert_eq!(app.row_counts().orders, 1);
    assert_eq!(inventory(&app, "WIDGET-1").await, levels("WIDGET-1", 98, 0, 2, 0));
    let order = app.order(&id).await;
    assert_eq!(order["status"], "SHIPPED");
    assert_eq!(history_types(&order), ["order.created", "inventory.reserved", "order.shipped"]);
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn the_same_idempotency_key_with_a_different_body_is_refused() {
    // GIVEN an order placed with a key, its saga done
    let app = spawn_app(&[stock("WIDGET-1", 100, 500)]).await;
    let first = app.post_order_with_key(&order_body("WIDGET-1", 2, "FR"), "key-0002").await;
    let id = first.order_id();
    app.settle().await;
    let before = app.snapshot().await;

    // WHEN the same key comes with a different order
    let response = app.post_order_with_key(&order_body("WIDGET-1", 3, "FR"), "key-0002").await;
    app.settle().await;

    // THEN it is a 422 problem that is not a validation error
    let problem = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem.get("errors").is_none(), "the body itself is valid: {problem}");
    assert!(problem["detail"].as_str().unwrap().contains("key-0002"), "the detail names the key: {problem}");
    // AND nothing was stored or published, and the first order is as it was
    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.order(&id).await["items"], json!([{"sku": "WIDGET-1", "quantity": 2}]));
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn different_idempotency_keys_make_different_orders() {
    let app = spawn_app(&[stock("WIDGET-1", 100, 500)]).await;
    let body = order_body("WIDGET-1", 2, "FR");

    let first = app.post_order_with_key(&body, "key-A").await.order_id();
    let second = app.post_order_with_key(&body, "key-B").await.order_id();
    let third = app.post_order(&body).await.order_id();
    let fourth = app.post_order(&body).await.order_id();
    app.settle().await;

    let mut ids = vec![first, second, third, fourth];
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four distinct orders");
    assert_eq!(inventory(&app, "WIDGET-1").await, levels("WIDGET-1", 92, 0, 8, 0));
    app.assert_stock_conserved().await;
}

#[tokio::test]
async fn get_inventory_shows_the_seeded_levels_and_404s_an_unknown_sku() {
    // GIVEN the catalog `choreo up` seeds by default
    let app = spawn_app(&choreo_e2e::default_catalog()).await;

    // THEN each SKU reads as seeded
    assert_eq!(inventory(&app, "WIDGET-1").await, levels("WIDGET-1", 100, 0, 0, 0));
    assert_eq!(inventory(&app, "GADGET-2").await, levels("GADGET-2", 5, 0, 0, 0));
    assert_eq!(inventory(&app, "RELIC-9").await, levels("RELIC-9", 1, 0, 0, 0));
    let response = app.get("/inventory/WIDGET-1").await;
    assert_eq!(response.header(header::CONTENT_TYPE), Some("application/json"));

    // AND a well-formed SKU that is not in the catalog is a 404 problem
    let missing = app.get("/inventory/NOPE-404").await;
    missing.assert_problem(StatusCode::NOT_FOUND);
    assert!(missing.body["detail"].as_str().unwrap().contains("NOPE-404"), "{}", missing.text);
}

#[tokio::test]
async fn get_an_unknown_order_is_a_404_problem() {
    let app = spawn_app(&[stock("WIDGET-1", 100, 500)]).await;
    let unknown = uuid::Uuid::now_v7().to_string();

    let response = app.get(&format!("/orders/{unknown}")).await;

    response.assert_problem(StatusCode::NOT_FOUND);
    assert!(response.body["detail"].as_str().unwrap().contains(&unknown), "the detail names the id: {}", response.text);
}

#[tokio::test]
async fn the_location_header_points_at_the_new_order_readable_at_once() {
    let app = spawn_app(&[stock("WIDGET-1", 100, 500)]).await;
    let body = order_body("WIDGET-1", 2, "FR");

    // WHEN an order is accepted
    let response = app.post_order(&body).await;

    // THEN the 202 says PENDING and where to find the order
    let id = response.order_id();
    assert_eq!(response.body, json!({"order_id": id, "status": "PENDING"}));
    assert_eq!(response.header(header::CONTENT_TYPE), Some("application/json"));
    let location = response.header(header::LOCATION).expect("a 202 has a Location");
    assert_eq!(location, format!("/orders/{id}"));
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7, "order ids are UUID v7");
    assert_eq!(id, uuid.hyphenated().to_string(), "lowercase hyphenated form");

    // AND the order can be read there straight away, before its saga finished
    let early = app.get(location).await;
    assert_eq!(early.status, StatusCode::OK, "{}", early.text);
    assert_eq!(early.body["order_id"], id);
    assert_eq!(early.body["customer_id"], body["customer_id"]);
    assert_eq!(early.body["items"], body["items"]);
    assert_eq!(early.body["shipping_address"], body["shipping_address"]);
    assert_eq!(history_types(&early.body)[0], "order.created");

    // AND once the saga is done it shows the outcome
    app.settle().await;
    assert_eq!(app.get(location).await.body["status"], "SHIPPED");
    // AND the id is accepted in capitals too (hex digits in either case)
    assert_eq!(app.get(&format!("/orders/{}", id.to_uppercase())).await.status, StatusCode::OK);
    app.assert_stock_conserved().await;
}
