//! The double's HTTP face: the REST paths, verbs, content types and watch streams of the
//! Kubernetes API for the kinds in `kube_double.rs`, on plain HTTP on a loopback port. A
//! kubeconfig file pointing at it is what the processes get: with a bearer token per service
//! account once `Double::set_rbac` is on (each request is then authorized against that
//! account's Role, 401/403 as the API server answers), without one for the tests' own client.
//!
//! Paths: `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}` (discovery), `/version`,
//! `/api/v1/namespaces/{ns}/{plural}[/{name}[/status]]`,
//! `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/status]]` and the
//! all-namespaces collections. Lists honour `labelSelector`, `fieldSelector`, `limit` and
//! `continue`; watches honour `resourceVersion` (absent or `0`: the current objects first as
//! ADDED), `sendInitialEvents` (ends the initial events with the `k8s.io/initial-events-end`
//! bookmark), `allowWatchBookmarks`, `timeoutSeconds`, and answer an ERROR event with a 410
//! `Expired` Status for a compacted version, as the apiserver does. Objects leaving or
//! entering a label selector arrive as DELETED / ADDED. `Accept: …;as=PartialObjectMetadata`
//! (kube-runtime's metadata watches) gets metadata-only objects.

#![allow(dead_code)]

use crate::kube_double::{
    ApiError, Change, DeleteOpts, Deleted, Double, Kind, PatchType, Propagation, RequestRecord,
    Selector, Sub, WriteOpts, KINDS, PODS,
};
use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};
use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Arc, time::Duration};
use tokio::task::JoinHandle;

/// A running double: its address and the server task.
pub struct KubeServer {
    pub double: Arc<Double>,
    pub addr: SocketAddr,
    server: JoinHandle<()>,
    gc: JoinHandle<()>,
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        self.server.abort();
        self.gc.abort();
    }
}

impl KubeServer {
    pub async fn start(double: Arc<Double>) -> KubeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(double.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        // The garbage collector runs after every change, off the request path (as the
        // controller-manager's does).
        let gc_double = double.clone();
        let gc = tokio::spawn(async move {
            let mut rx = gc_double.subscribe();
            loop {
                while gc_double.collect_garbage() {}
                if rx.changed().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        KubeServer {
            double,
            addr,
            server,
            gc,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server, with `namespace` as the default, authenticating with
    /// `token` (a service account's) or with nothing.
    pub fn kubeconfig(&self, namespace: &str, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => format!("{{token: {t}}}"),
            None => "{}".into(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: user\n    namespace: {namespace}\ncurrent-context: double\nusers:\n- name: user\n  user: {user}\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path, namespace: &str, token: Option<&str>) {
        std::fs::write(path, self.kubeconfig(namespace, token)).unwrap();
    }

    /// A kube client for tests, talking to this server.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.default_namespace = namespace.into();
        kube::Client::try_from(config).unwrap()
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

enum Target {
    Discovery(Value),
    /// `apiextensions.k8s.io/v1` `customresourcedefinitions/{name}`: the installed CRD.
    Crd(String),
    Collection {
        kind: &'static Kind,
        ns: Option<String>,
    },
    Item {
        kind: &'static Kind,
        ns: String,
        name: String,
        sub: Option<String>,
    },
}

fn discovery_resources(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS
        .iter()
        .copied()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in &kinds {
        let mut resource = json!({
            "name": k.plural,
            "singularName": k.kind.to_lowercase(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        });
        if k.kind == "ImportJob" {
            // As the CRD declares them (`kubectl get ij`, `kubectl get bulk-import`).
            resource["shortNames"] = json!(["ij"]);
            resource["categories"] = json!(["bulk-import"]);
        }
        resources.push(resource);
        if k.status {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": kinds[0].api_version(),
        "resources": resources,
    }))
}

fn parse_target(path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["apis", "apiextensions.k8s.io", "v1", "customresourcedefinitions", name] =
        parts.as_slice()
    {
        return Ok(Target::Crd(name.to_string()));
    }
    let (group, version, rest): (&str, &str, &[&str]) = match parts.as_slice() {
        ["api"] => {
            return Ok(Target::Discovery(json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
            })))
        }
        ["apis"] => {
            let mut groups: Vec<(&str, &str)> = KINDS
                .iter()
                .filter(|k| !k.group.is_empty())
                .map(|k| (k.group, k.version))
                .collect();
            groups.dedup();
            let groups: Vec<Value> = groups
                .iter()
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv], "preferredVersion": gv})
                })
                .collect();
            return Ok(Target::Discovery(
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        ["version"] => {
            return Ok(Target::Discovery(json!({
                "major": "1", "minor": "37", "gitVersion": "v1.37.0-bulk-import-double",
                "platform": "linux/amd64"
            })))
        }
        ["api", "v1"] => {
            return discovery_resources("", "v1")
                .map(Target::Discovery)
                .ok_or_else(ApiError::resource_not_found)
        }
        ["apis", g, v] => {
            return discovery_resources(g, v)
                .map(Target::Discovery)
                .ok_or_else(ApiError::resource_not_found)
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Err(ApiError::resource_not_found()),
    };
    let find =
        |plural: &str| Kind::find(group, version, plural).ok_or_else(ApiError::resource_not_found);
    match rest {
        ["namespaces", ns, plural] => Ok(Target::Collection {
            kind: find(plural)?,
            ns: Some(ns.to_string()),
        }),
        ["namespaces", ns, plural, name] => Ok(Target::Item {
            kind: find(plural)?,
            ns: ns.to_string(),
            name: name.to_string(),
            sub: None,
        }),
        ["namespaces", ns, plural, name, sub] => Ok(Target::Item {
            kind: find(plural)?,
            ns: ns.to_string(),
            name: name.to_string(),
            sub: Some(sub.to_string()),
        }),
        [plural] => Ok(Target::Collection {
            kind: find(plural)?,
            ns: None,
        }),
        _ => Err(ApiError::resource_not_found()),
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    State(double): State<Arc<Double>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = query_map(&uri);
    if double.is_unavailable() {
        return error_response(&ApiError::unavailable());
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let attributes = rbac_attributes(&method, uri.path(), &q);
    let mut user = None;
    let authorized = match &attributes {
        Some((group, resource, verb, ns, name)) => double
            .authorize(
                token.as_deref(),
                group,
                resource,
                verb,
                ns.as_deref(),
                name.as_deref(),
            )
            .map(|u| user = u),
        None => Ok(()),
    };
    // A denial by the admission plugin is recorded with the attributes it checked.
    let mut admission: Option<Grant> = None;
    let authorized = authorized.and_then(|()| match (&attributes, &method) {
        (Some((_, _, _, ns, _)), &Method::POST) => {
            owner_references_permission(&double, token.as_deref(), ns.as_deref(), &body).map_err(
                |denied| {
                    let (e, checked) = *denied;
                    admission = Some(checked);
                    e
                },
            )
        }
        _ => Ok(()),
    });
    let response = match authorized {
        Err(e) => error_response(&e),
        Ok(()) => match route(&double, &method, &uri, &headers, &q, body).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        },
    };
    if user.is_none() {
        // Denied requests are recorded with the user they were denied to.
        user = token.and_then(|t| {
            double
                .rbac_user(&t)
                .filter(|_| response.status().as_u16() == 403)
        });
    }
    double.record_request(RequestRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        status: response.status().as_u16(),
        user,
        attributes: admission.or(attributes.map(|(g, r, v, _, _)| (g, r, v))),
        at: std::time::Instant::now(),
    });
    response
}

/// The OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift, for one): an
/// object created with an owner reference that blocks its owner's deletion needs `update` on
/// the owner's `finalizers` subresource.
fn owner_references_permission(
    double: &Double,
    token: Option<&str>,
    ns: Option<&str>,
    body: &[u8],
) -> Result<(), Box<(ApiError, Grant)>> {
    let Ok(obj) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    for owner in obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if owner["blockOwnerDeletion"] != Value::Bool(true) {
            continue;
        }
        let api_version = owner["apiVersion"].as_str().unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let kind = owner["kind"].as_str().unwrap_or("").to_lowercase();
        let resource = format!("{kind}s/finalizers");
        if let Err(e) = double.authorize(
            token,
            group,
            &resource,
            "update",
            ns,
            owner["name"].as_str(),
        ) {
            return Err(Box::new((
                e,
                (group.to_string(), resource, "update".to_string()),
            )));
        }
    }
    Ok(())
}

/// An RBAC grant: (apiGroup, resource[/subresource], verb).
type Grant = (String, String, String);

/// (apiGroup, resource[/subresource], verb, namespace, name).
type Attributes = (String, String, String, Option<String>, Option<String>);

/// What RBAC authorizes a request as; `None` for discovery and paths that name no resource.
fn rbac_attributes(method: &Method, path: &str, q: &HashMap<String, String>) -> Option<Attributes> {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match parse_target(path).ok()? {
        Target::Discovery(_) => None,
        Target::Crd(name) => {
            let verb = match *method {
                Method::GET => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => return None,
            };
            Some((
                "apiextensions.k8s.io".into(),
                "customresourcedefinitions".into(),
                verb.into(),
                None,
                Some(name),
            ))
        }
        Target::Collection { kind, ns } => {
            let verb = match *method {
                Method::GET if watch => "watch",
                Method::GET => "list",
                Method::POST => "create",
                Method::DELETE => "deletecollection",
                _ => return None,
            };
            Some((kind.group.into(), kind.plural.into(), verb.into(), ns, None))
        }
        Target::Item {
            kind,
            ns,
            name,
            sub,
        } => {
            let verb = match *method {
                Method::GET => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                Method::POST => "create",
                _ => return None,
            };
            let resource = match sub {
                Some(sub) => format!("{}/{sub}", kind.plural),
                None => kind.plural.into(),
            };
            Some((
                kind.group.into(),
                resource,
                verb.into(),
                Some(ns),
                Some(name),
            ))
        }
    }
}

fn metadata_only(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj["metadata"],
    })
}

/// `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (kubectl get): server-side printing.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// kubectl's `HumanDuration`, as the API server formats `date` columns.
fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60),
        600..=10799 => format!("{}m", s / 60),
        10800..=172799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn age_of(t: &Value) -> Value {
    t.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
                .into()
        })
        .unwrap_or(Value::Null)
}

/// The columns the API server prints for a kind: Name, then a CRD's
/// `additionalPrinterColumns` (or Age for the built-in kinds served here).
fn table_columns(kind: &Kind) -> Vec<Value> {
    let name = json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0});
    if kind.kind != "ImportJob" {
        return vec![
            name,
            json!({"name": "Age", "type": "date", "format": "", "description": "CreationTimestamp", "priority": 0, "jsonPath": ".metadata.creationTimestamp"}),
        ];
    }
    let crd =
        serde_json::to_value(<bulk_import_core::crd::ImportJob as kube::CustomResourceExt>::crd())
            .expect("CRD");
    let mut columns = vec![name];
    for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        columns.push(json!({
            "name": c["name"], "type": c["type"], "format": c["format"].as_str().unwrap_or(""),
            "description": c["description"].as_str().unwrap_or(""),
            "priority": c["priority"].as_i64().unwrap_or(0),
            "jsonPath": c["jsonPath"],
        }));
    }
    columns
}

/// A `meta.k8s.io/v1` Table of `objects`, as the API server's table convertor builds it:
/// cells by each column's JSONPath (simple `.a.b` paths), `date` columns as ages, missing
/// values as null; each row carries the object's metadata (or the object, with
/// `includeObject=Object`).
fn table(kind: &Kind, objects: &[Value], rv: Option<u64>, q: &HashMap<String, String>) -> Value {
    let columns = table_columns(kind);
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let cells: Vec<Value> = columns
                .iter()
                .map(|c| {
                    let Some(path) = c["jsonPath"].as_str() else {
                        return obj["metadata"]["name"].clone();
                    };
                    let mut v = obj;
                    for part in path.trim_start_matches('.').split('.') {
                        v = &v[part];
                    }
                    if c["type"] == "date" {
                        age_of(v)
                    } else {
                        v.clone()
                    }
                })
                .collect();
            let object = if q.get("includeObject").is_some_and(|i| i == "Object") {
                obj.clone()
            } else {
                metadata_only(obj)
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let columns: Vec<Value> = columns
        .into_iter()
        .map(|mut c| {
            c.as_object_mut().map(|m| m.remove("jsonPath"));
            c
        })
        .collect();
    let mut t = json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {}, "columnDefinitions": columns, "rows": rows,
    });
    if let Some(rv) = rv {
        t["metadata"]["resourceVersion"] = rv.to_string().into();
    }
    t
}

fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn write_opts(q: &HashMap<String, String>) -> WriteOpts {
    WriteOpts {
        field_manager: q.get("fieldManager").cloned(),
        force: q.get("force").is_some_and(|f| f == "true"),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
    }
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

async fn route(
    double: &Arc<Double>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let meta_only = wants_metadata(headers);
    let render = |obj: &Value| {
        if meta_only {
            metadata_only(obj)
        } else {
            obj.clone()
        }
    };
    match parse_target(uri.path())? {
        Target::Crd(name) => match *method {
            Method::GET => double
                .installed_crd(&name)
                .map(|crd| json_response(200, &crd))
                .ok_or_else(ApiError::resource_not_found),
            _ => Err(ApiError::method_not_allowed(
                "the double serves the installed CRD read-only",
            )),
        },
        Target::Discovery(v) => {
            if method == Method::GET {
                Ok(json_response(200, &v))
            } else {
                Err(ApiError::method_not_allowed("discovery is read-only"))
            }
        }
        Target::Collection { kind, ns } => match *method {
            Method::GET => {
                let sel = Selector::parse(
                    q.get("labelSelector").map(String::as_str),
                    q.get("fieldSelector").map(String::as_str),
                )?;
                if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    return watch(double.clone(), kind, ns, sel, q, meta_only);
                }
                if wants_table(headers) {
                    let (items, rv) = double.list(kind, ns.as_deref(), &sel);
                    return Ok(json_response(200, &table(kind, &items, Some(rv), q)));
                }
                list(double, kind, ns.as_deref(), &sel, q, meta_only)
            }
            Method::POST => {
                let ns =
                    ns.ok_or_else(|| ApiError::method_not_allowed("create needs a namespace"))?;
                let obj = double.create(kind, &ns, body_json(&body)?, &write_opts(q))?;
                Ok(json_response(201, &render(&obj)))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on a collection"
            ))),
        },
        Target::Item {
            kind,
            ns,
            name,
            sub,
        } => {
            if sub.as_deref() == Some("eviction") && std::ptr::eq(kind, &PODS) {
                if *method != Method::POST {
                    return Err(ApiError::method_not_allowed("evictions are created"));
                }
                double.evict(&ns, &name)?;
                return Ok(json_response(
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ));
            }
            let sub = match sub.as_deref() {
                None => Sub::Main,
                Some("status") if kind.status => Sub::Status,
                Some(_) => return Err(ApiError::resource_not_found()),
            };
            match *method {
                Method::GET if wants_table(headers) && sub == Sub::Main => {
                    let obj = double.get(kind, &ns, &name)?;
                    Ok(json_response(200, &table(kind, &[obj], None, q)))
                }
                Method::GET => Ok(json_response(200, &render(&double.get(kind, &ns, &name)?))),
                Method::PUT => {
                    let obj =
                        double.replace(kind, &ns, &name, sub, body_json(&body)?, &write_opts(q))?;
                    Ok(json_response(200, &render(&obj)))
                }
                Method::PATCH => {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let pt = match ct.split(';').next().unwrap_or("").trim() {
                        "application/json-patch+json" => PatchType::Json,
                        "application/merge-patch+json" => PatchType::Merge,
                        "application/strategic-merge-patch+json" => PatchType::Strategic,
                        "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
                        other => {
                            return Err(ApiError::unsupported_media(format!(
                                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                            )))
                        }
                    };
                    let existed = double.get_opt(kind, &ns, &name).is_some();
                    let obj = double.patch(kind, &ns, &name, sub, pt, &body, &write_opts(q))?;
                    Ok(json_response(
                        if existed { 200 } else { 201 },
                        &render(&obj),
                    ))
                }
                Method::DELETE => {
                    let opts: Value = if body.is_empty() {
                        json!({})
                    } else {
                        body_json(&body)?
                    };
                    let propagation = match opts["propagationPolicy"].as_str() {
                        None => None,
                        Some("Background") => Some(Propagation::Background),
                        Some("Foreground") => Some(Propagation::Foreground),
                        Some("Orphan") => Some(Propagation::Orphan),
                        Some(other) => {
                            return Err(ApiError::bad_request(format!(
                                "unknown propagationPolicy {other:?}"
                            )))
                        }
                    };
                    let dopts = DeleteOpts {
                        propagation: propagation.or(match opts["orphanDependents"].as_bool() {
                            Some(true) => Some(Propagation::Orphan),
                            _ => None,
                        }),
                        grace_period_seconds: opts["gracePeriodSeconds"]
                            .as_i64()
                            .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok())),
                        precondition_uid: opts["preconditions"]["uid"].as_str().map(String::from),
                        precondition_rv: opts["preconditions"]["resourceVersion"]
                            .as_str()
                            .map(String::from),
                    };
                    match double.delete(kind, &ns, &name, &dopts)? {
                        // 200 with the object, as the apiserver answers unless orphanDependents=false.
                        Deleted::Pending(obj) => Ok(json_response(200, &render(&obj))),
                        Deleted::Gone(obj) => Ok(json_response(
                            200,
                            &json!({
                                "kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success",
                                "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": obj["metadata"]["uid"]},
                            }),
                        )),
                    }
                }
                _ => Err(ApiError::method_not_allowed(format!(
                    "{method} is not supported"
                ))),
            }
        }
    }
}

fn list_kind(kind: &Kind, meta_only: bool) -> (String, String) {
    if meta_only {
        ("meta.k8s.io/v1".into(), "PartialObjectMetadataList".into())
    } else {
        (kind.api_version(), format!("{}List", kind.kind))
    }
}

fn list(
    double: &Double,
    kind: &'static Kind,
    ns: Option<&str>,
    sel: &Selector,
    q: &HashMap<String, String>,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let (items, rv) = double.list(kind, ns, sel);
    if q.get("resourceVersionMatch").is_some_and(|m| m == "Exact") {
        let want: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request("resourceVersionMatch=Exact needs a resourceVersion")
            })?;
        if want != rv {
            // Only the latest snapshot is kept.
            return Err(ApiError::gone(format!(
                "too old resource version: {want} ({rv})"
            )));
        }
    }
    // Pagination: items are ordered by namespace/name; the token is "rv/namespace/name" of the
    // last item sent. (The apiserver serves later pages from the first page's snapshot; the
    // double serves them from the current state.)
    let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let rv: u64 = parts
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            let last = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            (rv, Some(last))
        }
        None => (rv, None),
    };
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|o| {
            after.as_ref().is_none_or(|(ans, aname)| {
                let ons = o["metadata"]["namespace"].as_str().unwrap_or("");
                let oname = o["metadata"]["name"].as_str().unwrap_or("");
                (ons, oname) > (ans.as_str(), aname.as_str())
            })
        })
        .collect();
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(limit) = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
    {
        if items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().expect("limit > 0");
            meta["continue"] = format!(
                "{list_rv}/{}/{}",
                last["metadata"]["namespace"].as_str().unwrap_or(""),
                last["metadata"]["name"].as_str().unwrap_or("")
            )
            .into();
            meta["remainingItemCount"] = remaining.into();
        }
    }
    let (api_version, list_kind) = list_kind(kind, meta_only);
    let items: Vec<Value> = items
        .iter()
        .map(|o| {
            if meta_only {
                metadata_only(o)
            } else {
                o.clone()
            }
        })
        .collect();
    Ok(json_response(
        200,
        &json!({"apiVersion": api_version, "kind": list_kind, "metadata": meta, "items": items}),
    ))
}

/// The type of a change as a watcher with this selector sees it (None: not at all).
fn seen_as(c: &Change, sel: &Selector) -> Option<&'static str> {
    let now = sel.matches(&c.object);
    match c.type_ {
        "ADDED" => now.then_some("ADDED"),
        "DELETED" => {
            let before = c.old.as_ref().is_none_or(|o| sel.matches(o));
            (now || before).then_some("DELETED")
        }
        _ => {
            let before = c.old.as_ref().is_some_and(|o| sel.matches(o));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

fn watch(
    double: Arc<Double>,
    kind: &'static Kind,
    ns: Option<String>,
    sel: Selector,
    q: &HashMap<String, String>,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let rv_param = q.get("resourceVersion").filter(|v| !v.is_empty()).cloned();
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800))
        .min(double.config.max_watch);
    let start_rv: Option<u64> = match rv_param.as_deref() {
        None | Some("0") => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        ),
    };
    if send_initial && !bookmarks {
        return Err(ApiError::unprocessable(
            "sendInitialEvents requires allowWatchBookmarks",
        ));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let (api_version, kind_name) = if meta_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadata".to_string(),
        )
    } else {
        (kind.api_version(), kind.kind.to_string())
    };
    tokio::spawn(async move {
        let line = |type_: &str, object: Value| {
            let mut s = json!({"type": type_, "object": object}).to_string();
            s.push('\n');
            Ok(Bytes::from(s))
        };
        let bookmark = |rv: u64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            line(
                "BOOKMARK",
                json!({"apiVersion": api_version, "kind": kind_name, "metadata": meta}),
            )
        };
        let render = |o: &Value| {
            if meta_only {
                metadata_only(o)
            } else {
                o.clone()
            }
        };
        let mut notified = double.subscribe();
        let mut cursor = match start_rv {
            Some(rv) => rv,
            None => {
                let (items, rv) = double.list(kind, ns.as_deref(), &sel);
                for o in &items {
                    if tx.send(line("ADDED", render(o))).await.is_err() {
                        return;
                    }
                }
                if send_initial && tx.send(bookmark(rv, true)).await.is_err() {
                    return;
                }
                rv
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + double.config.bookmark_every;
        loop {
            notified.borrow_and_update();
            if double.is_unavailable() {
                return;
            }
            match double.changes_since(kind, ns.as_deref(), cursor) {
                Err(oldest) => {
                    let status =
                        ApiError::gone(format!("too old resource version: {cursor} ({oldest})"))
                            .status();
                    let _ = tx.send(line("ERROR", status)).await;
                    return;
                }
                Ok((changes, now_rv)) => {
                    let delay = double.watch_delay(kind);
                    for c in &changes {
                        if !delay.is_zero() {
                            tokio::time::sleep_until((c.at + delay).into()).await;
                        }
                        if let Some(t) = seen_as(c, &sel) {
                            if tx.send(line(t, render(&c.object))).await.is_err() {
                                return;
                            }
                        }
                    }
                    cursor = now_rv;
                }
            }
            tokio::select! {
                r = notified.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(next_bookmark) => {
                    next_bookmark = tokio::time::Instant::now() + double.config.bookmark_every;
                    if bookmarks && tx.send(bookmark(cursor, false)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(bookmark(cursor, false)).await;
                    }
                    return;
                }
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap())
}
