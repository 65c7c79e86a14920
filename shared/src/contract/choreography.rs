//! The choreography table (ARCHITECTURE.md §3), declared once. Bindings, queue names,
//! the RabbitMQ definitions, the SAM event sources and `choreo graph` are all
//! derived from `CHOREOGRAPHY`.

use std::fmt::Write as _;

use crate::contract::events::EventType;

/// Exchange every event is published to (topic; routing key = event type).
pub const EXCHANGE: &str = "choreo.events";

/// Events that end a saga and need no consumer.
pub const TERMINAL_EVENTS: &[EventType] = &[EventType::OrderCancelled];

/// Each saga step, one Lambda function each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    CreateOrder,
    ReserveInventory,
    ReplenishStock,
    ShipOrder,
    SettleInventory,
    OrderStatus,
    OrderQuery,
    SagaDeadline,
}

/// Which service owns the tables a function writes (ARCHITECTURE.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Orders,
    Inventory,
    Shipping,
}

/// An HTTP route served by a function (paths in OpenAPI / API Gateway form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, upper case as OpenAPI and API Gateway spell it.
    pub method: &'static str,
    /// Path with `{name}` parameters: one spelling for axum, API Gateway and openapi.yaml.
    pub path: &'static str,
}

/// One row of the choreography table.
#[derive(Debug)]
pub struct FunctionSpec {
    /// The function this row describes; rows follow the enum's order, so `spec()` indexes.
    pub function: Function,
    /// Kebab-case name of the Lambda function, its crate, its queue (`choreo.<name>`) and `source`.
    pub name: &'static str,
    /// The service whose tables the function may write; its IAM grants follow from it.
    pub service: Service,
    /// HTTP routes it serves; empty for functions that only react to events.
    pub routes: &'static [Route],
    /// Event types bound to its queue; empty: it has no queue and no step.
    pub consumes: &'static [EventType],
    /// Event types it may publish; each has a consumer or is terminal (tested).
    pub emits: &'static [EventType],
}

use EventType::*;

/// The table. Row order follows the `Function` enum (checked by a test).
pub const CHOREOGRAPHY: &[FunctionSpec] = &[
    FunctionSpec {
        function: Function::CreateOrder,
        name: "create-order",
        service: Service::Orders,
        routes: &[Route { method: "POST", path: "/orders" }],
        consumes: &[],
        emits: &[OrderCreated],
    },
    FunctionSpec {
        function: Function::ReserveInventory,
        name: "reserve-inventory",
        service: Service::Inventory,
        routes: &[],
        consumes: &[OrderCreated, StockReplenished],
        emits: &[InventoryReserved, InventoryInsufficient, InventoryRejected],
    },
    FunctionSpec {
        function: Function::ReplenishStock,
        name: "replenish-stock",
        service: Service::Inventory,
        routes: &[],
        consumes: &[InventoryInsufficient],
        emits: &[StockReplenished, ReplenishmentFailed],
    },
    FunctionSpec {
        function: Function::ShipOrder,
        name: "ship-order",
        service: Service::Shipping,
        routes: &[],
        // The deadline goes to shipping, the one place that decides whether
        // goods leave: it either shipped already or never will (§7.9).
        consumes: &[InventoryReserved, OrderDeadlineReached],
        emits: &[OrderShipped, ShipmentFailed],
    },
    FunctionSpec {
        function: Function::SettleInventory,
        name: "settle-inventory",
        service: Service::Inventory,
        routes: &[],
        consumes: &[OrderShipped, ShipmentFailed],
        emits: &[InventoryReleased],
    },
    FunctionSpec {
        function: Function::OrderStatus,
        name: "order-status",
        service: Service::Orders,
        routes: &[],
        consumes: &[
            InventoryReserved,
            InventoryInsufficient,
            OrderShipped,
            InventoryRejected,
            ReplenishmentFailed,
            InventoryReleased,
        ],
        emits: &[OrderCancelled],
    },
    FunctionSpec {
        function: Function::OrderQuery,
        name: "order-query",
        service: Service::Orders,
        routes: &[
            Route { method: "GET", path: "/orders/{order_id}" },
            Route { method: "GET", path: "/orders/{order_id}/timeline" },
            Route { method: "GET", path: "/inventory/{sku}" },
        ],
        consumes: &[],
        emits: &[],
    },
    // The saga-deadline sweeper (`shared::saga`): no route, no queue; it runs
    // on a schedule (inside `choreo up`, and on AWS in each pass of the
    // relay-outbox function) and emits a deadline for each order still not
    // terminal past it. It reads orders, so it belongs to their service.
    FunctionSpec {
        function: Function::SagaDeadline,
        name: "saga-deadline",
        service: Service::Orders,
        routes: &[],
        consumes: &[],
        emits: &[OrderDeadlineReached],
    },
];

impl FunctionSpec {
    /// See [`Function::is_scheduled`]; on the row, so that tables other than
    /// `CHOREOGRAPHY` (tests of the template) answer for themselves.
    pub fn is_scheduled(&self) -> bool {
        self.routes.is_empty() && self.consumes.is_empty() && !self.emits.is_empty()
    }
}

impl Function {
    pub fn all() -> impl Iterator<Item = Function> {
        CHOREOGRAPHY.iter().map(|spec| spec.function)
    }

    /// Functions that a bus delivers events to (each owns one queue).
    pub fn consumers() -> impl Iterator<Item = Function> {
        Self::all().filter(|function| !function.spec().consumes.is_empty())
    }

    /// Functions that neither serve routes nor consume events, yet emit:
    /// they act on a schedule, hosted by another process (`saga-deadline`
    /// runs inside `choreo up` and the relay-outbox function), so they have
    /// no binary, queue or Lambda of their own.
    pub fn is_scheduled(self) -> bool {
        self.spec().is_scheduled()
    }

    pub fn spec(self) -> &'static FunctionSpec {
        &CHOREOGRAPHY[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn from_name(name: &str) -> Option<Function> {
        Self::all().find(|function| function.name() == name)
    }

    /// CloudEvents `source` of the events this function emits.
    pub fn source(self) -> String {
        format!("/functions/{}", self.name())
    }

    /// The durable queue this function consumes from.
    pub fn queue(self) -> String {
        format!("choreo.{}", self.name())
    }

    pub fn consumes(self, event_type: EventType) -> bool {
        self.spec().consumes.contains(&event_type)
    }
}

impl std::fmt::Display for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Functions an event of this type is delivered to.
pub fn consumers_of(event_type: EventType) -> impl Iterator<Item = Function> {
    Function::all().filter(move |function| function.consumes(event_type))
}

/// The table as a Mermaid flowchart (`choreo graph`, README).
pub fn mermaid() -> String {
    let id = |function: Function| function.name().replace('-', "_");
    let mut out = String::from("flowchart LR\n    client([HTTP client])\n    clock([schedule])\n");
    for spec in CHOREOGRAPHY {
        let _ = writeln!(out, "    {}[{}]", id(spec.function), spec.name);
    }
    out.push_str("    done((saga ends))\n");
    for spec in CHOREOGRAPHY {
        for route in spec.routes {
            let _ = writeln!(out, "    client -- \"{} {}\" --> {}", route.method, route.path, id(spec.function));
        }
        if spec.function.is_scheduled() {
            let _ = writeln!(out, "    clock -.-> {}", id(spec.function));
        }
    }
    for spec in CHOREOGRAPHY {
        for &event in spec.emits {
            for consumer in consumers_of(event) {
                let _ = writeln!(out, "    {} -- {} --> {}", id(spec.function), event, id(consumer));
            }
            if TERMINAL_EVENTS.contains(&event) {
                let _ = writeln!(out, "    {} -- {} --> done", id(spec.function), event);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_function_enum() {
        for (index, spec) in CHOREOGRAPHY.iter().enumerate() {
            assert_eq!(spec.function as usize, index, "row {} is out of place", spec.name);
            assert_eq!(Function::from_name(spec.name), Some(spec.function));
        }
    }

    #[test]
    fn every_emitted_event_has_a_consumer_or_ends_the_saga() {
        for spec in CHOREOGRAPHY {
            for &event in spec.emits {
                let consumed = consumers_of(event).next().is_some();
                assert!(
                    consumed || TERMINAL_EVENTS.contains(&event),
                    "{} emits {event}, which nobody consumes and is not terminal",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn every_consumed_event_is_emitted_by_someone() {
        for spec in CHOREOGRAPHY {
            for &event in spec.consumes {
                let emitted = CHOREOGRAPHY.iter().any(|other| other.emits.contains(&event));
                assert!(emitted, "{} consumes {event}, which nobody emits", spec.name);
            }
        }
    }

    #[test]
    fn every_event_type_appears_in_the_table() {
        for &event in EventType::ALL {
            assert!(CHOREOGRAPHY.iter().any(|spec| spec.emits.contains(&event)), "{event} is never emitted");
        }
    }

    #[test]
    fn the_graph_has_an_edge_per_delivery() {
        let graph = mermaid();
        assert!(graph.contains("create_order -- order.created --> reserve_inventory"));
        assert!(graph.contains("order_status -- order.cancelled --> done"));
        let deliveries: usize = CHOREOGRAPHY.iter().map(|spec| spec.consumes.len()).sum();
        let routes: usize = CHOREOGRAPHY.iter().map(|spec| spec.routes.len()).sum();
        let terminal = TERMINAL_EVENTS.len();
        assert_eq!(graph.matches(" --> ").count(), deliveries + routes + terminal);
        assert!(graph.contains("clock -.-> saga_deadline"));
        assert!(graph.contains("saga_deadline -- order.deadline_reached --> ship_order"));
    }

    #[test]
    fn only_the_sweeper_is_scheduled() {
        let scheduled: Vec<Function> = Function::all().filter(|function| function.is_scheduled()).collect();
        assert_eq!(scheduled, [Function::SagaDeadline]);
        assert!(Function::consumers().all(|function| !function.is_scheduled()));
    }
}
