//! `template.yaml` is the generator's output, and it says what the
//! choreography table says: a function resource per row, the SQS queues and
//! Amazon MQ mappings of each consumer, the HTTP routes of `FunctionSpec`
//! and `openapi.yaml`, and no wildcard permission.
//!
//! Each check answers the problems it finds, so the tests below also feed
//! it broken templates and make sure it notices.
//!
//! After changing the choreography or the generator, refresh the file with
//! `cargo run -p choreo -- template > template.yaml` (or run this test with
//! `UPDATE_TEMPLATE=1`).

mod checks_can_fail;
mod kafka;

use std::collections::{BTreeMap, BTreeSet};

use choreo::bridge::sqs_url_env_var;
use choreo::template::{
    BRIDGE_CONTAINER, BRIDGE_EXECUTION_ROLE, BRIDGE_INVOKES_LAMBDA, BRIDGE_INVOKES_SQS, BRIDGE_SERVICE,
    BRIDGE_TASK_DEFINITION, BRIDGE_TASK_ROLE, HAS_ALARM_TOPIC, HTTP_API, IN_VPC, KafkaSource, MAPPING_NETWORK_ACTIONS,
    QUERIED_TABLES, READ_ACTIONS, RUN_BRIDGE, SAGA_DEADLINE, SCHEDULED, TABLE_DELETION_POLICY, TABLES, Target,
    USE_AMAZON_MQ, USE_MSK, USE_SELF_MANAGED_KAFKA, USE_SQS, VPC_ACTIONS, dead_letter_queue_id, function_id,
    function_id_of, is_query, kafka_topic, queue_id, sam_template, sam_template_for, table_id,
};
use serde_json::{Value, json};
use shared::bus::amqp::dead_letter_queue;
use shared::contract::choreography::{CHOREOGRAPHY, Function, FunctionSpec};
use shared::store::dynamodb::{EXPIRES_AT, PROCESSED};

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
const OPENAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn parse(yaml: &str) -> Value {
    serde_norway::from_str(yaml).unwrap_or_else(|error| panic!("not valid YAML: {error}"))
}

/// The committed template; with `UPDATE_TEMPLATE` set, first replaced by the generator's output.
fn committed_text() -> String {
    if std::env::var_os("UPDATE_TEMPLATE").is_some() {
        // Each test may get here at once: write aside, then rename over.
        let aside = format!("{TEMPLATE}.{:?}.tmp", std::thread::current().id());
        std::fs::write(&aside, sam_template()).expect("write template.yaml");
        std::fs::rename(&aside, TEMPLATE).expect("replace template.yaml");
    }
    read(TEMPLATE)
}

fn committed() -> Value {
    parse(&committed_text())
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().expect("the template has Resources")
}

fn of_type<'a>(template: &'a Value, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    resources(template).iter().filter(move |(_, resource)| resource["Type"] == kind)
}

fn reference(name: &str) -> Value {
    json!({ "Ref": name })
}

fn get_att(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

/// Strings of a value that is one string or a list of them.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

// ------------------------------------------------------------------ checks

/// Every function of the table has its resource, built by cargo lambda, and no other function exists.
fn check_functions(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    let globals = &template["Globals"]["Function"];
    for (key, expected) in [("Runtime", json!("provided.al2023")), ("Handler", json!("bootstrap"))] {
        if globals[key] != expected {
            problems.push(format!("Globals.Function.{key} is {} instead of {expected}", globals[key]));
        }
    }
    if globals["Architectures"] != json!(["arm64"]) {
        problems.push("Globals.Function.Architectures is not [arm64]".to_owned());
    }
    // A scheduled row runs inside the scheduled function hosting it.
    for spec in choreography.iter().filter(|spec| spec.is_scheduled()) {
        if !SCHEDULED.iter().any(|scheduled| scheduled.hosts.contains(&spec.function)) {
            problems.push(format!("{} is scheduled but no scheduled function hosts it", spec.name));
        }
    }
    let names = choreography
        .iter()
        .filter(|spec| !spec.is_scheduled())
        .map(|spec| spec.name)
        .chain(SCHEDULED.iter().map(|function| function.name));
    for name in names {
        let id = function_id_of(name);
        let Some(resource) = resources(template).get(&id) else {
            problems.push(format!("{name} has no resource {id}"));
            continue;
        };
        if resource["Type"] != "AWS::Serverless::Function" {
            problems.push(format!("{id} is a {} instead of an AWS::Serverless::Function", resource["Type"]));
        }
        if resource["Metadata"]["BuildMethod"] != "rust-cargolambda" {
            problems.push(format!("{id} is not built with rust-cargolambda"));
        }
        if resource["Metadata"]["BuildProperties"]["Binary"] != name {
            problems.push(format!("{id} does not build the binary {name}"));
        }
        if resource["Properties"]["CodeUri"] != "." {
            problems.push(format!("{id}: CodeUri is not the workspace root"));
        }
        if resource["Properties"]["FunctionName"] != json!({ "Fn::Sub": format!("${{NamePrefix}}{name}") }) {
            problems.push(format!("{id} is not named ${{NamePrefix}}{name}"));
        }
        // cargo lambda builds the binary of the crate functions/<name>.
        let manifest = std::fs::read_to_string(format!("{WORKSPACE}/functions/{name}/Cargo.toml")).unwrap_or_default();
        if !manifest.contains(&format!("name = \"{name}\"")) {
            problems.push(format!("{id}: no crate functions/{name} builds the binary {name}"));
        }
    }
    let declared: BTreeSet<String> = choreography
        .iter()
        .filter(|spec| !spec.is_scheduled())
        .map(function_id)
        .chain(SCHEDULED.iter().map(|function| function_id_of(function.name)))
        .collect();
    for (id, _) in of_type(template, "AWS::Serverless::Function") {
        if !declared.contains(id) {
            problems.push(format!("{id} is neither a function of the choreography nor a scheduled one"));
        }
    }
    problems
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Sqs,
    AmazonMq,
    Kafka(KafkaSource),
}

const SOURCES: [Source; 4] =
    [Source::Sqs, Source::AmazonMq, Source::Kafka(KafkaSource::Msk), Source::Kafka(KafkaSource::SelfManaged)];

/// Each consumer has an SQS mapping (queue + DLQ, partial batch failures),
/// an Amazon MQ mapping on `Function::queue()`, and a Kafka mapping of each
/// source per event type it consumes, each under its condition; nobody else
/// has a mapping.
fn check_event_sources(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    let by_id = |id: &str| choreography.iter().find(|spec| function_id(spec) == id);
    // What each (function, source) reads: its queue, or a topic per mapping.
    let mut found: BTreeMap<(&str, Source), Vec<String>> = BTreeMap::new();
    for (id, mapping) in of_type(template, "AWS::Lambda::EventSourceMapping") {
        let properties = &mapping["Properties"];
        let Some(spec) = properties["FunctionName"]["Ref"].as_str().and_then(by_id) else {
            problems
                .push(format!("{id} invokes {}, which is no function of the choreography", properties["FunctionName"]));
            continue;
        };
        let source = match mapping["Condition"].as_str() {
            Some(USE_SQS) => Source::Sqs,
            Some(USE_AMAZON_MQ) => Source::AmazonMq,
            Some(USE_MSK) => Source::Kafka(KafkaSource::Msk),
            Some(USE_SELF_MANAGED_KAFKA) => Source::Kafka(KafkaSource::SelfManaged),
            other => {
                problems.push(format!("{id} has condition {other:?}: it would exist in several EventSource modes"));
                continue;
            }
        };
        let reads = match source {
            Source::Sqs => {
                problems.extend(check_sqs_mapping(template, id, spec, properties));
                queue_id(spec)
            }
            Source::AmazonMq => {
                if properties["Queues"] != json!([spec.function.queue()]) {
                    problems.push(format!(
                        "{id} reads {} instead of [{}]",
                        properties["Queues"],
                        spec.function.queue()
                    ));
                }
                if properties["EventSourceArn"] != reference("MqBrokerArn") {
                    problems.push(format!("{id} is not mapped to the MqBrokerArn broker"));
                }
                let mut grants = vec![("mq:DescribeBroker", reference("MqBrokerArn"))];
                grants.extend(MAPPING_NETWORK_ACTIONS.iter().map(|action| (*action, json!("*"))));
                problems.extend(check_grants(template, &function_id(spec), USE_AMAZON_MQ, &grants));
                let access: BTreeSet<_> = access_types(properties).into_iter().collect();
                if access != BTreeSet::from(["BASIC_AUTH".to_owned(), "VIRTUAL_HOST".to_owned()]) {
                    problems.push(format!("{id} has source access {access:?} instead of BASIC_AUTH and VIRTUAL_HOST"));
                }
                spec.function.queue()
            }
            Source::Kafka(kafka_source) => {
                let (mapping_problems, topic) = kafka::check_mapping(template, id, spec, properties, kafka_source);
                problems.extend(mapping_problems);
                topic
            }
        };
        found.entry((spec.name, source)).or_default().push(reads);
    }
    for spec in choreography {
        for source in SOURCES {
            let mut reads = found.get(&(spec.name, source)).cloned().unwrap_or_default();
            match (source, spec.consumes.is_empty(), reads.len()) {
                (Source::Kafka(_), _, _) => {
                    reads.sort();
                    let mut expected: Vec<String> = spec.consumes.iter().map(|event| kafka_topic(*event)).collect();
                    expected.sort();
                    if reads != expected {
                        problems.push(format!(
                            "{} has {source:?} mappings of {reads:?} instead of {expected:?}",
                            spec.name
                        ));
                    }
                }
                (_, false, 0) => problems.push(format!("{} consumes events but has no {source:?} mapping", spec.name)),
                (_, true, 1..) => problems.push(format!("{} consumes nothing but has a {source:?} mapping", spec.name)),
                (_, false, 2..) => problems.push(format!("{} has more than one {source:?} mapping", spec.name)),
                _ => {}
            }
        }
        // SAM events cannot carry a condition: an SQS or MQ event would exist in every mode.
        let events = &resources(template).get(&function_id(spec)).map(|f| &f["Properties"]["Events"]);
        for event in events.and_then(Value::as_object).into_iter().flat_map(|events| events.values()) {
            if ["SQS", "MQ", "MSK", "SelfManagedKafka"].contains(&event["Type"].as_str().unwrap_or_default()) {
                problems.push(format!("{} has an unconditional {} event", spec.name, event["Type"]));
            }
        }
    }
    problems
}

/// The `Type` of each of a mapping's `SourceAccessConfigurations` (a `Fn::If` gives its first branch's).
fn access_types(properties: &Value) -> Vec<String> {
    properties["SourceAccessConfigurations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item.get("Fn::If").map_or(item, |branches| &branches[1]))
        .map(|item| match &item["Type"] {
            Value::String(kind) => kind.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn check_sqs_mapping(template: &Value, id: &str, spec: &FunctionSpec, properties: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let (queue, dlq) = (queue_id(spec), dead_letter_queue_id(spec));
    if properties["EventSourceArn"] != get_att(&queue, "Arn") {
        problems.push(format!("{id} does not read {queue}"));
    }
    if !strings(&properties["FunctionResponseTypes"]).contains(&"ReportBatchItemFailures".to_owned()) {
        problems.push(format!("{id} does not report batch item failures"));
    }
    if properties["ScalingConfig"]["MaximumConcurrency"] != reference("MaximumConcurrency") {
        problems.push(format!("{id} has no MaximumConcurrency"));
    }
    let grants = [("sqs:ReceiveMessage", get_att(&queue, "Arn")), ("sqs:DeleteMessage", get_att(&queue, "Arn"))];
    problems.extend(check_grants(template, &function_id(spec), USE_SQS, &grants));
    let resource = |logical: &str| resources(template).get(logical).cloned().unwrap_or(Value::Null);
    let queue_resource = resource(&queue);
    if queue_resource["Type"] != "AWS::SQS::Queue" || queue_resource["Condition"] != USE_SQS {
        problems.push(format!("{queue} is not an SQS queue under the {USE_SQS} condition"));
    }
    let redrive = &queue_resource["Properties"]["RedrivePolicy"];
    if redrive["deadLetterTargetArn"] != get_att(&dlq, "Arn") || redrive["maxReceiveCount"] != 5 {
        problems.push(format!("{queue} does not dead-letter to {dlq} after 5 receives: {redrive}"));
    }
    let dlq_resource = resource(&dlq);
    if dlq_resource["Type"] != "AWS::SQS::Queue" || dlq_resource["Condition"] != USE_SQS {
        problems.push(format!("{dlq} is not an SQS queue under the {USE_SQS} condition"));
    }
    problems
}

/// The function's role grants each `(action, resource)` under `condition`
/// (a policy `Fn::If: [condition, policy, AWS::NoValue]`).
fn check_grants(template: &Value, id: &str, condition: &str, grants: &[(&str, Value)]) -> Vec<String> {
    let policies = resources(template).get(id).map(|function| function["Properties"]["Policies"].clone());
    let conditional: Vec<Value> = policies
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|policy| policy["Fn::If"][0] == condition && policy["Fn::If"][2] == reference("AWS::NoValue"))
        .map(|policy| policy["Fn::If"][1].clone())
        .collect();
    let mut problems = Vec::new();
    for (action, resource) in grants {
        let granted = conditional.iter().flat_map(statements).any(|statement| {
            statement["Effect"] == "Allow"
                && strings(&statement["Action"]).iter().any(|a| a == action)
                && statement["Resource"] == *resource
        });
        if !granted {
            problems.push(format!("{id} is not granted {action} on {resource} under {condition}"));
        }
    }
    problems
}

/// `(METHOD, path)` of every operation in an OpenAPI `paths` object.
fn operations(paths: &Value) -> BTreeSet<(String, String)> {
    const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    paths
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter(|(method, _)| METHODS.contains(&method.as_str()))
                .map(move |(method, _)| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

/// The API's routes are those of `FunctionSpec::routes` and of openapi.yaml,
/// each on its function and each with an authorizer.
fn check_routes(template: &Value, choreography: &[FunctionSpec], openapi: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let declared: BTreeSet<(String, String)> = choreography
        .iter()
        .flat_map(|spec| spec.routes)
        .map(|route| (route.method.to_owned(), route.path.to_owned()))
        .collect();
    let documented = operations(&openapi["paths"]);
    if declared != documented {
        problems.push(format!("the choreography routes {declared:?} differ from openapi.yaml's {documented:?}"));
    }
    let api = resources(template).get(HTTP_API).cloned().unwrap_or(Value::Null);
    if api["Type"] != "AWS::Serverless::HttpApi" {
        problems.push(format!("{HTTP_API} is not an AWS::Serverless::HttpApi"));
    }
    let settings = &api["Properties"]["DefaultRouteSettings"];
    if settings["ThrottlingBurstLimit"].is_null() || settings["ThrottlingRateLimit"].is_null() {
        problems.push(format!("{HTTP_API} has no throttling"));
    }
    let paths = &api["Properties"]["DefinitionBody"]["paths"];
    let served = operations(paths);
    if served != declared {
        problems.push(format!("the API serves {served:?} instead of {declared:?}"));
    }
    for (method, path) in &served {
        if paths[path][method.to_ascii_lowercase()]["security"].is_null() {
            problems.push(format!("{method} {path} has no security: the API would be open"));
        }
    }
    let mut bound = BTreeSet::new();
    for (id, function) in of_type(template, "AWS::Serverless::Function") {
        let events = function["Properties"]["Events"].as_object().into_iter().flatten();
        for (name, event) in events.filter(|(_, event)| event["Type"] == "HttpApi") {
            let properties = &event["Properties"];
            let route = (strings(&properties["Method"]).concat(), strings(&properties["Path"]).concat());
            let owner = choreography
                .iter()
                .find(|spec| spec.routes.iter().any(|r| (r.method.to_owned(), r.path.to_owned()) == route));
            if owner.map(function_id).as_deref() != Some(id.as_str()) {
                problems.push(format!("{id}.{name} serves {route:?}, which the choreography gives to {owner:?}"));
            }
            if properties["ApiId"] != reference(HTTP_API) {
                problems.push(format!("{id}.{name} is not on {HTTP_API}"));
            }
            bound.insert(route);
        }
    }
    if bound != declared {
        problems.push(format!("the functions' HttpApi events bind {bound:?} instead of {declared:?}"));
    }
    problems
}

/// Every IAM statement in the template, wherever it is (policies, conditions).
fn statements(value: &Value) -> Vec<&Value> {
    match value {
        Value::Object(object) if object.contains_key("Effect") => vec![value],
        Value::Object(object) => object.values().flat_map(statements).collect(),
        Value::Array(items) => items.iter().flat_map(statements).collect(),
        _ => Vec::new(),
    }
}

/// No statement grants every action (or every action of a service) on every resource.
fn check_no_wildcards(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for statement in statements(template) {
        let resources = strings(&statement["Resource"]);
        let on_everything = resources.iter().any(|resource| resource == "*") || !statement["NotResource"].is_null();
        let actions = strings(&statement["Action"]);
        let every_action =
            actions.iter().any(|action| action == "*" || action.ends_with(":*")) || !statement["NotAction"].is_null();
        if on_everything && every_action {
            problems.push(format!("wildcard permission: {statement}"));
        }
    }
    problems
}

/// DynamoDB permissions reach only the tables of the function's service (and
/// the shared processed-events table); the query function only reads.
fn check_table_permissions(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    for spec in choreography {
        let Some(function) = resources(template).get(&function_id(spec)) else { continue };
        for statement in statements(&function["Properties"]["Policies"]) {
            let actions = strings(&statement["Action"]);
            if !actions.iter().any(|action| action.starts_with("dynamodb:")) {
                continue;
            }
            if is_query(spec) && actions.iter().any(|action| !READ_ACTIONS.contains(&action.as_str())) {
                problems.push(format!("{} only queries but may {actions:?}", spec.name));
            }
            let targets = match &statement["Resource"] {
                Value::Array(items) => items.clone(),
                single => vec![single.clone()],
            };
            for target in targets {
                let table = TABLES.iter().find(|table| target == get_att(&table_id(table), "Arn"));
                let allowed = table.is_some_and(|table| {
                    if is_query(spec) {
                        QUERIED_TABLES.contains(table)
                    } else {
                        table.owner.is_none_or(|o| o == spec.service)
                    }
                });
                if !allowed {
                    problems.push(format!(
                        "{} ({:?}) may use {target}, which its service does not own",
                        spec.name, spec.service
                    ));
                }
            }
        }
    }
    problems
}

/// The condition a resource exists under (`Null`: always).
fn condition_of<'a>(template: &'a Value, id: &str) -> &'a Value {
    resources(template).get(id).map_or(&Value::Null, |resource| &resource["Condition"])
}

/// Ids of the alarms on `namespace`/`metric` with the dimension `name` = `value`.
fn alarms_on(template: &Value, (namespace, metric): (&str, &str), (name, value): (&str, &Value)) -> Vec<String> {
    of_type(template, "AWS::CloudWatch::Alarm")
        .filter(|(_, alarm)| {
            let properties = &alarm["Properties"];
            properties["Namespace"] == namespace
                && properties["MetricName"] == metric
                && properties["Dimensions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|dimension| dimension["Name"] == name && dimension["Value"] == *value)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// `what` (the resource `id`) has exactly one such alarm, under its own condition.
fn check_alarm(template: &Value, what: &str, id: &str, alarms: Vec<String>) -> Vec<String> {
    match alarms.as_slice() {
        [] => vec![format!("{what} has no alarm")],
        [alarm] if condition_of(template, alarm) != condition_of(template, id) => vec![format!(
            "the alarm {alarm} of {what} has condition {} but {id} has {}",
            condition_of(template, alarm),
            condition_of(template, id)
        )],
        [_] => Vec::new(),
        more => vec![format!("{what} has several alarms: {more:?}")],
    }
}

/// Every function writes to a log group of its own; every log group keeps
/// `LogRetentionDays`; every function has an errors alarm, every queue a
/// retention, every dead-letter queue (SQS, and the dead queues on the
/// broker) an alarm; every alarm notifies the topic when one is given.
fn check_operations(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, function) in of_type(template, "AWS::Serverless::Function") {
        let group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"].as_str().unwrap_or_default();
        if resources(template).get(group).is_none_or(|group| group["Type"] != "AWS::Logs::LogGroup") {
            problems.push(format!("{id} has no log group of its own"));
        } else if condition_of(template, group) != condition_of(template, id) {
            problems.push(format!("the log group {group} of {id} does not exist whenever {id} does"));
        }
        let alarms = alarms_on(template, ("AWS/Lambda", "Errors"), ("FunctionName", &reference(id)));
        problems.extend(check_alarm(template, &format!("{id}'s Errors"), id, alarms));
    }
    for (id, group) in of_type(template, "AWS::Logs::LogGroup") {
        if group["Properties"]["RetentionInDays"] != reference("LogRetentionDays") {
            problems.push(format!("the log group {id} does not keep its logs LogRetentionDays days"));
        }
    }
    let dead_letter_queues: BTreeSet<String> = of_type(template, "AWS::SQS::Queue")
        .filter_map(|(_, queue)| queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0].as_str())
        .map(str::to_owned)
        .collect();
    for (id, queue) in of_type(template, "AWS::SQS::Queue") {
        if !queue["Properties"]["MessageRetentionPeriod"].is_i64() {
            problems.push(format!("the queue {id} has no MessageRetentionPeriod"));
        }
        if dead_letter_queues.contains(id) {
            let metric = ("AWS/SQS", "ApproximateNumberOfMessagesVisible");
            let alarms = alarms_on(template, metric, ("QueueName", &get_att(id, "QueueName")));
            problems.extend(check_alarm(template, &format!("the dead-letter queue {id}"), id, alarms));
        }
    }
    for spec in choreography.iter().filter(|spec| !spec.consumes.is_empty()) {
        let queue = dead_letter_queue(spec.function);
        let alarms = alarms_on(template, ("AWS/AmazonMQ", "MessageCount"), ("Queue", &json!(queue)));
        let conditions: Vec<&Value> = alarms.iter().map(|alarm| condition_of(template, alarm)).collect();
        if conditions != [&json!(USE_AMAZON_MQ)] {
            problems.push(format!("{queue} on the broker has no alarm under {USE_AMAZON_MQ} (alarms: {alarms:?})"));
        }
    }
    let notify = json!({ "Fn::If": [HAS_ALARM_TOPIC, [reference("AlarmTopicArn")], reference("AWS::NoValue")] });
    for (id, alarm) in of_type(template, "AWS::CloudWatch::Alarm") {
        if alarm["Properties"]["AlarmActions"] != notify {
            problems.push(format!("{id} does not notify AlarmTopicArn"));
        }
    }
    let containers = resources(template)
        .get(BRIDGE_TASK_DEFINITION)
        .and_then(|definition| definition["Properties"]["ContainerDefinitions"].as_array().cloned())
        .unwrap_or_default();
    for container in &containers {
        let group = container["LogConfiguration"]["Options"]["awslogs-group"]["Ref"].as_str().unwrap_or_default();
        if resources(template).get(group).is_none_or(|group| group["Type"] != "AWS::Logs::LogGroup")
            || condition_of(template, group) != condition_of(template, BRIDGE_TASK_DEFINITION)
        {
            problems.push(format!("the bridge container {} has no log group of its own", container["Name"]));
        }
    }
    if containers.is_empty() {
        problems.push(format!("{BRIDGE_TASK_DEFINITION} has no container"));
    }
    problems
}

/// With `SubnetIds`, every function runs in the VPC and its role may manage
/// the network interfaces Lambda needs there.
fn check_network(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let split = |parameter: &str| json!({ "Fn::Split": [",", reference(parameter)] });
    let vpc = json!({ "SubnetIds": split("SubnetIds"), "SecurityGroupIds": split("SecurityGroupIds") });
    let expected = json!({ "Fn::If": [IN_VPC, vpc, reference("AWS::NoValue")] });
    for (id, function) in of_type(template, "AWS::Serverless::Function") {
        if function["Properties"]["VpcConfig"] != expected {
            problems.push(format!("{id} does not run in the VPC under {IN_VPC}"));
        }
        let grants: Vec<(&str, Value)> = VPC_ACTIONS.iter().map(|action| (*action, json!("*"))).collect();
        problems.extend(check_grants(template, id, IN_VPC, &grants));
    }
    let network = &resources(template)
        .get(BRIDGE_SERVICE)
        .map(|service| service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"].clone());
    let network = network.clone().unwrap_or(Value::Null);
    if network["Subnets"] != split("SubnetIds") || network["SecurityGroups"] != split("SecurityGroupIds") {
        problems.push(format!("{BRIDGE_SERVICE} does not run in SubnetIds with SecurityGroupIds"));
    }
    problems
}

/// Statements of an `AWS::IAM::Role`'s inline policies under `condition`
/// (`Fn::If: [condition, policy, AWS::NoValue]`); `None`: the unconditional ones.
fn role_statements(template: &Value, role: &str, condition: Option<&str>) -> Vec<Value> {
    let policies = resources(template).get(role).map(|role| role["Properties"]["Policies"].clone());
    policies
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|policy| match (condition, policy.get("Fn::If")) {
            (Some(condition), Some(branches)) if branches[0] == condition => Some(branches[1].clone()),
            (None, None) => Some(policy.clone()),
            _ => None,
        })
        .flat_map(|policy| statements(&policy).into_iter().cloned().collect::<Vec<_>>())
        .collect()
}

/// `(action, resource)` pairs of statements, each resource list flattened.
fn grants_of(statements: &[Value]) -> BTreeSet<(String, String)> {
    let mut grants = BTreeSet::new();
    for statement in statements {
        let targets = match &statement["Resource"] {
            Value::Array(items) => items.clone(),
            single => vec![single.clone()],
        };
        for action in strings(&statement["Action"]) {
            for target in &targets {
                grants.insert((action.clone(), target.to_string()));
            }
        }
    }
    grants
}

/// The bridge exists only under `RunBridge`; its task role may do exactly
/// what `BridgeInvoke` needs, its execution role read the AMQP URL into
/// `AMQP_URL`; it invokes the functions by the names the template gives them.
fn check_bridge(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, resource) in resources(template).iter().filter(|(id, _)| id.starts_with("Bridge")) {
        if resource["Condition"] != RUN_BRIDGE {
            problems.push(format!("{id} exists without the bridge (condition {})", resource["Condition"]));
        }
    }
    let consumers: Vec<&FunctionSpec> = choreography.iter().filter(|spec| !spec.consumes.is_empty()).collect();
    let expect = |action: &str, targets: Vec<Value>| -> BTreeSet<(String, String)> {
        targets.into_iter().map(|target| (action.to_owned(), target.to_string())).collect()
    };
    let cases = [
        (None, BTreeSet::new()),
        (
            Some(BRIDGE_INVOKES_SQS),
            expect("sqs:SendMessage", consumers.iter().map(|spec| get_att(&queue_id(spec), "Arn")).collect()),
        ),
        (
            Some(BRIDGE_INVOKES_LAMBDA),
            expect("lambda:InvokeFunction", consumers.iter().map(|spec| get_att(&function_id(spec), "Arn")).collect()),
        ),
    ];
    for (condition, expected) in cases {
        let granted = grants_of(&role_statements(template, BRIDGE_TASK_ROLE, condition));
        if granted != expected {
            problems.push(format!("{BRIDGE_TASK_ROLE} under {condition:?} may {granted:?} instead of {expected:?}"));
        }
    }
    let execution = grants_of(&role_statements(template, BRIDGE_EXECUTION_ROLE, None));
    let secret = ("secretsmanager:GetSecretValue".to_owned(), reference("AmqpSecretArn").to_string());
    if execution != BTreeSet::from([secret]) {
        problems.push(format!("{BRIDGE_EXECUTION_ROLE} may {execution:?} instead of reading AmqpSecretArn"));
    }
    let definition = resources(template).get(BRIDGE_TASK_DEFINITION).cloned().unwrap_or(Value::Null);
    let containers = definition["Properties"]["ContainerDefinitions"].as_array().cloned().unwrap_or_default();
    let Some(container) = containers.iter().find(|container| container["Name"] == BRIDGE_CONTAINER) else {
        problems.push(format!("{BRIDGE_TASK_DEFINITION} has no container {BRIDGE_CONTAINER}"));
        return problems;
    };
    if container["Command"] != json!(["bridge", "--invoke", reference("BridgeInvoke")]) {
        problems.push(format!("the bridge container runs {} instead of choreo bridge", container["Command"]));
    }
    let amqp_url = json!([{ "Name": "AMQP_URL", "ValueFrom": reference("AmqpSecretArn") }]);
    if container["Secrets"] != amqp_url {
        problems.push(format!("the bridge container's secrets are {} instead of AMQP_URL", container["Secrets"]));
    }
    let environment: Vec<(String, Value)> = container["Environment"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|variable| (variable["Name"].as_str().unwrap_or_default().to_owned(), variable["Value"].clone()))
        .collect();
    let variable = |name: &str| environment.iter().find(|(n, _)| n == name).map(|(_, value)| value.clone());
    // The bridge invokes `<CHOREO_FUNCTION_PREFIX><name>`, the functions are `${NamePrefix}<name>` (check_functions).
    if variable("CHOREO_FUNCTION_PREFIX") != Some(reference("NamePrefix")) {
        problems.push("the bridge's CHOREO_FUNCTION_PREFIX is not NamePrefix, the functions' prefix".to_owned());
    }
    for spec in &consumers {
        let name = sqs_url_env_var(spec.function);
        if variable(&name) != Some(reference(&queue_id(spec))) {
            problems.push(format!("the bridge's {name} is not the URL of {}", queue_id(spec)));
        }
    }
    problems
}

/// Tables survive the stack but not its failed first creation; the
/// processed records expire on `EXPIRES_AT`, and no other table expires.
fn check_tables(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for table in &TABLES {
        let id = table_id(table);
        let resource = resources(template).get(&id).cloned().unwrap_or(Value::Null);
        if resource["DeletionPolicy"] != TABLE_DELETION_POLICY || resource["UpdateReplacePolicy"] != "Retain" {
            problems.push(format!(
                "{id} is not kept: {} / {}",
                resource["DeletionPolicy"], resource["UpdateReplacePolicy"]
            ));
        }
        let ttl = &resource["Properties"]["TimeToLiveSpecification"];
        let expected =
            if *table == PROCESSED { json!({ "AttributeName": EXPIRES_AT, "Enabled": true }) } else { Value::Null };
        if *ttl != expected {
            problems.push(format!("{id} has the TTL {ttl} instead of {expected}"));
        }
    }
    problems
}

/// Each scheduled function runs on its schedule parameter, reads its
/// environment from parameters, and its role holds exactly its grants.
fn check_scheduled(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for scheduled in SCHEDULED {
        let id = function_id_of(scheduled.name);
        let properties = resources(template).get(&id).map(|f| f["Properties"].clone()).unwrap_or(Value::Null);
        let events: Vec<&Value> =
            properties["Events"].as_object().into_iter().flat_map(|events| events.values()).collect();
        let on_schedule = events.iter().any(|event| {
            event["Type"] == "Schedule" && event["Properties"]["Schedule"] == reference(scheduled.schedule)
        });
        if events.len() != 1 || !on_schedule {
            problems.push(format!("{id} is not invoked by exactly its {} schedule", scheduled.schedule));
        }
        for (variable, parameter) in scheduled.environment {
            if properties["Environment"]["Variables"][variable] != reference(parameter) {
                problems.push(format!("{id}: {variable} is not the {parameter} parameter"));
            }
        }
        let policies = properties["Policies"].as_array().cloned().unwrap_or_default();
        let unconditional: Vec<Value> = policies
            .iter()
            .filter(|policy| policy.get("Fn::If").is_none())
            .flat_map(|policy| statements(policy).into_iter().cloned().collect::<Vec<_>>())
            .collect();
        let expected: BTreeSet<(String, String)> = scheduled
            .grants
            .iter()
            .flat_map(|grant| {
                let target = match &grant.on {
                    Target::Table(table) => get_att(&table_id(table), "Arn"),
                    Target::Index(table) => json!({ "Fn::Sub": format!(
                        "${{{}.Arn}}/index/{}",
                        table_id(table),
                        table.index.map(|index| index.name).unwrap_or_default()
                    ) }),
                    Target::Parameter(parameter) => reference(parameter),
                };
                grant.actions.iter().map(move |action| ((*action).to_owned(), target.to_string()))
            })
            .collect();
        let granted = grants_of(&unconditional);
        if granted != expected {
            problems.push(format!("{id} may {granted:?} instead of {expected:?}"));
        }
    }
    problems
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "template.yaml:\n- {}", problems.join("\n- "));
}

// ------------------------------------------------------------------ the committed file

#[test]
fn the_committed_template_is_the_generator_output() {
    let (committed, generated) = (committed_text(), sam_template());
    assert!(
        committed == generated,
        "template.yaml is not the generator's output: refresh it with \
         `cargo run -p choreo -- template > template.yaml` (or UPDATE_TEMPLATE=1 cargo test -p choreo --test template)"
    );
}

#[test]
fn every_function_of_the_choreography_has_its_resource() {
    assert_no_problems(check_functions(&committed(), CHOREOGRAPHY));
}

#[test]
fn the_event_sources_follow_the_choreography() {
    assert_no_problems(check_event_sources(&committed(), CHOREOGRAPHY));
}

#[test]
fn the_routes_are_those_of_the_choreography_and_openapi() {
    assert_no_problems(check_routes(&committed(), CHOREOGRAPHY, &parse(&read(OPENAPI))));
}

#[test]
fn openapi_lists_every_cancel_reason() {
    let openapi = parse(&read(OPENAPI));
    let listed = strings(&openapi["components"]["schemas"]["CancelReason"]["enum"]);
    let reasons: Vec<String> =
        shared::contract::domain::CancelReason::ALL.iter().map(|reason| reason.as_str().to_owned()).collect();
    assert_eq!(listed, reasons, "openapi.yaml's CancelReason enum is not the domain's");
}

#[test]
fn no_statement_grants_everything() {
    assert_no_problems(check_no_wildcards(&committed()));
}

#[test]
fn each_function_reaches_only_its_services_tables() {
    let template = committed();
    assert_no_problems(check_table_permissions(&template, CHOREOGRAPHY));
    // ARCHITECTURE.md §3: order-query only reads, the orders and the stock it shows and
    // the processed records its timeline walks (§14.3).
    let query = resources(&template)[&function_id(Function::OrderQuery.spec())]["Properties"]["Policies"].clone();
    let tables: BTreeSet<String> = statements(&query)
        .into_iter()
        .filter(|statement| strings(&statement["Action"]).iter().any(|action| action.starts_with("dynamodb:")))
        .flat_map(|statement| statement["Resource"].as_array().cloned().unwrap_or_default())
        .map(|resource| resource.to_string())
        .collect();
    let expected = [get_att("OrdersTable", "Arn"), get_att("StockTable", "Arn"), get_att("ProcessedTable", "Arn")]
        .map(|arn| arn.to_string());
    assert_eq!(tables, BTreeSet::from(expected));
}

#[test]
fn publishing_functions_get_their_bus_and_nothing_wider() {
    assert_no_problems(kafka::check_bus(&committed(), CHOREOGRAPHY));
}

#[test]
fn every_function_queue_and_log_group_has_its_alarm_and_retention() {
    assert_no_problems(check_operations(&committed(), CHOREOGRAPHY));
}

#[test]
fn with_subnets_every_function_runs_in_the_vpc() {
    assert_no_problems(check_network(&committed()));
}

#[test]
fn the_bridge_may_do_exactly_what_its_invoke_mode_needs() {
    assert_no_problems(check_bridge(&committed(), CHOREOGRAPHY));
}

#[test]
fn tables_are_kept_and_processed_records_expire() {
    assert_no_problems(check_tables(&committed()));
}

#[test]
fn scheduled_functions_run_on_their_schedule_with_their_grants() {
    assert_no_problems(check_scheduled(&committed()));
}

#[test]
fn the_relay_reads_the_variables_the_template_sets() {
    let source = read(&format!("{WORKSPACE}/functions/relay-outbox/src/lib.rs"));
    let relay = SCHEDULED.iter().find(|function| function.name == "relay-outbox").expect("the relay is scheduled");
    let (grace, _) =
        relay.environment.iter().find(|(variable, _)| variable.contains("GRACE")).expect("a grace variable");
    assert!(source.contains(&format!("\"{grace}\"")), "functions/relay-outbox reads no {grace}");
}

#[test]
fn the_relay_runs_the_saga_deadline_sweep_with_the_deadline_parameter() {
    let relay = SCHEDULED.iter().find(|function| function.name == "relay-outbox").expect("the relay is scheduled");
    assert_eq!(relay.hosts, [Function::SagaDeadline]);
    assert!(relay.environment.contains(&(shared::saga::DEADLINE_VAR, SAGA_DEADLINE)), "{:?}", relay.environment);
    let template = committed();
    assert_eq!(template["Parameters"][SAGA_DEADLINE]["Default"], "15m");
    // the sweeper is no Lambda of its own
    assert!(!resources(&template).contains_key(&function_id(Function::SagaDeadline.spec())));
    // and the relay may scan the orders and record each deadline, nothing more on them
    let source = read(&format!("{WORKSPACE}/functions/relay-outbox/src/lib.rs"));
    assert!(source.contains("sweep_deadlines"), "functions/relay-outbox does not sweep");
}

#[test]
fn a_scheduled_row_nobody_hosts_is_noticed() {
    // GIVEN a table where create-order turned into a scheduled emitter
    let altered: Vec<FunctionSpec> = CHOREOGRAPHY
        .iter()
        .map(|spec| FunctionSpec {
            routes: if spec.function == Function::CreateOrder { &[] } else { spec.routes },
            ..*spec
        })
        .collect();
    // WHEN its template is checked
    let problems = check_functions(&parse(&sam_template_for(&altered)), &altered).join("\n");
    // THEN its missing host is reported, and the sweeper's row, hosted by the relay, is not
    assert!(problems.contains("create-order is scheduled but no scheduled function hosts it"), "{problems}");
    assert!(!problems.contains("saga-deadline is scheduled"), "{problems}");
}
