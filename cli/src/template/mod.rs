//! The AWS SAM template (`template.yaml`, ARCHITECTURE.md §11.4, §11.5), generated from the
//! choreography table so that it cannot drift from the code: every function,
//! its HTTP routes, its queues, its event-source mappings and its IAM
//! permissions are derived from `CHOREOGRAPHY`; the DynamoDB tables, their
//! keys and owners come from the DynamoDB adapter's [`TABLES`].
//! `choreo template` prints it and `cli/tests/template.rs` checks that the
//! committed file is exactly this output.
//!
//! The choices left to whoever deploys the stack are parameters
//! (`parameters.rs`), with rules that refuse inconsistent ones; the main ones:
//! - `ApiAuth` (`IAM` | `JWT`): how the HTTP API authorizes its callers. The
//!   API is never open.
//! - `EventSource` (`SQS` | `AmazonMQ` | `MSK` | `SelfManagedKafka`): what
//!   invokes the consuming functions, an SQS queue per function (fed by
//!   `choreo bridge --invoke sqs`), an Amazon MQ for RabbitMQ event-source
//!   mapping on the function's queue, or Kafka event-source mappings on the
//!   topics of the events it consumes (`kafka.rs`). In the two Kafka modes the
//!   functions publish to Kafka, and nothing of RabbitMQ or SQS is created.
//! - `BridgeImageUri`: when set (EventSource SQS), the bridge runs as an ECS
//!   Fargate service (`bridge.rs`).
//! - `SubnetIds` / `SecurityGroupIds`: when set, every function and the
//!   bridge run in that VPC.
//!
//! Besides the saga's steps, the stack runs the scheduled functions of
//! `scheduled.rs` (the outbox relay), so no long-running process is needed
//! with EventSource AmazonMQ. Every function gets a log group with retention
//! and an errors alarm, every dead-letter queue an alarm (`operations.rs`).
//! `scripts/check-template` lints the template as deployed with each
//! combination of those choices.
//!
//! The routes are `HttpApi` events made from `FunctionSpec::routes`, not an
//! `AWS::Include` of `openapi.yaml`: that file is OpenAPI 3.1 (API Gateway
//! imports 3.0), carries no Lambda integrations, and would be a second list
//! of routes; the test checks that its paths are the declared routes.
//!
//! SAM resolves its own `Auth` and `Events` properties while transforming
//! and accepts no `Fn::If` in them (`DefaultAuthorizer` must be a literal),
//! nor a `Condition` on one event. So the template states what SAM would have
//! expanded them to, with conditions: the API's security schemes in an inline
//! OpenAPI body (SAM adds each route's integration to it from the events),
//! and the SQS / Amazon MQ / Kafka mappings as `AWS::Lambda::EventSourceMapping`
//! resources, each with its condition.

mod api;
mod bridge;
mod functions;
mod kafka;
mod operations;
mod parameters;
mod queues;
mod scheduled;
mod tables;
mod yaml;

use self::api::http_api;
use self::bridge::bridge_resources;
use self::functions::function;
use self::kafka::{
    dead_letter_alarm as kafka_dead_letter_alarm, dead_letter_filter as kafka_dead_letter_filter, kafka_mapping_id,
    msk_mapping, self_managed_kafka_mapping,
};
use self::operations::{errors_alarm, function_log_group, mq_dead_queue_alarm, sqs_dead_letter_alarm};
use self::parameters::{conditions, parameters, rules};
use self::queues::{dead_letter_queue, mq_mapping, queue, sqs_mapping};
use self::scheduled::scheduled_function;
use self::tables::dynamodb_table;
use self::yaml::*;

pub use self::bridge::{
    BRIDGE_CLUSTER, BRIDGE_CONTAINER, BRIDGE_DOWN_ALARM, BRIDGE_EXECUTION_ROLE, BRIDGE_LOG_GROUP, BRIDGE_SERVICE,
    BRIDGE_TASK_DEFINITION, BRIDGE_TASK_ROLE,
};
pub use self::functions::{MAPPING_NETWORK_ACTIONS, VPC_ACTIONS};
pub use self::kafka::{
    KAFKA_DEAD_LETTER_METRIC, KafkaSource, MSK_CLUSTER_ACTIONS, STARTING_POSITION, VPC_SLOTS, kafka_group, kafka_topic,
};
pub use self::scheduled::{Grant, RELAY, SCHEDULED, ScheduledFunction, Target};
pub use self::tables::TABLE_DELETION_POLICY;

use shared::contract::choreography::{CHOREOGRAPHY, FunctionSpec, Route};
pub use shared::store::dynamodb::TABLES;
use shared::store::dynamodb::{KeyAttribute, ORDERS, PROCESSED, STOCK, TableSpec};

/// The tables the query functions read: what `GET /orders/{order_id}` and
/// `GET /inventory/{sku}` show, and the processed records (with the delivery
/// notes) the timeline walks (ARCHITECTURE.md §14.3). The adapter's [`TABLES`]
/// says who writes each table; reading across services is the query side's
/// alone (ARCHITECTURE.md §3).
pub const QUERIED_TABLES: &[TableSpec] = &[ORDERS, STOCK, PROCESSED];

/// Memory of every function (MB).
pub const MEMORY_MB: i64 = 256;
/// Timeout of every function (s); API Gateway stops waiting after 30 s anyway.
pub const TIMEOUT_S: i64 = 30;
/// An SQS message stays invisible this long while a function handles it: six
/// times the function timeout, as AWS advises for SQS event sources.
pub const VISIBILITY_TIMEOUT_S: i64 = 6 * TIMEOUT_S;
/// Deliveries of one SQS message before it moves to the dead-letter queue.
pub const MAX_RECEIVE_COUNT: i64 = 5;
/// How long a message waits in a function's queue (the SQS default, 4 days).
pub const RETENTION_S: i64 = 4 * 24 * 3600;
/// How long a dead letter is kept (the SQS maximum, 14 days).
pub const DEAD_LETTER_RETENTION_S: i64 = 14 * 24 * 3600;

/// Name of the condition true when `ApiAuth` is `IAM`.
pub const AUTH_IS_IAM: &str = "AuthIsIam";
/// Name of the condition true when `ApiAuth` is `JWT`.
pub const AUTH_IS_JWT: &str = "AuthIsJwt";
/// Name of the condition true when `EventSource` is `SQS`.
pub const USE_SQS: &str = "UseSqs";
/// Name of the condition true when `EventSource` is `AmazonMQ`.
pub const USE_AMAZON_MQ: &str = "UseAmazonMq";
/// Name of the condition true when `EventSource` is `MSK`.
pub const USE_MSK: &str = "UseMsk";
/// Name of the condition true when `EventSource` is `SelfManagedKafka`.
pub const USE_SELF_MANAGED_KAFKA: &str = "UseSelfManagedKafka";
/// Name of the condition true in either Kafka mode: the functions publish to Kafka.
pub const USE_KAFKA: &str = "UseKafka";
/// Name of the condition true in the RabbitMQ modes (SQS, AmazonMQ): the functions publish over AMQP.
pub const USE_AMQP: &str = "UseAmqp";
/// Name of the condition true when the Kafka secret is encrypted with a key of the account's (`KafkaSecretKeyArn`).
pub const HAS_KAFKA_SECRET_KEY: &str = "HasKafkaSecretKey";
/// Name of the condition true when `KafkaSaslMechanism` is `SCRAM-SHA-256`.
pub const KAFKA_SCRAM_256: &str = "KafkaScram256";
/// Name of the condition true when self-managed Kafka mappings reach the brokers through the VPC.
pub const SELF_MANAGED_KAFKA_IN_VPC: &str = "SelfManagedKafkaInVpc";
/// Name of the condition true when `SubnetIds` is set: every function (and the bridge) runs in the VPC.
pub const IN_VPC: &str = "InVpc";
/// Name of the condition true when `AlarmTopicArn` is set.
pub const HAS_ALARM_TOPIC: &str = "HasAlarmTopic";
/// Name of the condition true when the bridge runs (an image, EventSource SQS).
pub const RUN_BRIDGE: &str = "RunBridge";
/// Name of the condition true when `BridgeInvoke` is `sqs`.
pub const BRIDGE_INVOKES_SQS: &str = "BridgeInvokesSqs";
/// Name of the condition true when `BridgeInvoke` is `lambda`.
pub const BRIDGE_INVOKES_LAMBDA: &str = "BridgeInvokesLambda";

/// Default of `NamePrefix`: the functions are `choreo-<name>`, and `choreo
/// bridge` invokes that name unless told another prefix.
pub const DEFAULT_NAME_PREFIX: &str = "choreo-";

/// Parameters named in more than one place.
pub const RELAY_SCHEDULE: &str = "RelaySchedule";
pub const RELAY_GRACE: &str = "RelayGraceSeconds";
/// Parameter with the saga deadline (`CHOREO_SAGA_DEADLINE` of the relay, which runs the sweep).
pub const SAGA_DEADLINE: &str = "SagaDeadline";
pub const BRIDGE_IMAGE: &str = "BridgeImageUri";
pub const SUBNET_IDS: &str = "SubnetIds";
pub const SECURITY_GROUP_IDS: &str = "SecurityGroupIds";
pub const LOG_RETENTION: &str = "LogRetentionDays";
pub const ALARM_TOPIC: &str = "AlarmTopicArn";
pub const AMQP_SECRET: &str = "AmqpSecretArn";
pub const MSK_CLUSTER: &str = "MskClusterArn";
pub const KAFKA_BOOTSTRAP_SERVERS: &str = "KafkaBootstrapServers";
pub const KAFKA_SECRET: &str = "KafkaSecretArn";
pub const KAFKA_SECRET_KEY: &str = "KafkaSecretKeyArn";
pub const KAFKA_SASL_MECHANISM: &str = "KafkaSaslMechanism";

/// Logical id of the HTTP API.
pub const HTTP_API: &str = "HttpApi";
/// Security scheme names in the API's OpenAPI body.
const IAM_SCHEME: &str = "AWS_IAM";
const JWT_SCHEME: &str = "JwtAuthorizer";

/// The SAM template of the whole system, as `template.yaml` holds it.
pub fn sam_template() -> String {
    sam_template_for(CHOREOGRAPHY)
}

/// The template of any choreography table (tests feed altered tables).
pub fn sam_template_for(choreography: &[FunctionSpec]) -> String {
    let template = map([
        ("AWSTemplateFormatVersion", s("2010-09-09")),
        ("Transform", s("AWS::Serverless-2016-10-31")),
        (
            "Description",
            s("choreo: an order saga by choreography, Rust functions reacting to RabbitMQ or Kafka events"),
        ),
        // cfn-lint's W1030 (a Ref) and W1033 (a Fn::Split) check values
        // against their parameter's default, and the optional parameters
        // default to "" (unused then: the Amazon MQ ones in SQS mode, the
        // subnets and security groups without a VPC). The rules refuse "" where
        // it would be used, which cfn-lint does not take into account.
        // scripts/check-template also lints the template resolved for each
        // combination of choices, with real values and without these ignores.
        ("Metadata", map([("cfn-lint", map([("config", map([("ignore_checks", list([s("W1030"), s("W1033")]))]))]))])),
        ("Parameters", parameters()),
        ("Rules", rules()),
        ("Conditions", conditions()),
        ("Globals", globals()),
        ("Resources", resources(choreography)),
        ("Outputs", outputs(choreography)),
    ]);
    let mut out = String::from(
        "# Generated by `choreo template` from shared/src/contract/choreography.rs: do not edit by hand.\n\
         # Refresh with: cargo run -p choreo -- template > template.yaml\n",
    );
    write_block(&mut out, &template, 0);
    out
}

/// `create-order` → `CreateOrder`.
pub fn pascal_case(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Logical id of a function's `AWS::Serverless::Function`.
pub fn function_id(spec: &FunctionSpec) -> String {
    function_id_of(spec.name)
}

/// Logical id of the function named `name` (a step or a scheduled function).
pub fn function_id_of(name: &str) -> String {
    format!("{}Function", pascal_case(name))
}

/// Logical id of the log group of the function named `name`.
pub fn log_group_id(name: &str) -> String {
    format!("{}LogGroup", pascal_case(name))
}

/// Logical id of the alarm on the errors of the function named `name`.
pub fn errors_alarm_id(name: &str) -> String {
    format!("{}ErrorsAlarm", pascal_case(name))
}

/// Logical id of the alarm on a consumer's SQS dead-letter queue (EventSource SQS).
pub fn dead_letter_alarm_id(spec: &FunctionSpec) -> String {
    format!("{}DeadLetterAlarm", pascal_case(spec.name))
}

/// Logical id of the alarm on a consumer's dead queue on the broker (EventSource AmazonMQ).
pub fn dead_queue_alarm_id(spec: &FunctionSpec) -> String {
    format!("{}DeadQueueAlarm", pascal_case(spec.name))
}

/// Logical id of a consuming function's SQS queue (SQS mode).
pub fn queue_id(spec: &FunctionSpec) -> String {
    format!("{}Queue", pascal_case(spec.name))
}

/// Logical id of the dead-letter queue behind [`queue_id`].
pub fn dead_letter_queue_id(spec: &FunctionSpec) -> String {
    format!("{}DeadLetterQueue", pascal_case(spec.name))
}

/// Logical id of a table.
pub fn table_id(table: &TableSpec) -> String {
    format!("{}Table", pascal_case(table.suffix))
}

/// Logical id of the `HttpApi` event of one route: `GET /orders/{order_id}` → `GetOrdersOrderId`.
pub fn route_event_id(route: &Route) -> String {
    pascal_case(&route.method.to_ascii_lowercase()) + &pascal_case(route.path)
}

/// A function that neither reacts to events nor emits any: it only answers queries.
pub fn is_query(spec: &FunctionSpec) -> bool {
    spec.consumes.is_empty() && spec.emits.is_empty()
}

/// DynamoDB access a function gets to a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// DynamoDB actions of each access: what the adapter calls (a transaction
/// is authorized per item action: its conditional Puts need PutItem).
pub const READ_ACTIONS: &[&str] = &["dynamodb:GetItem", "dynamodb:BatchGetItem"];
pub const WRITE_ACTIONS: &[&str] =
    &["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"];

/// The tables a function may touch (ARCHITECTURE.md §3: a function writes only its own
/// service's tables and its processed records; the query function only reads).
pub fn table_access(spec: &FunctionSpec) -> Vec<(&'static TableSpec, Access)> {
    if is_query(spec) {
        QUERIED_TABLES.iter().map(|table| (table, Access::Read)).collect()
    } else {
        TABLES
            .iter()
            .filter(|table| table.owner.is_none_or(|owner| owner == spec.service))
            .map(|table| (table, Access::ReadWrite))
            .collect()
    }
}

// ---------------------------------------------------------------- sections

fn globals() -> Node {
    map([(
        "Function",
        map([
            ("Runtime", s("provided.al2023")),
            ("Architectures", list([s("arm64")])),
            ("Handler", s("bootstrap")),
            ("MemorySize", int(MEMORY_MB)),
            ("Timeout", int(TIMEOUT_S)),
            ("Tracing", s("Active")),
            ("LoggingConfig", map([("LogFormat", s("JSON"))])),
            (
                "Environment",
                map([(
                    "Variables",
                    map([
                        ("RUST_LOG", reference("LogFilter")),
                        ("CHOREO_STORE", s("dynamodb")),
                        ("CHOREO_TABLE_PREFIX", reference("NamePrefix")),
                        ("SHIP_COUNTRIES", reference("ShipCountries")),
                        ("CHOREO_PROCESSED_RETENTION", reference("ProcessedRetention")),
                        // The HTTP functions scope orders to the caller by it (JWT) or record the caller (IAM).
                        ("CHOREO_API_AUTH", reference("ApiAuth")),
                    ]),
                )]),
            ),
        ]),
    )])
}

fn resources(choreography: &[FunctionSpec]) -> Node {
    let mut entries: Vec<(String, Node)> =
        TABLES.iter().map(|table| (table_id(table), dynamodb_table(table))).collect();
    entries.push((HTTP_API.to_owned(), http_api(choreography)));
    let operated = |entries: &mut Vec<(String, Node)>, name: &str, function: Node| {
        entries.push((function_id_of(name), function));
        entries.push((log_group_id(name), function_log_group(name)));
        entries.push((errors_alarm_id(name), errors_alarm(name)));
    };
    // A scheduled row (the saga-deadline sweeper) runs inside the scheduled
    // function that hosts it (`scheduled.rs`), not as a Lambda of its own.
    for spec in choreography.iter().filter(|spec| !spec.is_scheduled()) {
        operated(&mut entries, spec.name, function(spec));
        if !spec.consumes.is_empty() {
            let name = pascal_case(spec.name);
            entries.push((dead_letter_queue_id(spec), dead_letter_queue(spec)));
            entries.push((dead_letter_alarm_id(spec), sqs_dead_letter_alarm(spec)));
            entries.push((queue_id(spec), queue(spec)));
            entries.push((format!("{name}SqsMapping"), sqs_mapping(spec)));
            entries.push((format!("{name}MqMapping"), mq_mapping(spec)));
            entries.push((dead_queue_alarm_id(spec), mq_dead_queue_alarm(spec)));
            // Lambda's Kafka mappings take one topic each: one per event type consumed.
            for &event_type in spec.consumes {
                entries.push((kafka_mapping_id(spec, event_type, KafkaSource::Msk), msk_mapping(spec, event_type)));
                entries.push((
                    kafka_mapping_id(spec, event_type, KafkaSource::SelfManaged),
                    self_managed_kafka_mapping(spec, event_type),
                ));
            }
            entries.push((format!("{name}KafkaDeadLetterFilter"), kafka_dead_letter_filter(spec)));
            entries.push((format!("{name}KafkaDeadLetterAlarm"), kafka_dead_letter_alarm(spec)));
        }
    }
    for scheduled in SCHEDULED {
        operated(&mut entries, scheduled.name, scheduled_function(scheduled));
    }
    entries.extend(bridge_resources(choreography));
    Node::Map(entries)
}

fn outputs(choreography: &[FunctionSpec]) -> Node {
    let mut entries = vec![(
        "HttpApiUrl".to_owned(),
        map([
            ("Description", s("Base URL of the HTTP API (openapi.yaml)")),
            ("Value", sub(format!("https://${{{HTTP_API}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}"))),
        ]),
    )];
    for spec in choreography.iter().filter(|spec| !spec.consumes.is_empty()) {
        let name = pascal_case(spec.name);
        entries.push((
            format!("{name}QueueUrl"),
            map([
                ("Condition", s(USE_SQS)),
                ("Description", s(format!("SQS queue of {} (choreo bridge --invoke sqs sends to it)", spec.name))),
                ("Value", reference(&queue_id(spec))),
            ]),
        ));
        entries.push((
            format!("{name}DeadLetterQueueUrl"),
            map([
                ("Condition", s(USE_SQS)),
                ("Description", s(format!("Dead letters of {}", spec.name))),
                ("Value", reference(&dead_letter_queue_id(spec))),
            ]),
        ));
    }
    entries.push((
        "BridgeServiceName".to_owned(),
        map([
            ("Condition", s(RUN_BRIDGE)),
            ("Description", s("ECS service of the bridge (its logs: /ecs/<NamePrefix>bridge)")),
            ("Value", get_att(BRIDGE_SERVICE, "Name")),
        ]),
    ));
    Node::Map(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_logical_ids() {
        assert_eq!(pascal_case("reserve-inventory"), "ReserveInventory");
        assert_eq!(route_event_id(&Route { method: "GET", path: "/orders/{order_id}" }), "GetOrdersOrderId");
    }
}
