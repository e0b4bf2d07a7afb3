//! The job's life at its edges (issue 9), with the real importer binary against real
//! services, the faults on private instances (`services/mod.rs`):
//! - Postgres crashes (`-m immediate`) between the last batch and `done`, back within 2 s or
//!   after 30 s: the job ends `done`, identical to an uninterrupted run;
//! - batches lost by the database after the last one was committed are redone before `done`
//!   (`done` requires the checkpoint at the end of the file);
//! - Postgres restarts while a second importer waits for the same job: every batch once;
//! - a half-open Postgres connection (a proxy that stops forwarding without closing) is
//!   noticed within the timeout and the import resumes;
//! - Garage is down while errors.csv is written: the job waits it out and ends `done` with the
//!   whole report;
//! - an importer that finds a live claim exits 75 ("try later") and never fails the job.
//!
//! Importers are run as an executor runs them: again after exit code 75.

use crate::{common, services};
use bulk_import_core::{exit, ImportMode, JobStatus};
use common::{eventually, generated_csv, outcome, uninterrupted, wait_exit, Backend, TestEnv};
use services::{PrivateGarage, PrivatePostgres};
use std::{
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use uuid::Uuid;

/// Runs `cmd()` as an executor does: again after "try later" (75), until it exits with
/// anything else or `secs` pass. Returns the last exit status and how many runs it took.
async fn run_like_an_executor(cmd: impl Fn() -> Command, secs: u64) -> (ExitStatus, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0;
    loop {
        runs += 1;
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        let status = wait_exit(&mut cmd().spawn().unwrap(), left.max(1)).await;
        if status.code() != Some(exit::TEMPORARY) {
            return (status, runs);
        }
        assert!(
            Instant::now() < deadline,
            "still 'try later' at the deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every batch is committed (checkpoint at the end of the file) while the job is
/// still `processing`: the importer is in its pause before the report and `done`.
async fn wait_all_batches_committed(env: &TestEnv, id: Uuid) {
    eventually(
        Duration::from_secs(120),
        "every batch committed",
        || async {
            let job = env.job(id).await;
            assert_ne!(job.status(), JobStatus::Done, "the pause was missed");
            (job.status() == JobStatus::Processing
                && job.file_size > 0
                && job.checkpoint_offset == job.file_size)
                .then_some(())
        },
    )
    .await;
}

/// A private Postgres (to crash) with a migrated database, and a test environment on it.
async fn on_private_postgres(vars: &[(&str, &str)]) -> (PrivatePostgres, TestEnv) {
    let pg = PrivatePostgres::start();
    let url = pg.create_database().await;
    let mut all = vec![("DATABASE_URL", url.as_str())];
    all.extend_from_slice(vars);
    let env = TestEnv::with(Backend::Fs, &all).await;
    (pg, env)
}

#[tokio::test]
async fn postgres_crash_between_the_last_batch_and_done_still_ends_done_and_exact() {
    let file = generated_csv(3_000);
    let want = uninterrupted(&file).await;
    let (pg, env) = on_private_postgres(&[
        ("BATCH_SIZE", "100"),
        ("IMPORT_PAUSE_BEFORE_FINISH_MS", "3000"),
    ])
    .await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let mut child = env.importer_command(id).spawn().unwrap();
    wait_all_batches_committed(&env, id).await;
    pg.crash();
    pg.start_server(); // back within about a second
    let status = wait_exit(&mut child, 180).await;
    assert!(status.success(), "{status}");
    assert_eq!(outcome(&env, id).await, want);
}

#[tokio::test]
async fn postgres_down_for_30_s_after_the_last_batch_is_waited_out_then_done() {
    let file = generated_csv(2_000);
    let want = uninterrupted(&file).await;
    let (pg, env) = on_private_postgres(&[
        ("BATCH_SIZE", "100"),
        ("IMPORT_PAUSE_BEFORE_FINISH_MS", "2000"),
    ])
    .await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let mut child = env.importer_command(id).spawn().unwrap();
    wait_all_batches_committed(&env, id).await;
    pg.crash();
    // The outage itself (not a synchronisation): the importer must ride it out.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the importer waits for the database instead of failing the job"
    );
    pg.start_server();
    let status = wait_exit(&mut child, 180).await;
    assert!(status.success(), "retried, then done: {status}");
    let got = outcome(&env, id).await;
    assert_eq!(got, want);
    assert_eq!(env.job(id).await.attempts, 1, "one run");
}

/// Deterministic: the batches committed last "vanish" (as asynchronous commits do in a
/// crash) after the checkpoint reached the end of the file; `done` must not be written over
/// them — the importer resumes from the surviving checkpoint first.
#[tokio::test]
async fn batches_lost_after_the_last_one_are_redone_before_done() {
    let file = generated_csv(2_000);
    let want = uninterrupted(&file).await;
    let env = TestEnv::with(
        Backend::Fs,
        &[
            ("BATCH_SIZE", "100"),
            ("IMPORT_PAUSE_BEFORE_FINISH_MS", "3000"),
        ],
    )
    .await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let mut child = env.importer_command(id).spawn().unwrap();
    wait_all_batches_committed(&env, id).await;
    // Lose everything the job committed, as one atomic rollback of history.
    let mut tx = env.pool.begin().await.unwrap();
    for sql in ["DELETE FROM customers", "DELETE FROM import_errors"] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    sqlx::query(
        "UPDATE import_jobs SET processed_rows = 0, inserted_rows = 0, updated_rows = 0, \
         error_rows = 0, checkpoint_offset = 0, checkpoint_line = 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let status = wait_exit(&mut child, 120).await;
    assert!(status.success(), "{status}");
    assert_eq!(outcome(&env, id).await, want);
}

/// The second importer must be seen waiting on the first one's live claim before Postgres
/// goes down (its log says so), and the crash must hit the first one mid-import (it exits
/// "try later" at least once); otherwise the test would only prove a plain run.
#[tokio::test]
async fn postgres_restart_while_a_second_importer_waits_applies_every_batch_once() {
    let file = generated_csv(3_000);
    let want = uninterrupted(&file).await;
    let (pg, env) = on_private_postgres(&[
        ("BATCH_SIZE", "50"),
        ("IMPORT_SLOW_MS", "2"),
        ("JOB_LEASE_SECONDS", "6"),
    ])
    .await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let first = tokio::spawn(run_like_an_executor(
        {
            let env_cmd = env.importer_command(id);
            move || clone_command(&env_cmd)
        },
        240,
    ));
    eventually(Duration::from_secs(60), "progress", || async {
        (env.job(id).await.processed_rows >= 500).then_some(())
    })
    .await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let second = tokio::spawn(run_like_an_executor(
        {
            let env_cmd = env.importer_command(id);
            let log = log.reopen().unwrap();
            move || {
                let mut cmd = clone_command(&env_cmd);
                // "waiting" is logged at info.
                cmd.env("RUST_LOG", "info");
                cmd.stderr(log.try_clone().unwrap());
                cmd
            }
        },
        240,
    ));
    eventually(
        Duration::from_secs(60),
        "the second importer waiting on the live claim",
        || async {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            text.contains("another importer holds the job; waiting")
                .then_some(())
        },
    )
    .await;
    let before = env.job(id).await;
    assert_ne!(
        before.status(),
        JobStatus::Done,
        "the import ended before the crash"
    );
    pg.crash();
    pg.start_server();
    let (a, first_runs) = first.await.unwrap();
    let (b, second_runs) = second.await.unwrap();
    assert!(a.success() && b.success(), "{a} {b}");
    assert!(
        first_runs >= 2,
        "the crash did not interrupt the first importer (it ran {first_runs} time(s))"
    );
    assert!(second_runs >= 1);
    assert_eq!(outcome(&env, id).await, want);
}

/// `Command` is not `Clone`: the same program, arguments and environment again.
fn clone_command(cmd: &Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    c.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// A TCP proxy to the shared Postgres whose `stall` makes every connection open at that
/// moment half-open: nothing more is forwarded either way, nothing is closed. Connections
/// made afterwards work.
struct StallingProxy {
    port: u16,
    epoch: Arc<AtomicU64>,
}

impl StallingProxy {
    async fn start(target: &'static str) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = Arc::new(AtomicU64::new(0));
        let e = epoch.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let born = e.load(Ordering::SeqCst);
                let e = e.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(forward(cr, sw, born, e.clone()));
                    let down = tokio::spawn(forward(sr, cw, born, e));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        StallingProxy { port, epoch }
    }

    fn stall(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    born: u64,
    epoch: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if epoch.load(Ordering::SeqCst) != born {
            // Half-open from here on: keep both sockets, forward nothing, close nothing.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_half_open_postgres_connection_is_noticed_and_the_import_resumes() {
    let file = generated_csv(3_000);
    let want = uninterrupted(&file).await;
    let env = TestEnv::with(
        Backend::Fs,
        &[
            ("BATCH_SIZE", "100"),
            ("IMPORT_SLOW_MS", "1"),
            ("DB_STATEMENT_TIMEOUT_SECONDS", "3"),
        ],
    )
    .await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let proxy = StallingProxy::start("127.0.0.1:5432").await;
    let direct = env.vars["DATABASE_URL"].clone();
    let proxied = direct.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(direct, proxied, "the test database is on 127.0.0.1:5432");
    let mut cmd = env.importer_command(id);
    cmd.env("DATABASE_URL", &proxied).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    eventually(Duration::from_secs(60), "progress", || async {
        (env.job(id).await.processed_rows >= 600).then_some(())
    })
    .await;
    proxy.stall();
    let stalled_at = env.job(id).await.processed_rows;
    // Noticed within the client-side bound (statement timeout + 10 s), then resumed on new
    // connections: progress moves again well within a minute.
    eventually(
        Duration::from_secs(60),
        "progress after the stall",
        || async { (env.job(id).await.processed_rows > stalled_at).then_some(()) },
    )
    .await;
    let status = wait_exit(&mut child, 120).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("no answer from the database within"),
        "the stall was noticed by the client-side timeout:\n{stderr}"
    );
    assert_eq!(outcome(&env, id).await, want);
}

#[tokio::test]
async fn garage_down_while_the_report_is_written_then_back_ends_done_with_the_whole_report() {
    let mut garage = PrivateGarage::start();
    let vars = garage.vars();
    let mut overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.push(("BATCH_SIZE", "200"));
    overrides.push(("IMPORT_PAUSE_BEFORE_FINISH_MS", "2000"));
    let env = TestEnv::with(Backend::S3, &overrides).await;
    let file = generated_csv(2_000);
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let mut child = env.importer_command(id).spawn().unwrap();
    wait_all_batches_committed(&env, id).await;
    garage.stop();
    // Down through the end of the pause and the first attempts at the report.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(child.try_wait().unwrap().is_none(), "it waits for storage");
    garage.start_server();
    let status = wait_exit(&mut child, 120).await;
    assert!(status.success(), "{status}");
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Done);
    let report = env.report(&job).await;
    assert_eq!(report.len() as i64, 1 + job.error_rows, "the whole report");
    assert!(job.error_rows > 0);
}

#[tokio::test]
async fn an_importer_finding_a_live_claim_exits_75_and_never_fails_the_job() {
    let env = TestEnv::with(
        Backend::Fs,
        &[
            ("BATCH_SIZE", "20"),
            ("IMPORT_SLOW_MS", "5"),
            ("JOB_LEASE_SECONDS", "2"),
        ],
    )
    .await;
    let id = env.submit(&generated_csv(3_000), ImportMode::Upsert).await;
    let mut first = env.importer_command(id).spawn().unwrap();
    eventually(Duration::from_secs(60), "processing", || async {
        (env.job(id).await.processed_rows > 0).then_some(())
    })
    .await;
    // The first importer renews its claim: the second waits out a lease and more, then
    // says "try later".
    let second = wait_exit(&mut env.importer_command(id).spawn().unwrap(), 60).await;
    assert_eq!(second.code(), Some(exit::TEMPORARY));
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Processing, "{:?}", job.error);
    assert!(first.try_wait().unwrap().is_none(), "the first still runs");
    let status = wait_exit(&mut first, 120).await;
    assert!(status.success(), "{status}");
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!(job.processed_rows, 3_000);
    assert!(job.owner_id.is_none(), "the claim is cleared at the end");
}
