//! The SQS work and dead-letter queues of `EventSource=SQS`, and the event
//! source mappings of both event sources.

use super::yaml::*;
use super::*;

/// The queues go with the stack (explicitly): drain the dead letters before deleting it.
pub(super) const QUEUE_POLICIES: [(&str, &str); 2] = [("DeletionPolicy", "Delete"), ("UpdateReplacePolicy", "Delete")];

/// An SQS queue resource of the SQS event source, with these properties.
pub(super) fn sqs_queue(properties: Node) -> Node {
    map([
        ("Type", s("AWS::SQS::Queue")),
        ("Condition", s(USE_SQS)),
        (QUEUE_POLICIES[0].0, s(QUEUE_POLICIES[0].1)),
        (QUEUE_POLICIES[1].0, s(QUEUE_POLICIES[1].1)),
        ("Properties", properties),
    ])
}

pub(super) fn dead_letter_queue(spec: &FunctionSpec) -> Node {
    sqs_queue(map([
        ("QueueName", sub(format!("${{NamePrefix}}{}-dlq", spec.name))),
        ("MessageRetentionPeriod", int(DEAD_LETTER_RETENTION_S)),
        ("SqsManagedSseEnabled", Node::Bool(true)),
    ]))
}

pub(super) fn queue(spec: &FunctionSpec) -> Node {
    sqs_queue(map([
        ("QueueName", sub(format!("${{NamePrefix}}{}", spec.name))),
        ("VisibilityTimeout", int(VISIBILITY_TIMEOUT_S)),
        ("MessageRetentionPeriod", int(RETENTION_S)),
        ("SqsManagedSseEnabled", Node::Bool(true)),
        (
            "RedrivePolicy",
            map([
                ("deadLetterTargetArn", get_att(&dead_letter_queue_id(spec), "Arn")),
                ("maxReceiveCount", int(MAX_RECEIVE_COUNT)),
            ]),
        ),
    ]))
}

pub(super) fn sqs_mapping(spec: &FunctionSpec) -> Node {
    map([
        ("Type", s("AWS::Lambda::EventSourceMapping")),
        ("Condition", s(USE_SQS)),
        (
            "Properties",
            map([
                ("FunctionName", reference(&function_id(spec))),
                ("EventSourceArn", get_att(&queue_id(spec), "Arn")),
                ("BatchSize", reference("BatchSize")),
                // One failed record goes back alone (SqsBatchResponse), never the batch.
                ("FunctionResponseTypes", list([s("ReportBatchItemFailures")])),
                // A cap per queue, so that a backlog cannot take the account's concurrency.
                ("ScalingConfig", map([("MaximumConcurrency", reference("MaximumConcurrency"))])),
            ]),
        ),
    ])
}

pub(super) fn mq_mapping(spec: &FunctionSpec) -> Node {
    map([
        ("Type", s("AWS::Lambda::EventSourceMapping")),
        ("Condition", s(USE_AMAZON_MQ)),
        (
            "Properties",
            map([
                ("FunctionName", reference(&function_id(spec))),
                ("EventSourceArn", reference("MqBrokerArn")),
                ("Queues", list([s(spec.function.queue())])),
                ("BatchSize", reference("BatchSize")),
                (
                    "SourceAccessConfigurations",
                    list([
                        map([("Type", s("BASIC_AUTH")), ("URI", reference("MqCredentialsSecretArn"))]),
                        map([("Type", s("VIRTUAL_HOST")), ("URI", reference("MqVirtualHost"))]),
                    ]),
                ),
            ]),
        ),
    ])
}
