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
    printcolumn(
        name = "Queue",
        type_ = "integer",
        json_path = ".status.queuePosition",
        description = "place in the queue for an importer slot while Queued",
        priority = 1
    ),
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
    /// The `import_jobs` row this resource runs (a UUID, lowercase), set by the API. Absent
    /// on an ImportJob written by hand: the operator then creates the row itself (its id is
    /// the ImportJob's `metadata.uid`, shown in `status.jobId`) from `source.key`, which
    /// must lie under the organization's import prefixes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
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
    /// The file in object storage: an upload, or an object under the organization's import
    /// prefixes (`orgs/<organization>/inbox/...` by default).
    pub source: SourceObject,
    /// Where the error report goes (`errors.csv`); absent on an ImportJob written by hand
    /// (the report is `reports/<status.jobId>/errors.csv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportLocation>,
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
    /// Object key (relative to the deployment's key prefix): `uploads/<user id>/<jobId>.csv`
    /// for an upload, else a key under the organization's import prefixes.
    #[schemars(regex(pattern = SOURCE_KEY_PATTERN), length(min = 1, max = 1024))]
    pub key: String,
    /// Size in bytes (the operator reads it from storage when absent).
    #[serde(default)]
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
/// Relative, no `.`/`..` or empty segment, not a folder (the operator checks the rest:
/// `bulk_import_core::import_source`).
const SOURCE_KEY_PATTERN: &str = "^([^/\\\\]+/)*[^/\\\\]+$";
const REPORT_KEY_PATTERN: &str =
    "^reports/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/errors\\.csv$";

/// What a pattern cannot say: the keys are this job's own (so that the finalizer's
/// `OBJECT_RETENTION=delete` can only ever delete this import's objects), and the spec never
/// changes (the Job is built from it once and never rebuilt). The operator checks the keys
/// again before deleting anything.
fn spec_rules() -> serde_json::Value {
    serde_json::json!([
        {
            "rule": "!self.source.key.startsWith('uploads/') \
                     || (has(self.jobId) && self.source.key.endsWith('/' + self.jobId + '.csv'))",
            "message": "source.key must be an upload of this job (uploads/<user id>/<jobId>.csv) when it lies under uploads/",
            "fieldPath": ".source.key",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "!self.source.key.matches('(^|/)[.][.]?(/|$)')",
            "message": "source.key must not have a . or .. segment",
            "fieldPath": ".source.key",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "has(self.jobId) == has(self.report)",
            "message": "jobId and report are set together (by the API) or both left out (by hand)",
        },
        {
            "rule": "!has(self.report) || self.report.key == 'reports/' + self.jobId + '/errors.csv'",
            "message": "report.key must be this job's report: reports/<jobId>/errors.csv",
            "fieldPath": ".report.key",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "has(self.jobId) == has(oldSelf.jobId) \
                     && (!has(self.jobId) || self.jobId == oldSelf.jobId) && self.mode == oldSelf.mode \
                     && self.source == oldSelf.source \
                     && has(self.report) == has(oldSelf.report) \
                     && (!has(self.report) || self.report == oldSelf.report) \
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
    /// `Queued`, `Pending`, `Running`, `Complete`, `Failed`, `Cancelled` or `Invalid`.
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
    /// While `Queued`: its place in the queue for an importer slot (1 is next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// The import job's id: `spec.jobId`, or on an ImportJob written by hand the id of the
    /// row the operator created for it (its `metadata.uid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
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

/// Whether the ImportJob was written by hand (no `jobId`): the operator makes its row.
pub fn is_hand_written(ij: &ImportJob) -> bool {
    ij.spec.job_id.is_empty()
}

/// The import job's id as written: `spec.jobId`, or the `metadata.uid` of an ImportJob
/// written by hand (empty when it has none yet).
pub fn job_id_of(ij: &ImportJob) -> String {
    if is_hand_written(ij) {
        ij.metadata.uid.clone().unwrap_or_default()
    } else {
        ij.spec.job_id.clone()
    }
}

/// The Idempotency-Key of the row the operator makes for a hand-written ImportJob: it names
/// the ImportJob, so that the API can find it (a retry, a cancel) and never makes another.
pub fn hand_written_key(name: &str, id: uuid::Uuid) -> String {
    format!("importjob:{name}/{id}")
}

/// The ImportJob that runs a job: `import-<id>`, or the hand-written one its row names.
pub fn importjob_name_of(job: &crate::JobRow) -> String {
    hand_written_name(job).map_or_else(|| resource_name(job.id), str::to_string)
}

/// The name of the hand-written ImportJob that made this row, if one did.
pub fn hand_written_name(job: &crate::JobRow) -> Option<&str> {
    name_in_key(&job.idempotency_key, job.id)
}

/// The ImportJob's name in a [`hand_written_key`] of this id.
fn name_in_key(key: &str, id: uuid::Uuid) -> Option<&str> {
    let rest = key.strip_prefix("importjob:")?;
    let (name, of) = rest.rsplit_once('/')?;
    (of == id.to_string()).then_some(name)
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
            report: Some(ReportLocation {
                key: crate::job::report_key(job.id),
            }),
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
    fn a_hand_written_importjobs_row_names_it() {
        let id = uuid::Uuid::new_v4();
        let key = hand_written_key("inbox-customers", id);
        assert_eq!(name_in_key(&key, id), Some("inbox-customers"));
        // A user's key that looks like one, for another id, or any other key, is not one.
        assert_eq!(
            name_in_key(&hand_written_key("x", uuid::Uuid::new_v4()), id),
            None
        );
        assert_eq!(name_in_key("my-key-1", id), None);
    }

    #[test]
    fn durations_read_like_kubectls() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(125), "2m5s");
        assert_eq!(format_duration(3603), "1h0m3s");
        assert_eq!(format_duration(-3), "0s");
    }
}
