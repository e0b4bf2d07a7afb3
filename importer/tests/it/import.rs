//! Import semantics against real Postgres, Redis and Garage (and the directory backend):
//! error codes and line numbers, both modes, duplicates, odd files, the report, progress.

use crate::common;
use bulk_import_core::{ImportMode, JobStatus};
use bulk_import_importer::{
    validate::{cut_marker, MAX_REPORTED_FIELD_BYTES},
    Outcome,
};
use common::{generated_csv, Backend, TestEnv};
use futures_util::StreamExt;
use std::time::Duration;

fn s(v: &str) -> String {
    v.to_string()
}

fn the_awkward_file() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"\xEF\xBB\xBFemail,first_name,last_name,phone,city\r\n"); // 1
    f.extend_from_slice(b" Ann@Example.COM ,Ann,Lee,+1 555 0100,Paris\r\n"); // 2
    f.extend_from_slice(b"bob@example.com,\"Bob, Jr.\",\"O\"\"Neil\",\"line1\nline2\",Berlin\r\n"); // 3-4
    f.extend_from_slice(b"\r\n"); // 5
    f.extend_from_slice(b",No,Email,,\r\n"); // 6
    f.extend_from_slice(b"not-an-email,X,Y,,\r\n"); // 7
    f.extend_from_slice(b"=HYPERLINK(\"http://x\"),F,L,,\r\n"); // 8
    f.extend_from_slice(format!("long@example.com,{},L,,\r\n", "x".repeat(10_000)).as_bytes()); // 9
    f.extend_from_slice(b"too@many.com,a,b,c,d,e\r\n"); // 10
    f.extend_from_slice(b"few@example.com,a\r\n"); // 11
    f.extend_from_slice(b"utf@example.com,J\xF6rg,L,,\n"); // 12
    f.extend_from_slice(b"ANN@example.com,Dup,,, \n"); // 13
    f.extend_from_slice(b"existing@example.com,New,,,\n"); // 14
    f.extend_from_slice(b"nul@example.com,a\0b,,,\n"); // 15
    f.extend_from_slice(b"last@example.com,Last,,,"); // 16, no final newline
    f
}

fn expected_report() -> Vec<Vec<String>> {
    let row = |cells: &[&str]| cells.iter().map(|c| s(c)).collect::<Vec<_>>();
    // A rejected row's values are kept up to 1 KiB, then cut with a marker.
    let long = format!(
        "{}{}",
        "x".repeat(MAX_REPORTED_FIELD_BYTES),
        cut_marker(10_000)
    );
    vec![
        row(&[
            "line",
            "code",
            "message",
            "email",
            "first_name",
            "last_name",
            "phone",
            "city",
        ]),
        row(&[
            "6",
            "missing_email",
            "email is required",
            "",
            "No",
            "Email",
            "",
            "",
        ]),
        row(&[
            "7",
            "invalid_email",
            "\"not-an-email\" is not a valid email address",
            "not-an-email",
            "X",
            "Y",
            "",
            "",
        ]),
        row(&[
            "8",
            "invalid_email",
            // The value in quotes: a spreadsheet may take the quote for CSV's.
            "'\"=HYPERLINK(\\\"http://x\\\")\" is not a valid email address",
            "'=HYPERLINK(\"http://x\")",
            "F",
            "L",
            "",
            "",
        ]),
        row(&[
            "9",
            "field_too_long",
            "first_name is longer than 255 characters",
            "long@example.com",
            &long,
            "L",
            "",
            "",
        ]),
        row(&[
            "10",
            "wrong_column_count",
            "expected 5 fields, found 6",
            "too@many.com",
            "a",
            "b",
            "c",
            "d",
        ]),
        row(&[
            "11",
            "wrong_column_count",
            "expected 5 fields, found 2",
            "few@example.com",
            "a",
            "",
            "",
            "",
        ]),
        row(&[
            "12",
            "invalid_utf8",
            "first_name is not valid UTF-8",
            "utf@example.com",
            "J\u{FFFD}rg",
            "L",
            "",
            "",
        ]),
        row(&[
            "13",
            "duplicate_in_file",
            "email ann@example.com already appears on line 2",
            "ANN@example.com",
            "Dup",
            "",
            "",
            " ",
        ]),
        row(&[
            "14",
            "duplicate_in_db",
            "email existing@example.com already exists",
            "existing@example.com",
            "New",
            "",
            "",
            "",
        ]),
        row(&[
            "15",
            "invalid_character",
            "first_name contains a NUL character",
            "nul@example.com",
            "a\u{FFFD}b",
            "",
            "",
            "",
        ]),
    ]
}

async fn every_error_code(backend: Backend, batch_size: &str) {
    let env = TestEnv::with(backend, &[("BATCH_SIZE", batch_size)]).await;
    sqlx::query(
        "INSERT INTO customers (org_id, email, first_name) VALUES ($1, 'existing@example.com', 'Old')",
    )
    .bind(env.org)
    .execute(&env.pool)
        .await
        .unwrap();
    let (job, outcome) = env
        .import(&the_awkward_file(), ImportMode::InsertOnly)
        .await;
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!(
        (
            job.processed_rows,
            job.inserted_rows,
            job.updated_rows,
            job.error_rows
        ),
        (13, 3, 0, 10)
    );
    assert_eq!(job.checkpoint_offset, job.file_size);
    assert!(job.started_at.is_some() && job.finished_at.is_some());
    assert_eq!(env.report(&job).await, expected_report());
    let customers = env.customers().await;
    assert_eq!(
        customers,
        vec![
            (
                s("ann@example.com"),
                Some(s("Ann")),
                Some(s("Lee")),
                Some(s("+1 555 0100")),
                Some(s("Paris"))
            ),
            (
                s("bob@example.com"),
                Some(s("Bob, Jr.")),
                Some(s("O\"Neil")),
                Some(s("line1\nline2")),
                Some(s("Berlin"))
            ),
            (s("existing@example.com"), Some(s("Old")), None, None, None),
            (s("last@example.com"), Some(s("Last")), None, None, None),
        ]
    );
    let lines: Vec<(String, i64)> = sqlx::query_as(
        "SELECT email, last_import_line FROM customers WHERE last_import_id = $1 ORDER BY email",
    )
    .bind(job.id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        lines,
        vec![
            (s("ann@example.com"), 2),
            (s("bob@example.com"), 3),
            (s("last@example.com"), 16)
        ]
    );
}

#[tokio::test]
async fn every_error_code_s3() {
    every_error_code(Backend::S3, "5000").await;
}

#[tokio::test]
async fn every_error_code_s3_tiny_batches() {
    // Duplicates across batches go through the table look-up instead of the in-batch map.
    every_error_code(Backend::S3, "2").await;
}

#[tokio::test]
async fn every_error_code_fs() {
    every_error_code(Backend::Fs, "3").await;
}

async fn upsert_twice(backend: Backend, batch_size: &str) {
    let env = TestEnv::with(backend, &[("BATCH_SIZE", batch_size)]).await;
    sqlx::query(
        "INSERT INTO customers (org_id, email, first_name, city) VALUES ($1, 'c@x.com', 'Old', 'Oldtown')",
    )
    .bind(env.org)
    .execute(&env.pool)
    .await
    .unwrap();
    let file = b"email,first_name,last_name,phone,city\na@x.com,A1,,,\nb@x.com,B1,,,\nA@X.com,A2,,,\nc@x.com,C1,,,\nbad,,,,\n";
    let (first, _) = env.import(file, ImportMode::Upsert).await;
    assert_eq!(first.status(), JobStatus::Done);
    assert_eq!(
        (
            first.processed_rows,
            first.inserted_rows,
            first.updated_rows,
            first.error_rows
        ),
        (5, 2, 2, 1)
    );
    let expected = vec![
        (s("a@x.com"), Some(s("A2")), None, None, None),
        (s("b@x.com"), Some(s("B1")), None, None, None),
        // Empty cells overwrite: the file's row is the customer's new state.
        (s("c@x.com"), Some(s("C1")), None, None, None),
    ];
    assert_eq!(env.customers().await, expected);

    let (second, _) = env.import(file, ImportMode::Upsert).await;
    assert_eq!(
        (
            second.processed_rows,
            second.inserted_rows,
            second.updated_rows,
            second.error_rows
        ),
        (5, 0, 4, 1)
    );
    assert_eq!(env.customers().await, expected);
    let by_second: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customers WHERE last_import_id = $1")
            .bind(second.id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(by_second, 3);
    let report = env.report(&second).await;
    assert_eq!(
        report[1][..3],
        [
            s("6"),
            s("invalid_email"),
            s("\"bad\" is not a valid email address")
        ]
    );
}

#[tokio::test]
async fn upsert_twice_s3() {
    upsert_twice(Backend::S3, "5000").await;
}

#[tokio::test]
async fn upsert_twice_fs_tiny_batches() {
    upsert_twice(Backend::Fs, "2").await;
}

#[tokio::test]
async fn second_upsert_of_a_large_file_updates_every_row() {
    let env = TestEnv::with(Backend::S3, &[("BATCH_SIZE", "700")]).await;
    let mut file = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..5_000 {
        file.push_str(&format!("u{i}@example.com,F{i},L{i},,C\n"));
    }
    let (first, _) = env.import(file.as_bytes(), ImportMode::Upsert).await;
    assert_eq!(
        (
            first.processed_rows,
            first.inserted_rows,
            first.updated_rows
        ),
        (5_000, 5_000, 0)
    );
    let (second, _) = env.import(file.as_bytes(), ImportMode::Upsert).await;
    assert_eq!(
        (
            second.processed_rows,
            second.inserted_rows,
            second.updated_rows,
            second.error_rows
        ),
        (5_000, 0, 5_000, 0)
    );
    assert!(second.report_object.is_none());
}

/// insert_only of a generated file, checked against a model of what it must do.
#[tokio::test]
async fn insert_only_duplicates_across_batches_match_the_model() {
    let n = 3_000;
    let env = TestEnv::with(Backend::S3, &[("BATCH_SIZE", "128")]).await;
    let (job, _) = env.import(&generated_csv(n), ImportMode::InsertOnly).await;
    // The model: row i is on line i + 2.
    let is_bad = |i: usize| i % 50 == 49;
    let is_dup = |i: usize| !is_bad(i) && i % 40 == 39;
    let mut expected_errors = vec![];
    let mut inserted = 0;
    for i in 0..n {
        if is_bad(i) {
            expected_errors.push((i + 2, "invalid_email".to_string()));
        } else if is_dup(i) && !is_bad(i / 2) && !is_dup(i / 2) {
            expected_errors.push((i + 2, format!("duplicate_in_file:{}", i / 2 + 2)));
        } else {
            inserted += 1;
        }
    }
    assert_eq!(job.processed_rows, n as i64);
    assert_eq!(job.inserted_rows, inserted);
    assert_eq!(job.error_rows, expected_errors.len() as i64);
    let got: Vec<(usize, String)> = env.report(&job).await[1..]
        .iter()
        .map(|r| {
            let line: usize = r[0].parse().unwrap();
            let code = if r[1] == "duplicate_in_file" {
                format!("duplicate_in_file:{}", r[2].rsplit(' ').next().unwrap())
            } else {
                r[1].clone()
            };
            (line, code)
        })
        .collect();
    assert_eq!(got, expected_errors);
    assert_eq!(env.customers().await.len() as i64, inserted);
}

#[tokio::test]
async fn header_only_empty_and_blank_files_finish_with_nothing() {
    let env = TestEnv::new(Backend::S3).await;
    for file in [
        &b"email,first_name,last_name,phone,city\n"[..],
        b"",
        b"email,first_name,last_name,phone,city\r\n\r\n\n",
    ] {
        let (job, outcome) = env.import(file, ImportMode::InsertOnly).await;
        assert!(matches!(outcome, Outcome::Done(_)));
        assert_eq!(job.status(), JobStatus::Done);
        assert_eq!((job.processed_rows, job.error_rows), (0, 0));
        assert!(job.report_object.is_none());
        assert_eq!(job.progress_percent(), 100.0);
    }
    assert!(env.customers().await.is_empty());
}

#[tokio::test]
async fn missing_object_fails_the_job_with_a_reason() {
    let env = TestEnv::new(Backend::S3).await;
    let id = env.submit(b"email\na@b.co\n", ImportMode::InsertOnly).await;
    let job = env.job(id).await;
    env.storage.delete(&job.source_object).await.unwrap();
    let outcome = env.run(id).await;
    assert!(
        matches!(outcome, Outcome::Failed(ref r) if r.code == "source_missing"),
        "{outcome:?}"
    );
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some("source_missing"));
    assert!(job.error.unwrap().contains("not found in storage"));
    assert!(job.finished_at.is_some());
}

#[tokio::test]
async fn a_finished_job_is_not_run_again() {
    let env = TestEnv::new(Backend::Fs).await;
    let (job, _) = env
        .import(b"email,a,b,c,d\nx@y.co,,,,\n", ImportMode::InsertOnly)
        .await;
    assert_eq!(
        env.run(job.id).await,
        Outcome::AlreadyFinished(JobStatus::Done)
    );
    let again = env.job(job.id).await;
    assert_eq!(
        (again.processed_rows, again.inserted_rows, again.attempts),
        (1, 1, 1)
    );
    let unknown =
        bulk_import_importer::run_job(&env.settings, uuid::Uuid::new_v4(), Default::default())
            .await;
    assert!(matches!(
        unknown,
        Err(bulk_import_importer::RunError::NotFound(_))
    ));
}

#[tokio::test]
async fn progress_grows_while_a_slowed_import_runs() {
    let env = TestEnv::with(
        Backend::S3,
        &[("BATCH_SIZE", "10"), ("IMPORT_SLOW_MS", "3")],
    )
    .await;
    let id = env
        .submit(&generated_csv(400), ImportMode::InsertOnly)
        .await;
    let settings = env.settings.clone();
    let run = tokio::spawn(async move {
        bulk_import_importer::run_job(&settings, id, Default::default()).await
    });
    let mut seen = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = env.job(id).await;
        if job.status() == JobStatus::Processing && seen.last() != Some(&job.processed_rows) {
            seen.push(job.processed_rows);
        }
        if job.status().is_terminal() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "import did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run.await.unwrap().unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "processed_rows never goes back: {seen:?}"
    );
    assert!(
        seen.iter().filter(|&&n| n > 0 && n < 400).count() >= 3,
        "progress seen growing: {seen:?}"
    );
    let job = env.job(id).await;
    assert_eq!(job.processed_rows, 400);
    assert_eq!(job.inserted_rows + job.error_rows, 400);
}

#[tokio::test]
async fn progress_is_published_to_redis() {
    let env = TestEnv::with(
        Backend::S3,
        &[("BATCH_SIZE", "100"), ("PROGRESS_EVERY", "100")],
    )
    .await;
    let id = env
        .submit(&generated_csv(1_000), ImportMode::InsertOnly)
        .await;
    let client = redis::Client::open(env.vars["REDIS_URL"].as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(bulk_import_core::progress::channel(id))
        .await
        .unwrap();
    env.run(id).await;
    let mut stream = pubsub.on_message();
    let mut snapshots: Vec<bulk_import_core::progress::ProgressSnapshot> = vec![];
    while snapshots.last().is_none_or(|s| s.status != JobStatus::Done) {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a snapshot within 10 s")
            .expect("subscription open");
        let payload: String = msg.get_payload().unwrap();
        snapshots.push(serde_json::from_str(&payload).unwrap());
    }
    let last = snapshots.last().unwrap();
    assert_eq!((last.processed_rows, last.progress_percent), (1_000, 100.0));
    assert!(
        snapshots.len() >= 2,
        "intermediate snapshots too: {}",
        snapshots.len()
    );
}

#[tokio::test]
async fn redis_down_does_not_fail_an_import() {
    // Nothing listens on port 1: every publish attempt fails fast.
    let env = TestEnv::with(
        Backend::S3,
        &[("REDIS_URL", "redis://127.0.0.1:1/0"), ("BATCH_SIZE", "50")],
    )
    .await;
    let (job, outcome) = env
        .import(&generated_csv(500), ImportMode::InsertOnly)
        .await;
    assert!(matches!(outcome, Outcome::Done(_)));
    assert_eq!(job.processed_rows, 500);
}

/// Two batches applied at the same time commit in file order: the second waits, inside the
/// importer, for the first. A concurrent transaction that holds a row of the first batch and
/// then waits for a row of the second closes a cycle Postgres cannot see (the second batch's
/// session is idle, not waiting on a lock). The pair's lock timeout must break it: the pair
/// is given up, the other transaction goes through, and the batches are then applied one at
/// a time with the exact result.
#[tokio::test]
async fn a_lock_cycle_through_a_pair_of_batches_is_broken() {
    use sqlx::Connection;
    let env = TestEnv::with(Backend::Fs, &[("BATCH_SIZE", "2")]).await;
    sqlx::query(
        "INSERT INTO customers (org_id, email, city) \
         VALUES ($1, 'x1@x.com', 'old'), ($1, 'x2@x.com', 'old'), ($1, 'y1@x.com', 'old'), ($1, 'y2@x.com', 'old')",
    )
    .bind(env.org)
    .execute(&env.pool)
    .await
    .unwrap();
    let file = b"email,first_name,last_name,phone,city\nx1@x.com,,,,new\nx2@x.com,,,,new\ny1@x.com,,,,new\ny2@x.com,,,,new\n";
    let id = env.submit(file, ImportMode::Upsert).await;

    // The other transaction holds x1 (first batch) before the import starts.
    let mut other = sqlx::PgConnection::connect(env.settings.database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("UPDATE customers SET city = 'other' WHERE email = 'x1@x.com'")
        .execute(&mut other)
        .await
        .unwrap();

    // Killed if the test fails, so that no importer outlives it.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(env.importer_command(id).spawn().unwrap());
    // The first batch waits for x1; the second has updated y1 and y2 and waits for the first.
    common::eventually(Duration::from_secs(30), "the pair to block", || async {
        let (waiting, idle_in_tx): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), \
                    count(*) FILTER (WHERE state = 'idle in transaction') \
             FROM pg_stat_activity \
             WHERE application_name = 'bulk-import-importer' AND datname = current_database()",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (waiting == 1 && idle_in_tx == 1).then_some(())
    })
    .await;
    // Now the other transaction wants y1, held by the second batch: a cycle.
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        sqlx::query("UPDATE customers SET city = 'other' WHERE email = 'y1@x.com'")
            .execute(&mut other),
    )
    .await
    .expect("the cycle was not broken")
    .unwrap();
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    println!("cycle broken after {:?}", started.elapsed());

    let status = common::eventually(Duration::from_secs(60), "the importer to exit", || {
        std::future::ready(child.0.try_wait().unwrap())
    })
    .await;
    assert!(status.success());
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!(
        (
            job.processed_rows,
            job.inserted_rows,
            job.updated_rows,
            job.error_rows
        ),
        (4, 0, 4, 0)
    );
    // The import was applied after the other transaction: the file's values win everywhere.
    let cities: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT email, city FROM customers ORDER BY email")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(
        cities.iter().all(|(_, c)| c.as_deref() == Some("new")),
        "{cities:?}"
    );
}

/// Hostile rows: 300 rows, each with a 1,000,000-character field, are rejected
/// (`field_too_long`) with their values cut to 1 KiB, so the importer binary's peak RSS
/// (its `VmHWM`) stays under 64 MiB; the report keeps every line and code.
#[tokio::test]
async fn three_hundred_rows_with_a_megabyte_field_keep_the_importer_under_64_mib() {
    use std::io::Write;
    let env = TestEnv::new(Backend::S3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(b"email,first_name,last_name,phone,city\n")
            .unwrap();
        let big = "y".repeat(1_000_000);
        for i in 0..300 {
            writeln!(f, "bad{i}@example.com,{big},L,,").unwrap();
        }
        f.write_all(b"good@example.com,Good,,,\n").unwrap();
    }
    let id = bulk_import_importer::local_file::create_job(
        &env.settings,
        &env.pool,
        &path,
        ImportMode::InsertOnly,
        "owner@example.com",
    )
    .await
    .unwrap();
    drop(dir);
    // Its own high-water mark (VmHWM), not `ru_maxrss`, which counts the test process's
    // address space the child had before its exec (`crate::bounds::run_measured`).
    let (code, max_rss_kib) = crate::bounds::run_measured(&env, id).await;
    assert_eq!(code, 0);
    println!(
        "300 rows with a 1,000,000-character field: importer peak RSS {:.1} MiB",
        max_rss_kib as f64 / 1024.0
    );
    assert!(
        max_rss_kib < 64 * 1024,
        "importer peak RSS {max_rss_kib} KiB"
    );
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!((job.inserted_rows, job.error_rows), (1, 300));
    let report = env.report(&job).await;
    assert_eq!(report.len(), 301);
    for (i, row) in report[1..].iter().enumerate() {
        assert_eq!(row[0], (i + 2).to_string());
        assert_eq!(row[1], "field_too_long");
        assert_eq!(
            row[4],
            format!(
                "{}{}",
                "y".repeat(MAX_REPORTED_FIELD_BYTES),
                cut_marker(1_000_000)
            )
        );
    }
    // 300 MB in the shared bucket: not left behind.
    env.storage.delete(&job.source_object).await.unwrap();
}

/// Issue 14: a batch that repeats an email of the batch before it is still applied beside
/// it (insert_only, the loader's pipeline): its rows with that email (and their repeats in
/// the batch) are set aside and classified once the one before has committed —
/// duplicate_in_file naming the line that one loaded it from, or duplicate_in_db when it was
/// there before the import — exactly what one batch at a time gives. The importer's debug
/// log shows which batches ran beside the one before.
#[tokio::test]
async fn a_batch_repeating_an_email_of_the_one_before_is_still_applied_beside_it() {
    let env = TestEnv::with(Backend::Fs, &[("BATCH_SIZE", "3")]).await;
    sqlx::query("INSERT INTO customers (org_id, email, city) VALUES ($1, 'pre@x.com', 'before')")
        .bind(env.org)
        .execute(&env.pool)
        .await
        .unwrap();
    // Batches of three. 1: its COPY hits pre@x.com, so it is applied again alone (2, begun
    // beside it, too) and every later row is looked up first. 4, 5 and 6 each share an email
    // with the batch before and are applied beside it.
    let file = b"email,first_name,last_name,phone,city\n\
a@x.com,,,,1\npre@x.com,,,,1\nb@x.com,,,,1\n\
c@x.com,,,,2\nd@x.com,,,,2\nh@x.com,,,,2\n\
A@X.com,,,,3\ne@x.com,,,,3\npre@x.com,,,,3\n\
e@x.com,,,,4\npre@x.com,,,,4\nf@x.com,,,,4\n\
g@x.com,,,,5\nd@x.com,,,,5\nf@x.com,,,,5\n\
G@x.com,,,,6\ng@x.com,,,,6\ni@x.com,,,,6\n";
    let id = env.submit(file, ImportMode::InsertOnly).await;
    let out = env
        .importer_command(id)
        .env("RUST_LOG", "bulk_import_importer=debug")
        .output()
        .unwrap();
    let raw =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // Without the terminal colours: ESC [ … m.
    let mut log = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            log.push(c);
        }
    }
    assert!(out.status.success(), "{log}");
    assert_eq!(
        log.matches("applied a batch beside_previous=true shared=true")
            .count(),
        3,
        "batches 4, 5 and 6 applied beside the one before each:\n{log}"
    );
    assert_eq!(log.matches("shared=true").count(), 3, "{log}");

    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!(
        (job.processed_rows, job.inserted_rows, job.error_rows),
        (18, 9, 9)
    );
    let cities: Vec<(String, Option<String>)> = env
        .customers()
        .await
        .into_iter()
        .map(|c| (c.0, c.4))
        .collect();
    let want: Vec<(String, Option<String>)> = [
        ("a@x.com", "1"),
        ("b@x.com", "1"),
        ("c@x.com", "2"),
        ("d@x.com", "2"),
        ("e@x.com", "3"),
        ("f@x.com", "4"),
        ("g@x.com", "5"),
        ("h@x.com", "2"),
        ("i@x.com", "6"),
        ("pre@x.com", "before"),
    ]
    .iter()
    .map(|(e, c)| (e.to_string(), Some(c.to_string())))
    .collect();
    assert_eq!(cities, want);
    let report = env.report(&job).await;
    let rows: Vec<(&str, &str, &str)> = report[1..]
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("3", "duplicate_in_db", "email pre@x.com already exists"),
            (
                "8",
                "duplicate_in_file",
                "email a@x.com already appears on line 2"
            ),
            ("10", "duplicate_in_db", "email pre@x.com already exists"),
            (
                "11",
                "duplicate_in_file",
                "email e@x.com already appears on line 9"
            ),
            ("12", "duplicate_in_db", "email pre@x.com already exists"),
            (
                "15",
                "duplicate_in_file",
                "email d@x.com already appears on line 6"
            ),
            (
                "16",
                "duplicate_in_file",
                "email f@x.com already appears on line 13"
            ),
            (
                "17",
                "duplicate_in_file",
                "email g@x.com already appears on line 14"
            ),
            (
                "18",
                "duplicate_in_file",
                "email g@x.com already appears on line 14"
            ),
        ]
    );
}
