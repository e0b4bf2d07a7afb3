//! Typed settings read from the environment (the predecessor's variable names are kept):
//! the one settings layer of every binary. The variables and their defaults are declared in
//! `vars` ([`crate::vars::VARS`]) and read through [`Env`]; this module turns them into
//! typed values. A missing or invalid value stops the process with one line naming the
//! variable. `APP_ENV=prod` refuses the development JWT secret.

use crate::vars::{ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};
use std::{path::PathBuf, time::Duration};

/// The JWT secret used when none is configured; only accepted outside `prod`.
pub const DEV_JWT_SECRET: &str = "dev-only-insecure-jwt-secret-change-me";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Dev,
    Test,
    Prod,
}

impl AppEnv {
    /// Destructive helpers (truncating tables, wiping prefixes) run only in dev and test.
    pub fn allows_wipe(self) -> bool {
        matches!(self, AppEnv::Dev | AppEnv::Test)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    Local,
    Kubernetes,
}

#[derive(Debug, Clone)]
pub enum StorageSettings {
    Fs {
        dir: PathBuf,
    },
    S3 {
        endpoint: String,
        public_endpoint: String,
        access_key: String,
        secret_key: SecretString,
        bucket: String,
        region: String,
    },
}

#[derive(Debug, Clone)]
pub struct ImportTuning {
    /// Rows per transaction (COPY batch + checkpoint).
    pub batch_size: usize,
    /// Minimum rows between two published progress snapshots.
    pub progress_every: u64,
    /// Artificial delay per data row, for demos and progress tests.
    pub slow: Duration,
    /// `IMPORT_PAUSE_BEFORE_FINISH_MS`: a wait between the last batch and the report (and
    /// `done`), so that fault-injection tests can stop Postgres or storage exactly there.
    pub pause_before_finish: Duration,
    /// `MAX_DECOMPRESSED_BYTES`: the most a gzip upload may decompress to (default 2 GiB,
    /// what a plain upload may hold); past it the job fails `file_too_large`.
    pub max_decompressed_bytes: u64,
    /// `MAX_DECOMPRESSION_RATIO`: a gzip upload may decompress to at most this many times
    /// its stored size (default 100); past it the job fails `file_too_large`.
    pub max_decompression_ratio: u64,
    /// `MAX_STORED_ERROR_ROWS`: bad rows whose record (line, code, values) a job stores,
    /// the first in line order (default 100000); later ones are counted, not stored.
    pub max_stored_error_rows: i64,
    /// `IMPORTER_DB_POOL`: Postgres connections of one importer's pool (default 3); it opens
    /// one more of its own for its claim's advisory lock, and its loader two.
    pub db_pool: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub app_env: AppEnv,
    pub database_url: SecretString,
    pub redis_url: SecretString,
    /// `REDIS_KEY_PREFIX`: namespace of this deployment's Redis keys (login limiting).
    pub redis_key_prefix: String,
    pub storage: StorageSettings,
    /// Prepended to every object key, so that several deployments or test runs share a bucket.
    pub key_prefix: String,
    pub presign_ttl: Duration,
    pub jwt_secret: SecretString,
    pub jwt_alg: String,
    pub jwt_ttl: Duration,
    pub max_upload_bytes: u64,
    pub executor: Executor,
    pub import: ImportTuning,
    pub api: ApiSettings,
    /// `KUBE_NAMESPACE`: where ImportJobs live (`EXECUTOR=kubernetes`).
    pub kube_namespace: String,
    /// Abuse limits (`crate::limits`): their own struct and parser, kept apart.
    pub limits: crate::limits::Limits,
    /// `INSTANCE`: the release (`app.kubernetes.io/instance`) ImportJobs are labelled with, so
    /// that only the same release's operator runs them; unset: no label.
    pub instance: Option<String>,
    /// `DB_STATEMENT_TIMEOUT_SECONDS`: the server ends a statement, or a transaction left
    /// idle, after this long; clients bound their own waits on it too.
    pub db_statement_timeout: Duration,
    /// `JOB_LEASE_SECONDS`: how long an importer's claim on a job holds without renewal
    /// (renewed with every batch and every third of it); a successor of a killed importer
    /// whose death it cannot see waits this long.
    pub job_lease: Duration,
    /// `JOB_ACTIVE_DEADLINE_SECONDS`: longest an import may run from its first start, on
    /// Kubernetes (the Job's `activeDeadlineSeconds`) and in local mode alike.
    pub job_active_deadline: Duration,
    /// `MAX_ACTIVE_IMPORTS_PER_ORG`: importers of one organization running at once, on
    /// Kubernetes and in local mode (`crate::admission`); 0: no limit of its own.
    pub max_active_imports_per_org: usize,
}

/// Settings only the API uses.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `BIND_ADDR`: the API's listen address.
    pub bind_addr: String,
    /// `PUBLIC_API_URL`: base of URLs the API hands out (report downloads with `STORAGE=fs`);
    /// by default `http://` + `BIND_ADDR` (required with `APP_ENV=prod`); never the
    /// request's `Host`.
    pub public_url: Option<String>,
    /// `LOCAL_MAX_CONCURRENT_IMPORTS`: importer processes run at once by the local executor.
    pub local_max_concurrent: usize,
    /// `LOCAL_MAX_ATTEMPTS`: runs of the importer per job before the job is failed.
    pub local_max_attempts: u32,
    /// `IMPORTER_BIN`: the importer executable; by default `bulk-import-importer` next to
    /// the API's own executable, else on `PATH`.
    pub importer_bin: Option<PathBuf>,
    /// `UPLOAD_IDLE_TIMEOUT_SECONDS`: an upload that sends nothing for this long is cut (408).
    pub upload_idle_timeout: Duration,
    /// `SWEEP_INTERVAL_SECONDS`: how often the API's sweeper runs (unclaimed jobs, stale
    /// reservations, abandoned multipart uploads).
    pub sweep_interval: Duration,
    /// `SIGNUP`: who may create an account.
    pub signup: Signup,
    /// `INVITATION_TTL_SECONDS`: how long an invitation token is valid.
    pub invitation_ttl: Duration,
    /// `INVITATIONS_MAX_PENDING`: unused, unexpired invitations per organization.
    pub invitations_max_pending: i64,
    /// `EXPORTS_MAX_CONCURRENT`: customer exports streaming at once in one API process (each
    /// holds a database connection while its client reads).
    pub exports_max_concurrent: usize,
}

/// `SIGNUP`: `open` (a sign-up without an invitation creates a new organization) or
/// `invitation` (only invited people register).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signup {
    Open,
    Invitation,
}

fn app_env(env: Env) -> Result<AppEnv, ConfigError> {
    match env.value("APP_ENV").as_str() {
        "dev" => Ok(AppEnv::Dev),
        "test" => Ok(AppEnv::Test),
        "prod" => Ok(AppEnv::Prod),
        other => Err(ConfigError {
            var: "APP_ENV",
            reason: format!("invalid value {other:?}: expected dev, test or prod"),
        }),
    }
}

/// The storage backend and the deployment's key prefix.
fn storage(env: Env) -> Result<(StorageSettings, String), ConfigError> {
    let kind = env.get("STORAGE").unwrap_or_else(|| {
        if env.get("S3_ENDPOINT_URL").is_some() {
            "s3"
        } else {
            "fs"
        }
        .into()
    });
    let storage = match kind.as_str() {
        "fs" => StorageSettings::Fs {
            dir: env.value("STORAGE_DIR").into(),
        },
        "s3" => {
            let endpoint = env.required("S3_ENDPOINT_URL", "when STORAGE=s3")?;
            StorageSettings::S3 {
                public_endpoint: env.get_or("S3_PUBLIC_ENDPOINT_URL", &endpoint),
                endpoint,
                access_key: env.required("S3_ACCESS_KEY", "when STORAGE=s3")?,
                secret_key: env.required("S3_SECRET_KEY", "when STORAGE=s3")?.into(),
                bucket: env.value("S3_BUCKET"),
                region: env.value("S3_REGION"),
            }
        }
        other => {
            return Err(ConfigError {
                var: "STORAGE",
                reason: format!("invalid value {other:?}: expected s3 or fs"),
            })
        }
    };
    let key_prefix = env.get("STORAGE_KEY_PREFIX").unwrap_or_default();
    if key_prefix.starts_with('/') || key_prefix.contains("..") {
        return Err(ConfigError {
            var: "STORAGE_KEY_PREFIX",
            reason: "must be relative and must not contain '..'".into(),
        });
    }
    Ok((storage, key_prefix))
}

/// The token secret (refused when weak in prod) and algorithm.
fn jwt(env: Env, app_env: AppEnv) -> Result<(SecretString, String), ConfigError> {
    let secret = env.get("JWT_SECRET");
    if app_env == AppEnv::Prod {
        match &secret {
            None => {
                return Err(ConfigError {
                    var: "JWT_SECRET",
                    reason: "is required when APP_ENV=prod".into(),
                })
            }
            Some(s) if s == DEV_JWT_SECRET || s.len() < 32 => {
                return Err(ConfigError {
                    var: "JWT_SECRET",
                    reason: "must be at least 32 characters and not the development default when APP_ENV=prod".into(),
                })
            }
            Some(_) => {}
        }
    }
    let alg = env.value("JWT_ALG");
    if !matches!(alg.as_str(), "HS256" | "HS384" | "HS512") {
        return Err(ConfigError {
            var: "JWT_ALG",
            reason: format!("invalid value {alg:?}: expected HS256, HS384 or HS512"),
        });
    }
    Ok((secret.unwrap_or_else(|| DEV_JWT_SECRET.into()).into(), alg))
}

fn executor(env: Env) -> Result<Executor, ConfigError> {
    match env.value("EXECUTOR").as_str() {
        "local" => Ok(Executor::Local),
        "kubernetes" => Ok(Executor::Kubernetes),
        other => Err(ConfigError {
            var: "EXECUTOR",
            reason: format!("invalid value {other:?}: expected local or kubernetes"),
        }),
    }
}

impl ApiSettings {
    fn from_env(env: Env) -> Result<ApiSettings, ConfigError> {
        Ok(ApiSettings {
            bind_addr: env.value("BIND_ADDR"),
            public_url: env
                .get("PUBLIC_API_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            local_max_concurrent: env.positive("LOCAL_MAX_CONCURRENT_IMPORTS")? as usize,
            local_max_attempts: env.positive("LOCAL_MAX_ATTEMPTS")? as u32,
            importer_bin: env.get("IMPORTER_BIN").map(PathBuf::from),
            upload_idle_timeout: env.seconds("UPLOAD_IDLE_TIMEOUT_SECONDS")?,
            sweep_interval: env.seconds("SWEEP_INTERVAL_SECONDS")?,
            signup: match env.value("SIGNUP").as_str() {
                "open" => Signup::Open,
                "invitation" => Signup::Invitation,
                other => {
                    return Err(ConfigError {
                        var: "SIGNUP",
                        reason: format!("invalid value {other:?}: expected open or invitation"),
                    })
                }
            },
            invitation_ttl: env.seconds("INVITATION_TTL_SECONDS")?,
            invitations_max_pending: env.positive("INVITATIONS_MAX_PENDING")? as i64,
            exports_max_concurrent: env.positive("EXPORTS_MAX_CONCURRENT")? as usize,
        })
    }
}

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        Settings::parse(lookup, true)
    }

    /// For the binaries that never sign or verify a token (the importer, the operator):
    /// `JWT_SECRET` is neither required nor read, so their pods need not be given it.
    pub fn from_env_without_jwt() -> Result<Settings, ConfigError> {
        Settings::from_lookup_without_jwt(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup_without_jwt(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        Settings::parse(lookup, false)
    }

    fn parse(
        lookup: &dyn Fn(&str) -> Option<String>,
        reads_jwt: bool,
    ) -> Result<Settings, ConfigError> {
        let env = Env::new(lookup);
        let app_env = app_env(env)?;
        let (storage, key_prefix) = storage(env)?;
        let (jwt_secret, jwt_alg) = if reads_jwt {
            jwt(env, app_env)?
        } else {
            // Never a usable signing key: nothing in these binaries signs.
            (SecretString::from(String::new()), "HS256".to_string())
        };
        Ok(Settings {
            app_env,
            database_url: env.value("DATABASE_URL").into(),
            redis_url: env.value("REDIS_URL").into(),
            redis_key_prefix: env.value("REDIS_KEY_PREFIX"),
            storage,
            key_prefix,
            presign_ttl: env.seconds("S3_PRESIGN_TTL_SECONDS")?,
            jwt_secret,
            jwt_alg,
            jwt_ttl: env.seconds("JWT_ACCESS_TTL_SECONDS")?,
            max_upload_bytes: env.positive("MAX_UPLOAD_BYTES")?,
            executor: executor(env)?,
            import: ImportTuning {
                batch_size: env.positive("BATCH_SIZE")? as usize,
                progress_every: env.positive("PROGRESS_EVERY")?,
                slow: Duration::from_millis(env.parse("IMPORT_SLOW_MS")?),
                pause_before_finish: Duration::from_millis(
                    env.parse("IMPORT_PAUSE_BEFORE_FINISH_MS")?,
                ),
                max_decompressed_bytes: env.positive("MAX_DECOMPRESSED_BYTES")?,
                max_decompression_ratio: env.positive("MAX_DECOMPRESSION_RATIO")?,
                max_stored_error_rows: env.positive("MAX_STORED_ERROR_ROWS")?.min(i64::MAX as u64)
                    as i64,
                db_pool: env.positive("IMPORTER_DB_POOL")?.min(u32::MAX as u64) as u32,
            },
            kube_namespace: env.value("KUBE_NAMESPACE"),
            db_statement_timeout: env.seconds("DB_STATEMENT_TIMEOUT_SECONDS")?,
            job_lease: env.seconds("JOB_LEASE_SECONDS")?,
            job_active_deadline: env.seconds("JOB_ACTIVE_DEADLINE_SECONDS")?,
            max_active_imports_per_org: env.parse("MAX_ACTIVE_IMPORTS_PER_ORG")?,
            limits: crate::limits::Limits::from_lookup(lookup)?,
            instance: env.get("INSTANCE"),
            api: ApiSettings::from_env(env)?,
        })
    }

    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub fn redis_url(&self) -> &str {
        self.redis_url.expose_secret()
    }

    /// A Postgres pool with this deployment's timeouts (`crate::db::connect_options`).
    pub async fn pool(&self, max_connections: u32) -> Result<sqlx::PgPool, sqlx::Error> {
        crate::db::connect_with(
            self.database_url(),
            max_connections,
            self.db_statement_timeout,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&move |k| map.get(k).cloned())
    }

    /// Every variable read is declared (with its default in `--help`), and every variable
    /// declared for the API and the importer is read by `Settings` (the operator's own are
    /// read by its config).
    #[test]
    fn every_variable_read_is_declared_and_every_declared_one_is_read() {
        let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
        let lookup = |k: &str| {
            read.lock().unwrap().insert(k.to_string());
            match k {
                "STORAGE" => Some("s3".to_string()),
                "S3_ENDPOINT_URL" | "S3_ACCESS_KEY" | "S3_SECRET_KEY" => Some("x".into()),
                _ => None,
            }
        };
        Settings::from_lookup(&lookup).unwrap();
        Settings::from_lookup(&|k| {
            read.lock().unwrap().insert(k.to_string());
            None
        })
        .unwrap();
        let read = read.into_inner().unwrap();
        for name in &read {
            assert!(var(name).is_some(), "{name} is read but not declared");
        }
        for v in VARS {
            let settings_var = v.used_by.iter().any(|c| *c != Component::Operator)
                && !matches!(v.name, "LOG_FORMAT" | "RUST_LOG");
            if settings_var {
                assert!(
                    read.contains(v.name),
                    "{} is declared but never read",
                    v.name
                );
            }
        }
        let help = env_help(Component::Api);
        assert!(help.contains("DATABASE_URL") && help.contains("[default: 5000]"));
        assert!(!help.contains("IMPORTER_IMAGE"));
    }

    /// The defaults the parsers use are the ones `--help` prints: both read `VARS`. Here
    /// they are compared with the configuration tables of the docs (`| variable | default |`
    /// tables in README.md and docs/*.md): every declared default value is documented, and
    /// documented as declared.
    #[test]
    fn the_documented_defaults_are_the_declared_ones() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut pages = vec![root.join("README.md")];
        let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        docs.sort();
        pages.extend(
            docs.into_iter()
                .filter(|p| p.extension() == Some("md".as_ref())),
        );
        let mut documented: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
        for page in &pages {
            let text = std::fs::read_to_string(page).unwrap();
            let where_ = page.strip_prefix(&root).unwrap().display().to_string();
            for (var, default) in documented_defaults(&text) {
                documented
                    .entry(var)
                    .or_default()
                    .push((where_.clone(), default));
            }
        }
        let mut wrong = Vec::new();
        for v in VARS {
            let VarDefault::Value(declared) = v.default else {
                continue;
            };
            let Some(rows) = documented.get(v.name) else {
                wrong.push(format!("{}: not in any configuration table", v.name));
                continue;
            };
            for (page, default) in rows {
                if default.as_deref() != Some(declared) {
                    wrong.push(format!(
                        "{}: {page} says {default:?}, vars::VARS {declared:?}",
                        v.name
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(
            documented.contains_key("BATCH_SIZE") && documented.contains_key("IMPORTER_IMAGE"),
            "the tables were found: {:?}",
            documented.keys().collect::<Vec<_>>()
        );
    }

    /// `(variable, default)` from the rows of `| variable | default | … |` tables: the
    /// variables are the code spans of the first cell, their defaults the code spans of the
    /// second (one each, in order; one for a single variable).
    fn documented_defaults(markdown: &str) -> Vec<(String, Option<String>)> {
        fn code_spans(cell: &str) -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        }
        let mut out = Vec::new();
        let mut in_table = false;
        for line in markdown.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if !line.starts_with('|') || cells.len() < 4 {
                in_table = false;
                continue;
            }
            if cells[1].ends_with("variable") && cells[2] == "default" {
                in_table = true;
                continue;
            }
            if !in_table || cells[1].starts_with("---") {
                continue;
            }
            let vars = code_spans(cells[1]);
            let defaults = code_spans(cells[2]);
            for (i, var) in vars.iter().enumerate() {
                let default = if vars.len() == 1 {
                    defaults.first()
                } else {
                    defaults.get(i).filter(|_| defaults.len() == vars.len())
                };
                out.push((var.clone(), default.cloned()));
            }
        }
        out
    }

    #[test]
    fn every_declared_default_value_parses() {
        // `Env::parse` panics on a declared default that does not parse.
        let s = load(&[]).unwrap();
        assert_eq!(s.import.progress_every, 1000);
        assert_eq!(s.max_upload_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(
            s.limits.device_cookie_ttl,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(s.api.bind_addr, "127.0.0.1:8000");
        for v in VARS {
            if let VarDefault::Value(declared) = v.default {
                assert!(
                    !declared.is_empty() && !declared.contains(' '),
                    "{}",
                    v.name
                );
            }
        }
    }

    #[test]
    fn defaults_are_local() {
        let s = load(&[]).unwrap();
        assert_eq!(s.app_env, AppEnv::Dev);
        assert!(matches!(s.storage, StorageSettings::Fs { .. }));
        assert_eq!(s.import.batch_size, 5000);
        assert_eq!(s.executor, Executor::Local);
    }

    #[test]
    fn s3_is_chosen_when_an_endpoint_is_set_and_needs_keys() {
        let err = load(&[("S3_ENDPOINT_URL", "http://127.0.0.1:3900")]).unwrap_err();
        assert_eq!(err.var, "S3_ACCESS_KEY");
        let s = load(&[
            ("S3_ENDPOINT_URL", "http://127.0.0.1:3900"),
            ("S3_ACCESS_KEY", "k"),
            ("S3_SECRET_KEY", "s"),
        ])
        .unwrap();
        match s.storage {
            StorageSettings::S3 {
                public_endpoint, ..
            } => {
                assert_eq!(public_endpoint, "http://127.0.0.1:3900")
            }
            _ => panic!("expected s3"),
        }
    }

    #[test]
    fn invalid_numbers_name_the_variable() {
        assert_eq!(
            load(&[("BATCH_SIZE", "lots")]).unwrap_err().var,
            "BATCH_SIZE"
        );
        assert_eq!(load(&[("BATCH_SIZE", "0")]).unwrap_err().var, "BATCH_SIZE");
        assert_eq!(load(&[("JWT_ALG", "none")]).unwrap_err().var, "JWT_ALG");
        assert_eq!(load(&[("STORAGE", "ftp")]).unwrap_err().var, "STORAGE");
        for var in [
            "MAX_DECOMPRESSED_BYTES",
            "MAX_DECOMPRESSION_RATIO",
            "MAX_STORED_ERROR_ROWS",
        ] {
            assert_eq!(load(&[(var, "0")]).unwrap_err().var, var);
            assert_eq!(load(&[(var, "-1")]).unwrap_err().var, var);
        }
    }

    #[test]
    fn importer_bounds_have_their_defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(s.import.max_decompressed_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(s.import.max_decompression_ratio, 100);
        assert_eq!(s.import.max_stored_error_rows, 100_000);
    }

    #[test]
    fn binaries_that_never_sign_do_not_need_the_jwt_secret() {
        let map: HashMap<String, String> = [("APP_ENV", "prod")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s =
            Settings::parse(&move |k| map.get(k).cloned(), false).expect("no JWT_SECRET needed");
        assert_eq!(s.jwt_secret.expose_secret(), "", "never a usable key");
        assert_eq!(load(&[("APP_ENV", "prod")]).unwrap_err().var, "JWT_SECRET");
    }

    #[test]
    fn prod_refuses_default_or_short_jwt_secret() {
        assert_eq!(load(&[("APP_ENV", "prod")]).unwrap_err().var, "JWT_SECRET");
        assert_eq!(
            load(&[("APP_ENV", "prod"), ("JWT_SECRET", DEV_JWT_SECRET)])
                .unwrap_err()
                .var,
            "JWT_SECRET"
        );
        assert_eq!(
            load(&[("APP_ENV", "prod"), ("JWT_SECRET", "short")])
                .unwrap_err()
                .var,
            "JWT_SECRET"
        );
        let long = "x".repeat(40);
        assert!(load(&[("APP_ENV", "prod"), ("JWT_SECRET", &long)]).is_ok());
    }
}
