//! Admission (issue 25): at most `MAX_ACTIVE_IMPORTS` importer Jobs at once, the rest
//! `Queued` with their position, the next slot round-robin across organizations.

use crate::harness::{Options, Stack};
use bulk_import_core::crd::resource_name;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// A file of `rows` rows whose emails are its own (`tag`), one in ten invalid: the same
/// counts whatever ran before it in the organization.
fn file(tag: &str, rows: usize) -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..rows {
        if i % 10 == 9 {
            out.push_str(&format!("bad-{tag}-{i},Bad,,,\n"));
        } else {
            out.push_str(&format!("{tag}-{i}@example.com,F{i},L{i},,City\n"));
        }
    }
    out.into_bytes()
}

fn id_of(job: &Value) -> Uuid {
    job["id"].as_str().expect("job id").parse().unwrap()
}

/// The import a Job runs (its job-id label).
fn job_id_of(job: &Value) -> Uuid {
    job["metadata"]["labels"]["bulkimport.dev/job-id"]
        .as_str()
        .expect("job-id label")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_uploads_share_four_slots_fairly_across_two_organizations() {
    let stack = Stack::start(Options {
        slow_ms: 60,
        env: vec![
            ("MAX_ACTIVE_IMPORTS", "4".into()),
            ("JOBS_MAX_UNFINISHED_PER_USER", "100".into()),
            ("JOBS_MAX_UNFINISHED_PER_ORG", "100".into()),
        ],
        ..Default::default()
    })
    .await;
    // Two sign-ups: two organizations.
    let (a, b) = (stack.user().await, stack.user().await);
    let mut a_ids = Vec::new();
    for i in 0..25 {
        let (code, job) = stack
            .upload(
                &a,
                &format!("a{i}"),
                "insert_only",
                "a.csv",
                &file(&format!("a{i}"), 10),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{job}");
        a_ids.push(id_of(&job));
    }
    // The last of A's waits: queued, with its position, in the job JSON and the ImportJob.
    let last = *a_ids.last().unwrap();
    let (position, _) = stack
        .eventually("A's last upload shows queued", super::MINUTE, || async {
            let (_, job) = stack.get(&a, &format!("/imports/{last}")).await;
            let ij = stack.import_job(last).await?;
            let st = ij.status?;
            (job["status"] == "queued" && st.phase.as_deref() == Some("Queued")).then_some(())?;
            Some((job["queue_position"].as_i64()?, st.queue_position?))
        })
        .await;
    assert!(position >= 1, "queue_position {position}");
    let created_before_b = stack.double.job_tally().1.len();
    let mut b_ids = Vec::new();
    for i in 0..5 {
        let (code, job) = stack
            .upload(
                &b,
                &format!("b{i}"),
                "insert_only",
                "b.csv",
                &file(&format!("b{i}"), 10),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{job}");
        b_ids.push(id_of(&job));
    }
    for (token, id) in a_ids
        .iter()
        .map(|id| (&a, *id))
        .chain(b_ids.iter().map(|id| (&b, *id)))
    {
        let job = stack
            .eventually("every import ends", 5 * super::MINUTE, || async {
                let (_, job) = stack.get(token, &format!("/imports/{id}")).await;
                (job["status"] != "queued"
                    && job["status"] != "pending"
                    && job["status"] != "processing")
                    .then_some(job)
            })
            .await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(job["queue_position"], Value::Null, "{job}");
        let counts = [
            "processed_rows",
            "inserted_rows",
            "updated_rows",
            "error_rows",
        ]
        .map(|k| job[k].as_i64().unwrap());
        assert_eq!(counts, [10, 9, 0, 1], "{job}");
        stack
            .eventually("the ImportJob is Complete", super::MINUTE, || async {
                let st = stack.import_job(id).await?.status?;
                (st.phase.as_deref() == Some("Complete") && st.queue_position.is_none())
                    .then_some(())
            })
            .await;
        assert_eq!(
            stack.creates(&crate::kube_double::JOBS, &resource_name(id)),
            1
        );
    }
    let (peak, created) = stack.double.job_tally();
    assert_eq!(created.len(), 30, "one Job per import");
    assert_eq!(
        peak, 4,
        "never more than 4 unfinished importer Jobs, and the queue was used"
    );
    let order: Vec<Uuid> = created.iter().map(job_id_of).collect();
    let first_b = order.iter().position(|id| b_ids.contains(id)).unwrap();
    let last_b = order.iter().rposition(|id| b_ids.contains(id)).unwrap();
    let shown: Vec<char> = order
        .iter()
        .map(|id| if b_ids.contains(id) { 'B' } else { 'A' })
        .collect();
    let shown: String = shown.into_iter().collect();
    eprintln!("Job creation order: {shown} (B uploaded after {created_before_b}); peak {peak}");
    // B's first goes into one of the next slots after it arrived (a slot or two may
    // already have been decided from caches that had not seen B's ImportJobs yet), not
    // after A's queue; all of B's run before A's last five.
    assert!(
        first_b < created_before_b + 4,
        "B's first Job was created {first_b}th, {created_before_b} before B uploaded: {shown}"
    );
    assert!(
        last_b < 25,
        "B's last Job came after A's last five: {shown}"
    );
    // Within an organization, oldest first (creation time, to the second, then name): up
    // to the imports admitted by one decision (at most the 4 slots), whose Jobs are created
    // by their own reconciles, in whatever order those run.
    let mut created_at = Vec::new();
    for id in order.iter().filter(|id| a_ids.contains(id)) {
        let ij = stack.import_job(*id).await.expect("ImportJob");
        created_at.push(ij.metadata.creation_timestamp.expect("created").0);
    }
    for (i, earlier) in created_at.iter().enumerate() {
        for (j, later) in created_at.iter().enumerate().skip(i + 4) {
            assert!(
                earlier <= later,
                "A's Job {i} (ImportJob created {earlier}) started before A's older {j} ({later})"
            );
        }
    }
}
