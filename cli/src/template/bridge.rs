//! The bridge hosted: `choreo bridge` as an ECS Fargate service, present
//! when `BridgeImageUri` names an image (and EventSource is SQS: with
//! AmazonMQ the event source mappings read the broker themselves).
//!
//! It consumes the functions' RabbitMQ queues and hands each event on, to
//! the function's SQS queue (`BridgeInvoke` sqs) or by invoking the function
//! (lambda). Its task role may do exactly that; the AMQP URL reaches it as
//! the `AMQP_URL` variable, which ECS reads from the secret (`Secrets` of the
//! task definition, with the execution role) before the container starts.

use super::operations::{alarm_with, log_group};
use super::yaml::*;
use super::*;
use crate::bridge::sqs_url_env_var;

/// Logical ids of the bridge's resources.
pub const BRIDGE_LOG_GROUP: &str = "BridgeLogGroup";
pub const BRIDGE_CLUSTER: &str = "BridgeCluster";
pub const BRIDGE_TASK_ROLE: &str = "BridgeTaskRole";
pub const BRIDGE_EXECUTION_ROLE: &str = "BridgeExecutionRole";
pub const BRIDGE_TASK_DEFINITION: &str = "BridgeTaskDefinition";
pub const BRIDGE_SERVICE: &str = "BridgeService";
pub const BRIDGE_DOWN_ALARM: &str = "BridgeDownAlarm";
/// Name of the bridge's container in its task definition.
pub const BRIDGE_CONTAINER: &str = "bridge";

/// Fargate size of the bridge task: it only moves messages (CPU units, MiB).
const CPU: &str = "256";
const MEMORY_MB: &str = "512";

/// Every resource of the bridge, each under `RunBridge`.
pub(super) fn bridge_resources(choreography: &[FunctionSpec]) -> Vec<(String, Node)> {
    let consumers: Vec<&FunctionSpec> = choreography.iter().filter(|spec| !spec.consumes.is_empty()).collect();
    vec![
        (BRIDGE_LOG_GROUP.to_owned(), log_group(sub("/ecs/${NamePrefix}bridge"), Some(RUN_BRIDGE))),
        (
            BRIDGE_CLUSTER.to_owned(),
            conditioned("AWS::ECS::Cluster", map([("ClusterName", sub("${NamePrefix}bridge"))])),
        ),
        (BRIDGE_TASK_ROLE.to_owned(), task_role(&consumers)),
        (BRIDGE_EXECUTION_ROLE.to_owned(), execution_role()),
        (BRIDGE_TASK_DEFINITION.to_owned(), task_definition(&consumers)),
        (BRIDGE_SERVICE.to_owned(), service()),
        (BRIDGE_DOWN_ALARM.to_owned(), down_alarm()),
    ]
}

fn conditioned(kind: &str, properties: Node) -> Node {
    map([("Type", s(kind)), ("Condition", s(RUN_BRIDGE)), ("Properties", properties)])
}

/// A role ECS tasks assume, with these inline policies and managed policies.
fn ecs_role(policies: Vec<Node>, managed: Vec<Node>) -> Node {
    let trust = map([(
        "Statement",
        list([map([
            ("Effect", s("Allow")),
            ("Principal", map([("Service", s("ecs-tasks.amazonaws.com"))])),
            ("Action", s("sts:AssumeRole")),
        ])]),
    )]);
    let mut properties = vec![("AssumeRolePolicyDocument", trust)];
    if !managed.is_empty() {
        properties.push(("ManagedPolicyArns", list(managed)));
    }
    properties.push(("Policies", list(policies)));
    conditioned("AWS::IAM::Role", map(properties))
}

fn policy(name: &str, statements: Vec<Node>) -> Node {
    map([
        ("PolicyName", s(name)),
        ("PolicyDocument", map([("Version", s("2012-10-17")), ("Statement", list(statements))])),
    ])
}

/// What the bridge itself does on AWS: send to the work queues, or invoke
/// the consuming functions, as `BridgeInvoke` says. Nothing else (the broker
/// is reached with the AMQP URL's own credentials).
fn task_role(consumers: &[&FunctionSpec]) -> Node {
    use super::functions::statement;
    let queues = list(consumers.iter().map(|spec| get_att(&queue_id(spec), "Arn")));
    let functions = list(consumers.iter().map(|spec| get_att(&function_id(spec), "Arn")));
    ecs_role(
        vec![
            when(
                BRIDGE_INVOKES_SQS,
                policy("send-to-work-queues", vec![statement("SendToWorkQueues", &["sqs:SendMessage"], queues)]),
            ),
            when(
                BRIDGE_INVOKES_LAMBDA,
                policy("invoke-consumers", vec![statement("InvokeConsumers", &["lambda:InvokeFunction"], functions)]),
            ),
        ],
        Vec::new(),
    )
}

/// What ECS does to start the task: pull the image, write the logs (the
/// managed policy), and read the AMQP URL secret into `AMQP_URL`.
fn execution_role() -> Node {
    use super::functions::statement;
    ecs_role(
        vec![policy(
            "read-amqp-url",
            vec![statement("ReadAmqpUrl", &["secretsmanager:GetSecretValue"], reference(AMQP_SECRET))],
        )],
        vec![sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")],
    )
}

/// The bridge's environment: its prefix is the functions' (`${NamePrefix}…`,
/// as the template names them), and each work queue's URL.
fn environment(consumers: &[&FunctionSpec]) -> Vec<(String, Node)> {
    let mut variables = vec![
        ("RUST_LOG".to_owned(), reference("LogFilter")),
        ("AWS_REGION".to_owned(), reference("AWS::Region")),
        ("CHOREO_FUNCTION_PREFIX".to_owned(), reference("NamePrefix")),
    ];
    for spec in consumers {
        variables.push((sqs_url_env_var(spec.function), reference(&queue_id(spec))));
    }
    variables
}

fn task_definition(consumers: &[&FunctionSpec]) -> Node {
    let environment =
        environment(consumers).into_iter().map(|(name, value)| map([("Name", s(name)), ("Value", value)]));
    let container = map([
        ("Name", s(BRIDGE_CONTAINER)),
        ("Image", reference(BRIDGE_IMAGE)),
        ("Essential", Node::Bool(true)),
        // The image's entry point is `choreo` (infra/Dockerfile).
        ("Command", list([s("bridge"), s("--invoke"), reference("BridgeInvoke")])),
        ("Environment", list(environment)),
        ("Secrets", list([map([("Name", s("AMQP_URL")), ("ValueFrom", reference(AMQP_SECRET))])])),
        (
            "LogConfiguration",
            map([
                ("LogDriver", s("awslogs")),
                (
                    "Options",
                    map([
                        ("awslogs-group", reference(BRIDGE_LOG_GROUP)),
                        ("awslogs-region", reference("AWS::Region")),
                        ("awslogs-stream-prefix", s(BRIDGE_CONTAINER)),
                    ]),
                ),
            ]),
        ),
    ]);
    conditioned(
        "AWS::ECS::TaskDefinition",
        map([
            ("Family", sub("${NamePrefix}bridge")),
            ("RequiresCompatibilities", list([s("FARGATE")])),
            ("NetworkMode", s("awsvpc")),
            ("Cpu", s(CPU)),
            ("Memory", s(MEMORY_MB)),
            (
                "RuntimePlatform",
                map([("CpuArchitecture", reference("BridgeCpuArchitecture")), ("OperatingSystemFamily", s("LINUX"))]),
            ),
            ("ExecutionRoleArn", get_att(BRIDGE_EXECUTION_ROLE, "Arn")),
            ("TaskRoleArn", get_att(BRIDGE_TASK_ROLE, "Arn")),
            ("ContainerDefinitions", list([container])),
        ]),
    )
}

fn service() -> Node {
    conditioned(
        "AWS::ECS::Service",
        map([
            ("ServiceName", sub("${NamePrefix}bridge")),
            ("Cluster", reference(BRIDGE_CLUSTER)),
            ("LaunchType", s("FARGATE")),
            // One is enough: RabbitMQ spreads the queues' messages over every
            // consumer, so a second one during a deployment is harmless.
            ("DesiredCount", int(1)),
            ("TaskDefinition", reference(BRIDGE_TASK_DEFINITION)),
            (
                "DeploymentConfiguration",
                map([
                    ("MinimumHealthyPercent", int(100)),
                    ("MaximumPercent", int(200)),
                    ("DeploymentCircuitBreaker", map([("Enable", Node::Bool(true)), ("Rollback", Node::Bool(true))])),
                ]),
            ),
            (
                "NetworkConfiguration",
                map([(
                    "AwsvpcConfiguration",
                    map([
                        ("Subnets", split_list(SUBNET_IDS)),
                        ("SecurityGroups", split_list(SECURITY_GROUP_IDS)),
                        ("AssignPublicIp", reference("BridgeAssignPublicIp")),
                    ]),
                )]),
            ),
        ]),
    )
}

/// No bridge task running: ECS reports a running service's CPU every
/// minute, so a period without any sample means nothing runs.
fn down_alarm() -> Node {
    alarm_with(
        Some(RUN_BRIDGE),
        "bridge-down",
        "No choreo bridge task is running: events stay on the broker until one is",
        ("AWS/ECS", "CPUUtilization", "SampleCount"),
        vec![("ClusterName", reference(BRIDGE_CLUSTER)), ("ServiceName", get_att(BRIDGE_SERVICE, "Name"))],
        ("LessThanThreshold", "breaching"),
    )
}
