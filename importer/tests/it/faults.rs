//! The importer binary against services that fail under it. Each fault hits a private
//! instance (`services/mod.rs`), never the shared services other tests use.
//!
//! - Postgres crashes (`pg_ctl stop -m immediate`) mid-import and comes back: the importer
//!   retries the batch, resumes, and ends exactly as an uninterrupted run — in the same run.
//! - Garage is killed mid-import and comes back: the reader reopens the object at the offset
//!   it reached, and the result is exact.
//! - Garage is killed mid-import and stays down: the importer retries for about a minute,
//!   then exits 75 ("try later"), leaving the job `processing` with whole batches committed
//!   and its claim given up; once Garage is back, the next run resumes and ends exact.

use crate::{common, services};
use bulk_import_core::{ImportMode, JobStatus};
use common::{generated_csv, outcome, uninterrupted, wait_exit, Backend, TestEnv};
use services::{PrivateGarage, PrivatePostgres};
use std::{
    process::Child,
    time::{Duration, Instant},
};
use uuid::Uuid;

async fn wait_rows(env: &TestEnv, id: Uuid, child: &mut Child, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.job(id).await.processed_rows < rows {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the importer ended early"
        );
        assert!(Instant::now() < deadline, "no progress to {rows} rows");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_crashed_mid_import_is_retried_and_the_result_is_exact() {
    let file = generated_csv(3_000);
    let want = uninterrupted(&file).await;
    let pg = PrivatePostgres::start();
    let url = pg.create_database().await;
    let env = TestEnv::with(
        Backend::Fs,
        &[
            ("DATABASE_URL", &url),
            ("BATCH_SIZE", "50"),
            ("IMPORT_SLOW_MS", "1"),
        ],
    )
    .await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let mut child = env.importer_command(id).spawn().unwrap();
    wait_rows(&env, id, &mut child, 600).await;
    pg.crash();
    // Down long enough for the importer to fail at least one batch and back off.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the importer waits it out"
    );
    pg.start_server();
    let status = wait_exit(&mut child, 120).await;
    assert!(status.success(), "one run, no restart needed: {status}");
    let job = env.job(id).await;
    assert_eq!(job.attempts, 1);
    assert_eq!(outcome(&env, id).await, want);
}

/// An S3 test environment on a private Garage and a ~41 MB file (1 KB rows), far more than
/// socket buffers hold: when Garage dies, the reader's stream really breaks.
const ROWS: usize = 40_000;

async fn garage_env(garage: &PrivateGarage, rows: usize) -> (TestEnv, Uuid) {
    let vars = garage.vars();
    let mut overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.push(("BATCH_SIZE", "1000"));
    let env = TestEnv::with(Backend::S3, &overrides).await;
    let pad = "p".repeat(250);
    let mut file = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..rows {
        if i % 10 == 9 {
            file.push_str(&format!("bad-{i},{pad},{pad},{pad},{pad}\n"));
        } else {
            file.push_str(&format!("u{i}@example.com,{pad},{pad},{pad},{pad}\n"));
        }
    }
    let file = file.into_bytes();
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    (env, id)
}

#[tokio::test]
async fn garage_killed_mid_import_and_back_resumes_exactly() {
    let mut garage = PrivateGarage::start();
    let (env, id) = garage_env(&garage, ROWS).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = env
        .importer_command(id)
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    wait_rows(&env, id, &mut child, 1_000).await;
    garage.stop();
    // The outage itself lasts 2 s: this sleep is the fault, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(2)).await;
    garage.start_server();
    let status = wait_exit(&mut child, 120).await;
    assert!(status.success(), "{status}");
    // The fault happened: the stream broke and was reopened at its offset (not a file read
    // whole before the outage).
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("storage read failed, reopening"),
        "the importer never lost its stream:\n{text}"
    );
    let got = outcome(&env, id).await;
    let rows = ROWS as i64;
    assert_eq!(
        got.counters,
        (JobStatus::Done, rows, rows / 10 * 9, 0, rows / 10)
    );
    assert_eq!(got.customers.len(), ROWS / 10 * 9);
    assert_eq!(
        got.customers.first().map(|c| c.0.as_str()),
        Some("u0@example.com")
    );
    assert_eq!(got.report.len(), 1 + ROWS / 10);
    assert_eq!(env.job(id).await.attempts, 1);
}

#[tokio::test]
async fn garage_down_past_the_retries_leaves_the_job_for_a_later_run() {
    let mut garage = PrivateGarage::start();
    let (env, id) = garage_env(&garage, ROWS).await;
    let mut child = env.importer_command(id).spawn().unwrap();
    wait_rows(&env, id, &mut child, 1_000).await;
    garage.stop();
    let started = Instant::now();
    // The reader reopens the object with backoff for about a minute before giving up.
    let status = wait_exit(&mut child, 150).await;
    let waited = started.elapsed();
    assert_eq!(
        status.code(),
        Some(bulk_import_core::exit::TEMPORARY),
        "storage down is temporary: try later, never a failed job"
    );
    assert!(
        waited > Duration::from_secs(20),
        "it retried first ({waited:?})"
    );
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Processing);
    assert!(job.owner_id.is_none(), "the claim was given up");
    assert!(job.report_object.is_none());
    // What was committed is whole batches, and consistent with the counters.
    let customers = env.customers().await.len() as i64;
    assert_eq!(customers, job.inserted_rows);
    assert!(job.processed_rows < ROWS as i64);
    assert_eq!(job.processed_rows, job.inserted_rows + job.error_rows);
    let errors: i64 = sqlx::query_scalar("SELECT count(*) FROM import_errors WHERE job_id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(errors, job.error_rows, "no half-written batch");
    // Storage back: the next run resumes from the checkpoint and ends exact.
    garage.start_server();
    let status = wait_exit(&mut env.importer_command(id).spawn().unwrap(), 120).await;
    assert!(status.success(), "{status}");
    let got = outcome(&env, id).await;
    let rows = ROWS as i64;
    assert_eq!(
        got.counters,
        (JobStatus::Done, rows, rows / 10 * 9, 0, rows / 10)
    );
    assert_eq!(got.report.len(), 1 + ROWS / 10);
}
