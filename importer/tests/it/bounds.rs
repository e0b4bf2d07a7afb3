//! The importer bounded by construction (docs/reliability.md, "Abuse"), with the real importer
//! binary, Postgres and storage: its memory does not grow with the line breaks between two
//! rows (blank lines, a quoted field of many lines) in any encoding; a gzip file expands at
//! most `MAX_DECOMPRESSED_BYTES` / `MAX_DECOMPRESSION_RATIO` (`file_too_large`); a job stores
//! at most `MAX_STORED_ERROR_ROWS` error rows, the first in line order, exactly also when it
//! is killed and resumed; and neither report file holds a formula a spreadsheet would run,
//! whether its list separator is `,` or `;`, while rows.csv imports again to the same values.

use crate::common;
use bulk_import_core::{job::rows_report_key, options::ImportOptions, ImportMode, JobStatus};
use bulk_import_importer::report::{neutralize_for_import, NOT_STORED};
use common::{parse_csv, Backend, TestEnv};
use flate2::{write::GzEncoder, Compression};
use std::{io::Write, time::Duration};
use uuid::Uuid;

const HEADER: &str = "email,first_name,last_name,phone,city";
const MIB: i64 = 1024;

/// Runs the importer binary on job `id` to its exit: (exit code, its peak RSS in KiB).
///
/// The peak is the process's `VmHWM` (`/proc/<pid>/status`), read every few milliseconds
/// while it runs: the high-water mark of its own address space. Not `ru_maxrss`: the kernel
/// counts into that the address space the child had before its `exec`, which is this test
/// process's (tests of one binary share it, and hold files of tens of MB).
pub(crate) async fn run_measured(env: &TestEnv, id: Uuid) -> (i32, i64) {
    let mut child = env.importer_command(id).spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut peak = 0;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the importer did not finish"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(peak > 0, "the importer's RSS was read");
    (status.code().expect("the importer exited"), peak)
}

fn gzip(parts: &[&[u8]]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    for p in parts {
        enc.write_all(p).unwrap();
    }
    enc.finish().unwrap()
}

fn windows_1251(text: &str) -> Vec<u8> {
    encoding_rs::WINDOWS_1251.encode(text).0.into_owned()
}

fn options(encoding: Option<&str>) -> ImportOptions {
    ImportOptions {
        encoding: encoding.map(str::to_string),
        ..ImportOptions::default()
    }
}

/// Stored error rows of a job, by line.
async fn stored_errors(env: &TestEnv, id: Uuid) -> Vec<(i64, String, [Option<String>; 5])> {
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    sqlx::query_as::<_, Row>(
        "SELECT line, code, email, first_name, last_name, phone, city FROM import_errors \
         WHERE job_id = $1 ORDER BY line",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(line, code, e, f, l, p, c)| (line, code, [e, f, l, p, c]))
    .collect()
}

/// 32 MB of blank lines with one real row at the end, read as windows-1251 (issue 24
/// measured 493 MiB: the decoder kept a mark per line break until the next checkpoint).
/// The importer stays under 64 MiB and the row keeps its physical line.
#[tokio::test]
async fn thirty_two_megabytes_of_blank_lines_in_windows_1251_keep_the_importer_under_64_mib() {
    let env = TestEnv::new(Backend::S3).await;
    let blank = 32_000_000;
    let mut file = windows_1251(&format!("{HEADER}\n"));
    file.resize(file.len() + blank, b'\n');
    file.extend(windows_1251("last@example.com,Ёж,,,\n"));
    let id = env
        .submit_with(
            &file,
            ImportMode::InsertOnly,
            &options(Some("windows-1251")),
        )
        .await;
    drop(file);
    let (code, rss) = run_measured(&env, id).await;
    println!(
        "32 MB of blank lines (windows-1251): importer peak RSS {:.1} MiB",
        rss as f64 / 1024.0
    );
    assert_eq!(code, 0);
    assert!(rss < 64 * MIB, "importer peak RSS {rss} KiB");
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!((job.processed_rows, job.inserted_rows), (1, 1));
    let (name, line): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT first_name, last_import_line FROM customers")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(name.as_deref(), Some("Ёж"));
    assert_eq!(line, Some(blank as i64 + 2), "the physical line");
    env.storage.delete(&job.source_object).await.unwrap();
}

/// The same bound in the other shapes of "much between two rows": CR-only and CRLF breaks,
/// UTF-16 and UTF-8, a quoted field spanning 32 MB of line breaks (one oversize record), and
/// blank lines inside gzip (with its ratio limit raised so that the file is read through).
#[tokio::test]
async fn line_breaks_between_rows_never_grow_the_importer_in_any_dialect() {
    const N: usize = 32_000_000;
    let utf16 =
        |text: &str| -> Vec<u8> { text.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let blank_1251 = |unit: &[u8]| {
        let mut f = windows_1251(&format!("{HEADER}\r\n"));
        f.extend(unit.repeat(N / unit.len()));
        f.extend(windows_1251("last@example.com,Ёж,,,\r\n"));
        f
    };
    // Each file is built when its case runs: 32 MB apiece.
    let file = |case: &str| -> Vec<u8> {
        match case {
            "windows-1251, CR only" => blank_1251(b"\r"),
            "windows-1251, CRLF" => blank_1251(b"\r\n"),
            "windows-1251, a quoted field of 32 MB of line breaks" => {
                let mut f = windows_1251(&format!("{HEADER}\n"));
                f.extend(windows_1251("long@example.com,\""));
                f.resize(f.len() + N, b'\n');
                f.extend(windows_1251("\",,,\nlast@example.com,Ёж,,,\n"));
                f
            }
            "UTF-16 LE with BOM, CRLF" => {
                let mut f = vec![0xFF, 0xFE];
                f.extend(utf16(&format!("{HEADER}\r\n")));
                f.extend(utf16(&"\r\n".repeat(N / 4)));
                f.extend(utf16("last@example.com,Ёж,,,\r\n"));
                f
            }
            "UTF-8, LF" => {
                let mut f = format!("{HEADER}\n").into_bytes();
                f.resize(f.len() + N, b'\n');
                f.extend("last@example.com,Ёж,,,\n".as_bytes());
                f
            }
            "gzip, windows-1251" => gzip(&[&blank_1251(b"\n")]),
            other => unreachable!("{other}"),
        }
    };
    /// (case, encoding, extra settings, processed, inserted)
    type Case<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)], i64, i64);
    let cases: [Case; 6] = [
        ("windows-1251, CR only", Some("windows-1251"), &[], 1, 1),
        ("windows-1251, CRLF", Some("windows-1251"), &[], 1, 1),
        (
            "windows-1251, a quoted field of 32 MB of line breaks",
            Some("windows-1251"),
            &[],
            2,
            1,
        ),
        ("UTF-16 LE with BOM, CRLF", None, &[], 1, 1),
        ("UTF-8, LF", None, &[], 1, 1),
        (
            "gzip, windows-1251",
            Some("windows-1251"),
            &[("MAX_DECOMPRESSION_RATIO", "100000")],
            1,
            1,
        ),
    ];
    for (case, encoding, vars, processed, inserted) in cases {
        let env = TestEnv::with(Backend::S3, vars).await;
        let id = env
            .submit_with(&file(case), ImportMode::InsertOnly, &options(encoding))
            .await;
        let (code, rss) = run_measured(&env, id).await;
        println!("{case}: importer peak RSS {:.1} MiB", rss as f64 / 1024.0);
        assert_eq!(code, 0, "{case}");
        assert!(rss < 64 * MIB, "{case}: importer peak RSS {rss} KiB");
        let job = env.job(id).await;
        assert_eq!(job.status(), JobStatus::Done, "{case}");
        assert_eq!(
            (job.processed_rows, job.inserted_rows),
            (processed, inserted),
            "{case}"
        );
        let customers = env.customers().await;
        assert_eq!(customers[0].1.as_deref(), Some("Ёж"), "{case}");
        env.storage.delete(&job.source_object).await.unwrap();
    }
}

/// A gzip of five million copies of one row (the attack of issue 24: a few hundred KiB that
/// stored 4,999,999 error rows): the job fails `file_too_large` once the file has expanded
/// `MAX_DECOMPRESSION_RATIO` (100) times its stored size; what was committed before stays,
/// the counters add up, no more than the default `MAX_STORED_ERROR_ROWS` (100,000) error rows
/// are stored (the report says how many more were counted), and the importer stays under
/// 64 MiB.
#[tokio::test]
async fn a_gzip_of_five_million_repeats_fails_file_too_large_within_the_default_bounds() {
    let env = TestEnv::new(Backend::S3).await;
    // Concatenated gzip members (as `cat a.gz b.gz` makes): 100 of 50,000 rows each.
    let row = "same@example.com,,,,\n";
    let first = gzip(&[
        format!("{HEADER}\n").as_bytes(),
        row.repeat(50_000).as_bytes(),
    ]);
    let more = gzip(&[row.repeat(50_000).as_bytes()]);
    let mut file = first;
    for _ in 1..100 {
        file.extend_from_slice(&more);
    }
    let size = file.len() as i64;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let (code, rss) = run_measured(&env, id).await;
    println!(
        "gzip of 5M repeats ({size} bytes): importer peak RSS {:.1} MiB",
        rss as f64 / 1024.0
    );
    assert_eq!(code, 2, "a permanent failure, recorded in the job");
    assert!(rss < 64 * MIB, "importer peak RSS {rss} KiB");
    let job = env.job(id).await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some("file_too_large"));
    assert!(job
        .error
        .as_deref()
        .unwrap()
        .contains(&(size * 100).to_string()));
    assert_eq!(
        job.processed_rows,
        job.inserted_rows + job.updated_rows + job.error_rows
    );
    assert_eq!(job.inserted_rows, 1);
    // Stopped near 100 × the stored size (~21 bytes a row), long before 5M rows.
    assert!(
        job.processed_rows <= size * 100 / 21,
        "{}",
        job.processed_rows
    );
    assert!(job.error_rows > 100_000, "enough rows to reach the cap");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM import_errors WHERE job_id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 100_000, "the default cap, reached");
    let report = env.report(&job).await;
    assert_eq!(report.len(), 1 + 100_000 + 1);
    let last = report.last().unwrap();
    assert_eq!((last[0].as_str(), last[1].as_str()), ("", NOT_STORED));
    assert!(
        last[2].starts_with(&format!("{} more bad rows", job.error_rows - 100_000)),
        "{last:?}"
    );
}

/// A file that decompresses past `MAX_DECOMPRESSED_BYTES` fails the same way, whatever its
/// ratio; the batches committed before stay and match the counters.
#[tokio::test]
async fn a_gzip_past_max_decompressed_bytes_fails_file_too_large_keeping_whole_batches() {
    let env = TestEnv::with(
        Backend::S3,
        &[("MAX_DECOMPRESSED_BYTES", "300000"), ("BATCH_SIZE", "500")],
    )
    .await;
    let file = gzip(&[&common::generated_csv(20_000)]);
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    let (code, _) = run_measured(&env, id).await;
    assert_eq!(code, 2);
    let job = env.job(id).await;
    assert_eq!(job.error_code.as_deref(), Some("file_too_large"));
    assert!(job.processed_rows > 0 && job.processed_rows < 20_000);
    assert_eq!(
        job.processed_rows,
        job.inserted_rows + job.updated_rows + job.error_rows
    );
    assert_eq!(env.customers().await.len() as i64, job.inserted_rows);
    assert!(job.checkpoint_stream_offset.unwrap() <= 300_000);
}

/// Every third row invalid, every third a repeat of one of 50 emails (duplicate_in_file,
/// found across batches by the loader), the rest new.
fn dirty_file(rows: usize) -> Vec<u8> {
    let mut f = format!("{HEADER}\n");
    for i in 0..rows {
        match i % 3 {
            0 => f.push_str(&format!("bad-{i},B,,,\n")),
            1 => f.push_str(&format!("dup{}@example.com,D,,,\n", i % 50)),
            _ => f.push_str(&format!("new{i}@example.com,N,,,\n")),
        }
    }
    f.into_bytes()
}

const CAP: &[(&str, &str)] = &[("MAX_STORED_ERROR_ROWS", "250"), ("BATCH_SIZE", "100")];

/// A job stores its first `MAX_STORED_ERROR_ROWS` bad rows in line order and counts the rest:
/// the counters are those of an uncapped run, the stored rows its first 250, errors.csv ends
/// with a `not_stored` row, rows.csv holds the stored rows only. Killed three times (once
/// before the cap, once about it, once after) and resumed, the job ends with exactly the same
/// stored rows and the same errors.csv as an uninterrupted capped run.
#[tokio::test]
async fn stored_error_rows_are_capped_exactly_also_when_the_importer_is_killed() {
    const ROWS: usize = 3_000;
    let file = dirty_file(ROWS);
    let uncapped = TestEnv::with(Backend::Fs, &[("BATCH_SIZE", "100")]).await;
    let (full, _) = uncapped.import(&file, ImportMode::InsertOnly).await;
    let all = stored_errors(&uncapped, full.id).await;
    assert!(all.len() > 1000, "{}", all.len());

    let capped = TestEnv::with(Backend::Fs, CAP).await;
    let id = capped.submit(&file, ImportMode::InsertOnly).await;
    assert!(capped.importer_command(id).status().unwrap().success());
    let job = capped.job(id).await;
    let counters = |j: &bulk_import_core::JobRow| {
        (j.status(), j.processed_rows, j.inserted_rows, j.error_rows)
    };
    assert_eq!(counters(&job), counters(&full));
    let stored = stored_errors(&capped, id).await;
    assert_eq!(stored, all[..250], "the first 250 in line order");
    let report = capped.report(&job).await;
    assert_eq!(report.len(), 1 + 250 + 1);
    assert_eq!(report[251][1], NOT_STORED);
    assert!(report[251][2].starts_with(&format!("{} more bad rows", all.len() - 250)));
    let rows = parse_csv(
        &capped
            .storage
            .read_to_vec(&rows_report_key(id))
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 1 + 250, "rows.csv: the stored rows, no summary");
    let want_report = capped.report_bytes(&job).await;

    // Killed and resumed, slowed down so that the kills land where they should.
    let env = TestEnv::with(Backend::Fs, &[CAP[0], CAP[1], ("IMPORT_SLOW_MS", "1")]).await;
    let id = env.submit(&file, ImportMode::InsertOnly).await;
    for threshold in [200, 700, 1800] {
        let mut child = env.importer_command(id).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while env.job(id).await.processed_rows < threshold {
            assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
            assert!(std::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // One statement, one snapshot: the killed importer's last commit may still land.
        let (processed, errors, stored): (i64, i64, i64) = sqlx::query_as(
            "SELECT processed_rows, error_rows, \
               (SELECT count(*) FROM import_errors WHERE job_id = $1) \
             FROM import_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert!(processed < ROWS as i64, "killed before the end");
        assert_eq!(stored, errors.min(250));
    }
    assert!(env.importer_command(id).status().unwrap().success());
    let resumed = env.job(id).await;
    assert_eq!(resumed.attempts, 4);
    assert_eq!(counters(&resumed), counters(&full));
    assert_eq!(stored_errors(&env, id).await, all[..250]);
    assert!(
        env.report_bytes(&resumed).await == want_report,
        "errors.csv differs from the uninterrupted run"
    );
}

/// What a spreadsheet could run from a piece of text that starts a cell for it: `=` or `@`,
/// or `+`/`-` with anything but a number after (see `report::neutralize_for_import`).
fn could_run(piece: &str) -> bool {
    let piece = piece.trim_start_matches([' ', '"']);
    match piece.as_bytes().first() {
        Some(b'=' | b'@') => true,
        Some(b'+' | b'-') => !piece
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().,/".contains(c)),
        _ => false,
    }
}

/// Every place in a report file where some spreadsheet may start a cell, whatever its list
/// separator and whatever it makes of quotes: the pieces between `,` `;` tab CR LF.
fn pieces(bytes: &[u8]) -> Vec<&str> {
    std::str::from_utf8(bytes)
        .unwrap()
        .split([',', ';', '\t', '\r', '\n'])
        .collect()
}

fn parse_with(bytes: &[u8], delimiter: u8) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes)
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Issue 24: `x;=cmd|' /C calc'!A0` in a bad row was written as it is to errors.csv and
/// rows.csv, and a spreadsheet whose list separator is `;` (ru, de, fr) split the cell there
/// and ran the formula. Now no cell a spreadsheet sees — the file parsed with `;` or `,`, or
/// cut at every separator and line break — starts a formula, in either file; and rows.csv
/// imported again stores the same values, except the ones that could run (with their `'`).
#[tokio::test]
async fn a_formula_after_a_semicolon_is_dead_in_both_files_and_rows_csv_imports_again() {
    let env = TestEnv::new(Backend::S3).await;
    let file = format!(
        "{HEADER}\n\
         x;=cmd|' /C calc'!A0,F,L,,\n\
         bad-1,x;=cmd|' /C calc'!A0,L,,\n\
         bad-2,\"Smith; Jones\",O'Neil,+47 22 33 44 55,\"Paris, TX\"\n\
         bad-3,\"=HYPERLINK(\"\"http://x\"\")\",\"line1\n=cmd\",-5,\"K; @SUM(A1)\"\n\
         bad-4,-Marie,\"\t=x\",\"+7 999; +7 998\",\"a\r\n+cmd|x\"\n\
         +1,&cmd|' /C calc'!A0,,,\n\
         bad-5,F,L,+1;+1,&cmd|' /C calc'!A0\n\
         ok@example.com,Ok,,,\n"
    );
    let (job, _) = env.import(file.as_bytes(), ImportMode::InsertOnly).await;
    assert_eq!((job.inserted_rows, job.error_rows), (1, 7));
    let originals = stored_errors(&env, job.id).await;
    assert_eq!(
        originals[0].2[0].as_deref(),
        Some("x;=cmd|' /C calc'!A0"),
        "stored as read"
    );

    // errors.csv: nothing that starts with = + - @ anywhere a cell may start.
    let errors_csv = env.report_bytes(&job).await;
    for piece in pieces(&errors_csv) {
        let p = piece.trim_start_matches([' ', '"']);
        assert!(
            !matches!(p.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@')),
            "errors.csv: {piece:?}"
        );
    }
    let with_semicolons = parse_with(&errors_csv, b';');
    assert!(with_semicolons.len() > 5);
    for cell in with_semicolons.iter().flatten() {
        assert!(!could_run(cell), "errors.csv read with ';': {cell:?}");
    }
    assert_eq!(env.report(&job).await[1][3], "x;'=cmd|' /C calc'!A0");

    // rows.csv: nothing that could run, anywhere a cell may start.
    let rows_csv = env
        .storage
        .read_to_vec(&rows_report_key(job.id))
        .await
        .unwrap();
    for piece in pieces(&rows_csv) {
        assert!(!could_run(piece), "rows.csv: {piece:?}");
    }
    for delimiter in [b';', b','] {
        for cell in parse_with(&rows_csv, delimiter).iter().flatten() {
            assert!(
                !could_run(cell),
                "rows.csv read with {:?}: {cell:?}",
                delimiter as char
            );
        }
    }

    // rows.csv imported again: the same bad rows with the same values, but for the text
    // that could run, which keeps its apostrophe.
    let again = env.submit(&rows_csv, ImportMode::InsertOnly).await;
    env.run(again).await;
    let second = env.job(again).await;
    assert_eq!(second.status(), JobStatus::Done);
    assert_eq!(second.dialect().unwrap().delimiter_byte(), b',');
    let reimported = stored_errors(&env, again).await;
    assert_eq!(reimported.len(), originals.len());
    for ((_, code, before), (_, code_again, after)) in originals.iter().zip(&reimported) {
        assert_eq!(code, code_again);
        let want: Vec<Option<String>> = before
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_deref()
                    .map(|v| neutralize_for_import(v, i == 0).into_owned())
            })
            .collect();
        assert_eq!(after.to_vec(), want);
    }
    // The values of row bad-2 are data, and come back exactly.
    assert_eq!(reimported[2].2, originals[2].2);
    assert_eq!(reimported[2].2[3].as_deref(), Some("+47 22 33 44 55"));
    assert_eq!(reimported[2].2[1].as_deref(), Some("Smith; Jones"));
    assert_eq!(reimported[1].2[1].as_deref(), Some("x;'=cmd|' /C calc'!A0"));
}
