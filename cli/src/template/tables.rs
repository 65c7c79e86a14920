//! A DynamoDB table resource from the store's table declaration.
//!
//! Kept when the stack is deleted, except when the stack's first creation
//! fails (`RetainExceptOnCreate`): with fixed table names, a retained table
//! of a failed first deploy would make every later deploy fail on its name.
//! `UpdateReplacePolicy` has no such value; `Retain` keeps the data of a
//! table a change would replace.

use super::yaml::*;
use super::*;
use shared::store::dynamodb::{EXPIRES_AT, PROCESSED};

/// What happens to a table when the stack is deleted.
pub const TABLE_DELETION_POLICY: &str = "RetainExceptOnCreate";

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
    if *table == PROCESSED {
        // The adapter stamps published records with their expiry (the
        // ProcessedRetention parameter); DynamoDB deletes them past it.
        properties
            .push(("TimeToLiveSpecification", map([("AttributeName", s(EXPIRES_AT)), ("Enabled", Node::Bool(true))])));
    }
    map([
        ("Type", s("AWS::DynamoDB::Table")),
        ("DeletionPolicy", s(TABLE_DELETION_POLICY)),
        ("UpdateReplacePolicy", s("Retain")),
        ("Properties", map(properties)),
    ])
}
