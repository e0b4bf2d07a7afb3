//! `GET /customers`, `GET /customers/export` and `GET /customers/{email}`: the caller's
//! organization's customers (queries in `crate::customers`).

use crate::{
    auth::AuthUser,
    customers::{self, Customer, CustomerDetail},
    error::{ApiError, ApiResult},
    extract::{page_limit, query_params},
    state::AppState,
};
use axum::{
    body::Body,
    extract::{Path, RawQuery, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use bulk_import_core::Email;
use futures_util::StreamExt;
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/customers", get(list))
        .route("/customers/export", get(export))
        .route("/customers/{email}", get(show))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CustomerPage {
    pub items: Vec<Customer>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next_after: Option<String>,
}

/// The organization's customers by email, a page at a time (keyset pagination).
#[utoipa::path(get, path = "/customers", operation_id = "list_customers", tag = "customers",
    params(("limit" = Option<i64>, Query, description = "1–1000, default 100"),
           ("after" = Option<String>, Query, description = "the `next_after` of the page before: customers after this email"),
           ("q" = Option<String>, Query, description = "only emails starting with this (case-insensitive)")),
    responses((status = 200, body = CustomerPage), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody, description = "`invalid_query`")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<CustomerPage>> {
    let params = query_params(query);
    let limit = page_limit(&params)?;
    let text = |name: &str| -> ApiResult<Option<String>> {
        match params.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) if v.len() > 320 => Err(ApiError::unprocessable(
                "invalid_query",
                format!("{name} is longer than 320 bytes"),
            )),
            Some(v) => Ok(Some(v.trim().to_lowercase())),
        }
    };
    let (after, prefix) = (text("after")?, text("q")?);
    let items = customers::page(
        &state.pool,
        user.org,
        after.as_deref(),
        prefix.as_deref(),
        limit,
    )
    .await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|c| c.email.clone()))
        .flatten();
    Ok(Json(CustomerPage { items, next_after }))
}

/// One customer, with the import and line that last wrote it.
#[utoipa::path(get, path = "/customers/{email}", operation_id = "show_customer", tag = "customers", params(("email" = String, Path)),
    responses((status = 200, body = CustomerDetail), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    Path(email): Path<String>,
) -> ApiResult<Json<CustomerDetail>> {
    // Stored emails are normalised (trimmed, lower-cased); one that cannot be valid is not
    // there.
    let email = Email::parse(&email).map_err(|_| ApiError::not_found())?;
    customers::get(&state.pool, user.org, email.as_str())
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// Every customer of the organization as CSV (`email,first_name,last_name,phone,city`, by
/// email), streamed; the file imports back as it is.
#[utoipa::path(get, path = "/customers/export", tag = "customers",
    responses((status = 200, content_type = "text/csv", description = "the customers, streamed"),
              (status = 429, body = crate::error::ErrorBody, description = "`too_many_exports`: EXPORTS_MAX_CONCURRENT exports are streaming"),
              (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn export(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    let permit = state
        .export_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_exports",
                "the server is streaming too many exports; retry shortly",
            );
            e.retry_after = Some(10);
            e
        })?;
    let mut rx = customers::export(state.pool.clone(), user.org, permit);
    // The first chunk (the header, at least) shows that the copy started.
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::unavailable("database")),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = futures_util::stream::once(async move { Ok::<_, sqlx::Error>(first) }).chain(rest);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"customers.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
