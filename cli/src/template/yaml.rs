//! A small YAML emitter for the template: maps keep their order (the
//! template reads top-down) and scalars that YAML could misread are quoted.

use std::fmt::Write as _;

/// A YAML value whose maps keep their order (the template reads top-down).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

pub(super) fn s(value: impl Into<String>) -> Node {
    Node::Str(value.into())
}

pub(super) fn int(value: i64) -> Node {
    Node::Int(value)
}

pub(super) fn list(items: impl IntoIterator<Item = Node>) -> Node {
    Node::List(items.into_iter().collect())
}

pub(super) fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Node {
    Node::Map(entries.into_iter().map(|(key, value)| (key.into(), value)).collect())
}

pub(super) fn reference(name: &str) -> Node {
    map([("Ref", s(name))])
}

pub(super) fn get_att(resource: &str, attribute: &str) -> Node {
    map([("Fn::GetAtt", list([s(resource), s(attribute)]))])
}

pub(super) fn sub(template: impl Into<String>) -> Node {
    map([("Fn::Sub", s(template))])
}

pub(super) fn equals(left: Node, right: Node) -> Node {
    map([("Fn::Equals", list([left, right]))])
}

pub(super) fn fn_if(condition: &str, then: Node, otherwise: Node) -> Node {
    map([("Fn::If", list([s(condition), then, otherwise]))])
}

pub(super) fn not(condition: Node) -> Node {
    map([("Fn::Not", list([condition]))])
}

pub(super) fn and(conditions: impl IntoIterator<Item = Node>) -> Node {
    map([("Fn::And", list(conditions))])
}

/// A reference to a named condition, inside another condition.
pub(super) fn condition(name: &str) -> Node {
    map([("Condition", s(name))])
}

/// `Fn::Split` of a comma-separated parameter into a list.
pub(super) fn split_list(parameter: &str) -> Node {
    map([("Fn::Split", list([s(","), reference(parameter)]))])
}

/// `value` when `condition` holds, nothing otherwise.
pub(super) fn when(condition: &str, value: Node) -> Node {
    fn_if(condition, value, reference("AWS::NoValue"))
}

/// Writes `node` in block style at `indent` spaces (a map or a list).
pub(super) fn write_block(out: &mut String, node: &Node, indent: usize) {
    match node {
        Node::Map(entries) => {
            for (key, value) in entries {
                let _ = write!(out, "{:indent$}{}:", "", scalar(key));
                write_value(out, value, indent);
            }
        }
        Node::List(items) => {
            for item in items {
                let _ = write!(out, "{:indent$}-", "");
                match item {
                    // A non-empty map starts on the dash's line: `- Key: value`.
                    Node::Map(entries) if !entries.is_empty() => {
                        let mut nested = String::new();
                        write_block(&mut nested, item, indent + 2);
                        out.push(' ');
                        out.push_str(&nested[indent + 2..]);
                    }
                    Node::List(items) if !items.is_empty() => {
                        out.push('\n');
                        write_block(out, item, indent + 2);
                    }
                    _ => write_value(out, item, indent),
                }
            }
        }
        scalar_node => write_value(out, scalar_node, indent),
    }
}

/// Writes what follows `key:` or `-`: an inline scalar, or a nested block.
pub(super) fn write_value(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Str(text) => {
            let _ = writeln!(out, " {}", scalar(text));
        }
        Node::Int(number) => {
            let _ = writeln!(out, " {number}");
        }
        Node::Bool(flag) => {
            let _ = writeln!(out, " {flag}");
        }
        Node::List(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        nested => {
            out.push('\n');
            write_block(out, nested, indent + 2);
        }
    }
}

/// A string as a YAML scalar: plain when no YAML reader (1.1 or 1.2) could
/// take it for anything else, double-quoted (JSON escaping) otherwise.
pub(super) fn scalar(text: &str) -> String {
    const SPECIAL_WORDS: &[&str] =
        &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "inf", "nan", ".inf", ".nan"];
    let plain = text.chars().next().is_some_and(|first| first.is_ascii_alphabetic() || first == '/')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || " _-./:(),".contains(c))
        && !text.contains(": ")
        && !text.ends_with([':', ' '])
        && !SPECIAL_WORDS.contains(&text.to_ascii_lowercase().as_str());
    if plain { text.to_owned() } else { serde_json::Value::from(text).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_that_could_be_misread_are_quoted() {
        assert_eq!(scalar("dynamodb:GetItem"), "dynamodb:GetItem");
        assert_eq!(scalar("AWS::Serverless-2016-10-31"), "AWS::Serverless-2016-10-31");
        assert_eq!(scalar("2010-09-09"), "\"2010-09-09\"");
        assert_eq!(scalar("No"), "\"No\"");
        assert_eq!(scalar("y"), "\"y\"");
        assert_eq!(scalar("N"), "\"N\"");
        assert_eq!(scalar(""), "\"\"");
        assert_eq!(scalar("*"), "\"*\"");
        assert_eq!(scalar("${NamePrefix}stock"), "\"${NamePrefix}stock\"");
        assert_eq!(scalar("/orders/{order_id}"), "\"/orders/{order_id}\"");
        assert_eq!(scalar("a: b"), "\"a: b\"");
    }

    #[test]
    fn blocks_nest_maps_in_lists() {
        let node = map([("A", list([map([("B", s("x")), ("C", list([s("v")]))]), s("z")])), ("D", map::<&str>([]))]);
        let mut out = String::new();
        write_block(&mut out, &node, 0);
        assert_eq!(out, "A:\n  - B: x\n    C:\n      - v\n  - z\nD: {}\n");
    }
}
