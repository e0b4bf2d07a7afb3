//! `POST /imports/preview`: how a file would be imported, from its first 64 KiB, before
//! anything is written (docs/api.md). Nothing is stored: no job row, no object. The file part
//! streams like an upload's (the same limits, an upload slot), its head is kept and the rest
//! read and discarded, so that the client always reads the answer.

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::query_params,
    receive::{receive, upload_slot, Sink, Take},
    routes::imports::UploadForm,
    sniff,
    state::AppState,
    upload_limits::LimitedMultipart,
    upload_options::import_options,
};
use axum::{
    extract::{DefaultBodyLimit, RawQuery, State},
    routing::post,
    Json, Router,
};
use bulk_import_importer::dialect::SAMPLE_BYTES;
use bulk_import_types::PreviewView;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/imports/preview",
        post(preview)
            .layer(DefaultBodyLimit::disable())
            .layer(axum::middleware::map_response(
                crate::upload_limits::close_after_error,
            )),
    )
}

/// Preview a CSV file: the detected dialect, the column each header maps to, the first 20
/// rows as they would be read and their validation. Writes nothing.
#[utoipa::path(post, path = "/imports/preview", operation_id = "preview_import", tag = "imports",
    params(("delimiter" = Option<String>, Query, description = "as for POST /imports"),
           ("encoding" = Option<String>, Query, description = "as for POST /imports"),
           ("columns" = Option<String>, Query, description = "as for POST /imports: `email:E-mail Address,phone:Mobile Number` or a JSON object")),
    request_body(content = UploadForm, content_type = "multipart/form-data", description = "field `file`: the CSV (only its first 64 KiB are read)"),
    responses((status = 200, body = PreviewView),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 408, body = crate::error::ErrorBody, description = "as for POST /imports"),
              (status = 413, body = crate::error::ErrorBody, description = "upload_too_large, upload_head_too_large, too_many_parts"),
              (status = 422, body = crate::error::ErrorBody, description = "an invalid option, invalid_columns (also: a mapped header the file does not have), missing_email_column"),
              (status = 429, body = crate::error::ErrorBody, description = "too_many_uploads")),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    multipart: Result<LimitedMultipart, ApiError>,
) -> ApiResult<Json<PreviewView>> {
    let params = query_params(query);
    let options = import_options(&params)?;
    let LimitedMultipart {
        mut multipart,
        limits,
    } = multipart?;
    let _slot = upload_slot(&state, user.id, user.org)?;
    let take = Take {
        limit: state.settings.max_upload_bytes,
        idle: state.settings.api.upload_idle_timeout,
        head: SAMPLE_BYTES,
    };
    let received = receive(&mut multipart, &limits, take, Sink::Discard).await?;
    Ok(Json(sniff::preview_of(&options, &received)?))
}
