//! What an operator needs: a log group with retention for every function
//! (and the bridge), and alarms on what should never happen quietly: a
//! function failing, a message landing in a dead-letter queue. Alarms notify
//! the `AlarmTopicArn` topic when one is given, and show in CloudWatch either way.

use super::yaml::*;
use super::*;
use shared::bus::amqp::dead_letter_queue;

/// Seconds each alarm looks at; one such period at or over the threshold alarms.
pub const ALARM_PERIOD_S: i64 = 300;

/// A log group kept `LogRetentionDays` days.
pub(super) fn log_group(name: Node, condition: Option<&str>) -> Node {
    let mut entries = vec![("Type", s("AWS::Logs::LogGroup"))];
    if let Some(condition) = condition {
        entries.push(("Condition", s(condition)));
    }
    entries.push(("Properties", map([("LogGroupName", name), ("RetentionInDays", reference(LOG_RETENTION))])));
    map(entries)
}

/// The log group a function writes to (its `LoggingConfig.LogGroup`), under
/// Lambda's usual name so that `sam logs` and the console find it.
pub(super) fn function_log_group(name: &str) -> Node {
    log_group(sub(format!("/aws/lambda/${{NamePrefix}}{name}")), None)
}

/// Any failed invocation of the function.
pub(super) fn errors_alarm(name: &str) -> Node {
    alarm(
        None,
        &format!("{name}-errors"),
        &format!("choreo {name} failed an invocation (its log group says why)"),
        ("AWS/Lambda", "Errors", "Sum"),
        vec![("FunctionName", reference(&function_id_of(name)))],
    )
}

/// A message in the function's SQS dead-letter queue (EventSource SQS).
pub(super) fn sqs_dead_letter_alarm(spec: &FunctionSpec) -> Node {
    alarm(
        Some(USE_SQS),
        &format!("{}-dead-letters", spec.name),
        &format!("Messages for {} were dead-lettered after {MAX_RECEIVE_COUNT} deliveries", spec.name),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum"),
        vec![("QueueName", get_att(&dead_letter_queue_id(spec), "QueueName"))],
    )
}

/// A message in the function's dead queue on the broker (EventSource
/// AmazonMQ): Amazon MQ publishes each RabbitMQ queue's depth per broker
/// name (the ARN's seventh field), virtual host and queue.
pub(super) fn mq_dead_queue_alarm(spec: &FunctionSpec) -> Node {
    let broker_name =
        map([("Fn::Select", list([s("6"), map([("Fn::Split", list([s(":"), reference("MqBrokerArn")]))])]))]);
    alarm(
        Some(USE_AMAZON_MQ),
        &format!("{}-dead-letters", spec.name),
        &format!(
            "Messages for {} were dead-lettered into {} on the broker",
            spec.name,
            dead_letter_queue(spec.function)
        ),
        ("AWS/AmazonMQ", "MessageCount", "Maximum"),
        vec![
            ("Broker", broker_name),
            ("VirtualHost", reference("MqVirtualHost")),
            ("Queue", s(dead_letter_queue(spec.function))),
        ],
    )
}

/// An alarm at `>= 1` of `metric` over one period, silent without data.
/// `metric` is (namespace, metric name, statistic).
pub(super) fn alarm(
    condition: Option<&str>,
    name: &str,
    description: &str,
    metric: (&str, &str, &str),
    dimensions: Vec<(&str, Node)>,
) -> Node {
    alarm_with(condition, name, description, metric, dimensions, ("GreaterThanOrEqualToThreshold", "notBreaching"))
}

/// [`alarm`] with another comparison and treatment of missing data.
pub(super) fn alarm_with(
    condition: Option<&str>,
    name: &str,
    description: &str,
    (namespace, metric, statistic): (&str, &str, &str),
    dimensions: Vec<(&str, Node)>,
    (comparison, missing_data): (&str, &str),
) -> Node {
    let topic = || when(HAS_ALARM_TOPIC, list([reference(ALARM_TOPIC)]));
    let mut entries = vec![("Type", s("AWS::CloudWatch::Alarm"))];
    if let Some(condition) = condition {
        entries.push(("Condition", s(condition)));
    }
    let dimensions = dimensions.into_iter().map(|(name, value)| map([("Name", s(name)), ("Value", value)]));
    entries.push((
        "Properties",
        map([
            ("AlarmName", sub(format!("${{NamePrefix}}{name}"))),
            ("AlarmDescription", s(description)),
            ("Namespace", s(namespace)),
            ("MetricName", s(metric)),
            ("Dimensions", list(dimensions)),
            ("Statistic", s(statistic)),
            ("Period", int(ALARM_PERIOD_S)),
            ("EvaluationPeriods", int(1)),
            ("Threshold", int(1)),
            ("ComparisonOperator", s(comparison)),
            ("TreatMissingData", s(missing_data)),
            ("AlarmActions", topic()),
            ("OKActions", topic()),
        ]),
    ));
    map(entries)
}
