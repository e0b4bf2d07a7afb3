//! Issue 25, point 5: an ImportJob written by hand and applied by the real kubectl, for an
//! object already in the bucket under the organization's import prefix, is taken by the
//! operator on its own (it creates the job row) and ends `Complete` with the counts of an
//! uninterrupted run; the source object stays. One with a key outside the prefixes fails
//! with the reason and a Warning Event; one without the release's instance label gets a
//! Warning Event naming the label.

use super::{events_about, kubectl, MINUTE};
use crate::harness::{assert_same_outcome, csv, outcome, reference_run, Options, Stack, NS};
use bulk_import_core::crd::ImportJob;
use kube::api::Api;
use uuid::Uuid;

/// The YAML a user would write (`labels`: the release's instance label, or none).
fn manifest(name: &str, org: i64, key: &str, labels: &str) -> String {
    format!(
        "apiVersion: bulkimport.dev/v1alpha1\nkind: ImportJob\nmetadata:\n  name: {name}\n{labels}\
         spec:\n  organization: {org}\n  mode: insert_only\n  source:\n    key: {key}\n"
    )
}

const BLUE: &str = "  labels:\n    app.kubernetes.io/instance: blue\n";

fn apply(stack: &Stack, yaml: &str) {
    let file = stack.dir.path().join(format!("{}.yaml", Uuid::new_v4()));
    std::fs::write(&file, yaml).unwrap();
    let (code, out) = kubectl(
        stack,
        &["apply", "--validate=false", "-f", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "kubectl apply: {out}");
}

fn job_named(stack: &Stack, name: &str) -> Option<serde_json::Value> {
    stack.double.get_opt(&crate::kube_double::JOBS, NS, name)
}

/// The note of an Event about the named ImportJob with this reason.
fn event_note(stack: &Stack, name: &str, reason: &str) -> Option<String> {
    let (events, _) = stack.double.list(
        &crate::kube_double::EVENTS,
        Some(NS),
        &crate::kube_double::Selector::default(),
    );
    events
        .iter()
        .find(|e| e["regarding"]["name"] == name && e["reason"] == reason)
        .map(|e| e["note"].as_str().unwrap_or("").to_string())
}

async fn named(stack: &Stack, name: &str) -> Option<ImportJob> {
    Api::<ImportJob>::namespaced(stack.kube.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()
}

/// The phase and reason of a named ImportJob once its phase is one of `phases`.
async fn ends(stack: &Stack, name: &str, phases: &[&str]) -> ImportJob {
    stack
        .eventually(&format!("{name} ends"), 2 * MINUTE, || async {
            let ij = named(stack, name).await?;
            let phase = ij.status.as_ref()?.phase.clone()?;
            phases.contains(&phase.as_str()).then_some(ij)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_importjob_applied_by_kubectl_imports_an_object_in_the_bucket() {
    let stack = Stack::start(Options {
        instance: Some("blue"),
        batch_size: 50,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, org) = stack.get(&token, "/orgs/current").await;
    let org = org["id"].as_i64().expect("organization id");
    let file = csv(300);
    let key = format!("orgs/{org}/inbox/customers.csv");
    stack
        .storage
        .put_stream(&key, std::io::Cursor::new(file.clone()))
        .await
        .unwrap();

    apply(&stack, &manifest("inbox-customers", org, &key, BLUE));
    let ij = ends(&stack, "inbox-customers", &["Complete", "Failed"]).await;
    let status = ij.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Complete"), "{status:?}");
    let id: Uuid = status
        .job_id
        .as_deref()
        .expect("status.jobId")
        .parse()
        .unwrap();
    assert_eq!(
        Some(id.to_string()),
        ij.metadata.uid,
        "the job id is the uid"
    );
    let row = stack.row(id).await;
    assert_eq!(
        (row.org_id as i64, row.source_object.as_str()),
        (org, key.as_str())
    );
    let want = reference_run(&file, "insert_only", 50).await;
    let got = outcome(&stack.pool, &stack.storage, id).await;
    assert_same_outcome(&got, &want);
    assert_eq!(
        (
            status.processed_rows,
            status.inserted_rows,
            status.error_rows
        ),
        (Some(want.processed), Some(want.inserted), Some(want.errors)),
        "the status has the row's counts"
    );
    // The job JSON shows it like an upload, to the organization's members.
    let (_, job) = stack.get(&token, &format!("/imports/{id}")).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["file_name"], "customers.csv", "{job}");
    // The API never makes a second ImportJob for the row (its sweeps, its start).
    assert!(
        stack.import_job(id).await.is_none(),
        "no import-<id> beside it"
    );
    // The object is not the service's: it stays.
    assert_eq!(stack.storage.size(&key).await.unwrap(), file.len() as u64);

    // The same object through the API's JSON POST: an ImportJob made by the API, whose
    // source is the object, ends done too (upsert: nothing new to insert).
    let r = stack
        .http
        .post(stack.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "from-storage")
        .json(&serde_json::json!({"source": {"key": key}, "mode": "upsert"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let job: serde_json::Value = r.json().await.unwrap();
    let api_id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let ij = stack
        .eventually("the API's ImportJob ends", 2 * MINUTE, || async {
            let ij = stack.import_job(api_id).await?;
            (ij.status.as_ref()?.phase.as_deref()? == "Complete").then_some(ij)
        })
        .await;
    assert_eq!(ij.spec.source.key, key);
    let row = stack.row(api_id).await;
    assert_eq!(
        (row.status().as_str(), row.processed_rows, row.inserted_rows),
        ("done", want.processed, 0),
        "every customer was imported already"
    );
    assert_eq!(stack.storage.size(&key).await.unwrap(), file.len() as u64);
}

/// Refusals: each fails the ImportJob with its reason (a Warning Event for the first), and
/// an ImportJob without the release's label gets the NotTaken Warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_importjobs_that_cannot_run_say_why() {
    let stack = Stack::start(Options {
        instance: Some("blue"),
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, org) = stack.get(&token, "/orgs/current").await;
    let org = org["id"].as_i64().expect("organization id");
    let file = csv(10);
    let key = format!("orgs/{org}/inbox/customers.csv");
    stack
        .storage
        .put_stream(&key, std::io::Cursor::new(file.clone()))
        .await
        .unwrap();

    // A key outside the organization's prefixes: Failed, with the reason and a Warning.
    let outside = format!("orgs/{org}/elsewhere/customers.csv");
    stack
        .storage
        .put_stream(&outside, std::io::Cursor::new(file.clone()))
        .await
        .unwrap();
    apply(&stack, &manifest("outside", org, &outside, BLUE));
    let ij = ends(&stack, "outside", &["Complete", "Failed"]).await;
    let status = ij.status.unwrap();
    assert_eq!(
        (status.phase.as_deref(), status.reason.as_deref()),
        (Some("Failed"), Some("SourceNotAllowed")),
        "{status:?}"
    );
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("import prefixes"),
        "{status:?}"
    );
    assert!(
        job_named(&stack, "outside").is_none(),
        "no Job for a refused import"
    );
    assert!(events_about(&stack, "outside").contains(&("Warning".into(), "Failed".into())));

    // A missing object, an unknown organization: Failed with their reasons.
    for (name, org, key, reason) in [
        (
            "missing",
            org,
            format!("orgs/{org}/inbox/none.csv"),
            "SourceNotFound",
        ),
        (
            "nobody",
            999_999,
            "orgs/999999/inbox/a.csv".into(),
            "UnknownOrganization",
        ),
    ] {
        apply(&stack, &manifest(name, org, &key, BLUE));
        let status = ends(&stack, name, &["Complete", "Failed"])
            .await
            .status
            .unwrap();
        assert_eq!(status.reason.as_deref(), Some(reason), "{status:?}");
    }

    // A jobId that names no row (the "recorded a permanent failure"): NoJobRow, at
    // once, saying to leave jobId out; no Job.
    let ghost = Uuid::new_v4();
    let yaml = format!(
        "apiVersion: bulkimport.dev/v1alpha1\nkind: ImportJob\nmetadata:\n  name: ghost\n{BLUE}\
         spec:\n  jobId: {ghost}\n  organization: {org}\n  mode: insert_only\n  source:\n    \
         key: uploads/{ghost}/{ghost}.csv\n  report:\n    key: reports/{ghost}/errors.csv\n"
    );
    apply(&stack, &yaml);
    let status = ends(&stack, "ghost", &["Complete", "Failed"])
        .await
        .status
        .unwrap();
    assert_eq!(status.reason.as_deref(), Some("NoJobRow"), "{status:?}");
    assert!(status.message.unwrap_or_default().contains("leave jobId"));
    assert!(job_named(&stack, "ghost").is_none());

    // Without the release's label: not taken, and a Warning Event says which label to add.
    apply(&stack, &manifest("unlabeled", org, &key, ""));
    let note = stack
        .eventually("the NotTaken Warning", MINUTE, || async {
            event_note(&stack, "unlabeled", "NotTaken")
        })
        .await;
    assert!(note.contains("app.kubernetes.io/instance=blue"), "{note}");
    let ij = named(&stack, "unlabeled").await.unwrap();
    assert!(ij.status.is_none(), "not taken: {:?}", ij.status);
    assert!(job_named(&stack, "unlabeled").is_none());
}
