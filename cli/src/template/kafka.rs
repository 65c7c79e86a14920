//! `EventSource=MSK` and `EventSource=SelfManagedKafka`: Lambda's Kafka
//! event-source mappings, derived from the choreography table, and what the
//! functions need to publish to Kafka.
//!
//! - A Kafka mapping reads exactly one topic, so a consumer gets one mapping
//!   per event type it consumes, on that type's topic (`choreo.<event type>`).
//!   The retry topics of `choreo up --kafka` are not mapped: on Lambda a
//!   retryable failure fails the invocation and the mapping retries the batch.
//! - Each mapping has its own consumer group, `choreo.<function>.<event type>`:
//!   Lambda requires a group id unique among all Kafka mappings, so the
//!   function's group of the long-running consumers (`choreo.<function>`,
//!   several topics in one group) cannot be shared by its mappings.
//! - `StartingPosition` is `TRIM_HORIZON`: it applies while the group has no
//!   committed offset, and with `LATEST` whatever was published before the
//!   mapping first polled (the first orders after a deployment, the relay's
//!   catch-up) would never reach the function. Reading a topic's retained
//!   past again is harmless: every step is idempotent.
//! - Authentication is SASL/SCRAM with the `KafkaSecretArn` secret
//!   (`{"username","password"}`), for the mappings and for the functions'
//!   own producer alike, over TLS (`SASL_SSL`). MSK also offers IAM
//!   authentication, which librdkafka only speaks through an OAUTHBEARER
//!   token callback; one mechanism for both Kafka modes keeps one code path.
//!   MSK takes only secrets named `AmazonMSK_*` and encrypted with a
//!   customer managed KMS key (`KafkaSecretKeyArn`), and only SCRAM-SHA-512.
//! - The functions need the brokers' addresses (`KAFKA_BOOTSTRAP_SERVERS`):
//!   CloudFormation cannot read them from the ARN of a cluster the stack did
//!   not create, so `KafkaBootstrapServers` is a parameter in both modes
//!   (`aws kafka get-bootstrap-brokers` prints MSK's SASL/SCRAM list).
//! - The topics must exist before the mappings poll and the functions
//!   publish (MSK creates none by default; a produce to a missing topic is
//!   refused): create them first, as `choreo topology --kafka` lists them.

use super::functions::{MAPPING_NETWORK_ACTIONS, statement};
use super::operations::alarm;
use super::yaml::*;
use super::*;
use shared::bus::kafka::{DEFAULT_GROUP_PREFIX, dead_letter_topic, event_topic};
use shared::contract::events::EventType;
use shared::host::lambda::DEAD_LETTERED_MESSAGE;

/// Where a Kafka mapping reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KafkaSource {
    /// An Amazon MSK cluster (`MskClusterArn`).
    Msk,
    /// Any other Kafka cluster (`KafkaBootstrapServers`).
    SelfManaged,
}

impl KafkaSource {
    /// The condition its mappings exist under.
    pub fn condition(self) -> &'static str {
        match self {
            KafkaSource::Msk => USE_MSK,
            KafkaSource::SelfManaged => USE_SELF_MANAGED_KAFKA,
        }
    }
}

/// Where a new consumer group starts reading (see the module's doc).
pub const STARTING_POSITION: &str = "TRIM_HORIZON";

/// What an MSK mapping asks of the cluster with the function's role
/// (the AWSLambdaMSKExecutionRole policy's `kafka:` actions; DescribeClusterV2
/// serves provisioned and serverless clusters alike).
pub const MSK_CLUSTER_ACTIONS: &[&str] = &["kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers"];

/// Self-managed Kafka mappings take each subnet and security group as an
/// entry of their own, and a template cannot loop over a list parameter:
/// they get the first `VPC_SLOTS` of `SubnetIds` and `SecurityGroupIds`.
pub const VPC_SLOTS: usize = 3;

/// The topic of `event_type`'s events: the bus's own naming.
pub fn kafka_topic(event_type: EventType) -> String {
    event_topic(event_type)
}

/// The consumer group of `spec`'s mapping of `event_type` (see the module's
/// doc): the function's group (`<prefix><function>`) and the event type.
pub fn kafka_group(spec: &FunctionSpec, event_type: EventType) -> String {
    format!("{DEFAULT_GROUP_PREFIX}{}.{}", spec.name, event_type.as_str())
}

/// Logical id of `spec`'s mapping of `event_type` from `source`.
pub(super) fn kafka_mapping_id(spec: &FunctionSpec, event_type: EventType, source: KafkaSource) -> String {
    let source = match source {
        KafkaSource::Msk => "Msk",
        KafkaSource::SelfManaged => "SelfManagedKafka",
    };
    format!("{}{}{source}Mapping", pascal_case(spec.name), pascal_case(event_type.as_str()))
}

/// What every Kafka mapping has, with the source's own `extra` properties.
fn kafka_mapping(spec: &FunctionSpec, event_type: EventType, source: KafkaSource, extra: Vec<(&str, Node)>) -> Node {
    let mut properties = vec![
        ("FunctionName", reference(&function_id(spec))),
        ("Topics", list([s(kafka_topic(event_type))])),
        ("StartingPosition", s(STARTING_POSITION)),
        ("BatchSize", reference("BatchSize")),
    ];
    properties.extend(extra);
    map([
        ("Type", s("AWS::Lambda::EventSourceMapping")),
        ("Condition", s(source.condition())),
        ("Properties", map(properties)),
    ])
}

pub(super) fn msk_mapping(spec: &FunctionSpec, event_type: EventType) -> Node {
    kafka_mapping(
        spec,
        event_type,
        KafkaSource::Msk,
        vec![
            ("EventSourceArn", reference(MSK_CLUSTER)),
            ("AmazonManagedKafkaEventSourceConfig", map([("ConsumerGroupId", s(kafka_group(spec, event_type)))])),
            // MSK's SASL/SCRAM is SCRAM-SHA-512 only (a rule holds the mechanism to it).
            (
                "SourceAccessConfigurations",
                list([map([("Type", s("SASL_SCRAM_512_AUTH")), ("URI", reference(KAFKA_SECRET))])]),
            ),
        ],
    )
}

pub(super) fn self_managed_kafka_mapping(spec: &FunctionSpec, event_type: EventType) -> Node {
    let auth = fn_if(KAFKA_SCRAM_256, s("SASL_SCRAM_256_AUTH"), s("SASL_SCRAM_512_AUTH"));
    let mut access = vec![map([("Type", auth), ("URI", reference(KAFKA_SECRET))])];
    // A cluster in the VPC is reached through it: the mapping's own network
    // settings (the function's VpcConfig does not apply to its mappings).
    for (kind, parameter, prefix) in
        [("VPC_SUBNET", SUBNET_IDS, "subnet"), ("VPC_SECURITY_GROUP", SECURITY_GROUP_IDS, "security_group")]
    {
        for slot in 0..VPC_SLOTS {
            let id = map([("Fn::Select", list([int(slot as i64), split_list(parameter)]))]);
            let uri = map([("Fn::Sub", list([s(format!("{prefix}:${{Id}}")), map([("Id", id)])]))]);
            access.push(when(&vpc_slot_condition(parameter, slot), map([("Type", s(kind)), ("URI", uri)])));
        }
    }
    kafka_mapping(
        spec,
        event_type,
        KafkaSource::SelfManaged,
        vec![
            (
                "SelfManagedEventSource",
                map([("Endpoints", map([("KafkaBootstrapServers", split_list(KAFKA_BOOTSTRAP_SERVERS))]))]),
            ),
            ("SelfManagedKafkaEventSourceConfig", map([("ConsumerGroupId", s(kafka_group(spec, event_type)))])),
            ("SourceAccessConfigurations", list(access)),
        ],
    )
}

/// Name of the condition true when the self-managed mappings use entry
/// `slot` (0-based) of the comma-separated `parameter`: the first is there
/// whenever they are in the VPC (a rule wants both lists then).
pub(super) fn vpc_slot_condition(parameter: &str, slot: usize) -> String {
    if slot == 0 {
        return SELF_MANAGED_KAFKA_IN_VPC.to_owned();
    }
    let what = if parameter == SUBNET_IDS { "Subnet" } else { "SecurityGroup" };
    format!("{SELF_MANAGED_KAFKA_IN_VPC}{what}{}", slot + 1)
}

/// The conditions of [`vpc_slot_condition`] past the first: in the VPC, and
/// the list has an entry `slot`. The list is padded with commas first so
/// that `Fn::Select` never runs past its end (CloudFormation evaluates every
/// condition, used or not).
pub(super) fn vpc_slot_conditions() -> Vec<(String, Node)> {
    let mut conditions = Vec::new();
    for parameter in [SUBNET_IDS, SECURITY_GROUP_IDS] {
        for slot in 1..VPC_SLOTS {
            let padded = map([("Fn::Join", list([s(""), list([reference(parameter), s(",".repeat(slot))])]))]);
            let entry = map([("Fn::Select", list([int(slot as i64), map([("Fn::Split", list([s(","), padded]))])]))]);
            let holds = and([condition(SELF_MANAGED_KAFKA_IN_VPC), not(equals(entry, s("")))]);
            conditions.push((vpc_slot_condition(parameter, slot), holds));
        }
    }
    conditions
}

/// What a consumer's role needs for its Kafka mappings, each under its
/// condition: MSK's cluster and network actions, the network of a
/// self-managed cluster in the VPC. (The secret and its key are read by
/// the mapping and by the function's producer: [`bus_policies`].)
pub(super) fn mapping_policies() -> Vec<Node> {
    let msk = [
        statement("DescribeMskCluster", MSK_CLUSTER_ACTIONS, reference(MSK_CLUSTER)),
        statement("ReachMskCluster", MAPPING_NETWORK_ACTIONS, s("*")),
    ];
    let self_managed = statement("ReachKafkaCluster", MAPPING_NETWORK_ACTIONS, s("*"));
    vec![
        when(USE_MSK, map([("Statement", list(msk))])),
        when(SELF_MANAGED_KAFKA_IN_VPC, map([("Statement", list([self_managed]))])),
    ]
}

/// The environment of a function that publishes: the AMQP URL's secret in
/// the RabbitMQ modes, the Kafka settings in the Kafka modes; never both, so
/// that the function's choice of bus (`shared::host::lambda`) is the stack's.
pub(super) fn bus_environment() -> Vec<(&'static str, Node)> {
    vec![
        ("AMQP_SECRET_ARN", when(USE_AMQP, reference(AMQP_SECRET))),
        ("KAFKA_BOOTSTRAP_SERVERS", when(USE_KAFKA, reference(KAFKA_BOOTSTRAP_SERVERS))),
        // Both Kafka modes authenticate with SASL/SCRAM, over TLS.
        ("KAFKA_SECURITY_PROTOCOL", when(USE_KAFKA, s("SASL_SSL"))),
        ("KAFKA_SASL_MECHANISM", when(USE_KAFKA, reference(KAFKA_SASL_MECHANISM))),
        ("KAFKA_SECRET_ARN", when(USE_KAFKA, reference(KAFKA_SECRET))),
    ]
}

/// What a function that publishes may read, each under its mode: the AMQP
/// URL's secret, or the Kafka credentials' secret and the key encrypting it.
pub(super) fn bus_policies() -> Vec<Node> {
    let secret = |sid: &str, parameter: &str| statement(sid, &["secretsmanager:GetSecretValue"], reference(parameter));
    vec![
        when(USE_AMQP, map([("Statement", list([secret("ReadAmqpUrl", AMQP_SECRET)]))])),
        when(USE_KAFKA, map([("Statement", list([secret("ReadKafkaCredentials", KAFKA_SECRET)]))])),
        when(
            HAS_KAFKA_SECRET_KEY,
            map([(
                "Statement",
                list([statement("DecryptKafkaCredentials", &["kms:Decrypt"], reference(KAFKA_SECRET_KEY))]),
            )]),
        ),
    ]
}

/// The metric (namespace, name) counting records parked on the Kafka
/// dead-letter topics, per `Function` (a dimension): a topic has no depth
/// in CloudWatch, so each parking's log line is counted instead.
pub const KAFKA_DEAD_LETTER_METRIC: (&str, &str) = ("choreo/Kafka", "DeadLettered");

/// Counts the parking lines of `spec`'s log group (`shared::host::lambda`
/// logs [`DEAD_LETTERED_MESSAGE`] with the `function` field, as JSON).
pub(super) fn dead_letter_filter(spec: &FunctionSpec) -> Node {
    let (namespace, metric) = KAFKA_DEAD_LETTER_METRIC;
    map([
        ("Type", s("AWS::Logs::MetricFilter")),
        ("Condition", s(USE_KAFKA)),
        (
            "Properties",
            map([
                ("LogGroupName", reference(&log_group_id(spec.name))),
                ("FilterPattern", s(format!("{{ $.message = \"{DEAD_LETTERED_MESSAGE}\" }}"))),
                (
                    "MetricTransformations",
                    list([map([
                        ("MetricNamespace", s(namespace)),
                        ("MetricName", s(metric)),
                        ("MetricValue", s("1")),
                        ("Dimensions", list([map([("Key", s("Function")), ("Value", s("$.function"))])])),
                    ])]),
                ),
            ]),
        ),
    ])
}

/// A record of `spec`'s parked on its dead-letter topic (EventSource MSK or SelfManagedKafka).
pub(super) fn dead_letter_alarm(spec: &FunctionSpec) -> Node {
    let (namespace, metric) = KAFKA_DEAD_LETTER_METRIC;
    alarm(
        Some(USE_KAFKA),
        &format!("{}-kafka-dead-letters", spec.name),
        &format!("Records for {} were parked on {}", spec.name, dead_letter_topic(spec.function)),
        (namespace, metric, "Sum"),
        vec![("Function", s(spec.name))],
    )
}
