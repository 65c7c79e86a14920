//! The AWS SAM template (`template.yaml`, DESIGN §2), generated from the
//! choreography table so that it cannot drift from the code: every function,
//! its HTTP routes, its queues, its event-source mappings and its IAM
//! permissions are derived from `CHOREOGRAPHY`; the DynamoDB tables come from
//! [`TABLES`]. `choreo template` prints it and `bridge/tests/template.rs`
//! checks that the committed file is exactly this output.
//!
//! Two choices are left to whoever deploys the stack, as parameters:
//! - `ApiAuth` (`IAM` | `JWT`): how the HTTP API authorizes its callers. The
//!   API is never open.
//! - `EventSource` (`SQS` | `AmazonMQ`): what invokes the consuming functions,
//!   an SQS queue per function (fed by `choreo bridge --invoke sqs`) or an
//!   Amazon MQ for RabbitMQ event-source mapping on the function's queue.
//!
//! SAM resolves its own `Auth` and `Events` properties while transforming
//! and accepts no `Fn::If` in them (`DefaultAuthorizer` must be a literal),
//! nor a `Condition` on one event. So the template states what SAM would have
//! expanded them to, with conditions: the API's security schemes in an inline
//! OpenAPI body (its routes generated from `FunctionSpec::routes`, the same
//! declaration the axum routers and `openapi.yaml` are checked against), and
//! the SQS / Amazon MQ mappings as `AWS::Lambda::EventSourceMapping`
//! resources, each with its condition.

use std::fmt::Write as _;

use shared::choreography::{CHOREOGRAPHY, FunctionSpec, Route, Service};

/// A DynamoDB table of the deployed store (the DynamoDB adapter, DESIGN §6).
#[derive(Debug)]
pub struct Table {
    /// Physical name after the `NamePrefix` parameter; its logical id is this in PascalCase + `Table`.
    pub name: &'static str,
    /// Partition key (a string attribute); the tables have no sort key.
    pub partition_key: &'static str,
    /// The service whose functions write it; `None`: every function that writes
    /// anything (the processed-events / outbox records of idempotency).
    pub owner: Option<Service>,
    /// Read by the query functions (those that neither consume nor emit events).
    pub read_by_queries: bool,
}

// TODO(lead): the DynamoDB adapter (shared/src/dynamodb.rs) is being written
// and will expose its table names and keys; replace this list with that API
// (it is the only place the generator learns about tables).
/// The tables the stores need, one place.
pub const TABLES: &[Table] = &[
    Table { name: "stock", partition_key: "sku", owner: Some(Service::Inventory), read_by_queries: true },
    Table { name: "reservations", partition_key: "order_id", owner: Some(Service::Inventory), read_by_queries: false },
    Table { name: "orders", partition_key: "order_id", owner: Some(Service::Orders), read_by_queries: true },
    Table { name: "shipments", partition_key: "order_id", owner: Some(Service::Shipping), read_by_queries: false },
    Table { name: "processed", partition_key: "pk", owner: None, read_by_queries: false },
];

/// Memory of every function (MB).
pub const MEMORY_MB: i64 = 256;
/// Timeout of every function (s); API Gateway stops waiting after 30 s anyway.
pub const TIMEOUT_S: i64 = 30;
/// An SQS message stays invisible this long while a function handles it: six
/// times the function timeout, as AWS advises for SQS event sources.
pub const VISIBILITY_TIMEOUT_S: i64 = 6 * TIMEOUT_S;
/// Deliveries of one SQS message before it moves to the dead-letter queue.
pub const MAX_RECEIVE_COUNT: i64 = 5;
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
        ("Parameters", parameters()),
        ("Rules", rules()),
        ("Conditions", conditions()),
        ("Globals", globals()),
        ("Resources", resources(choreography)),
        ("Outputs", outputs(choreography)),
    ]);
    let mut out = String::from(
        "# Generated by `choreo template` from shared/src/choreography.rs: do not edit by hand.\n\
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
pub fn table_id(table: &Table) -> String {
    format!("{}Table", pascal_case(table.name))
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

/// DynamoDB actions of each access (transactions are authorized per item action).
pub const READ_ACTIONS: &[&str] = &["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"];
pub const WRITE_ACTIONS: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
];

/// The tables a function may touch (DESIGN §3: a function writes only its own
/// service's tables; the query function only reads).
pub fn table_access(spec: &FunctionSpec) -> Vec<(&'static Table, Access)> {
    if is_query(spec) {
        TABLES.iter().filter(|table| table.read_by_queries).map(|table| (table, Access::Read)).collect()
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
            string(
                "Secrets Manager secret with the broker's username and password (EventSource AmazonMQ)",
                Some(""),
            ),
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
    let mut entries: Vec<(String, Node)> = TABLES.iter().map(|table| (table_id(table), dynamodb_table(table))).collect();
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

fn dynamodb_table(table: &Table) -> Node {
    map([
        ("Type", s("AWS::DynamoDB::Table")),
        ("DeletionPolicy", s("Retain")),
        ("UpdateReplacePolicy", s("Retain")),
        (
            "Properties",
            map([
                ("TableName", sub(format!("${{NamePrefix}}{}", table.name))),
                ("BillingMode", s("PAY_PER_REQUEST")),
                (
                    "AttributeDefinitions",
                    list([map([("AttributeName", s(table.partition_key)), ("AttributeType", s("S"))])]),
                ),
                ("KeySchema", list([map([("AttributeName", s(table.partition_key)), ("KeyType", s("HASH"))])])),
                ("PointInTimeRecoverySpecification", map([("PointInTimeRecoveryEnabled", Node::Bool(true))])),
                ("SSESpecification", map([("SSEEnabled", Node::Bool(true))])),
            ]),
        ),
    ])
}

/// The HTTP API. Its OpenAPI body lists each route with the security the
/// `ApiAuth` parameter picks; SAM adds each route's Lambda integration from
/// the functions' `HttpApi` events.
fn http_api(choreography: &[FunctionSpec]) -> Node {
    let security = fn_if(
        AUTH_IS_IAM,
        list([map([(IAM_SCHEME, list([]))])]),
        list([map([(JWT_SCHEME, list([]))])]),
    );
    let mut paths: Vec<(String, Node)> = Vec::new();
    for route in choreography.iter().flat_map(|spec| spec.routes) {
        let operation =
            (route.method.to_ascii_lowercase(), map([("security", security.clone()), ("responses", map::<&str>([]))]));
        match paths.iter_mut().find(|(path, _)| path == route.path) {
            Some((_, Node::Map(operations))) => operations.push(operation),
            _ => paths.push((route.path.to_owned(), Node::Map(vec![operation]))),
        }
    }
    let iam_scheme = map([
        ("type", s("apiKey")),
        ("name", s("Authorization")),
        ("in", s("header")),
        ("x-amazon-apigateway-authtype", s("awsSigv4")),
    ]);
    let jwt_scheme = map([
        ("type", s("oauth2")),
        (
            "x-amazon-apigateway-authorizer",
            map([
                ("type", s("jwt")),
                ("identitySource", s("$request.header.Authorization")),
                (
                    "jwtConfiguration",
                    map([("issuer", reference("JwtIssuer")), ("audience", list([reference("JwtAudience")]))]),
                ),
            ]),
        ),
    ]);
    map([
        ("Type", s("AWS::Serverless::HttpApi")),
        (
            "Properties",
            map([
                ("Description", s("choreo HTTP API (openapi.yaml); routes from the choreography table")),
                (
                    "DefaultRouteSettings",
                    map([
                        ("ThrottlingBurstLimit", reference("ThrottlingBurstLimit")),
                        ("ThrottlingRateLimit", reference("ThrottlingRateLimit")),
                    ]),
                ),
                (
                    "DefinitionBody",
                    map([
                        ("openapi", s("3.0.1")),
                        (
                            "info",
                            map([("title", sub("${AWS::StackName}")), ("version", s(env!("CARGO_PKG_VERSION")))]),
                        ),
                        ("paths", Node::Map(paths)),
                        (
                            "components",
                            map([(
                                "securitySchemes",
                                map([
                                    (IAM_SCHEME, when(AUTH_IS_IAM, iam_scheme)),
                                    (JWT_SCHEME, when(AUTH_IS_JWT, jwt_scheme)),
                                ]),
                            )]),
                        ),
                    ]),
                ),
            ]),
        ),
    ])
}

fn function(spec: &FunctionSpec) -> Node {
    let mut properties = vec![
        ("FunctionName", sub(format!("${{NamePrefix}}{}", spec.name))),
        ("Description", s(describe(spec))),
        ("CodeUri", s(".")),
    ];
    if !spec.emits.is_empty() {
        // The function publishes what it emits over AMQP; the URL (with its
        // credentials) stays in Secrets Manager and is read at first use.
        properties.push((
            "Environment",
            map([("Variables", map([("AMQP_SECRET_ARN", reference("AmqpSecretArn"))]))]),
        ));
    }
    properties.push(("Policies", policies(spec)));
    if !spec.routes.is_empty() {
        let events = spec.routes.iter().map(|route| {
            (
                route_event_id(route),
                map([
                    ("Type", s("HttpApi")),
                    (
                        "Properties",
                        map([
                            ("ApiId", reference(HTTP_API)),
                            ("Method", s(route.method)),
                            ("Path", s(route.path)),
                            ("PayloadFormatVersion", s("2.0")),
                        ]),
                    ),
                ]),
            )
        });
        properties.push(("Events", Node::Map(events.collect())));
    }
    map([
        ("Type", s("AWS::Serverless::Function")),
        (
            "Metadata",
            map([
                ("BuildMethod", s("rust-cargolambda")),
                // The workspace root is the CodeUri: cargo lambda builds this binary of it.
                ("BuildProperties", map([("Binary", s(spec.name))])),
            ]),
        ),
        ("Properties", map(properties)),
    ])
}

/// `reserve-inventory (inventory): consumes order.created, stock.replenished; emits …`
fn describe(spec: &FunctionSpec) -> String {
    let join = |items: Vec<String>| items.join(", ");
    let mut parts = Vec::new();
    if !spec.routes.is_empty() {
        parts.push(format!("serves {}", join(spec.routes.iter().map(|r| format!("{} {}", r.method, r.path)).collect())));
    }
    if !spec.consumes.is_empty() {
        parts.push(format!("consumes {}", join(spec.consumes.iter().map(|e| e.to_string()).collect())));
    }
    if !spec.emits.is_empty() {
        parts.push(format!("emits {}", join(spec.emits.iter().map(|e| e.to_string()).collect())));
    }
    let service = format!("{:?}", spec.service).to_lowercase();
    format!("choreo {} ({service} service) - {}", spec.name, parts.join("; "))
}

/// Least privilege: DynamoDB on the tables of [`table_access`], the AMQP
/// secret for functions that publish, and what the event source needs.
fn policies(spec: &FunctionSpec) -> Node {
    let table_arns = |access: Access| -> Vec<Node> {
        table_access(spec)
            .into_iter()
            .filter(|(_, granted)| *granted == access)
            .map(|(table, _)| get_att(&table_id(table), "Arn"))
            .collect()
    };
    let mut always = Vec::new();
    let writes = table_arns(Access::ReadWrite);
    if !writes.is_empty() {
        always.push(statement("WriteOwnServiceTables", WRITE_ACTIONS, list(writes)));
    }
    let reads = table_arns(Access::Read);
    if !reads.is_empty() {
        always.push(statement("ReadQueriedTables", READ_ACTIONS, list(reads)));
    }
    if !spec.emits.is_empty() {
        always.push(statement("ReadAmqpUrl", &["secretsmanager:GetSecretValue"], reference("AmqpSecretArn")));
    }
    let mut policies = vec![map([("Statement", list(always))])];
    if !spec.consumes.is_empty() {
        let sqs = statement(
            "ConsumeOwnQueue",
            &["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"],
            get_att(&queue_id(spec), "Arn"),
        );
        policies.push(when(USE_SQS, map([("Statement", list([sqs]))])));
        let mq = [
            statement("DescribeBroker", &["mq:DescribeBroker"], reference("MqBrokerArn")),
            statement("ReadBrokerCredentials", &["secretsmanager:GetSecretValue"], reference("MqCredentialsSecretArn")),
        ];
        policies.push(when(USE_AMAZON_MQ, map([("Statement", list(mq))])));
    }
    list(policies)
}

fn statement(sid: &str, actions: &[&str], resource: Node) -> Node {
    map([
        ("Sid", s(sid)),
        ("Effect", s("Allow")),
        ("Action", list(actions.iter().map(|action| s(*action)))),
        ("Resource", resource),
    ])
}

fn dead_letter_queue(spec: &FunctionSpec) -> Node {
    map([
        ("Type", s("AWS::SQS::Queue")),
        ("Condition", s(USE_SQS)),
        (
            "Properties",
            map([
                ("QueueName", sub(format!("${{NamePrefix}}{}-dlq", spec.name))),
                ("MessageRetentionPeriod", int(DEAD_LETTER_RETENTION_S)),
                ("SqsManagedSseEnabled", Node::Bool(true)),
            ]),
        ),
    ])
}

fn queue(spec: &FunctionSpec) -> Node {
    map([
        ("Type", s("AWS::SQS::Queue")),
        ("Condition", s(USE_SQS)),
        (
            "Properties",
            map([
                ("QueueName", sub(format!("${{NamePrefix}}{}", spec.name))),
                ("VisibilityTimeout", int(VISIBILITY_TIMEOUT_S)),
                ("SqsManagedSseEnabled", Node::Bool(true)),
                (
                    "RedrivePolicy",
                    map([
                        ("deadLetterTargetArn", get_att(&dead_letter_queue_id(spec), "Arn")),
                        ("maxReceiveCount", int(MAX_RECEIVE_COUNT)),
                    ]),
                ),
            ]),
        ),
    ])
}

fn sqs_mapping(spec: &FunctionSpec) -> Node {
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
            ]),
        ),
    ])
}

fn mq_mapping(spec: &FunctionSpec) -> Node {
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

// ---------------------------------------------------------------- YAML

/// A YAML value whose maps keep their order (the template reads top-down).
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn s(value: impl Into<String>) -> Node {
    Node::Str(value.into())
}

fn int(value: i64) -> Node {
    Node::Int(value)
}

fn list(items: impl IntoIterator<Item = Node>) -> Node {
    Node::List(items.into_iter().collect())
}

fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Node {
    Node::Map(entries.into_iter().map(|(key, value)| (key.into(), value)).collect())
}

fn reference(name: &str) -> Node {
    map([("Ref", s(name))])
}

fn get_att(resource: &str, attribute: &str) -> Node {
    map([("Fn::GetAtt", list([s(resource), s(attribute)]))])
}

fn sub(template: impl Into<String>) -> Node {
    map([("Fn::Sub", s(template))])
}

fn equals(left: Node, right: Node) -> Node {
    map([("Fn::Equals", list([left, right]))])
}

fn fn_if(condition: &str, then: Node, otherwise: Node) -> Node {
    map([("Fn::If", list([s(condition), then, otherwise]))])
}

/// `value` when `condition` holds, nothing otherwise.
fn when(condition: &str, value: Node) -> Node {
    fn_if(condition, value, reference("AWS::NoValue"))
}

/// Writes `node` in block style at `indent` spaces (a map or a list).
fn write_block(out: &mut String, node: &Node, indent: usize) {
    match node {
        Node::Map(entries) => {
            for (key, value) in entries {
                let _ = write!(out, "{:indent$}{}:", "", scalar(key));
                write_value(out, value, indent);
            }
        }
        Node::List(items) => {
            for item in items {
                let _ = write!(out, "{:indent$}-", "");
                match item {
                    // A non-empty map starts on the dash's line: `- Key: value`.
                    Node::Map(entries) if !entries.is_empty() => {
                        let mut nested = String::new();
                        write_block(&mut nested, item, indent + 2);
                        out.push(' ');
                        out.push_str(&nested[indent + 2..]);
                    }
                    Node::List(items) if !items.is_empty() => {
                        out.push('\n');
                        write_block(out, item, indent + 2);
                    }
                    _ => write_value(out, item, indent),
                }
            }
        }
        scalar_node => write_value(out, scalar_node, indent),
    }
}

/// Writes what follows `key:` or `-`: an inline scalar, or a nested block.
fn write_value(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Str(text) => {
            let _ = writeln!(out, " {}", scalar(text));
        }
        Node::Int(number) => {
            let _ = writeln!(out, " {number}");
        }
        Node::Bool(flag) => {
            let _ = writeln!(out, " {flag}");
        }
        Node::List(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        nested => {
            out.push('\n');
            write_block(out, nested, indent + 2);
        }
    }
}

/// A string as a YAML scalar: plain when no YAML reader (1.1 or 1.2) could
/// take it for anything else, double-quoted (JSON escaping) otherwise.
fn scalar(text: &str) -> String {
    const SPECIAL_WORDS: &[&str] =
        &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "inf", "nan", ".inf", ".nan"];
    let plain = text.chars().next().is_some_and(|first| first.is_ascii_alphabetic() || first == '/')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || " _-./:(),".contains(c))
        && !text.contains(": ")
        && !text.ends_with([':', ' '])
        && !SPECIAL_WORDS.contains(&text.to_ascii_lowercase().as_str());
    if plain { text.to_owned() } else { serde_json::Value::from(text).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_that_could_be_misread_are_quoted() {
        assert_eq!(scalar("dynamodb:GetItem"), "dynamodb:GetItem");
        assert_eq!(scalar("AWS::Serverless-2016-10-31"), "AWS::Serverless-2016-10-31");
        assert_eq!(scalar("2010-09-09"), "\"2010-09-09\"");
        assert_eq!(scalar("No"), "\"No\"");
        assert_eq!(scalar(""), "\"\"");
        assert_eq!(scalar("*"), "\"*\"");
        assert_eq!(scalar("${NamePrefix}stock"), "\"${NamePrefix}stock\"");
        assert_eq!(scalar("/orders/{order_id}"), "\"/orders/{order_id}\"");
        assert_eq!(scalar("a: b"), "\"a: b\"");
    }

    #[test]
    fn blocks_nest_maps_in_lists() {
        let node = map([("A", list([map([("B", s("x")), ("C", list([s("y")]))]), s("z")])), ("D", map::<&str>([]))]);
        let mut out = String::new();
        write_block(&mut out, &node, 0);
        assert_eq!(out, "A:\n  - B: x\n    C:\n      - y\n  - z\nD: {}\n");
    }

    #[test]
    fn names_become_logical_ids() {
        assert_eq!(pascal_case("reserve-inventory"), "ReserveInventory");
        assert_eq!(route_event_id(&Route { method: "GET", path: "/orders/{order_id}" }), "GetOrdersOrderId");
    }
}
