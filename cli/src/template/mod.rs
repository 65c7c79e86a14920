//! The AWS SAM template (`template.yaml`, ARCHITECTURE.md §11.4, §11.5), generated from the
//! choreography table so that it cannot drift from the code: every function,
//! its HTTP routes, its queues, its event-source mappings and its IAM
//! permissions are derived from `CHOREOGRAPHY`; the DynamoDB tables, their
//! keys and owners come from the DynamoDB adapter's [`TABLES`].
//! `choreo template` prints it and `cli/tests/template.rs` checks that the
//! committed file is exactly this output.
//!
//! Two choices are left to whoever deploys the stack, as parameters:
//! - `ApiAuth` (`IAM` | `JWT`): how the HTTP API authorizes its callers. The
//!   API is never open.
//! - `EventSource` (`SQS` | `AmazonMQ`): what invokes the consuming functions,
//!   an SQS queue per function (fed by `choreo bridge --invoke sqs`) or an
//!   Amazon MQ for RabbitMQ event-source mapping on the function's queue.
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
//! and the SQS / Amazon MQ mappings as `AWS::Lambda::EventSourceMapping`
//! resources, each with its condition.

mod api;
mod functions;
mod queues;
mod tables;
mod yaml;

use self::api::http_api;
use self::functions::function;
use self::queues::{dead_letter_queue, mq_mapping, queue, sqs_mapping};
use self::tables::dynamodb_table;
use self::yaml::*;

use shared::contract::choreography::{CHOREOGRAPHY, FunctionSpec, Route};
pub use shared::store::dynamodb::TABLES;
use shared::store::dynamodb::{KeyAttribute, ORDERS, STOCK, TableSpec};

/// The tables the query functions read: what `GET /orders/{order_id}` and
/// `GET /inventory/{sku}` show. The adapter's [`TABLES`] says who writes
/// each table; reading across services is the query side's alone (ARCHITECTURE.md §3).
pub const QUERIED_TABLES: &[TableSpec] = &[ORDERS, STOCK];

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
        ("Description", s("choreo: an order saga by choreography, Rust functions reacting to RabbitMQ events")),
        // cfn-lint's W1030 checks a Ref against its parameter's default, and
        // the Amazon MQ parameters default to "" (unused in SQS mode); the
        // rule AmazonMqNeedsBrokerAndCredentials refuses "" in AmazonMQ mode,
        // which W1030 does not take into account.
        ("Metadata", map([("cfn-lint", map([("config", map([("ignore_checks", list([s("W1030")]))]))]))])),
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
    format!("{}Function", pascal_case(spec.name))
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

fn parameters() -> Node {
    let string = |description: &str, default: Option<&str>| {
        let mut entries = vec![("Type", s("String")), ("Description", s(description))];
        if let Some(default) = default {
            entries.push(("Default", s(default)));
        }
        map(entries)
    };
    let with = |node: Node, extra: Vec<(&str, Node)>| match node {
        Node::Map(mut entries) => {
            entries.extend(extra.into_iter().map(|(key, value)| (key.to_owned(), value)));
            Node::Map(entries)
        }
        other => other,
    };
    let number = |description: &str, default: i64, min: i64, max: i64| {
        map([
            ("Type", s("Number")),
            ("Description", s(description)),
            ("Default", int(default)),
            ("MinValue", int(min)),
            ("MaxValue", int(max)),
        ])
    };
    map([
        (
            "NamePrefix",
            with(
                string("Prefix of the table, queue and function names (one stack per prefix)", Some("choreo-")),
                vec![("AllowedPattern", s("^[A-Za-z0-9_-]{0,32}$"))],
            ),
        ),
        (
            "ApiAuth",
            with(
                string("How the HTTP API authorizes callers: IAM (SigV4) or JWT", Some("IAM")),
                vec![("AllowedValues", list([s("IAM"), s("JWT")]))],
            ),
        ),
        ("JwtIssuer", string("Issuer URL of the JWTs (ApiAuth JWT)", Some(""))),
        ("JwtAudience", string("Audience the JWTs must name (ApiAuth JWT)", Some(""))),
        ("ThrottlingBurstLimit", number("Requests the API accepts in a burst", 100, 1, 5000)),
        ("ThrottlingRateLimit", number("Steady requests per second the API accepts", 50, 1, 10000)),
        (
            "EventSource",
            with(
                string(
                    "What invokes the consuming functions: an SQS queue each, or Amazon MQ for RabbitMQ",
                    Some("SQS"),
                ),
                vec![("AllowedValues", list([s("SQS"), s("AmazonMQ")]))],
            ),
        ),
        ("BatchSize", number("Messages a consuming function receives at once", 10, 1, 10)),
        (
            "AmqpSecretArn",
            with(
                string("Secrets Manager secret whose value is the AMQP URL the functions publish with", None),
                vec![("AllowedPattern", s("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$"))],
            ),
        ),
        ("MqBrokerArn", string("ARN of the Amazon MQ for RabbitMQ broker (EventSource AmazonMQ)", Some(""))),
        (
            "MqCredentialsSecretArn",
            string("Secrets Manager secret with the broker's username and password (EventSource AmazonMQ)", Some("")),
        ),
        ("MqVirtualHost", string("RabbitMQ virtual host of the queues (EventSource AmazonMQ)", Some("/"))),
        ("LogFilter", string("RUST_LOG of every function", Some("info"))),
        (
            "ShipCountries",
            string("SHIP_COUNTRIES: comma-separated ISO codes ship-order delivers to; empty: all but AQ", Some("")),
        ),
    ])
}

fn rules() -> Node {
    let not_empty = |parameter: &str, description: &str| {
        map([
            ("Assert", map([("Fn::Not", list([equals(reference(parameter), s(""))]))])),
            ("AssertDescription", s(description)),
        ])
    };
    map([
        (
            "JwtNeedsIssuerAndAudience",
            map([
                ("RuleCondition", equals(reference("ApiAuth"), s("JWT"))),
                (
                    "Assertions",
                    list([
                        not_empty("JwtIssuer", "ApiAuth JWT needs JwtIssuer"),
                        not_empty("JwtAudience", "ApiAuth JWT needs JwtAudience"),
                    ]),
                ),
            ]),
        ),
        (
            "AmazonMqNeedsBrokerAndCredentials",
            map([
                ("RuleCondition", equals(reference("EventSource"), s("AmazonMQ"))),
                (
                    "Assertions",
                    list([
                        not_empty("MqBrokerArn", "EventSource AmazonMQ needs MqBrokerArn"),
                        not_empty("MqCredentialsSecretArn", "EventSource AmazonMQ needs MqCredentialsSecretArn"),
                    ]),
                ),
            ]),
        ),
    ])
}

fn conditions() -> Node {
    map([
        (AUTH_IS_IAM, equals(reference("ApiAuth"), s("IAM"))),
        (AUTH_IS_JWT, equals(reference("ApiAuth"), s("JWT"))),
        (USE_SQS, equals(reference("EventSource"), s("SQS"))),
        (USE_AMAZON_MQ, equals(reference("EventSource"), s("AmazonMQ"))),
    ])
}

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
    for spec in choreography {
        entries.push((function_id(spec), function(spec)));
        if !spec.consumes.is_empty() {
            let name = pascal_case(spec.name);
            entries.push((dead_letter_queue_id(spec), dead_letter_queue(spec)));
            entries.push((queue_id(spec), queue(spec)));
            entries.push((format!("{name}SqsMapping"), sqs_mapping(spec)));
            entries.push((format!("{name}MqMapping"), mq_mapping(spec)));
        }
    }
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
    Node::Map(entries)
}

// ---------------------------------------------------------------- resources

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_logical_ids() {
        assert_eq!(pascal_case("reserve-inventory"), "ReserveInventory");
        assert_eq!(route_event_id(&Route { method: "GET", path: "/orders/{order_id}" }), "GetOrdersOrderId");
    }
}
