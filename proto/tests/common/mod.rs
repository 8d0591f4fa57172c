//! Helpers shared by the model tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use proto::model::{Job, Resources, Task, TaskGroup};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Nomad's `GET /v1/job/:id` response for a service job.
pub const JOB_JSON: &str = include_str!("../fixtures/job.json");
/// Nomad's `GET /v1/allocation/:id` response.
pub const ALLOCATION_JSON: &str = include_str!("../fixtures/allocation.json");
/// Nomad's `GET /v1/node/:id` response.
pub const NODE_JSON: &str = include_str!("../fixtures/node.json");
/// Nomad's `GET /v1/evaluation/:id` response.
pub const EVALUATION_JSON: &str = include_str!("../fixtures/evaluation.json");
/// Nomad's `GET /v1/deployment/:id` response.
pub const DEPLOYMENT_JSON: &str = include_str!("../fixtures/deployment.json");

/// Parses `json` as `T`, panicking with the error.
pub fn parse<T: DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).unwrap_or_else(|error| panic!("cannot parse: {error}\n{json}"))
}

/// Parses `json`, serializes the result and parses that again, asserting
/// that both parses agree. Returns the value.
pub fn round_trip<T>(json: &str) -> T
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let first: T = parse(json);
    let serialized = serde_json::to_string(&first).expect("serialize");
    let second: T = parse(&serialized);
    assert_eq!(first, second, "value changed through serialization");
    first
}

/// Asserts that every key `ours` has also appears, at the same place, in
/// `nomad`: the model does not invent or misspell field names. Only the
/// first element of arrays is compared; paths in `skip` are not descended
/// into.
pub fn assert_names_match(ours: &Value, nomad: &Value, path: &str, skip: &[&str]) {
    if skip.contains(&path) {
        return;
    }
    match (ours, nomad) {
        (Value::Object(ours), Value::Object(nomad)) => {
            for (key, value) in ours {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let Some(theirs) = nomad.get(key) else {
                    panic!("{child}: serialized by the model but absent from Nomad's JSON");
                };
                assert_names_match(value, theirs, &child, skip);
            }
        }
        (Value::Array(ours), Value::Array(nomad)) => {
            if let (Some(ours), Some(nomad)) = (ours.first(), nomad.first()) {
                assert_names_match(ours, nomad, &format!("{path}[0]"), skip);
            }
        }
        _ => {}
    }
}

/// Every JSON pointer of `value` (objects and arrays, at any depth).
pub fn pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, prefix: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let pointer = format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1"));
                    out.push(pointer.clone());
                    walk(child, pointer, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let pointer = format!("{prefix}/{i}");
                    out.push(pointer.clone());
                    walk(child, pointer, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

/// Asserts that `json` still parses as `T` when any single value in it, at
/// any depth, is replaced by `null`. Returns how many variants were tried.
pub fn assert_parses_with_each_value_null<T: DeserializeOwned>(json: &str) -> usize {
    let original: Value = parse(json);
    let pointers = pointers(&original);
    for pointer in &pointers {
        let mut variant = original.clone();
        *variant.pointer_mut(pointer).expect("pointer exists") = Value::Null;
        if let Err(error) = serde_json::from_value::<T>(variant) {
            panic!("null at {pointer} rejected: {error}");
        }
    }
    pointers.len()
}

/// Fields whose JSON object is a map keyed by data (metadata, task names,
/// ...) rather than a struct: no unknown field is added to them, though their
/// values are still visited.
const MAP_FIELDS: &[&str] = &[
    "Meta",
    "Env",
    "Attributes",
    "Links",
    "Details",
    "TaskStates",
    "Drivers",
    "Tasks",
    "TaskLifecycles",
    "QueuedAllocations",
    "ClassEligibility",
    "FailedTGAllocs",
    "TaskGroups",
    "Summary",
    "Volumes",
    "HostVolumes",
    "HostNetworks",
];

/// Adds an unknown field to every struct-shaped object of `value`.
pub fn add_unknown_fields(value: &mut Value) {
    add_unknown_fields_under(value, "");
}

fn add_unknown_fields_under(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            for (child_key, child) in map.iter_mut() {
                // The values of a data-keyed map are reached under the map's
                // own key: they are structs, whatever their key.
                let child_key = if MAP_FIELDS.contains(&key) {
                    ""
                } else {
                    child_key
                };
                add_unknown_fields_under(child, child_key);
            }
            if !MAP_FIELDS.contains(&key) {
                map.insert(
                    "FieldFromTheFuture".to_owned(),
                    serde_json::json!({ "Nested": [1, "two", null] }),
                );
            }
        }
        Value::Array(items) => {
            for item in items {
                add_unknown_fields_under(item, "");
            }
        }
        _ => {}
    }
}

/// A task named `name` running `raw_exec`.
pub fn task(name: &str) -> Task {
    let mut config = serde_json::Map::new();
    config.insert("command".to_owned(), Value::from("/bin/sleep"));
    config.insert("args".to_owned(), serde_json::json!(["60"]));
    Task {
        name: name.to_owned(),
        driver: "raw_exec".to_owned(),
        config,
        resources: Resources {
            cpu: 200,
            memory_mb: 128,
            ..Resources::default()
        },
        ..Task::default()
    }
}

/// A group named `name` with one task.
pub fn group(name: &str) -> TaskGroup {
    TaskGroup {
        name: name.to_owned(),
        count: 2,
        tasks: vec![task("main")],
        ..TaskGroup::default()
    }
}

/// A minimal service job as a user would submit it (not canonicalized).
pub fn job(id: &str) -> Job {
    Job {
        id: id.to_owned(),
        task_groups: vec![group("web")],
        meta: BTreeMap::from([("team".to_owned(), "core".to_owned())]),
        ..Job::default()
    }
}

/// [`job`], canonicalized.
pub fn canonical_job(id: &str) -> Job {
    let mut job = job(id);
    job.canonicalize();
    job
}
