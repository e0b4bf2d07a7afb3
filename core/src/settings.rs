//! Typed settings read from the environment (the predecessor's variable names are kept).
//! Every variable has a documented default for local use; a missing or invalid one stops the
//! process with one line naming it. `APP_ENV=prod` refuses the development JWT secret.

use secrecy::{ExposeSecret, SecretString};
use std::{path::PathBuf, str::FromStr, time::Duration};

/// The JWT secret used when none is configured; only accepted outside `prod`.
pub const DEV_JWT_SECRET: &str = "dev-only-insecure-jwt-secret-change-me";

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

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
    /// `KUBE_NAMESPACE`: where ImportJobs live (`EXECUTOR=kubernetes`), default `default`.
    pub kube_namespace: String,
    /// Abuse limits (`crate::limits`): their own struct and parser, kept apart.
    pub limits: crate::limits::Limits,
    /// `INSTANCE`: the release (`app.kubernetes.io/instance`) ImportJobs are labelled with, so
    /// that only the same release's operator runs them; unset: no label.
    pub instance: Option<String>,
}

/// Settings only the API uses.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `BIND_ADDR`, default `127.0.0.1:8000`.
    pub bind_addr: String,
    /// `PUBLIC_API_URL`: base of URLs the API hands out (report downloads with `STORAGE=fs`);
    /// by default the request's `Host`.
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
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn get(lookup: Lookup, var: &str) -> Option<String> {
    lookup(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn parse_or<T: FromStr>(lookup: Lookup, var: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(lookup, var) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e: T::Err| ConfigError {
            var,
            reason: format!("invalid value {v:?}: {e}"),
        }),
    }
}

fn positive(var: &'static str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        return Err(ConfigError {
            var,
            reason: "must be greater than zero".into(),
        });
    }
    Ok(v)
}

fn required(lookup: Lookup, var: &'static str, why: &str) -> Result<String, ConfigError> {
    get(lookup, var).ok_or_else(|| ConfigError {
        var,
        reason: format!("is required {why}"),
    })
}

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup(lookup: Lookup) -> Result<Settings, ConfigError> {
        Settings::parse(lookup, true)
    }

    /// For the binaries that never sign or verify a token (the importer, the operator):
    /// `JWT_SECRET` is neither required nor read, so their pods need not be given it.
    pub fn from_env_without_jwt() -> Result<Settings, ConfigError> {
        Settings::parse(&|k| std::env::var(k).ok(), false)
    }

    fn parse(lookup: Lookup, reads_jwt: bool) -> Result<Settings, ConfigError> {
        let app_env = match get(lookup, "APP_ENV").as_deref() {
            None | Some("dev") => AppEnv::Dev,
            Some("test") => AppEnv::Test,
            Some("prod") => AppEnv::Prod,
            Some(other) => {
                return Err(ConfigError {
                    var: "APP_ENV",
                    reason: format!("invalid value {other:?}: expected dev, test or prod"),
                })
            }
        };
        let database_url = get(lookup, "DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres:postgres@127.0.0.1:5432/bulk_import".into());
        let redis_url =
            get(lookup, "REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());

        let storage_kind = get(lookup, "STORAGE").unwrap_or_else(|| {
            if get(lookup, "S3_ENDPOINT_URL").is_some() {
                "s3"
            } else {
                "fs"
            }
            .into()
        });
        let storage = match storage_kind.as_str() {
            "fs" => StorageSettings::Fs {
                dir: get(lookup, "STORAGE_DIR")
                    .unwrap_or_else(|| ".local/storage".into())
                    .into(),
            },
            "s3" => {
                let endpoint = required(lookup, "S3_ENDPOINT_URL", "when STORAGE=s3")?;
                StorageSettings::S3 {
                    public_endpoint: get(lookup, "S3_PUBLIC_ENDPOINT_URL")
                        .unwrap_or_else(|| endpoint.clone()),
                    endpoint,
                    access_key: required(lookup, "S3_ACCESS_KEY", "when STORAGE=s3")?,
                    secret_key: required(lookup, "S3_SECRET_KEY", "when STORAGE=s3")?.into(),
                    bucket: get(lookup, "S3_BUCKET").unwrap_or_else(|| "imports".into()),
                    region: get(lookup, "S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                }
            }
            other => {
                return Err(ConfigError {
                    var: "STORAGE",
                    reason: format!("invalid value {other:?}: expected s3 or fs"),
                })
            }
        };
        let key_prefix = get(lookup, "STORAGE_KEY_PREFIX").unwrap_or_default();
        if key_prefix.starts_with('/') || key_prefix.contains("..") {
            return Err(ConfigError {
                var: "STORAGE_KEY_PREFIX",
                reason: "must be relative and must not contain '..'".into(),
            });
        }

        let jwt_secret = if reads_jwt {
            get(lookup, "JWT_SECRET")
        } else {
            // Never a usable signing key: nothing in these binaries signs.
            Some(String::new())
        };
        if app_env == AppEnv::Prod && reads_jwt {
            match &jwt_secret {
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
        let jwt_alg = get(lookup, "JWT_ALG").unwrap_or_else(|| "HS256".into());
        if !matches!(jwt_alg.as_str(), "HS256" | "HS384" | "HS512") {
            return Err(ConfigError {
                var: "JWT_ALG",
                reason: format!("invalid value {jwt_alg:?}: expected HS256, HS384 or HS512"),
            });
        }

        let executor = match get(lookup, "EXECUTOR").as_deref() {
            None | Some("local") => Executor::Local,
            Some("kubernetes") => Executor::Kubernetes,
            Some(other) => {
                return Err(ConfigError {
                    var: "EXECUTOR",
                    reason: format!("invalid value {other:?}: expected local or kubernetes"),
                })
            }
        };

        Ok(Settings {
            app_env,
            database_url: database_url.into(),
            redis_url: redis_url.into(),
            redis_key_prefix: get(lookup, "REDIS_KEY_PREFIX")
                .unwrap_or_else(|| "bulk-import:".into()),
            storage,
            key_prefix,
            presign_ttl: Duration::from_secs(positive(
                "S3_PRESIGN_TTL_SECONDS",
                parse_or(lookup, "S3_PRESIGN_TTL_SECONDS", 900)?,
            )?),
            jwt_secret: jwt_secret.unwrap_or_else(|| DEV_JWT_SECRET.into()).into(),
            jwt_alg,
            jwt_ttl: Duration::from_secs(positive(
                "JWT_ACCESS_TTL_SECONDS",
                parse_or(lookup, "JWT_ACCESS_TTL_SECONDS", 3600)?,
            )?),
            max_upload_bytes: positive(
                "MAX_UPLOAD_BYTES",
                parse_or(lookup, "MAX_UPLOAD_BYTES", 2 * 1024 * 1024 * 1024)?,
            )?,
            executor,
            import: ImportTuning {
                batch_size: positive("BATCH_SIZE", parse_or(lookup, "BATCH_SIZE", 5000)?)? as usize,
                progress_every: positive(
                    "PROGRESS_EVERY",
                    parse_or(lookup, "PROGRESS_EVERY", 1000)?,
                )?,
                slow: Duration::from_millis(parse_or(lookup, "IMPORT_SLOW_MS", 0)?),
            },
            kube_namespace: get(lookup, "KUBE_NAMESPACE").unwrap_or_else(|| "default".into()),
            limits: crate::limits::Limits::from_lookup(lookup)?,
            instance: get(lookup, "INSTANCE"),
            api: ApiSettings {
                bind_addr: get(lookup, "BIND_ADDR").unwrap_or_else(|| "127.0.0.1:8000".into()),
                public_url: get(lookup, "PUBLIC_API_URL")
                    .map(|u| u.trim_end_matches('/').to_string()),
                local_max_concurrent: positive(
                    "LOCAL_MAX_CONCURRENT_IMPORTS",
                    parse_or(lookup, "LOCAL_MAX_CONCURRENT_IMPORTS", 2)?,
                )? as usize,
                local_max_attempts: positive(
                    "LOCAL_MAX_ATTEMPTS",
                    parse_or(lookup, "LOCAL_MAX_ATTEMPTS", 3)?,
                )? as u32,
                importer_bin: get(lookup, "IMPORTER_BIN").map(PathBuf::from),
                upload_idle_timeout: Duration::from_secs(positive(
                    "UPLOAD_IDLE_TIMEOUT_SECONDS",
                    parse_or(lookup, "UPLOAD_IDLE_TIMEOUT_SECONDS", 30)?,
                )?),
            },
        })
    }

    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub fn redis_url(&self) -> &str {
        self.redis_url.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&move |k| map.get(k).cloned())
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
