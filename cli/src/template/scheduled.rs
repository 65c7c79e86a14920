//! Functions a schedule invokes: plumbing around the saga, declared here.
//!
//! Why not a row of the choreography table (`Function`, `CHOREOGRAPHY`):
//! that table is the saga's steps and the events between them.
//! `Function::all()` feeds the bridge (which invokes every step), the broker
//! bindings, the queues and `choreo graph`; a row consumes and emits events
//! under its own CloudEvents source. The relay does none of that: it has no
//! queue, no route and no event of its own (it re-publishes other steps'
//! events under their sources), and a row with empty `consumes`/`emits`
//! would read as a query function and be given the query tables. So it is
//! declared once here, next to the template that deploys it; its crate
//! (`functions/<name>`) is checked against this declaration by the tests.

use super::functions::{common_policies, serverless_function, statement};
use super::yaml::*;
use super::*;
use shared::store::dynamodb::PROCESSED;

/// A function invoked by an EventBridge schedule.
#[derive(Debug)]
pub struct ScheduledFunction {
    /// The function's name after the prefix, and its binary (`functions/<name>`).
    pub name: &'static str,
    /// What it does, for its `Description`.
    pub description: &'static str,
    /// The parameter holding its schedule expression.
    pub schedule: &'static str,
    /// Its timeout (s).
    pub timeout_s: i64,
    /// Environment variables it reads, each from a parameter: (variable, parameter).
    pub environment: &'static [(&'static str, &'static str)],
    /// Everything its role may do.
    pub grants: &'static [Grant],
}

/// One statement of a scheduled function's role.
#[derive(Debug)]
pub struct Grant {
    /// The statement's `Sid`.
    pub sid: &'static str,
    /// Its actions.
    pub actions: &'static [&'static str],
    /// What they apply to.
    pub on: Target,
}

/// What a [`Grant`] applies to.
#[derive(Debug)]
pub enum Target {
    /// A table of the stack.
    Table(TableSpec),
    /// The global secondary index of a table of the stack.
    Index(TableSpec),
    /// The ARN a parameter holds.
    Parameter(&'static str),
}

/// The outbox relay: one pass per invocation (`functions/relay-outbox`), so
/// that no long-running process is needed.
pub const RELAY: ScheduledFunction = ScheduledFunction {
    name: "relay-outbox",
    description: "choreo relay-outbox - publishes outbox entries left unpublished longer than RelayGraceSeconds \
                  (a crash, an absent broker) and sets poison entries aside",
    schedule: RELAY_SCHEDULE,
    // A pass reads the outbox in pages and gives up after a few transient
    // failures; a longer outbox is finished by the next passes.
    timeout_s: 60,
    environment: &[("RELAY_GRACE_SECONDS", RELAY_GRACE), ("AMQP_SECRET_ARN", "AmqpSecretArn")],
    grants: &[
        // The outbox is the processed table's sparse index.
        Grant { sid: "ReadOutbox", actions: &["dynamodb:Query"], on: Target::Index(PROCESSED) },
        // mark_published and set_aside update the processed record.
        Grant { sid: "SettleOutboxEntries", actions: &["dynamodb:UpdateItem"], on: Target::Table(PROCESSED) },
        Grant {
            sid: "ReadAmqpUrl",
            actions: &["secretsmanager:GetSecretValue"],
            on: Target::Parameter("AmqpSecretArn"),
        },
    ],
};

/// Every scheduled function, declared once.
pub const SCHEDULED: &[ScheduledFunction] = &[RELAY];

/// The resource a grant's target names, as IAM wants it.
pub(super) fn target_arn(target: &Target) -> Node {
    match target {
        Target::Table(table) => get_att(&table_id(table), "Arn"),
        Target::Index(table) => {
            let index = table.index.map(|index| index.name).unwrap_or("*");
            sub(format!("${{{}.Arn}}/index/{index}", table_id(table)))
        }
        Target::Parameter(parameter) => reference(parameter),
    }
}

pub(super) fn scheduled_function(function: &ScheduledFunction) -> Node {
    let variables = function.environment.iter().map(|(variable, parameter)| (*variable, reference(parameter)));
    let statements =
        function.grants.iter().map(|grant| statement(grant.sid, grant.actions, target_arn(&grant.on))).collect();
    let schedule = map([
        ("Type", s("Schedule")),
        (
            "Properties",
            map([("Schedule", reference(function.schedule)), ("Description", s(format!("Runs {}", function.name)))]),
        ),
    ]);
    serverless_function(
        function.name,
        function.description.to_owned(),
        vec![
            ("Timeout", int(function.timeout_s)),
            ("Environment", map([("Variables", map(variables))])),
            // The next scheduled pass is the retry.
            ("EventInvokeConfig", map([("MaximumRetryAttempts", int(0))])),
        ],
        list(common_policies(statements)),
        Some(map([("Schedule", schedule)])),
    )
}
