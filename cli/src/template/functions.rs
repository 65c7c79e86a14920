//! Each function's resource: runtime, environment, and least-privilege IAM
//! derived from the tables its service owns and the queues it uses.

use super::kafka::{bus_environment, bus_policies, mapping_policies};
use super::yaml::*;
use super::*;

pub(super) fn function(spec: &FunctionSpec) -> Node {
    let mut properties = Vec::new();
    if !spec.emits.is_empty() {
        // The function publishes what it emits, over AMQP or to Kafka; the
        // credentials stay in Secrets Manager and are read at first use.
        properties.push(("Environment", map([("Variables", map(bus_environment()))])));
    }
    let events = (!spec.routes.is_empty()).then(|| {
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
        Node::Map(events.collect())
    });
    serverless_function(spec.name, describe(spec), properties, policies(spec), events)
}

/// An `AWS::Serverless::Function` built by cargo lambda from the binary
/// `name`, writing to its own log group, in the VPC when one is given.
pub(super) fn serverless_function(
    name: &str,
    description: String,
    extra: Vec<(&str, Node)>,
    policies: Node,
    events: Option<Node>,
) -> Node {
    let vpc = map([("SubnetIds", split_list(SUBNET_IDS)), ("SecurityGroupIds", split_list(SECURITY_GROUP_IDS))]);
    let mut properties = vec![
        ("FunctionName", sub(format!("${{NamePrefix}}{name}"))),
        ("Description", s(description)),
        ("CodeUri", s(".")),
        // Merged with Globals' LogFormat; the group exists before the function and keeps LogRetentionDays.
        ("LoggingConfig", map([("LogGroup", reference(&log_group_id(name)))])),
        ("VpcConfig", when(IN_VPC, vpc)),
    ];
    properties.extend(extra);
    properties.push(("Policies", policies));
    if let Some(events) = events {
        properties.push(("Events", events));
    }
    map([
        ("Type", s("AWS::Serverless::Function")),
        (
            "Metadata",
            map([
                ("BuildMethod", s("rust-cargolambda")),
                // The workspace root is the CodeUri: cargo lambda builds this binary of it.
                ("BuildProperties", map([("Binary", s(name))])),
            ]),
        ),
        ("Properties", map(properties)),
    ])
}

/// `reserve-inventory (inventory): consumes order.created, stock.replenished; emits …`
pub(super) fn describe(spec: &FunctionSpec) -> String {
    let join = |items: Vec<String>| items.join(", ");
    let mut parts = Vec::new();
    if !spec.routes.is_empty() {
        parts
            .push(format!("serves {}", join(spec.routes.iter().map(|r| format!("{} {}", r.method, r.path)).collect())));
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

/// Least privilege: DynamoDB on the tables of [`table_access`], the bus's
/// secret for functions that publish, and, under its condition, what the
/// event source needs (what SAM's `SQS` / `MQ` events would have granted,
/// restricted to the function's own queue, plus the broker network access
/// Amazon MQ mappings need; the Kafka mappings' in `kafka.rs`). They are inline in the role SAM makes, so they
/// exist before the function and its mappings.
pub(super) fn policies(spec: &FunctionSpec) -> Node {
    let table_arns = |access: Access| -> Vec<Node> {
        table_access(spec)
            .into_iter()
            .filter(|(_, granted)| *granted == access)
            .map(|(table, _)| get_att(&table_id(table), "Arn"))
            .collect()
    };
    let mut statements = Vec::new();
    let writes = table_arns(Access::ReadWrite);
    if !writes.is_empty() {
        statements.push(statement("WriteOwnServiceTables", WRITE_ACTIONS, list(writes)));
    }
    let reads = table_arns(Access::Read);
    if !reads.is_empty() {
        statements.push(statement("ReadQueriedTables", READ_ACTIONS, list(reads)));
    }
    let mut policies = common_policies(statements);
    if !spec.emits.is_empty() {
        policies.extend(bus_policies());
    }
    if !spec.consumes.is_empty() {
        let sqs = statement(
            "ConsumeOwnQueue",
            &["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"],
            get_att(&queue_id(spec), "Arn"),
        );
        let mq = [
            statement("DescribeBroker", &["mq:DescribeBroker"], reference("MqBrokerArn")),
            statement("ReadBrokerCredentials", &["secretsmanager:GetSecretValue"], reference("MqCredentialsSecretArn")),
            statement("ReachBroker", MAPPING_NETWORK_ACTIONS, s("*")),
        ];
        policies.push(when(USE_SQS, map([("Statement", list([sqs]))])));
        policies.push(when(USE_AMAZON_MQ, map([("Statement", list(mq))])));
        policies.extend(mapping_policies());
    }
    list(policies)
}

/// What Lambda does with a function's role to run it in a VPC (the actions
/// of the AWSLambdaVPCAccessExecutionRole managed policy). EC2 authorizes
/// them on `*` only. SAM also attaches that managed policy to every function
/// with a `VpcConfig`, and it cannot tell that a conditional one may be
/// absent: the roles hold these actions even without a VPC. Stated here all
/// the same, so that the template says what the VPC needs whatever SAM does.
pub const VPC_ACTIONS: &[&str] = &[
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
];

/// What an Amazon MQ or MSK event source mapping (and a self-managed Kafka
/// one in the VPC) does with the function's role to reach the broker's
/// network, whether or not the function is in a VPC.
pub const MAPPING_NETWORK_ACTIONS: &[&str] = &[
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
];

/// The policies of any function: its own `statements`, and under `InVpc`
/// the network interfaces Lambda needs in the VPC.
pub(super) fn common_policies(statements: Vec<Node>) -> Vec<Node> {
    let vpc = statement("VpcNetworkInterfaces", VPC_ACTIONS, s("*"));
    vec![map([("Statement", list(statements))]), when(IN_VPC, map([("Statement", list([vpc]))]))]
}

pub(super) fn statement(sid: &str, actions: &[&str], resource: Node) -> Node {
    map([
        ("Sid", s(sid)),
        ("Effect", s("Allow")),
        ("Action", list(actions.iter().map(|action| s(*action)))),
        ("Resource", resource),
    ])
}
