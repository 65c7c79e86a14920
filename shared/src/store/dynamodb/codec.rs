//! Translation between the port's records and DynamoDB items: attribute
//! names, typed reads of stored attributes, one encoder and decoder per record.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::errors::corrupt;
use super::tables::{ORDERS, RESERVATIONS, SHIPMENTS, STOCK};
use crate::contract::choreography::Function;
use crate::contract::domain::{OrderId, Sku};
use crate::contract::events::Event;
use crate::store::{OrderRecord, Reservation, ReservationState, Shipment, StockLevel, StoreError};

/// A DynamoDB item: attribute name to value.
pub(super) type Item = HashMap<String, AttributeValue>;

// Attribute names besides the keys.
pub(super) const SEEDED: &str = "seeded";
pub(super) const AVAILABLE: &str = "available";
pub(super) const RESERVED: &str = "reserved";
pub(super) const SHIPPED: &str = "shipped";
pub(super) const REPLENISHED: &str = "replenished";
pub(super) const MAX_REPLENISH: &str = "max_replenish";
pub(super) const VERSION: &str = "version";
pub(super) const ITEMS: &str = "items";
pub(super) const STATE: &str = "state";
pub(super) const BODY: &str = "body";
pub(super) const TRACKING_NUMBER: &str = "tracking_number";
pub(super) const FUNCTION: &str = "function";
pub(super) const KEY: &str = "key";
pub(super) const EMITTED: &str = "emitted";
pub(super) const PUBLISHED: &str = "published";
/// Why an outbox entry was set aside (only on set-aside records).
pub(super) const SET_ASIDE: &str = "set_aside";
/// When it was set aside, Unix milliseconds.
pub(super) const SET_ASIDE_AT: &str = "set_aside_at";
pub(super) use super::tables::EXPIRES_AT;

pub(super) fn processed_key(function: Function, key: &str) -> String {
    format!("{}#{key}", function.name())
}

pub(super) fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Records and events are plain data: serializing cannot fail.
    serde_json::to_string(value).expect("record serializes")
}

/// Typed access to a stored item's attributes; anything missing or of the
/// wrong type is `Corrupt`.
pub(super) struct Fields<'a> {
    /// The table the item came from, named in errors.
    table: &'a str,
    /// The item being read.
    item: &'a Item,
}

impl<'a> Fields<'a> {
    pub(super) fn of(table: &'a str, item: &'a Item) -> Self {
        Self { table, item }
    }

    pub(super) fn text(&self, name: &str) -> Result<&'a str, StoreError> {
        match self.item.get(name) {
            Some(AttributeValue::S(text)) => Ok(text),
            _ => Err(corrupt(self.table, format!("attribute '{name}' is missing or not a string"))),
        }
    }

    pub(super) fn number(&self, name: &str) -> Result<u64, StoreError> {
        match self.item.get(name) {
            Some(AttributeValue::N(text)) => text
                .parse()
                .map_err(|_| corrupt(self.table, format!("attribute '{name}' = {text} is not a non-negative integer"))),
            _ => Err(corrupt(self.table, format!("attribute '{name}' is missing or not a number"))),
        }
    }

    pub(super) fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
        serde_json::from_str(self.text(name)?)
            .map_err(|error| corrupt(self.table, format!("attribute '{name}': {error}")))
    }

    pub(super) fn order_id(&self, name: &str) -> Result<OrderId, StoreError> {
        OrderId::parse(self.text(name)?).map_err(|error| corrupt(self.table, error))
    }
}

pub(super) fn stock_item(level: &StockLevel) -> Item {
    Item::from([
        (STOCK.partition_key.name.to_owned(), AttributeValue::S(level.sku.as_str().to_owned())),
        (SEEDED.to_owned(), number(level.seeded)),
        (AVAILABLE.to_owned(), number(level.available)),
        (RESERVED.to_owned(), number(level.reserved)),
        (SHIPPED.to_owned(), number(level.shipped)),
        (REPLENISHED.to_owned(), number(level.replenished)),
        (MAX_REPLENISH.to_owned(), number(level.max_replenish)),
    ])
}

pub(super) fn stock_level(table: &str, item: &Item) -> Result<StockLevel, StoreError> {
    let fields = Fields::of(table, item);
    Ok(StockLevel {
        sku: Sku::parse(fields.text(STOCK.partition_key.name)?).map_err(|error| corrupt(table, error))?,
        seeded: fields.number(SEEDED)?,
        available: fields.number(AVAILABLE)?,
        reserved: fields.number(RESERVED)?,
        shipped: fields.number(SHIPPED)?,
        replenished: fields.number(REPLENISHED)?,
        max_replenish: fields.number(MAX_REPLENISH)?,
        version: fields.number(VERSION)?,
    })
}

pub(super) fn reservation_item(reservation: &Reservation) -> Item {
    Item::from([
        (RESERVATIONS.partition_key.name.to_owned(), AttributeValue::S(reservation.order_id.to_string())),
        (ITEMS.to_owned(), AttributeValue::S(to_json(&reservation.items))),
        (STATE.to_owned(), AttributeValue::S(reservation.state.as_str().to_owned())),
    ])
}

pub(super) fn reservation(table: &str, item: &Item) -> Result<Reservation, StoreError> {
    let fields = Fields::of(table, item);
    let name = fields.text(STATE)?;
    let state =
        ReservationState::parse(name).ok_or_else(|| corrupt(table, format!("unknown reservation state '{name}'")))?;
    Ok(Reservation {
        order_id: fields.order_id(RESERVATIONS.partition_key.name)?,
        items: fields.json(ITEMS)?,
        state,
        version: fields.number(VERSION)?,
    })
}

pub(super) fn order_item(order: &OrderRecord) -> Item {
    Item::from([
        (ORDERS.partition_key.name.to_owned(), AttributeValue::S(order.order_id.to_string())),
        (BODY.to_owned(), AttributeValue::S(to_json(order))),
    ])
}

pub(super) fn order(table: &str, item: &Item) -> Result<OrderRecord, StoreError> {
    let fields = Fields::of(table, item);
    let mut order: OrderRecord = fields.json(BODY)?;
    order.version = fields.number(VERSION)?;
    Ok(order)
}

pub(super) fn shipment_item(shipment: &Shipment) -> Item {
    Item::from([
        (SHIPMENTS.partition_key.name.to_owned(), AttributeValue::S(shipment.order_id.to_string())),
        (TRACKING_NUMBER.to_owned(), AttributeValue::S(shipment.tracking_number.clone())),
    ])
}

pub(super) fn shipment(table: &str, item: &Item) -> Result<Shipment, StoreError> {
    let fields = Fields::of(table, item);
    Ok(Shipment {
        order_id: fields.order_id(SHIPMENTS.partition_key.name)?,
        tracking_number: fields.text(TRACKING_NUMBER)?.to_owned(),
        version: fields.number(VERSION)?,
    })
}

pub(super) fn emitted(table: &str, item: &Item) -> Result<Vec<Event>, StoreError> {
    Fields::of(table, item).json(EMITTED)
}
