//! `import --from-key KEY`: an object already in storage under the organization's import
//! prefix is imported without an upload; the same command again finds the same job.

use super::{good_rows, show, stdout, User};
use crate::common::{Backend, TestApp};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_key_imports_an_object_in_storage_once() {
    let app = TestApp::spawn(Backend::S3).await;
    let user = User::new(&app);
    user.register().await;
    let org: i32 = sqlx::query_scalar("SELECT org_id FROM users WHERE email = $1")
        .bind(&user.email)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let key = format!("orgs/{org}/inbox/people.csv");
    app.storage
        .put_stream(&key, std::io::Cursor::new(good_rows(40)))
        .await
        .unwrap();

    let first = user
        .run(&["import", "--from-key", &key, "--json", "--wait"])
        .await;
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let job: Value = serde_json::from_str(stdout(&first).trim()).unwrap();
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["inserted_rows"], 40, "{job}");
    assert_eq!(job["file_name"], "people.csv", "{job}");
    let again = user.run(&["import", "--from-key", &key, "--json"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    let again: Value = serde_json::from_str(stdout(&again).trim()).unwrap();
    assert_eq!(again["id"], job["id"]);

    // Outside the prefixes: the API's refusal, as a usage error.
    let outside = format!("orgs/{org}/elsewhere/people.csv");
    let refused = user.run(&["import", "--from-key", &outside]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", show(&refused));
    assert!(
        show(&refused).contains("import prefixes"),
        "{}",
        show(&refused)
    );
}
