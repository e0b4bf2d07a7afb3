//! The ImportJob CRD: the committed copies (`crds/` and the chart's) are exactly what the Rust
//! types generate, and the generated CRD follows the API server's rules for structural
//! schemas, printer columns, subresources and names (checked here, as no API server runs).

use bulk_import_core::crd::{crd_yaml, ImportJob};
use kube::CustomResourceExt;
use serde_json::{json, Map, Value};
use std::path::Path;

const COMMITTED: [&str; 2] = [
    "crds/importjobs.bulkimport.dev.yaml",
    "charts/bulk-import/crds/importjobs.bulkimport.dev.yaml",
];

#[test]
fn the_committed_crds_are_the_generated_one() {
    let generated = crd_yaml();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for rel in COMMITTED {
        let committed = std::fs::read_to_string(root.join(rel))
            .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"));
        if let Some(message) = drift(rel, &committed, &generated) {
            panic!("{message}");
        }
    }
}

/// Helm installs every file of the chart's `crds/`: a second copy there (which nothing
/// keeps equal to the generated one) would be what a fresh install gets.
#[test]
fn the_chart_ships_the_generated_crd_and_nothing_else() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/bulk-import/crds");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["importjobs.bulkimport.dev.yaml"]);
}

/// Why `committed` is not `generated`, with the way to fix it; `None` when they are equal.
fn drift(rel: &str, committed: &str, generated: &str) -> Option<String> {
    if committed == generated {
        return None;
    }
    let end = std::iter::repeat("<end of file>");
    let (line, ours, theirs) = committed
        .lines()
        .chain(end.clone())
        .zip(generated.lines().chain(end))
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i + 1, a, b))
        .unwrap_or((0, "", "")); // differing only in a final newline
    Some(format!(
        "{rel} differs from the CRD generated from core/src/crd.rs \
         (line {line}: committed {ours:?}, generated {theirs:?}).\n\
         Regenerate it: cargo run -p bulk-import-operator -- crd > crds/importjobs.bulkimport.dev.yaml\n\
         and copy it to the chart: cp crds/importjobs.bulkimport.dev.yaml charts/bulk-import/crds/"
    ))
}

#[test]
fn a_drifted_crd_is_reported_with_the_fix() {
    let generated = crd_yaml();
    let edited = generated.replacen("shortNames:\n    - ij", "shortNames:\n    - imp", 1);
    assert_ne!(edited, generated);
    let message = drift(COMMITTED[0], &edited, &generated).expect("a drift");
    assert!(
        message.contains("committed \"    - imp\", generated \"    - ij\""),
        "{message}"
    );
    assert!(
        message.contains(
            "cargo run -p bulk-import-operator -- crd > crds/importjobs.bulkimport.dev.yaml"
        ),
        "{message}"
    );
    assert!(message.contains("charts/bulk-import/crds/"), "{message}");
    let truncated = &generated[..generated.len() - 20];
    assert!(drift(COMMITTED[1], truncated, &generated).is_some());
    assert!(drift(COMMITTED[1], &generated, &generated).is_none());
}

#[test]
fn the_generated_crd_is_structural_and_complete() {
    let crd = serde_json::to_value(ImportJob::crd()).unwrap();
    assert_eq!(crd_errors(&crd), Vec::<String>::new());
    // The YAML as shipped parses to the same object.
    let yaml: Value = serde_saphyr::from_str(&crd_yaml()).unwrap();
    assert_eq!(yaml, crd);
}

#[test]
fn the_status_has_what_kubectl_wait_and_the_operator_need() {
    let crd = serde_json::to_value(ImportJob::crd()).unwrap();
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    for field in [
        "phase",
        "reason",
        "message",
        "jobName",
        "observedGeneration",
        "startedAt",
        "finishedAt",
        "processedRows",
        "insertedRows",
        "updatedRows",
        "errorRows",
        "progressPercent",
        "conditions",
    ] {
        assert!(status["properties"].get(field).is_some(), "status.{field}");
    }
    // A list map keyed by type: server-side apply merges the conditions of the two writers
    // by type instead of replacing the list.
    let conditions = &status["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
        assert!(
            conditions["items"]["properties"].get(field).is_some(),
            "conditions[].{field}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Everything wrong with a CustomResourceDefinition (as JSON), as readable messages.
fn crd_errors(crd: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut err = |m: String| errors.push(m);
    if crd["apiVersion"] != "apiextensions.k8s.io/v1" || crd["kind"] != "CustomResourceDefinition" {
        err("not an apiextensions.k8s.io/v1 CustomResourceDefinition".into());
    }
    let spec = &crd["spec"];
    let names = &spec["names"];
    // docs/kubernetes.md: group bulkimport.dev, version v1alpha1, plural importjobs, short name ij,
    // namespaced, status subresource.
    let expected_names = [
        ("kind", json!("ImportJob")),
        ("plural", json!("importjobs")),
        ("singular", json!("importjob")),
        ("shortNames", json!(["ij"])),
    ];
    for (key, want) in expected_names {
        if names[key] != want {
            err(format!(
                "spec.names.{key} is {}, expected {want}",
                names[key]
            ));
        }
    }
    if spec["group"] != "bulkimport.dev" {
        err(format!("spec.group is {}", spec["group"]));
    }
    if crd["metadata"]["name"] != "importjobs.bulkimport.dev" {
        err("metadata.name must be <plural>.<group>".into());
    }
    if spec["scope"] != "Namespaced" {
        err(format!(
            "spec.scope is {}, expected Namespaced",
            spec["scope"]
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        err("exactly one version must be the storage version".into());
    }
    if !versions
        .iter()
        .any(|v| v["name"] == "v1alpha1" && v["served"] == true)
    {
        err("v1alpha1 must be served".into());
    }
    for v in &versions {
        let name = v["name"].as_str().unwrap_or("?");
        if v["subresources"]["status"] != json!({}) {
            err(format!("{name}: the status subresource is not enabled"));
        }
        let schema = &v["schema"]["openAPIV3Schema"];
        if !schema.is_object() {
            err(format!("{name}: no openAPIV3Schema"));
            continue;
        }
        for e in schema_errors(schema) {
            err(format!("{name}: {e}"));
        }
        for e in printer_column_errors(v) {
            err(format!("{name}: {e}"));
        }
    }
    errors
}

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];
const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];
/// Not allowed anywhere in a CRD schema.
const FORBIDDEN: [&str; 9] = [
    "$ref",
    "$schema",
    "definitions",
    "$defs",
    "id",
    "dependencies",
    "patternProperties",
    "additionalItems",
    "dependentSchemas",
];

fn is_true(node: &Map<String, Value>, key: &str) -> bool {
    node.get(key) == Some(&Value::Bool(true))
}

/// The rules of a structural schema (Kubernetes "Specifying a structural schema"), plus the
/// API server's validation of the x-kubernetes extensions.
fn schema_errors(root: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_node(root, "openAPIV3Schema", false, &mut errors);
    if root["type"] != "object" {
        errors.push("openAPIV3Schema: the root must be of type object".into());
    }
    // Only name and generateName of metadata may be restricted.
    if let Some(meta) = root["properties"]
        .get("metadata")
        .and_then(Value::as_object)
    {
        let extra: Vec<&String> = meta
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.keys()
                    .filter(|k| *k != "name" && *k != "generateName")
                    .collect()
            })
            .unwrap_or_default();
        let other_keys: Vec<&String> = meta
            .keys()
            .filter(|k| !matches!(k.as_str(), "type" | "properties" | "description"))
            .collect();
        if !extra.is_empty() || !other_keys.is_empty() {
            errors.push(format!(
                "openAPIV3Schema.properties.metadata: only restrictions of name and generateName are allowed (found {extra:?} {other_keys:?})"
            ));
        }
    }
    errors
}

fn check_node(node: &Value, path: &str, in_junctor: bool, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: a schema must be an object"));
        return;
    };
    let mut err = |m: &str| errors.push(format!("{path}: {m}"));
    for key in FORBIDDEN {
        if obj.contains_key(key) {
            err(&format!("`{key}` is not allowed"));
        }
    }
    let int_or_string = is_true(obj, "x-kubernetes-int-or-string");
    let preserve = is_true(obj, "x-kubernetes-preserve-unknown-fields");
    let type_ = obj.get("type");
    let type_str = type_.and_then(Value::as_str);
    match type_ {
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(t) => err(&format!("type {t} is not one of {TYPES:?}")),
        None if in_junctor || int_or_string || preserve => {}
        None => err("no type (only x-kubernetes-int-or-string or x-kubernetes-preserve-unknown-fields nodes may omit it)"),
    }
    if in_junctor {
        for key in [
            "description",
            "type",
            "default",
            "additionalProperties",
            "nullable",
        ] {
            if obj.contains_key(key) {
                err(&format!(
                    "`{key}` is not allowed inside allOf/anyOf/oneOf/not"
                ));
            }
        }
    }
    if int_or_string && type_.is_some() {
        err("x-kubernetes-int-or-string: true takes no type");
    }
    if obj.contains_key("nullable") && type_.is_none() {
        err("nullable without a type");
    }
    if obj.contains_key("properties") && type_str != Some("object") && !in_junctor {
        err("properties on a node that is not of type object");
    }
    if obj.contains_key("items") && type_str != Some("array") && !in_junctor {
        err("items on a node that is not of type array");
    }
    if type_str == Some("array") && !obj.contains_key("items") {
        err("an array without items");
    }
    if obj.contains_key("additionalProperties") && obj.contains_key("properties") {
        err("additionalProperties and properties are mutually exclusive");
    }
    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
        err("additionalProperties: false is not allowed");
    }
    if obj.get("uniqueItems") == Some(&Value::Bool(true)) {
        err("uniqueItems: true is not allowed");
    }
    if is_true(obj, "x-kubernetes-embedded-resource") && type_str != Some("object") {
        err("x-kubernetes-embedded-resource needs type object");
    }
    if let Some(default) = obj.get("default") {
        if let Some(t) = type_str {
            if !json_has_type(default, t) {
                err(&format!("default {default} is not a {t}"));
            }
        }
    }
    if let (Some(values), Some(t)) = (obj.get("enum").and_then(Value::as_array), type_str) {
        if let Some(v) = values.iter().find(|v| !json_has_type(v, t)) {
            err(&format!("enum value {v} is not a {t}"));
        }
    }
    if let Some(required) = obj.get("required").and_then(Value::as_array) {
        // Our own rule, stricter than the API server's: a required field must exist.
        for r in required {
            let name = r.as_str().unwrap_or_default();
            if obj.get("properties").and_then(|p| p.get(name)).is_none() && !in_junctor {
                err(&format!("required field {r} is not a property"));
            }
        }
    }
    check_list_type(obj, &mut err);
    if let Some(map_type) = obj.get("x-kubernetes-map-type") {
        if !matches!(map_type.as_str(), Some("granular" | "atomic")) || type_str != Some("object") {
            err("x-kubernetes-map-type must be granular or atomic on an object");
        }
    }

    // Children.
    if let Some(props) = obj.get("properties") {
        match props.as_object() {
            Some(props) => {
                for (name, child) in props {
                    check_node(
                        child,
                        &format!("{path}.properties.{name}"),
                        in_junctor,
                        errors,
                    );
                }
            }
            None => errors.push(format!("{path}: properties must be a map")),
        }
    }
    match obj.get("items") {
        Some(items @ Value::Object(_)) => {
            check_node(items, &format!("{path}.items"), in_junctor, errors)
        }
        Some(_) => errors.push(format!("{path}: items must be one schema, not a list")),
        None => {}
    }
    if let Some(additional @ Value::Object(_)) = obj.get("additionalProperties") {
        check_node(
            additional,
            &format!("{path}.additionalProperties"),
            in_junctor,
            errors,
        );
    }
    for junctor in JUNCTORS {
        let Some(branches) = obj.get(junctor) else {
            continue;
        };
        let branches: Vec<&Value> = match branches {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        let int_or_string_pattern = int_or_string
            && junctor == "anyOf"
            && branches.len() == 2
            && branches.iter().any(|b| b["type"] == "integer")
            && branches.iter().any(|b| b["type"] == "string");
        for (i, branch) in branches.iter().enumerate() {
            let here = format!("{path}.{junctor}[{i}]");
            if int_or_string_pattern {
                continue;
            }
            check_node(branch, &here, true, errors);
            // Whatever a junctor specifies must also be specified outside of it.
            for (name, _) in branch["properties"].as_object().into_iter().flatten() {
                if obj.get("properties").and_then(|p| p.get(name)).is_none() {
                    errors.push(format!(
                        "{here}: property {name} is not specified outside of {junctor}"
                    ));
                }
            }
            if branch.get("items").is_some() && !obj.contains_key("items") {
                errors.push(format!(
                    "{here}: items are not specified outside of {junctor}"
                ));
            }
        }
    }
}

fn check_list_type(obj: &Map<String, Value>, err: &mut impl FnMut(&str)) {
    let list_type = obj.get("x-kubernetes-list-type").and_then(Value::as_str);
    let keys = obj.get("x-kubernetes-list-map-keys");
    if (obj.contains_key("x-kubernetes-list-type") || keys.is_some())
        && obj.get("type").and_then(Value::as_str) != Some("array")
    {
        err("x-kubernetes-list-type/-list-map-keys need type array");
    }
    match list_type {
        None if keys.is_some() => {
            err("x-kubernetes-list-map-keys without x-kubernetes-list-type: map")
        }
        None | Some("atomic") => {}
        Some("set") => {
            let item_type = obj.get("items").and_then(|i| i["type"].as_str());
            if matches!(item_type, Some("object" | "array")) {
                err("x-kubernetes-list-type: set needs scalar items");
            }
        }
        Some("map") => {
            let items = obj.get("items").cloned().unwrap_or(Value::Null);
            if items["type"] != "object" {
                err("x-kubernetes-list-type: map needs items of type object");
            }
            let keys: Vec<&str> = keys
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if keys.is_empty() {
                err("x-kubernetes-list-type: map needs x-kubernetes-list-map-keys");
            }
            let required: Vec<&str> = items["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for key in keys {
                let Some(field) = items["properties"].get(key) else {
                    err(&format!(
                        "list-map key {key:?} is not a property of the items"
                    ));
                    continue;
                };
                if !required.contains(&key) && field.get("default").is_none() {
                    err(&format!(
                        "list-map key {key:?} must be required or have a default"
                    ));
                }
                if !matches!(
                    field["type"].as_str(),
                    Some("string" | "integer" | "number" | "boolean")
                ) {
                    err(&format!("list-map key {key:?} must be a scalar"));
                }
            }
        }
        Some(other) => err(&format!(
            "x-kubernetes-list-type {other:?} is not atomic, set or map"
        )),
    }
}

fn json_has_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Each printer column's jsonPath names a field of the schema (or of the object metadata)
/// whose type suits the column's type.
fn printer_column_errors(version: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let schema = &version["schema"]["openAPIV3Schema"];
    let columns = version["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names = std::collections::HashSet::new();
    for c in &columns {
        let name = c["name"].as_str().unwrap_or("?");
        if !names.insert(name.to_string()) {
            errors.push(format!("printer column {name}: duplicate name"));
        }
        let col_type = c["type"].as_str().unwrap_or("");
        if !["integer", "number", "string", "boolean", "date"].contains(&col_type) {
            errors.push(format!("printer column {name}: type {col_type:?}"));
        }
        let Some(path) = c["jsonPath"].as_str() else {
            errors.push(format!("printer column {name}: no jsonPath"));
            continue;
        };
        let Some(segments) = path
            .strip_prefix('.')
            .map(|p| p.split('.').collect::<Vec<_>>())
        else {
            errors.push(format!(
                "printer column {name}: jsonPath {path:?} must start with '.'"
            ));
            continue;
        };
        let field_type = if segments.first() == Some(&"metadata") {
            // Object metadata is not part of the schema: its fields are known.
            match segments[1..] {
                ["creationTimestamp"] | ["deletionTimestamp"] => Some("date"),
                ["name"] | ["namespace"] | ["uid"] | ["resourceVersion"] => Some("string"),
                ["generation"] => Some("integer"),
                _ => None,
            }
        } else {
            let mut node = schema;
            for seg in &segments {
                node = &node["properties"][*seg];
            }
            node["type"].as_str().map(|t| {
                if t == "string" && node["format"] == "date-time" {
                    "date"
                } else {
                    t
                }
            })
        };
        let fits = match (col_type, field_type) {
            (_, None) => {
                errors.push(format!(
                    "printer column {name}: jsonPath {path} names no field of the schema"
                ));
                continue;
            }
            ("date", Some(t)) => t == "date" || t == "string",
            ("number", Some(t)) => t == "number" || t == "integer",
            ("string", Some(t)) => t == "string" || t == "date",
            (c, Some(t)) => c == t,
        };
        if !fits {
            errors.push(format!(
                "printer column {name}: type {col_type} does not fit the field's type {field_type:?}"
            ));
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------
// The checks can fail.

fn generated() -> Value {
    serde_json::to_value(ImportJob::crd()).unwrap()
}

fn schema_of(crd: &mut Value) -> &mut Value {
    &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

fn assert_rejected(crd: &Value, expected: &str) {
    let errors = crd_errors(crd);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errors:#?}"
    );
}

fn status(crd: &mut Value) -> &mut Value {
    &mut schema_of(crd)["properties"]["status"]
}

fn broken(change: impl FnOnce(&mut Value)) -> Value {
    let mut crd = generated();
    change(&mut crd);
    crd
}

#[test]
fn the_checker_rejects_broken_schemas() {
    let cases: Vec<(Value, &str)> = vec![
        (
            broken(|c| {
                status(c)["properties"]["phase"]
                    .as_object_mut()
                    .unwrap()
                    .remove("type");
            }),
            "properties.status.properties.phase: no type",
        ),
        (
            broken(|c| status(c)["properties"]["phase"]["type"] = json!("")),
            "is not one of",
        ),
        (
            broken(|c| status(c)["type"] = json!("string")),
            "properties on a node that is not of type object",
        ),
        (
            broken(|c| status(c)["properties"]["conditions"]["type"] = json!("object")),
            "items on a node that is not of type array",
        ),
        (
            broken(|c| {
                status(c)["properties"]["reason"] = json!({ "$ref": "#/definitions/Reason" })
            }),
            "`$ref` is not allowed",
        ),
        (
            broken(|c| status(c)["properties"]["reason"] = json!({ "nullable": true })),
            "nullable without a type",
        ),
        (
            broken(|c| status(c)["additionalProperties"] = json!({ "type": "string" })),
            "additionalProperties and properties are mutually exclusive",
        ),
        (
            broken(|c| {
                status(c)["properties"]["conditions"]["x-kubernetes-list-map-keys"] =
                    json!(["kind"])
            }),
            "list-map key \"kind\" is not a property",
        ),
        (
            broken(|c| {
                let items = &mut status(c)["properties"]["conditions"]["items"];
                items["required"] = json!(["status", "reason", "lastTransitionTime"]);
            }),
            "list-map key \"type\" must be required or have a default",
        ),
        (
            broken(|c| {
                status(c)["properties"]["conditions"]
                    .as_object_mut()
                    .unwrap()
                    .remove("x-kubernetes-list-map-keys");
            }),
            "needs x-kubernetes-list-map-keys",
        ),
        (
            broken(|c| {
                status(c)["properties"]["phase"]["anyOf"] =
                    json!([{ "type": "string", "description": "x" }])
            }),
            "`type` is not allowed inside allOf/anyOf/oneOf/not",
        ),
        (
            broken(|c| {
                status(c)["anyOf"] = json!([{ "properties": { "extra": { "type": "string" } } }])
            }),
            "property extra is not specified outside of anyOf",
        ),
        (
            broken(|c| status(c)["properties"]["phase"]["default"] = json!(3)),
            "default 3 is not a string",
        ),
        (
            broken(|c| {
                schema_of(c)["properties"]["metadata"] = json!({
                    "type": "object",
                    "properties": { "labels": { "type": "object" } }
                })
            }),
            "only restrictions of name and generateName",
        ),
        (
            broken(|c| {
                c["spec"]["versions"][0]["additionalPrinterColumns"][0]["jsonPath"] =
                    json!(".status.phaze")
            }),
            "jsonPath .status.phaze names no field",
        ),
        (
            broken(|c| {
                c["spec"]["versions"][0]["additionalPrinterColumns"][2]["type"] = json!("boolean")
            }),
            "type boolean does not fit",
        ),
        (
            broken(|c| {
                c["spec"]["versions"][0]["subresources"]
                    .as_object_mut()
                    .unwrap()
                    .remove("status");
            }),
            "the status subresource is not enabled",
        ),
        (
            broken(|c| c["spec"]["names"]["shortNames"] = json!(["imp"])),
            "spec.names.shortNames",
        ),
        (
            broken(|c| c["spec"]["scope"] = json!("Cluster")),
            "spec.scope",
        ),
    ];
    for (crd, expected) in cases {
        assert_rejected(&crd, expected);
    }
}

#[test]
fn the_checker_accepts_the_allowed_exceptions() {
    let crd = broken(|c| {
        let props = &mut schema_of(c)["properties"]["spec"]["properties"];
        props["port"] = json!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{ "type": "integer" }, { "type": "string" }],
        });
        props["extra"] = json!({ "x-kubernetes-preserve-unknown-fields": true });
        props["labels"] = json!({ "type": "object", "additionalProperties": { "type": "string" } });
        props["ports"] = json!({
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "properties": { "name": { "type": "string", "default": "http" } },
            },
        });
    });
    assert_eq!(crd_errors(&crd), Vec::<String>::new());
}
