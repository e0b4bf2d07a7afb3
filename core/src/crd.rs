//! The `ImportJob` custom resource (`bulkimport.dev/v1alpha1`): what the API creates for each
//! upload on Kubernetes and the operator turns into a batch/v1 Job running the importer.
//! The spec carries no secret: credentials reach the pod by `secretKeyRef`.
//! `bulk-import-operator crd` prints the CRD generated from these types.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "bulkimport.dev";
/// Field manager of the only writer of an ImportJob's status (server-side apply).
pub const OPERATOR_MANAGER: &str = "bulk-import-operator";
/// Label on ImportJobs, Jobs and pods: the Helm release they belong to (`INSTANCE`), so that
/// two releases in one namespace leave each other's imports alone.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label on ImportJobs, Jobs and pods: the import job's id.
pub const JOB_ID_LABEL: &str = "bulkimport.dev/job-id";

/// An import of one uploaded CSV file into Postgres.
// Each `printcolumn(...)` repeats `type_ = "string"`-style keys, which this lint mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "bulkimport.dev",
    version = "v1alpha1",
    kind = "ImportJob",
    namespaced,
    status = "ImportJobStatus",
    shortname = "ij",
    category = "bulk-import",
    doc = "An import of one uploaded CSV file into Postgres, run as a Kubernetes Job.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Processed",
        type_ = "integer",
        json_path = ".status.processedRows"
    ),
    printcolumn(name = "Errors", type_ = "integer", json_path = ".status.errorRows"),
    printcolumn(
        name = "Progress",
        type_ = "number",
        json_path = ".status.progressPercent",
        description = "percent of the file read"
    ),
    printcolumn(
        name = "Inserted",
        type_ = "integer",
        json_path = ".status.insertedRows",
        priority = 1
    ),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updatedRows",
        priority = 1
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".status.duration",
        description = "how long the import ran (set when it ends)"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startedAt",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1
    ),
    printcolumn(
        name = "Organization",
        type_ = "integer",
        json_path = ".spec.organization",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = spec_rules()))]
pub struct ImportJobSpec {
    /// The `import_jobs` row this resource runs (a UUID, lowercase).
    #[schemars(regex(pattern = UUID_PATTERN))]
    pub job_id: String,
    /// The organization the import belongs to (its id): the only one whose customers it
    /// reads and writes. Absent only on ImportJobs made before organizations existed (the
    /// importer takes the organization from the job row either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub organization: Option<i32>,
    /// `insert_only` or `upsert`.
    pub mode: ImportModeSpec,
    /// The uploaded file in object storage.
    pub source: SourceObject,
    /// Where the error report goes (`errors.csv`).
    pub report: ReportLocation,
    /// Overrides of the importer's tuning for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<Tuning>,
    /// `true` cancels the import: the operator records it in Postgres, stops the Job (the
    /// importer stops at a batch boundary) and the phase becomes `Cancelled`. The only field
    /// that may change; it cannot be set back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
    /// Raised by one to run a `Failed` import again from its checkpoint (the API's
    /// `POST /imports/{id}/retry` does it; so can `kubectl patch`): the operator moves the
    /// Postgres row back to `pending`, the phase to `Pending` and creates a new Job,
    /// `<name>-retry-<retries>`. It can only grow; a raise while the import is not `Failed`
    /// is acknowledged (`status.retries`) and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub retries: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum ImportModeSpec {
    #[serde(rename = "insert_only")]
    InsertOnly,
    #[serde(rename = "upsert")]
    Upsert,
}

impl From<crate::ImportMode> for ImportModeSpec {
    fn from(m: crate::ImportMode) -> Self {
        match m {
            crate::ImportMode::InsertOnly => ImportModeSpec::InsertOnly,
            crate::ImportMode::Upsert => ImportModeSpec::Upsert,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceObject {
    /// Object key (relative to the deployment's key prefix): `uploads/<user id>/<jobId>.csv`.
    #[schemars(regex(pattern = UPLOAD_KEY_PATTERN))]
    pub key: String,
    /// Size in bytes.
    pub size: i64,
    /// The name the client gave the file (display only).
    #[serde(default)]
    pub file_name: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportLocation {
    /// `reports/<jobId>/errors.csv`.
    #[schemars(regex(pattern = REPORT_KEY_PATTERN))]
    pub key: String,
}

/// A lowercase hyphenated UUID, as `uuid::Uuid` prints it.
pub const UUID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
const UPLOAD_KEY_PATTERN: &str = "^uploads/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\.csv$";
const REPORT_KEY_PATTERN: &str =
    "^reports/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/errors\\.csv$";

/// What a pattern cannot say: the keys are this job's own (so that the finalizer's
/// `OBJECT_RETENTION=delete` can only ever delete this import's objects), and the spec never
/// changes (the Job is built from it once and never rebuilt). The operator checks the keys
/// again before deleting anything.
fn spec_rules() -> serde_json::Value {
    serde_json::json!([
        {
            "rule": "self.source.key.endsWith('/' + self.jobId + '.csv')",
            "message": "source.key must be an upload of this job: uploads/<user id>/<jobId>.csv",
            "fieldPath": ".source.key",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "self.report.key == 'reports/' + self.jobId + '/errors.csv'",
            "message": "report.key must be this job's report: reports/<jobId>/errors.csv",
            "fieldPath": ".report.key",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "self.jobId == oldSelf.jobId && self.mode == oldSelf.mode \
                     && self.source == oldSelf.source && self.report == oldSelf.report \
                     && has(self.organization) == has(oldSelf.organization) \
                     && (!has(self.organization) || self.organization == oldSelf.organization) \
                     && has(self.tuning) == has(oldSelf.tuning) \
                     && (!has(self.tuning) || self.tuning == oldSelf.tuning)",
            "message": "spec is immutable but for cancelRequested and retries: the Job is built from it",
        },
        {
            "rule": "!has(oldSelf.cancelRequested) || !oldSelf.cancelRequested \
                     || (has(self.cancelRequested) && self.cancelRequested)",
            "message": "a cancel cannot be withdrawn",
            "fieldPath": ".cancelRequested",
        },
        {
            "rule": "!has(oldSelf.retries) || (has(self.retries) && self.retries >= oldSelf.retries)",
            "message": "retries can only grow",
            "fieldPath": ".retries",
        },
    ])
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tuning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_ms: Option<u64>,
}

/// Written by the operator only (field manager `bulk-import-operator`): phase, reason,
/// conditions, Job name and timestamps from the Job and its pods, counters and progress
/// mirrored from the Postgres row (at most once a second). The importer has no Kubernetes
/// credentials.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportJobStatus {
    /// `Pending`, `Running`, `Complete`, `Failed`, `Cancelled` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Machine-readable reason of the phase (e.g. `OOMKilled`, `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The batch/v1 Job running the importer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// How long the import ran, from `startedAt` to `finishedAt` (e.g. `2m5s`); set when it
    /// ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted_rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percent: Option<f64>,
    /// The `spec.retries` the operator has acted on: when it is lower, a retry is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// How many times the importer was OOM-killed and run again by a new Job with a larger
    /// memory limit (`<name>-oom-<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_retries: Option<u32>,
    /// The importer's memory limit after an OOM kill (doubled each time, up to
    /// `IMPORTER_MEMORY_LIMIT_MAX`); unset: the operator's `IMPORTER_MEMORY_LIMIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// `Complete` and `Failed`, so that `kubectl wait --for=condition=Complete` works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
}

/// The usual Kubernetes condition shape.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Conditions are a list map keyed by `type`, so that server-side apply merges them by type.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let obj = schema.ensure_object();
    obj.insert("x-kubernetes-list-type".into(), "map".into());
    obj.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// The name of the ImportJob (and of its Job) for an import job id.
pub fn resource_name(job_id: uuid::Uuid) -> String {
    format!("import-{job_id}")
}

/// A Kubernetes client from the in-cluster configuration or `KUBECONFIG`.
pub async fn kube_client() -> Result<kube::Client, kube::Error> {
    // Two TLS crypto providers are linked in (ring here, aws-lc for S3): name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    kube::Client::try_default().await
}

/// The ImportJob for an import job row; `instance` (the release, `INSTANCE`) labels it for
/// the operator of the same release.
pub fn import_job_for(job: &crate::JobRow, instance: Option<&str>) -> ImportJob {
    let mut ij = ImportJob::new(
        &resource_name(job.id),
        ImportJobSpec {
            job_id: job.id.to_string(),
            organization: Some(job.org_id),
            mode: job.mode().into(),
            source: SourceObject {
                key: job.source_object.clone(),
                size: job.file_size,
                file_name: job.file_name.clone(),
            },
            report: ReportLocation {
                key: crate::job::report_key(job.id),
            },
            tuning: None,
            cancel_requested: None,
            retries: None,
        },
    );
    ij.metadata.labels = Some(
        [
            (
                "app.kubernetes.io/name".to_string(),
                "bulk-import".to_string(),
            ),
            (JOB_ID_LABEL.to_string(), job.id.to_string()),
        ]
        .into_iter()
        .chain(instance.map(|i| (INSTANCE_LABEL.to_string(), i.to_string())))
        .collect(),
    );
    ij
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = ImportJob::crd();
    format!(
        "# Generated by `bulk-import-operator crd` from core/src/crd.rs; do not edit.\n{}",
        serde_saphyr::to_string(&crd).expect("the CRD serialises")
    )
}

/// A duration as kubectl prints one (`45s`, `2m5s`, `1h0m3s`).
pub fn format_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectls() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(125), "2m5s");
        assert_eq!(format_duration(3603), "1h0m3s");
        assert_eq!(format_duration(-3), "0s");
    }
}
