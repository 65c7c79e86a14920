//! Every path of the saga (ARCHITECTURE.md §4) through RabbitMQ, as `choreo up --amqp`
//! runs it: each test in its own vhost and database, an order placed over
//! HTTP, then the final status, the exact history, the stock counts, the
//! conservation rule for every SKU, every function queue empty once the
//! consumers stopped, and each `order.cancelled` in `choreo.saga-ended`.

mod common;

use common::{
    Envelope, InProcess, SagaPath, Scratch, Vhost, assert_conserved, assert_function_queues_empty, assert_saga_ends,
    default_catalog, drain_saga_ended, test_settings,
};
use serde_json::Value;
use shared::bus::amqp::AmqpLink;

/// Places one order on a fresh system seeded with the default catalog, waits
/// for its saga and checks everything `expected` says, and the invariants.
async fn run_path(path: SagaPath) -> Value {
    let (body, expected) = path.order();
    // GIVEN choreo up --amqp on its own vhost and database
    let vhost = Vhost::new(path.label());
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
    run_path(SagaPath::Ships).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_order_short_of_stock_waits_for_a_replenishment_then_ships() {
    run_path(SagaPath::Replenished).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_order_whose_replenishment_fails_is_cancelled_out_of_stock() {
    run_path(SagaPath::OutOfStock).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_a_shipment_to_antarctica_fails_and_releases_exactly_the_reserved_stock() {
    run_path(SagaPath::ShipmentFailed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_an_unknown_sku_cancels_the_order() {
    run_path(SagaPath::UnknownSku).await;
}
