//! Each check of `main.rs` fed a broken template (or another choreography)
//! notices what is wrong, so a passing check means something.

use serde_json::json;
use shared::contract::choreography::{CHOREOGRAPHY, Function, FunctionSpec};

use super::*;

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

#[test]
fn a_missing_alarm_log_group_or_retention_is_noticed() {
    let mut template = parse(&sam_template());
    remove(&mut template, "ShipOrderErrorsAlarm");
    remove(&mut template, "ReplenishStockDeadLetterAlarm");
    remove(&mut template, "OrderStatusDeadQueueAlarm");
    remove(&mut template, "RelayOutboxLogGroup");
    template["Resources"]["CreateOrderLogGroup"]["Properties"]
        .as_object_mut()
        .expect("properties")
        .remove("RetentionInDays");
    template["Resources"]["SettleInventoryDeadLetterQueue"]["Properties"]
        .as_object_mut()
        .expect("properties")
        .remove("MessageRetentionPeriod");
    template["Resources"]["OrderQueryErrorsAlarm"]["Condition"] = json!(USE_SQS);
    template["Resources"]["BridgeLogGroup"]["Properties"]["RetentionInDays"] = json!(3653);
    let problems = check_operations(&template, CHOREOGRAPHY).join("\n");
    for expected in [
        "ShipOrderFunction's Errors has no alarm",
        "the dead-letter queue ReplenishStockDeadLetterQueue has no alarm",
        "choreo.order-status.dead on the broker has no alarm",
        "RelayOutboxFunction has no log group of its own",
        "the log group CreateOrderLogGroup does not keep",
        "the queue SettleInventoryDeadLetterQueue has no MessageRetentionPeriod",
        "the alarm OrderQueryErrorsAlarm of OrderQueryFunction's Errors has condition",
        "the log group BridgeLogGroup does not keep",
    ] {
        assert!(problems.contains(expected), "{expected:?} not in:\n{problems}");
    }
}

#[test]
fn a_function_outside_the_vpc_is_noticed() {
    let mut template = parse(&sam_template());
    template["Resources"]["RelayOutboxFunction"]["Properties"].as_object_mut().expect("properties").remove("VpcConfig");
    template["Resources"]["ShipOrderFunction"]["Properties"]["Policies"].as_array_mut().expect("policies").remove(1);
    let problems = check_network(&template).join("\n");
    assert!(problems.contains("RelayOutboxFunction does not run in the VPC"), "{problems}");
    assert!(problems.contains("ShipOrderFunction is not granted ec2:CreateNetworkInterface"), "{problems}");
}

#[test]
fn a_bridge_with_more_rights_or_another_prefix_is_noticed() {
    let mut template = parse(&sam_template());
    let policies = &mut template["Resources"][BRIDGE_TASK_ROLE]["Properties"]["Policies"];
    let extra = json!({"Fn::If": [BRIDGE_INVOKES_SQS, {"PolicyName": "more", "PolicyDocument": {"Statement": [
        {"Effect": "Allow", "Action": "sqs:DeleteMessage", "Resource": get_att("ShipOrderQueue", "Arn")}]}}, reference("AWS::NoValue")]});
    policies.as_array_mut().expect("policies").push(extra);
    let container = &mut template["Resources"][BRIDGE_TASK_DEFINITION]["Properties"]["ContainerDefinitions"][0];
    for variable in container["Environment"].as_array_mut().expect("environment") {
        if variable["Name"] == "CHOREO_FUNCTION_PREFIX" {
            variable["Value"] = json!("");
        }
    }
    container.as_object_mut().expect("container").remove("Secrets");
    template["Resources"][BRIDGE_SERVICE].as_object_mut().expect("service").remove("Condition");
    let problems = check_bridge(&template, CHOREOGRAPHY).join("\n");
    assert!(problems.contains("BridgeTaskRole under Some(\"BridgeInvokesSqs\") may"), "{problems}");
    assert!(problems.contains("CHOREO_FUNCTION_PREFIX is not NamePrefix"), "{problems}");
    assert!(problems.contains("secrets are null instead of AMQP_URL"), "{problems}");
    assert!(problems.contains("BridgeService exists without the bridge"), "{problems}");
}

#[test]
fn a_table_lost_with_the_stack_or_without_ttl_is_noticed() {
    let mut template = parse(&sam_template());
    template["Resources"]["StockTable"]["DeletionPolicy"] = json!("Delete");
    template["Resources"]["ProcessedTable"]["Properties"]
        .as_object_mut()
        .expect("properties")
        .remove("TimeToLiveSpecification");
    let problems = check_tables(&template).join("\n");
    assert!(problems.contains("StockTable is not kept"), "{problems}");
    assert!(problems.contains("ProcessedTable has the TTL null"), "{problems}");
}

#[test]
fn a_scheduled_function_with_another_schedule_or_more_rights_is_noticed() {
    let mut template = parse(&sam_template());
    let properties = &mut template["Resources"]["RelayOutboxFunction"]["Properties"];
    properties["Events"]["Schedule"]["Properties"]["Schedule"] = json!("rate(1 day)");
    properties["Policies"][0]["Statement"][0]["Action"] = json!(["dynamodb:Query", "dynamodb:Scan"]);
    let problems = check_scheduled(&template).join("\n");
    assert!(problems.contains("is not invoked by exactly its RelaySchedule schedule"), "{problems}");
    assert!(problems.contains("dynamodb:Scan"), "{problems}");
}
