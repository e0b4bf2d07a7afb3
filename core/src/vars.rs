//! The environment variables every binary reads: each declared once in [`VARS`] with its
//! default, its meaning and the binaries that read it, and [`Env`], the one reader of them.
//! Each binary's `--help` prints them ([`env_help`]); the parsers in `settings` and `limits`
//! read the defaults from here ([`Env::value`], [`Env::parse`]), and tests compare them with
//! docs/configuration.md's tables. Reading an undeclared variable is a bug the tests catch.

use std::{str::FromStr, time::Duration};

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// The binaries, for which variables each one reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Api,
    Importer,
    Operator,
}

/// One environment variable: its name, its default, what it does, and which binaries read
/// it.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    pub default: VarDefault,
    pub help: &'static str,
    pub used_by: &'static [Component],
}

/// What an unset variable means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarDefault {
    /// This value, which the parsers read from here ([`Env::value`], [`Env::parse`]): the
    /// one place it is written.
    Value(&'static str),
    /// Computed by the code (from other settings, or nothing at all); described for
    /// `--help`.
    Described(&'static str),
}

impl Var {
    /// The default as `--help` and the configuration tables show it.
    pub fn default_text(&self) -> &'static str {
        match self.default {
            VarDefault::Value(v) | VarDefault::Described(v) => v,
        }
    }
}

use Component::{Api as A, Importer as I, Operator as O};
use VarDefault::{Described, Value};

macro_rules! vars {
    ($( $name:literal, $default:expr, [$($c:ident),*], $help:literal; )*) => {
        /// Every environment variable the binaries read.
        pub const VARS: &[Var] = &[$(Var { name: $name, default: $default, help: $help, used_by: &[$($c),*] }),*];
    };
}

vars! {
    "APP_ENV", Value("dev"), [A, I, O], "dev, test or prod (prod refuses development secrets)";
    "DATABASE_URL", Value("postgres://postgres:postgres@127.0.0.1:5432/bulk_import"), [A, I, O], "Postgres";
    "DB_STATEMENT_TIMEOUT_SECONDS", Value("60"), [A, I, O], "server-side statement and idle-in-transaction timeout; client waits are bounded by it too";
    "REDIS_URL", Value("redis://127.0.0.1:6379/0"), [A, I, O], "Redis (progress messages, login limiting)";
    "REDIS_KEY_PREFIX", Value("bulk-import:"), [A, I, O], "namespace of this deployment's Redis keys";
    "STORAGE", Described("s3 if S3_ENDPOINT_URL is set, else fs"), [A, I, O], "object storage backend: s3 or fs";
    "STORAGE_DIR", Value(".local/storage"), [A, I, O], "directory of the fs backend";
    "STORAGE_KEY_PREFIX", Described("empty"), [A, I, O], "prefix of every object key";
    "S3_ENDPOINT_URL", Described("none"), [A, I, O], "S3 endpoint the services use";
    "S3_PUBLIC_ENDPOINT_URL", Described("S3_ENDPOINT_URL"), [A, I, O], "host presigned URLs are signed for";
    "S3_ACCESS_KEY", Described("none (required with S3)"), [A, I, O], "S3 access key";
    "S3_SECRET_KEY", Described("none (required with S3)"), [A, I, O], "S3 secret key";
    "S3_BUCKET", Value("imports"), [A, I, O], "bucket";
    "S3_REGION", Value("us-east-1"), [A, I, O], "region used for signing";
    "S3_PRESIGN_TTL_SECONDS", Value("900"), [A, I, O], "lifetime of report links";
    "JWT_SECRET", Described("a development value (refused in prod)"), [A], "HMAC secret of access tokens and download links";
    "JWT_ALG", Value("HS256"), [A], "HS256, HS384 or HS512";
    "JWT_ACCESS_TTL_SECONDS", Value("3600"), [A], "access token lifetime";
    "MAX_UPLOAD_BYTES", Value("2147483648"), [A], "largest upload, enforced while streaming";
    "BATCH_SIZE", Value("5000"), [A, I], "rows per transaction (COPY batch + checkpoint)";
    "PROGRESS_EVERY", Value("1000"), [A, I], "rows between progress messages to Redis";
    "IMPORT_SLOW_MS", Value("0"), [A, I], "artificial delay per row, for demos and progress tests";
    "IMPORT_PAUSE_BEFORE_FINISH_MS", Value("0"), [A, I], "fault-injection aid: wait after the last batch, before the report and done";
    "MAX_DECOMPRESSED_BYTES", Value("2147483648"), [I], "most a gzip upload may decompress to; past it the job fails file_too_large";
    "MAX_DECOMPRESSION_RATIO", Value("100"), [I], "most a gzip upload may decompress to, as a multiple of its stored size (file_too_large)";
    "MAX_STORED_ERROR_ROWS", Value("100000"), [I], "bad rows stored per job (report, rows file), the first in line order; later ones are only counted";
    "JOB_LEASE_SECONDS", Value("30"), [A, I], "how long an importer's claim on a job holds without renewal";
    "JOB_ACTIVE_DEADLINE_SECONDS", Value("3600"), [A, O], "longest an import may run (local mode and Kubernetes)";
    "EXECUTOR", Value("local"), [A], "local (child processes) or kubernetes (an ImportJob per upload)";
    "KUBE_NAMESPACE", Value("default"), [A, I, O], "namespace of ImportJobs and their Jobs";
    "INSTANCE", Described("none (no label)"), [A, O], "the release ImportJobs are labelled with, so that only its operator runs them";
    "BIND_ADDR", Value("127.0.0.1:8000"), [A], "API listen address";
    "PUBLIC_API_URL", Described("http:// + BIND_ADDR (required with APP_ENV=prod)"), [A], "base of links the API serves itself";
    "LOCAL_MAX_CONCURRENT_IMPORTS", Value("2"), [A], "importer processes at once in local mode (its MAX_ACTIVE_IMPORTS)";
    "MAX_ACTIVE_IMPORTS", Value("8"), [O], "importer Jobs at once; the others wait in phase Queued (the chart derives it from postgres.connectionBudget)";
    "MAX_ACTIVE_IMPORTS_PER_ORG", Value("0"), [A, O], "importers of one organization at once, on Kubernetes and in local mode (0: no limit of its own)";
    "IMPORTER_DB_POOL", Value("3"), [I], "Postgres connections of one importer's pool (it opens one more for its claim lock)";
    "LOCAL_MAX_ATTEMPTS", Value("3"), [A], "crashed importer runs per job before it is failed";
    "IMPORTER_BIN", Described("bulk-import-importer next to the API binary, else on PATH"), [A], "importer executable";
    "UPLOAD_IDLE_TIMEOUT_SECONDS", Value("30"), [A], "an upload that sends nothing for this long is cut (408)";
    "SWEEP_INTERVAL_SECONDS", Value("60"), [A], "how often the sweeper runs";
    "SIGNUP", Value("open"), [A], "open (a sign-up without an invitation creates a new organization) or invitation (only invited people register)";
    "INVITATION_TTL_SECONDS", Value("604800"), [A], "how long an invitation token is valid";
    "INVITATIONS_MAX_PENDING", Value("100"), [A], "unused, unexpired invitations per organization";
    "EXPORTS_MAX_CONCURRENT", Value("4"), [A], "customer exports streaming at once in one API process";
    "TRUSTED_PROXIES", Described("empty (the peer is the client)"), [A], "CIDRs of proxies whose Forwarded / X-Forwarded-For headers are believed";
    "LOGIN_WINDOW_SECONDS", Value("900"), [A], "window of the login counters";
    "LOGIN_MAX_PER_EMAIL", Value("5"), [A], "login attempts on one email (without its device cookie) per window";
    "LOGIN_MAX_EMAILS_PER_ADDR", Value("20"), [A], "distinct emails with a failed login from one address per window";
    "DEVICE_COOKIE_TTL_SECONDS", Value("2592000"), [A], "lifetime of a device cookie";
    "REGISTER_MAX_PER_ADDR", Value("10"), [A], "registrations per client address per window";
    "REGISTER_WINDOW_SECONDS", Value("3600"), [A], "window of the registration counter";
    "HASH_CONCURRENCY", Value("2"), [A], "password hashes computed at once";
    "HASH_QUEUE_TIMEOUT_SECONDS", Value("5"), [A], "longest wait for a hashing slot before 503";
    "UPLOAD_HEAD_MAX_BYTES", Value("65536"), [A], "bytes of a multipart upload before the file's data";
    "UPLOAD_MAX_PARTS", Value("8"), [A], "parts read before the file part";
    "UPLOADS_MAX_PER_USER", Value("2"), [A], "uploads of one user streaming at once";
    "UPLOADS_MAX_CONCURRENT", Value("16"), [A], "uploads streaming at once in one API process";
    "JOBS_MAX_UNFINISHED_PER_USER", Value("10"), [A], "a user's jobs not yet finished";
    "EVENTS_MAX_PER_USER", Value("4"), [A], "event streams of one user open at once";
    "EVENTS_MAX_CONCURRENT", Value("512"), [A], "event streams open at once in one API process";
    "JSON_BODY_MAX_BYTES", Value("8192"), [A], "largest request body of every route but the upload (413 body_too_large)";
    "REQUEST_TIMEOUT_SECONDS", Value("15"), [A], "a request's head, then its body, must arrive within this time (every route but the upload; 408 request_timeout)";
    "SEND_TIMEOUT_SECONDS", Value("30"), [A], "a write to a client that makes no progress for this long ends the connection";
    "MAX_CONNECTIONS", Value("1024"), [A], "connections open at once in one API process";
    "MAX_CONNECTIONS_PER_ADDR", Value("64"), [A], "connections (behind a trusted proxy: requests) open at once per client address or IPv6 /64";
    "UPLOAD_MIN_BYTES_PER_SECOND", Value("8192"), [A], "slowest an upload's file may arrive, averaged over each rate window (408 upload_too_slow)";
    "UPLOAD_RATE_WINDOW_SECONDS", Value("30"), [A], "window of the upload's minimum rate (time spent waiting for the client)";
    "UPLOAD_TIMEOUT_SECONDS", Value("3600"), [A], "longest a whole upload request may take (408 upload_timeout)";
    "UPLOADS_MAX_PER_ORG", Value("4"), [A], "uploads of one organization streaming at once";
    "UPLOADS_RESERVED", Value("4"), [A], "of UPLOADS_MAX_CONCURRENT, slots only an organization holding none may take";
    "EVENTS_MAX_PER_ORG", Value("32"), [A], "event streams of one organization open at once";
    "EVENTS_RESERVED", Value("64"), [A], "of EVENTS_MAX_CONCURRENT, streams only an organization holding none may open";
    "JOBS_MAX_UNFINISHED_PER_ORG", Value("20"), [A], "an organization's jobs not yet finished";
    "JOBS_CREATED_MAX_PER_ORG", Value("100"), [A], "new jobs (uploads of a new key) per organization per window (429 too_many_new_jobs)";
    "JOBS_CREATED_WINDOW_SECONDS", Value("3600"), [A], "window of JOBS_CREATED_MAX_PER_ORG";
    "ORG_STORAGE_QUOTA_BYTES", Value("10737418240"), [A], "bytes an organization may keep stored: uploads and reports of jobs not deleted (413 storage_quota_exceeded)";
    "METRICS_BIND_ADDR", Described("none (/metrics on BIND_ADDR)"), [A], "serve /metrics only on this address";
    "LOG_FORMAT", Described("text"), [A, I, O], "json for JSON lines";
    "RUST_LOG", Described("info"), [A, I, O], "log filter";
    "OPERATOR_BIND_ADDR", Value("0.0.0.0:8080"), [O], "probes and metrics";
    "LEASE_NAME", Value("bulk-import-operator"), [O], "the leader-election Lease";
    "POD_NAME", Described("a random id"), [O], "identity in the leader-election Lease";
    "IMPORTER_IMAGE", Value("bulk-import:dev"), [O], "image of importer Jobs";
    "IMPORTER_IMAGE_PULL_POLICY", Value("IfNotPresent"), [O], "Always, IfNotPresent or Never";
    "IMPORTER_SERVICE_ACCOUNT", Value("bulk-import-importer"), [O], "service account of importer pods";
    "IMPORTER_SECRET_NAME", Value("bulk-import"), [O], "Secret with the importer's credentials";
    "IMPORTER_CONFIGMAP_NAME", Value("bulk-import-config"), [O], "ConfigMap with the other settings";
    "IMPORTER_CPU_REQUEST", Value("100m"), [O], "importer CPU request";
    "IMPORTER_CPU_LIMIT", Value("1"), [O], "importer CPU limit";
    "IMPORTER_MEMORY_REQUEST", Value("64Mi"), [O], "importer memory request";
    "IMPORTER_MEMORY_LIMIT", Value("256Mi"), [O], "importer memory limit";
    "IMPORTER_MEMORY_LIMIT_MAX", Value("1Gi"), [O], "the ceiling of an OOM-killed importer's memory limit (doubled per OOM kill, then the import fails)";
    "IMPORTER_START_GRACE_SECONDS", Value("300"), [O], "how long an importer pod may wait for its image (ImagePullBackOff) or its Secret (CreateContainerConfigError) before the import fails";
    "IMPORTER_TRY_LATER_MAX", Value("30"), [O], "how many \"try later\" exits (75: database unreachable, job claimed) a Job may have before the import fails";
    "IMPORTER_EPHEMERAL_STORAGE_REQUEST", Described("none"), [O], "importer ephemeral-storage request (e.g. 128Mi)";
    "IMPORTER_EPHEMERAL_STORAGE_LIMIT", Described("none"), [O], "importer ephemeral-storage limit (e.g. 1Gi)";
    "IMPORTER_NODE_SELECTOR", Value("{}"), [O], "importer pods' nodeSelector, a JSON object";
    "IMPORTER_TOLERATIONS", Value("[]"), [O], "importer pods' tolerations, a JSON array";
    "IMPORTER_AFFINITY", Value("{}"), [O], "importer pods' affinity, a JSON object";
    "IMPORTER_PRIORITY_CLASS_NAME", Described("none"), [O], "importer pods' priorityClassName";
    "IMPORTER_POD_LABELS", Value("{}"), [O], "extra importer pod labels, a JSON object (not the operator's own)";
    "IMPORTER_POD_ANNOTATIONS", Value("{}"), [O], "importer pod annotations, a JSON object";
    "JOB_BACKOFF_LIMIT", Value("3"), [O], "retries of a killed importer";
    "JOB_TTL_SECONDS_AFTER_FINISHED", Value("86400"), [O], "when finished Jobs are garbage-collected";
    "IMPORTJOB_TTL_SECONDS_AFTER_FINISHED", Value("604800"), [O], "when finished ImportJobs are deleted (0 keeps them)";
    "OBJECT_RETENTION", Value("keep"), [O], "keep or delete the objects when an ImportJob is deleted";
}

/// The variable named `name`, if declared.
pub fn var(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}

/// The "Environment" section of a binary's `--help`: every variable it reads, with its
/// default.
pub fn env_help(component: Component) -> String {
    let vars: Vec<&Var> = VARS
        .iter()
        .filter(|v| v.used_by.contains(&component))
        .collect();
    let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut out = String::from("Environment (variable, default: meaning):\n");
    for v in vars {
        out.push_str(&format!(
            "  {:width$}  [default: {}] {}\n",
            v.name,
            v.default_text(),
            v.help
        ));
    }
    out
}

/// Reads declared variables through a lookup (the environment, or a map in tests).
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Env<'a> {
        Env { lookup }
    }

    /// The trimmed, non-empty value of a declared variable.
    pub fn get(&self, var: &str) -> Option<String> {
        debug_assert!(
            self::var(var).is_some(),
            "{var} is read but not declared in vars::VARS"
        );
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The value, or the default declared in [`VARS`].
    pub fn value(&self, var: &str) -> String {
        self.get(var)
            .unwrap_or_else(|| declared_value(var).to_string())
    }

    /// The value, or `computed` for a variable whose default the code works out (declared
    /// [`VarDefault::Described`]).
    pub fn get_or(&self, var: &str, computed: &str) -> String {
        debug_assert!(
            !matches!(
                self::var(var).map(|v| v.default),
                Some(VarDefault::Value(_))
            ),
            "{var} has a declared default: read it with value() or parse()"
        );
        self.get(var).unwrap_or_else(|| computed.into())
    }

    /// The value, or the default declared in [`VARS`], parsed.
    pub fn parse<T: FromStr>(&self, var: &'static str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let Some(v) = self.get(var) else {
            let default = declared_value(var);
            return Ok(default.parse().unwrap_or_else(|e| {
                panic!(
                    "the default of {var} declared in vars::VARS, {default:?}, does not parse: {e}"
                )
            }));
        };
        v.parse().map_err(|e: T::Err| ConfigError {
            var,
            reason: format!("invalid value {v:?}: {e}"),
        })
    }

    /// A number of at least `min`.
    pub fn at_least<T>(&self, var: &'static str, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let v = self.parse(var)?;
        if v < min {
            return Err(ConfigError {
                var,
                reason: format!("invalid value {v}: must be at least {min}"),
            });
        }
        Ok(v)
    }

    /// A number greater than zero.
    pub fn positive(&self, var: &'static str) -> Result<u64, ConfigError> {
        positive(var, self.parse(var)?)
    }

    pub fn seconds(&self, var: &'static str) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.positive(var)?))
    }

    pub fn required(&self, var: &'static str, why: &str) -> Result<String, ConfigError> {
        self.get(var).ok_or_else(|| ConfigError {
            var,
            reason: format!("is required {why}"),
        })
    }
}

/// The default of a variable declared with a [`VarDefault::Value`].
fn declared_value(var: &str) -> &'static str {
    match self::var(var).map(|v| v.default) {
        Some(VarDefault::Value(v)) => v,
        _ => panic!("{var} has no default value declared in vars::VARS"),
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
