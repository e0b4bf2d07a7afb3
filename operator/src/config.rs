//! The operator's settings (environment variables; the chart sets them).

/// What the finalizer does with an ImportJob's objects (the upload and the report) when the
/// ImportJob is deleted: `keep` them (default) or `delete` them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Keep,
    Delete,
}

#[derive(Debug, Clone)]
pub struct OperatorConfig {
    pub namespace: String,
    pub bind_addr: String,
    /// Identity in the leader-election Lease.
    pub pod_name: String,
    pub image: String,
    pub image_pull_policy: String,
    pub service_account: String,
    pub secret_name: String,
    pub configmap_name: String,
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub backoff_limit: i32,
    pub active_deadline_seconds: i64,
    pub ttl_seconds_after_finished: i32,
    /// `IMPORTJOB_TTL_SECONDS_AFTER_FINISHED`: finished ImportJobs are deleted this long after
    /// they ended (their finalizer runs as for any deletion); 0 keeps them.
    pub importjob_ttl_seconds_after_finished: u64,
    pub retention: Retention,
    /// `INSTANCE`: the Helm release (`app.kubernetes.io/instance`). When set, the operator
    /// watches only ImportJobs with that label and labels its Jobs and pods with it, so that
    /// two releases in one namespace leave each other's imports alone.
    pub instance: Option<String>,
    /// `LEASE_NAME`: the leader-election Lease (one per release; the chart names it after the
    /// release's operator).
    pub lease_name: String,
}

pub use bulk_import_core::settings::ConfigError;
use bulk_import_core::settings::Env;

impl OperatorConfig {
    pub fn from_env() -> Result<OperatorConfig, ConfigError> {
        OperatorConfig::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Read through core's settings layer (`bulk_import_core::settings::Env`), whose `VARS`
    /// declare each variable's default for `--help` and docs/configuration.md.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OperatorConfig, ConfigError> {
        let env = Env::new(lookup);
        let retention = match env.get_or("OBJECT_RETENTION", "keep").as_str() {
            "keep" => Retention::Keep,
            "delete" => Retention::Delete,
            other => {
                return Err(ConfigError {
                    var: "OBJECT_RETENTION",
                    reason: format!("invalid value {other:?}: expected keep or delete"),
                })
            }
        };
        let pull = env.get_or("IMPORTER_IMAGE_PULL_POLICY", "IfNotPresent");
        if !matches!(pull.as_str(), "Always" | "IfNotPresent" | "Never") {
            return Err(ConfigError {
                var: "IMPORTER_IMAGE_PULL_POLICY",
                reason: format!("invalid value {pull:?}"),
            });
        }
        Ok(OperatorConfig {
            namespace: env.get_or("KUBE_NAMESPACE", "default"),
            bind_addr: env.get_or("OPERATOR_BIND_ADDR", "0.0.0.0:8080"),
            pod_name: env.get_or(
                "POD_NAME",
                &format!("bulk-import-operator-{}", uuid::Uuid::new_v4().simple()),
            ),
            image: env.get_or("IMPORTER_IMAGE", "bulk-import:dev"),
            image_pull_policy: pull,
            service_account: env.get_or("IMPORTER_SERVICE_ACCOUNT", "bulk-import-importer"),
            secret_name: env.get_or("IMPORTER_SECRET_NAME", "bulk-import"),
            configmap_name: env.get_or("IMPORTER_CONFIGMAP_NAME", "bulk-import-config"),
            cpu_request: env.get_or("IMPORTER_CPU_REQUEST", "100m"),
            cpu_limit: env.get_or("IMPORTER_CPU_LIMIT", "1"),
            memory_request: env.get_or("IMPORTER_MEMORY_REQUEST", "64Mi"),
            memory_limit: env.get_or("IMPORTER_MEMORY_LIMIT", "256Mi"),
            backoff_limit: env.at_least("JOB_BACKOFF_LIMIT", 3, 0)?,
            active_deadline_seconds: env.at_least("JOB_ACTIVE_DEADLINE_SECONDS", 3600, 1)?,
            ttl_seconds_after_finished: env.at_least("JOB_TTL_SECONDS_AFTER_FINISHED", 86400, 0)?,
            importjob_ttl_seconds_after_finished: env.at_least(
                "IMPORTJOB_TTL_SECONDS_AFTER_FINISHED",
                604800,
                0,
            )?,
            retention,
            instance: env.get("INSTANCE"),
            lease_name: env.get_or("LEASE_NAME", "bulk-import-operator"),
        })
    }

    /// Defaults, for tests.
    pub fn defaults() -> OperatorConfig {
        OperatorConfig::from_lookup(&|_| None).expect("defaults are valid")
    }
}
