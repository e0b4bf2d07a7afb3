//! `GET /imports/{id}/events`: Server-Sent Events with progress snapshots until the job
//! ends. Snapshots come from the importer's Redis publications, received by one
//! subscription per API process ([`crate::progress_hub::ProgressHub`]) and fanned out to the streams; Postgres is
//! polled as well (every five seconds while the hub is subscribed, twice a second when it is
//! not) so that nothing is missed and the stream keeps working when Redis is down.
//!
//! Bounds (docs/configuration.md, Limits): at most `EVENTS_MAX_PER_USER` streams per user,
//! `EVENTS_MAX_PER_ORG` per organization and `EVENTS_MAX_CONCURRENT` in all per API process,
//! of which `EVENTS_RESERVED` only for organizations holding none ([`crate::quota`]); 429
//! `too_many_streams` past them. A
//! stream ends after the job's final snapshot (status `done` or `failed`), or with a final
//! `event: end` (`{"reason": "token_expired"}`, `{"reason": "membership_ended"}` or
//! `{"reason": "database_unavailable"}`) when the caller's token expires, the caller is
//! removed from the organization or the database fails.

use crate::{
    access::visible_job,
    auth::AuthSession,
    error::{ApiError, ApiResult},
    quota::{Full, Slot},
    state::AppState,
    view::JobView,
};
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
    routing::get,
    Router,
};
use bulk_import_core::{accounts, repo};
use futures_util::Stream;
use std::{convert::Infallible, time::Duration};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/imports/{id}/events", get(events))
}

/// Live progress as Server-Sent Events (`event: progress`, data: the job JSON) until the job
/// ends; `event: end` when the stream stops early (token expired, database down).
#[utoipa::path(get, path = "/imports/{id}/events", tag = "imports", params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "text/event-stream", description = "progress snapshots until the job ends; `event: end` when cut short"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody, description = "too many open streams")),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    session: AuthSession,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = visible_job(&state, &session.user, &id).await?;
    let slot = state
        .event_slots
        .try_acquire(session.user.id, session.user.org)
        .map_err(|full| {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                match full {
                    Full::User => "you have too many event streams open; close one first",
                    Full::Org => {
                        "your organization has too many event streams open; close one first"
                    }
                    Full::Process => "the server has too many event streams open; retry shortly",
                },
            );
            e.retry_after = Some(5);
            e
        })?;
    let (tx, rx) = mpsc::channel::<Event>(16);
    tokio::spawn(relay(state, job.id, session, tx, slot));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|e| (Ok(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn event(view: &JobView) -> Event {
    Event::default()
        .event("progress")
        .json_data(view)
        .expect("job view serialises")
}

fn end(reason: &str) -> Event {
    Event::default()
        .event("end")
        .json_data(serde_json::json!({ "reason": reason }))
        .expect("serialises")
}

/// Sends the current state, then every change, until the job ends, the token expires, the
/// caller stops being a member of the job's organization, the database fails or the client
/// leaves. `_slot` is the stream's quota slot, freed with it.
async fn relay(
    state: AppState,
    id: Uuid,
    session: AuthSession,
    tx: mpsc::Sender<Event>,
    _slot: Slot,
) {
    let expires_at = session.expires_at;
    let mut wakeups = state.progress.subscribe();
    let expiry = {
        let left = expires_at - chrono::Utc::now().timestamp();
        tokio::time::Instant::now() + Duration::from_secs(left.max(0) as u64)
    };
    let mut last: Option<String> = None;
    loop {
        if tokio::time::Instant::now() >= expiry {
            let _ = tx.send(end("token_expired")).await;
            return;
        }
        let job = match read_current(&state, &session, id).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(reason) => {
                let _ = tx.send(end(reason)).await;
                return;
            }
        };
        let view = JobView::from(&job);
        let json = serde_json::to_string(&view).expect("serialises");
        if last.as_deref() != Some(&json) {
            if tx.send(event(&view)).await.is_err() {
                return;
            }
            last = Some(json);
        }
        if job.status().is_terminal() {
            // The last progress event (status done or failed) is the end.
            return;
        }
        if !wait_for_change(&state, id, &mut wakeups, expiry, &tx).await {
            return;
        }
    }
}

/// Waits until job `id` may have changed: its wake-up, the poll interval (short when no
/// Redis relay wakes this replica), or the token's expiry. False when the client left.
async fn wait_for_change(
    state: &AppState,
    id: Uuid,
    wakeups: &mut broadcast::Receiver<Uuid>,
    expiry: tokio::time::Instant,
    tx: &mpsc::Sender<Event>,
) -> bool {
    let poll_every = if state.progress.subscribed() {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(500)
    };
    let mine = async {
        loop {
            match wakeups.recv().await {
                Ok(job) if job == id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    };
    tokio::select! {
        _ = mine => true,
        _ = tokio::time::sleep(poll_every) => true,
        _ = tokio::time::sleep_until(expiry) => true,
        _ = tx.closed() => false,
    }
}

/// The job row as it is now, or why the stream ends: a removed member's stream ends with its
/// membership, and a database that does not answer ends it too.
async fn read_current(
    state: &AppState,
    session: &AuthSession,
    id: Uuid,
) -> Result<Option<bulk_import_core::JobRow>, &'static str> {
    let unavailable = |e: sqlx::Error| {
        tracing::error!(job_id = %id, error = %e, "event stream: database unavailable");
        "database_unavailable"
    };
    match accounts::membership(&state.pool, session.user.id).await {
        Ok(Some((org, _))) if org == session.user.org => {}
        Ok(_) => return Err("membership_ended"),
        Err(e) => return Err(unavailable(e)),
    }
    repo::get(&state.pool, id).await.map_err(unavailable)
}
