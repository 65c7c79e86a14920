//! What runs in `choreo up` over a broker (RabbitMQ or Kafka) besides the
//! HTTP API: the consumer runner, the outbox relay and the saga-deadline
//! sweeper, started and stopped together.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shared::bus::{Publisher, relay_forever};
use shared::store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The three tasks and the switch that stops them.
pub struct Background {
    shutdown: watch::Sender<bool>,
    /// Consumers first: on shutdown they finish what they hold before the relay stops.
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Spawns `consumers` (given the stop signal), the relay and the sweeper,
    /// which cancels orders unfinished after `saga_deadline` (ARCHITECTURE.md §7.9).
    pub fn start<F>(
        store: &Arc<dyn Store>,
        publisher: &Arc<dyn Publisher>,
        saga_deadline: Duration,
        consumers: impl FnOnce(watch::Receiver<bool>) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (shutdown, stop) = watch::channel(false);
        let consumers = tokio::spawn(consumers(stop.clone()));
        let mut sweep_stop = stop.clone();
        let sweep_stop = async move {
            let _ = sweep_stop.wait_for(|stop| *stop).await;
        };
        let sweeper = tokio::spawn(shared::saga::sweep_forever(
            Arc::clone(store),
            Arc::clone(publisher),
            saga_deadline,
            sweep_stop,
        ));
        let relay = tokio::spawn(relay_forever(Arc::clone(store), Arc::clone(publisher), stop));
        Self { shutdown, tasks: vec![consumers, relay, sweeper] }
    }

    /// Signals all three and waits for each to finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
