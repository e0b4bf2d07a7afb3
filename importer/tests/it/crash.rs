//! Crash safety with the real importer binary: killed with SIGKILL at several points of a
//! large file, or stopped with SIGTERM, then restarted — the customers, the counters and
//! errors.csv must equal those of an uninterrupted run of the same file.

use crate::common;
use bulk_import_core::{ImportMode, JobRow, JobStatus};
use common::{eventually, generated_csv, Backend, Customer, TestEnv};
use std::{process::Child, time::Duration};
use uuid::Uuid;

const ROWS: usize = 40_000;
const VARS: &[(&str, &str)] = &[("BATCH_SIZE", "200")];

struct Result {
    job: JobRow,
    customers: Vec<(Customer, Option<i64>)>,
    report: Vec<u8>,
}

async fn result_of(env: &TestEnv, id: Uuid) -> Result {
    let job = env.job(id).await;
    let customers = sqlx::query_as::<_, (String, Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>)>(
        "SELECT email, first_name, last_name, phone, city, last_import_line FROM customers ORDER BY email",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(e, f, l, p, c, line)| ((e, f, l, p, c), line))
    .collect();
    let report = env.report_bytes(&job).await;
    Result {
        job,
        customers,
        report,
    }
}

async fn uninterrupted(file: &[u8], mode: ImportMode) -> Result {
    let env = TestEnv::with(Backend::S3, VARS).await;
    let id = env.submit(file, mode).await;
    let status = env.importer_command(id).status().unwrap();
    assert!(status.success());
    result_of(&env, id).await
}

/// After a kill, everything committed must be whole batches: the counters agree with each
/// other and with the tables. One statement, so one snapshot: the killed importer's server
/// session may still be committing its last batch while we look.
async fn assert_consistent(env: &TestEnv, id: Uuid) -> JobRow {
    let (processed, inserted, updated, errors, customers, error_records): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT processed_rows, inserted_rows, updated_rows, error_rows, \
               (SELECT count(*) FROM customers), (SELECT count(*) FROM import_errors WHERE job_id = $1) \
             FROM import_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(processed, inserted + updated + errors);
    assert_eq!(customers, inserted, "no half-committed batch");
    assert_eq!(error_records, errors);
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Processing);
    job
}

async fn wait_for_rows(env: &TestEnv, id: Uuid, child: &mut Child, rows: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while env.job(id).await.processed_rows < rows {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the importer ended before it was stopped"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn assert_same(got: &Result, want: &Result) {
    let counters = |j: &JobRow| {
        (
            j.status(),
            j.processed_rows,
            j.inserted_rows,
            j.updated_rows,
            j.error_rows,
        )
    };
    assert_eq!(counters(&got.job), counters(&want.job));
    assert_eq!(got.customers.len(), want.customers.len());
    assert!(
        got.customers == want.customers,
        "customers differ from the uninterrupted run"
    );
    assert!(
        got.report == want.report,
        "errors.csv differs from the uninterrupted run"
    );
}

async fn killed_and_resumed(mode: ImportMode) {
    let file = generated_csv(ROWS);
    let want = uninterrupted(&file, mode).await;
    assert_eq!(want.job.processed_rows, ROWS as i64);

    let env = TestEnv::with(Backend::S3, VARS).await;
    let id = env.submit(&file, mode).await;
    let mut last_processed = -1;
    // Kill as soon as it runs, then at about 25%, 50% and 80% of the file.
    for threshold in [0, ROWS / 4, ROWS / 2, ROWS * 4 / 5] {
        let mut child = env.importer_command(id).spawn().unwrap();
        eventually(Duration::from_secs(60), "processing", || async {
            (env.job(id).await.status() == JobStatus::Processing).then_some(())
        })
        .await;
        wait_for_rows(&env, id, &mut child, threshold as i64).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let job = assert_consistent(&env, id).await;
        assert!(job.processed_rows >= last_processed);
        assert!(job.processed_rows < ROWS as i64, "killed before the end");
        last_processed = job.processed_rows;
    }
    let status = env.importer_command(id).status().unwrap();
    assert!(status.success());
    let got = result_of(&env, id).await;
    assert_eq!(got.job.attempts, 5);
    assert_same(&got, &want);
}

#[tokio::test]
async fn sigkill_at_several_points_insert_only() {
    killed_and_resumed(ImportMode::InsertOnly).await;
}

#[tokio::test]
async fn sigkill_at_several_points_upsert() {
    killed_and_resumed(ImportMode::Upsert).await;
}

#[tokio::test]
async fn sigterm_mid_file_exits_nonzero_then_resumes() {
    let file = generated_csv(ROWS);
    let want = uninterrupted(&file, ImportMode::InsertOnly).await;

    let env = TestEnv::with(Backend::S3, VARS).await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let mut child = env.importer_command(id).spawn().unwrap();
    wait_for_rows(&env, id, &mut child, (ROWS / 3) as i64).await;
    let term = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(bulk_import_importer::exit::INTERRUPTED));
    let job = assert_consistent(&env, id).await;
    assert!(job.processed_rows < ROWS as i64);

    assert!(env.importer_command(id).status().unwrap().success());
    assert_same(&result_of(&env, id).await, &want);
}

#[tokio::test]
async fn two_importers_on_one_job_apply_it_once() {
    let file = generated_csv(ROWS / 4);
    let want = uninterrupted(&file, ImportMode::InsertOnly).await;
    let env = TestEnv::with(Backend::S3, VARS).await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let mut a = env.importer_command(id).spawn().unwrap();
    let mut b = env.importer_command(id).spawn().unwrap();
    let (ea, eb) = (a.wait().unwrap(), b.wait().unwrap());
    // One of them runs the job; the other waits for it, and says "try later" (75) if the
    // job outlasts its wait (lease + 5 s), as an executor then runs it again.
    let ok = |s: std::process::ExitStatus| s.success() || s.code() == Some(75);
    assert!(
        ok(ea) && ok(eb) && (ea.success() || eb.success()),
        "{ea} {eb}"
    );
    if !(ea.success() && eb.success()) {
        assert!(env.importer_command(id).status().unwrap().success());
    }
    let got = result_of(&env, id).await;
    // The other one found the job done (or was told to try later): one attempt in all.
    assert_eq!(got.job.attempts, 1);
    assert_same(&got, &want);
}

/// What a database crash does to asynchronously committed batches, simulated: the last
/// committed batches vanish together with their checkpoint. The importer notices that the
/// checkpoint went back and resumes from it; the result is exact.
#[tokio::test]
async fn batches_lost_by_the_database_are_redone_from_the_surviving_checkpoint() {
    let file = generated_csv(3_000);
    let want = uninterrupted(&file, ImportMode::InsertOnly).await;
    let env = TestEnv::with(
        Backend::S3,
        &[("BATCH_SIZE", "50"), ("IMPORT_SLOW_MS", "1")],
    )
    .await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let settings = env.settings.clone();
    let run = tokio::spawn(async move {
        bulk_import_importer::run_job(&settings, id, Default::default()).await
    });
    eventually(Duration::from_secs(60), "progress", || async {
        (env.job(id).await.processed_rows >= 500).then_some(())
    })
    .await;
    // "Lose" everything committed so far, as one atomic rollback of history. The job row is
    // locked first: a batch commit in flight finishes before (and is lost with the rest),
    // any later one waits and then finds the checkpoint moved.
    let mut tx = env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM import_jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM customers")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM import_errors")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE import_jobs SET processed_rows = 0, inserted_rows = 0, updated_rows = 0, error_rows = 0, \
         checkpoint_offset = 0, checkpoint_line = 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let outcome = run.await.unwrap().unwrap();
    assert!(
        matches!(outcome, bulk_import_importer::Outcome::Done(_)),
        "{outcome:?}"
    );
    assert_same(&result_of(&env, id).await, &want);
}

/// A run of a job that already ended exits as the job ended (issue 11, bug 2): a Job created
/// again for a `failed` import — its first Job gone after its TTL, or deleted — must fail
/// again rather than end Complete over a failed import. It also runs with `APP_ENV=prod` and
/// no `JWT_SECRET`: the importer never signs tokens, and its pods are not given the key.
#[tokio::test]
async fn a_rerun_of_an_ended_job_exits_as_it_ended_without_a_jwt_secret() {
    let env = TestEnv::with(Backend::S3, VARS).await;
    let id = env
        .submit(
            b"email,first_name\na@example.com,A\n",
            ImportMode::InsertOnly,
        )
        .await;
    let status = env
        .importer_command(id)
        .env("APP_ENV", "prod")
        .env_remove("JWT_SECRET")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(bulk_import_importer::exit::OK));
    assert_eq!(env.job(id).await.status(), JobStatus::Done);
    let again = env.importer_command(id).status().unwrap();
    assert_eq!(
        again.code(),
        Some(bulk_import_importer::exit::OK),
        "done stays done"
    );

    let failed = env
        .submit(
            b"email,first_name\nb@example.com,B\n",
            ImportMode::InsertOnly,
        )
        .await;
    sqlx::query("UPDATE import_jobs SET status = 'failed', error = 'OOMKilled: x' WHERE id = $1")
        .bind(failed)
        .execute(&env.pool)
        .await
        .unwrap();
    let status = env.importer_command(failed).status().unwrap();
    assert_eq!(
        status.code(),
        Some(bulk_import_importer::exit::PERMANENT),
        "a failed import is not reported as a success"
    );
    let job = env.job(failed).await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some("OOMKilled: x"),
        "and is left as it was"
    );
}
