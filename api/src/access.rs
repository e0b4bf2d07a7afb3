//! Who sees which job: the members of the job's organization (docs/organizations.md).
//! Another organization's job is indistinguishable from a missing one (404), so ids cannot
//! be probed; an upload still in flight is not a job yet.

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    state::AppState,
};
use bulk_import_core::{repo, JobRow};
use uuid::Uuid;

/// An id from a path: one that is not a UUID names nothing (404, as an unknown one).
pub fn path_id(id: &str) -> ApiResult<Uuid> {
    id.parse().map_err(|_| ApiError::not_found())
}

/// The job `id` (as the path gave it) if it belongs to the caller's organization; 404
/// otherwise.
pub async fn visible_job(state: &AppState, user: &AuthUser, id: &str) -> ApiResult<JobRow> {
    let id = path_id(id)?;
    repo::get_visible(&state.pool, id, user.org)
        .await?
        .ok_or_else(ApiError::not_found)
}
