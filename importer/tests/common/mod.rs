//! Test harness: each test gets its own database (`bi_test_<uuid>`, migrated) and its own
//! key prefix in the bucket (or its own directory), against the real Postgres, Redis and
//! Garage that `scripts/services.sh` starts (`scripts/test.sh` exports their settings).

#![allow(dead_code)]

pub use bulk_import_core::testing::Backend;
use bulk_import_core::{
    db,
    options::ImportOptions,
    repo,
    testing::{settings_from, test_vars, TestVars},
    ImportMode, JobRow, JobStatus, Settings, Storage,
};
use bulk_import_importer::{local_file, run_job, Outcome};
use sqlx::PgPool;
use std::{path::PathBuf, process::Command, time::Duration};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TestEnv {
    pub vars: TestVars,
    pub settings: Settings,
    pub pool: PgPool,
    pub storage: Storage,
    /// The organization of the jobs `submit` creates (that of `OWNER`).
    pub org: i32,
    _dir: tempfile::TempDir,
}

/// The account `TestEnv::submit` submits jobs as.
pub const OWNER: &str = "owner@example.com";

impl TestEnv {
    pub async fn new(backend: Backend) -> TestEnv {
        TestEnv::with(backend, &[]).await
    }

    pub async fn with(backend: Backend, overrides: &[(&str, &str)]) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = test_vars(backend, dir.path()).await;
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let settings = settings_from(&vars);
        let pool = db::connect(settings.database_url(), 4).await.unwrap();
        let storage = Storage::from_settings(&settings).unwrap();
        let (_, org) = bulk_import_core::accounts::service_account(&pool, OWNER)
            .await
            .unwrap();
        TestEnv {
            vars,
            settings,
            pool,
            storage,
            org,
            _dir: dir,
        }
    }

    /// Uploads `csv` and creates a pending job for it.
    pub async fn submit(&self, csv: &[u8], mode: ImportMode) -> Uuid {
        self.submit_with(csv, mode, &ImportOptions::default()).await
    }

    /// `submit` with options.
    pub async fn submit_with(&self, csv: &[u8], mode: ImportMode, options: &ImportOptions) -> Uuid {
        let path: PathBuf = self._dir.path().join(format!("{}.csv", Uuid::new_v4()));
        tokio::fs::write(&path, csv).await.unwrap();
        let id =
            local_file::create_job_with(&self.settings, &self.pool, &path, mode, OWNER, options)
                .await
                .unwrap();
        tokio::fs::remove_file(&path).await.ok();
        id
    }

    /// Runs the importer in-process to the end.
    pub async fn run(&self, job_id: Uuid) -> Outcome {
        run_job(&self.settings, job_id, CancellationToken::new())
            .await
            .expect("importer ran")
    }

    pub async fn import(&self, csv: &[u8], mode: ImportMode) -> (JobRow, Outcome) {
        self.import_with(csv, mode, &ImportOptions::default()).await
    }

    pub async fn import_with(
        &self,
        csv: &[u8],
        mode: ImportMode,
        options: &ImportOptions,
    ) -> (JobRow, Outcome) {
        let id = self.submit_with(csv, mode, options).await;
        let outcome = self.run(id).await;
        (self.job(id).await, outcome)
    }

    /// The real importer binary, with this environment.
    pub fn importer_command(&self, job_id: Uuid) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulk-import-importer"));
        cmd.arg("--job-id").arg(job_id.to_string());
        cmd.env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("RUST_LOG", "warn");
        cmd.envs(&self.vars);
        cmd
    }

    pub async fn job(&self, id: Uuid) -> JobRow {
        repo::get(&self.pool, id)
            .await
            .unwrap()
            .expect("job exists")
    }

    /// Every customer as (email, first_name, last_name, phone, city), by email.
    pub async fn customers(&self) -> Vec<Customer> {
        sqlx::query_as(
            "SELECT email, first_name, last_name, phone, city FROM customers ORDER BY email",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The job's errors.csv as records (header included), read back from storage.
    pub async fn report(&self, job: &JobRow) -> Vec<Vec<String>> {
        let key = job.report_object.as_ref().expect("the job has a report");
        let bytes = self.storage.read_to_vec(key).await.unwrap();
        parse_csv(&bytes)
    }

    pub async fn report_bytes(&self, job: &JobRow) -> Vec<u8> {
        self.storage
            .read_to_vec(job.report_object.as_ref().expect("report"))
            .await
            .unwrap()
    }
}

pub type Customer = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes)
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Polls `f` until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A deterministic CSV of `n` data rows: mostly valid, with every ~50th row invalid and
/// every ~40th an earlier email repeated (case changed), so both error paths are exercised.
pub fn generated_csv(n: usize) -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..n {
        if i % 50 == 49 {
            out.push_str(&format!("not-an-email-{i},Bad,Row,,\n"));
        } else if i % 40 == 39 {
            out.push_str(&format!(
                "USER{}@Example.com,Again,Dup,+1555{i},Dup City\n",
                i / 2
            ));
        } else {
            out.push_str(&format!(
                "user{i}@example.com,First{i},\"Last, {i}\",+1555{i:07},City {}\n",
                i % 97
            ));
        }
    }
    out.into_bytes()
}

/// The customers, counters and errors.csv of a job: what must not change under faults.
#[derive(Debug, PartialEq)]
pub struct JobResult {
    pub counters: (JobStatus, i64, i64, i64, i64),
    pub customers: Vec<Customer>,
    pub report: Vec<Vec<String>>,
}

pub async fn outcome(env: &TestEnv, id: Uuid) -> JobResult {
    let job = env.job(id).await;
    JobResult {
        counters: (
            job.status(),
            job.processed_rows,
            job.inserted_rows,
            job.updated_rows,
            job.error_rows,
        ),
        customers: env.customers().await,
        report: env.report(&job).await,
    }
}

/// The same file imported with nothing going wrong, on the shared services.
pub async fn uninterrupted(file: &[u8]) -> JobResult {
    let env = TestEnv::new(Backend::Fs).await;
    let id = env.submit(file, ImportMode::InsertOnly).await;
    assert!(env.importer_command(id).status().unwrap().success());
    outcome(&env, id).await
}

/// Polls a child importer until it exits, failing after `secs`.
pub async fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the importer did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
