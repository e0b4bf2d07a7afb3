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
    crd::{hand_written_key, is_hand_written, ImportJob, ImportModeSpec, INSTANCE_LABEL},
    import_source::{check_key, file_name_of, owner_of, prefixes_of},
    options::ImportOptions,
    phase::Phase,
    repo::{self, NewJob},
    storage::StorageError,
    ImportMode, JobRow,
};
use kube::{runtime::events::EventType, ResourceExt};
use sqlx::PgPool;
use uuid::Uuid;

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

/// The row a reconcile goes on with: read (`None` without a database or a valid id), or,
/// for a hand-written ImportJob that has not ended, created. `Err(Refused)`: the spec names
/// what the organization may not import, or (not written by hand) a row that does not exist
/// — the API makes the row before the ImportJob. Database and storage failures are `Error`
/// (retried with backoff).
pub(crate) async fn row_of(
    ij: &ImportJob,
    ctx: &Context,
    id: Option<Uuid>,
) -> Result<std::result::Result<Option<JobRow>, Refused>> {
    let Some(id) = id else { return Ok(Ok(None)) };
    let row = read_row(ctx, id).await?;
    let phase = ij.status.as_ref().and_then(|s| s.phase.as_deref());
    let ended = phase.and_then(Phase::parse).is_some_and(Phase::is_terminal);
    if row.is_some() || ended || ctx.db.is_none() {
        return Ok(Ok(row));
    }
    if !is_hand_written(ij) {
        return Ok(Err(refused(
            "NoJobRow",
            format!(
                "there is no import job {id} in the database: leave jobId (and report) out to \
                 have the operator create the job from spec.source"
            ),
        )));
    }
    Ok(adopt(ij, ctx, id).await?.map(Some))
}

/// The row of a hand-written ImportJob, created (checked first: [`checked_source`]).
async fn adopt(
    ij: &ImportJob,
    ctx: &Context,
    id: Uuid,
) -> Result<std::result::Result<JobRow, Refused>> {
    let (db, org, owner, size) = match checked_source(ij, ctx).await? {
        Ok(found) => found,
        Err(refused) => return Ok(Err(refused)),
    };
    let key = &ij.spec.source.key;
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
            idempotency_key: &hand_written_key(&ij.name_any(), id),
            fingerprint: &format!("object:{key}:{mode}"),
            mode,
            source_object: key,
            file_name: file_name_of(key),
            file_size: size,
            options: &ImportOptions::default(),
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

/// The checks of a hand-written ImportJob's source: the organization exists and has an
/// owner, the key lies under its import prefixes, the object exists. The database, the
/// organization, its owner and the object's size.
async fn checked_source<'c>(
    ij: &ImportJob,
    ctx: &'c Context,
) -> Result<std::result::Result<(&'c PgPool, i32, Uuid, i64), Refused>> {
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
    Ok(Ok((db, org, owner, size)))
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
