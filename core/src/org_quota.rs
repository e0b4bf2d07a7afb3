//! New jobs per organization in a fixed window (`JOBS_CREATED_MAX_PER_ORG` per
//! `JOBS_CREATED_WINDOW_SECONDS`): every statement on `org_job_windows`. Kept in Postgres,
//! beside the jobs, so that every API replica counts the same window and deleting jobs does
//! not give the count back. A fixed window lets up to twice the cap through around a window's
//! end; it bounds what a loop creates per window, which is what it is for.

use sqlx::PgExecutor;
use std::time::Duration;

/// One more job counted for the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Jobs counted in the current window, this one included.
    pub created: i32,
    /// Seconds until the window ends.
    pub window_left: i64,
}

/// Counts a new job of `org_id` in its window (a new window once the last one is `window`
/// old) and returns the count; the caller refuses past its cap. Refused attempts are counted
/// too: they change nothing, the window being over its cap already.
pub async fn count_new_job(
    db: impl PgExecutor<'_>,
    org_id: i32,
    window: Duration,
) -> sqlx::Result<Counted> {
    let row = sqlx::query!(
        r#"INSERT INTO org_job_windows AS w (org_id, window_started_at, created)
           VALUES ($1, now(), 1)
           ON CONFLICT (org_id) DO UPDATE SET
             window_started_at = CASE WHEN w.window_started_at <= now() - make_interval(secs => $2)
                                      THEN now() ELSE w.window_started_at END,
             created = CASE WHEN w.window_started_at <= now() - make_interval(secs => $2)
                            THEN 1 ELSE w.created + 1 END
           RETURNING created,
             ceil(extract(epoch FROM w.window_started_at + make_interval(secs => $2) - now()))::bigint
               AS "window_left!""#,
        org_id,
        window.as_secs_f64()
    )
    .fetch_one(db)
    .await?;
    Ok(Counted {
        created: row.created,
        window_left: row.window_left.max(1),
    })
}
