//! The Job that runs the importer for an ImportJob: built once, purely from the ImportJob
//! and the operator's configuration (Jobs are immutable; the operator never updates one).

use crate::config::OperatorConfig;
use bulk_import_core::crd::{is_hand_written, job_id_of};
use bulk_import_core::crd::{ImportJob, JOB_ID_LABEL};
use k8s_openapi::{
    api::{
        batch::v1::{
            Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
            PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
        },
        core::v1::{
            Capabilities, ConfigMapEnvSource, Container, EmptyDirVolumeSource, EnvFromSource,
            EnvVar, EnvVarSource, PodSecurityContext, PodSpec, PodTemplateSpec,
            ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::OwnerReference},
};
use kube::{api::ObjectMeta, Resource, ResourceExt};
use std::collections::BTreeMap;

pub const CONTAINER: &str = "importer";
/// Secret keys passed by `secretKeyRef` (the values never appear in the Job or the CR): the
/// ones the importer uses. Not `JWT_SECRET`: the importer parses untrusted files and never
/// signs a token, so it is not given the key that could mint one.
pub const SECRET_KEYS: [&str; 4] = [
    "DATABASE_URL",
    "REDIS_URL",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
];
pub use bulk_import_core::crd::INSTANCE_LABEL;
const USER_ID: i64 = 10001;

/// Why a spec cannot be run; it waits for a change (a condition says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {0}")]
pub struct InvalidSpec(pub String);

/// The objects an ImportJob names lie under its own job's prefixes: the upload
/// `uploads/<user id>/<job id>.csv` and the report `reports/<job id>/errors.csv` (the keys
/// the API gives them). The CRD's validation rules say the same; the operator checks again
/// before it deletes anything, so that an ImportJob can never make the finalizer delete
/// another import's (or anyone's) object.
/// An object outside the service's own areas (`uploads/`, `reports/`) is not the service's:
/// an import from an object already in storage, checked against the organization's prefixes
/// when its row was made (`crate::adopt`, the API), and never deleted.
pub fn keys_of_the_job(ij: &ImportJob) -> Result<uuid::Uuid, InvalidSpec> {
    let id = job_id(ij)?;
    let key = &ij.spec.source.key;
    let upload = bulk_import_core::job::is_upload_key_of(id, key);
    let foreign = bulk_import_core::import_source::malformed(key).is_none()
        && !key.starts_with(bulk_import_core::job::UPLOADS_PREFIX)
        && !key.starts_with(bulk_import_core::job::REPORTS_PREFIX);
    if !upload && !foreign {
        return Err(InvalidSpec(format!(
            "source.key {key:?} is neither an upload of job {id} (uploads/<user id>/{id}.csv) \
             nor an object outside the service's areas"
        )));
    }
    let report = bulk_import_core::job::report_key(id);
    match &ij.spec.report {
        None if is_hand_written(ij) => {}
        Some(r) if r.key == report => {}
        other => {
            return Err(InvalidSpec(format!(
                "report.key {:?} is not the report of job {id} ({report})",
                other.as_ref().map(|r| r.key.as_str())
            )))
        }
    }
    Ok(id)
}

fn job_id(ij: &ImportJob) -> Result<uuid::Uuid, InvalidSpec> {
    let js = &job_id_of(ij);
    match js.parse::<uuid::Uuid>() {
        Ok(id) if bulk_import_core::job::is_canonical_uuid(js) => Ok(id),
        _ => Err(InvalidSpec(format!("jobId {js:?} is not a UUID"))),
    }
}

pub fn validate(ij: &ImportJob) -> Result<uuid::Uuid, InvalidSpec> {
    let id = keys_of_the_job(ij)?;
    if ij.spec.source.size < 0 {
        return Err(InvalidSpec("source.size is negative".into()));
    }
    if ij.name_any().len() > 63 {
        return Err(InvalidSpec(
            "the name is longer than 63 characters (it names the Job)".into(),
        ));
    }
    if ij.metadata.uid.is_none() {
        return Err(InvalidSpec("the ImportJob has no uid yet".into()));
    }
    Ok(id)
}

pub fn labels(job_id: &str, instance: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".into(), "bulk-import".into()),
        ("app.kubernetes.io/component".into(), "importer".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "bulk-import-operator".into(),
        ),
        (JOB_ID_LABEL.into(), job_id.into()),
    ]);
    if let Some(instance) = instance {
        labels.insert(INSTANCE_LABEL.into(), instance.into());
    }
    labels
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

/// CPU and memory requests and limits (the memory limit raised after an OOM kill:
/// `status.memoryLimit`), and ephemeral storage when configured.
fn resources(ij: &ImportJob, config: &OperatorConfig) -> ResourceRequirements {
    let memory_limit = ij
        .status
        .as_ref()
        .and_then(|s| s.memory_limit.as_deref())
        .unwrap_or(&config.memory_limit);
    let mut requests = quantities(&config.cpu_request, &config.memory_request);
    let mut limits = quantities(&config.cpu_limit, memory_limit);
    let p = &config.placement;
    for (map, q) in [
        (&mut requests, &p.ephemeral_storage_request),
        (&mut limits, &p.ephemeral_storage_limit),
    ] {
        if let Some(q) = q {
            map.insert("ephemeral-storage".into(), q.clone());
        }
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..Default::default()
    }
}

/// First matching rule wins. A pod that fails because it was disrupted (evicted, preempted,
/// its node drained: the `DisruptionTarget` condition) does not count against
/// `backoffLimit`: the Job starts another pod, which resumes from the checkpoint. Exit code
/// 2, a permanent failure the importer recorded, fails the Job at once.
pub fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
                ..Default::default()
            },
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.into()),
                    operator: "In".into(),
                    // A permanent failure the importer has recorded: the Job fails at once
                    // instead of retrying.
                    values: vec![bulk_import_core::exit::PERMANENT],
                }),
                ..Default::default()
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.into()),
                    operator: "In".into(),
                    // "Try later" (the database refused a connection, another run holds
                    // the claim): another pod, not counted against backoffLimit. Only
                    // activeDeadlineSeconds bounds how long this goes on.
                    values: vec![bulk_import_core::exit::TEMPORARY],
                }),
                ..Default::default()
            },
        ],
    }
}

/// The Job that runs this ImportJob: its own name, then `<name>-retry-<n>` once the operator
/// has acted on the n-th retry (`status.retries`), and `-oom-<m>` after the m-th OOM kill
/// (`status.oomRetries`: run again with a larger memory limit). A new name per run: the
/// failed Job of the previous run may linger in a lagging cache, and must never be taken for
/// the new one.
pub fn job_name(ij: &ImportJob) -> String {
    let status = ij.status.as_ref();
    let mut name = match status.and_then(|s| s.retries).unwrap_or(0) {
        0 => ij.name_any(),
        n => format!("{}-retry-{n}", ij.name_any()),
    };
    if let Some(m) = status.and_then(|s| s.oom_retries).filter(|m| *m > 0) {
        name.push_str(&format!("-oom-{m}"));
    }
    name
}

/// The Job for an ImportJob, once its spec is checked (`validate`).
pub fn build_job(ij: &ImportJob, config: &OperatorConfig) -> Result<Job, InvalidSpec> {
    let job_id = validate(ij)?;
    Ok(importer_job(ij, job_id, config))
}

/// The Job for a valid ImportJob (`validate` gave `job_id`).
pub fn importer_job(ij: &ImportJob, job_id: uuid::Uuid, config: &OperatorConfig) -> Job {
    let labels = labels(&job_id.to_string(), config.instance.as_deref());
    // blockOwnerDeletion: a foreground deletion of the ImportJob waits for its Job. Creating
    // such a reference needs `update` on `importjobs/finalizers` where the
    // OwnerReferencesPermissionEnforcement admission plugin is on (the chart grants it).
    let owner = OwnerReference {
        block_owner_deletion: Some(true),
        ..ij.controller_owner_ref(&())
            .expect("validate checked that the ImportJob has a uid")
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(ij)),
            namespace: ij.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(config.backoff_limit),
            active_deadline_seconds: Some(config.active_deadline_seconds),
            ttl_seconds_after_finished: Some(config.ttl_seconds_after_finished),
            pod_failure_policy: Some(pod_failure_policy()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(config.placement.pod_labels(&labels)),
                    annotations: config.placement.pod_annotations(),
                    ..Default::default()
                }),
                spec: Some(pod_spec(config, container(ij, job_id, config))),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The importer's environment: the secrets by reference, the spec's tuning as values.
fn env_vars(ij: &ImportJob, config: &OperatorConfig) -> Vec<EnvVar> {
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
    env_vars
}

/// The importer container: restricted, its secrets by reference, `--job-id`.
fn container(ij: &ImportJob, job_id: uuid::Uuid, config: &OperatorConfig) -> Container {
    Container {
        name: CONTAINER.into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(vec!["bulk-import-importer".into()]),
        args: Some(vec!["--job-id".into(), job_id.to_string()]),
        env: Some(env_vars(ij, config)),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config.configmap_name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        resources: Some(resources(ij, config)),
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
    }
}

/// The importer pod: one container, no Kubernetes token, a small writable /tmp, placed as
/// configured.
fn pod_spec(config: &OperatorConfig, container: Container) -> PodSpec {
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(config.service_account.clone()),
        // The importer calls no Kubernetes API (the operator mirrors its progress
        // from Postgres): no token in the pod that parses untrusted files.
        automount_service_account_token: Some(false),
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
    };
    config.placement.apply_to(&mut pod);
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{config_with, name, ImportJobExt, JOB_ID, NS, UID, USER_ID};
    use bulk_import_core::{crd::Tuning, Settings};

    fn job_of(ij: &ImportJob) -> Job {
        build_job(ij, &OperatorConfig::defaults()).expect("a valid ImportJob")
    }

    fn pod(job: &Job) -> &PodSpec {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("a pod spec")
    }

    fn importer(job: &Job) -> &Container {
        let containers = &pod(job).containers;
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    fn env_var<'a>(job: &'a Job, name: &str) -> &'a EnvVar {
        importer(job)
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name} in the importer's env"))
    }

    fn env_value(job: &Job, name: &str) -> Option<String> {
        importer(job)
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn pod_and_container_run_restricted() {
        let job = job_of(&ImportJob::test());
        let spec = pod(&job);
        let psc = spec.security_context.as_ref().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.is_some_and(|u| u > 0), "a non-root uid");
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert_eq!(spec.host_network, None);
        assert_eq!(spec.host_pid, None);
        assert_eq!(spec.host_ipc, None);
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));

        let sc = importer(&job)
            .security_context
            .as_ref()
            .expect("container securityContext");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_ne!(sc.privileged, Some(true));
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(
            caps.add.as_ref().is_none_or(Vec::is_empty),
            "no capability added"
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        // The root filesystem is read-only: /tmp is a size-limited emptyDir, and no volume
        // reaches the host.
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        assert!(
            volumes
                .iter()
                .all(|v| v.empty_dir.is_some() && v.host_path.is_none()),
            "{volumes:?}"
        );
        let mounts = importer(&job).volume_mounts.as_deref().unwrap_or_default();
        assert_eq!(
            mounts
                .iter()
                .map(|m| m.mount_path.as_str())
                .collect::<Vec<_>>(),
            ["/tmp"]
        );
    }

    #[test]
    fn secrets_reach_the_pod_by_reference_only() {
        let config = config_with(&[("IMPORTER_SECRET_NAME", "bi-secrets")]);
        let job = build_job(&ImportJob::test(), &config).unwrap();
        for key in SECRET_KEYS {
            let var = env_var(&job, key);
            assert_eq!(var.value, None, "{key} has no literal value");
            let source = var.value_from.as_ref().expect("valueFrom");
            assert_eq!(
                source.secret_key_ref,
                Some(SecretKeySelector {
                    name: "bi-secrets".into(),
                    key: key.into(),
                    optional: Some(false),
                }),
                "{key}"
            );
        }
        // Only the settings the importer uses: no JWT_SECRET (it never signs a token and
        // must not be able to mint one), nothing naming its ImportJob (it calls no
        // Kubernetes API).
        let names: Vec<&str> = importer(&job)
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "DATABASE_URL",
                "REDIS_URL",
                "S3_ACCESS_KEY",
                "S3_SECRET_KEY"
            ]
        );
        // envFrom brings the ConfigMap only: a secretRef would put every key of the Secret
        // (not just the five) into the environment.
        let env_from = importer(&job).env_from.as_deref().unwrap_or_default();
        assert_eq!(env_from.len(), 1);
        assert!(env_from[0].secret_ref.is_none());
        assert_eq!(
            env_from[0].config_map_ref.as_ref().map(|c| c.name.as_str()),
            Some("bulk-import-config")
        );
        let text = serde_json::to_string(&job).unwrap();
        for pattern in ["postgres://", "redis://", "password"] {
            assert!(!text.contains(pattern), "{pattern} in the Job: {text}");
        }
    }

    #[test]
    fn the_importers_secret_keys_are_the_charts_contract() {
        // charts/tests/env_expected.json: what the chart tests hold the chart to.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/tests/env_expected.json"
        );
        let contract: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let keys: Vec<&str> = contract["secretKeys"]["importer"]
            .as_array()
            .expect("secretKeys.importer")
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, SECRET_KEYS);
    }

    #[test]
    fn the_importer_pod_labels_are_the_charts_contract() {
        // The chart's importer NetworkPolicy selects pods by these (charts/tests).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/tests/env_expected.json"
        );
        let contract: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let expected: BTreeMap<String, String> =
            serde_json::from_value(contract["importerPodLabels"].clone()).unwrap();
        let mut ours = labels(JOB_ID, Some("{release}"));
        ours.remove(JOB_ID_LABEL);
        assert_eq!(ours, expected);
        for key in crate::placement::RESERVED_LABELS {
            assert!(
                labels(JOB_ID, Some("r")).contains_key(key),
                "{key} is reserved but not set by the operator"
            );
        }
    }

    #[test]
    fn importer_pods_get_no_kubernetes_credentials() {
        let job = job_of(&ImportJob::test());
        assert_eq!(
            pod(&job).automount_service_account_token,
            Some(false),
            "no service-account token in the pod that parses untrusted files"
        );
        for var in ["IMPORTJOB_NAME", "KUBE_NAMESPACE", "JWT_SECRET"] {
            assert!(
                importer(&job).env.iter().flatten().all(|e| e.name != var),
                "{var} is not given to the importer"
            );
        }
        for var in ["BATCH_SIZE", "PROGRESS_EVERY", "IMPORT_SLOW_MS"] {
            assert_eq!(env_value(&job, var), None, "no override without tuning");
        }
    }

    #[test]
    fn tuning_overrides_become_environment_variables() {
        let ij = ImportJob::test().with_spec(|s| {
            s.tuning = Some(Tuning {
                batch_size: Some(250),
                progress_every: Some(10),
                slow_ms: Some(5),
            })
        });
        let job = job_of(&ij);
        assert_eq!(env_value(&job, "BATCH_SIZE").as_deref(), Some("250"));
        assert_eq!(env_value(&job, "PROGRESS_EVERY").as_deref(), Some("10"));
        assert_eq!(env_value(&job, "IMPORT_SLOW_MS").as_deref(), Some("5"));

        let partial = ImportJob::test().with_spec(|s| {
            s.tuning = Some(Tuning {
                batch_size: Some(7),
                ..Default::default()
            })
        });
        let job = job_of(&partial);
        assert_eq!(env_value(&job, "BATCH_SIZE").as_deref(), Some("7"));
        assert_eq!(env_value(&job, "PROGRESS_EVERY"), None);
    }

    #[test]
    fn the_importjob_owns_the_job_as_its_controller() {
        let job = job_of(&ImportJob::test());
        let owners = job.metadata.owner_references.as_deref().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        let owner = &owners[0];
        assert_eq!(owner.api_version, "bulkimport.dev/v1alpha1");
        assert_eq!(owner.kind, "ImportJob");
        assert_eq!(owner.name, name());
        assert_eq!(owner.uid, UID);
        assert_eq!(owner.controller, Some(true));
        assert_eq!(job.metadata.name.as_deref(), Some(name().as_str()));
        assert_eq!(job.metadata.namespace.as_deref(), Some(NS));
    }

    #[test]
    fn job_and_pods_carry_the_job_id_and_managed_by_labels() {
        let job = job_of(&ImportJob::test());
        let template = job
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        for labels in [job.metadata.labels.as_ref().expect("labels"), template] {
            assert_eq!(labels.get(JOB_ID_LABEL).map(String::as_str), Some(JOB_ID));
            // The controller watches Jobs and pods by this label.
            assert_eq!(
                labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("bulk-import-operator")
            );
        }
    }

    #[test]
    fn resources_and_job_limits_come_from_the_configuration() {
        let config = config_with(&[
            ("IMPORTER_IMAGE", "registry.local/bulk-import:1.2.3"),
            ("IMPORTER_IMAGE_PULL_POLICY", "Always"),
            ("IMPORTER_CPU_REQUEST", "250m"),
            ("IMPORTER_CPU_LIMIT", "2"),
            ("IMPORTER_MEMORY_REQUEST", "128Mi"),
            ("IMPORTER_MEMORY_LIMIT", "512Mi"),
            ("JOB_BACKOFF_LIMIT", "5"),
            ("JOB_ACTIVE_DEADLINE_SECONDS", "600"),
            ("JOB_TTL_SECONDS_AFTER_FINISHED", "120"),
            ("IMPORTER_SERVICE_ACCOUNT", "importer-sa"),
        ]);
        let job = build_job(&ImportJob::test(), &config).unwrap();
        let c = importer(&job);
        assert_eq!(c.image.as_deref(), Some("registry.local/bulk-import:1.2.3"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.args.as_deref(),
            Some(&["--job-id".to_string(), JOB_ID.to_string()][..])
        );
        let resources = c.resources.as_ref().expect("resources");
        assert_eq!(resources.requests, Some(quantities("250m", "128Mi")));
        assert_eq!(resources.limits, Some(quantities("2", "512Mi")));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(5));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.ttl_seconds_after_finished, Some(120));
        assert_eq!(
            pod(&job).service_account_name.as_deref(),
            Some("importer-sa")
        );

        let defaults = job_of(&ImportJob::test());
        let spec = defaults.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(3));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        assert_eq!(spec.ttl_seconds_after_finished, Some(86400));
        let resources = importer(&defaults).resources.as_ref().unwrap();
        assert_eq!(resources.requests, Some(quantities("100m", "64Mi")));
        assert_eq!(resources.limits, Some(quantities("1", "256Mi")));
    }

    #[test]
    fn disruptions_and_exit_75_are_ignored_and_exit_code_2_fails_the_job_without_retries() {
        let job = job_of(&ImportJob::test());
        let policy = job
            .spec
            .as_ref()
            .and_then(|s| s.pod_failure_policy.as_ref())
            .expect("podFailurePolicy");
        assert_eq!(
            policy.rules,
            vec![
                // First: an evicted, preempted or drained pod does not use up backoffLimit.
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    ..Default::default()
                },
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some(CONTAINER.into()),
                        operator: "In".into(),
                        values: vec![2],
                    }),
                    ..Default::default()
                },
                // "Try later" (75) does not use up backoffLimit either.
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some(CONTAINER.into()),
                        operator: "In".into(),
                        values: vec![75],
                    }),
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn placement_reaches_the_importer_pod() {
        let config = config_with(&[
            ("INSTANCE", "blue"),
            ("IMPORTER_NODE_SELECTOR", r#"{"pool": "imports"}"#),
            (
                "IMPORTER_TOLERATIONS",
                r#"[{"key": "dedicated", "operator": "Equal", "value": "imports", "effect": "NoSchedule"}]"#,
            ),
            (
                "IMPORTER_AFFINITY",
                r#"{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}"#,
            ),
            ("IMPORTER_PRIORITY_CLASS_NAME", "batch-low"),
            (
                "IMPORTER_POD_LABELS",
                r#"{"kueue.x-k8s.io/queue-name": "imports"}"#,
            ),
            (
                "IMPORTER_POD_ANNOTATIONS",
                r#"{"sidecar.istio.io/inject": "false"}"#,
            ),
            ("IMPORTER_EPHEMERAL_STORAGE_REQUEST", "128Mi"),
            ("IMPORTER_EPHEMERAL_STORAGE_LIMIT", "1Gi"),
        ]);
        let job = build_job(&ImportJob::test(), &config).unwrap();
        let spec = pod(&job);
        assert_eq!(
            spec.node_selector,
            Some(BTreeMap::from([("pool".into(), "imports".into())]))
        );
        let tolerations = spec.tolerations.as_deref().unwrap_or_default();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(tolerations[0].effect.as_deref(), Some("NoSchedule"));
        let terms = &spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required node affinity")
            .node_selector_terms;
        assert_eq!(terms[0].match_expressions.as_ref().unwrap()[0].key, "zone");
        assert_eq!(spec.priority_class_name.as_deref(), Some("batch-low"));

        let meta = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        let pod_labels = meta.labels.as_ref().unwrap();
        assert_eq!(pod_labels["kueue.x-k8s.io/queue-name"], "imports");
        // The operator's own labels are all still there.
        for (key, value) in labels(JOB_ID, Some("blue")) {
            assert_eq!(pod_labels.get(&key), Some(&value), "{key}");
        }
        // The extra labels are the pod's only (the operator's watches select Jobs by its own).
        assert!(!job
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("kueue.x-k8s.io/queue-name"));
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([(
                "sidecar.istio.io/inject".into(),
                "false".into()
            )]))
        );
        let resources = importer(&job).resources.as_ref().unwrap();
        let get = |m: &Option<BTreeMap<String, Quantity>>| {
            m.as_ref().unwrap().get("ephemeral-storage").cloned()
        };
        assert_eq!(get(&resources.requests), Some(Quantity("128Mi".into())));
        assert_eq!(get(&resources.limits), Some(Quantity("1Gi".into())));
    }

    #[test]
    fn without_placement_the_pod_is_unplaced() {
        let job = job_of(&ImportJob::test());
        let spec = pod(&job);
        assert_eq!(spec.node_selector, None);
        assert_eq!(spec.tolerations, None);
        assert_eq!(spec.affinity, None);
        assert_eq!(spec.priority_class_name, None);
        let meta = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(meta.annotations, None);
        assert_eq!(meta.labels.as_ref(), job.metadata.labels.as_ref());
        let resources = importer(&job).resources.as_ref().unwrap();
        assert_eq!(resources.requests, Some(quantities("100m", "64Mi")));
    }

    #[test]
    fn invalid_placement_stops_the_operator_naming_the_variable() {
        let settings = Settings::from_lookup_without_jwt(&|_| None).unwrap();
        for (var, value) in [
            ("IMPORTER_TOLERATIONS", "[{\"key\": "),
            ("IMPORTER_NODE_SELECTOR", "[]"),
            ("IMPORTER_POD_LABELS", r#"{"bulkimport.dev/job-id": "x"}"#),
            ("IMPORTER_EPHEMERAL_STORAGE_LIMIT", "a lot"),
        ] {
            let lookup = |k: &str| (k == var).then(|| value.to_string());
            let err = OperatorConfig::from_lookup(&lookup, &settings).expect_err(value);
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    /// Issue 25: written by hand (no jobId, no report), the job id is the ImportJob's uid and
    /// the source may be any object outside the service's areas; the API's ImportJob for an
    /// object already in storage has its jobId and report, and the object's key.
    #[test]
    fn hand_written_importjobs_and_objects_in_storage_are_valid() {
        let hand = ImportJob::test().with_spec(|s| {
            s.job_id = String::new();
            s.report = None;
            s.source.key = "orgs/1/inbox/customers.csv".into();
        });
        let uid = hand.metadata.uid.clone().unwrap();
        assert_eq!(validate(&hand).unwrap().to_string(), uid);
        let api = ImportJob::test().with_spec(|s| s.source.key = "orgs/1/inbox/a.csv".into());
        assert_eq!(validate(&api).unwrap().to_string(), JOB_ID);
        for bad in ["reports/x/errors.csv", "uploads/a.csv", "orgs/1/../2/a.csv"] {
            let ij = hand.clone().with_spec(|s| s.source.key = bad.into());
            assert!(validate(&ij).is_err(), "{bad}");
        }
        // A hand-written ImportJob may not name a report of its own choosing.
        let ij = hand.clone().with_spec(|s| {
            s.report = Some(bulk_import_core::crd::ReportLocation {
                key: format!("reports/{JOB_ID}/errors.csv"),
            })
        });
        assert!(validate(&ij).is_err());
    }

    #[test]
    fn the_release_labels_its_jobs_and_pods() {
        let config = config_with(&[("INSTANCE", "blue")]);
        let job = build_job(&ImportJob::test(), &config).unwrap();
        let template = job
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        for labels in [job.metadata.labels.as_ref().unwrap(), template] {
            assert_eq!(labels.get(INSTANCE_LABEL).map(String::as_str), Some("blue"));
        }
        let unset = job_of(&ImportJob::test());
        assert!(!unset.metadata.labels.unwrap().contains_key(INSTANCE_LABEL));
    }

    #[test]
    fn invalid_specs_are_rejected_with_the_reason() {
        let cases: Vec<(ImportJob, &str)> = vec![
            (
                ImportJob::test().with_spec(|s| s.job_id = "not-a-uuid".into()),
                "not a UUID",
            ),
            (
                ImportJob::test().with_spec(|s| s.job_id = JOB_ID.to_uppercase()),
                "not a UUID",
            ),
            (
                ImportJob::test().with_spec(|s| s.source.key = "../other/upload.csv".into()),
                "source.key",
            ),
            (
                // Another import's upload: the finalizer could be made to delete it.
                ImportJob::test().with_spec(|s| {
                    s.source.key = format!("uploads/{USER_ID}/{}.csv", uuid::Uuid::new_v4())
                }),
                "source.key",
            ),
            (
                ImportJob::test().with_spec(|s| {
                    s.report.as_mut().unwrap().key =
                        format!("reports/{}/errors.csv", uuid::Uuid::new_v4())
                }),
                "report.key",
            ),
            (
                ImportJob::test()
                    .with_spec(|s| s.report.as_mut().unwrap().key = "uploads/secret.csv".into()),
                "report.key",
            ),
            (
                ImportJob::test().with_spec(|s| s.source.key = "uploads/../../etc/passwd".into()),
                "source.key",
            ),
            (
                ImportJob::test().with_spec(|s| s.source.key = "/abs/path.csv".into()),
                "source.key",
            ),
            (
                ImportJob::test().with_spec(|s| s.source.key = String::new()),
                "source.key",
            ),
            (
                ImportJob::test()
                    .with_spec(|s| s.report.as_mut().unwrap().key = "reports/./x.csv".into()),
                "report.key",
            ),
            (
                ImportJob::test().with_spec(|s| s.report.as_mut().unwrap().key = "..".into()),
                "report.key",
            ),
            (
                ImportJob::test().with_spec(|s| s.source.size = -1),
                "negative",
            ),
            (
                {
                    let mut ij = ImportJob::test();
                    ij.metadata.name = Some("a".repeat(64));
                    ij
                },
                "longer than 63",
            ),
            (
                {
                    let mut ij = ImportJob::test();
                    ij.metadata.uid = None;
                    ij
                },
                "no uid",
            ),
        ];
        for (ij, why) in cases {
            match build_job(&ij, &OperatorConfig::defaults()) {
                Err(InvalidSpec(message)) => {
                    assert!(message.contains(why), "{message:?} should mention {why:?}")
                }
                Ok(_) => panic!("accepted an invalid spec: {:?}", ij.spec),
            }
        }
        // The limits themselves are fine.
        let mut edge = ImportJob::test().with_spec(|s| s.source.size = 0);
        edge.metadata.name = Some("a".repeat(63));
        assert!(build_job(&edge, &OperatorConfig::defaults()).is_ok());
    }
}
