//! The migration spec as users meet it: the checked-in schema and examples.

use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    ferry_tests::repo_root().join(path)
}

#[test]
fn checked_in_schema_is_up_to_date() {
    let on_disk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("examples/migration.schema.json")).expect("read schema"),
    )
    .expect("schema is JSON");
    assert!(
        on_disk == ferry_core::spec::json_schema(),
        "examples/migration.schema.json is stale: run `make schema` and commit it"
    );
}

#[test]
fn examples_validate() {
    for name in ["examples/minimal.json", "examples/full.json"] {
        let text = std::fs::read_to_string(repo(name)).expect("read example");
        if let Err(problems) = ferry_core::spec::parse(&text) {
            panic!("{name} does not validate: {problems}");
        }
    }
}

#[test]
fn full_example_sets_every_section() {
    let text = std::fs::read_to_string(repo("examples/full.json")).expect("read example");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let schema = ferry_core::spec::json_schema();
    let props = schema["properties"].as_object().expect("properties");
    for key in props.keys() {
        assert!(
            value.get(key).is_some(),
            "examples/full.json should show `{key}`"
        );
    }
}
