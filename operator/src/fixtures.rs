//! Test support: builders for ImportJobs, Jobs and pods, and a mocked Kubernetes API server
//! that checks each request against a scripted scenario (method, path, query, body) and fails
//! the test on a missing, unexpected or extra request.

use crate::{
    config::OperatorConfig,
    context::{Caches, Context},
    controller,
    job_template::{build_job, CONTAINER},
    metrics::Metrics,
    Result,
};
use bulk_import_core::{
    crd::{
        resource_name, ImportJob, ImportJobSpec, ImportJobStatus, ImportModeSpec, ReportLocation,
        SourceObject, JOB_ID_LABEL,
    },
    Settings, Storage,
};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobStatus},
        core::v1::{ContainerState, ContainerStatus, Pod, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    api::ObjectMeta,
    client::Body,
    runtime::{
        controller::Action,
        reflector::{self, store::Writer},
        watcher,
    },
    Client, CustomResourceExt, Resource, ResourceExt,
};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::sync::oneshot;

pub const NS: &str = "imports";
pub const JOB_ID: &str = "5f0c6b8e-8a1d-4c55-9f4e-2b7b6f0e9a11";
pub const UID: &str = "0d9f7a52-3c1e-4f0b-8a44-6e2d1c9b7f30";
/// The user who uploaded the test import.
pub const USER_ID: &str = "3a7d0c1b-9e2f-4d5a-8b6c-1f0e2d3c4b5a";
/// How long a scenario may take before the test fails (a stuck reconcile or a missing reply).
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn name() -> String {
    resource_name(JOB_ID.parse().expect("JOB_ID is a UUID"))
}

/// Builders for test ImportJobs (`ImportJob::test().with_phase("Running")`).
pub trait ImportJobExt: Sized {
    /// A valid ImportJob as the API creates it (uid and generation set, no finalizer).
    fn test() -> Self;
    /// Marked for deletion (`deletionTimestamp` set).
    fn deleting(self) -> Self;
    fn with_status(self, status: ImportJobStatus) -> Self;
    /// A status with only the phase set.
    fn with_phase(self, phase: &str) -> Self;
    fn with_spec(self, change: impl FnOnce(&mut ImportJobSpec)) -> Self;
}

impl ImportJobExt for ImportJob {
    fn test() -> ImportJob {
        let mut ij = ImportJob::new(
            &name(),
            ImportJobSpec {
                job_id: JOB_ID.into(),
                organization: Some(1),
                mode: ImportModeSpec::InsertOnly,
                source: SourceObject {
                    key: format!("uploads/{USER_ID}/{JOB_ID}.csv"),
                    size: 1024,
                    file_name: "customers.csv".into(),
                },
                report: Some(ReportLocation {
                    key: format!("reports/{JOB_ID}/errors.csv"),
                }),
                tuning: None,
                cancel_requested: None,
                retries: None,
            },
        );
        let meta = ij.meta_mut();
        meta.namespace = Some(NS.into());
        meta.uid = Some(UID.into());
        meta.generation = Some(1);
        meta.resource_version = Some("100".into());
        meta.labels = Some(BTreeMap::from([(JOB_ID_LABEL.into(), JOB_ID.into())]));
        ij
    }

    fn deleting(mut self) -> Self {
        self.meta_mut().deletion_timestamp = Some(Time(Timestamp::now()));
        self
    }

    fn with_status(mut self, status: ImportJobStatus) -> Self {
        self.status = Some(status);
        self
    }

    fn with_phase(self, phase: &str) -> Self {
        self.with_status(ImportJobStatus {
            phase: Some(phase.into()),
            ..Default::default()
        })
    }

    fn with_spec(mut self, change: impl FnOnce(&mut ImportJobSpec)) -> Self {
        change(&mut self.spec);
        self
    }
}

/// The Job the operator would create for `ij`, as the API server returns it (uid set, no
/// status yet).
pub fn job_for(ij: &ImportJob) -> Job {
    let mut job = build_job(ij, &OperatorConfig::defaults()).expect("a valid test ImportJob");
    job.metadata.uid = Some("8b1c2d3e-0000-4000-8000-000000000001".into());
    job.metadata.resource_version = Some("200".into());
    job
}

pub trait JobExt {
    fn active(self, n: i32) -> Self;
    /// Adds a `True` condition (`Complete`, `Failed`, …) with a reason and message.
    fn condition(self, type_: &str, reason: &str, message: &str) -> Self;
}

impl JobExt for Job {
    fn active(mut self, n: i32) -> Self {
        self.status.get_or_insert_with(JobStatus::default).active = Some(n);
        self
    }

    fn condition(mut self, type_: &str, reason: &str, message: &str) -> Self {
        let status = self.status.get_or_insert_with(JobStatus::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(Time(Timestamp::now())),
                ..Default::default()
            });
        if status.active.is_none() {
            status.active = Some(0);
        }
        self
    }
}

/// A pod of `ij`'s Job in `phase` with one importer container (no state yet), labelled
/// with its Job's name as the Job controller does.
pub fn pod_for(ij: &ImportJob, suffix: &str, phase: &str) -> Pod {
    let job = crate::job_template::job_name(ij);
    let mut labels = crate::job_template::labels(&ij.spec.job_id, None);
    labels.insert("batch.kubernetes.io/job-name".into(), job.clone());
    labels.insert("job-name".into(), job.clone());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{job}-{suffix}")),
            namespace: Some(NS.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: CONTAINER.into(),
                image: "bulk-import:dev".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

pub trait PodExt {
    /// Sets the importer container's `state` (JSON of a `ContainerState`).
    fn state(self, state: Value) -> Self;
    /// Sets the importer container's `lastState`.
    fn last_state(self, state: Value) -> Self;
}

fn container(pod: &mut Pod) -> &mut ContainerStatus {
    pod.status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
        .and_then(|c| c.first_mut())
        .expect("a pod from pod_for")
}

fn container_state(state: Value) -> ContainerState {
    serde_json::from_value(state).expect("a ContainerState")
}

impl PodExt for Pod {
    fn state(mut self, state: Value) -> Self {
        container(&mut self).state = Some(container_state(state));
        self
    }

    fn last_state(mut self, state: Value) -> Self {
        container(&mut self).last_state = Some(container_state(state));
        self
    }
}

pub fn running() -> Value {
    json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } })
}

pub fn terminated(reason: &str, exit_code: i32) -> Value {
    json!({ "terminated": { "reason": reason, "exitCode": exit_code } })
}

pub fn waiting(reason: &str, message: &str) -> Value {
    json!({ "waiting": { "reason": reason, "message": message } })
}

// ---------------------------------------------------------------------------------------
// The mocked API server.

pub fn job_path(name: &str) -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs/{name}")
}
pub fn jobs_path() -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs")
}
pub fn pods_path() -> String {
    format!("/api/v1/namespaces/{NS}/pods")
}
pub fn importjob_path(name: &str) -> String {
    format!("/apis/bulkimport.dev/v1alpha1/namespaces/{NS}/importjobs/{name}")
}
pub fn events_path() -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
}
pub fn lease_path(name: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}")
}
pub fn leases_path() -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases")
}

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
pub const MERGE_PATCH: &str = "application/merge-patch+json";

type BodyCheck = Box<dyn FnOnce(&Value) + Send>;
type Responder = Box<dyn FnOnce(&Value) -> (StatusCode, Value) + Send>;

/// One request a scenario expects, and the answer the mock server gives.
pub struct Expect {
    method: Method,
    path: String,
    /// The exact query (order ignored); kube's empty `?` and `&` separators don't count.
    query: BTreeMap<String, String>,
    content_type: Option<&'static str>,
    checks: Vec<BodyCheck>,
    respond: Responder,
}

/// A request as the mock server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

impl Expect {
    fn new(method: Method, path: impl Into<String>) -> Expect {
        Expect {
            method,
            path: path.into(),
            query: BTreeMap::new(),
            content_type: None,
            checks: Vec::new(),
            respond: Box::new(|_| (StatusCode::OK, json!({}))),
        }
    }
    pub fn get(path: impl Into<String>) -> Expect {
        Expect::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>) -> Expect {
        Expect::new(Method::POST, path)
    }
    pub fn put(path: impl Into<String>) -> Expect {
        Expect::new(Method::PUT, path)
    }
    pub fn patch(path: impl Into<String>) -> Expect {
        Expect::new(Method::PATCH, path)
    }
    pub fn delete(path: impl Into<String>) -> Expect {
        Expect::new(Method::DELETE, path)
    }

    pub fn query(mut self, key: &str, value: &str) -> Expect {
        self.query.insert(key.into(), value.into());
        self
    }

    pub fn content_type(mut self, ct: &'static str) -> Expect {
        self.content_type = Some(ct);
        self
    }

    /// Checks on the request body (parsed as JSON; `null` when empty).
    pub fn body(mut self, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
        self.checks.push(Box::new(check));
        self
    }

    pub fn reply(mut self, status: u16, body: impl Serialize) -> Expect {
        let body = serde_json::to_value(body).expect("a JSON reply");
        let status = StatusCode::from_u16(status).expect("an HTTP status");
        self.respond = Box::new(move |_| (status, body));
        self
    }

    /// Answers with the request body (what a create usually returns).
    pub fn echo(mut self, status: u16) -> Expect {
        let status = StatusCode::from_u16(status).expect("an HTTP status");
        self.respond = Box::new(move |body| (status, body.clone()));
        self
    }

    pub fn reply_with(mut self, f: impl FnOnce(&Value) -> Value + Send + 'static) -> Expect {
        self.respond = Box::new(move |body| (StatusCode::OK, f(body)));
        self
    }

    /// A Kubernetes `Status` error, e.g. 404 NotFound or 409 AlreadyExists.
    pub fn fail(self, code: u16, reason: &str) -> Expect {
        self.reply(
            code,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("{reason} (mock)"),
                "reason": reason, "code": code,
            }),
        )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("a %XX escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 query")
}

pub fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A `kube::Client` whose requests go to a scripted, checking server.
pub struct MockApi {
    client: Client,
    handle: Option<Handle>,
}

impl Default for MockApi {
    fn default() -> Self {
        MockApi::new()
    }
}

impl MockApi {
    pub fn new() -> MockApi {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        MockApi {
            client: Client::new(service, NS),
            handle: Some(handle),
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs `action` while the server answers `scenario` in order. Fails (panics) when a
    /// request differs from the expected one, when `action` makes a request beyond the
    /// scenario, when it finishes without making all of them, or when it takes too long.
    pub async fn serve<T>(
        &mut self,
        scenario: Vec<Expect>,
        action: impl Future<Output = T>,
    ) -> (T, Vec<Seen>) {
        let handle = self.handle.take().expect("one scenario at a time");
        let (done_tx, done_rx) = oneshot::channel();
        let server = tokio::spawn(answer(handle, scenario, done_rx));
        let result = tokio::time::timeout(SCENARIO_TIMEOUT, action).await;
        let _ = done_tx.send(());
        let served = tokio::time::timeout(SCENARIO_TIMEOUT, server)
            .await
            .expect("the mock API server did not finish");
        let (handle, seen) = match served {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        self.handle = Some(handle);
        let result = result.unwrap_or_else(|_| {
            panic!(
                "the action did not finish within {SCENARIO_TIMEOUT:?}; requests seen: {seen:#?}"
            )
        });
        (result, seen)
    }
}

async fn answer(
    mut handle: Handle,
    scenario: Vec<Expect>,
    mut done: oneshot::Receiver<()>,
) -> (Handle, Vec<Seen>) {
    let total = scenario.len();
    let mut seen: Vec<Seen> = Vec::new();
    for (i, expect) in scenario.into_iter().enumerate() {
        let step = format!(
            "request {}/{total} ({} {})",
            i + 1,
            expect.method,
            expect.path
        );
        let next = tokio::select! {
            biased;
            next = handle.next_request() => next,
            _ = &mut done => None,
        };
        let Some((request, send)) = next else {
            panic!("expected {step}, but the action finished without it; requests seen: {seen:#?}");
        };
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("a request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        let query = parse_query(parts.uri.query());
        let got = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: query.clone(),
            body: body.clone(),
        };
        assert_eq!(
            (&got.method, got.path.as_str()),
            (&expect.method, expect.path.as_str()),
            "{step}: got {} {}",
            got.method,
            parts.uri
        );
        assert_eq!(query, expect.query, "{step}: query of {}", parts.uri);
        if let Some(ct) = expect.content_type {
            let actual = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            assert_eq!(actual, Some(ct), "{step}: content type");
        }
        for check in expect.checks {
            check(&body);
        }
        let (status, reply) = (expect.respond)(&body);
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
            .expect("a response");
        send.send_response(response);
        seen.push(got);
    }
    let extra = tokio::select! {
        biased;
        next = handle.next_request() => next,
        _ = &mut done => None,
    };
    if let Some((request, _)) = extra {
        panic!(
            "unexpected request after the {total} expected ones: {} {}; requests seen: {seen:#?}",
            request.method(),
            request.uri()
        );
    }
    (handle, seen)
}

// ---------------------------------------------------------------------------------------
// Reconcile scenarios.

/// A Context on a mocked API, and the server to script.
pub struct Harness {
    pub api: MockApi,
    pub ctx: Arc<Context>,
    jobs: Writer<Job>,
    pods: Writer<Pod>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(OperatorConfig::defaults(), None, None)
    }

    pub fn with(config: OperatorConfig, db: Option<PgPool>, storage: Option<Storage>) -> Harness {
        let api = MockApi::new();
        let (jobs_reader, mut jobs) = reflector::store::<Job>();
        let (pods_reader, mut pods) = reflector::store::<Pod>();
        // Listed once (empty): the caches are ready.
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            jobs.apply_watcher_event(&event);
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            pods.apply_watcher_event(&event);
        }
        let ctx = Arc::new(Context::new(
            api.client(),
            config,
            db,
            storage,
            Metrics::default(),
            Caches {
                jobs: jobs_reader,
                pods: pods_reader,
            },
        ));
        Harness {
            api,
            ctx,
            jobs,
            pods,
        }
    }

    /// What the controller's watches have seen: this Job (or none) and these pods.
    pub fn cache(&mut self, job: Option<&Job>, pods: &[Pod]) {
        self.jobs.apply_watcher_event(&watcher::Event::Init);
        if let Some(job) = job {
            self.jobs
                .apply_watcher_event(&watcher::Event::InitApply(job.clone()));
        }
        self.jobs.apply_watcher_event(&watcher::Event::InitDone);
        self.pods.apply_watcher_event(&watcher::Event::Init);
        for pod in pods {
            self.pods
                .apply_watcher_event(&watcher::Event::InitApply(pod.clone()));
        }
        self.pods.apply_watcher_event(&watcher::Event::InitDone);
    }

    pub async fn reconcile(
        &mut self,
        ij: &ImportJob,
        scenario: Vec<Expect>,
    ) -> (Result<Action>, Vec<Seen>) {
        let ctx = self.ctx.clone();
        self.api
            .serve(scenario, controller::reconcile(Arc::new(ij.clone()), ctx))
            .await
    }
}

/// `POST …/events` of an Event about `ij` with this reason and type; answered with itself.
pub fn expect_event(reason: &'static str, type_: &'static str) -> Expect {
    Expect::post(events_path())
        .body(move |e| {
            assert_eq!(e["reason"], reason, "event reason: {e:#}");
            assert_eq!(e["type"], type_, "event type: {e:#}");
            assert_eq!(e["regarding"]["kind"], "ImportJob", "{e:#}");
            assert_eq!(e["regarding"]["name"], name(), "{e:#}");
            assert_eq!(e["regarding"]["uid"], UID, "{e:#}");
            assert_eq!(e["reportingController"], "bulk-import-operator", "{e:#}");
        })
        .echo(201)
}

/// The operator's server-side apply of the status (field manager `bulk-import-operator`,
/// forced); `check` sees the `status` object; answered with `ij` carrying that status.
pub fn expect_status_apply(ij: &ImportJob, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    let mut reply = serde_json::to_value(ij).expect("JSON");
    Expect::patch(format!("{}/status", importjob_path(&ij.name_any())))
        .query("fieldManager", "bulk-import-operator")
        .query("force", "true")
        .content_type(APPLY_PATCH)
        .body(|b| {
            assert_eq!(b["apiVersion"], "bulkimport.dev/v1alpha1", "{b:#}");
            assert_eq!(b["kind"], "ImportJob", "{b:#}");
            assert!(
                b.get("spec").is_none(),
                "the status patch carries no spec: {b:#}"
            );
        })
        .body(|b| assert_schema_knows(&b["status"]))
        .body(move |b| check(&b["status"]))
        .reply_with(move |b| {
            reply["status"] = b["status"].clone();
            reply
        })
}

/// Every field of an applied status is in the CRD's schema: the API server would silently
/// prune one that is not (the patch is hand-written JSON, not the Rust type).
fn assert_schema_knows(status: &Value) {
    let crd = serde_json::to_value(ImportJob::crd()).expect("JSON");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    let known = |schema: &Value, obj: &Value, what: &str| {
        for key in obj.as_object().expect("an object").keys() {
            assert!(
                schema["properties"].get(key).is_some(),
                "{what}.{key} is not in the CRD schema (it would be pruned): {obj:#}"
            );
        }
    };
    known(schema, status, "status");
    let item = &schema["properties"]["conditions"]["items"];
    for c in status["conditions"].as_array().into_iter().flatten() {
        known(item, c, "status.conditions[]");
    }
}

/// The list of the Job controller's `FailedCreate` Events about `ij`'s Job.
pub fn expect_failed_create_events(ij: &ImportJob, messages: &[&str]) -> Expect {
    let items: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "metadata": { "name": format!("{}.{i}", ij.name_any()), "namespace": NS,
                              "creationTimestamp": format!("2026-01-01T00:00:0{i}Z") },
                "involvedObject": { "kind": "Job", "name": ij.name_any(), "namespace": NS },
                "reason": "FailedCreate", "type": "Warning", "message": m,
                "lastTimestamp": format!("2026-01-01T00:00:0{i}Z"),
            })
        })
        .collect();
    Expect::get(format!("/api/v1/namespaces/{NS}/events"))
        .query(
            "fieldSelector",
            &format!(
                "involvedObject.kind=Job,involvedObject.name={},reason=FailedCreate",
                ij.name_any()
            ),
        )
        .reply(
            200,
            json!({
                "apiVersion": "v1", "kind": "EventList",
                "metadata": { "resourceVersion": "300" },
                "items": items,
            }),
        )
}

/// `DELETE` the Job with background propagation (its pods go too).
pub fn expect_delete_job(ij: &ImportJob, found: bool) -> Expect {
    let delete = Expect::delete(job_path(&ij.name_any())).body(|b| {
        assert_eq!(
            b["propagationPolicy"], "Background",
            "delete options: {b:#}"
        )
    });
    if found {
        delete.reply(
            200,
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" }),
        )
    } else {
        delete.fail(404, "NotFound")
    }
}

/// The merge patch removing the finalizer of before (`crate::sweep::LEGACY_FINALIZER`),
/// keeping the others, guarded by the resourceVersion.
pub fn expect_finalizer_removed(ij: &ImportJob) -> Expect {
    let legacy = crate::sweep::LEGACY_FINALIZER;
    let mut reply = ij.clone();
    reply.finalizers_mut().retain(|f| f != legacy);
    let rest = reply.finalizers().to_vec();
    let rv = ij.resource_version();
    Expect::patch(importjob_path(&ij.name_any()))
        .content_type(MERGE_PATCH)
        .body(move |b| {
            assert_eq!(
                b,
                &json!({"metadata": {"finalizers": rest, "resourceVersion": rv}})
            )
        })
        .reply(200, reply)
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "bulk-import-operator-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An operator configuration with some variables set (the rest default).
pub fn config_with(vars: &[(&str, &str)]) -> OperatorConfig {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |k: &str| vars.get(k).cloned();
    let settings = Settings::from_lookup_without_jwt(&lookup).expect("valid test settings");
    OperatorConfig::from_lookup(&lookup, &settings).expect("a valid test configuration")
}

/// The mock server itself must fail a test on a wrong, missing or extra request.
#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::{Api, ListParams};

    async fn get_job(client: Client) -> kube::Result<Job> {
        Api::<Job>::namespaced(client, NS).get("x").await
    }

    #[tokio::test]
    async fn a_matching_scenario_passes_and_records_the_requests() {
        let mut api = MockApi::new();
        let client = api.client();
        let (result, seen) = api
            .serve(
                vec![Expect::get(pods_path())
                    .query("labelSelector", "a=b c")
                    .reply(200, json!({ "metadata": {}, "items": [] }))],
                async move {
                    Api::<Pod>::namespaced(client, NS)
                        .list(&ListParams::default().labels("a=b c"))
                        .await
                },
            )
            .await;
        assert!(result.unwrap().items.is_empty());
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].query.get("labelSelector").map(String::as_str),
            Some("a=b c")
        );
    }

    #[tokio::test]
    #[should_panic(expected = "unexpected request after the 0 expected ones: GET")]
    async fn an_extra_request_fails() {
        let mut api = MockApi::new();
        let client = api.client();
        let _ = api.serve(vec![], get_job(client)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "the action finished without it")]
    async fn a_missing_request_fails() {
        let mut api = MockApi::new();
        let _ = api
            .serve(
                vec![Expect::get(job_path("x")).reply(200, json!({}))],
                async {},
            )
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "request 1/1 (DELETE")]
    async fn a_wrong_method_fails() {
        let mut api = MockApi::new();
        let client = api.client();
        let _ = api
            .serve(vec![Expect::delete(job_path("x"))], get_job(client))
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "query of")]
    async fn a_wrong_query_fails() {
        let mut api = MockApi::new();
        let client = api.client();
        let _ = api
            .serve(
                vec![Expect::get(job_path("x")).query("fieldManager", "me")],
                get_job(client),
            )
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "content type")]
    async fn a_wrong_content_type_fails() {
        let mut api = MockApi::new();
        let client = api.client();
        let _ = api
            .serve(
                vec![Expect::put(job_path("x")).content_type(JSON_PATCH)],
                async move {
                    Api::<Job>::namespaced(client, NS)
                        .replace("x", &Default::default(), &Job::default())
                        .await
                },
            )
            .await;
    }

    #[test]
    fn queries_are_decoded() {
        assert_eq!(
            parse_query(Some(
                "&labelSelector=bulkimport.dev%2Fjob-id%3Dx&force=true&a+b=c"
            )),
            BTreeMap::from([
                (
                    "labelSelector".to_string(),
                    "bulkimport.dev/job-id=x".to_string()
                ),
                ("force".to_string(), "true".to_string()),
                ("a b".to_string(), "c".to_string()),
            ])
        );
    }
}
