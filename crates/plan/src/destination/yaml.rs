//! A JSON value written as block YAML (what CloudFormation templates are read as by people).
//! Strings are double-quoted with JSON's escapes, which YAML's double-quoted scalars share, so
//! no value can be misread (`on`, `1e3`, `!Ref` stay strings).

use serde_json::Value;

/// The value as a YAML document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    block(value, 0, &mut out);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
                    && !k.is_empty()
                {
                    k.clone()
                } else {
                    scalar(&Value::String(k.clone()))
                };
                if is_block(v) {
                    out.push_str(&format!("{pad}{key}:\n"));
                    block(v, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{key}: {}\n", scalar(v)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for v in items {
                if is_block(v) {
                    out.push_str(&format!("{pad}-\n"));
                    block(v, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(v)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_maps_and_lists_are_indented_and_strings_always_quoted() {
        let v = json!({
            "Resources": {
                "Web": {"Type": "AWS::ECS::Service", "Properties": {"DesiredCount": 2, "Tags": [], "Enabled": true}},
            },
            "List": ["on", {"Ref": "X"}, 1.5],
            "odd key": "a \"quoted\"\nline",
        });
        assert_eq!(
            to_yaml(&v),
            "List:\n  - \"on\"\n  -\n    Ref: \"X\"\n  - 1.5\nResources:\n  Web:\n    Properties:\n      DesiredCount: 2\n      Enabled: true\n      Tags: []\n    Type: \"AWS::ECS::Service\"\n\"odd key\": \"a \\\"quoted\\\"\\nline\"\n"
        );
    }
}
