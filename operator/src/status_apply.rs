//! The ImportJob's status: what it should say ([`desired_status`]: the observation, the
//! row's counters and progress) and its one writer ([`write_status`]: server-side apply with
//! the field manager `bulk-import-operator`, only when it changes, an Event on every phase
//! transition).

use crate::{
    context::{publish, Context},
    status::{conditions, Observed, Phase},
    Error, Result,
};
use bulk_import_core::{
    crd::{Condition, ImportJob, ImportJobStatus, OPERATOR_MANAGER},
    JobRow,
};
use kube::{
    api::{Api, Patch, PatchParams},
    runtime::events::EventType,
    Resource, ResourceExt,
};
use serde_json::json;

/// The status the operator applies: its observation, and the row's counters and progress.
pub(crate) fn desired_status(
    ij: &ImportJob,
    observed: &Observed,
    job_name: Option<&str>,
    row: Option<&JobRow>,
    now: &str,
) -> ImportJobStatus {
    let status = ij.status.clone().unwrap_or_default();
    let previous_conditions = status.conditions.clone().unwrap_or_default();
    let mut conds = conditions(observed, &previous_conditions, ij.meta().generation, now);
    conds.extend(oom_condition(
        observed,
        &previous_conditions,
        ij.meta().generation,
        now,
    ));
    let started = status.started_at.clone().or_else(|| {
        (observed.phase == Phase::Running || observed.phase.is_terminal()).then(|| now.into())
    });
    let finished = observed
        .phase
        .is_terminal()
        .then(|| status.finished_at.clone().unwrap_or_else(|| now.into()));
    let counters = |f: fn(&JobRow) -> i64, old: Option<i64>| row.map(f).or(old);
    let seconds = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let duration = match (started.as_deref(), finished.as_deref()) {
        (Some(s), Some(f)) => seconds(s)
            .zip(seconds(f))
            .map(|(s, f)| bulk_import_core::crd::format_duration((f - s).num_seconds())),
        _ => None,
    };
    ImportJobStatus {
        phase: Some(observed.phase.as_str().into()),
        reason: Some(observed.reason.clone()),
        message: Some(observed.message.clone()),
        job_name: job_name.map(Into::into),
        observed_generation: ij.meta().generation,
        retries: status.retries,
        job_id: bulk_import_core::crd::is_hand_written(ij)
            .then(|| bulk_import_core::crd::job_id_of(ij)),
        oom_retries: status.oom_retries,
        memory_limit: status.memory_limit.clone(),
        started_at: started,
        finished_at: finished,
        duration,
        processed_rows: counters(|r| r.processed_rows, status.processed_rows),
        inserted_rows: counters(|r| r.inserted_rows, status.inserted_rows),
        updated_rows: counters(|r| r.updated_rows, status.updated_rows),
        error_rows: counters(|r| r.error_rows, status.error_rows),
        progress_percent: row
            .map(JobRow::progress_percent)
            .or(status.progress_percent),
        // Set by the queue alone (`crate::queued::queue`).
        queue_position: None,
        conditions: Some(conds),
    }
}

/// The `OOMKilled` condition, once an OOM kill raised the memory limit: set when it happens
/// (its message `OOM-killed at 256Mi, retrying with 512Mi`), kept after.
fn oom_condition(
    observed: &Observed,
    previous: &[Condition],
    generation: Option<i64>,
    now: &str,
) -> Option<Condition> {
    if observed.reason == "RetryingAfterOOMKilled" {
        return Some(Condition {
            type_: "OOMKilled".into(),
            status: "True".into(),
            reason: "MemoryLimitRaised".into(),
            message: observed.message.clone(),
            last_transition_time: now.into(),
            observed_generation: generation,
        });
    }
    previous.iter().find(|c| c.type_ == "OOMKilled").cloned()
}

/// Server-side apply of the status, only when it changes; an Event on every phase
/// transition.
pub(crate) async fn write_status(
    ij: &ImportJob,
    ctx: &Context,
    observed: &Observed,
    job_name: Option<&str>,
    row: Option<&JobRow>,
) -> Result<()> {
    let desired = desired_status(ij, observed, job_name, row, &now());
    apply_status(ij, ctx, observed, desired).await
}

/// Applies `desired` (the status for `observed`), only when it changes; an Event on every
/// phase transition.
pub(crate) async fn apply_status(
    ij: &ImportJob,
    ctx: &Context,
    observed: &Observed,
    desired: ImportJobStatus,
) -> Result<()> {
    let status = ij.status.clone().unwrap_or_default();
    // Timestamps that would only move because time passed are not a change.
    let unchanged = ImportJobStatus {
        started_at: status.started_at.clone(),
        finished_at: status.finished_at.clone(),
        ..desired.clone()
    } == status
        && desired.started_at.is_some() == status.started_at.is_some()
        && desired.finished_at.is_some() == status.finished_at.is_some();
    if unchanged {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "bulkimport.dev/v1alpha1",
        "kind": "ImportJob",
        "status": desired,
    });
    let api: Api<ImportJob> = Api::namespaced(
        ctx.client.clone(),
        &ij.namespace().ok_or(Error::MissingNamespace)?,
    );
    api.patch_status(
        &ij.name_any(),
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if status.phase.as_deref() != Some(observed.phase.as_str()) {
        if observed.phase.is_terminal() {
            ctx.metrics
                .imports_finished
                .with_label_values(&[observed.phase.as_str(), observed.reason.as_str()])
                .inc();
        }
        let kind = if matches!(observed.phase, Phase::Failed | Phase::Invalid) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            ij,
            kind,
            observed.phase.as_str(),
            format!("{}: {}", observed.reason, observed.message),
        )
        .await;
        tracing::info!(importjob = %ij.name_any(), phase = observed.phase.as_str(), reason = %observed.reason, "phase changed");
    }
    Ok(())
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
