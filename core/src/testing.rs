//! Test support (feature `test-support`): each test gets its own migrated database
//! (`bi_test_<uuid>`) and its own key prefix in the bucket (or its own directory), against
//! the real Postgres, Redis and Garage that `scripts/services.sh` starts and
//! `scripts/test.sh` describes in the environment.

use crate::{db, Settings, Storage};
use sqlx::{Connection, PgConnection};
use std::{collections::HashMap, path::Path};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    S3,
    Fs,
}

pub fn required_env(var: &str) -> String {
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

/// Creates and migrates a fresh database; returns its URL. `scripts/test.sh` drops the
/// leftovers of earlier runs before the next one.
pub async fn create_database() -> String {
    let admin_url = required_env("DATABASE_URL");
    let name = format!("bi_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&with_database(&admin_url, "postgres"))
        .await
        .expect("connect to Postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    let url = with_database(&admin_url, &name);
    let pool = db::connect(&url, 1)
        .await
        .expect("connect to the test database");
    db::MIGRATOR
        .run(&pool)
        .await
        .expect("migrate the test database");
    pool.close().await;
    url
}

/// The environment of one test: its database, Redis, and storage under its own prefix
/// (`dir` holds the files of the directory backend).
pub async fn test_vars(backend: Backend, dir: &Path) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("APP_ENV".into(), "test".into());
    vars.insert("DATABASE_URL".into(), create_database().await);
    vars.insert(
        "REDIS_URL".into(),
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
    );
    vars.insert(
        "STORAGE_KEY_PREFIX".into(),
        format!("test-{}/", Uuid::new_v4().simple()),
    );
    // Login limiting counts per client address, and every test connects from 127.0.0.1.
    vars.insert(
        "REDIS_KEY_PREFIX".into(),
        format!("test-{}:", Uuid::new_v4().simple()),
    );
    // Tests register many users from 127.0.0.1; `api/tests/abuse.rs` tests the default limit.
    vars.insert("REGISTER_MAX_PER_ADDR".into(), "100000".into());
    match backend {
        Backend::S3 => {
            vars.insert("STORAGE".into(), "s3".into());
            for v in [
                "S3_ENDPOINT_URL",
                "S3_ACCESS_KEY",
                "S3_SECRET_KEY",
                "S3_BUCKET",
            ] {
                vars.insert(v.into(), required_env(v));
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
                dir.join("storage").display().to_string(),
            );
        }
    }
    vars
}

pub fn settings_from(vars: &HashMap<String, String>) -> Settings {
    Settings::from_lookup(&|k| vars.get(k).cloned()).expect("test settings")
}

/// Every object key under this test's prefix (S3 listing, or a directory walk).
pub async fn list_objects(storage: &Storage) -> Vec<String> {
    storage.list("").await.expect("list objects")
}
