//! Following a job until it ends: the event stream, and polling when the stream cannot be
//! had or stops early. Temporary failures (the API unreachable, 5xx, 429) are retried with
//! back-off: until `--timeout` when it is given, else for [`OUTAGE`] in a row.

use crate::{
    api::{encoded, Api},
    failure::Failure,
    output::Out,
};
use bulk_import_types::{JobView, Status};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use std::{
    future::Future,
    time::{Duration, Instant},
};

/// Without `--timeout`: how long the API may stay unreachable before following gives up.
pub const OUTAGE: Duration = Duration::from_secs(60);
/// The first back-off after a temporary failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Between two polls of a job that is still running.
const POLL: Duration = Duration::from_millis(500);

/// Follows job `id` until it ends and returns it; with `timeout`, gives up after that long
/// with a temporary failure (the job itself goes on).
pub async fn follow(
    api: &Api,
    id: &str,
    timeout: Option<Duration>,
    out: &Out,
) -> Result<JobView, Failure> {
    let bar = out.import_bar();
    let mut follower = Follower {
        api,
        id,
        out,
        bar: &bar,
        rate: Rate::default(),
        last: None,
        timeout,
    };
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, follower.run()).await {
            Ok(result) => result,
            Err(_) => Err(Failure::temporary(format!(
                "job {id} is still {} after --timeout {} s (it goes on; follow it again with `bulk-import watch {id}`)",
                follower.last.as_ref().map_or(Status::Unknown, |j| j.status),
                t.as_secs()
            ))),
        },
        None => follower.run().await,
    };
    bar.finish_and_clear();
    result
}

struct Follower<'a> {
    api: &'a Api,
    id: &'a str,
    out: &'a Out,
    bar: &'a ProgressBar,
    rate: Rate,
    /// The newest snapshot seen.
    last: Option<JobView>,
    timeout: Option<Duration>,
}

enum StreamEnd {
    Finished(Box<JobView>),
    TokenExpired,
    Early,
}

impl Follower<'_> {
    async fn run(&mut self) -> Result<JobView, Failure> {
        let job = self.retrying(|api, id| api.job(id)).await?;
        if let Some(done) = self.seen(job) {
            return Ok(done);
        }
        match self.stream().await {
            Ok(StreamEnd::Finished(job)) => return Ok(*job),
            Ok(StreamEnd::TokenExpired) => {
                return Err(Failure::authentication(
                    "the token expired while following the job: log in again",
                ))
            }
            // A refusal that is not temporary (e.g. 404) is the API's answer to polling too.
            Err(f) if !f.is_temporary() => return Err(f),
            // Refused for now (too_many_streams), broken, or ended early: poll.
            Ok(StreamEnd::Early) | Err(_) => {}
        }
        loop {
            tokio::time::sleep(POLL).await;
            let job = self.retrying(|api, id| api.job(id)).await?;
            if let Some(done) = self.seen(job) {
                return Ok(done);
            }
        }
    }

    /// Shows a snapshot; the job if it has ended.
    fn seen(&mut self, job: JobView) -> Option<JobView> {
        show(self.bar, &job, &mut self.rate);
        let finished = job.is_finished();
        self.last = Some(job.clone());
        finished.then_some(job)
    }

    /// `call` again after each temporary failure, backing off, until the call succeeds, fails
    /// otherwise, or (without `--timeout`) the failures have lasted [`OUTAGE`].
    async fn retrying<'s, T, F, Fut>(&'s self, call: F) -> Result<T, Failure>
    where
        F: Fn(&'s Api, &'s str) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 's,
    {
        let mut backoff = FIRST_BACKOFF;
        let first_failure = Instant::now();
        loop {
            match call(self.api, self.id).await {
                Err(f) if f.is_temporary() => {
                    if self.timeout.is_none() && first_failure.elapsed() + backoff > OUTAGE {
                        return Err(f);
                    }
                    self.out.note(&format!(
                        "{}; retrying in {:.1} s",
                        f.message,
                        backoff.as_secs_f64()
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }

    /// Reads `GET /imports/{id}/events` until the final snapshot or the stream's end.
    async fn stream(&mut self) -> Result<StreamEnd, Failure> {
        let resp = self
            .api
            .request(
                reqwest::Method::GET,
                &format!("/imports/{}/events", encoded(self.id)),
            )
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.api.connection(e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Failure::from_answer(status, &body));
        }
        let mut body = resp.bytes_stream();
        let mut events = EventParser::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.api.connection(e))?;
            for (event, data) in events.push(&chunk) {
                if event == "end" {
                    let reason: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                    if reason["reason"] == "token_expired" {
                        return Ok(StreamEnd::TokenExpired);
                    }
                    return Ok(StreamEnd::Early);
                }
                if event.is_empty() || event == "progress" {
                    if let Ok(job) = serde_json::from_str::<JobView>(&data) {
                        if let Some(done) = self.seen(job) {
                            return Ok(StreamEnd::Finished(Box::new(done)));
                        }
                    }
                }
            }
        }
        Ok(StreamEnd::Early)
    }
}

/// Server-sent events out of the bytes of a stream: `(event, data)` pairs.
#[derive(Default)]
struct EventParser {
    buf: Vec<u8>,
    event: String,
    data: String,
}

impl EventParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    done.push((
                        std::mem::take(&mut self.event),
                        std::mem::take(&mut self.data),
                    ));
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        done
    }
}

/// Rows per second and the time left, measured from the first snapshot that showed the job
/// running (this machine's clock only: no skew with the server's).
#[derive(Default)]
struct Rate {
    /// When, how many rows, what percent of the file.
    start: Option<(Instant, i64, f64)>,
}

fn show(bar: &ProgressBar, job: &JobView, rate: &mut Rate) {
    let rows = job.processed_rows;
    let percent = job.progress_percent.clamp(0.0, 100.0);
    let processing = job.status == Status::Processing;
    if processing && rate.start.is_none() {
        rate.start = Some((Instant::now(), rows, percent));
    }
    let mut message = match job.queue_position {
        Some(p) => format!(
            "{} (position {p}): {rows} rows, {} bad",
            job.status, job.error_rows
        ),
        None => format!("{}: {rows} rows, {} bad", job.status, job.error_rows),
    };
    if let Some((t, r0, p0)) = rate.start {
        let secs = t.elapsed().as_secs_f64();
        if secs >= 0.5 && rows > r0 {
            message.push_str(&format!(", {:.0} rows/s", (rows - r0) as f64 / secs));
        }
        if secs >= 0.5 && percent > p0 && processing {
            let left = (secs * (100.0 - percent) / (percent - p0)).round() as u64;
            message.push_str(&format!(", ETA {}", eta(left)));
        }
    }
    bar.set_position((percent * 10.0) as u64);
    bar.set_message(message);
}

fn eta(left: u64) -> String {
    if left < 60 {
        format!("{left}s")
    } else if left < 3600 {
        format!("{}m{:02}s", left / 60, left % 60)
    } else {
        format!("{}h{:02}m", left / 3600, left % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = EventParser::default();
        assert!(p.push(b"event: progress\ndata: {\"a\"").is_empty());
        let got = p.push(b":1}\n\nevent: end\ndata: {}\n\n");
        assert_eq!(
            got,
            vec![
                ("progress".to_string(), "{\"a\":1}".to_string()),
                ("end".to_string(), "{}".to_string())
            ]
        );
    }
}
