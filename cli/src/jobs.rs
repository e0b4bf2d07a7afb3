//! The commands about imports: `import`, `status`, `list`, `watch`, `errors`, `cancel`,
//! `retry`, `delete`, and how a job is shown.

use crate::{
    api::{encoded, Api},
    args::{FollowArgs, ImportArgs},
    failure::{self, Failure},
    follow::follow,
    options,
    output::Out,
};
use bulk_import_types::{JobPage, JobView, Status};
use serde_json::json;
use std::path::{Path, PathBuf};

pub async fn import(api: &Api, args: ImportArgs, out: &Out) -> Result<u8, Failure> {
    if args.follow.timeout.is_some() && !args.wait {
        return Err(Failure::usage("--timeout needs --wait"));
    }
    let opts = options::ImportOptions {
        mode: args.mode.as_str(),
        dry_run: args.dry_run,
        max_errors: args.max_errors,
        delimiter: args.delimiter,
        encoding: args.encoding,
        columns: args.columns,
    };
    let (job, created) = match (args.from_key, args.file) {
        (Some(source), _) => {
            let key = args
                .key
                .unwrap_or_else(|| options::object_key(&source, &opts));
            api.import_object(&source, &opts, &key).await?
        }
        (None, Some(file)) => {
            let upload = Upload {
                file,
                name: args.name,
                key: args.key,
                preview: args.preview,
            };
            match upload_file(api, upload, &opts, out).await? {
                Ok(uploaded) => uploaded,
                Err(previewed) => return Ok(previewed),
            }
        }
        (None, None) => return Err(Failure::usage("give a FILE or --from-key KEY")),
    };
    let id = job.id.to_string();
    if !args.wait {
        let verb = if created { "created" } else { "already exists" };
        out.result(&format!("job {id} {verb} ({})", job_line(&job)), &job);
        return Ok(failure::DONE);
    }
    if !created {
        out.note(&format!("job {id} already exists (same file and options)"));
    }
    let job = follow(api, &id, args.follow.timeout, out).await?;
    finish(api, &job, args.report.as_deref(), out).await
}

struct Upload {
    file: PathBuf,
    name: String,
    key: Option<String>,
    preview: bool,
}

/// Uploads the file (`Ok`: the job, and whether it is new), or previews it (`Err`: the exit
/// code).
async fn upload_file(
    api: &Api,
    args: Upload,
    opts: &options::ImportOptions,
    out: &Out,
) -> Result<Result<(JobView, bool), u8>, Failure> {
    // Standard input is spooled to a temporary file first: the default key hashes the whole
    // file before the upload, and an upload the API asks to repeat (429, 503) is sent again.
    let (_spool, file, name) = if args.file.as_os_str() == "-" {
        let spool = spool_stdin().await?;
        let path = spool.path().to_path_buf();
        (Some(spool), path, args.name)
    } else {
        let name = args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload.csv".into());
        (None, args.file, name)
    };
    if args.preview {
        return Ok(Err(
            crate::preview::preview(api, &file, &name, opts, out).await?
        ));
    }
    let key = match args.key {
        Some(k) => k,
        None => options::default_key(&file, opts).await?,
    };
    Ok(Ok(api.upload(&file, &name, opts, &key, out).await?))
}

/// Standard input in a temporary file (removed when dropped).
async fn spool_stdin() -> Result<tempfile::NamedTempFile, Failure> {
    let fail = |e: std::io::Error| Failure::usage(format!("cannot read standard input: {e}"));
    let spool = tempfile::NamedTempFile::new().map_err(fail)?;
    let mut file = tokio::fs::File::create(spool.path()).await.map_err(fail)?;
    tokio::io::copy(&mut tokio::io::stdin(), &mut file)
        .await
        .map_err(fail)?;
    file.sync_all().await.map_err(fail)?;
    Ok(spool)
}

pub async fn status(api: &Api, id: &str, out: &Out) -> Result<u8, Failure> {
    let job = api.job(id).await?;
    out.result(&describe(&job), &job);
    Ok(failure::DONE)
}

pub async fn list(
    api: &Api,
    limit: u32,
    offset: u32,
    mine: bool,
    out: &Out,
) -> Result<u8, Failure> {
    let page: JobPage = api
        .get(&format!(
            "/imports?limit={limit}&offset={offset}&mine={mine}"
        ))
        .await?;
    let mut lines: Vec<String> = page
        .items
        .iter()
        .map(|job| {
            format!(
                "{}  {:<10}  {}  {}",
                job.id,
                job.status,
                job.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                job_line(job)
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("no jobs".into());
    }
    let shown = page.offset + page.items.len() as i64;
    if page.total > shown {
        lines.push(format!("… {} in all (--offset {shown})", page.total));
    }
    out.result(&lines.join("\n"), &page);
    Ok(failure::DONE)
}

pub async fn watch(api: &Api, id: &str, follow_args: FollowArgs, out: &Out) -> Result<u8, Failure> {
    let job = follow(api, id, follow_args.timeout, out).await?;
    finish(api, &job, None, out).await
}

pub async fn errors(
    api: &Api,
    id: &str,
    output: PathBuf,
    rows: bool,
    out: &Out,
) -> Result<u8, Failure> {
    let bytes = api.download_report(id, rows, &output).await?;
    // On standard output the report is the result: nothing else is printed there.
    if output.as_os_str() != "-" {
        out.result(
            &format!("{bytes} bytes written to {}", output.display()),
            &json!({"id": id, "path": output, "bytes": bytes}),
        );
    }
    Ok(failure::DONE)
}

pub async fn cancel(api: &Api, id: &str, out: &Out) -> Result<u8, Failure> {
    let job: JobView = api
        .post(&format!("/imports/{}/cancel", encoded(id)))
        .await?;
    out.result(&format!("job {id} cancelled ({})", job_line(&job)), &job);
    Ok(failure::DONE)
}

pub async fn retry(
    api: &Api,
    id: &str,
    wait: bool,
    follow_args: FollowArgs,
    out: &Out,
) -> Result<u8, Failure> {
    if follow_args.timeout.is_some() && !wait {
        return Err(Failure::usage("--timeout needs --wait"));
    }
    let job: JobView = api.post(&format!("/imports/{}/retry", encoded(id))).await?;
    if !wait {
        out.result(
            &format!("job {id} {} again ({})", job.status, job_line(&job)),
            &job,
        );
        return Ok(failure::DONE);
    }
    let job = follow(api, id, follow_args.timeout, out).await?;
    finish(api, &job, None, out).await
}

pub async fn delete(api: &Api, id: &str, out: &Out) -> Result<u8, Failure> {
    api.delete(&format!("/imports/{}", encoded(id))).await?;
    out.result(
        &format!("job {id} deleted"),
        &json!({"id": id, "deleted": true}),
    );
    Ok(failure::DONE)
}

/// The summary of a finished job, the report download, and the exit code.
async fn finish(api: &Api, job: &JobView, report: Option<&Path>, out: &Out) -> Result<u8, Failure> {
    let bad = job.error_rows;
    let mut text = describe(job);
    let mut json = serde_json::to_value(job).expect("serialisable");
    if job.status == Status::Done && bad > 0 {
        let id = job.id.to_string();
        match report {
            Some(path) => {
                let bytes = api.download_report(&id, false, path).await?;
                text.push_str(&format!(
                    "\nerror report: {} ({bytes} bytes)",
                    path.display()
                ));
                json["report_path"] = json!(path);
            }
            None => text.push_str(&format!(
                "\nerror report: bulk-import errors {id} -o errors.csv"
            )),
        }
    }
    out.result(&text, &json);
    Ok(match job.status {
        Status::Done if bad > 0 => failure::DONE_WITH_BAD_ROWS,
        Status::Done => failure::DONE,
        _ => failure::FAILED,
    })
}

fn job_line(job: &JobView) -> String {
    let mut s = format!(
        "{}: {} rows, {} inserted, {} updated, {} bad",
        job.file_name, job.processed_rows, job.inserted_rows, job.updated_rows, job.error_rows,
    );
    if job.dry_run {
        s.push_str(", dry run");
    }
    s
}

fn describe(job: &JobView) -> String {
    let mut s = format!(
        "job {} {} ({:.0} %)\n  {}",
        job.id,
        job.status,
        job.progress_percent,
        job_line(job)
    );
    if let Some(p) = job.queue_position {
        s.push_str(&format!(
            "\n  waiting for an importer slot: position {p} in the queue"
        ));
    }
    if let Some(d) = &job.dialect {
        s.push_str(&format!(
            "\n  read as: delimiter {:?}, {}, {}",
            d.delimiter, d.encoding, d.header
        ));
    }
    if let Some(e) = &job.error {
        s.push_str(&format!("\n  error: {e}"));
    }
    // The server's own clock at both ends: no skew with this machine's.
    if let (Some(start), Some(end)) = (job.started_at, job.finished_at) {
        let secs = ((end - start).num_milliseconds().max(1) as f64) / 1000.0;
        let rows = job.processed_rows as f64;
        s.push_str(&format!("\n  took {secs:.1} s ({:.0} rows/s)", rows / secs));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job as the API sends it while it waits for an importer slot.
    fn queued() -> JobView {
        serde_json::from_value(json!({
            "id": "51a090a7-aa41-4a95-bcd6-54837f74ebdd", "status": "queued",
            "queue_position": 3, "mode": "insert_only", "processed_rows": 0,
            "inserted_rows": 0, "updated_rows": 0, "error_rows": 0, "progress_percent": 0.0,
            "file_name": "c.csv", "file_size": 10, "created_at": "2026-12-08T00:00:00Z",
            "started_at": null, "finished_at": null, "error": null,
            "errors_report_available": false, "dry_run": false, "max_errors": null,
            "dialect": null, "created_by": {"id": "0b6f4c1e-0000-4000-8000-000000000000", "email": "a@b.c"}
        }))
        .unwrap()
    }

    #[test]
    fn a_queued_job_shows_its_place_in_the_queue() {
        let job = queued();
        assert_eq!(job.status, Status::Queued);
        let shown = describe(&job);
        assert!(shown.contains("queued"), "{shown}");
        assert!(shown.contains("position 3 in the queue"), "{shown}");
        let mut older = serde_json::to_value(&job).unwrap();
        older.as_object_mut().unwrap().remove("queue_position");
        let older: JobView = serde_json::from_value(older).unwrap();
        assert_eq!(
            older.queue_position, None,
            "an older API without the field still reads"
        );
    }
}
