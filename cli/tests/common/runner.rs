//! The consumer runner (`run_consumers`) in process, for the tests of how
//! it handles and settles deliveries (`amqp_faults`, `amqp_acks`): started
//! on a task, stopped through its watch, fed straight into its queues, and
//! what the broker says is still unacknowledged.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, StepInvoker, run_consumers};
use shared::testkit::broker::rabbitmqctl;
use shared::{Event, Function};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Vhost, eventually};

/// Bound on every wait (generous: the machine may be busy).
pub const BOUND: Duration = Duration::from_secs(30);

/// `run_consumers` on a task of its own, stopped through its watch.
pub struct Runner {
    /// Turns true to stop the runner.
    stop: watch::Sender<bool>,
    /// The runner itself.
    task: JoinHandle<Result<(), lapin::Error>>,
}

impl Runner {
    pub fn start<S: StepInvoker>(
        url: &str,
        functions: Vec<Function>,
        step: Arc<S>,
        settings: DeliverySettings,
    ) -> Self {
        super::init_logging();
        let (stop, stopped) = watch::channel(false);
        let link = AmqpLink::new(url, "faults-runner");
        Self { stop, task: tokio::spawn(run_consumers(link, functions, step, settings, stopped)) }
    }

    /// Signals the stop and waits, bounded, for the runner to return `Ok`.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let finished = tokio::time::timeout(BOUND, self.task).await;
        let result = finished.unwrap_or_else(|_| panic!("the runner did not stop within {BOUND:?} of the stop signal"));
        result.expect("the runner task does not panic").expect("the runner stops cleanly");
    }
}

/// Waits until `queue` exists and has `consumers` consumers.
pub async fn wait_consumers(link: &AmqpLink, queue: &str, consumers: u32) {
    eventually(&format!("{consumers} consumer(s) on {queue}"), BOUND, || async {
        match passive_state(link, queue).await {
            Some((_, count)) if count == consumers => Ok(()),
            other => Err(format!("(messages, consumers) = {other:?}")),
        }
    })
    .await;
}

/// `(ready messages, consumers)` of `queue`, or `None` when it does not exist.
pub async fn passive_state(link: &AmqpLink, queue: &str) -> Option<(u32, u32)> {
    let channel = link.channel().await.expect("a channel");
    let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await.ok()?;
    let _ = channel.close(200, "inspected".into()).await;
    Some((declared.message_count(), declared.consumer_count()))
}

/// Sends `event` straight to `queue` with extra `headers`, confirmed.
pub async fn send(link: &AmqpLink, queue: &str, event: &Event, headers: FieldTable) {
    let channel = link.channel().await.expect("a channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let properties = BasicProperties::default()
        .with_message_id(event.id.to_string().into())
        .with_type(event.event_type().as_str().into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &event.to_json(),
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("a confirm");
    assert_eq!(confirm, Confirmation::Ack(None), "{queue} takes the message");
    let _ = channel.close(200, "sent".into()).await;
}

/// Messages delivered and not yet acknowledged on the vhost's channels,
/// as `rabbitmqctl list_channels` shows them. Asked of each channel as it
/// is now (`list_queues` shows queue figures a few seconds old).
pub fn unacked(vhost: &Vhost) -> u64 {
    rabbitmqctl(&["-q", "--no-table-headers", "list_channels", "vhost", "messages_unacknowledged"])
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .filter(|(name, _)| *name == vhost.name)
        .map(|(_, count)| count.trim().parse::<u64>().unwrap_or(0))
        .sum()
}
