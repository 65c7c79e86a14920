//! Every path of the saga (ARCHITECTURE.md §4) through RabbitMQ, as `choreo up --amqp`
//! runs it: each test in its own vhost and database, an order placed over
//! HTTP, then the final status, the exact history, the stock counts, the
//! conservation rule for every SKU, every function queue empty once the
//! consumers stopped, and each `order.cancelled` in `choreo.saga-ended`.

mod common;

use common::{
    Envelope, Expected, InProcess, Scratch, Vhost, assert_conserved, assert_function_queues_empty, assert_saga_ends,
    default_catalog, drain_saga_ended, test_settings,
};
use serde_json::Value;
use shared::bus::amqp::AmqpLink;
use shared::testkit::{order_body, with_item};

/// Places one order on a fresh system seeded with the default catalog, waits
/// for its saga and checks everything `expected` says, and the invariants.
async fn run_path(label: &str, body: Value, expected: Expected<'_>) -> Value {
    // GIVEN choreo up --amqp on its own vhost and database
    let vhost = Vhost::new(label);
    let scratch = Scratch::new();
    let catalog = default_catalog();
    let settings = test_settings();
    let system = InProcess::start(&vhost, &scratch.db(), &catalog, settings.clone()).await;
    let client = system.client.clone();

    // WHEN an order is placed
    let order_id = client.create_order(&body, None).await.expect("the order is accepted");

    // THEN its saga ends as expected, with the stock at exactly these levels
    let order = assert_saga_ends(&client, &order_id, &expected).await;
    assert_conserved(&*system.store, &catalog).await;

    // AND once the consumers stopped (finishing what they held), no work,
    // retry or dead-letter queue holds anything
    system.shutdown().await;
    let link = AmqpLink::new(&vhost.url, "test-inspect");
    assert_function_queues_empty(&link, &settings).await;

    // AND a cancelled order's order.cancelled reached choreo.saga-ended, once
    let ended = drain_saga_ended(&link).await;
    let expected_ended = match expected.status {
        "CANCELLED" => vec![Envelope { event_type: "order.cancelled".into(), order_id: order_id.clone() }],
        _ => vec![],
    };
    assert_eq!(ended, expected_ended);
    link.close().await;
    order
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_order_in_stock_ships() {
    run_path(
        "ships",
        order_body("WIDGET-1", 2, "FR"),
        Expected {
            status: "SHIPPED",
            cancel_reason: None,
            history: &["order.created", "inventory.reserved", "order.shipped"],
            stock: &[("WIDGET-1", (98, 0, 2, 0))],
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_order_short_of_stock_waits_for_a_replenishment_then_ships() {
    // 5 gadgets seeded, the supplier delivers up to 50: an order for 10 is short by 5
    run_path(
        "replenished",
        order_body("GADGET-2", 10, "FR"),
        Expected {
            status: "SHIPPED",
            cancel_reason: None,
            history: &["order.created", "inventory.insufficient", "inventory.reserved", "order.shipped"],
            stock: &[("GADGET-2", (0, 0, 10, 5))],
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_order_whose_replenishment_fails_is_cancelled_out_of_stock() {
    // 1 relic seeded, discontinued (max_replenish 0)
    run_path(
        "out-of-stock",
        order_body("RELIC-9", 5, "FR"),
        Expected {
            status: "CANCELLED",
            cancel_reason: Some("out_of_stock"),
            history: &["order.created", "inventory.insufficient", "replenishment.failed", "order.cancelled"],
            stock: &[("RELIC-9", (1, 0, 0, 0))],
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_a_shipment_to_antarctica_fails_and_releases_exactly_the_reserved_stock() {
    run_path(
        "shipment-failed",
        with_item(order_body("BOLT-7", 20, "AQ"), "WIDGET-1", 3),
        Expected {
            status: "CANCELLED",
            cancel_reason: Some("shipment_failed"),
            history: &["order.created", "inventory.reserved", "inventory.released", "order.cancelled"],
            // exactly the seeded levels again
            stock: &[("BOLT-7", (1000, 0, 0, 0)), ("WIDGET-1", (100, 0, 0, 0))],
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_unknown_sku_cancels_the_order() {
    run_path(
        "unknown-sku",
        with_item(order_body("WIDGET-1", 1, "FR"), "NOPE-404", 1),
        Expected {
            status: "CANCELLED",
            cancel_reason: Some("unknown_sku"),
            history: &["order.created", "inventory.rejected", "order.cancelled"],
            stock: &[("WIDGET-1", (100, 0, 0, 0))],
        },
    )
    .await;
}
