//! The Kafka modes of the template (`EventSource` MSK and
//! SelfManagedKafka): one mapping per consumed event type on its topic, each
//! with a consumer group of its own, SASL/SCRAM with the Kafka secret, the
//! grants AWS documents for those mappings; and the bus settings of every
//! publishing function, AMQP or Kafka by mode, never both.

use std::collections::BTreeMap;

use choreo::template::{
    HAS_KAFKA_SECRET_KEY, KAFKA_DEAD_LETTER_METRIC, KAFKA_SCRAM_256, KafkaSource, MAPPING_NETWORK_ACTIONS,
    MSK_CLUSTER_ACTIONS, SCHEDULED, SELF_MANAGED_KAFKA_IN_VPC, STARTING_POSITION, USE_AMQP, USE_KAFKA, USE_MSK,
    VPC_SLOTS, function_id, function_id_of, kafka_group, kafka_topic, log_group_id, sam_template,
};
use serde_json::{Value, json};
use shared::contract::choreography::{CHOREOGRAPHY, FunctionSpec};
use shared::host::lambda::DEAD_LETTERED_MESSAGE;

use super::{
    access_types, alarms_on, assert_no_problems, check_event_sources, check_grants, of_type, parse, reference,
    resources, statements, strings,
};

fn split(parameter: &str) -> Value {
    json!({ "Fn::Split": [",", reference(parameter)] })
}

fn when(condition: &str, value: Value) -> Value {
    json!({ "Fn::If": [condition, value, reference("AWS::NoValue")] })
}

/// One Kafka mapping: the checks of its source, and the topic it reads.
pub(super) fn check_mapping(
    template: &Value,
    id: &str,
    spec: &FunctionSpec,
    properties: &Value,
    source: KafkaSource,
) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    let topics = strings(&properties["Topics"]);
    let [topic] = topics.as_slice() else {
        problems.push(format!("{id} reads the topics {topics:?}: a Kafka mapping takes exactly one"));
        return (problems, format!("{topics:?}"));
    };
    if properties["StartingPosition"] != STARTING_POSITION {
        problems.push(format!("{id} starts at {} instead of {STARTING_POSITION}", properties["StartingPosition"]));
    }
    if properties["BatchSize"] != reference("BatchSize") {
        problems.push(format!("{id} has no BatchSize"));
    }
    let config = match source {
        KafkaSource::Msk => "AmazonManagedKafkaEventSourceConfig",
        KafkaSource::SelfManaged => "SelfManagedKafkaEventSourceConfig",
    };
    let event = spec.consumes.iter().find(|event| kafka_topic(**event) == *topic);
    if let Some(event) = event
        && properties[config]["ConsumerGroupId"] != kafka_group(spec, *event)
    {
        problems.push(format!("{id} is not in the group {}", kafka_group(spec, *event)));
    }
    let access = access_types(properties);
    let sasl = &properties["SourceAccessConfigurations"][0];
    if sasl["URI"] != reference("KafkaSecretArn") {
        problems.push(format!("{id} does not authenticate with KafkaSecretArn"));
    }
    let function = function_id(spec);
    // The mapping reads the secret with the function's role, as the producer does.
    let secret = [("secretsmanager:GetSecretValue", reference("KafkaSecretArn"))];
    problems.extend(check_grants(template, &function, USE_KAFKA, &secret));
    let network: Vec<(&str, Value)> = MAPPING_NETWORK_ACTIONS.iter().map(|action| (*action, json!("*"))).collect();
    match source {
        KafkaSource::Msk => {
            if properties["EventSourceArn"] != reference("MskClusterArn") {
                problems.push(format!("{id} is not mapped to the MskClusterArn cluster"));
            }
            if access != ["SASL_SCRAM_512_AUTH"] {
                problems.push(format!("{id} has source access {access:?} instead of SASL_SCRAM_512_AUTH"));
            }
            let mut grants: Vec<(&str, Value)> =
                MSK_CLUSTER_ACTIONS.iter().map(|action| (*action, reference("MskClusterArn"))).collect();
            grants.extend(network);
            problems.extend(check_grants(template, &function, USE_MSK, &grants));
        }
        KafkaSource::SelfManaged => {
            let servers = &properties["SelfManagedEventSource"]["Endpoints"]["KafkaBootstrapServers"];
            if *servers != split("KafkaBootstrapServers") {
                problems.push(format!("{id} does not read the KafkaBootstrapServers brokers"));
            }
            let mechanism = json!({ "Fn::If": [KAFKA_SCRAM_256, "SASL_SCRAM_256_AUTH", "SASL_SCRAM_512_AUTH"] });
            if sasl["Type"] != mechanism {
                problems.push(format!("{id} does not authenticate with KafkaSaslMechanism"));
            }
            // In the VPC: the first VPC_SLOTS subnets and security groups, under SelfManagedKafkaInVpc.
            let mut expected = vec![mechanism.to_string()];
            expected
                .extend(["VPC_SUBNET", "VPC_SECURITY_GROUP"].iter().flat_map(|kind| vec![kind.to_string(); VPC_SLOTS]));
            if access != expected {
                problems.push(format!("{id} has source access {access:?} instead of {expected:?}"));
            }
            let first_subnet = &properties["SourceAccessConfigurations"][1]["Fn::If"];
            if first_subnet[0] != SELF_MANAGED_KAFKA_IN_VPC {
                problems.push(format!("{id}'s first subnet is not under {SELF_MANAGED_KAFKA_IN_VPC}"));
            }
            problems.extend(check_grants(template, &function, SELF_MANAGED_KAFKA_IN_VPC, &network));
        }
    }
    (problems, topic.clone())
}

/// No two Kafka mappings share a consumer group: Lambda refuses it.
fn check_groups_are_unique(template: &Value) -> Vec<String> {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, mapping) in of_type(template, "AWS::Lambda::EventSourceMapping") {
        for config in ["AmazonManagedKafkaEventSourceConfig", "SelfManagedKafkaEventSourceConfig"] {
            if let Some(group) = mapping["Properties"][config]["ConsumerGroupId"].as_str() {
                owners.entry(format!("{config} {group}")).or_default().push(id.clone());
            }
        }
    }
    owners
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(group, ids)| format!("the mappings {ids:?} share the group {group}"))
        .collect()
}

/// Every function that publishes (the steps that emit and the scheduled
/// functions) gets the AMQP secret under `UseAmqp` and the Kafka settings
/// under `UseKafka`, and may read those secrets; no statement reads another
/// secret or decrypts with another key.
pub(super) fn check_bus(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = [
        ("AMQP_SECRET_ARN", when(USE_AMQP, reference("AmqpSecretArn"))),
        ("KAFKA_BOOTSTRAP_SERVERS", when(USE_KAFKA, reference("KafkaBootstrapServers"))),
        ("KAFKA_SECURITY_PROTOCOL", when(USE_KAFKA, json!("SASL_SSL"))),
        ("KAFKA_SASL_MECHANISM", when(USE_KAFKA, reference("KafkaSaslMechanism"))),
        ("KAFKA_SECRET_ARN", when(USE_KAFKA, reference("KafkaSecretArn"))),
    ];
    let publishers = choreography
        .iter()
        .filter(|spec| !spec.is_scheduled())
        .map(|spec| (function_id(spec), !spec.emits.is_empty()))
        .chain(SCHEDULED.iter().map(|function| (function_id_of(function.name), true)));
    for (id, publishes) in publishers {
        let variables = resources(template).get(&id).map(|f| f["Properties"]["Environment"]["Variables"].clone());
        let variables = variables.unwrap_or(Value::Null);
        for (name, value) in &expected {
            let wanted = if publishes { value } else { &Value::Null };
            if variables[name] != *wanted {
                problems.push(format!("{id}: {name} is {} instead of {wanted}", variables[name]));
            }
        }
        if publishes {
            let amqp = [("secretsmanager:GetSecretValue", reference("AmqpSecretArn"))];
            problems.extend(check_grants(template, &id, USE_AMQP, &amqp));
            let kafka = [("secretsmanager:GetSecretValue", reference("KafkaSecretArn"))];
            problems.extend(check_grants(template, &id, USE_KAFKA, &kafka));
            let key = [("kms:Decrypt", reference("KafkaSecretKeyArn"))];
            problems.extend(check_grants(template, &id, HAS_KAFKA_SECRET_KEY, &key));
        }
    }
    let secrets = ["AmqpSecretArn", "MqCredentialsSecretArn", "KafkaSecretArn"].map(reference);
    for statement in statements(&template["Resources"]) {
        let actions = strings(&statement["Action"]);
        let resource = &statement["Resource"];
        if actions.iter().any(|action| action.starts_with("secretsmanager:")) && !secrets.contains(resource) {
            problems.push(format!("a statement reads the secrets {resource}"));
        }
        if actions.iter().any(|action| action.starts_with("kms:")) && *resource != reference("KafkaSecretKeyArn") {
            problems.push(format!("a statement uses the keys {resource}"));
        }
    }
    problems
}

/// A topic has no depth metric: each consumer's parked records are counted
/// from its own log group (the line `shared::host::lambda` logs) and alarmed
/// on, under `UseKafka`.
pub(super) fn check_dead_letter_alarms(template: &Value, choreography: &[FunctionSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    let (namespace, metric) = KAFKA_DEAD_LETTER_METRIC;
    let transformation = json!([{
        "MetricNamespace": namespace, "MetricName": metric, "MetricValue": "1",
        "Dimensions": [{"Key": "Function", "Value": "$.function"}],
    }]);
    for spec in choreography.iter().filter(|spec| !spec.consumes.is_empty()) {
        let counted = of_type(template, "AWS::Logs::MetricFilter").any(|(_, filter)| {
            let properties = &filter["Properties"];
            filter["Condition"] == USE_KAFKA
                && properties["LogGroupName"] == reference(&log_group_id(spec.name))
                && properties["FilterPattern"].as_str().is_some_and(|pattern| pattern.contains(DEAD_LETTERED_MESSAGE))
                && properties["MetricTransformations"] == transformation
        });
        if !counted {
            problems
                .push(format!("{}'s parked records are not counted from its log group under {USE_KAFKA}", spec.name));
        }
        let alarms = alarms_on(template, (namespace, metric), ("Function", &json!(spec.name)));
        let conditions: Vec<&Value> = alarms.iter().map(|id| &template["Resources"][id]["Condition"]).collect();
        if conditions != [&json!(USE_KAFKA)] {
            problems
                .push(format!("{}'s parked records have no alarm under {USE_KAFKA} (alarms: {alarms:?})", spec.name));
        }
    }
    problems
}

#[test]
fn parked_kafka_records_are_counted_and_alarmed_on() {
    assert_no_problems(check_dead_letter_alarms(&super::committed(), CHOREOGRAPHY));
}

#[test]
fn a_kafka_dead_letter_filter_or_alarm_missing_is_noticed() {
    let mut template = parse(&sam_template());
    let resources = template["Resources"].as_object_mut().expect("Resources");
    resources.remove("ShipOrderKafkaDeadLetterAlarm");
    let filter = &mut resources["SettleInventoryKafkaDeadLetterFilter"]["Properties"];
    filter["FilterPattern"] = json!("{ $.message = \"something else\" }");

    let problems = check_dead_letter_alarms(&template, CHOREOGRAPHY).join("\n");
    assert!(problems.contains("ship-order's parked records have no alarm"), "{problems}");
    assert!(problems.contains("settle-inventory's parked records are not counted"), "{problems}");
    assert!(!problems.contains("order-status"), "{problems}");
}

#[test]
fn kafka_consumer_groups_are_unique() {
    assert_no_problems(check_groups_are_unique(&super::committed()));
}

#[test]
fn a_missing_or_misconfigured_kafka_mapping_is_noticed() {
    let mut template = parse(&sam_template());
    let mappings = template["Resources"].as_object_mut().expect("Resources");
    mappings.remove("ShipOrderInventoryReservedMskMapping");
    let status = &mut mappings["OrderStatusOrderShippedSelfManagedKafkaMapping"]["Properties"];
    status["Topics"] = json!(["choreo.order.shipped", "choreo.inventory.released"]);
    let settle = &mut mappings["SettleInventoryShipmentFailedMskMapping"]["Properties"];
    settle["StartingPosition"] = json!("LATEST");
    settle["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"] = json!("choreo.order-status.order.shipped");
    let replenish = &mut mappings["ReplenishStockInventoryInsufficientSelfManagedKafkaMapping"]["Properties"];
    replenish["SourceAccessConfigurations"].as_array_mut().expect("access").truncate(1);
    let reserve = &mut mappings["ReserveInventoryFunction"]["Properties"]["Policies"];
    reserve.as_array_mut().expect("policies").retain(|policy| policy["Fn::If"][0] != USE_MSK);

    let problems = check_event_sources(&template, CHOREOGRAPHY).join("\n");
    for expected in [
        "ship-order has Kafka(Msk) mappings of [\"choreo.order.deadline_reached\"] instead of",
        "OrderStatusOrderShippedSelfManagedKafkaMapping reads the topics",
        "SettleInventoryShipmentFailedMskMapping starts at \"LATEST\"",
        "SettleInventoryShipmentFailedMskMapping is not in the group choreo.settle-inventory.shipment.failed",
        "ReplenishStockInventoryInsufficientSelfManagedKafkaMapping has source access",
        "ReserveInventoryFunction is not granted kafka:DescribeClusterV2",
    ] {
        assert!(problems.contains(expected), "{expected:?} not in:\n{problems}");
    }
    let groups = check_groups_are_unique(&template).join("\n");
    assert!(groups.contains("share the group AmazonManagedKafkaEventSourceConfig choreo.order-status"), "{groups}");
}

#[test]
fn a_publisher_without_its_bus_or_with_both_is_noticed() {
    let mut template = parse(&sam_template());
    let variables = &mut template["Resources"]["RelayOutboxFunction"]["Properties"]["Environment"]["Variables"];
    variables.as_object_mut().expect("variables").remove("KAFKA_SECRET_ARN");
    let variables = &mut template["Resources"]["ShipOrderFunction"]["Properties"]["Environment"]["Variables"];
    variables["AMQP_SECRET_ARN"] = reference("AmqpSecretArn");
    let policies = &mut template["Resources"]["OrderStatusFunction"]["Properties"]["Policies"];
    let wider = json!({"Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "*"}]});
    policies.as_array_mut().expect("policies").push(wider);

    let problems = check_bus(&template, CHOREOGRAPHY).join("\n");
    for expected in [
        "RelayOutboxFunction: KAFKA_SECRET_ARN is null",
        "ShipOrderFunction: AMQP_SECRET_ARN is {\"Ref\":\"AmqpSecretArn\"}",
        "a statement uses the keys \"*\"",
    ] {
        assert!(problems.contains(expected), "{expected:?} not in:\n{problems}");
    }
}
