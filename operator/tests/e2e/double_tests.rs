//! The double checked against what the Kubernetes API documentation says, through the same
//! kube client and kube-runtime code the binaries use (API conventions, API concepts:
//! efficient detection of changes, resource versions, server-side apply, finalizers, garbage
//! collection, the Job controller). No Postgres needed.

use crate::{
    kube_double::{Double, DoubleConfig, IMPORTJOBS, JOBS},
    kube_http::KubeServer,
    kubelet::Kubelet,
};
use bulk_import_core::crd::{
    ImportJob, ImportJobSpec, ImportModeSpec, ReportLocation, SourceObject,
};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    batch::v1::Job,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Pod},
};
use kube::{
    api::{
        Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
        WatchEvent, WatchParams,
    },
    runtime::{reflector, watcher, WatchStreamExt},
    Resource, ResourceExt,
};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

const NS: &str = "double";

async fn start(config: DoubleConfig) -> (KubeServer, kube::Client) {
    let server = KubeServer::start(Double::new(config)).await;
    let client = server.client(NS);
    (server, client)
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn configmap(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
    }))
    .unwrap()
}

fn import_job(name: &str) -> ImportJob {
    let (user, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    ImportJob::new(
        name,
        ImportJobSpec {
            job_id: id.to_string(),
            organization: Some(1),
            mode: ImportModeSpec::InsertOnly,
            source: SourceObject {
                key: format!("uploads/{user}/{id}.csv"),
                size: 10,
                file_name: "a.csv".into(),
            },
            report: Some(ReportLocation {
                key: format!("reports/{id}/errors.csv"),
            }),
            tuning: None,
            cancel_requested: None,
            retries: None,
        },
    )
}

fn rv(o: &impl Resource) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Create answers the object with server fields; a second create is 409 AlreadyExists;
/// a replace needs the current resourceVersion (409 Conflict otherwise); a no-op replace
/// keeps the resourceVersion; get of a missing name is 404 NotFound.
#[tokio::test]
async fn create_replace_and_optimistic_concurrency() {
    let (_s, client) = start(DoubleConfig::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let a = cms
        .create(&PostParams::default(), &configmap("a", &[("k", "1")]))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    assert_eq!(a.metadata.namespace.as_deref(), Some(NS));
    let (code, reason, _) = api_error(
        cms.create(&PostParams::default(), &configmap("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert!(cms.get_opt("missing").await.unwrap().is_none());

    let mut changed = a.clone();
    changed.data = Some([("k".to_string(), "2".to_string())].into());
    let b = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert!(rv(&b) > rv(&a));
    assert_eq!(b.metadata.uid, a.metadata.uid);
    // `changed` still carries a's resourceVersion: stale now.
    let (code, reason, _) = api_error(
        cms.replace("a", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    // Writing what is already there changes nothing, not even the resourceVersion.
    let same = cms.replace("a", &PostParams::default(), &b).await.unwrap();
    assert_eq!(rv(&same), rv(&b));
    // generateName.
    let g = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap(),
        )
        .await
        .unwrap();
    assert!(g.name_any().starts_with("gen-") && g.name_any().len() == 9);
    // Invalid names and label values are 422.
    let (code, ..) = api_error(
        cms.create(&PostParams::default(), &configmap("Not_Valid", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    let mut long_label = configmap("b", &[]);
    long_label.metadata.labels = Some([("x".to_string(), "v".repeat(64))].into());
    let (code, ..) = api_error(
        cms.create(&PostParams::default(), &long_label)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
}

/// With a status subresource: status in a create is dropped, writes to /status change only
/// status, writes to the main resource never change status, and metadata.generation moves
/// only when the spec changes. ImportJobs are pruned and validated against the CRD schema.
#[tokio::test]
async fn status_subresource_generation_and_schema() {
    let (_s, client) = start(DoubleConfig::default()).await;
    let ijs: Api<ImportJob> = Api::namespaced(client, NS);
    let mut ij = import_job("ij");
    ij.status = Some(Default::default());
    ij.status.as_mut().unwrap().phase = Some("Complete".into());
    let created = ijs.create(&PostParams::default(), &ij).await.unwrap();
    assert_eq!(created.status, None, "status is not set by a create");
    assert_eq!(created.metadata.generation, Some(1));

    // A status write carrying a spec change: only the status changes.
    let mut w = created.clone();
    w.spec.source.size = 999;
    w.status = Some(Default::default());
    w.status.as_mut().unwrap().phase = Some("Running".into());
    let after = ijs
        .replace_status("ij", &PostParams::default(), &w)
        .await
        .unwrap();
    assert_eq!(after.spec.source.size, 10);
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(after.metadata.generation, Some(1));

    // A main-resource write carrying a status change and a label: status unchanged, no new
    // generation (labels are metadata).
    let mut w = after.clone();
    w.status.as_mut().unwrap().phase = Some("Failed".into());
    w.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let after = ijs.replace("ij", &PostParams::default(), &w).await.unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(after.labels().get("a").map(String::as_str), Some("b"));
    assert_eq!(after.metadata.generation, Some(1));

    // A spec change: generation 2.
    let mut w = after.clone();
    w.spec.source.size = 11;
    let after = ijs.replace("ij", &PostParams::default(), &w).await.unwrap();
    assert_eq!(after.metadata.generation, Some(2));

    // Schema: an enum violation is 422; unknown fields are pruned; defaults applied.
    let (code, reason, message) = api_error(
        ijs.patch(
            "ij",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "bogus"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    // A schema pattern too (the CRD's jobId and object keys).
    let (code, _, message) = api_error(
        ijs.patch(
            "ij",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"jobId": "not-a-uuid"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("spec.jobId in body should match"),
        "{message}"
    );
    let (code, ..) = api_error(
        ijs.patch_status(
            "ij",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"processedRows": "many"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422);
    let pruned = ijs
        .patch_status(
            "ij",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"notInTheSchema": 1, "processedRows": 3}})),
        )
        .await
        .unwrap();
    let raw: Value = serde_json::to_value(&pruned).unwrap();
    assert!(raw["status"].get("notInTheSchema").is_none());
    assert_eq!(raw["status"]["processedRows"], 3);
    let no_file_name = ijs
        .patch(
            "ij",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {"fileName": null}}})),
        )
        .await
        .unwrap();
    assert_eq!(no_file_name.spec.source.file_name, "", "the schema default");
    // Strategic merge patch is not supported for custom resources.
    let (code, ..) = api_error(
        ijs.patch(
            "ij",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"c": "d"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 415);
}

/// Server-side apply: each field manager owns what it applied; two managers' status fields
/// coexist; `conditions` merges by `type`; what a manager stops applying is removed unless
/// another owns it; a field another manager owns with a different value is a conflict
/// without `force`, and changes owner with it.
#[tokio::test]
async fn server_side_apply_field_managers() {
    let (server, client) = start(DoubleConfig::default()).await;
    let ijs: Api<ImportJob> = Api::namespaced(client, NS);
    ijs.create(&PostParams::default(), &import_job("ij"))
        .await
        .unwrap();
    let apply = |manager: &'static str, force: bool, status: Value| {
        let ijs = ijs.clone();
        async move {
            let mut pp = PatchParams::apply(manager);
            pp.force = force;
            ijs.patch_status(
                "ij",
                &pp,
                &Patch::Apply(json!({"apiVersion": "bulkimport.dev/v1alpha1", "kind": "ImportJob", "status": status})),
            )
            .await
        }
    };
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    apply("operator", true, json!({"phase": "Running", "reason": "Running", "conditions": [cond("Complete", "False"), cond("Failed", "False")]}))
        .await
        .unwrap();
    apply(
        "importer",
        true,
        json!({"processedRows": 5, "progressPercent": 1.5}),
    )
    .await
    .unwrap();
    let ij = apply(
        "importer",
        true,
        json!({"processedRows": 7, "progressPercent": 2.5}),
    )
    .await
    .unwrap();
    let st = ij.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.processed_rows, Some(7));
    assert_eq!(st.conditions.as_ref().unwrap().len(), 2);
    let managers: Vec<(String, String, Option<String>)> = ij
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap(),
                m.operation.clone().unwrap(),
                m.subresource.clone(),
            )
        })
        .collect();
    assert!(managers.contains(&("operator".into(), "Apply".into(), Some("status".into()))));
    assert!(managers.contains(&("importer".into(), "Apply".into(), Some("status".into()))));

    // An explicit null in an applied configuration is kept as null (and owned).
    apply(
        "operator",
        true,
        json!({"phase": "Running", "reason": "Running", "jobName": null, "conditions": [cond("Complete", "False"), cond("Failed", "False")]}),
    )
    .await
    .unwrap();
    let raw = server.double.get(&IMPORTJOBS, NS, "ij").unwrap();
    assert!(raw["status"].as_object().unwrap().contains_key("jobName"));
    assert!(raw["status"]["jobName"].is_null());
    // The operator drops `reason`, `jobName` and the Failed condition: they go; the
    // importer's fields stay.
    let ij = apply(
        "operator",
        true,
        json!({"phase": "Complete", "conditions": [cond("Complete", "True")]}),
    )
    .await
    .unwrap();
    let st = ij.status.clone().unwrap();
    assert_eq!(st.reason, None);
    assert_eq!(st.processed_rows, Some(7));
    let conds = st.conditions.unwrap();
    assert_eq!(conds.len(), 1);
    assert_eq!(
        (conds[0].type_.as_str(), conds[0].status.as_str()),
        ("Complete", "True")
    );

    // Another manager's condition type merges into the list.
    let ij = apply("importer", true, json!({"processedRows": 7, "progressPercent": 2.5, "conditions": [cond("Progressing", "True")]}))
        .await
        .unwrap();
    let types: Vec<String> = ij
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["Complete", "Progressing"]);

    // Conflicts: the operator owns phase; the importer changing it needs force.
    let (code, reason, message) = api_error(
        apply(
            "importer",
            false,
            json!({"processedRows": 7, "phase": "Stolen"}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("operator") && message.contains("phase"),
        "{message}"
    );
    let ij = apply(
        "importer",
        true,
        json!({"processedRows": 7, "phase": "Stolen"}),
    )
    .await
    .unwrap();
    assert_eq!(ij.status.unwrap().phase.as_deref(), Some("Stolen"));
    // Same value, no force: no conflict (shared ownership).
    apply(
        "operator",
        false,
        json!({"phase": "Stolen", "conditions": [cond("Complete", "True")]}),
    )
    .await
    .unwrap();
    // Apply to the main resource never touches status; apply without a field manager is 400.
    let main = ijs
        .patch(
            "ij",
            &PatchParams::apply("someone"),
            &Patch::Apply(json!({"apiVersion": "bulkimport.dev/v1alpha1", "kind": "ImportJob", "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Nope"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.as_ref().unwrap().phase.as_deref(),
        Some("Stolen")
    );
    assert_eq!(main.labels()["x"], "y");
    // Apply to a missing object creates it, owned by the applier.
    let created = ijs
        .patch(
            "new",
            &PatchParams::apply("creator"),
            &Patch::Apply(serde_json::to_value(import_job("new")).unwrap()),
        )
        .await
        .unwrap();
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("creator"), Some("Apply"))
    );
    // Apply to the status of a missing object: 404.
    let (code, ..) = api_error(
        ijs.patch_status(
            "missing",
            &PatchParams::apply("x").force(),
            &Patch::Apply(json!({"apiVersion": "bulkimport.dev/v1alpha1", "kind": "ImportJob", "status": {"phase": "X"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 404);
}

/// Finalizers (kube-runtime's own JSON patches, with `test`): delete only marks the object
/// (deletionTimestamp), a second delete changes nothing, no finalizer can be added while
/// deleting, and removing the last finalizer removes the object. A watch sees it all in
/// order.
#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_s, client) = start(DoubleConfig::default()).await;
    let ijs: Api<ImportJob> = Api::namespaced(client.clone(), NS);
    let created = ijs
        .create(&PostParams::default(), &import_job("ij"))
        .await
        .unwrap();
    let mut events = ijs
        .watch(&WatchParams::default(), &(rv(&created) - 1).to_string())
        .await
        .unwrap()
        .boxed();
    let json_patch = |ops: Value| Patch::<()>::Json(serde_json::from_value(ops).unwrap());
    // As kube-runtime's finalizer() adds its first finalizer: test null (absent), add.
    ijs.patch(
        "ij",
        &PatchParams::default(),
        &json_patch(
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                           {"op": "add", "path": "/metadata/finalizers", "value": ["a/b"]}]),
        ),
    )
    .await
    .unwrap();
    // The same again fails its test: 422.
    let (code, ..) = api_error(
        ijs.patch(
            "ij",
            &PatchParams::default(),
            &json_patch(
                json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                               {"op": "add", "path": "/metadata/finalizers", "value": ["a/b"]}]),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422);

    let deleted = ijs.delete("ij", &DeleteParams::default()).await.unwrap();
    let marked = deleted.left().expect("still there: the object comes back");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let again = ijs
        .delete("ij", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(rv(&again), rv(&marked), "a second delete changes nothing");
    let (code, ..) = api_error(
        ijs.patch(
            "ij",
            &PatchParams::default(),
            &json_patch(json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "c/d"}])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422, "no new finalizers while deleting");
    // Status writes still work while deleting.
    ijs.patch_status(
        "ij",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    // As finalizer() removes it: test the index, remove.
    ijs.patch(
        "ij",
        &PatchParams::default(),
        &json_patch(
            json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "a/b"},
                           {"op": "remove", "path": "/metadata/finalizers/0"}]),
        ),
    )
    .await
    .unwrap();
    assert!(ijs.get_opt("ij").await.unwrap().is_none());

    let mut seen = Vec::new();
    let mut last_rv = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .expect("events")
        .unwrap()
    {
        let (t, obj) = match ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            _ => continue,
        };
        assert!(rv(&obj) > last_rv, "events come in resourceVersion order");
        last_rv = rv(&obj);
        seen.push(t);
        if t == "DELETED" {
            break;
        }
    }
    assert_eq!(
        seen,
        ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    );
}

fn job_for(
    owner: &ImportJob,
    name: &str,
    image: &str,
    env: Value,
    pod_failure_policy: Option<Value>,
    backoff: i32,
) -> Job {
    let mut job = json!({
        "metadata": {"name": name, "labels": {"app": "t"}},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "metadata": {"labels": {"app": "t"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "importer", "image": image, "command": ["bulk-import-importer"], "args": ["--job-id", "$(JOB_ARG)"], "env": env,
                                    "envFrom": [{"configMapRef": {"name": "cm"}}]}],
                },
            },
        },
    });
    if let Some(p) = pod_failure_policy {
        job["spec"]["podFailurePolicy"] = p;
    }
    let mut job: Job = serde_json::from_value(job).unwrap();
    job.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    job
}

/// Garbage collection through ownerReferences: deleting an owner (Background, the default
/// for custom resources) deletes its dependents and theirs; deleting a batch/v1 Job without
/// a policy orphans its pods (its documented default); Foreground keeps the owner, marked,
/// until its dependents are gone.
#[tokio::test]
async fn garbage_collection_and_propagation() {
    let (server, client) = start(DoubleConfig::default()).await;
    let ijs: Api<ImportJob> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod_of = |job: &Job, name: &str| -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .unwrap();
        p.metadata.owner_references = Some(vec![job.controller_owner_ref(&()).unwrap()]);
        p
    };
    let owner = ijs
        .create(&PostParams::default(), &import_job("owner"))
        .await
        .unwrap();
    let job = jobs
        .create(
            &PostParams::default(),
            &job_for(&owner, "job", "img", json!([]), None, 0),
        )
        .await
        .unwrap();
    // The apiserver's Job defaults.
    assert_eq!(job.spec.as_ref().unwrap().completions, Some(1));
    assert!(job
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap()
        .contains_key("batch.kubernetes.io/job-name"));
    // The template is immutable.
    let mut changed = job.clone();
    changed
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("other".into());
    assert_eq!(
        api_error(
            jobs.replace("job", &PostParams::default(), &changed)
                .await
                .unwrap_err()
        )
        .0,
        422
    );

    pods.create(&PostParams::default(), &pod_of(&job, "p1"))
        .await
        .unwrap();
    // No policy on a Job: its pods are orphaned.
    jobs.delete("job", &DeleteParams::default()).await.unwrap();
    let orphan = pods.get("p1").await.unwrap();
    assert!(orphan
        .metadata
        .owner_references
        .unwrap_or_default()
        .is_empty());

    let job = jobs
        .create(
            &PostParams::default(),
            &job_for(&owner, "job", "img", json!([]), None, 0),
        )
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod_of(&job, "p2"))
        .await
        .unwrap();
    // Deleting the owner (Background): the Job goes, then its pod.
    ijs.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("the Job and its pod collected", || async {
        (jobs.get_opt("job").await.unwrap().is_none()
            && pods.get_opt("p2").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    assert!(
        pods.get_opt("p1").await.unwrap().is_some(),
        "the orphan stays"
    );
    assert_eq!(server.double.creates(&JOBS, NS, "job"), 2);

    // Foreground: the owner stays (marked) until its dependents are gone.
    let owner = ijs
        .create(&PostParams::default(), &import_job("fg"))
        .await
        .unwrap();
    let job = jobs
        .create(
            &PostParams::default(),
            &job_for(&owner, "fg-job", "img", json!([]), None, 0),
        )
        .await
        .unwrap();
    let mut blocker = pod_of(&job, "fg-pod");
    blocker.metadata.finalizers = Some(vec!["test/hold".into()]);
    pods.create(&PostParams::default(), &blocker).await.unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let marked = ijs.delete("fg", &dp).await.unwrap().left().unwrap();
    assert!(marked
        .finalizers()
        .contains(&"foregroundDeletion".to_string()));
    // The Job is deleted in the foreground too, and waits for its pod, which a finalizer holds.
    eventually("the Job marked", || async {
        jobs.get_opt("fg-job")
            .await
            .unwrap()
            .and_then(|j| j.metadata.deletion_timestamp)
            .map(|_| ())
    })
    .await;
    eventually("the pod marked", || async {
        pods.get_opt("fg-pod")
            .await
            .unwrap()
            .and_then(|p| p.metadata.deletion_timestamp)
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        ijs.get_opt("fg").await.unwrap().is_some(),
        "the pod with a finalizer still blocks"
    );
    assert!(jobs.get_opt("fg-job").await.unwrap().is_some());
    pods.patch(
        "fg-pod",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the owner gone", || async {
        ijs.get_opt("fg").await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Watches: resuming from a list's resourceVersion replays the changes in order; idle
/// watches get BOOKMARKs; a compacted version answers an ERROR event with 410 Expired;
/// leaving a label selector is a DELETED; kube-runtime's watcher re-lists after a 410 and
/// keeps up; metadata-only lists and watches (what `Controller::owns` uses) work.
#[tokio::test]
async fn watch_resume_bookmarks_410_and_selectors() {
    let config = DoubleConfig {
        bookmark_every: Duration::from_millis(200),
        max_watch: Duration::from_secs(1),
        ..Default::default()
    };
    let (server, client) = start(config).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let list = cms.list(&ListParams::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();
    let mut labeled = configmap("a", &[]);
    labeled.metadata.labels = Some([("sel".to_string(), "yes".to_string())].into());
    cms.create(&PostParams::default(), &labeled).await.unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    let collect = |wp: WatchParams, from: String| {
        let cms = cms.clone();
        async move {
            let mut out = Vec::new();
            let mut stream = cms.watch(&wp, &from).await.unwrap().boxed();
            while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(3), stream.try_next())
                .await
                .unwrap()
            {
                let tag = match &ev {
                    WatchEvent::Added(_) => "ADDED".to_string(),
                    WatchEvent::Modified(_) => "MODIFIED".to_string(),
                    WatchEvent::Deleted(_) => "DELETED".to_string(),
                    WatchEvent::Bookmark(_) => "BOOKMARK".to_string(),
                    WatchEvent::Error(e) => format!("ERROR {} {}", e.code, e.reason),
                };
                out.push(tag);
            }
            out
        }
    };
    let all = collect(WatchParams::default(), from.clone()).await;
    let changes: Vec<&String> = all.iter().filter(|t| *t != "BOOKMARK").collect();
    assert_eq!(changes, ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);
    assert!(all.iter().any(|t| t == "BOOKMARK"), "{all:?}");
    // With a selector, the relabel is the end of the object for this watcher.
    let selected = collect(WatchParams::default().labels("sel=yes"), from.clone()).await;
    let changes: Vec<&String> = selected.iter().filter(|t| *t != "BOOKMARK").collect();
    assert_eq!(changes, ["ADDED", "MODIFIED", "DELETED"]);

    server.double.compact();
    let gone = collect(WatchParams::default(), from.clone()).await;
    assert_eq!(gone, ["ERROR 410 Expired"]);

    // kube-runtime's watcher (as the Controller runs it) recovers from 410 by re-listing.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    cms.create(&PostParams::default(), &configmap("b", &[]))
        .await
        .unwrap();
    eventually("the watcher sees b", || async {
        reader
            .get(&reflector::ObjectRef::new("b").within(NS))
            .map(|_| ())
    })
    .await;
    let lists = || {
        server
            .double
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path.ends_with("/configmaps")
                    && !r.query.contains("watch=true")
            })
            .count()
    };
    let lists_before = lists();
    // An outage: the watch ends, changes happen and the history is compacted meanwhile, so
    // the watcher's resume version is gone when the server is back.
    server.double.set_unavailable(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wo = crate::kube_double::WriteOpts::default();
    let cm = |n: &str| serde_json::to_value(configmap(n, &[])).unwrap();
    server
        .double
        .create(&crate::kube_double::CONFIGMAPS, NS, cm("c"), &wo)
        .unwrap();
    server.double.compact();
    server
        .double
        .create(&crate::kube_double::CONFIGMAPS, NS, cm("d"), &wo)
        .unwrap();
    server.double.set_unavailable(false);
    eventually("the watcher sees c and d", || async {
        let names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        (names.contains(&"c".to_string()) && names.contains(&"d".to_string())).then_some(())
    })
    .await;
    assert!(
        lists() > lists_before,
        "the watcher re-listed after 410 Gone"
    );
    task.abort();

    // Metadata-only list and watch.
    let meta = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 3);
    assert_eq!(
        meta.items[0].types.as_ref().unwrap().kind,
        "PartialObjectMetadata"
    );
    let mut mw = cms
        .watch_metadata(
            &WatchParams::default(),
            &meta.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), mw.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Deleted(m)) => {
                assert_eq!(m.name_any(), "b");
                break;
            }
            Some(_) => {}
            None => panic!("the metadata watch ended without the delete"),
        }
    }
}

/// Pagination with limit/continue, discovery of the served groups (status subresources
/// included), and optimistic concurrency on a Lease: of two writers holding the same
/// resourceVersion exactly one wins. Events are validated like events.k8s.io/v1 and the
/// kube Recorder's repeat (a merge patch adding a series) works.
#[tokio::test]
async fn pagination_discovery_leases_and_events() {
    let (_s, client) = start(DoubleConfig::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    for i in 0..5 {
        cms.create(&PostParams::default(), &configmap(&format!("cm{i}"), &[]))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["cm0", "cm1", "cm2", "cm3", "cm4"]);

    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let group = discovery.get("bulkimport.dev").expect("the CRD's group");
    let (resource, caps) = group.recommended_kind("ImportJob").expect("ImportJob");
    assert_eq!(resource.plural, "importjobs");
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "importjobs/status" || r.plural == "status"),
        "{:?}",
        caps.subresources
            .iter()
            .map(|(r, _)| r.plural.clone())
            .collect::<Vec<_>>()
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}))
            .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let (code, ..) = api_error(
        leases
            .create(&PostParams::default(), &lease)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    let read = leases.get("l").await.unwrap();
    let mut by_b = read.clone();
    by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let mut by_c = read.clone();
    by_c.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let pp = PostParams::default();
    let (rb, rc) = tokio::join!(
        leases.replace("l", &pp, &by_b),
        leases.replace("l", &pp, &by_c)
    );
    assert!(rb.is_ok() != rc.is_ok(), "exactly one writer wins");

    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test".into(),
            instance: Some("t-1".into()),
        },
    );
    let target = cms.get("cm0").await.unwrap().object_ref(&());
    let ev = |note: String| Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some(note),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev("once".into()), &target).await.unwrap();
    recorder.publish(&ev("once".into()), &target).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let mut long = ev("x".repeat(1025));
    long.reason = "TooLong".into();
    let (code, ..) = api_error(recorder.publish(&long, &target).await.unwrap_err());
    assert_eq!(code, 422, "a note over 1 KiB is refused");
}

/// The stand-in Job controller and kubelet with a fake image (a shell script): environment
/// from the pod spec (env, `$(VAR)`, fieldRef, secretKeyRef, envFrom), success → Complete,
/// retries up to backoffLimit → BackoffLimitExceeded, exit code 2 → PodFailurePolicy,
/// a missing Secret key → CreateContainerConfigError, an unknown image → ErrImagePull then
/// ImagePullBackOff, SIGKILL → exit 137, deleting a running pod → SIGTERM, then gone.
#[tokio::test]
async fn stand_in_job_controller_and_kubelet() {
    let (server, client) = start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let image_dir = dir.path().join("image");
    std::fs::create_dir_all(&image_dir).unwrap();
    let script = image_dir.join("bulk-import-importer");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"ns=$KUBE_NAMESPACE db=$DATABASE_URL cm=$FROM_CM args=$*\"\ntrap 'echo terminated; exit 143' TERM\ni=0\nwhile [ $i -lt ${SLEEP_TENTHS:-0} ]; do sleep 0.1; i=$((i+1)); done\nexit ${EXIT_CODE:-0}\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kubelet = Kubelet::start(
        server.double.clone(),
        HashMap::from([("img".to_string(), image_dir)]),
        vec![("PATH".into(), std::env::var("PATH").unwrap())],
        HashMap::new(),
        &dir.path().join("logs"),
        Duration::from_millis(100),
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.create(
        &PostParams::default(),
        &configmap("cm", &[("FROM_CM", "cm-value"), ("SLEEP_TENTHS", "0")]),
    )
    .await
    .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"DATABASE_URL": "postgres://secret"}})).unwrap())
        .await
        .unwrap();
    let ijs: Api<ImportJob> = Api::namespaced(client.clone(), NS);
    let owner = ijs
        .create(&PostParams::default(), &import_job("owner"))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let env = |exit: &str, sleep: &str| {
        json!([
            {"name": "KUBE_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "DATABASE_URL"}}},
            {"name": "EXIT_CODE", "value": exit},
            {"name": "SLEEP_TENTHS", "value": sleep},
            {"name": "JOB_ARG", "value": "xyz"},
        ])
    };
    let fail_on_2 = json!({"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "importer", "operator": "In", "values": [2]}}]});
    let job_state = |name: &'static str| {
        let jobs = jobs.clone();
        async move {
            let j = jobs.get(name).await.unwrap();
            let st = j.status.unwrap_or_default();
            let cond = st
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
            cond.map(|c| {
                (
                    c.type_,
                    c.reason.unwrap_or_default(),
                    st.succeeded.unwrap_or(0),
                    st.failed.unwrap_or(0),
                )
            })
        }
    };
    let pods_of = |job: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(&format!("job-name={job}")))
                .await
                .unwrap()
                .items
        }
    };

    jobs.create(
        &PostParams::default(),
        &job_for(
            &owner,
            "ok",
            "img",
            env("0", "0"),
            Some(fail_on_2.clone()),
            3,
        ),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &job_for(
            &owner,
            "retries",
            "img",
            env("1", "0"),
            Some(fail_on_2.clone()),
            1,
        ),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &job_for(
            &owner,
            "permanent",
            "img",
            env("2", "0"),
            Some(fail_on_2.clone()),
            3,
        ),
    )
    .await
    .unwrap();
    let mut bad_env = env("0", "0");
    bad_env
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "MISSING"}}}));
    jobs.create(
        &PostParams::default(),
        &job_for(&owner, "badenv", "img", bad_env, None, 0),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &job_for(
            &owner,
            "noimage",
            "registry.invalid/nope:1",
            env("0", "0"),
            None,
            0,
        ),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &job_for(&owner, "killed", "img", env("0", "600"), None, 0),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &job_for(&owner, "deleted", "img", env("0", "600"), None, 0),
    )
    .await
    .unwrap();

    let ok = eventually("ok completes", || job_state("ok")).await;
    assert_eq!(ok, ("Complete".into(), "CompletionsReached".into(), 1, 0));
    let p = &pods_of("ok").await[0];
    let t = p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(p.labels()["app"], "t");
    let log = kubelet.log(&p.name_any());
    assert!(
        log.contains(&format!(
            "ns={NS} db=postgres://secret cm=cm-value args=--job-id xyz"
        )),
        "{log}"
    );

    let retries = eventually("retries fails", || job_state("retries")).await;
    assert_eq!(
        retries,
        ("Failed".into(), "BackoffLimitExceeded".into(), 0, 2)
    );
    assert_eq!(pods_of("retries").await.len(), 2, "one pod per attempt");

    let permanent = eventually("permanent fails", || job_state("permanent")).await;
    assert_eq!(
        permanent,
        ("Failed".into(), "PodFailurePolicy".into(), 0, 1)
    );
    assert_eq!(
        pods_of("permanent").await.len(),
        1,
        "no retry after a FailJob exit code"
    );

    let waiting_reason = |job: &'static str| async move {
        let ps = pods_of(job).await;
        let cs = ps
            .first()?
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        cs.state?.waiting?.reason
    };
    eventually("CreateContainerConfigError", || async {
        (waiting_reason("badenv").await.as_deref() == Some("CreateContainerConfigError"))
            .then_some(())
    })
    .await;
    eventually("ImagePullBackOff", || async {
        (waiting_reason("noimage").await.as_deref() == Some("ImagePullBackOff")).then_some(())
    })
    .await;

    let running = |job: &'static str| async move {
        pods_of(job)
            .await
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    };
    let victim = eventually("killed runs", || running("killed")).await;
    kubelet.kill(&victim.name_any());
    let failed = eventually("killed fails", || job_state("killed")).await;
    assert_eq!(
        failed,
        ("Failed".into(), "BackoffLimitExceeded".into(), 0, 1)
    );
    let t = pods
        .get(&victim.name_any())
        .await
        .unwrap()
        .status
        .unwrap()
        .container_statuses
        .unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("Error")));

    let doomed = eventually("deleted runs", || running("deleted")).await;
    let marked = pods
        .delete(&doomed.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    assert!(marked
        .left()
        .expect("graceful")
        .metadata
        .deletion_timestamp
        .is_some());
    eventually("the pod gone after SIGTERM", || async {
        pods.get_opt(&doomed.name_any())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(kubelet.log(&doomed.name_any()).contains("terminated"));
    assert_eq!(server.double.creates(&IMPORTJOBS, NS, "owner"), 1);
}
