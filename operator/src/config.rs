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
    /// `IMPORTER_MEMORY_LIMIT_MAX`: an OOM-killed importer runs again with twice its memory
    /// limit, up to this.
    pub memory_limit_max: String,
    /// `IMPORTER_START_GRACE_SECONDS`: how long a pod may wait for its image or its Secret.
    pub start_grace: std::time::Duration,
    /// `IMPORTER_TRY_LATER_MAX`: how many pods of a Job may exit 75 ("try later").
    pub try_later_max: usize,
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
    /// `IMPORTER_NODE_SELECTOR`, `IMPORTER_TOLERATIONS`, … : where importer pods run and
    /// what else they carry.
    pub placement: Placement,
    /// `MAX_ACTIVE_IMPORTS`: importer Jobs running at once; the other ImportJobs wait in
    /// phase `Queued` (`crate::admission`).
    pub max_active_imports: usize,
    /// `MAX_ACTIVE_IMPORTS_PER_ORG` (from the shared settings): per organization; 0: none.
    pub max_active_imports_per_org: usize,
}

use crate::placement::Placement;
pub use bulk_import_core::vars::ConfigError;
use bulk_import_core::{vars::Env, Settings};

impl OperatorConfig {
    /// `settings`: the process's shared settings, already read from the same environment;
    /// the variables they hold (`KUBE_NAMESPACE`, `INSTANCE`, `JOB_ACTIVE_DEADLINE_SECONDS`)
    /// are taken from them, not read a second time.
    pub fn from_env(settings: &Settings) -> Result<OperatorConfig, ConfigError> {
        OperatorConfig::from_lookup(&|k| std::env::var(k).ok(), settings)
    }

    /// Read through core's settings layer (`bulk_import_core::vars::Env`), whose `VARS`
    /// declare each variable's default for `--help` and docs/configuration.md.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        settings: &Settings,
    ) -> Result<OperatorConfig, ConfigError> {
        let env = Env::new(lookup);
        let retention = match env.value("OBJECT_RETENTION").as_str() {
            "keep" => Retention::Keep,
            "delete" => Retention::Delete,
            other => {
                return Err(ConfigError {
                    var: "OBJECT_RETENTION",
                    reason: format!("invalid value {other:?}: expected keep or delete"),
                })
            }
        };
        let pull = env.value("IMPORTER_IMAGE_PULL_POLICY");
        if !matches!(pull.as_str(), "Always" | "IfNotPresent" | "Never") {
            return Err(ConfigError {
                var: "IMPORTER_IMAGE_PULL_POLICY",
                reason: format!("invalid value {pull:?}"),
            });
        }
        Ok(OperatorConfig {
            namespace: settings.kube_namespace.clone(),
            bind_addr: env.value("OPERATOR_BIND_ADDR"),
            pod_name: env.get_or(
                "POD_NAME",
                &format!("bulk-import-operator-{}", uuid::Uuid::new_v4().simple()),
            ),
            image: env.value("IMPORTER_IMAGE"),
            image_pull_policy: pull,
            service_account: env.value("IMPORTER_SERVICE_ACCOUNT"),
            secret_name: env.value("IMPORTER_SECRET_NAME"),
            configmap_name: env.value("IMPORTER_CONFIGMAP_NAME"),
            cpu_request: env.value("IMPORTER_CPU_REQUEST"),
            cpu_limit: env.value("IMPORTER_CPU_LIMIT"),
            memory_request: env.value("IMPORTER_MEMORY_REQUEST"),
            memory_limit: memory("IMPORTER_MEMORY_LIMIT", env.value("IMPORTER_MEMORY_LIMIT"))?,
            memory_limit_max: memory(
                "IMPORTER_MEMORY_LIMIT_MAX",
                env.value("IMPORTER_MEMORY_LIMIT_MAX"),
            )?,
            start_grace: std::time::Duration::from_secs(
                env.at_least("IMPORTER_START_GRACE_SECONDS", 0)?,
            ),
            try_later_max: env.at_least("IMPORTER_TRY_LATER_MAX", 1)?,
            backoff_limit: env.at_least("JOB_BACKOFF_LIMIT", 0)?,
            active_deadline_seconds: i64::try_from(settings.job_active_deadline.as_secs())
                .unwrap_or(i64::MAX),
            ttl_seconds_after_finished: env.at_least("JOB_TTL_SECONDS_AFTER_FINISHED", 0)?,
            importjob_ttl_seconds_after_finished: env
                .at_least("IMPORTJOB_TTL_SECONDS_AFTER_FINISHED", 0)?,
            retention,
            instance: settings.instance.clone(),
            lease_name: env.value("LEASE_NAME"),
            placement: Placement::from_env(&env)?,
            max_active_imports: env.positive("MAX_ACTIVE_IMPORTS")? as usize,
            max_active_imports_per_org: settings.max_active_imports_per_org,
        })
    }

    /// Defaults, for tests.
    pub fn defaults() -> OperatorConfig {
        let settings = Settings::from_lookup_without_jwt(&|_| None).expect("defaults are valid");
        OperatorConfig::from_lookup(&|_| None, &settings).expect("defaults are valid")
    }
}

/// A memory quantity the operator can double (`256Mi`, `1Gi`, bytes).
fn memory(var: &'static str, value: String) -> Result<String, ConfigError> {
    match crate::quantity::bytes(&value) {
        Some(_) => Ok(value),
        None => Err(ConfigError {
            var,
            reason: format!("invalid memory quantity {value:?} (e.g. 256Mi, 1Gi)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::BTreeSet, sync::Mutex};

    /// The operator process reads its environment through `Settings` and through this
    /// configuration: no variable is read by both (the shared ones come from `Settings`).
    #[test]
    fn the_operator_reads_each_variable_once() {
        let by_settings = Mutex::new(BTreeSet::new());
        let settings = Settings::from_lookup_without_jwt(&|k| {
            by_settings.lock().unwrap().insert(k.to_string());
            None
        })
        .unwrap();
        let by_config = Mutex::new(BTreeSet::new());
        let config = OperatorConfig::from_lookup(
            &|k| {
                by_config.lock().unwrap().insert(k.to_string());
                None
            },
            &settings,
        )
        .unwrap();
        let (by_settings, by_config) = (
            by_settings.into_inner().unwrap(),
            by_config.into_inner().unwrap(),
        );
        assert!(by_config.contains("OBJECT_RETENTION"), "{by_config:?}");
        for shared in ["KUBE_NAMESPACE", "INSTANCE", "JOB_ACTIVE_DEADLINE_SECONDS"] {
            assert!(by_settings.contains(shared), "{shared}");
        }
        let twice: Vec<_> = by_settings.intersection(&by_config).collect();
        assert!(twice.is_empty(), "read twice: {twice:?}");
        assert_eq!(config.namespace, "default");
        assert_eq!(config.active_deadline_seconds, 3600);
    }
}
