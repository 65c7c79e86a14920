//! The order domain: validated newtypes (ARCHITECTURE.md §10) and the order lifecycle (§3).
//!
//! Every newtype can only be built through `parse`, so a value of the type is
//! proof that the rule holds; handlers never re-check.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// One rule that a field of a request broke, located by JSON pointer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer to the bad field (`/items/0/sku`); empty for the whole body.
    pub field: String,
    /// What is wrong with it, in words a person can act on.
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), detail: detail.into() }
    }
}

/// Identifies an order everywhere: the HTTP API, event `subject`, AMQP `correlation_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// Time-ordered (v7) so ids sort by creation in stores and logs.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Only the canonical 36-character hyphenated form (openapi.yaml's `uuid`).
    pub fn parse(text: &str) -> Result<Self, String> {
        Some(text)
            .filter(|text| text.len() == 36)
            .and_then(|text| Uuid::try_parse(text).ok())
            .map(Self)
            .ok_or(())
            .map_err(|_| format!("'{text}' is not an order id (a UUID such as 0192f3c4-1e2a-7c3b-9a4d-5e6f7a8b9c0d)"))
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a string newtype whose only constructor is a validating `parse`,
/// and whose `Deserialize` goes through that same `parse`.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(text).map(|()| Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_string!(
    /// 1–64 characters.
    CustomerId,
    |text| match text.chars().count() {
        1..=64 => Ok(()),
        0 => Err("must not be empty".into()),
        n => Err(format!("must be at most 64 characters, got {n}")),
    }
);

validated_string!(
    /// `^[A-Z0-9-]{1,32}$`: capital letters, digits and dashes.
    Sku,
    |text| {
        if text.is_empty() || text.len() > 32 {
            Err(format!("must be 1 to 32 characters, got {}", text.chars().count()))
        } else if !text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-') {
            Err("may contain only capital letters A-Z, digits and '-'".into())
        } else {
            Ok(())
        }
    }
);

validated_string!(
    /// ISO 3166-1 alpha-2 shape: two capital letters.
    Country,
    |text| {
        if text.len() == 2 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(())
        } else {
            Err(format!("must be two capital letters (ISO 3166-1 alpha-2), got '{text}'"))
        }
    }
);

validated_string!(
    /// A non-empty line of an address, at most 200 characters (kept as sent).
    AddressLine,
    |text| match text.chars().count() {
        0 => Err("must not be empty".into()),
        1..=200 => Ok(()),
        n => Err(format!("must be at most 200 characters, got {n}")),
    }
);

/// Units of one SKU on one order line: 1–1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1000;

    pub fn parse(value: i64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(units @ 1..=Self::MAX) => Ok(Self(units)),
            _ => Err(format!("must be an integer from 1 to {}, got {value}", Self::MAX)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(i64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// What is ordered.
    pub sku: Sku,
    /// How many units of it.
    pub quantity: Quantity,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The recipient.
    pub name: AddressLine,
    /// Street and number.
    pub line1: AddressLine,
    /// City.
    pub city: AddressLine,
    /// Kept as sent: formats differ by country.
    pub postal_code: AddressLine,
    /// Decides whether `ship-order` delivers (`SHIP_COUNTRIES`).
    pub country: Country,
}

/// Units wanted per SKU, summed over an order's lines (an order may name a SKU twice).
pub fn units_per_sku(items: &[Item]) -> BTreeMap<Sku, u64> {
    let mut units = BTreeMap::new();
    for item in items {
        *units.entry(item.sku.clone()).or_insert(0) += u64::from(item.quantity.get());
    }
    units
}

/// An order as the customer placed it: what `POST /orders` accepts after validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Who orders; also scopes the `Idempotency-Key`.
    pub customer_id: CustomerId,
    /// 1 to `MAX_ITEMS` lines; a SKU may appear on more than one.
    pub items: Vec<Item>,
    /// Where to deliver.
    pub shipping_address: Address,
}

impl NewOrder {
    pub const MAX_ITEMS: usize = 50;

    /// Validates an untyped JSON body, reporting every bad field at once
    /// (a person fixing a request wants the whole list, not one at a time).
    pub fn parse(body: &serde_json::Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(object) = body.as_object() else {
            return Err(vec![FieldError::new("", "the body must be a JSON object")]);
        };
        for key in object.keys() {
            if !matches!(key.as_str(), "customer_id" | "items" | "shipping_address") {
                errors.push(FieldError::new(format!("/{}", pointer_token(key)), "unknown field"));
            }
        }
        let customer_id = string_field(object.get("customer_id"), "/customer_id", CustomerId::parse, &mut errors);
        let items = parse_items(object.get("items"), &mut errors);
        let shipping_address = parse_address(object.get("shipping_address"), &mut errors);
        match (customer_id, items, shipping_address) {
            (Some(customer_id), Some(items), Some(shipping_address)) if errors.is_empty() => {
                Ok(Self { customer_id, items, shipping_address })
            }
            _ => Err(errors),
        }
    }
}

fn string_field<T>(
    value: Option<&serde_json::Value>,
    pointer: &str,
    parse: fn(&str) -> Result<T, String>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match value {
        None => {
            errors.push(FieldError::new(pointer, "is required"));
            None
        }
        Some(serde_json::Value::String(text)) => {
            parse(text).map_err(|detail| errors.push(FieldError::new(pointer, detail))).ok()
        }
        Some(other) => {
            errors.push(FieldError::new(pointer, format!("must be a string, got {}", json_kind(other))));
            None
        }
    }
}

fn parse_items(value: Option<&serde_json::Value>, errors: &mut Vec<FieldError>) -> Option<Vec<Item>> {
    let lines = match value {
        None => {
            errors.push(FieldError::new("/items", "is required"));
            return None;
        }
        Some(serde_json::Value::Array(lines)) => lines,
        Some(other) => {
            errors.push(FieldError::new("/items", format!("must be an array, got {}", json_kind(other))));
            return None;
        }
    };
    if lines.is_empty() || lines.len() > NewOrder::MAX_ITEMS {
        errors.push(FieldError::new(
            "/items",
            format!("must hold 1 to {} items, got {}", NewOrder::MAX_ITEMS, lines.len()),
        ));
        return None;
    }
    let errors_before = errors.len();
    let mut items = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let pointer = format!("/items/{index}");
        let Some(line) = line.as_object() else {
            errors.push(FieldError::new(pointer, format!("must be an object, got {}", json_kind(line))));
            continue;
        };
        for key in line.keys().filter(|key| !matches!(key.as_str(), "sku" | "quantity")) {
            errors.push(FieldError::new(format!("{pointer}/{}", pointer_token(key)), "unknown field"));
        }
        let sku = string_field(line.get("sku"), &format!("{pointer}/sku"), Sku::parse, errors);
        let quantity = match line.get("quantity") {
            None => {
                errors.push(FieldError::new(format!("{pointer}/quantity"), "is required"));
                None
            }
            // JSON Schema counts 2.0 as an integer, so a whole float is accepted too.
            Some(serde_json::Value::Number(number)) => match number.as_i64().or_else(|| whole(number.as_f64())) {
                Some(units) => Quantity::parse(units)
                    .map_err(|detail| errors.push(FieldError::new(format!("{pointer}/quantity"), detail)))
                    .ok(),
                None => {
                    errors.push(FieldError::new(
                        format!("{pointer}/quantity"),
                        format!("must be an integer from 1 to {}, got {number}", Quantity::MAX),
                    ));
                    None
                }
            },
            Some(other) => {
                errors.push(FieldError::new(
                    format!("{pointer}/quantity"),
                    format!("must be an integer, got {}", json_kind(other)),
                ));
                None
            }
        };
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            items.push(Item { sku, quantity });
        }
    }
    (errors.len() == errors_before).then_some(items)
}

fn parse_address(value: Option<&serde_json::Value>, errors: &mut Vec<FieldError>) -> Option<Address> {
    let object = match value {
        None => {
            errors.push(FieldError::new("/shipping_address", "is required"));
            return None;
        }
        Some(serde_json::Value::Object(object)) => object,
        Some(other) => {
            errors.push(FieldError::new("/shipping_address", format!("must be an object, got {}", json_kind(other))));
            return None;
        }
    };
    const FIELDS: [&str; 5] = ["name", "line1", "city", "postal_code", "country"];
    for key in object.keys().filter(|key| !FIELDS.contains(&key.as_str())) {
        errors.push(FieldError::new(format!("/shipping_address/{}", pointer_token(key)), "unknown field"));
    }
    let line = |key: &str, errors: &mut Vec<FieldError>| {
        string_field(object.get(key), &format!("/shipping_address/{key}"), AddressLine::parse, errors)
    };
    let name = line("name", errors);
    let line1 = line("line1", errors);
    let city = line("city", errors);
    let postal_code = line("postal_code", errors);
    let country = string_field(object.get("country"), "/shipping_address/country", Country::parse, errors);
    Some(Address { name: name?, line1: line1?, city: city?, postal_code: postal_code?, country: country? })
}

fn whole(number: Option<f64>) -> Option<i64> {
    // The cast is exact: `number` is whole and within ±1e15.
    number.filter(|n| n.fract() == 0.0 && n.abs() < 1e15).map(|n| n as i64)
}

/// A member name as a JSON Pointer token (RFC 6901: `~` → `~0`, `/` → `~1`).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Where an order stands in the saga. `Shipped` and `Cancelled` are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    AwaitingStock,
    Reserved,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    /// Every status, in saga order.
    pub const ALL: &'static [OrderStatus] =
        &[Self::Pending, Self::AwaitingStock, Self::Reserved, Self::Shipped, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::AwaitingStock => "AWAITING_STOCK",
            Self::Reserved => "RESERVED",
            Self::Shipped => "SHIPPED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|status| status.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Shipped | Self::Cancelled)
    }

    /// Progress along the saga. Events may arrive out of order, so a status
    /// only ever moves to a higher rank: a late `inventory.insufficient`
    /// never pulls a `RESERVED` order back to `AWAITING_STOCK`.
    pub fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::AwaitingStock => 1,
            Self::Reserved => 2,
            Self::Shipped | Self::Cancelled => 3,
        }
    }
}

/// Why an order was cancelled; the `cancel_reason` of `GET /orders/{id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    UnknownSku,
    OutOfStock,
    ShipmentFailed,
    /// The saga deadline passed before the order shipped (ARCHITECTURE.md §7.9).
    TimedOut,
}

impl CancelReason {
    /// Every reason, as openapi.yaml's `CancelReason` enum lists them.
    pub const ALL: &'static [CancelReason] =
        &[Self::UnknownSku, Self::OutOfStock, Self::ShipmentFailed, Self::TimedOut];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSku => "unknown_sku",
            Self::OutOfStock => "out_of_stock",
            Self::ShipmentFailed => "shipment_failed",
            Self::TimedOut => "timed_out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|reason| reason.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({
            "customer_id": "c-1",
            "items": [{"sku": "WIDGET-1", "quantity": 2}],
            "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Paris", "postal_code": "75001", "country": "FR"}
        })
    }

    fn fields(body: serde_json::Value) -> Vec<String> {
        NewOrder::parse(&body).unwrap_err().into_iter().map(|error| error.field).collect()
    }

    #[test]
    fn a_valid_order_parses() {
        let order = NewOrder::parse(&valid()).unwrap();
        assert_eq!(order.items[0].quantity.get(), 2);
        assert_eq!(order.shipping_address.country.as_str(), "FR");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let body = json!({
            "customer_id": "",
            "items": [{"sku": "bad sku", "quantity": 0}, {"sku": "OK", "quantity": 1001}],
            "shipping_address": {"name": "", "line1": "x", "city": "y", "postal_code": "z", "country": "fr"},
            "extra": 1
        });
        assert_eq!(
            fields(body),
            [
                "/extra",
                "/customer_id",
                "/items/0/sku",
                "/items/0/quantity",
                "/items/1/quantity",
                "/shipping_address/name",
                "/shipping_address/country"
            ]
        );
    }

    #[test]
    fn bounds_are_inclusive() {
        assert!(Quantity::parse(1).is_ok() && Quantity::parse(1000).is_ok());
        assert!(Quantity::parse(0).is_err() && Quantity::parse(1001).is_err());
        assert!(CustomerId::parse(&"c".repeat(64)).is_ok() && CustomerId::parse(&"c".repeat(65)).is_err());
        assert!(Sku::parse(&"A".repeat(32)).is_ok() && Sku::parse(&"A".repeat(33)).is_err());
        let mut body = valid();
        body["items"] = json!(vec![json!({"sku": "A", "quantity": 1}); 50]);
        assert!(NewOrder::parse(&body).is_ok());
        body["items"] = json!(vec![json!({"sku": "A", "quantity": 1}); 51]);
        assert_eq!(fields(body), ["/items"]);
    }

    #[test]
    fn wrong_types_and_missing_fields_are_named() {
        assert_eq!(fields(json!({"customer_id": 5, "items": {}})), ["/customer_id", "/items", "/shipping_address"]);
        assert_eq!(fields(json!([1])), [""]);
        let mut body = valid();
        body["items"][0]["quantity"] = json!(1.5);
        assert_eq!(fields(body.clone()), ["/items/0/quantity"]);
        body["items"][0]["quantity"] = json!(2.0);
        assert_eq!(NewOrder::parse(&body).unwrap().items[0].quantity.get(), 2);
    }

    #[test]
    fn unknown_members_are_named_by_escaped_pointer() {
        let mut body = valid();
        body["a/b~c"] = json!(1);
        assert_eq!(fields(body), ["/a~1b~0c"]);
    }

    #[test]
    fn order_ids_must_be_canonical() {
        let id = OrderId::new().to_string();
        assert!(OrderId::parse(&id).is_ok());
        assert!(OrderId::parse(&id.replace('-', "")).is_err());
        assert!(OrderId::parse(&format!("{{{id}}}")).is_err());
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(OrderStatus::Reserved.rank() > OrderStatus::AwaitingStock.rank());
        assert!(OrderStatus::Shipped.is_terminal() && !OrderStatus::Reserved.is_terminal());
        assert_eq!(OrderStatus::parse("AWAITING_STOCK"), Some(OrderStatus::AwaitingStock));
    }
}
