//! Checks a JSON value against the subset of JSON Schema that schemars generates for the spec
//! types, collecting every problem with its path and a message that says what to do.
//!
//! Only the keywords in [`SUPPORTED`] are understood; a test walks the generated schema and
//! fails if it ever uses another one, so a keyword can never be silently skipped.

use serde_json::{Map, Value};

use crate::problems::{Problem, child, index};

/// Keywords this checker enforces.
const ENFORCED: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "items",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "anyOf",
    "oneOf",
];
/// Keywords that carry no constraint (documentation, annotations).
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$defs",
    "title",
    "description",
    "default",
    "format",
    "examples",
];

/// Every keyword in `schema` (recursively) that this checker does not understand.
pub fn unsupported_keywords(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_unsupported(schema, &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_unsupported(schema: &Value, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    for (k, v) in obj {
        if !ENFORCED.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
            out.push(k.clone());
        }
        match k.as_str() {
            "properties" | "$defs" => {
                for sub in v.as_object().into_iter().flat_map(|m| m.values()) {
                    collect_unsupported(sub, out);
                }
            }
            "items" | "additionalProperties" => collect_unsupported(v, out),
            "anyOf" | "oneOf" => {
                for sub in v.as_array().into_iter().flatten() {
                    collect_unsupported(sub, out);
                }
            }
            _ => {}
        }
    }
}

/// Every `$ref` in `root` (recursively) that does not name one of its `$defs` (a test holds
/// the generated schema to none).
#[cfg(test)]
pub fn unresolved_refs(root: &Value) -> Vec<String> {
    fn walk(root: &Value, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str)
                    && resolve_ref(root, r).is_none()
                {
                    out.push(r.to_string());
                }
                for sub in m.values() {
                    walk(root, sub, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(root, x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out.dedup();
    out
}

fn resolve_ref<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    r.strip_prefix("#/$defs/")
        .and_then(|name| root.get("$defs")?.get(name))
}

/// Checks `value` against `root` (a schema with `$defs`), returning every problem.
pub fn check(root: &Value, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    Checker { root }.check(root, value, "$", &mut problems);
    problems
}

struct Checker<'a> {
    root: &'a Value,
}

impl Checker<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => resolve_ref(self.root, r).unwrap_or(&Value::Null),
            None => schema,
        }
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Problem>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str)
            && resolve_ref(self.root, r).is_none()
        {
            // Never a silent pass: a schema that points nowhere checks nothing.
            out.push(Problem::new(
                path,
                format!("cannot be checked: the spec schema refers to {r}, which it does not define (a Ferry bug; please report it)"),
            ));
            return;
        }
        let schema = self.resolve(schema);
        let Some(s) = schema.as_object() else {
            return;
        };
        if let Some(branches) = s.get("anyOf") {
            self.check_branches(branches, value, path, out);
            return;
        }
        if let Some(branches) = s.get("oneOf") {
            self.check_one_of(branches, value, path, out);
            return;
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            out.push(Problem::new(
                path,
                format!("must be one of {}; got {}", list(allowed), short(value)),
            ));
            return;
        }
        if let Some(c) = s.get("const")
            && c != value
        {
            out.push(Problem::new(
                path,
                format!("must be {}; got {}", short(c), short(value)),
            ));
            return;
        }
        if let Some(t) = s.get("type")
            && !type_matches(t, value)
        {
            out.push(Problem::new(
                path,
                format!("expected {}; got {}", type_words(t), describe(value)),
            ));
            return;
        }
        match value {
            Value::Object(map) => self.check_object(s, map, path, out),
            Value::Array(items) => self.check_array(s, items, path, out),
            Value::Number(n) => check_number(s, n, path, out),
            Value::String(text) => check_string(s, text, path, out),
            _ => {}
        }
    }

    /// `oneOf`: exactly one branch matches (none: as `anyOf` reports; more: ambiguous).
    fn check_one_of(&self, branches: &Value, value: &Value, path: &str, out: &mut Vec<Problem>) {
        let matching = branches
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| {
                let mut p = Vec::new();
                self.check(b, value, path, &mut p);
                p.is_empty()
            })
            .count();
        match matching {
            0 => self.check_branches(branches, value, path, out),
            1 => {}
            n => out.push(Problem::new(
                path,
                format!(
                    "{} matches more than one of the allowed forms ({n}); it must match exactly one",
                    describe(value)
                ),
            )),
        }
    }

    fn check_branches(&self, branches: &Value, value: &Value, path: &str, out: &mut Vec<Problem>) {
        let branches: Vec<&Value> = branches.as_array().into_iter().flatten().collect();
        let mut results = Vec::new();
        for b in &branches {
            let mut p = Vec::new();
            self.check(b, value, path, &mut p);
            if p.is_empty() {
                return;
            }
            results.push(p);
        }
        // All branches are constants: say which values are allowed.
        let consts: Vec<Value> = branches
            .iter()
            .filter_map(|b| self.resolve(b).get("const").cloned())
            .collect();
        if !consts.is_empty() && consts.len() == branches.len() {
            out.push(Problem::new(
                path,
                format!("must be one of {}; got {}", list(&consts), short(value)),
            ));
            return;
        }
        // `T or null` (an optional field): report what is wrong against T.
        let non_null: Vec<usize> = branches
            .iter()
            .enumerate()
            .filter(|(_, b)| self.resolve(b).get("type") != Some(&Value::from("null")))
            .map(|(i, _)| i)
            .collect();
        if let [only] = non_null[..] {
            out.append(&mut results[only]);
            return;
        }
        out.push(Problem::new(
            path,
            format!("{} matches none of the allowed forms", describe(value)),
        ));
    }

    fn check_object(
        &self,
        s: &Map<String, Value>,
        map: &Map<String, Value>,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        let empty = Map::new();
        let props = s
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(name) {
                let what = props
                    .get(name)
                    .and_then(|p| {
                        p.get("description")
                            .or_else(|| self.resolve(p).get("description"))
                    })
                    .and_then(Value::as_str)
                    .map(first_sentence)
                    .unwrap_or_default();
                out.push(Problem::new(
                    child(path, name),
                    format!("missing required field; add it ({what})"),
                ));
            }
        }
        for (key, v) in map {
            if let Some(sub) = props.get(key) {
                self.check(sub, v, &child(path, key), out);
            } else {
                match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        out.push(Problem::new(child(path, key), unknown_field(key, props)))
                    }
                    Some(extra @ Value::Object(_)) => self.check(extra, v, &child(path, key), out),
                    _ => {}
                }
            }
        }
    }

    fn check_array(
        &self,
        s: &Map<String, Value>,
        items: &[Value],
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            out.push(Problem::new(
                path,
                format!("needs at least {min} item(s); got {}", items.len()),
            ));
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && (items.len() as u64) > max
        {
            out.push(Problem::new(
                path,
                format!("takes at most {max} item(s); got {}", items.len()),
            ));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &index(path, i), out);
            }
        }
    }
}

fn check_number(
    s: &Map<String, Value>,
    n: &serde_json::Number,
    path: &str,
    out: &mut Vec<Problem>,
) {
    let Some(x) = n.as_f64() else { return };
    if let Some(min) = s.get("minimum").and_then(Value::as_f64)
        && x < min
    {
        out.push(Problem::new(
            path,
            format!("must be at least {min}; got {n}"),
        ));
    }
    // The integer formats the schema's types carry bound what the field can hold: report an
    // overflow here, at its path, rather than as the conversion's error at `$`.
    let format_max = match s.get("format").and_then(Value::as_str) {
        Some("uint8") => Some(f64::from(u8::MAX)),
        Some("uint16") => Some(f64::from(u16::MAX)),
        Some("uint32") => Some(f64::from(u32::MAX)),
        Some("int32") => Some(f64::from(i32::MAX)),
        Some("uint64" | "uint") => Some(u64::MAX as f64),
        Some("int64" | "int") => Some(i64::MAX as f64),
        _ => None,
    };
    if let Some(max) = format_max
        && x > max
    {
        out.push(Problem::new(
            path,
            format!("is too large for this field (at most {max}); got {n}"),
        ));
        return;
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64)
        && x > max
    {
        out.push(Problem::new(
            path,
            format!("must be at most {max}; got {n}"),
        ));
    }
}

fn check_string(s: &Map<String, Value>, text: &str, path: &str, out: &mut Vec<Problem>) {
    let len = text.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        out.push(Problem::new(
            path,
            format!("must be at least {min} character(s) long"),
        ));
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        out.push(Problem::new(
            path,
            format!("must be at most {max} characters long; got {len}"),
        ));
    }
}

fn type_matches(t: &Value, value: &Value) -> bool {
    match t {
        Value::Array(ts) => ts.iter().any(|t| type_matches(t, value)),
        Value::String(t) => match t.as_str() {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            _ => false,
        },
        _ => false,
    }
}

fn type_words(t: &Value) -> String {
    let word = |t: &str| match t {
        "object" => "an object".to_string(),
        "array" => "a list".to_string(),
        "string" => "a string".to_string(),
        "boolean" => "true or false".to_string(),
        "null" => "null".to_string(),
        "number" => "a number".to_string(),
        "integer" => "a whole number".to_string(),
        other => other.to_string(),
    };
    match t {
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(word)
            .collect::<Vec<_>>()
            .join(" or "),
        Value::String(t) => word(t),
        other => other.to_string(),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) if n.is_f64() => format!("the number {n}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", short(&Value::from(s.as_str()))),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn list(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_sentence(text: &str) -> String {
    text.split('\n')
        .next()
        .unwrap_or(text)
        .trim_end_matches('.')
        .to_string()
}

fn unknown_field(key: &str, props: &Map<String, Value>) -> String {
    let shown = crate::problems::echo(key);
    let key = shown.as_str();
    let known: Vec<&str> = props.keys().map(String::as_str).collect();
    let best = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= if k.len() >= 5 { 2 } else { 1 } && *d < key.len())
        .min();
    match best {
        Some((_, k)) => format!("unknown field `{key}`; did you mean `{k}`?"),
        None => format!(
            "unknown field `{key}`; remove it (allowed here: {})",
            known.join(", ")
        ),
    }
}

/// Levenshtein distance, for "did you mean" hints on misspelt field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("steps", "stpes"), 2);
        assert_eq!(edit_distance("steps", "step"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn optional_ref_reports_inner_problem() {
        let root = json!({
            "type": "object",
            "properties": {"a": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}},
            "$defs": {"A": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "additionalProperties": false}}
        });
        let p = check(&root, &json!({"a": {"n": 0, "x": 1}}));
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "a.n: must be at least 1; got 0",
                "a.x: unknown field `x`; remove it (allowed here: n)"
            ]
        );
        assert!(check(&root, &json!({"a": null})).is_empty());
    }

    #[test]
    fn one_of_needs_exactly_one_branch() {
        let root = json!({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "integer", "maximum": 10}]});
        assert!(
            check(&root, &json!(20)).is_empty(),
            "only the first matches"
        );
        let p = check(&root, &json!(5));
        assert_eq!(p.len(), 1, "both match: {p:?}");
        assert!(p[0].message.contains("more than one"), "{p:?}");
        let any = json!({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "integer", "maximum": 10}]});
        assert!(check(&any, &json!(5)).is_empty());
    }

    #[test]
    fn an_unresolved_ref_is_a_problem_not_a_pass() {
        let root = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}});
        let p = check(&root, &json!({"a": 1}));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("#/$defs/Missing"), "{p:?}");
        assert!(unresolved_refs(&root).contains(&"#/$defs/Missing".to_string()));
        assert!(unresolved_refs(&crate::spec::json_schema()).is_empty());
    }

    #[test]
    fn const_branches_list_allowed_values() {
        let root =
            json!({"oneOf": [{"type": "string", "const": "a"}, {"type": "string", "const": "b"}]});
        let p = check(&root, &json!("c"));
        assert_eq!(p[0].to_string(), "$: must be one of a, b; got \"c\"");
    }
}
