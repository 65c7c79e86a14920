//! When the broker already holds a queue of the topology with other
//! arguments (an older choreo, other retry settings), declaring it fails with
//! PRECONDITION_FAILED. This is the one place that says how to migrate:
//! every caller that declares the topology (`choreo up --amqp`, the bridge,
//! the consumer runner) shows this error as it is.

use super::topology::dead_letter_queue;
use crate::contract::choreography::Function;

/// Why the topology could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    /// Queues exist with other arguments than the topology's.
    #[error("{}", migration_steps(vhost, queues))]
    Mismatch {
        /// The virtual host holding them.
        vhost: String,
        /// The queues whose arguments differ, in declaration order.
        queues: Vec<String>,
    },
    /// The broker could not be reached or refused something else.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// Whether the broker refused a declare because the object exists with
/// other arguments (AMQP 406 PRECONDITION_FAILED).
pub(super) fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

/// What kind of queue `queue` is, for the migration steps.
enum QueueRole {
    Work(Function),
    Retry(Function),
    Other,
}

fn role(queue: &str) -> QueueRole {
    for function in Function::consumers() {
        if queue == function.queue() {
            return QueueRole::Work(function);
        }
        if queue.strip_prefix(&function.queue()).is_some_and(|rest| rest.starts_with(".retry.")) {
            return QueueRole::Retry(function);
        }
    }
    QueueRole::Other
}

/// The error text: which queues, why they differ, and the commands that
/// migrate each without losing a message.
fn migration_steps(vhost: &str, queues: &[String]) -> String {
    // A vhost in a URI path is percent-encoded ("/" is "%2F").
    let uri_vhost = vhost.replace('%', "%25").replace('/', "%2F");
    let mut text = format!(
        "RabbitMQ holds queues of the choreo topology declared with other arguments (vhost '{vhost}'): {}.\n\
         Work queues are quorum queues with a delivery limit that dead-letter into choreo.<function>.dead \
         (x-queue-type, x-delivery-limit = --max-retries, x-dead-letter-*); retry queues' TTLs follow \
         --max-retries and --retry-delay-ms.\n\
         To migrate, stop everything consuming them (choreo up, choreo bridge, Amazon MQ event source \
         mappings), then, for each queue:",
        queues.join(", ")
    );
    for queue in queues {
        let delete = format!("rabbitmqctl delete_queue -p '{vhost}' {queue}");
        let empty = format!("once `rabbitmqctl list_queues -p '{vhost}' name messages` shows {queue} empty");
        match role(queue) {
            QueueRole::Work(function) => {
                let dead = dead_letter_queue(function);
                let shovel = format!(
                    r#"{{"src-uri":"amqp:///{uri_vhost}","src-queue":"{queue}","dest-uri":"amqp:///{uri_vhost}","dest-queue":"{dead}","src-delete-after":"queue-length"}}"#
                );
                text.push_str(&format!(
                    "\n  {queue}: move its messages into {dead}, delete it, start choreo (it declares the queue anew), \
                     then replay them:\n    \
                     rabbitmq-plugins enable rabbitmq_shovel\n    \
                     rabbitmqctl set_parameter -p '{vhost}' shovel choreo-migrate-{name} '{shovel}'\n    \
                     {delete}   # {empty}\n    \
                     choreo dlq replay --function {name}   # after choreo started again",
                    name = function.name()
                ));
            }
            QueueRole::Retry(function) => text.push_str(&format!(
                "\n  {queue}: its messages go back to {work} when their delay ends; {empty}:\n    {delete}\n    \
                 (or keep it: run with the --max-retries and --retry-delay-ms it was declared with)",
                work = function.queue()
            )),
            QueueRole::Other => text.push_str(&format!("\n  {queue}: {empty}:\n    {delete}")),
        }
    }
    text.push_str(
        "\nOn Amazon MQ, where rabbitmqctl is not available, do the same in the RabbitMQ management console \
         (Queues: Move messages, then Delete).",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_each_queue_with_the_commands_for_its_kind() {
        let work = Function::ShipOrder.queue();
        let retry = format!("{work}.retry.2");
        let error = DeclareError::Mismatch { vhost: "/".into(), queues: vec![work.clone(), retry.clone()] };
        let text = error.to_string();
        assert!(text.contains(&format!("rabbitmqctl delete_queue -p '/' {work}")), "{text}");
        assert!(text.contains(&format!("rabbitmqctl delete_queue -p '/' {retry}")), "{text}");
        assert!(text.contains(r#""src-uri":"amqp:///%2F","src-queue":"choreo.ship-order""#), "{text}");
        assert!(text.contains(r#""dest-queue":"choreo.ship-order.dead""#), "{text}");
        assert!(text.contains("choreo dlq replay --function ship-order"), "{text}");
        assert!(text.contains("--retry-delay-ms"), "{text}");
    }
}
