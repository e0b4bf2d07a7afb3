//! Test harness: each test gets its own database (`bi_test_<uuid>`, migrated) and its own
//! key prefix in the bucket (or its own directory), against the real Postgres, Redis and
//! Garage that `scripts/services.sh` starts (`scripts/test.sh` exports their settings).

#![allow(dead_code)]

use bulk_import_core::{db, job::fetch_job, ImportMode, Job, Settings, Storage};
use bulk_import_importer::{run_job, submit, Outcome};
use sqlx::{Connection, PgConnection, PgPool};
use std::{collections::HashMap, path::PathBuf, process::Command, time::Duration};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    S3,
    Fs,
}

pub struct TestEnv {
    pub vars: HashMap<String, String>,
    pub settings: Settings,
    pub pool: PgPool,
    pub storage: Storage,
    pub db_name: String,
    _dir: tempfile::TempDir,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test.sh (or `source .local/env` after scripts/services.sh)")
    })
}

/// `postgres://…/db?params` with the database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base.rfind('/').expect("DATABASE_URL has a path");
    format!("{}/{db}{query}", &base[..cut])
}

impl TestEnv {
    pub async fn new(backend: Backend) -> TestEnv {
        TestEnv::with(backend, &[]).await
    }

    pub async fn with(backend: Backend, overrides: &[(&str, &str)]) -> TestEnv {
        let admin_url = required("DATABASE_URL");
        let db_name = format!("bi_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&with_database(&admin_url, "postgres"))
            .await
            .expect("connect to Postgres");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        let url = with_database(&admin_url, &db_name);
        let pool = db::connect(&url, 4).await.unwrap();
        db::MIGRATOR.run(&pool).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("APP_ENV".into(), "test".into());
        vars.insert("DATABASE_URL".into(), url);
        vars.insert(
            "REDIS_URL".into(),
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
        );
        vars.insert(
            "STORAGE_KEY_PREFIX".into(),
            format!("test-{}/", Uuid::new_v4().simple()),
        );
        match backend {
            Backend::S3 => {
                vars.insert("STORAGE".into(), "s3".into());
                for v in [
                    "S3_ENDPOINT_URL",
                    "S3_ACCESS_KEY",
                    "S3_SECRET_KEY",
                    "S3_BUCKET",
                ] {
                    vars.insert(v.into(), required(v));
                }
                for v in ["S3_PUBLIC_ENDPOINT_URL", "S3_REGION"] {
                    if let Ok(val) = std::env::var(v) {
                        vars.insert(v.into(), val);
                    }
                }
            }
            Backend::Fs => {
                vars.insert("STORAGE".into(), "fs".into());
                vars.insert(
                    "STORAGE_DIR".into(),
                    dir.path().join("storage").display().to_string(),
                );
            }
        }
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let lookup = vars.clone();
        let settings =
            Settings::from_lookup(&move |k| lookup.get(k).cloned()).expect("test settings");
        let storage = Storage::from_settings(&settings).unwrap();
        TestEnv {
            vars,
            settings,
            pool,
            storage,
            db_name,
            _dir: dir,
        }
    }

    /// Uploads `csv` and creates a pending job for it.
    pub async fn submit(&self, csv: &[u8], mode: ImportMode) -> Uuid {
        let path: PathBuf = self._dir.path().join(format!("{}.csv", Uuid::new_v4()));
        tokio::fs::write(&path, csv).await.unwrap();
        let id = submit::submit(&self.settings, &self.pool, &path, mode, "owner@example.com")
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

    pub async fn import(&self, csv: &[u8], mode: ImportMode) -> (Job, Outcome) {
        let id = self.submit(csv, mode).await;
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

    pub async fn job(&self, id: Uuid) -> Job {
        fetch_job(&self.pool, id)
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
    pub async fn report(&self, job: &Job) -> Vec<Vec<String>> {
        let key = job.report_object.as_ref().expect("the job has a report");
        let bytes = self.storage.read_to_vec(key).await.unwrap();
        parse_csv(&bytes)
    }

    pub async fn report_bytes(&self, job: &Job) -> Vec<u8> {
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
