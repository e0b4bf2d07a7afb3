//! Files as people really export them (issue 13), each checked row by row in `customers`
//! and in errors.csv, against the real Postgres and Garage: Excel's windows-1251 with `;`,
//! CRLF and a Russian header; windows-1252 with `;`; UTF-16 LE with a BOM and tabs (Excel's
//! "Unicode text"); columns reordered, renamed and with an extra one; a header without an
//! email column; unknown header names (positional); gzip, killed mid-file and resumed; a
//! UTF-8 file with one invalid byte; every encoding resumed from a mid-file checkpoint. Also
//! the dry run against the real run, `max_errors`, and the re-importable file of bad rows.

use crate::common;
use bulk_import_core::{
    job::rows_report_key,
    options::{Dialect, HeaderKind, ImportOptions},
    ImportMode, JobRow, JobStatus,
};
use bulk_import_importer::Outcome;
use common::{parse_csv, Backend, Customer, TestEnv};
use std::time::Duration;
use uuid::Uuid;

fn s(v: &str) -> String {
    v.to_string()
}

fn o(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn customer(e: &str, f: &str, l: &str, p: &str, c: &str) -> Customer {
    (s(e), o(f), o(l), o(p), o(c))
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| s(c)).collect()
}

const REPORT_HEADER: [&str; 8] = [
    "line",
    "code",
    "message",
    "email",
    "first_name",
    "last_name",
    "phone",
    "city",
];

fn dialect(job: &JobRow) -> Dialect {
    job.dialect().expect("the job records its dialect")
}

fn mapped(d: &Dialect) -> Vec<(String, usize)> {
    d.columns
        .iter()
        .map(|c| (c.column.clone(), c.position))
        .collect()
}

fn utf16le(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn counters(j: &JobRow) -> (JobStatus, i64, i64, i64, i64) {
    (
        j.status(),
        j.processed_rows,
        j.inserted_rows,
        j.updated_rows,
        j.error_rows,
    )
}

const RUSSIAN_EXCEL: &str = "Email;Имя;Фамилия;Телефон;Город\r\n\
ivan@example.ru;Иван;Петров;+7 900 000-00-01;Москва\r\n\
 Olga@Example.RU ;Ольга;\"Сидорова; мл.\";;Санкт-Петербург\r\n\
не-почта;Пётр;Иванов;;Казань\r\n\
;Без;Почты;;\r\n\
anna@example.ru;Анна;\"Много\r\nстрочная\";;Омск\r\n\
ivan@example.ru;Иван;Дубль;;Тверь\r\n";

#[tokio::test]
async fn excel_windows_1251_semicolons_crlf_russian_header() {
    let env = TestEnv::with(Backend::S3, &[("BATCH_SIZE", "2")]).await;
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(RUSSIAN_EXCEL);
    assert!(!unmappable);
    let (job, outcome) = env.import(&bytes, ImportMode::InsertOnly).await;
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    assert_eq!(counters(&job), (JobStatus::Done, 6, 3, 0, 3));
    assert_eq!(job.checkpoint_offset, job.file_size);
    let d = dialect(&job);
    assert_eq!(
        (d.encoding.as_str(), d.delimiter.as_str(), d.header),
        ("windows-1251", ";", HeaderKind::ByName)
    );
    assert_eq!(
        mapped(&d),
        [
            (s("email"), 1),
            (s("first_name"), 2),
            (s("last_name"), 3),
            (s("phone"), 4),
            (s("city"), 5)
        ]
    );
    assert!(d.warnings.is_empty());
    assert_eq!(
        env.customers().await,
        [
            customer("anna@example.ru", "Анна", "Много\r\nстрочная", "", "Омск"),
            customer(
                "ivan@example.ru",
                "Иван",
                "Петров",
                "+7 900 000-00-01",
                "Москва"
            ),
            customer(
                "olga@example.ru",
                "Ольга",
                "Сидорова; мл.",
                "",
                "Санкт-Петербург"
            ),
        ]
    );
    assert_eq!(
        env.report(&job).await,
        [
            row(&REPORT_HEADER),
            row(&[
                "4",
                "invalid_email",
                "\"не-почта\" is not a valid email address",
                "не-почта",
                "Пётр",
                "Иванов",
                "",
                "Казань"
            ]),
            row(&[
                "5",
                "missing_email",
                "email is required",
                "",
                "Без",
                "Почты",
                "",
                ""
            ]),
            row(&[
                "8",
                "duplicate_in_file",
                "email ivan@example.ru already appears on line 2",
                "ivan@example.ru",
                "Иван",
                "Дубль",
                "",
                "Тверь"
            ]),
        ]
    );
}

#[tokio::test]
async fn windows_1252_with_semicolons() {
    let env = TestEnv::new(Backend::Fs).await;
    let text = "email;first_name;last_name;phone;city\r\n\
jose@example.es;José;Muñoz;;Málaga\r\n\
francois@example.fr;François;Lefèvre;+33 1 23;Besançon\r\n\
bad@;Jürgen;Groß;;Köln\r\n\
zoe@example.de;Zoë;Ødegård;;Århus\r\n";
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(text);
    assert!(!unmappable);
    let (job, _) = env.import(&bytes, ImportMode::InsertOnly).await;
    assert_eq!(counters(&job), (JobStatus::Done, 4, 3, 0, 1));
    let d = dialect(&job);
    assert_eq!(
        (d.encoding.as_str(), d.delimiter.as_str()),
        ("windows-1252", ";")
    );
    assert_eq!(
        env.customers().await,
        [
            customer(
                "francois@example.fr",
                "François",
                "Lefèvre",
                "+33 1 23",
                "Besançon"
            ),
            customer("jose@example.es", "José", "Muñoz", "", "Málaga"),
            customer("zoe@example.de", "Zoë", "Ødegård", "", "Århus"),
        ]
    );
    assert_eq!(
        env.report(&job).await,
        [
            row(&REPORT_HEADER),
            row(&[
                "4",
                "invalid_email",
                "\"bad@\" is not a valid email address",
                "bad@",
                "Jürgen",
                "Groß",
                "",
                "Köln"
            ]),
        ]
    );
}

#[tokio::test]
async fn utf16le_with_bom_and_tabs_as_excel_unicode_text() {
    let env = TestEnv::with(Backend::S3, &[("BATCH_SIZE", "1")]).await;
    let text = "E-mail\tFirst Name\tLast Name\tPhone\tCity\r\n\
ann@example.com\tAnn 😀\tLee\t\tOslo\r\n\
ivan@example.ru\tИван\t\"Tab\tinside\"\t+7\tМосква\r\n\
\r\n\
broken\tX\tY\t\t\r\n\
mei@example.cn\t美\t王\t\t北京\r\n";
    let bytes = utf16le(text);
    let (job, _) = env.import(&bytes, ImportMode::Upsert).await;
    assert_eq!(counters(&job), (JobStatus::Done, 4, 3, 0, 1));
    assert_eq!(job.checkpoint_offset, job.file_size);
    let d = dialect(&job);
    assert_eq!(
        (d.encoding.as_str(), d.delimiter.as_str(), d.header),
        ("UTF-16LE", "\t", HeaderKind::ByName)
    );
    assert_eq!(
        env.customers().await,
        [
            customer("ann@example.com", "Ann 😀", "Lee", "", "Oslo"),
            customer("ivan@example.ru", "Иван", "Tab\tinside", "+7", "Москва"),
            customer("mei@example.cn", "美", "王", "", "北京"),
        ]
    );
    // Line numbers are physical: the blank line 4 counts.
    assert_eq!(
        env.report(&job).await,
        [
            row(&REPORT_HEADER),
            row(&[
                "5",
                "invalid_email",
                "\"broken\" is not a valid email address",
                "broken",
                "X",
                "Y",
                "",
                ""
            ]),
        ]
    );
}

#[tokio::test]
async fn columns_by_name_in_any_order_with_an_extra_column() {
    let env = TestEnv::new(Backend::Fs).await;
    let file = b"City,Notes,E-mail,First Name,Surname\n\
Oslo,vip,Ann@Example.com,Ann,Lee\n\
Paris,,bob@example.com,Bob,\n\
Rome,short row,carl@example.com,Carl\n\
,=SUM(1),dora@example.com,,Diaz\n";
    let (job, _) = env.import(file, ImportMode::InsertOnly).await;
    assert_eq!(counters(&job), (JobStatus::Done, 4, 3, 0, 1));
    let d = dialect(&job);
    assert_eq!(d.header, HeaderKind::ByName);
    assert_eq!(d.fields, 5);
    assert_eq!(
        mapped(&d),
        [
            (s("email"), 3),
            (s("first_name"), 4),
            (s("last_name"), 5),
            (s("city"), 1)
        ]
    );
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(d.warnings[0].contains("\"Notes\""), "{:?}", d.warnings);
    // The phone column is missing: NULL. Notes are ignored.
    assert_eq!(
        env.customers().await,
        [
            customer("ann@example.com", "Ann", "Lee", "", "Oslo"),
            customer("bob@example.com", "Bob", "", "", "Paris"),
            customer("dora@example.com", "", "Diaz", "", ""),
        ]
    );
    assert_eq!(
        env.report(&job).await,
        [
            row(&REPORT_HEADER),
            row(&[
                "4",
                "wrong_column_count",
                "expected 5 fields, found 4",
                "carl@example.com",
                "Carl",
                "",
                "",
                "Rome"
            ]),
        ]
    );
}

#[tokio::test]
async fn a_header_without_an_email_column_fails_the_job_at_once() {
    let env = TestEnv::new(Backend::Fs).await;
    let file = b"Name,Phone,City\nAnn,1,Oslo\n";
    let (job, outcome) = env.import(file, ImportMode::InsertOnly).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(job.status(), JobStatus::Failed);
    let error = job.error.clone().unwrap();
    assert!(error.starts_with("missing_email_column: "), "{error}");
    assert!(error.contains("\"Phone\""), "{error}");
    assert_eq!(job.processed_rows, 0);
    assert!(env.customers().await.is_empty());
}

#[tokio::test]
async fn unknown_header_names_stay_positional() {
    let env = TestEnv::new(Backend::Fs).await;
    let file = b"col1,col2,col3,col4,col5\nann@example.com,Ann,Lee,1,Oslo\nbob@example.com,Bob\n";
    let (job, _) = env.import(file, ImportMode::InsertOnly).await;
    assert_eq!(counters(&job), (JobStatus::Done, 2, 1, 0, 1));
    let d = dialect(&job);
    assert_eq!(d.header, HeaderKind::Positional);
    assert_eq!(d.fields, 5);
    assert!(d.warnings.is_empty());
    assert_eq!(
        env.customers().await,
        [customer("ann@example.com", "Ann", "Lee", "1", "Oslo")]
    );
    assert_eq!(
        env.report(&job).await[1],
        row(&[
            "3",
            "wrong_column_count",
            "expected 5 fields, found 2",
            "bob@example.com",
            "Bob",
            "",
            "",
            ""
        ])
    );
}

#[tokio::test]
async fn a_utf8_file_with_one_invalid_byte_fails_only_that_row() {
    let env = TestEnv::new(Backend::Fs).await;
    let mut file = "email,first_name,last_name,phone,city\n\
ivan@example.ru,Иван,Петров,,Москва\n"
        .as_bytes()
        .to_vec();
    file.extend_from_slice(b"bad@example.com,Jo\xffrg,,,\n");
    file.extend_from_slice("olga@example.ru,Ольга,,,Омск\n".as_bytes());
    let (job, _) = env.import(&file, ImportMode::InsertOnly).await;
    assert_eq!(counters(&job), (JobStatus::Done, 3, 2, 0, 1));
    assert_eq!(dialect(&job).encoding, "UTF-8");
    assert_eq!(
        env.customers().await,
        [
            customer("ivan@example.ru", "Иван", "Петров", "", "Москва"),
            customer("olga@example.ru", "Ольга", "", "", "Омск"),
        ]
    );
    assert_eq!(
        env.report(&job).await[1],
        row(&[
            "3",
            "invalid_utf8",
            "first_name is not valid UTF-8",
            "bad@example.com",
            "Jo\u{FFFD}rg",
            "",
            "",
            ""
        ])
    );
}

#[tokio::test]
async fn overrides_win_over_detection() {
    let env = TestEnv::new(Backend::Fs).await;
    // Detection would take `,` (more fields) and UTF-8; the user knows better.
    let (bytes, _, _) =
        encoding_rs::WINDOWS_1252.encode("email|city\nann@example.com|Zürich, CH\n");
    let options = ImportOptions {
        delimiter: Some(b'|'),
        encoding: Some("windows-1252".into()),
        ..ImportOptions::default()
    };
    let (job, _) = env
        .import_with(&bytes, ImportMode::InsertOnly, &options)
        .await;
    assert_eq!(counters(&job), (JobStatus::Done, 1, 1, 0, 0));
    let d = dialect(&job);
    assert_eq!(
        (d.delimiter.as_str(), d.encoding.as_str()),
        ("|", "windows-1252")
    );
    assert_eq!(
        env.customers().await,
        [customer("ann@example.com", "", "", "", "Zürich, CH")]
    );
}

#[tokio::test]
async fn an_explicit_mapping_wins_over_the_header_names() {
    let env = TestEnv::new(Backend::Fs).await;
    // "Mobile Number" is not a known name, and "City" would be read as the city.
    let file = b"E-mail Address,Given Name,Mobile Number,City\n\
                 ann@example.com,Ann,+47 1,Oslo\nbob@example.com,Bob,+47 2\n";
    let options = ImportOptions {
        columns: Some(
            bulk_import_core::options::parse_columns("email:E-mail Address,phone:mobile number")
                .unwrap(),
        ),
        ..ImportOptions::default()
    };
    let (job, _) = env
        .import_with(file, ImportMode::InsertOnly, &options)
        .await;
    // Records still need the header's four fields.
    assert_eq!(counters(&job), (JobStatus::Done, 2, 1, 0, 1));
    let d = dialect(&job);
    assert_eq!(d.header, HeaderKind::Explicit);
    assert_eq!(d.fields, 4);
    assert_eq!(mapped(&d), [(s("email"), 1), (s("phone"), 3)]);
    assert_eq!(d.columns[1].header, "Mobile Number");
    assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    assert_eq!(
        env.customers().await,
        [customer("ann@example.com", "", "", "+47 1", "")]
    );
    assert_eq!(job.options(), options, "the mapping is stored with the job");

    // A mapped header the file does not have fails the job at once.
    let options = ImportOptions {
        columns: Some(bulk_import_core::options::parse_columns("email:Courriel").unwrap()),
        ..ImportOptions::default()
    };
    let (job, outcome) = env
        .import_with(file, ImportMode::InsertOnly, &options)
        .await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    let error = job.error.clone().unwrap();
    assert!(error.starts_with("invalid_columns: "), "{error}");
    assert!(error.contains("\"Mobile Number\""), "{error}");
    assert_eq!(job.processed_rows, 0);
}

/// A file of `n` rows with a Russian header and names, some rows bad and some repeated.
fn russian_rows(n: usize) -> String {
    let mut out = String::from("Почта;Имя;Фамилия;Телефон;Город\r\n");
    for i in 0..n {
        if i % 97 == 96 {
            out.push_str(&format!("плохой-{i};Имя{i};;;\r\n"));
        } else if i % 89 == 88 {
            out.push_str(&format!("USER{}@Example.ru;Повтор;;;\r\n", i / 2));
        } else {
            out.push_str(&format!(
                "user{i}@example.ru;Имя{i};\"Фамилия; {i}\";+7{i:07};Город {}\r\n",
                i % 31
            ));
        }
    }
    out
}

struct Run {
    job: JobRow,
    customers: Vec<Customer>,
    report: Vec<u8>,
}

async fn run_of(env: &TestEnv, id: Uuid) -> Run {
    let job = env.job(id).await;
    Run {
        customers: env.customers().await,
        report: env.report_bytes(&job).await,
        job,
    }
}

const KILL_VARS: &[(&str, &str)] = &[("BATCH_SIZE", "100"), ("IMPORT_SLOW_MS", "0")];

/// The file imported by the real importer binary, SIGKILLed twice mid-file and restarted,
/// equals an uninterrupted run: customers, counters and errors.csv.
async fn killed_mid_file_equals_uninterrupted(bytes: &[u8], rows: i64, encoding: &str) {
    let want = {
        let env = TestEnv::with(Backend::S3, KILL_VARS).await;
        let id = env.submit(bytes, ImportMode::InsertOnly).await;
        assert!(env.importer_command(id).status().unwrap().success());
        run_of(&env, id).await
    };
    assert_eq!(want.job.processed_rows, rows);
    assert_eq!(dialect(&want.job).encoding, encoding);

    let env = TestEnv::with(Backend::S3, KILL_VARS).await;
    let id = env.submit(bytes, ImportMode::InsertOnly).await;
    for threshold in [rows / 3, rows * 2 / 3] {
        let mut child = env.importer_command(id).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let seen = loop {
            let job = env.job(id).await;
            if job.processed_rows >= threshold {
                break Some(job);
            }
            if child.try_wait().unwrap().is_some() {
                break None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for rows"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let job = seen.expect("the importer was still running at the threshold");
        assert!(job.processed_rows < rows, "killed mid-file");
    }
    let stopped = env.job(id).await;
    assert_eq!(stopped.status(), JobStatus::Processing);
    assert!(stopped.checkpoint_offset < stopped.file_size);
    assert!(env.importer_command(id).status().unwrap().success());
    let got = run_of(&env, id).await;
    assert_eq!(counters(&got.job), counters(&want.job));
    assert_eq!(got.job.checkpoint_offset, got.job.file_size);
    assert!(got.customers == want.customers, "customers differ");
    assert!(got.report == want.report, "errors.csv differs");
}

#[tokio::test]
async fn gzip_killed_mid_file_and_resumed() {
    let text = russian_rows(30_000);
    let (plain, _, _) = encoding_rs::UTF_8.encode(&text);
    let bytes = gzip(&plain);
    killed_mid_file_equals_uninterrupted(&bytes, 30_000, "UTF-8").await;
}

#[tokio::test]
async fn gzip_windows_1251_killed_mid_file_and_resumed() {
    let text = russian_rows(30_000);
    let (legacy, _, _) = encoding_rs::WINDOWS_1251.encode(&text);
    killed_mid_file_equals_uninterrupted(&gzip(&legacy), 30_000, "windows-1251").await;
}

#[tokio::test]
async fn windows_1251_killed_mid_file_and_resumed() {
    let text = russian_rows(30_000);
    let (legacy, _, _) = encoding_rs::WINDOWS_1251.encode(&text);
    killed_mid_file_equals_uninterrupted(&legacy, 30_000, "windows-1251").await;
}

#[tokio::test]
async fn utf16le_killed_mid_file_and_resumed() {
    let text = russian_rows(30_000).replace(';', "\t");
    killed_mid_file_equals_uninterrupted(&utf16le(&text), 30_000, "UTF-16LE").await;
}

#[tokio::test]
async fn gzip_progress_is_by_stored_bytes() {
    let env = TestEnv::with(Backend::Fs, &[("BATCH_SIZE", "500")]).await;
    let text = russian_rows(5_000);
    let bytes = gzip(text.as_bytes());
    let (job, _) = env.import(&bytes, ImportMode::Upsert).await;
    assert_eq!(job.status(), JobStatus::Done);
    assert_eq!(job.file_size, bytes.len() as i64);
    assert_eq!(job.checkpoint_offset, job.file_size);
    assert_eq!(job.checkpoint_stream_offset, Some(text.len() as i64));
    assert_eq!(dialect(&job).compression, "gzip");
    assert_eq!(job.processed_rows, 5_000);
}

/// A file with every kind of outcome across batches: existing emails, repeats across and
/// within batches, bad rows.
fn mixed_file() -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..60 {
        match i % 7 {
            0 => out.push_str(&format!("old{}@example.com,Again,,,\n", i % 3)),
            1 => out.push_str(&format!("bad-{i},,,,\n")),
            2 => out.push_str(&format!("USER{}@example.com,Repeat,,,\n", i / 3)),
            _ => out.push_str(&format!("user{i}@example.com,F{i},L{i},,C\n")),
        }
    }
    out.into_bytes()
}

async fn dry_run_reports_what_the_real_run_does(mode: ImportMode) {
    let env = TestEnv::with(Backend::S3, &[("BATCH_SIZE", "4")]).await;
    for i in 0..3 {
        sqlx::query("INSERT INTO customers (org_id, email, first_name) VALUES ($2, $1, 'Old')")
            .bind(format!("old{i}@example.com"))
            .bind(env.org)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let before = env.customers().await;
    let file = mixed_file();
    let dry = ImportOptions {
        dry_run: true,
        ..ImportOptions::default()
    };
    let (dry_job, outcome) = env.import_with(&file, mode, &dry).await;
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    assert!(dry_job.dry_run);
    assert_eq!(
        env.customers().await,
        before,
        "a dry run writes no customer row"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM import_dry_run_rows")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the dry run's bookkeeping is gone");

    let (real, _) = env.import(&file, mode).await;
    assert_eq!(counters(&dry_job), counters(&real));
    assert!(real.error_rows > 0 && real.inserted_rows > 0);
    if mode == ImportMode::Upsert {
        assert!(real.updated_rows > 0);
    }
    assert_eq!(
        env.report_bytes(&dry_job).await,
        env.report_bytes(&real).await,
        "errors.csv of the dry run is the real run's"
    );
    assert_ne!(env.customers().await, before);
}

#[tokio::test]
async fn dry_run_insert_only_reports_exactly_the_real_run() {
    dry_run_reports_what_the_real_run_does(ImportMode::InsertOnly).await;
}

#[tokio::test]
async fn dry_run_upsert_reports_exactly_the_real_run() {
    dry_run_reports_what_the_real_run_does(ImportMode::Upsert).await;
}

#[tokio::test]
async fn max_errors_stops_the_job_and_keeps_what_was_committed() {
    let env = TestEnv::with(Backend::Fs, &[("BATCH_SIZE", "2")]).await;
    let mut file = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..40 {
        if i % 2 == 1 {
            file.push_str(&format!("bad-{i},,,,\n"));
        } else {
            file.push_str(&format!("u{i}@example.com,,,,\n"));
        }
    }
    let options = ImportOptions {
        max_errors: Some(3),
        ..ImportOptions::default()
    };
    let (job, outcome) = env
        .import_with(file.as_bytes(), ImportMode::InsertOnly, &options)
        .await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(job.status(), JobStatus::Failed);
    assert!(
        job.error
            .as_deref()
            .unwrap()
            .starts_with("too_many_errors: "),
        "{:?}",
        job.error
    );
    // Stopped at the first commit past the limit (batch 4, one error each): the committed
    // rows stay, nothing after — not even the batch applied beside that one.
    assert_eq!(job.error_rows, 4);
    assert_eq!(job.processed_rows, job.inserted_rows + job.error_rows);
    assert!(job.processed_rows < 40);
    let next_line = job.checkpoint_line;
    let want: Vec<Customer> = {
        let mut v: Vec<Customer> = (0..40)
            .filter(|i| i % 2 == 0 && (i + 2) < next_line)
            .map(|i| customer(&format!("u{i}@example.com"), "", "", "", ""))
            .collect();
        v.sort();
        v
    };
    assert_eq!(env.customers().await, want);
    // The errors found so far are reported.
    let report = env.report(&job).await;
    assert_eq!(report.len() as i64 - 1, job.error_rows);
}

#[tokio::test]
async fn the_bad_rows_file_is_reimportable() {
    let env = TestEnv::new(Backend::S3).await;
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(RUSSIAN_EXCEL);
    let (job, _) = env.import(&bytes, ImportMode::InsertOnly).await;
    let rows = env
        .storage
        .read_to_vec(&rows_report_key(job.id))
        .await
        .unwrap();
    assert_eq!(
        parse_csv(&rows),
        [
            row(&["email", "first_name", "last_name", "phone", "city"]),
            row(&["не-почта", "Пётр", "Иванов", "", "Казань"]),
            row(&["", "Без", "Почты", "", ""]),
            row(&["ivan@example.ru", "Иван", "Дубль", "", "Тверь"]),
        ]
    );
    // Fixed and uploaded again, it loads by name as a standard file.
    let fixed = String::from_utf8(rows)
        .unwrap()
        .replace("не-почта", "petr@example.ru")
        .replace(",Без,", "bez@example.ru,Без,");
    let (again, _) = env.import(fixed.as_bytes(), ImportMode::Upsert).await;
    assert_eq!(counters(&again), (JobStatus::Done, 3, 2, 1, 0));
    assert_eq!(dialect(&again).header, HeaderKind::ByName);
}
