//! `GET /imports/{id}/events`: Server-Sent Events with progress snapshots until the job
//! ends. Snapshots come from the importer's Redis publications; Postgres is polled as well
//! (twice a second without Redis, every five seconds with it) so that nothing is missed and the stream
//! keeps working when Redis is down.

use crate::{
    auth::AuthUser, error::ApiResult, routes::imports::owned_job, state::AppState, view::JobView,
};
use axum::{
    extract::{Path, State},
    response::sse::{Event, KeepAlive, Sse},
    routing::get,
    Router,
};
use bulk_import_core::{job::fetch_job, progress::channel};
use futures_util::{Stream, StreamExt};
use std::{convert::Infallible, time::Duration};
use tokio::sync::mpsc;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/imports/{id}/events", get(events))
}

/// Live progress as Server-Sent Events (`event: progress`, data: the job JSON).
#[utoipa::path(get, path = "/imports/{id}/events", tag = "imports", params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "text/event-stream", description = "progress snapshots until the job ends"),
              (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = owned_job(&state, user.0, &id).await?;
    let (tx, rx) = mpsc::channel::<Event>(16);
    tokio::spawn(relay(state, job.id, tx));
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

/// Sends the current state, then every change, until the job ends or the client leaves.
async fn relay(state: AppState, id: Uuid, tx: mpsc::Sender<Event>) {
    let mut pubsub = match &state.redis {
        Some(client) => {
            match tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub()).await {
                Ok(Ok(mut p)) => p.subscribe(channel(id)).await.ok().map(|_| p),
                _ => None,
            }
        }
        None => None,
    };
    let poll_every = if pubsub.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(500)
    };
    let mut last: Option<String> = None;
    let mut messages = pubsub.as_mut().map(|p| p.on_message());
    loop {
        // Whatever woke us, the job row is the truth we send.
        let Ok(Some(job)) = fetch_job(&state.pool, id).await else {
            return;
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
            return;
        }
        let wait = tokio::time::sleep(poll_every);
        match messages.as_mut() {
            Some(m) => tokio::select! {
                msg = m.next() => if msg.is_none() { messages = None },
                _ = wait => {},
                _ = tx.closed() => return,
            },
            None => tokio::select! {
                _ = wait => {},
                _ = tx.closed() => return,
            },
        }
    }
}
