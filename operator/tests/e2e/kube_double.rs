//! A Kubernetes API server test double: an in-memory object store with the semantics the
//! kube client and kube-runtime rely on, for the kinds bulk-import uses — ImportJob
//! (`bulkimport.dev/v1alpha1`, status subresource, validated and pruned against the CRD
//! generated from `core/src/crd.rs`), Job, Pod, Event (`events.k8s.io/v1`), Lease, Secret and
//! ConfigMap. `kube_http.rs` serves it over plain HTTP.
//!
//! What it implements, after the API conventions and the API concepts pages:
//! - one global, increasing `resourceVersion` (like etcd's revision) and a history of
//!   changes that watches replay from; `compact()` drops the history so that watching from an
//!   older version answers 410 Gone (`Expired`);
//! - create (uid, creationTimestamp, generation, `generateName`; 409 `AlreadyExists`),
//!   update with optimistic concurrency (409 `Conflict` on a stale resourceVersion), a no-op
//!   write keeps the resourceVersion and sends no event;
//! - the status subresource: status writes change only status, main-resource writes never
//!   change status, `metadata.generation` moves only when the spec (anything but metadata and
//!   status) changes;
//! - JSON patch (with `test`, as the apiserver's json-patch library evaluates it: a `null`
//!   test on a missing path passes), JSON merge patch, server-side apply with field managers
//!   (per manager and subresource field sets rendered into `metadata.managedFields`,
//!   list-maps keyed by `type`/`uid`/`name` merged per item, conflicts unless `force`);
//! - delete: finalizers hold the object with `deletionTimestamp` until they are removed;
//!   propagation `Background` (the default except for batch/v1 Jobs, which orphan), `Orphan`
//!   and `Foreground`; a garbage collector deletes objects whose owners are all gone; bound,
//!   running pods are deleted gracefully (the kubelet finishes the deletion);
//! - validation the real server would do for these flows: names, label keys and values,
//!   events.k8s.io/v1 Event rules, decoding built-in kinds into their k8s-openapi types
//!   (unknown fields are dropped), ImportJobs pruned, defaulted and validated against the CRD's
//!   OpenAPI schema; Jobs get their selector and labels defaulted and an immutable template.
//!
//! It counts creates per object name so tests can check that something was created once.

#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------
// Kinds

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Has a status subresource.
    pub status: bool,
}

pub static IMPORTJOBS: Kind = Kind {
    group: "bulkimport.dev",
    version: "v1alpha1",
    kind: "ImportJob",
    plural: "importjobs",
    namespaced: true,
    status: true,
};
pub static JOBS: Kind = Kind {
    group: "batch",
    version: "v1",
    kind: "Job",
    plural: "jobs",
    namespaced: true,
    status: true,
};
pub static PODS: Kind = Kind {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    namespaced: true,
    status: true,
};
pub static EVENTS: Kind = Kind {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    namespaced: true,
    status: false,
};
pub static LEASES: Kind = Kind {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    namespaced: true,
    status: false,
};
pub static SECRETS: Kind = Kind {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    namespaced: true,
    status: false,
};
pub static CONFIGMAPS: Kind = Kind {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    namespaced: true,
    status: false,
};

/// core/v1 Events: what the Job controller records (`FailedCreate`), read by the operator.
pub static CORE_EVENTS: Kind = Kind {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    namespaced: true,
    status: false,
};
/// ResourceQuota (`spec.hard.pods`): pod creations beyond it are forbidden.
pub static RESOURCEQUOTAS: Kind = Kind {
    group: "",
    version: "v1",
    kind: "ResourceQuota",
    plural: "resourcequotas",
    namespaced: true,
    status: true,
};

pub static KINDS: [&Kind; 9] = [
    &IMPORTJOBS,
    &JOBS,
    &PODS,
    &EVENTS,
    &LEASES,
    &SECRETS,
    &CONFIGMAPS,
    &CORE_EVENTS,
    &RESOURCEQUOTAS,
];

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `importjobs.bulkimport.dev`, `pods`: how the apiserver names a resource in messages.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `ImportJob.bulkimport.dev`, `Pod`: how validation messages name a kind.
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
        KINDS
            .iter()
            .copied()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// The double's kind for a typed kube resource.
    pub fn of<K: kube::Resource<DynamicType = ()>>() -> &'static Kind {
        let (group, kind) = (K::group(&()), K::kind(&()));
        KINDS
            .iter()
            .copied()
            .find(|k| k.group == group && k.kind == kind)
            .unwrap_or_else(|| panic!("the double does not serve {kind}"))
    }
}

// ---------------------------------------------------------------------------------------
// Errors (metav1.Status)

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub name: String,
    pub group: String,
    pub plural: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: String::new(),
            group: String::new(),
            plural: String::new(),
        }
    }

    fn about(mut self, k: &Kind, name: &str) -> ApiError {
        self.name = name.into();
        self.group = k.group.into();
        self.plural = k.plural.into();
        self
    }

    pub fn not_found(k: &Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", k.resource()),
        )
        .about(k, name)
    }
    pub fn already_exists(k: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", k.resource()),
        )
        .about(k, name)
    }
    pub fn conflict(k: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                k.resource()
            ),
        )
        .about(k, name)
    }
    pub fn invalid(k: &Kind, name: &str, causes: &[String]) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {}",
                k.qualified_kind(),
                causes.join(", ")
            ),
        )
        .about(k, name)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }
    pub fn unavailable() -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }
    pub fn resource_not_found() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn status(&self) -> Value {
        let mut details = Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), self.name.clone().into());
        }
        if !self.group.is_empty() {
            details.insert("group".into(), self.group.clone().into());
        }
        if !self.plural.is_empty() {
            details.insert("kind".into(), self.plural.clone().into());
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        })
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A label selector and a field selector (`metadata.name=x`; any dotted path of strings).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<(String, bool, String)>,
}

fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selector> {
        let mut sel = Selector::default();
        for term in split_top_level(labels.unwrap_or("")) {
            let set = |rest: &str| -> Result<Vec<String>> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("unable to parse requirement: {term:?}"))
                    })?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let req = if let Some((k, v)) = term.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                LabelReq::In(k.trim().into(), set(rest)?)
            } else if let Some(k) = term.strip_prefix('!') {
                LabelReq::NotExists(k.trim().into())
            } else if term
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelReq::Exists(term.clone())
            } else {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: {term:?}"
                )));
            };
            sel.labels.push(req);
        }
        for term in split_top_level(fields.unwrap_or("")) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {term:?}"
                )));
            };
            sel.fields.push((k.trim().into(), eq, v.trim().into()));
        }
        Ok(sel)
    }

    pub fn labels(s: &str) -> Selector {
        Selector::parse(Some(s), None).expect("valid selector")
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, eq, want)| {
                let mut cur = obj;
                for part in path.split('.') {
                    cur = &cur[part];
                }
                let got = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (got == *want) == *eq
            })
    }
}

// ---------------------------------------------------------------------------------------
// Small JSON helpers

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

pub fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn is_deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// The object without the fields the server owns, for "did anything change" comparisons.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

/// Everything but metadata and status: what moves `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn random_suffix() -> String {
    // Like the apiserver's generateName: 5 characters of [bcdfghjklmnpqrstvwxz2456789].
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4();
    bytes.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Field sets (server-side apply)

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pe {
    /// A map field.
    F(String),
    /// An item of a list-map, by its key fields (canonical JSON).
    K(String),
    /// A value of a set-list.
    V(String),
}

pub type FieldPath = Vec<Pe>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Lists that are maps keyed by these fields (as the Kubernetes schemas declare them).
fn list_map_keys(field: &str) -> Option<&'static [&'static str]> {
    match field {
        "conditions" => Some(&["type"]),
        "ownerReferences" => Some(&["uid"]),
        "containers" | "initContainers" | "env" | "volumes" | "ports" => Some(&["name"]),
        "volumeMounts" => Some(&["mountPath"]),
        _ => None,
    }
}

fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// How a set-list value is named in a field path.
fn set_key(v: &Value) -> String {
    v.to_string()
}

fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let m = item.as_object()?;
    let mut key = Map::new();
    for k in keys {
        key.insert((*k).into(), m.get(*k)?.clone());
    }
    Some(Value::Object(key).to_string())
}

fn leaves_into(v: &Value, field: &str, path: &mut FieldPath, out: &mut FieldSet) {
    match v {
        Value::Array(items) if list_map_keys(field).is_some() && !items.is_empty() => {
            let keys = list_map_keys(field).expect("checked");
            for it in items {
                if let Some(key) = item_key(it, keys) {
                    path.push(Pe::K(key));
                    leaves_into(it, "", path, out);
                    path.pop();
                }
            }
        }
        Value::Array(items) if is_set_list(field) && !items.is_empty() => {
            for it in items {
                path.push(Pe::V(set_key(it)));
                out.insert(path.clone());
                path.pop();
            }
        }
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(Pe::F(k.clone()));
                leaves_into(c, k, path, out);
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

pub fn leaves(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    leaves_into(v, "", &mut Vec::new(), &mut out);
    out
}

pub fn get_at<'a>(v: &'a Value, path: &[Pe]) -> Option<&'a Value> {
    let mut cur = v;
    let mut field = "";
    for pe in path {
        match pe {
            Pe::F(k) => {
                cur = cur.as_object()?.get(k)?;
                field = k;
            }
            Pe::K(key) => {
                let keys = list_map_keys(field)?;
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|it| item_key(it, keys).as_deref() == Some(key))?;
                field = "";
            }
            Pe::V(val) => {
                cur = cur.as_array()?.iter().find(|it| set_key(it) == *val)?;
            }
        }
    }
    Some(cur)
}

fn get_at_mut<'a>(v: &'a mut Value, path: &[Pe]) -> Option<&'a mut Value> {
    let mut cur = v;
    let mut field = String::new();
    for pe in path {
        match pe {
            Pe::F(k) => {
                cur = cur.as_object_mut()?.get_mut(k)?;
                field = k.clone();
            }
            Pe::K(key) => {
                let keys = list_map_keys(&field)?;
                cur = cur
                    .as_array_mut()?
                    .iter_mut()
                    .find(|it| item_key(it, keys).as_deref() == Some(key))?;
                field.clear();
            }
            Pe::V(val) => {
                cur = cur
                    .as_array_mut()?
                    .iter_mut()
                    .find(|it| set_key(it) == *val)?;
            }
        }
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[Pe]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let parent_field = parent_path.iter().rev().find_map(|p| match p {
        Pe::F(k) => Some(k.clone()),
        _ => None,
    });
    let Some(parent) = get_at_mut(v, parent_path) else {
        return;
    };
    match last {
        Pe::F(k) => {
            if let Some(m) = parent.as_object_mut() {
                m.remove(k);
            }
        }
        Pe::K(key) => {
            let field = match parent_path.last() {
                Some(Pe::F(k)) => k.clone(),
                _ => parent_field.unwrap_or_default(),
            };
            if let (Some(keys), Some(a)) = (list_map_keys(&field), parent.as_array_mut()) {
                a.retain(|it| item_key(it, keys).as_deref() != Some(key));
            }
        }
        Pe::V(val) => {
            if let Some(a) = parent.as_array_mut() {
                a.retain(|it| set_key(it) != *val);
            }
        }
    }
}

/// Merges an applied configuration into an object: maps field by field, list-maps item by
/// key, set-lists by union; other lists and scalars are replaced. An explicit `null` is
/// kept: the field is set to null and owned (unlike a merge patch, where it removes).
fn merge_apply(target: &mut Value, src: &Value) {
    match (target, src) {
        (Value::Object(t), Value::Object(s)) => {
            for (k, v) in s {
                match t.get_mut(k) {
                    Some(tv) => merge_field(tv, v, k),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, s) => *t = s.clone(),
    }
}

fn merge_field(tv: &mut Value, v: &Value, name: &str) {
    match (tv, v) {
        (Value::Array(ta), Value::Array(sa)) if list_map_keys(name).is_some() => {
            let keys = list_map_keys(name).expect("checked");
            for s in sa {
                let key = item_key(s, keys);
                match ta
                    .iter_mut()
                    .find(|t| key.is_some() && item_key(t, keys) == key)
                {
                    Some(t) => merge_apply(t, s),
                    None => ta.push(s.clone()),
                }
            }
        }
        (Value::Array(ta), Value::Array(sa)) if is_set_list(name) => {
            for s in sa {
                if !ta.contains(s) {
                    ta.push(s.clone());
                }
            }
        }
        (tv, v) => merge_apply(tv, v),
    }
}

/// The part of an object a write to `sub` may change (and field managers can own).
fn managed_part(k: &Kind, obj: &Value, sub: Sub) -> Value {
    let mut out = Map::new();
    match sub {
        Sub::Status => {
            if let Some(s) = obj.get("status") {
                out.insert("status".into(), s.clone());
            }
        }
        Sub::Main => {
            if let Some(m) = obj.as_object() {
                for (key, v) in m {
                    match key.as_str() {
                        "apiVersion" | "kind" => {}
                        "status" if k.status => {}
                        "metadata" => {
                            let mut meta = Map::new();
                            for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                                if let Some(x) = v.get(f) {
                                    meta.insert(f.into(), x.clone());
                                }
                            }
                            if !meta.is_empty() {
                                out.insert("metadata".into(), Value::Object(meta));
                            }
                        }
                        _ => {
                            out.insert(key.clone(), v.clone());
                        }
                    }
                }
            }
        }
    }
    Value::Object(out)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Managed {
    pub manager: String,
    pub operation: &'static str,
    pub subresource: Sub,
    pub fields: FieldSet,
    pub time: String,
}

fn fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in fields {
        let mut cur = &mut root;
        for pe in p {
            let key = match pe {
                Pe::F(k) => format!("f:{k}"),
                Pe::K(j) => format!("k:{j}"),
                Pe::V(j) => format!("v:{j}"),
            };
            cur = cur
                .entry(key)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
    }
    Value::Object(root)
}

fn render_managed_fields(k: &Kind, obj: &mut Value, managers: &[Managed]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": k.api_version(),
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&m.fields),
            });
            if m.subresource == Sub::Status {
                e["subresource"] = "status".into();
            }
            e
        })
        .collect();
    let meta = meta_mut(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// Non-apply writes take ownership of the fields they change (no conflicts), as the
/// apiserver records `Update` operations.
fn track_update(
    k: &Kind,
    managers: &mut Vec<Managed>,
    manager: &str,
    sub: Sub,
    old: &Value,
    new: &Value,
) {
    let (old_part, new_part) = (managed_part(k, old, sub), managed_part(k, new, sub));
    let new_leaves = leaves(&new_part);
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| get_at(&old_part, p) != get_at(&new_part, p))
        .cloned()
        .collect();
    let gone: FieldSet = leaves(&old_part)
        .into_iter()
        .filter(|p| get_at(&new_part, p).is_none())
        .collect();
    for m in managers.iter_mut() {
        m.fields
            .retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    if !changed.is_empty() {
        let time = now();
        match managers
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && m.subresource == sub)
        {
            Some(m) => {
                m.fields.extend(changed);
                m.time = time;
            }
            None => managers.push(Managed {
                manager: manager.into(),
                operation: "Update",
                subresource: sub,
                fields: changed,
                time,
            }),
        }
    }
    managers.retain(|m| !m.fields.is_empty());
}

// ---------------------------------------------------------------------------------------
// JSON patch (RFC 6902) and merge patch (RFC 7386)

fn pointer_parts(p: &str) -> Result<Vec<String>> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| ApiError::unprocessable(format!("invalid JSON pointer {p:?}")))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn pointer_get<'a>(v: &'a Value, parts: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn pointer_parent<'a>(v: &'a mut Value, parts: &[String]) -> Result<(&'a mut Value, String)> {
    let (last, parent) = parts
        .split_last()
        .ok_or_else(|| ApiError::unprocessable("cannot operate on the document root"))?;
    let mut cur = v;
    for p in parent {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::unprocessable(format!("doc is missing path: \"/{}\"", parts.join("/")))
        })?;
    }
    Ok((cur, last.clone()))
}

fn pointer_add(v: &mut Value, parts: &[String], value: Value) -> Result<()> {
    if parts.is_empty() {
        *v = value;
        return Ok(());
    }
    let (parent, last) = pointer_parent(v, parts)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| ApiError::unprocessable(format!("invalid index {last:?}")))?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(ApiError::unprocessable("cannot add to a scalar")),
    }
}

fn pointer_remove(v: &mut Value, parts: &[String]) -> Result<Value> {
    let path = format!("/{}", parts.join("/"));
    let (parent, last) = pointer_parent(v, parts)?;
    let missing = || {
        ApiError::unprocessable(format!(
            "Unable to remove nonexistent key: {path}: missing value"
        ))
    };
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<()> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch is an array of operations"))?;
    for op in ops {
        let path = pointer_parts(op["path"].as_str().unwrap_or(""))?;
        match op["op"].as_str().unwrap_or("") {
            "add" => pointer_add(doc, &path, op["value"].clone())?,
            "remove" => {
                pointer_remove(doc, &path)?;
            }
            "replace" => {
                pointer_remove(doc, &path)?;
                pointer_add(doc, &path, op["value"].clone())?;
            }
            "move" | "copy" => {
                let from = pointer_parts(op["from"].as_str().unwrap_or(""))?;
                let value = if op["op"] == "move" {
                    pointer_remove(doc, &from)?
                } else {
                    pointer_get(doc, &from)
                        .cloned()
                        .ok_or_else(|| ApiError::unprocessable("copy from a missing path"))?
                };
                pointer_add(doc, &path, value)?;
            }
            "test" => {
                // evanphx/json-patch, which the apiserver uses: a missing path equals null.
                let got = pointer_get(doc, &path).cloned().unwrap_or(Value::Null);
                if got != op["value"] {
                    return Err(ApiError::unprocessable(format!(
                        "testing value {} failed: test failed",
                        op["path"].as_str().unwrap_or("")
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected JSON patch operation {other:?}"
                )))
            }
        }
    }
    Ok(())
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Validation

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|p| is_dns_label(p, 63))
}

fn is_label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || "-_.".contains(c))
}

fn is_label_key(k: &str) -> bool {
    match k.rsplit_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(k),
    }
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_label_name(v)
}

fn schema_check(schema: &Value, v: &mut Value, path: &str, errs: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or("");
    if v.is_null() {
        if schema["nullable"] != true {
            errs.push(format!(
                "{path}: Invalid value: \"null\": {path} in body must be of type {ty}"
            ));
        }
        return;
    }
    let type_error = |errs: &mut Vec<String>, got: &Value| {
        let got_ty = match got {
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        };
        errs.push(format!(
            "{path}: Invalid value: \"{got_ty}\": {path} in body must be of type {ty}: \"{got_ty}\""
        ));
    };
    match ty {
        "object" => {
            let Some(m) = v.as_object_mut() else {
                return type_error(errs, v);
            };
            if schema["x-kubernetes-preserve-unknown-fields"] == true {
                return;
            }
            if let Some(props) = schema["properties"].as_object() {
                // Pruning: the apiserver drops fields the schema does not declare.
                m.retain(|k, _| props.contains_key(k));
                for (k, s) in props {
                    if !m.contains_key(k) {
                        if let Some(d) = s.get("default") {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                }
                for (k, val) in m.iter_mut() {
                    schema_check(&props[k], val, &format!("{path}.{k}"), errs);
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, val) in m.iter_mut() {
                    schema_check(ap, val, &format!("{path}.{k}"), errs);
                }
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or("");
                if !m.contains_key(r) {
                    errs.push(format!("{path}.{r}: Required value"));
                }
            }
        }
        "array" => {
            let Some(a) = v.as_array_mut() else {
                return type_error(errs, v);
            };
            for (i, it) in a.iter_mut().enumerate() {
                schema_check(&schema["items"], it, &format!("{path}[{i}]"), errs);
            }
        }
        "string" => {
            let Some(s) = v.as_str() else {
                return type_error(errs, v);
            };
            if let Some(allowed) = schema["enum"].as_array() {
                if !allowed.iter().any(|a| a == s) {
                    let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                    errs.push(format!(
                        "{path}: Unsupported value: \"{s}\": supported values: {}",
                        list.join(", ")
                    ));
                }
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                let re = regex::Regex::new(pattern).expect("the CRD's pattern compiles");
                if !re.is_match(s) {
                    errs.push(format!(
                        "{path}: Invalid value: \"{s}\": {path} in body should match '{pattern}'"
                    ));
                }
            }
        }
        "integer" => {
            if !(v.is_i64() || v.is_u64()) {
                return type_error(errs, v);
            }
            if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), v.as_f64()) {
                if n < min {
                    errs.push(format!(
                        "{path}: Invalid value: {n}: {path} in body should be greater than or equal to {min}"
                    ));
                }
            }
        }
        "number" if !v.is_number() => type_error(errs, v),
        "boolean" if !v.is_boolean() => type_error(errs, v),
        _ => {}
    }
}

/// The generated CRD as the API server returns it once installed.
fn installed_crd() -> Value {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(bulk_import_core::crd::ImportJob::crd()).expect("CRD");
    crd["metadata"]["uid"] = "crd-uid-importjobs".into();
    crd["metadata"]["resourceVersion"] = "1".into();
    crd["metadata"]["creationTimestamp"] = now().into();
    crd
}

fn crd_schema() -> Value {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(bulk_import_core::crd::ImportJob::crd()).expect("CRD");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| {
        ApiError::bad_request(format!("the request body could not be decoded: {e}"))
    })?;
    Ok(serde_json::to_value(typed).expect("serialises"))
}

// ---------------------------------------------------------------------------------------
// The store

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub field_manager: Option<String>,
    pub force: bool,
    pub dry_run: bool,
}

impl WriteOpts {
    pub fn manager(m: &str) -> WriteOpts {
        WriteOpts {
            field_manager: Some(m.into()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

impl DeleteOpts {
    pub fn background() -> DeleteOpts {
        DeleteOpts {
            propagation: Some(Propagation::Background),
            ..Default::default()
        }
    }
    pub fn now() -> DeleteOpts {
        DeleteOpts {
            grace_period_seconds: Some(0),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub enum Deleted {
    /// Finalizers or a graceful pod termination hold it; it has a deletionTimestamp.
    Pending(Value),
    /// Removed from the store.
    Gone(Value),
}

#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: &'static Kind,
    pub ns: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub type_: &'static str,
    pub object: Value,
    /// The previous state (for selector transitions), when there was one.
    pub old: Option<Value>,
    /// When it happened (watches of a lagging kind deliver it later).
    pub at: std::time::Instant,
}

#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// The authenticated user (`system:serviceaccount:<ns>:<name>`), or `None` for the
    /// tests' own unauthenticated (all-powerful) client.
    pub user: Option<String>,
    /// What RBAC saw: (apiGroup, resource with subresource, verb); `None` for discovery.
    pub attributes: Option<(String, String, String)>,
    pub at: std::time::Instant,
}

// ---------------------------------------------------------------------------------------
// Authentication and RBAC

/// One RBAC rule, flattened: (apiGroup, resource, verb).
pub type Grant = (String, String, String);

/// Bearer tokens → service accounts, and the rules of the Role bound to each, enforced as
/// the API server's RBAC authorizer does: a request is allowed when some rule grants its
/// apiGroup, resource (`pods/eviction`, `importjobs/status`) and verb; otherwise 403
/// Forbidden with the API server's message. A token nobody issued is 401.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    /// token → (namespace, service account, granted rules)
    pub accounts: HashMap<String, (String, String, BTreeSet<Grant>)>,
}

impl Rbac {
    /// The user a token authenticates as, or 401.
    pub fn user(&self, token: &str) -> Result<(String, &BTreeSet<Grant>)> {
        self.accounts
            .get(token)
            .map(|(ns, sa, grants)| (format!("system:serviceaccount:{ns}:{sa}"), grants))
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))
    }
}

/// The API server's 403 for a request RBAC denies.
pub fn forbidden(
    user: &str,
    group: &str,
    resource: &str,
    verb: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> ApiError {
    let (plural, sub) = match resource.split_once('/') {
        Some((p, s)) => (p, Some(s)),
        None => (resource, None),
    };
    let what = match (group, name) {
        ("", Some(n)) => format!("{plural} \"{n}\""),
        ("", None) => plural.to_string(),
        (g, Some(n)) => format!("{plural}.{g} \"{n}\""),
        (g, None) => format!("{plural}.{g}"),
    };
    let mut message =
        format!("{what} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\"");
    if let Some(sub) = sub {
        message.push_str(&format!("/{sub}"));
    }
    message.push_str(&format!(" in API group \"{group}\""));
    match ns {
        Some(ns) => message.push_str(&format!(" in the namespace \"{ns}\"")),
        None => message.push_str(" at the cluster scope"),
    }
    let mut e = ApiError::new(403, "Forbidden", message);
    e.name = name.unwrap_or("").into();
    e.group = group.into();
    e.plural = plural.into();
    e
}

type Key = (&'static str, &'static str, String, String);

fn key(k: &'static Kind, ns: &str, name: &str) -> Key {
    (k.group, k.plural, ns.to_string(), name.to_string())
}

struct Entry {
    kind: &'static Kind,
    obj: Value,
    managers: Vec<Managed>,
}

struct Store {
    rv: u64,
    objects: BTreeMap<Key, Entry>,
    history: VecDeque<Change>,
    /// Watching from a version older than this answers 410 Gone.
    compacted: u64,
    creates: HashMap<Key, u32>,
    create_attempts: HashMap<Key, u32>,
    requests: Vec<RequestRecord>,
    rbac: Option<Rbac>,
    jobs: JobTally,
}

/// Jobs as they come and go: which are unfinished now, the most that ever were at once,
/// and the order they were created in (admission tests).
#[derive(Default)]
struct JobTally {
    unfinished: BTreeSet<(String, String)>,
    peak: usize,
    created: Vec<Value>,
}

impl JobTally {
    fn note(&mut self, type_: &str, obj: &Value) {
        let key = (
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            name_of(obj).to_string(),
        );
        let finished = obj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
        if type_ == "ADDED" {
            self.created.push(obj.clone());
        }
        if type_ == "DELETED" || finished {
            self.unfinished.remove(&key);
        } else {
            self.unfinished.insert(key);
        }
        self.peak = self.peak.max(self.unfinished.len());
    }
}

#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_every: Duration,
    /// Watches end after at most this long (clients re-watch from their last version), like
    /// the apiserver's `--min-request-timeout` randomisation, but shorter so tests exercise
    /// resuming.
    pub max_watch: Duration,
    /// Changes kept for watches; older ones are compacted away.
    pub history_limit: usize,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        DoubleConfig {
            bookmark_every: Duration::from_secs(2),
            max_watch: Duration::from_secs(20),
            history_limit: 20_000,
        }
    }
}

pub struct Double {
    /// Per kind (plural): how late watches deliver changes, like a lagging watch cache.
    watch_delays: Mutex<HashMap<&'static str, Duration>>,
    /// While set, every request answers 503 and open watches end (an apiserver outage).
    pub unavailable: std::sync::atomic::AtomicBool,
    store: Mutex<Store>,
    notify: watch::Sender<u64>,
    pub config: DoubleConfig,
    crd_schema: Value,
    /// The CustomResourceDefinition `importjobs.bulkimport.dev` as installed (served at
    /// `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}`, GET only): the one
    /// generated from `core/src/crd.rs` unless a test installs an older one.
    installed_crd: Mutex<Value>,
}

const FIRST_RV: u64 = 1000;

impl Double {
    pub fn new(config: DoubleConfig) -> Arc<Double> {
        Arc::new(Double {
            watch_delays: Mutex::default(),
            unavailable: Default::default(),
            store: Mutex::new(Store {
                rv: FIRST_RV,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: FIRST_RV,
                creates: HashMap::new(),
                create_attempts: HashMap::new(),
                requests: Vec::new(),
                rbac: None,
                jobs: JobTally::default(),
            }),
            notify: watch::channel(FIRST_RV).0,
            config,
            crd_schema: crd_schema(),
            installed_crd: Mutex::new(installed_crd()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulates an apiserver outage (on) and its recovery (off).
    pub fn set_unavailable(&self, on: bool) {
        self.unavailable
            .store(on, std::sync::atomic::Ordering::SeqCst);
        // Wake the watches so that they notice.
        self.notify.send_modify(|_| {});
    }

    /// Watches of this kind deliver each change `delay` after it happened (reads stay
    /// current), as when an apiserver's watch cache lags behind etcd.
    pub fn set_watch_delay(&self, k: &'static Kind, delay: Duration) {
        self.watch_delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.plural, delay);
    }

    pub fn watch_delay(&self, k: &'static Kind) -> Duration {
        self.watch_delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(k.plural)
            .copied()
            .unwrap_or_default()
    }

    pub fn is_unavailable(&self) -> bool {
        self.unavailable.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Drops the change history: a watch from any version before now answers 410 Gone.
    pub fn compact(&self) {
        let mut s = self.lock();
        s.history.clear();
        s.compacted = s.rv;
    }

    /// Successful creates of this name (a create that answered 409 does not count).
    pub fn creates(&self, k: &'static Kind, ns: &str, name: &str) -> u32 {
        self.lock()
            .creates
            .get(&key(k, ns, name))
            .copied()
            .unwrap_or(0)
    }

    /// Every create request for a name, successful or not.
    pub fn create_attempts(&self, k: &'static Kind, ns: &str, name: &str) -> u32 {
        self.lock()
            .create_attempts
            .get(&key(k, ns, name))
            .copied()
            .unwrap_or(0)
    }

    /// The most unfinished Jobs (no `Complete` or `Failed` condition) there ever were at
    /// once, and every Job created, in order (as created).
    pub fn job_tally(&self) -> (usize, Vec<Value>) {
        let s = self.lock();
        (s.jobs.peak, s.jobs.created.clone())
    }

    /// Successful creates per name, for one kind.
    pub fn creates_of(&self, k: &'static Kind) -> BTreeMap<String, u32> {
        self.lock()
            .creates
            .iter()
            .filter(|(key, _)| key.0 == k.group && key.1 == k.plural)
            .map(|(key, n)| (format!("{}/{}", key.2, key.3), *n))
            .collect()
    }

    /// Turns on authentication and RBAC: requests with a bearer token are checked against
    /// its account's rules. Requests without one are the tests' own (allowed).
    pub fn set_rbac(&self, rbac: Rbac) {
        self.lock().rbac = Some(rbac);
    }

    /// Authenticates and authorizes a request: the user, or 401/403.
    pub fn authorize(
        &self,
        token: Option<&str>,
        group: &str,
        resource: &str,
        verb: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Result<Option<String>> {
        let s = self.lock();
        let (Some(rbac), Some(token)) = (&s.rbac, token) else {
            return Ok(None);
        };
        let (user, grants) = rbac.user(token)?;
        if grants.contains(&(group.to_string(), resource.to_string(), verb.to_string())) {
            Ok(Some(user))
        } else {
            Err(forbidden(&user, group, resource, verb, ns, name))
        }
    }

    /// The user a token authenticates as, when RBAC is on.
    pub fn rbac_user(&self, token: &str) -> Option<String> {
        let s = self.lock();
        s.rbac.as_ref()?.user(token).ok().map(|(u, _)| u)
    }

    /// The eviction API (`POST pods/{name}/eviction`), as the API server runs it for a drain
    /// with no PodDisruptionBudget in the way: the pod gets the `DisruptionTarget` condition
    /// (reason `EvictionByEvictionAPI`) and is deleted gracefully; its kubelet stops it.
    pub fn evict(&self, ns: &str, name: &str) -> Result<()> {
        self.modify(&PODS, ns, name, Sub::Status, "kube-apiserver", |p| {
            let mut conditions = p["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| c["type"] != "DisruptionTarget");
            conditions.push(json!({
                "type": "DisruptionTarget", "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
                "lastTransitionTime": now(),
            }));
            p["status"]["conditions"] = json!(conditions);
        })?;
        self.delete(&PODS, ns, name, &DeleteOpts::default())?;
        Ok(())
    }

    pub fn record_request(&self, r: RequestRecord) {
        self.lock().requests.push(r);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    pub fn get(&self, k: &'static Kind, ns: &str, name: &str) -> Result<Value> {
        self.lock()
            .objects
            .get(&key(k, ns, name))
            .map(|e| e.obj.clone())
            .ok_or_else(|| ApiError::not_found(k, name))
    }

    pub fn get_opt(&self, k: &'static Kind, ns: &str, name: &str) -> Option<Value> {
        self.get(k, ns, name).ok()
    }

    /// Objects of a kind (in one namespace or all), sorted by namespace and name, and the
    /// current resourceVersion.
    /// The installed CRD (`GET customresourcedefinitions/{name}`), if `name` is its name.
    pub fn installed_crd(&self, name: &str) -> Option<Value> {
        let crd = self.installed_crd.lock().unwrap_or_else(|p| p.into_inner());
        (crd["metadata"]["name"] == name).then(|| crd.clone())
    }

    /// Installs another version of the CRD (an older one, as `helm upgrade` leaves it).
    pub fn install_crd(&self, crd: Value) {
        *self.installed_crd.lock().unwrap_or_else(|p| p.into_inner()) = crd;
    }

    /// One pass of the namespace controller deleting namespace `ns`: every object of every
    /// namespaced kind in it is deleted (background propagation). What finalizers hold stays
    /// Terminating; a graceful pod waits for its kubelet. Returns the objects still there, as
    /// `(plural, name, finalizers)`: the namespace is gone once none are.
    pub fn delete_namespace(&self, ns: &str) -> Vec<(String, String, Vec<String>)> {
        let all = Selector::default();
        for k in KINDS.iter().filter(|k| k.namespaced) {
            let (items, _) = self.list(k, Some(ns), &all);
            for obj in items {
                let _ = self.delete(k, ns, name_of(&obj), &DeleteOpts::background());
            }
        }
        KINDS
            .iter()
            .filter(|k| k.namespaced)
            .flat_map(|k| {
                let (items, _) = self.list(k, Some(ns), &all);
                items.into_iter().map(move |obj| {
                    (
                        k.plural.to_string(),
                        name_of(&obj).to_string(),
                        finalizers(&obj),
                    )
                })
            })
            .collect()
    }

    pub fn list(&self, k: &'static Kind, ns: Option<&str>, sel: &Selector) -> (Vec<Value>, u64) {
        let s = self.lock();
        let mut items: Vec<Value> = s
            .objects
            .iter()
            .filter(|(key, _)| key.0 == k.group && key.1 == k.plural)
            .filter(|(key, _)| ns.is_none_or(|ns| key.2 == ns))
            .filter(|(_, e)| sel.matches(&e.obj))
            .map(|(_, e)| e.obj.clone())
            .collect();
        if std::ptr::eq(k, &CORE_EVENTS) {
            // One resource in the API server: events.k8s.io/v1 Events are core/v1 Events
            // too (what `kubectl describe` lists), with the fields mapped.
            items.extend(
                s.objects
                    .iter()
                    .filter(|(key, _)| key.0 == EVENTS.group && key.1 == EVENTS.plural)
                    .filter(|(key, _)| ns.is_none_or(|ns| key.2 == ns))
                    .map(|(_, e)| as_core_event(&e.obj))
                    .filter(|e| sel.matches(e)),
            );
        }
        (items, s.rv)
    }

    /// Changes of a kind after `rv`, and the version they bring the reader to; `Err` with
    /// the oldest resumable version when `rv` was compacted away.
    pub fn changes_since(
        &self,
        k: &'static Kind,
        ns: Option<&str>,
        rv: u64,
    ) -> std::result::Result<(Vec<Change>, u64), u64> {
        let s = self.lock();
        if rv < s.compacted {
            return Err(s.compacted);
        }
        let start = s.history.partition_point(|c| c.rv <= rv);
        let changes = s
            .history
            .range(start..)
            .filter(|c| std::ptr::eq(c.kind, k) && ns.is_none_or(|ns| c.ns == ns))
            .cloned()
            .collect();
        Ok((changes, s.rv))
    }

    pub fn create(&self, k: &'static Kind, ns: &str, body: Value, o: &WriteOpts) -> Result<Value> {
        let mut s = self.lock();
        if std::ptr::eq(k, &PODS) {
            quota_admits_pod(&s, ns, &body)?;
        }
        let r = self.create_locked(&mut s, k, ns, body, o, "Update");
        drop(s);
        self.notify_changed();
        r
    }

    pub fn replace(
        &self,
        k: &'static Kind,
        ns: &str,
        name: &str,
        sub: Sub,
        body: Value,
        o: &WriteOpts,
    ) -> Result<Value> {
        let mut s = self.lock();
        let r = (|| {
            if name_of(&body) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(&body)
                )));
            }
            let entry = s
                .objects
                .get(&key(k, ns, name))
                .ok_or_else(|| ApiError::not_found(k, name))?;
            if let Some(rv) = body["metadata"]["resourceVersion"]
                .as_str()
                .filter(|v| !v.is_empty())
            {
                if entry.obj["metadata"]["resourceVersion"].as_str() != Some(rv) {
                    return Err(ApiError::conflict(k, name));
                }
            }
            let manager = o.field_manager.clone().unwrap_or_else(|| "unknown".into());
            self.update_locked(&mut s, k, ns, name, sub, body, &manager, None, o.dry_run)
        })();
        drop(s);
        self.notify_changed();
        r
    }

    /// Reads, changes and writes an object atomically (for the stand-in controllers).
    pub fn modify(
        &self,
        k: &'static Kind,
        ns: &str,
        name: &str,
        sub: Sub,
        manager: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value> {
        let mut s = self.lock();
        let r = (|| {
            let mut obj = s
                .objects
                .get(&key(k, ns, name))
                .ok_or_else(|| ApiError::not_found(k, name))?
                .obj
                .clone();
            f(&mut obj);
            self.update_locked(&mut s, k, ns, name, sub, obj, manager, None, false)
        })();
        drop(s);
        self.notify_changed();
        r
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        k: &'static Kind,
        ns: &str,
        name: &str,
        sub: Sub,
        pt: PatchType,
        body: &[u8],
        o: &WriteOpts,
    ) -> Result<Value> {
        let mut s = self.lock();
        let r = self.patch_locked(&mut s, k, ns, name, sub, pt, body, o);
        drop(s);
        self.notify_changed();
        r
    }

    pub fn delete(
        &self,
        k: &'static Kind,
        ns: &str,
        name: &str,
        o: &DeleteOpts,
    ) -> Result<Deleted> {
        let mut s = self.lock();
        let r = self.delete_locked(&mut s, k, ns, name, o);
        drop(s);
        self.notify_changed();
        r
    }

    fn notify_changed(&self) {
        let rv = self.lock().rv;
        self.notify.send_if_modified(|cur| {
            let changed = *cur != rv;
            *cur = rv;
            changed
        });
    }

    // -- internals (store locked) --

    fn record(
        &self,
        s: &mut Store,
        k: &'static Kind,
        type_: &'static str,
        obj: &Value,
        old: Option<Value>,
    ) {
        if std::ptr::eq(k, &JOBS) {
            s.jobs.note(type_, obj);
        }
        s.history.push_back(Change {
            rv: s.rv,
            kind: k,
            ns: obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            type_,
            at: std::time::Instant::now(),
            object: obj.clone(),
            old,
        });
        while s.history.len() > self.config.history_limit {
            if let Some(c) = s.history.pop_front() {
                s.compacted = c.rv;
            }
        }
    }

    fn validate(&self, k: &'static Kind, obj: &mut Value) -> Result<()> {
        let name = name_of(obj).to_string();
        let mut causes = Vec::new();
        if !is_dns_subdomain(&name) {
            causes.push(format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ));
        }
        if let Some(labels) = obj["metadata"]["labels"].as_object() {
            for (lk, lv) in labels {
                if !is_label_key(lk) {
                    causes.push(format!("metadata.labels: Invalid value: \"{lk}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
                }
                match lv.as_str() {
                    Some(v) if is_label_value(v) => {}
                    _ => causes.push(format!("metadata.labels: Invalid value: {lv}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)")),
                }
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(k, &name, &causes));
        }
        match k.kind {
            "ImportJob" => {
                let Some(m) = obj.as_object_mut() else {
                    return Err(ApiError::bad_request("an object is expected"));
                };
                m.retain(|f, _| {
                    matches!(
                        f.as_str(),
                        "apiVersion" | "kind" | "metadata" | "spec" | "status"
                    )
                });
                let props = &self.crd_schema["properties"];
                for part in ["spec", "status"] {
                    if let Some(v) = m.get_mut(part) {
                        schema_check(&props[part], v, part, &mut causes);
                    }
                }
                if !causes.is_empty() {
                    return Err(ApiError::invalid(k, &name, &causes));
                }
            }
            "Job" => *obj = roundtrip::<k8s_openapi::api::batch::v1::Job>(obj)?,
            "Pod" => *obj = roundtrip::<k8s_openapi::api::core::v1::Pod>(obj)?,
            "Lease" => *obj = roundtrip::<k8s_openapi::api::coordination::v1::Lease>(obj)?,
            "ConfigMap" => *obj = roundtrip::<k8s_openapi::api::core::v1::ConfigMap>(obj)?,
            "Secret" => {
                // stringData is write-only: it is merged into data (base64) on write.
                if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                    for (sk, sv) in sd.as_object().into_iter().flatten() {
                        let bytes =
                            k8s_openapi::ByteString(sv.as_str().unwrap_or("").as_bytes().to_vec());
                        obj["data"][sk] = serde_json::to_value(bytes).expect("base64");
                    }
                }
                *obj = roundtrip::<k8s_openapi::api::core::v1::Secret>(obj)?;
            }
            "Event" if k.group.is_empty() => {
                *obj = roundtrip::<k8s_openapi::api::core::v1::Event>(obj)?;
            }
            "ResourceQuota" => {
                *obj = roundtrip::<k8s_openapi::api::core::v1::ResourceQuota>(obj)?;
            }
            "Event" => {
                *obj = roundtrip::<k8s_openapi::api::events::v1::Event>(obj)?;
                let len = |f: &str| obj[f].as_str().map(str::len);
                if obj["eventTime"].is_null() {
                    causes.push("eventTime: Required value".into());
                }
                for f in [
                    "reportingController",
                    "reportingInstance",
                    "action",
                    "reason",
                ] {
                    match len(f) {
                        None | Some(0) => causes.push(format!("{f}: Required value")),
                        Some(n) if n > 128 => {
                            causes.push(format!("{f}: Too long: may not be more than 128 bytes"))
                        }
                        _ => {}
                    }
                }
                if !matches!(obj["type"].as_str(), Some("Normal" | "Warning")) {
                    causes.push(format!(
                        "type: Unsupported value: {}: supported values: \"Normal\", \"Warning\"",
                        obj["type"]
                    ));
                }
                if len("note").unwrap_or(0) > 1024 {
                    causes.push("note: Too long: may not be more than 1024 bytes".into());
                }
                if !causes.is_empty() {
                    return Err(ApiError::invalid(k, &name, &causes));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn create_locked(
        &self,
        s: &mut Store,
        k: &'static Kind,
        ns: &str,
        mut obj: Value,
        o: &WriteOpts,
        operation: &'static str,
    ) -> Result<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the request body is not an object"));
        }
        if let Some(kind) = obj["kind"].as_str() {
            if kind != k.kind || obj["apiVersion"].as_str() != Some(&k.api_version()) {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({})",
                    obj["apiVersion"],
                    k.api_version()
                )));
            }
        }
        obj["apiVersion"] = k.api_version().into();
        obj["kind"] = k.kind.into();
        let meta = meta_mut(&mut obj);
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        k,
                        "",
                        &[
                            "metadata.name: Required value: name or generateName is required"
                                .into(),
                        ],
                    ))
                }
            },
        };
        let kkey = key(k, ns, &name);
        *s.create_attempts.entry(kkey.clone()).or_default() += 1;
        if s.objects.contains_key(&kkey) {
            return Err(ApiError::already_exists(k, &name));
        }
        let uid = uuid::Uuid::new_v4().to_string();
        meta.insert("name".into(), name.clone().into());
        meta.insert("namespace".into(), ns.into());
        meta.insert("uid".into(), uid.clone().into());
        meta.insert("creationTimestamp".into(), now().into());
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "resourceVersion",
        ] {
            meta.remove(f);
        }
        if k.status {
            meta.insert("generation".into(), 1.into());
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        match k.kind {
            "Pod" => obj["status"] = json!({"phase": "Pending"}),
            "Job" => default_job(&mut obj, &name, &uid),
            _ => {}
        }
        self.validate(k, &mut obj)?;
        let mut managers = Vec::new();
        let manager = o.field_manager.clone().unwrap_or_else(|| "unknown".into());
        track_update(k, &mut managers, &manager, Sub::Main, &json!({}), &obj);
        for m in managers.iter_mut() {
            m.operation = operation;
        }
        if o.dry_run {
            return Ok(obj);
        }
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = s.rv.to_string().into();
        render_managed_fields(k, &mut obj, &managers);
        self.record(s, k, "ADDED", &obj, None);
        s.objects.insert(
            kkey.clone(),
            Entry {
                kind: k,
                obj: obj.clone(),
                managers,
            },
        );
        *s.creates.entry(kkey).or_default() += 1;
        Ok(obj)
    }

    /// Writes `new` over the stored object through `sub`, with the server's rules: owned
    /// metadata kept, status or spec carried over, generation, finalizer rules, validation,
    /// no-op detection, removal once a deleting object has no finalizers.
    #[allow(clippy::too_many_arguments)]
    fn update_locked(
        &self,
        s: &mut Store,
        k: &'static Kind,
        ns: &str,
        name: &str,
        sub: Sub,
        new: Value,
        manager: &str,
        managers_after: Option<Vec<Managed>>,
        dry_run: bool,
    ) -> Result<Value> {
        if sub == Sub::Status && !k.status {
            return Err(ApiError::resource_not_found());
        }
        let kkey = key(k, ns, name);
        let entry = s
            .objects
            .get(&kkey)
            .ok_or_else(|| ApiError::not_found(k, name))?;
        let old = entry.obj.clone();
        let mut obj = match sub {
            Sub::Status => {
                let mut o = old.clone();
                match new.get("status") {
                    Some(st) if !st.is_null() => o["status"] = st.clone(),
                    _ => {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                o
            }
            Sub::Main => {
                let mut o = new.clone();
                if !o.is_object() {
                    return Err(ApiError::bad_request("the request body is not an object"));
                }
                o["apiVersion"] = k.api_version().into();
                o["kind"] = k.kind.into();
                let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
                let meta = meta_mut(&mut o);
                for f in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "generateName",
                ] {
                    match old_meta.get(f) {
                        Some(v) => {
                            meta.insert(f.into(), v.clone());
                        }
                        None => {
                            meta.remove(f);
                        }
                    }
                }
                if k.status {
                    match old.get("status") {
                        Some(st) => o["status"] = st.clone(),
                        None => {
                            if let Some(m) = o.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                o
            }
        };
        if is_deleting(&old) {
            let before = finalizers(&old);
            if finalizers(&obj).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    k,
                    name,
                    &["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted".into()],
                ));
            }
        }
        if k.kind == "Job" && old["spec"]["template"] != obj["spec"]["template"] {
            return Err(ApiError::invalid(
                k,
                name,
                &["spec.template: Invalid value: field is immutable".into()],
            ));
        }
        self.validate(k, &mut obj)?;
        if k.status && sub == Sub::Main && spec_part(&old) != spec_part(&obj) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            obj["metadata"]["generation"] = g.into();
        }
        let mut managers = match managers_after {
            Some(m) => m,
            None => {
                let mut m = entry.managers.clone();
                track_update(k, &mut m, manager, sub, &old, &obj);
                m
            }
        };
        managers.retain(|m| !m.fields.is_empty());
        let entry = s.objects.get(&kkey).expect("present");
        if comparable(&old) == comparable(&obj) && entry.managers == managers {
            return Ok(old);
        }
        if dry_run {
            return Ok(obj);
        }
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = s.rv.to_string().into();
        render_managed_fields(k, &mut obj, &managers);
        if is_deleting(&obj) && finalizers(&obj).is_empty() {
            s.objects.remove(&kkey);
            self.record(s, k, "DELETED", &obj, Some(old));
            return Ok(obj);
        }
        self.record(s, k, "MODIFIED", &obj, Some(old));
        let entry = s.objects.get_mut(&kkey).expect("present");
        entry.obj = obj.clone();
        entry.managers = managers;
        Ok(obj)
    }

    #[allow(clippy::too_many_arguments)]
    fn patch_locked(
        &self,
        s: &mut Store,
        k: &'static Kind,
        ns: &str,
        name: &str,
        sub: Sub,
        pt: PatchType,
        body: &[u8],
        o: &WriteOpts,
    ) -> Result<Value> {
        let parsed: Value = match pt {
            PatchType::Apply => serde_json::from_slice(body)
                .or_else(|_| serde_saphyr::from_slice::<Value>(body))
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        let kkey = key(k, ns, name);
        let manager = o.field_manager.clone().unwrap_or_else(|| "unknown".into());
        match pt {
            PatchType::Apply => {
                let manager = o.field_manager.clone().ok_or_else(|| {
                    ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    )
                })?;
                if !s.objects.contains_key(&kkey) {
                    if sub == Sub::Status {
                        return Err(ApiError::not_found(k, name));
                    }
                    // Apply creates what does not exist.
                    let mut obj = json!({"metadata": {"name": name}});
                    merge_apply(&mut obj, &managed_part(k, &parsed, Sub::Main));
                    let opts = WriteOpts {
                        field_manager: Some(manager.clone()),
                        ..o.clone()
                    };
                    return self.create_locked(s, k, ns, obj, &opts, "Apply");
                }
                self.apply_locked(s, k, ns, name, sub, &parsed, &manager, o)
            }
            PatchType::Json | PatchType::Merge | PatchType::Strategic => {
                if pt == PatchType::Strategic && k.group == IMPORTJOBS.group {
                    return Err(ApiError::unsupported_media(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                let current = s
                    .objects
                    .get(&kkey)
                    .ok_or_else(|| ApiError::not_found(k, name))?
                    .obj
                    .clone();
                let mut patched = current.clone();
                if pt == PatchType::Json {
                    json_patch(&mut patched, &parsed)?;
                } else {
                    // Strategic merge patch is approximated by a JSON merge patch.
                    merge_patch(&mut patched, &parsed);
                }
                if let Some(rv) = patched["metadata"]["resourceVersion"].as_str() {
                    if current["metadata"]["resourceVersion"].as_str() != Some(rv) {
                        return Err(ApiError::conflict(k, name));
                    }
                }
                self.update_locked(s, k, ns, name, sub, patched, &manager, None, o.dry_run)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_locked(
        &self,
        s: &mut Store,
        k: &'static Kind,
        ns: &str,
        name: &str,
        sub: Sub,
        config: &Value,
        manager: &str,
        o: &WriteOpts,
    ) -> Result<Value> {
        let kkey = key(k, ns, name);
        let entry = s.objects.get(&kkey).expect("checked");
        if let Some(rv) = config["metadata"]["resourceVersion"].as_str() {
            if entry.obj["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(ApiError::conflict(k, name));
            }
        }
        let config = managed_part(k, config, sub);
        let new_fields = leaves(&config);
        let mut managers = entry.managers.clone();
        let current = entry.obj.clone();
        let current_part = managed_part(k, &current, sub);
        // Conflicts: fields another manager owns with a different value.
        let mut conflicts = Vec::new();
        for m in managers.iter_mut() {
            if m.manager == manager && m.subresource == sub && m.operation == "Apply" {
                continue;
            }
            let theirs: Vec<FieldPath> = m
                .fields
                .iter()
                .filter(|p| {
                    new_fields.contains(*p) && get_at(&current_part, p) != get_at(&config, p)
                })
                .cloned()
                .collect();
            for p in theirs {
                if o.force {
                    m.fields.remove(&p);
                } else {
                    conflicts.push(format!(
                        "conflict with \"{}\": .{}",
                        m.manager,
                        render_path(&p)
                    ));
                }
            }
        }
        if !conflicts.is_empty() {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts.join("; ")
                ),
            );
            e = e.about(k, name);
            return Err(e);
        }
        let previous: FieldSet = managers
            .iter()
            .find(|m| m.manager == manager && m.subresource == sub && m.operation == "Apply")
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        match managers
            .iter_mut()
            .find(|m| m.manager == manager && m.subresource == sub && m.operation == "Apply")
        {
            Some(m) => {
                if m.fields != new_fields {
                    m.time = now();
                }
                m.fields = new_fields.clone();
            }
            None => managers.push(Managed {
                manager: manager.into(),
                operation: "Apply",
                subresource: sub,
                fields: new_fields.clone(),
                time: now(),
            }),
        }
        let owned_by_anyone = |p: &[Pe], managers: &[Managed]| {
            managers.iter().any(|m| {
                m.fields
                    .iter()
                    .any(|f| f.len() >= p.len() && f[..p.len()] == *p)
            })
        };
        let mut obj = current.clone();
        // Fields this manager stopped applying, that nobody else owns, go away; list-map
        // items keep their key fields until the item itself is unowned.
        for p in previous.difference(&new_fields) {
            if owned_by_anyone(p, &managers) {
                continue;
            }
            let is_key_field = match p.as_slice() {
                [.., Pe::F(list), Pe::K(_), Pe::F(field)] => {
                    list_map_keys(list).is_some_and(|keys| keys.contains(&field.as_str()))
                }
                _ => false,
            };
            if !is_key_field {
                remove_at(&mut obj, p);
            }
            for i in (1..p.len()).rev() {
                let prefix = &p[..i];
                if owned_by_anyone(prefix, &managers) {
                    break;
                }
                let Some(v) = get_at(&obj, prefix) else {
                    continue;
                };
                let only_keys = matches!(prefix.last(), Some(Pe::K(key)) if {
                    let key: Value = serde_json::from_str(key).unwrap_or(Value::Null);
                    v.as_object().is_some_and(|m| m.keys().all(|f| key.get(f).is_some()))
                });
                let empty = v.as_object().is_some_and(Map::is_empty)
                    || v.as_array().is_some_and(Vec::is_empty);
                if only_keys || empty {
                    remove_at(&mut obj, prefix);
                } else {
                    break;
                }
            }
        }
        merge_apply(&mut obj, &config);
        self.update_locked(s, k, ns, name, sub, obj, manager, Some(managers), o.dry_run)
    }

    fn delete_locked(
        &self,
        s: &mut Store,
        k: &'static Kind,
        ns: &str,
        name: &str,
        o: &DeleteOpts,
    ) -> Result<Deleted> {
        let kkey = key(k, ns, name);
        let entry = s
            .objects
            .get(&kkey)
            .ok_or_else(|| ApiError::not_found(k, name))?;
        let obj = entry.obj.clone();
        if o.precondition_uid
            .as_deref()
            .is_some_and(|u| u != uid_of(&obj))
            || o.precondition_rv
                .as_deref()
                .is_some_and(|r| Some(r) != obj["metadata"]["resourceVersion"].as_str())
        {
            return Err(ApiError::conflict(k, name));
        }
        // batch/v1 Jobs orphan their pods unless told otherwise (kept for compatibility).
        let policy = o.propagation.unwrap_or(if k.kind == "Job" {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
        if policy == Propagation::Orphan {
            self.orphan_dependents(s, uid_of(&obj));
        }
        let mut fins = finalizers(&obj);
        if policy == Propagation::Foreground
            && !fins.iter().any(|f| f == "foregroundDeletion")
            && !is_deleting(&obj)
        {
            fins.push("foregroundDeletion".into());
        }
        // A pod bound to a node that has not finished is stopped by its kubelet first.
        let graceful_pod = k.kind == "Pod"
            && obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && !matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
            && o.grace_period_seconds != Some(0);
        if !fins.is_empty() || graceful_pod {
            if is_deleting(&obj) && !graceful_pod {
                return Ok(Deleted::Pending(obj));
            }
            let grace = o
                .grace_period_seconds
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(if graceful_pod { 30 } else { 0 });
            if is_deleting(&obj) {
                // A second delete may only shorten the grace period.
                let current = obj["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(0);
                if grace >= current {
                    return Ok(Deleted::Pending(obj));
                }
            }
            let mut new = obj.clone();
            let meta = meta_mut(&mut new);
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            meta.insert(
                "deletionTimestamp".into(),
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into(),
            );
            meta.insert("deletionGracePeriodSeconds".into(), grace.into());
            meta.insert("finalizers".into(), json!(fins));
            if fins.is_empty() {
                meta.remove("finalizers");
            }
            s.rv += 1;
            new["metadata"]["resourceVersion"] = s.rv.to_string().into();
            self.record(s, k, "MODIFIED", &new, Some(obj));
            s.objects.get_mut(&kkey).expect("present").obj = new.clone();
            return Ok(Deleted::Pending(new));
        }
        s.objects.remove(&kkey);
        s.rv += 1;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = s.rv.to_string().into();
        self.record(s, k, "DELETED", &gone, Some(obj));
        Ok(Deleted::Gone(gone))
    }

    fn orphan_dependents(&self, s: &mut Store, owner_uid: &str) {
        let dependents: Vec<(Key, &'static Kind)> = s
            .objects
            .iter()
            .filter(|(_, e)| owner_uids(&e.obj).iter().any(|u| u == owner_uid))
            .map(|(key, e)| (key.clone(), e.kind))
            .collect();
        for (dkey, dk) in dependents {
            let e = s.objects.get(&dkey).expect("present");
            let mut obj = e.obj.clone();
            if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
            }
            if obj["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(Vec::is_empty)
            {
                meta_mut(&mut obj).remove("ownerReferences");
            }
            let _ = self.update_locked(
                s,
                dk,
                &dkey.2,
                &dkey.3,
                Sub::Main,
                obj,
                "generic-garbage-collector",
                None,
                false,
            );
        }
    }

    /// One pass of the garbage collector: dependents whose owners are all gone are deleted
    /// (in the background), dangling owner references are dropped, and foreground deletions
    /// finish once their dependents are gone. Returns whether it changed anything.
    pub fn collect_garbage(&self) -> bool {
        let mut s = self.lock();
        let before = s.rv;
        let uids: std::collections::HashSet<String> = s
            .objects
            .values()
            .map(|e| uid_of(&e.obj).to_string())
            .collect();
        let mut to_delete = Vec::new();
        let mut to_trim = Vec::new();
        for (kkey, e) in &s.objects {
            let owners = owner_uids(&e.obj);
            if owners.is_empty() {
                continue;
            }
            let alive = owners.iter().filter(|u| uids.contains(*u)).count();
            if alive == 0 {
                if !is_deleting(&e.obj) {
                    to_delete.push((kkey.clone(), e.kind));
                }
            } else if alive < owners.len() {
                to_trim.push((kkey.clone(), e.kind));
            }
        }
        let foreground: Vec<(Key, &'static Kind, String)> = s
            .objects
            .iter()
            .filter(|(_, e)| {
                is_deleting(&e.obj) && finalizers(&e.obj).iter().any(|f| f == "foregroundDeletion")
            })
            .map(|(kkey, e)| (kkey.clone(), e.kind, uid_of(&e.obj).to_string()))
            .collect();
        for (kkey, k) in to_delete {
            let _ = self.delete_locked(&mut s, k, &kkey.2, &kkey.3, &DeleteOpts::background());
        }
        for (kkey, k) in to_trim {
            let Some(e) = s.objects.get(&kkey) else {
                continue;
            };
            let mut obj = e.obj.clone();
            if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str().is_some_and(|u| uids.contains(u)));
            }
            let _ = self.update_locked(
                &mut s,
                k,
                &kkey.2,
                &kkey.3,
                Sub::Main,
                obj,
                "generic-garbage-collector",
                None,
                false,
            );
        }
        for (kkey, k, uid) in foreground {
            let dependents: Vec<(Key, &'static Kind)> = s
                .objects
                .iter()
                .filter(|(_, e)| owner_uids(&e.obj).contains(&uid))
                .map(|(dk, e)| (dk.clone(), e.kind))
                .collect();
            if dependents.is_empty() {
                let Some(e) = s.objects.get(&kkey) else {
                    continue;
                };
                let mut obj = e.obj.clone();
                let fins: Vec<String> = finalizers(&obj)
                    .into_iter()
                    .filter(|f| f != "foregroundDeletion")
                    .collect();
                obj["metadata"]["finalizers"] = json!(fins);
                let _ = self.update_locked(
                    &mut s,
                    k,
                    &kkey.2,
                    &kkey.3,
                    Sub::Main,
                    obj,
                    "generic-garbage-collector",
                    None,
                    false,
                );
            } else {
                // Dependents of a foreground deletion are deleted in the foreground too.
                let foreground = DeleteOpts {
                    propagation: Some(Propagation::Foreground),
                    ..Default::default()
                };
                for (dkey, dk) in dependents {
                    if !s.objects.get(&dkey).is_some_and(|e| is_deleting(&e.obj)) {
                        let _ = self.delete_locked(&mut s, dk, &dkey.2, &dkey.3, &foreground);
                    }
                }
            }
        }
        let changed = s.rv != before;
        drop(s);
        if changed {
            self.notify_changed();
        }
        changed
    }
}

/// An events.k8s.io/v1 Event as the core/v1 API shows it.
fn as_core_event(e: &Value) -> Value {
    let last = e["series"]["lastObservedTime"]
        .as_str()
        .or(e["eventTime"].as_str())
        .unwrap_or("");
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": e["metadata"],
        "involvedObject": e["regarding"],
        "reason": e["reason"], "message": e["note"], "type": e["type"],
        "source": {"component": e["reportingController"]},
        "reportingComponent": e["reportingController"],
        "reportingInstance": e["reportingInstance"],
        "action": e["action"],
        "eventTime": e["eventTime"],
        "firstTimestamp": e["eventTime"], "lastTimestamp": last,
        "count": e["series"]["count"].as_i64().unwrap_or(1),
    })
}

/// The ResourceQuota admission plugin, for `spec.hard.pods`: a pod beyond the quota's count
/// of non-terminal pods in the namespace is forbidden, with the API server's message.
fn quota_admits_pod(s: &Store, ns: &str, pod: &Value) -> Result<()> {
    fn in_ns<'a>(s: &'a Store, ns: &'a str, plural: &'a str) -> impl Iterator<Item = &'a Value> {
        s.objects
            .iter()
            .filter(move |(key, _)| key.0.is_empty() && key.1 == plural && key.2 == ns)
            .map(|(_, e)| &e.obj)
    }
    let used = in_ns(s, ns, "pods")
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .count();
    for quota in in_ns(s, ns, "resourcequotas") {
        let Some(hard) = quota["spec"]["hard"]["pods"]
            .as_str()
            .and_then(|h| h.parse::<usize>().ok())
        else {
            continue;
        };
        if used + 1 > hard {
            let name = pod["metadata"]["name"]
                .as_str()
                .or(pod["metadata"]["generateName"].as_str())
                .unwrap_or("");
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "pods \"{name}\" is forbidden: exceeded quota: {}, requested: pods=1, used: pods={used}, limited: pods={hard}",
                    name_of(quota)
                ),
            ));
        }
    }
    Ok(())
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn render_path(p: &[Pe]) -> String {
    p.iter()
        .map(|pe| match pe {
            Pe::F(k) => k.clone(),
            Pe::K(j) => format!("[{j}]"),
            Pe::V(j) => format!("[={j}]"),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What the apiserver defaults on a new batch/v1 Job: completions, parallelism, backoff
/// limit, the selector on the controller uid and the labels the pods get.
fn default_job(obj: &mut Value, name: &str, uid: &str) {
    let spec = &mut obj["spec"];
    for (f, v) in [
        ("completions", json!(1)),
        ("parallelism", json!(1)),
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("manualSelector", json!(false)),
    ] {
        if spec[f].is_null() {
            spec[f] = v;
        }
    }
    if spec["podReplacementPolicy"].is_null() {
        spec["podReplacementPolicy"] = if spec["podFailurePolicy"].is_null() {
            "TerminatingOrFailed".into()
        } else {
            "Failed".into()
        };
    }
    if spec["selector"].is_null() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    let labels = &mut spec["template"]["metadata"]["labels"];
    if labels.is_null() {
        *labels = json!({});
    }
    for (lk, lv) in [
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid),
        ("job-name", name),
    ] {
        labels[lk] = lv.into();
    }
}
