//! `POST /imports` with a JSON body: an import of an object already in storage, under the
//! caller's organization's import prefixes (`bulk_import_core::import_source`; by default
//! `orgs/<organization id>/inbox/`). Keys only, in the service's own bucket: no other
//! bucket, no URL the server would fetch. The object is not the service's: it is never
//! deleted (not by the job's deletion, nor by any sweep).
//!
//! The Idempotency-Key works as for an upload: the same key with the same source, mode and
//! options answers 200 with the same job; with anything else 422 `idempotency_key_reused`.
//! The job is created `pending` with the object's size (read from storage: 422
//! `source_not_found` when it is missing) and handed to the executor like an upload.

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    job_quota::{admit_new_job, unfinished_jobs_quota},
    state::AppState,
    upload::idempotency_key,
    upload_options::{import_options, parse_mode},
    view::JobView,
};
use axum::{
    http::{HeaderMap, StatusCode},
    Json,
};
use bulk_import_core::{
    import_source::{check_key, file_name_of, prefixes_of},
    job::fingerprint,
    repo::{self, NewJob},
    storage::StorageError,
    JobRow,
};
use serde::Deserialize;
use std::collections::HashMap;
use uuid::Uuid;

/// The object to import.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    /// The object's key in the service's bucket (relative to its key prefix), under one of
    /// the organization's import prefixes.
    #[schema(example = "orgs/1/inbox/customers.csv")]
    pub key: String,
}

/// `POST /imports` with `Content-Type: application/json`: the options are those of an
/// upload's query (docs/api.md, Upload options).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectImport {
    pub source: SourceRef,
    /// `insert_only` (default) or `upsert`.
    pub mode: Option<String>,
    pub dry_run: Option<bool>,
    pub max_errors: Option<i64>,
    pub delimiter: Option<String>,
    pub encoding: Option<String>,
    /// As the upload's `columns` query parameter.
    pub columns: Option<String>,
}

impl ObjectImport {
    /// The options as an upload's query would give them, so that they are checked alike.
    fn params(&self) -> HashMap<String, String> {
        let mut p = HashMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                p.insert(k.to_string(), v);
            }
        };
        put("mode", self.mode.clone());
        put("dry_run", self.dry_run.map(|b| b.to_string()));
        put("max_errors", self.max_errors.map(|n| n.to_string()));
        put("delimiter", self.delimiter.clone());
        put("encoding", self.encoding.clone());
        put("columns", self.columns.clone());
        p
    }
}

#[tracing::instrument(skip_all, fields(user_id = %caller.id, org_id = caller.org))]
pub async fn create_job(
    state: AppState,
    caller: AuthUser,
    headers: HeaderMap,
    body: ObjectImport,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let params = body.params();
    let mode = parse_mode(&params)?;
    let options = import_options(&params)?;
    let key = idempotency_key(&headers)?;
    let source = body.source.key;
    let prefixes = prefixes_of(&state.pool, caller.org)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's organization does not exist"))?;
    check_key(&prefixes, &source)
        .map_err(|why| ApiError::unprocessable("source_not_allowed", why))?;
    let print = fingerprint(&format!("object:{source}"), mode, &options);
    if let Some(existing) = repo::find_by_key(&state.pool, caller.id, &key).await? {
        return replay(&existing, &print);
    }
    unfinished_jobs_quota(&state, caller.id, caller.org, &key).await?;
    let size = object_size(&state, &source).await?;
    admit_new_job(&state, caller.org, Some(size)).await?;
    let id = Uuid::new_v4();
    let job = NewJob {
        id,
        org_id: caller.org,
        user_id: caller.id,
        idempotency_key: &key,
        fingerprint: &print,
        mode,
        source_object: &source,
        file_name: file_name_of(&source),
        file_size: size as i64,
        options: &options,
    };
    if !repo::create_from_object(&state.pool, &job).await? {
        // Another request with the same key got there first.
        let existing = repo::find_by_key(&state.pool, caller.id, &key)
            .await?
            .ok_or_else(|| ApiError::internal("an Idempotency-Key taken, then gone"))?;
        return replay(&existing, &print);
    }
    let job = repo::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::internal("a job created, then gone"))?;
    tracing::info!(job_id = %id, %source, size, %mode, "import created from an object in storage");
    crate::upload::hand_over(&state, id).await;
    Ok((StatusCode::CREATED, Json(JobView::from(&job))))
}

/// The object's size; 422 `source_not_found` when there is none.
async fn object_size(state: &AppState, source: &str) -> ApiResult<u64> {
    match state.storage.size(source).await {
        Ok(size) => Ok(size),
        Err(StorageError::NotFound(_)) => Err(ApiError::unprocessable(
            "source_not_found",
            format!("there is no object {source:?} in storage"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "reading the size of a source object failed");
            Err(ApiError::unavailable("storage"))
        }
    }
}

/// The same key again: the same source, mode and options give the existing job.
fn replay(existing: &JobRow, print: &str) -> ApiResult<(StatusCode, Json<JobView>)> {
    if existing.request_fingerprint != print {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different source, mode or options",
        ));
    }
    Ok((StatusCode::OK, Json(JobView::from(existing))))
}
