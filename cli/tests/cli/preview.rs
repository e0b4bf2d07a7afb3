//! `import FILE --preview` and `--columns` over real HTTP (issue 26).

use super::{show, stderr, stdout, Backend, TestApp, User};
use serde_json::Value;

/// windows-1251, `;`, a header the service partly does not know.
const EXPORT: &str = "E-mail Address;Given Name;Family Name;Mobile Number\r\n\
Ivan@Example.ru;Иван;Петров;+7 900 000-00-01\r\n\
не-почта;Пётр;Сидоров;+7 900 000-00-02\r\n";

const MAPPING: &str =
    "email:E-mail Address,first_name:Given Name,last_name:Family Name,phone:Mobile Number";

async fn jobs(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn preview_shows_the_mapping_and_columns_imports_by_it() {
    let app = TestApp::spawn(Backend::S3).await;
    let user = User::new(&app);
    user.register().await;
    let export = encoding_rs::WINDOWS_1251.encode(EXPORT).0.into_owned();
    let file = user.file("export.csv", &export);

    let out = user.run(&["import", &file, "--preview"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    for expected in [
        "delimiter \";\", encoding windows-1251, compression none, header by_name",
        "\"E-mail Address\"  email",
        "\"Mobile Number\"   (not imported)",
        "2     ivan@example.ru",
        "invalid_email: ",
        "2 rows shown, 1 bad",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    assert_eq!(jobs(&app).await, 0, "a preview makes no job");

    let out = user
        .run(&["import", &file, "--preview", "--columns", MAPPING, "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let preview: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(preview["dialect"]["header"], "explicit");
    assert_eq!(preview["mapping"][3]["column"], "phone");
    assert_eq!(preview["rows"][0]["values"]["phone"], "+7 900 000-00-01");

    // A mapping naming a header the file does not have: refused as asked (exit 2).
    for args in [
        vec!["import", &file, "--preview", "--columns", "email:Courriel"],
        vec!["import", &file, "--columns", "email:Courriel"],
    ] {
        let out = user.run(&args).await;
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(stderr(&out).contains("Courriel"), "{}", show(&out));
    }
    assert_eq!(jobs(&app).await, 0);

    // The import by the mapping: the phones are loaded; one bad row (exit 3).
    let out = user
        .run(&["import", &file, "--columns", MAPPING, "--wait"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let phones: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT email, phone FROM customers")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        phones,
        [("ivan@example.ru".into(), Some("+7 900 000-00-01".into()))]
    );
    // The mapping is part of the default key: without it, the same file is another job.
    let out = user.run(&["import", &file, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(jobs(&app).await, 2);
}
