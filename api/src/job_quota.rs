//! The quotas a new job passes, an upload or an import from storage (docs/configuration.md,
//! Limits): the unfinished jobs of the user and of the organization (429
//! `too_many_unfinished_jobs`), the organization's stored bytes (413
//! `storage_quota_exceeded`) and its window of new jobs (429 `too_many_new_jobs`).

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};
use axum::http::StatusCode;
use bulk_import_core::{org_quota, repo};
use uuid::Uuid;

/// 429 when the user already has `JOBS_MAX_UNFINISHED_PER_USER` jobs not done or failed, or
/// their organization `JOBS_MAX_UNFINISHED_PER_ORG` — unless `key` is already one of theirs
/// (a replay answers with its job, not 429).
pub(crate) async fn unfinished_jobs_quota(
    state: &AppState,
    user: Uuid,
    org: i32,
    key: &str,
) -> ApiResult<()> {
    let l = &state.settings.limits;
    let (max_user, max_org) = (
        l.jobs_max_unfinished_per_user,
        l.fair.jobs_max_unfinished_per_org,
    );
    let n = repo::unfinished_of(&state.pool, user, org, key).await?;
    let message = if n.replay {
        return Ok(());
    } else if n.user >= max_user {
        format!("you have {} imports not finished yet (at most {max_user}); retry when one has finished", n.user)
    } else if n.org >= max_org {
        format!("your organization has {} imports not finished yet (at most {max_org}); retry when one has finished", n.org)
    } else {
        return Ok(());
    };
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_unfinished_jobs",
        message,
    );
    e.retry_after = Some(30);
    Err(e)
}

/// 413 `storage_quota_exceeded`: the organization's uploads and reports would pass `quota`.
pub(crate) fn quota_exceeded(quota: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "storage_quota_exceeded",
        format!(
            "your organization's imports would keep more than {quota} bytes in storage \
             (uploads and reports of imports not deleted); delete finished imports to make room"
        ),
    )
}

/// A new job for the organization: 413 `storage_quota_exceeded` when its uploads and reports
/// leave no room for this file (`declared`: its Content-Length), 429 `too_many_new_jobs` past
/// `JOBS_CREATED_MAX_PER_ORG` in the window. Returns the room left, which caps the upload as it
/// streams. Uploads of one organization that run at once each see the room left at their
/// start (at most `UPLOADS_MAX_PER_ORG` of them).
pub(crate) async fn admit_new_job(
    state: &AppState,
    org: i32,
    declared: Option<u64>,
) -> ApiResult<u64> {
    let fair = &state.settings.limits.fair;
    let stored = repo::stored_bytes(&state.pool, org).await?.max(0) as u64;
    let room = fair.org_storage_quota_bytes.saturating_sub(stored);
    // The declared length includes the multipart framing: a little slack for it.
    if room == 0 || declared.is_some_and(|n| n > room.saturating_add(64 * 1024)) {
        return Err(quota_exceeded(fair.org_storage_quota_bytes));
    }
    let counted = org_quota::count_new_job(&state.pool, org, fair.jobs_created_window).await?;
    if counted.created > fair.jobs_created_max_per_org {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_new_jobs",
            format!(
                "your organization started {} imports in {} s (at most {}); retry later",
                fair.jobs_created_max_per_org,
                fair.jobs_created_window.as_secs(),
                fair.jobs_created_max_per_org
            ),
        );
        e.retry_after = Some(counted.window_left as u64);
        return Err(e);
    }
    Ok(room)
}
