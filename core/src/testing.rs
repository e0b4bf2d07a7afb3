//! Test support (feature `test-support`): each test gets its own migrated database
//! (`bi_test_<uuid>`, dropped when the test ends) and its own key prefix in the bucket (or its own directory), against
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

/// A test's own database (`bi_test_<uuid>`, migrated), dropped with this guard at the end
/// of the test. A failing test's database is kept for a look (the next `scripts/test.sh`
/// drops it).
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::ops::Deref for TestDatabase {
    type Target = str;

    fn deref(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the failed test's database is kept: {}", self.url);
            return;
        }
        // Drop cannot await, and the test's runtime may be a single thread that is running
        // this very drop: a runtime of its own, on a thread of its own. `WITH (FORCE)` ends
        // the sessions still open on the database (the test's pools, a child process) first.
        let admin_url = with_database(&required_env("DATABASE_URL"), "postgres");
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    sqlx::query(&sql).execute(&mut admin).await?;
                    admin.close().await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test database {} not dropped: {dropped:?}", self.name);
        }
    }
}

/// Creates and migrates a fresh database, dropped with the returned guard.
pub async fn create_database() -> TestDatabase {
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
    let db = TestDatabase {
        url: with_database(&admin_url, &name),
        name,
    };
    let pool = db::connect(db.url(), 1)
        .await
        .expect("connect to the test database");
    db::MIGRATOR
        .run(&pool)
        .await
        .expect("migrate the test database");
    pool.close().await;
    db
}

/// The environment of one test ([`test_vars`]); its database is dropped with it.
#[derive(Debug)]
pub struct TestVars {
    vars: HashMap<String, String>,
    _database: TestDatabase,
}

impl std::ops::Deref for TestVars {
    type Target = HashMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.vars
    }
}

impl std::ops::DerefMut for TestVars {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.vars
    }
}

impl<'a> IntoIterator for &'a TestVars {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::hash_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.vars.iter()
    }
}

/// The environment of one test: its database, Redis, and storage under its own prefix
/// (`dir` holds the files of the directory backend). Keep it for as long as the test runs:
/// its database is dropped with it.
pub async fn test_vars(backend: Backend, dir: &Path) -> TestVars {
    let database = create_database().await;
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("APP_ENV".into(), "test".into());
    vars.insert("DATABASE_URL".into(), database.url().to_string());
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
    // Tests register many users from 127.0.0.1; `api/tests/it/abuse.rs` tests the default limit.
    vars.insert("REGISTER_MAX_PER_ADDR".into(), "100000".into());
    // Likewise every connection: `api/tests/it/bounds.rs` tests the per-address connection cap.
    vars.insert("MAX_CONNECTIONS_PER_ADDR".into(), "100000".into());
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
    TestVars {
        vars,
        _database: database,
    }
}

pub fn settings_from(vars: &HashMap<String, String>) -> Settings {
    Settings::from_lookup(&|k| vars.get(k).cloned()).expect("test settings")
}

/// Every object key under this test's prefix (S3 listing, or a directory walk).
pub async fn list_objects(storage: &Storage) -> Vec<String> {
    storage.list("").await.expect("list objects")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exists(name: &str) -> bool {
        let admin_url = with_database(&required_env("DATABASE_URL"), "postgres");
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap()
    }

    /// On the test runtime's one thread, with a session still open on the database (a test's
    /// pool usually is when the test ends).
    #[tokio::test]
    async fn a_test_database_is_dropped_with_its_guard_while_still_connected() {
        let database = create_database().await;
        let name = database.name.clone();
        assert!(exists(&name).await);
        let pool = db::connect(database.url(), 1).await.unwrap();
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();

        drop(database);
        assert!(!exists(&name).await, "{name} is still there");
        assert!(
            sqlx::query("SELECT 1").execute(&pool).await.is_err(),
            "its session was ended"
        );
    }
}
