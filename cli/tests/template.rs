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

use std::collections::BTreeSet;

use choreo::template::{
    HTTP_API, QUERIED_TABLES, READ_ACTIONS, TABLES, USE_AMAZON_MQ, USE_SQS, dead_letter_queue_id, function_id,
    is_query, queue_id, sam_template, sam_template_for, table_id,
};
use serde_json::{Value, json};
use shared::contract::choreography::{CHOREOGRAPHY, Function, FunctionSpec};

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
const OPENAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");

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
    for spec in choreography {
        let id = function_id(spec);
        let Some(resource) = resources(template).get(&id) else {
            problems.push(format!("{} has no resource {id}", spec.name));
            continue;
        };
        if resource["Type"] != "AWS::Serverless::Function" {
            problems.push(format!("{id} is a {} instead of an AWS::Serverless::Function", resource["Type"]));
        }
        if resource["Metadata"]["BuildMethod"] != "rust-cargolambda" {
            problems.push(format!("{id} is not built with rust-cargolambda"));
        }
        if resource["Metadata"]["BuildProperties"]["Binary"] != spec.name {
            problems.push(format!("{id} does not build the binary {}", spec.name));
        }
        if resource["Properties"]["CodeUri"] != "." {
            problems.push(format!("{id}: CodeUri is not the workspace root"));
        }
    }
    let declared: BTreeSet<String> = choreography.iter().map(function_id).collect();
    for (id, _) in of_type(template, "AWS::Serverless::Function") {
        if !declared.contains(id) {
            problems.push(format!("{id} is not a function of the choreography"));
        }
    }
    problems
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Sqs,
    AmazonMq,
}

/// Each consumer has an SQS mapping (queue + DLQ, partial batch failures) and
/// an Amazon MQ mapping on `Function::queue()`, under their conditions;
/// nobody else has a mapping.
fn check_event_sources(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    let by_id = |id: &str| choreography.iter().find(|spec| function_id(spec) == id);
    let mut found = BTreeSet::new();
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
            other => {
                problems.push(format!("{id} has condition {other:?}: it would exist in both EventSource modes"));
                continue;
            }
        };
        match source {
            Source::Sqs => problems.extend(check_sqs_mapping(template, id, spec, properties)),
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
                let grants = [("mq:DescribeBroker", reference("MqBrokerArn"))];
                problems.extend(check_grants(template, spec, USE_AMAZON_MQ, &grants));
                let access: BTreeSet<_> = properties["SourceAccessConfigurations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|item| item["Type"].as_str())
                    .collect();
                if access != BTreeSet::from(["BASIC_AUTH", "VIRTUAL_HOST"]) {
                    problems.push(format!("{id} has source access {access:?} instead of BASIC_AUTH and VIRTUAL_HOST"));
                }
            }
        }
        if !found.insert((spec.name, source)) {
            problems.push(format!("{} has more than one mapping of one kind", spec.name));
        }
    }
    for spec in choreography {
        for source in [Source::Sqs, Source::AmazonMq] {
            let key = (spec.name, source);
            match (spec.consumes.is_empty(), found.contains(&key)) {
                (false, false) => problems.push(format!("{} consumes events but has no {:?} mapping", key.0, key.1)),
                (true, true) => problems.push(format!("{} consumes nothing but has a {:?} mapping", key.0, key.1)),
                _ => {}
            }
        }
        // SAM events cannot carry a condition: an SQS or MQ event would exist in both modes.
        let events = &resources(template).get(&function_id(spec)).map(|f| &f["Properties"]["Events"]);
        for event in events.and_then(Value::as_object).into_iter().flat_map(|events| events.values()) {
            if event["Type"] == "SQS" || event["Type"] == "MQ" {
                problems.push(format!("{} has an unconditional {} event", spec.name, event["Type"]));
            }
        }
    }
    problems
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
    let grants = [("sqs:ReceiveMessage", get_att(&queue, "Arn")), ("sqs:DeleteMessage", get_att(&queue, "Arn"))];
    problems.extend(check_grants(template, spec, USE_SQS, &grants));
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
fn check_grants(template: &Value, spec: &FunctionSpec, condition: &str, grants: &[(&str, Value)]) -> Vec<String> {
    let id = function_id(spec);
    let policies = resources(template).get(&id).map(|function| function["Properties"]["Policies"].clone());
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
fn no_statement_grants_everything() {
    assert_no_problems(check_no_wildcards(&committed()));
}

#[test]
fn each_function_reaches_only_its_services_tables() {
    let template = committed();
    assert_no_problems(check_table_permissions(&template, CHOREOGRAPHY));
    // ARCHITECTURE.md §3: order-query only reads, the orders and the stock it shows.
    let query = resources(&template)[&function_id(Function::OrderQuery.spec())]["Properties"]["Policies"].clone();
    let tables: BTreeSet<String> = statements(&query)
        .into_iter()
        .filter(|statement| strings(&statement["Action"]).iter().any(|action| action.starts_with("dynamodb:")))
        .flat_map(|statement| statement["Resource"].as_array().cloned().unwrap_or_default())
        .map(|resource| resource.to_string())
        .collect();
    let expected = [get_att("OrdersTable", "Arn"), get_att("StockTable", "Arn")].map(|arn| arn.to_string());
    assert_eq!(tables, BTreeSet::from(expected));
}

#[test]
fn publishing_functions_get_the_amqp_secret_and_nothing_wider() {
    let template = committed();
    for spec in CHOREOGRAPHY {
        let function = &resources(&template)[&function_id(spec)]["Properties"];
        let secret = &function["Environment"]["Variables"]["AMQP_SECRET_ARN"];
        assert_eq!(!secret.is_null(), !spec.emits.is_empty(), "{}: AMQP_SECRET_ARN", spec.name);
    }
    for statement in statements(&template["Resources"]) {
        if strings(&statement["Action"]).iter().any(|action| action.starts_with("secretsmanager:")) {
            let resource = &statement["Resource"];
            assert!(
                *resource == reference("AmqpSecretArn") || *resource == reference("MqCredentialsSecretArn"),
                "a statement reads the secrets {resource}"
            );
        }
    }
}

// ------------------------------------------------------------------ the checks can fail

fn remove(template: &mut Value, id: &str) {
    template["Resources"].as_object_mut().expect("Resources").remove(id);
}

#[test]
fn a_missing_or_misbound_mapping_is_noticed() {
    let mut template = parse(&sam_template());
    remove(&mut template, "ShipOrderMqMapping");
    template["Resources"]["ReserveInventoryMqMapping"]["Properties"]["Queues"] = json!(["choreo.somebody-else"]);
    template["Resources"]["ReplenishStockQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = json!(50);
    template["Resources"]["OrderStatusSqsMapping"]["Properties"]["FunctionResponseTypes"] = json!([]);
    template["Resources"]["SettleInventoryFunction"]["Properties"]["Policies"]
        .as_array_mut()
        .expect("policies")
        .truncate(1);
    let problems = check_event_sources(&template, CHOREOGRAPHY).join("\n");
    assert!(problems.contains("ship-order consumes events but has no AmazonMq mapping"), "{problems}");
    assert!(problems.contains("ReserveInventoryMqMapping reads"), "{problems}");
    assert!(problems.contains("ReplenishStockQueue does not dead-letter"), "{problems}");
    assert!(problems.contains("OrderStatusSqsMapping does not report batch item failures"), "{problems}");
    assert!(problems.contains("SettleInventoryFunction is not granted sqs:ReceiveMessage"), "{problems}");
    assert!(problems.contains("SettleInventoryFunction is not granted mq:DescribeBroker"), "{problems}");
}

#[test]
fn a_template_of_another_choreography_is_noticed() {
    // GIVEN a table where ship-order consumes nothing and order-query is gone
    let altered: Vec<FunctionSpec> = CHOREOGRAPHY
        .iter()
        .filter(|spec| spec.function != Function::OrderQuery)
        .map(|spec| FunctionSpec {
            consumes: if spec.function == Function::ShipOrder { &[] } else { spec.consumes },
            ..*spec
        })
        .collect();
    // WHEN its template is checked against the real table
    let template = parse(&sam_template_for(&altered));
    // THEN the differences are reported
    let functions = check_functions(&template, CHOREOGRAPHY).join("\n");
    assert!(functions.contains("order-query has no resource OrderQueryFunction"), "{functions}");
    let sources = check_event_sources(&template, CHOREOGRAPHY).join("\n");
    assert!(sources.contains("ship-order consumes events but has no Sqs mapping"), "{sources}");
    let openapi = parse(&read(OPENAPI));
    let routes = check_routes(&template, CHOREOGRAPHY, &openapi).join("\n");
    assert!(routes.contains("the API serves"), "{routes}");
}

#[test]
fn a_route_missing_from_openapi_or_the_api_is_noticed() {
    let template = parse(&sam_template());
    let mut openapi = parse(&read(OPENAPI));
    openapi["paths"].as_object_mut().expect("paths").remove("/inventory/{sku}");
    let problems = check_routes(&template, CHOREOGRAPHY, &openapi).join("\n");
    assert!(problems.contains("differ from openapi.yaml"), "{problems}");

    let mut template = parse(&sam_template());
    let body = &mut template["Resources"][HTTP_API]["Properties"]["DefinitionBody"]["paths"];
    body["/orders"]["post"].as_object_mut().expect("operation").remove("security");
    let problems = check_routes(&template, CHOREOGRAPHY, &parse(&read(OPENAPI))).join("\n");
    assert!(problems.contains("POST /orders has no security"), "{problems}");
}

#[test]
fn a_wildcard_permission_is_noticed() {
    for action in [json!("*"), json!(["sqs:SendMessage", "s3:*"])] {
        let mut template = parse(&sam_template());
        let policies = &mut template["Resources"]["ShipOrderFunction"]["Properties"]["Policies"];
        let wildcard = json!({"Fn::If": [USE_SQS, {"Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}, {"Ref": "AWS::NoValue"}]});
        policies.as_array_mut().expect("policies").push(wildcard);
        assert_eq!(check_no_wildcards(&template).len(), 1, "{action} on * was not noticed");
    }
}

#[test]
fn a_table_of_another_service_is_noticed() {
    let mut template = parse(&sam_template());
    let statement = &mut template["Resources"]["ShipOrderFunction"]["Properties"]["Policies"][0]["Statement"][0];
    statement["Resource"].as_array_mut().expect("table list").push(get_att("StockTable", "Arn"));
    let problems = check_table_permissions(&template, CHOREOGRAPHY).join("\n");
    assert!(problems.contains("ship-order (Shipping) may use"), "{problems}");
}
