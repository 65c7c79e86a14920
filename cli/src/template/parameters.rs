//! What whoever deploys the stack chooses: the parameters, the rules that
//! refuse inconsistent choices before anything is created, and the
//! conditions the resources hang on.

use super::kafka::vpc_slot_conditions;
use super::yaml::*;
use super::*;

/// CloudWatch Logs accepts only these retentions (days).
const LOG_RETENTION_DAYS: &[i64] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

fn string(description: &str, default: Option<&str>) -> Node {
    let mut entries = vec![("Type", s("String")), ("Description", s(description))];
    if let Some(default) = default {
        entries.push(("Default", s(default)));
    }
    map(entries)
}

fn with(node: Node, extra: Vec<(&str, Node)>) -> Node {
    match node {
        Node::Map(mut entries) => {
            entries.extend(extra.into_iter().map(|(key, value)| (key.to_owned(), value)));
            Node::Map(entries)
        }
        other => other,
    }
}

fn number(description: &str, default: i64, min: i64, max: i64) -> Node {
    map([
        ("Type", s("Number")),
        ("Description", s(description)),
        ("Default", int(default)),
        ("MinValue", int(min)),
        ("MaxValue", int(max)),
    ])
}

fn one_of(description: &str, default: &str, values: &[&str]) -> Node {
    with(string(description, Some(default)), vec![("AllowedValues", list(values.iter().map(|value| s(*value))))])
}

/// An optional string: empty, or matching `pattern`.
fn optional(description: &str, pattern: &str) -> Node {
    with(string(description, Some("")), vec![("AllowedPattern", s(format!("^({pattern})?$")))])
}

pub(super) fn parameters() -> Node {
    map([
        (
            "NamePrefix",
            with(
                string(
                    "Prefix of the table, queue and function names (one stack per prefix)",
                    Some(DEFAULT_NAME_PREFIX),
                ),
                vec![("AllowedPattern", s("^[A-Za-z0-9_-]{0,32}$"))],
            ),
        ),
        ("ApiAuth", one_of("How the HTTP API authorizes callers: IAM (SigV4) or JWT", "IAM", &["IAM", "JWT"])),
        ("JwtIssuer", string("Issuer URL of the JWTs (ApiAuth JWT)", Some(""))),
        ("JwtAudience", string("Audience the JWTs must name (ApiAuth JWT)", Some(""))),
        ("ThrottlingBurstLimit", number("Requests the API accepts in a burst", 100, 1, 5000)),
        ("ThrottlingRateLimit", number("Steady requests per second the API accepts", 50, 1, 10000)),
        (
            "EventSource",
            one_of(
                "What invokes the consuming functions: an SQS queue each, Amazon MQ for RabbitMQ, or Kafka \
                 (Amazon MSK or self-managed); with Kafka the functions publish to Kafka too",
                "SQS",
                &["SQS", "AmazonMQ", "MSK", "SelfManagedKafka"],
            ),
        ),
        ("BatchSize", number("Messages a consuming function receives at once", 10, 1, 10)),
        (
            "MaximumConcurrency",
            number("Most concurrent invocations each SQS queue makes of its function (EventSource SQS)", 10, 2, 1000),
        ),
        (
            AMQP_SECRET,
            optional(
                "Secrets Manager secret whose value is the AMQP URL the functions publish with \
                 (EventSource SQS or AmazonMQ)",
                SECRET_ARN_PATTERN,
            ),
        ),
        (
            "MqBrokerArn",
            optional(
                "ARN of the Amazon MQ for RabbitMQ broker (EventSource AmazonMQ)",
                "arn:aws[a-z-]*:mq:[a-z0-9-]+:[0-9]{12}:broker:[A-Za-z0-9_-]+:b-[0-9a-f-]+",
            ),
        ),
        (
            "MqCredentialsSecretArn",
            optional(
                "Secrets Manager secret with the broker's username and password (EventSource AmazonMQ)",
                SECRET_ARN_PATTERN,
            ),
        ),
        ("MqVirtualHost", string("RabbitMQ virtual host of the queues (EventSource AmazonMQ)", Some("/"))),
        (
            MSK_CLUSTER,
            optional(
                "ARN of the Amazon MSK cluster (EventSource MSK); the functions publish to its brokers, so \
                 they need SubnetIds in its VPC unless the cluster has public access",
                "arn:aws[a-z-]*:kafka:[a-z0-9-]+:[0-9]{12}:cluster/[A-Za-z0-9-]+/[0-9a-f-]+",
            ),
        ),
        (
            KAFKA_BOOTSTRAP_SERVERS,
            optional(
                "Comma-separated host:port of the Kafka brokers the functions publish to, and the self-managed \
                 mappings read (EventSource MSK or SelfManagedKafka; for MSK its SASL/SCRAM brokers, from \
                 aws kafka get-bootstrap-brokers)",
                "[A-Za-z0-9.-]+:[0-9]+(,[A-Za-z0-9.-]+:[0-9]+)*",
            ),
        ),
        (
            KAFKA_SECRET,
            optional(
                "Secrets Manager secret with the Kafka SASL/SCRAM username and password, JSON \
                 {\"username\",\"password\"} (EventSource MSK or SelfManagedKafka; MSK: named AmazonMSK_*, \
                 associated with the cluster)",
                SECRET_ARN_PATTERN,
            ),
        ),
        (
            KAFKA_SECRET_KEY,
            optional(
                "Customer managed KMS key encrypting KafkaSecretArn (required by MSK; empty: the secret uses \
                 the aws/secretsmanager key)",
                "arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+",
            ),
        ),
        (
            KAFKA_SASL_MECHANISM,
            one_of(
                "SASL/SCRAM mechanism of the Kafka credentials (MSK: SCRAM-SHA-512 only)",
                "SCRAM-SHA-512",
                &["SCRAM-SHA-512", "SCRAM-SHA-256"],
            ),
        ),
        (
            RELAY_SCHEDULE,
            string("How often the relay-outbox function publishes stranded outbox entries", Some("rate(1 minute)")),
        ),
        (RELAY_GRACE, number("Seconds an outbox entry stays unpublished before the relay publishes it", 60, 5, 86400)),
        (
            SAGA_DEADLINE,
            with(
                string(
                    "How long an order may stay unfinished before it is cancelled as timed_out, e.g. 15m or 2h \
                     (the relay-outbox function sweeps on its schedule)",
                    Some("15m"),
                ),
                vec![("AllowedPattern", s("^[0-9]+(ms|s|m|h|d)?$"))],
            ),
        ),
        (
            "ProcessedRetention",
            with(
                string(
                    "How long processed-event records are kept once published (DynamoDB TTL), e.g. 7d or 36h; \
                     longer than any redelivery or dead-letter replay",
                    Some("7d"),
                ),
                vec![("AllowedPattern", s("^[0-9]+[dhms]?$"))],
            ),
        ),
        (
            BRIDGE_IMAGE,
            string(
                "Image of the choreo command (infra/Dockerfile) to run the bridge on ECS Fargate; empty: no bridge (EventSource SQS)",
                Some(""),
            ),
        ),
        (
            "BridgeInvoke",
            one_of(
                "How the bridge hands each event on: to the function's SQS queue, or by invoking the function",
                "sqs",
                &["sqs", "lambda"],
            ),
        ),
        ("BridgeCpuArchitecture", one_of("CPU architecture of the bridge image", "X86_64", &["X86_64", "ARM64"])),
        (
            "BridgeAssignPublicIp",
            one_of(
                "Whether the bridge task gets a public IP (subnets without a NAT gateway)",
                "DISABLED",
                &["ENABLED", "DISABLED"],
            ),
        ),
        (
            SUBNET_IDS,
            optional(
                "Comma-separated subnets: the functions (and the bridge) run in this VPC; they need routes to \
                 the broker and the AWS APIs they call (DynamoDB, Secrets Manager, SQS, Lambda; for the bridge \
                 ECR and CloudWatch Logs): a NAT gateway or VPC endpoints. Empty: no VPC",
                "subnet-[0-9a-f]+(,subnet-[0-9a-f]+)*",
            ),
        ),
        (
            SECURITY_GROUP_IDS,
            optional(
                "Comma-separated security groups of the functions and the bridge (with SubnetIds)",
                "sg-[0-9a-f]+(,sg-[0-9a-f]+)*",
            ),
        ),
        (
            LOG_RETENTION,
            with(
                number("Days the functions' and the bridge's logs are kept", 30, 1, 3653),
                vec![("AllowedValues", list(LOG_RETENTION_DAYS.iter().map(|days| int(*days))))],
            ),
        ),
        (
            ALARM_TOPIC,
            optional(
                "SNS topic the alarms notify (dead letters, function errors); empty: alarms without notification",
                "arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]+",
            ),
        ),
        ("LogFilter", string("RUST_LOG of every function", Some("info"))),
        (
            "ShipCountries",
            string("SHIP_COUNTRIES: comma-separated ISO codes ship-order delivers to; empty: all but AQ", Some("")),
        ),
    ])
}

/// A Secrets Manager secret's ARN.
const SECRET_ARN_PATTERN: &str = "arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+";

fn is_empty(parameter: &str) -> Node {
    equals(reference(parameter), s(""))
}

/// `EventSource` is one of `values`.
fn any_event_source(values: &[&str]) -> Node {
    map([("Fn::Or", list(values.iter().map(|value| equals(reference("EventSource"), s(*value)))))])
}

fn not_empty(parameter: &str, description: &str) -> Node {
    map([("Assert", not(is_empty(parameter))), ("AssertDescription", s(description))])
}

pub(super) fn rules() -> Node {
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
        (
            "AmqpNeedsItsSecret",
            map([
                ("RuleCondition", any_event_source(&["SQS", "AmazonMQ"])),
                (
                    "Assertions",
                    list([not_empty(
                        AMQP_SECRET,
                        "EventSource SQS or AmazonMQ needs AmqpSecretArn (the functions publish over AMQP)",
                    )]),
                ),
            ]),
        ),
        (
            "MskNeedsClusterServersAndCredentials",
            map([
                ("RuleCondition", equals(reference("EventSource"), s("MSK"))),
                (
                    "Assertions",
                    list([
                        not_empty(MSK_CLUSTER, "EventSource MSK needs MskClusterArn"),
                        not_empty(
                            KAFKA_BOOTSTRAP_SERVERS,
                            "EventSource MSK needs KafkaBootstrapServers (the functions publish to them)",
                        ),
                        not_empty(KAFKA_SECRET, "EventSource MSK needs KafkaSecretArn (SASL/SCRAM)"),
                        not_empty(
                            KAFKA_SECRET_KEY,
                            "EventSource MSK needs KafkaSecretKeyArn: MSK takes only secrets encrypted with a customer managed key",
                        ),
                        map([
                            ("Assert", equals(reference(KAFKA_SASL_MECHANISM), s("SCRAM-SHA-512"))),
                            ("AssertDescription", s("MSK's SASL/SCRAM is SCRAM-SHA-512")),
                        ]),
                    ]),
                ),
            ]),
        ),
        (
            "SelfManagedKafkaNeedsServersAndCredentials",
            map([
                ("RuleCondition", equals(reference("EventSource"), s("SelfManagedKafka"))),
                (
                    "Assertions",
                    list([
                        not_empty(KAFKA_BOOTSTRAP_SERVERS, "EventSource SelfManagedKafka needs KafkaBootstrapServers"),
                        not_empty(KAFKA_SECRET, "EventSource SelfManagedKafka needs KafkaSecretArn (SASL/SCRAM)"),
                    ]),
                ),
            ]),
        ),
        (
            // Amazon MQ's event source mappings read the broker's queues
            // themselves; a bridge would compete with them for every message.
            "BridgeNeedsSqsAndSubnets",
            map([
                ("RuleCondition", not(is_empty(BRIDGE_IMAGE))),
                (
                    "Assertions",
                    list([
                        map([
                            ("Assert", equals(reference("EventSource"), s("SQS"))),
                            (
                                "AssertDescription",
                                s(
                                    "The bridge runs with EventSource SQS; with AmazonMQ or Kafka the mappings read the broker directly",
                                ),
                            ),
                        ]),
                        not_empty(SUBNET_IDS, "A Fargate bridge needs SubnetIds (and SecurityGroupIds)"),
                    ]),
                ),
            ]),
        ),
        (
            "VpcNeedsSubnetsAndSecurityGroups",
            map([
                (
                    "RuleCondition",
                    map([("Fn::Or", list([not(is_empty(SUBNET_IDS)), not(is_empty(SECURITY_GROUP_IDS))]))]),
                ),
                (
                    "Assertions",
                    list([
                        not_empty(SUBNET_IDS, "SecurityGroupIds needs SubnetIds"),
                        not_empty(SECURITY_GROUP_IDS, "SubnetIds needs SecurityGroupIds"),
                    ]),
                ),
            ]),
        ),
    ])
}

pub(super) fn conditions() -> Node {
    let mut conditions: Vec<(String, Node)> = [
        (AUTH_IS_IAM, equals(reference("ApiAuth"), s("IAM"))),
        (AUTH_IS_JWT, equals(reference("ApiAuth"), s("JWT"))),
        (USE_SQS, equals(reference("EventSource"), s("SQS"))),
        (USE_AMAZON_MQ, equals(reference("EventSource"), s("AmazonMQ"))),
        (USE_MSK, equals(reference("EventSource"), s("MSK"))),
        (USE_SELF_MANAGED_KAFKA, equals(reference("EventSource"), s("SelfManagedKafka"))),
        (USE_KAFKA, map([("Fn::Or", list([condition(USE_MSK), condition(USE_SELF_MANAGED_KAFKA)]))])),
        (USE_AMQP, not(condition(USE_KAFKA))),
        (HAS_KAFKA_SECRET_KEY, and([condition(USE_KAFKA), not(is_empty(KAFKA_SECRET_KEY))])),
        (KAFKA_SCRAM_256, equals(reference(KAFKA_SASL_MECHANISM), s("SCRAM-SHA-256"))),
        (IN_VPC, not(is_empty(SUBNET_IDS))),
        (SELF_MANAGED_KAFKA_IN_VPC, and([condition(USE_SELF_MANAGED_KAFKA), condition(IN_VPC)])),
        (HAS_ALARM_TOPIC, not(is_empty(ALARM_TOPIC))),
        // UseSqs as well: the rule above refuses a bridge in AmazonMQ mode,
        // and with it in the condition the bridge may name the SQS queues.
        (RUN_BRIDGE, and([not(is_empty(BRIDGE_IMAGE)), condition(USE_SQS)])),
        (BRIDGE_INVOKES_SQS, equals(reference("BridgeInvoke"), s("sqs"))),
        (BRIDGE_INVOKES_LAMBDA, equals(reference("BridgeInvoke"), s("lambda"))),
    ]
    .into_iter()
    .map(|(name, condition)| (name.to_owned(), condition))
    .collect();
    conditions.extend(vpc_slot_conditions());
    Node::Map(conditions)
}
