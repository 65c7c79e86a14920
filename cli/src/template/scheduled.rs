//! Functions a schedule invokes: plumbing around the saga, declared here.
//!
//! Why the relay is not a row of the choreography table (`Function`,
//! `CHOREOGRAPHY`): that table is the saga's steps and the events between
//! them. `Function::all()` feeds the bridge (which invokes every step), the
//! broker bindings, the queues and `choreo graph`; a row consumes and emits
//! events under its own CloudEvents source. The relay does none of that: it
//! has no queue, no route and no event of its own (it re-publishes other
//! steps' events under their sources). So it is declared once here, next to
//! the template that deploys it; its crate (`functions/<name>`) is checked
//! against this declaration by the tests.
//!
//! A scheduled function may host scheduled rows of the table (no route, no
//! queue, but events of their own: `Function::is_scheduled`): the relay runs
//! the saga-deadline sweep in each pass (ARCHITECTURE.md §7.9), so the
//! deadline follows its schedule and no second Lambda is needed. Those rows
//! get no function resource; their grants are the host's.

use super::functions::{common_policies, serverless_function, statement};
use super::kafka::{bus_environment, bus_policies};
use super::yaml::*;
use super::*;
use shared::Function;
use shared::store::dynamodb::{ORDERS, PROCESSED};

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
    /// Environment variables it reads, each from a parameter: (variable,
    /// parameter); every scheduled function publishes, so it also gets the
    /// bus's (`kafka::bus_environment`).
    pub environment: &'static [(&'static str, &'static str)],
    /// Everything its role may do, besides reading the bus's secret (`kafka::bus_policies`).
    pub grants: &'static [Grant],
    /// Scheduled rows of the choreography table it runs in each invocation.
    pub hosts: &'static [Function],
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
                  (a crash, an absent broker), sets poison entries aside, and runs the saga-deadline sweep \
                  (orders unfinished after SagaDeadline)",
    schedule: RELAY_SCHEDULE,
    // A pass reads the outbox in pages and gives up after a few transient
    // failures; a longer outbox is finished by the next passes.
    timeout_s: 60,
    environment: &[("RELAY_GRACE_SECONDS", RELAY_GRACE), ("CHOREO_SAGA_DEADLINE", SAGA_DEADLINE)],
    grants: &[
        // The outbox is the processed table's sparse index.
        Grant { sid: "ReadOutbox", actions: &["dynamodb:Query"], on: Target::Index(PROCESSED) },
        // mark_published and set_aside update the processed record.
        Grant { sid: "SettleOutboxEntries", actions: &["dynamodb:UpdateItem"], on: Target::Table(PROCESSED) },
        // The saga-deadline sweep: the open orders (a Scan of the orders table) ...
        Grant { sid: "FindOverdueOrders", actions: &["dynamodb:Scan"], on: Target::Table(ORDERS) },
        // ... and its own processed record per order: read, then committed
        // (a transaction's conditional Put) with the deadline event.
        Grant {
            sid: "RecordDeadlines",
            actions: &["dynamodb:GetItem", "dynamodb:PutItem"],
            on: Target::Table(PROCESSED),
        },
    ],
    hosts: &[Function::SagaDeadline],
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
    let mut variables: Vec<(&str, Node)> =
        function.environment.iter().map(|(variable, parameter)| (*variable, reference(parameter))).collect();
    // It republishes outbox entries, on the stack's bus.
    variables.extend(bus_environment());
    let statements =
        function.grants.iter().map(|grant| statement(grant.sid, grant.actions, target_arn(&grant.on))).collect();
    let mut policies = common_policies(statements);
    policies.extend(bus_policies());
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
        list(policies),
        Some(map([("Schedule", schedule)])),
    )
}
