//! The Job that runs the importer for an ImportJob: built once, purely from the ImportJob
//! and the operator's configuration (Jobs are immutable; the operator never updates one).

use crate::config::OperatorConfig;
use bulk_import_core::crd::{ImportJob, JOB_ID_LABEL};
use k8s_openapi::{
    api::{
        batch::v1::{
            Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
            PodFailurePolicyRule,
        },
        core::v1::{
            Capabilities, ConfigMapEnvSource, Container, EmptyDirVolumeSource, EnvFromSource,
            EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext, PodSpec,
            PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
            SecurityContext, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{api::ObjectMeta, Resource, ResourceExt};
use std::collections::BTreeMap;

pub const CONTAINER: &str = "importer";
/// Importer exit code for a permanent failure it has recorded: the Job fails at once
/// instead of retrying (podFailurePolicy).
pub const PERMANENT_EXIT_CODE: i32 = 2;
/// Secret keys passed by `secretKeyRef` (the values never appear in the Job or the CR).
pub const SECRET_KEYS: [&str; 5] = [
    "DATABASE_URL",
    "REDIS_URL",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "JWT_SECRET",
];
const USER_ID: i64 = 10001;

/// Why a spec cannot be run; it waits for a change (a condition says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {0}")]
pub struct InvalidSpec(pub String);

fn check_key(what: &str, key: &str) -> Result<(), InvalidSpec> {
    if key.is_empty() || key.starts_with('/') || key.split('/').any(|p| p == ".." || p == ".") {
        return Err(InvalidSpec(format!(
            "{what} {key:?} is not a valid object key"
        )));
    }
    Ok(())
}

pub fn validate(ij: &ImportJob) -> Result<uuid::Uuid, InvalidSpec> {
    let id: uuid::Uuid = ij
        .spec
        .job_id
        .parse()
        .map_err(|_| InvalidSpec(format!("jobId {:?} is not a UUID", ij.spec.job_id)))?;
    check_key("source.key", &ij.spec.source.key)?;
    check_key("report.key", &ij.spec.report.key)?;
    if ij.spec.source.size < 0 {
        return Err(InvalidSpec("source.size is negative".into()));
    }
    if ij.name_any().len() > 63 {
        return Err(InvalidSpec(
            "the name is longer than 63 characters (it names the Job)".into(),
        ));
    }
    Ok(id)
}

pub fn labels(job_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "bulk-import".into()),
        ("app.kubernetes.io/component".into(), "importer".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "bulk-import-operator".into(),
        ),
        (JOB_ID_LABEL.into(), job_id.into()),
    ])
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".into(), Quantity(cpu.into())),
        ("memory".into(), Quantity(memory.into())),
    ])
}

pub fn build_job(ij: &ImportJob, config: &OperatorConfig) -> Result<Job, InvalidSpec> {
    let job_id = validate(ij)?;
    let name = ij.name_any();
    let labels = labels(&job_id.to_string());
    let owner = ij
        .controller_owner_ref(&())
        .ok_or_else(|| InvalidSpec("the ImportJob has no uid yet".into()))?;

    let mut env_vars: Vec<EnvVar> = SECRET_KEYS
        .iter()
        .map(|key| EnvVar {
            name: (*key).into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: config.secret_name.clone(),
                    key: (*key).into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    env_vars.push(EnvVar {
        name: "KUBE_NAMESPACE".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.namespace".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    env_vars.push(env("IMPORTJOB_NAME", name.clone()));
    if let Some(t) = &ij.spec.tuning {
        if let Some(v) = t.batch_size {
            env_vars.push(env("BATCH_SIZE", v.to_string()));
        }
        if let Some(v) = t.progress_every {
            env_vars.push(env("PROGRESS_EVERY", v.to_string()));
        }
        if let Some(v) = t.slow_ms {
            env_vars.push(env("IMPORT_SLOW_MS", v.to_string()));
        }
    }

    let container = Container {
        name: CONTAINER.into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(vec!["bulk-import-importer".into()]),
        args: Some(vec!["--job-id".into(), job_id.to_string()]),
        env: Some(env_vars),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config.configmap_name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&config.cpu_request, &config.memory_request)),
            limits: Some(quantities(&config.cpu_limit, &config.memory_limit)),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(USER_ID),
            run_as_group: Some(USER_ID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: ij.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(config.backoff_limit),
            active_deadline_seconds: Some(config.active_deadline_seconds),
            ttl_seconds_after_finished: Some(config.ttl_seconds_after_finished),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some(CONTAINER.into()),
                        operator: "In".into(),
                        values: vec![PERMANENT_EXIT_CODE],
                    }),
                    ..Default::default()
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(config.service_account.clone()),
                    // The importer patches its ImportJob's status.
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(USER_ID),
                        run_as_group: Some(USER_ID),
                        fs_group: Some(USER_ID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("64Mi".into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}
