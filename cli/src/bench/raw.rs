//! `choreo bench --raw`: bare lapin pushing the ship path's message pattern
//! through the broker, with no handlers and no store: the physical limit the
//! saga runs are compared against.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use shared::bus::amqp::{AckWindow, AmqpLink, Topology};
use shared::contract::choreography::{EXCHANGE, consumers_of};
use shared::contract::domain::OrderId;
use shared::{Event, EventType, Function, Payload};

use super::finish::Finish;
use super::report::report;
use super::{BenchConfig, BenchError};
use crate::workload::{PATHS, order_body};

/// The events the ship path publishes, in order, with the function that
/// publishes each next one in reaction to the previous.
fn ship_path_reaction(event_type: EventType, consumer: Function) -> Option<EventType> {
    match (event_type, consumer) {
        (EventType::OrderCreated, Function::ReserveInventory) => Some(EventType::InventoryReserved),
        (EventType::InventoryReserved, Function::ShipOrder) => Some(EventType::OrderShipped),
        _ => None,
    }
}

/// Bare lapin: the ship path's exact message pattern (the same exchange,
/// queues, bindings, persistence, confirms, mandatory, ack-after-confirm,
/// acks in runs as the runner's ([`AckWindow`]) and concurrency), with each
/// consumer republishing the next event type at once.
pub(super) async fn run(config: &BenchConfig, url: &str) -> Result<Value, BenchError> {
    let topology = Topology::derive(&config.delivery);
    let link = AmqpLink::new(url, "choreo-bench-setup");
    link.declare(&topology).await?;
    link.close().await;
    // Through the link, so that amqps:// gets TLS and AMQP_CA_FILE as everywhere else.
    let connection = link.dedicated_connection().await?;
    let purge = connection.create_channel().await?;
    for function in Function::consumers() {
        purge.queue_purge(function.queue().as_str().into(), QueuePurgeOptions::default()).await?;
    }
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;

    let finish = Arc::new(Finish::default());
    let deliveries = Arc::new(AtomicUsize::new(0));
    let mut consuming = Vec::new();
    for function in Function::consumers() {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channel.basic_qos(config.delivery.prefetch, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                function.queue().as_str().into(),
                format!("raw-{}", function.name()).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (finish, deliveries) = (Arc::clone(&finish), Arc::clone(&deliveries));
        let workers = Arc::new(tokio::sync::Semaphore::new(config.delivery.concurrency));
        consuming.push(channel.clone());
        tokio::spawn(async move {
            // Acked as the runner acks (in runs), so that the broker's work per message is the same.
            let (acks, _sending) = AckWindow::start();
            while let Some(Ok(delivery)) = consumer.next().await {
                let Ok(permit) = Arc::clone(&workers).acquire_owned().await else { break };
                let (channel, finish, deliveries) = (channel.clone(), Arc::clone(&finish), Arc::clone(&deliveries));
                let settle = acks.receive(&delivery);
                tokio::spawn(async move {
                    let kind = delivery.properties.kind().as_ref().map(|kind| kind.to_string()).unwrap_or_default();
                    let event_type = EventType::parse(&kind);
                    let order = delivery.properties.correlation_id().as_ref().map(|id| id.to_string());
                    if let Some(next) = event_type.and_then(|event_type| ship_path_reaction(event_type, function)) {
                        let properties = delivery.properties.clone().with_type(next.as_str().into());
                        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                        if let Ok(confirm) = channel
                            .basic_publish(EXCHANGE.into(), next.as_str().into(), options, &delivery.data, properties)
                            .await
                        {
                            let _ = confirm.await;
                        }
                    }
                    if function == Function::OrderStatus
                        && event_type == Some(EventType::OrderShipped)
                        && let Some(order) = order.and_then(|order| OrderId::parse(&order).ok())
                    {
                        finish.record(order, "SHIPPED");
                    }
                    settle.ack();
                    deliveries.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        });
    }

    // A real order.created body, so message sizes match the saga run.
    let sample = Event::new(
        Function::CreateOrder,
        OrderId::new(),
        None,
        Payload::OrderCreated(
            serde_json::from_value(order_body(0, &PATHS[0])).map_err(|error| BenchError::Other(error.to_string()))?,
        ),
    );
    let body = sample.to_json();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (publisher, next, finish, body, config) =
            (publisher.clone(), Arc::clone(&next), Arc::clone(&finish), body.clone(), config.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.orders {
                    return Ok::<_, BenchError>(latencies);
                }
                if let Some(rate) = config.rate {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(index as f64 / rate)).into()).await;
                }
                let order_id = OrderId::new();
                let properties = BasicProperties::default()
                    .with_message_id(uuid::Uuid::now_v7().to_string().into())
                    .with_correlation_id(order_id.to_string().into())
                    .with_content_type(shared::bus::amqp::CONTENT_TYPE.into())
                    .with_type(EventType::OrderCreated.as_str().into())
                    .with_delivery_mode(2);
                let posted = Instant::now();
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                publisher
                    .basic_publish(EXCHANGE.into(), EventType::OrderCreated.as_str().into(), options, &body, properties)
                    .await?
                    .await?;
                let (at, _) = finish
                    .wait(order_id, Duration::from_secs(120))
                    .await
                    .ok_or_else(|| BenchError::Other(format!("raw saga {order_id} did not finish")))?;
                latencies.push(at.duration_since(posted).as_secs_f64() * 1000.0);
            }
        });
    }
    let mut latencies = Vec::with_capacity(config.orders);
    while let Some(worker) = workers.join_next().await {
        latencies.extend(worker.map_err(|error| BenchError::Other(error.to_string()))??);
    }
    let wall = started.elapsed().as_secs_f64();
    // Let the last settle-inventory deliveries (off the critical path) land and be acked.
    let expected = config.orders * ship_path_deliveries();
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let messages = deliveries.load(Ordering::Relaxed);
    // Closing the consuming channels returns what they hold unacked (an ack
    // not sent yet); then the purge takes it, and whatever is still queued
    // (the wait above timed out), so that nothing reaches the next run on
    // this vhost, whose steps would dead-letter it.
    for channel in consuming {
        let _ = channel.close(200, "bench done".into()).await;
    }
    for function in Function::consumers() {
        let _ = purge.queue_purge(function.queue().as_str().into(), QueuePurgeOptions::default()).await;
    }
    let _ = connection.close(200, "bench done".into()).await;
    let mut completed = serde_json::Map::new();
    completed.insert("shipped:shipped".into(), json!(latencies.len()));
    Ok(report("raw", "ship", config, completed, latencies, wall, messages))
}

/// Deliveries of one ship-path saga: each published event times its consumers.
fn ship_path_deliveries() -> usize {
    [EventType::OrderCreated, EventType::InventoryReserved, EventType::OrderShipped]
        .into_iter()
        .map(|event_type| consumers_of(event_type).count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ship_path_has_five_deliveries() {
        assert_eq!(ship_path_deliveries(), 5);
    }
}
