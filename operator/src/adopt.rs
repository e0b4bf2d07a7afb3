//! ImportJobs written by hand (`kubectl apply`): `spec.source.key` names an object already in
//! storage under the organization's import prefixes, `spec.organization` the organization,
//! and there is no `jobId`. The operator checks the key against the organization's prefixes
//! in Postgres, reads the object's size, and creates the job row itself — its id is the
//! ImportJob's `metadata.uid` (so a repeated reconcile finds the same row, never makes a
//! second), attributed to the organization's owner — then runs it like an upload. The id is
//! shown in `status.jobId`. A key outside the prefixes, an unknown organization or a missing
//! object fail the ImportJob with the reason (and a Warning Event).
//!
//! Also: an ImportJob without this release's instance label is not taken, and gets a Warning
//! Event saying so ([`warn_unlabeled`]) instead of silence.

use crate::{
    context::{publish, read_row, Context},
    Error, Result,
};
use bulk_import_core::{
    crd::{ImportJob, ImportModeSpec, INSTANCE_LABEL},
    import_source::{check_key, file_name_of, owner_of, prefixes_of},
    options::ImportOptions,
    repo::{self, NewJob},
    storage::StorageError,
    ImportMode, JobRow,
};
use kube::{runtime::events::EventType, ResourceExt};
use uuid::Uuid;

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

/// Why a hand-written ImportJob cannot be run: the status reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

fn refused(reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

/// The row of a hand-written ImportJob, created if it does not exist yet; `Err(Refused)`
/// when the spec names what the organization may not import. Database and storage
/// failures are `Error` (retried with backoff).
pub(crate) async fn adopt(
    ij: &ImportJob,
    ctx: &Context,
    id: Uuid,
) -> Result<std::result::Result<JobRow, Refused>> {
    if let Some(row) = read_row(ctx, id).await? {
        return Ok(Ok(row));
    }
    let (Some(db), Some(storage)) = (&ctx.db, &ctx.storage) else {
        return Ok(Err(refused(
            "NoDatabase",
            "the operator has no database or storage to create the import from",
        )));
    };
    let Some(org) = ij.spec.organization else {
        return Ok(Err(refused(
            "OrganizationRequired",
            "spec.organization is required on an ImportJob without jobId",
        )));
    };
    let Some(prefixes) = prefixes_of(db, org).await? else {
        return Ok(Err(refused(
            "UnknownOrganization",
            format!("organization {org} does not exist"),
        )));
    };
    let key = &ij.spec.source.key;
    if let Err(why) = check_key(&prefixes, key) {
        return Ok(Err(refused("SourceNotAllowed", why)));
    }
    let Some(owner) = owner_of(db, org).await? else {
        return Ok(Err(refused(
            "UnknownOrganization",
            format!("organization {org} has no owner to attribute the import to"),
        )));
    };
    let size = match storage.size(key).await {
        Ok(size) => size as i64,
        Err(StorageError::NotFound(_)) => {
            return Ok(Err(refused(
                "SourceNotFound",
                format!("no object {key:?} in storage"),
            )))
        }
        Err(e) => return Err(Error::Storage(e.to_string())),
    };
    let options = ImportOptions::default();
    let mode = match ij.spec.mode {
        ImportModeSpec::InsertOnly => ImportMode::InsertOnly,
        ImportModeSpec::Upsert => ImportMode::Upsert,
    };
    let created = repo::create_from_object(
        db,
        &NewJob {
            id,
            org_id: org,
            user_id: owner,
            idempotency_key: &format!("importjob:{id}"),
            fingerprint: &format!("object:{key}:{mode}"),
            mode,
            source_object: key,
            file_name: file_name_of(key),
            file_size: size,
            options: &options,
        },
    )
    .await?;
    if created {
        tracing::info!(importjob = %ij.name_any(), job_id = %id, %key, "import created from a hand-written ImportJob");
        let note = format!("created import {id} from {key} ({size} bytes)");
        publish(ctx, ij, EventType::Normal, "ImportCreated", note).await;
    }
    match read_row(ctx, id).await? {
        Some(row) => Ok(Ok(row)),
        None => Err(Error::Storage(format!("the row of import {id} is missing"))),
    }
}

/// An ImportJob this release does not take (no `app.kubernetes.io/instance` label) gets one
/// Warning Event naming the label to add.
pub(crate) async fn warn_unlabeled(ctx: &Context, ij: &ImportJob, instance: &str) {
    if ij.labels().contains_key(INSTANCE_LABEL) {
        return;
    }
    let note = format!("not taken by this release: add label {INSTANCE_LABEL}={instance}");
    tracing::warn!(importjob = %ij.name_any(), "{note}");
    publish(ctx, ij, EventType::Warning, "NotTaken", note).await;
}
