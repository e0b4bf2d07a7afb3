//! The organization's import prefixes (`GET`/`PUT /orgs/current/import-prefixes`): where in
//! the service's bucket objects may be imported from without an upload (`POST /imports` with
//! a JSON body, or an ImportJob written by hand). Every prefix lies under
//! `orgs/<organization id>/`; the default is `orgs/<organization id>/inbox/`. Setting them is
//! for owners and admins (403 `forbidden` for members).

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::Json,
    state::AppState,
};
use axum::{extract::State, routing::get, Router};
use bulk_import_core::import_source::{check_prefix, prefixes_of, set_prefixes, MAX_PREFIXES};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new().route("/orgs/current/import-prefixes", get(show).put(replace))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportPrefixes {
    /// Key prefixes ending with `/`, each under `orgs/<organization id>/` (at most 20; an
    /// empty list allows no import from storage).
    #[schema(example = json!(["orgs/1/inbox/"]))]
    pub prefixes: Vec<String>,
}

/// The organization's import prefixes.
#[utoipa::path(get, path = "/orgs/current/import-prefixes", tag = "organizations",
    responses((status = 200, body = ImportPrefixes), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<ImportPrefixes>> {
    let prefixes = prefixes_of(&state.pool, user.org)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's organization does not exist"))?;
    Ok(axum::Json(ImportPrefixes { prefixes }))
}

/// Replace the organization's import prefixes (owners and admins).
#[utoipa::path(put, path = "/orgs/current/import-prefixes", tag = "organizations",
    request_body = ImportPrefixes,
    responses((status = 200, body = ImportPrefixes),
              (status = 403, body = crate::error::ErrorBody, description = "`forbidden`: members may not set them"),
              (status = 422, body = crate::error::ErrorBody, description = "`invalid_prefix`")),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<ImportPrefixes>,
) -> ApiResult<axum::Json<ImportPrefixes>> {
    user.must_manage()?;
    if body.prefixes.len() > MAX_PREFIXES {
        return Err(ApiError::unprocessable(
            "invalid_prefix",
            format!("at most {MAX_PREFIXES} prefixes"),
        ));
    }
    for p in &body.prefixes {
        check_prefix(user.org, p).map_err(|why| ApiError::unprocessable("invalid_prefix", why))?;
    }
    let mut prefixes = body.prefixes;
    prefixes.sort();
    prefixes.dedup();
    set_prefixes(&state.pool, user.org, &prefixes).await?;
    tracing::info!(org_id = user.org, by = %user.id, ?prefixes, "import prefixes set");
    Ok(axum::Json(ImportPrefixes { prefixes }))
}
