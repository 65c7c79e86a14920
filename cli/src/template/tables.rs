//! A DynamoDB table resource from the store's table declaration.

use super::yaml::*;
use super::*;

pub(super) fn dynamodb_table(table: &TableSpec) -> Node {
    let key = |attribute: KeyAttribute, kind: &str| map([("AttributeName", s(attribute.name)), ("KeyType", s(kind))]);
    let definitions = table
        .key_attributes()
        .into_iter()
        .map(|attribute| map([("AttributeName", s(attribute.name)), ("AttributeType", s(attribute.kind.as_str()))]));
    let mut properties = vec![
        ("TableName", sub(format!("${{NamePrefix}}{}", table.suffix))),
        ("BillingMode", s("PAY_PER_REQUEST")),
        ("AttributeDefinitions", list(definitions)),
        ("KeySchema", list([key(table.partition_key, "HASH")])),
    ];
    if let Some(index) = table.index {
        properties.push((
            "GlobalSecondaryIndexes",
            list([map([
                ("IndexName", s(index.name)),
                ("KeySchema", list([key(index.partition_key, "HASH"), key(index.sort_key, "RANGE")])),
                ("Projection", map([("ProjectionType", s("ALL"))])),
            ])]),
        ));
    }
    properties.extend([
        ("PointInTimeRecoverySpecification", map([("PointInTimeRecoveryEnabled", Node::Bool(true))])),
        ("SSESpecification", map([("SSEEnabled", Node::Bool(true))])),
    ]);
    map([
        ("Type", s("AWS::DynamoDB::Table")),
        ("DeletionPolicy", s("Retain")),
        ("UpdateReplacePolicy", s("Retain")),
        ("Properties", map(properties)),
    ])
}
