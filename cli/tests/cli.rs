//! The `bulk-import` CLI against the real API binary in local mode (real Postgres, Redis,
//! Garage and importer), over real HTTP: the API harness of `api/tests` is reused.

#[path = "../../api/tests/common/mod.rs"]
mod common;

use common::{Backend, TestApp};
use serde_json::Value;
use std::process::Output;
use uuid::Uuid;

/// A user of the CLI: its own config directory (where `login` saves the token).
struct User {
    home: tempfile::TempDir,
    url: String,
    email: String,
}

const PASSWORD: &str = "pass12345";

impl User {
    fn new(app: &TestApp) -> User {
        User {
            home: tempfile::tempdir().unwrap(),
            url: app.base.clone(),
            email: format!("cli{}@example.com", Uuid::new_v4().simple()),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bulk-import"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("BULK_IMPORT_URL", &self.url)
            .env("BULK_IMPORT_PASSWORD", PASSWORD)
            .current_dir(self.home.path())
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    fn file(&self, name: &str, content: &[u8]) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    async fn register(&self) {
        let out = self.run(&["register", "--email", &self.email]).await;
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Nothing a progress bar or a colour would leave in the output.
fn assert_plain(out: &Output) {
    for text in [stdout(out), stderr(out)] {
        assert!(
            !text.contains('\r') && !text.contains('\x1b') && !text.contains("[=="),
            "terminal control output on a pipe: {text:?}"
        );
    }
}

/// `n` good rows.
fn good_rows(n: usize) -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..n {
        out.push_str(&format!("good{i}@example.com,First{i},Last{i},,City\n"));
    }
    out.into_bytes()
}

/// Three good rows, two bad ones (an invalid email, a duplicate in the file).
const WITH_BAD_ROWS: &[u8] = b"email,first_name,last_name,phone,city\n\
ann@example.com,Ann,Lee,+47 555 0100,Oslo\n\
not-an-email,Bob,,,\n\
cy@example.com,Cy,,,\n\
ann@example.com,Ann,Again,,\n\
di@example.com,Di,,,Rome\n";

#[tokio::test]
async fn import_wait_with_bad_rows_exits_3_with_a_summary_and_writes_the_report() {
    let app = TestApp::spawn(Backend::S3).await;
    let user = User::new(&app);
    user.register().await;

    // The token is saved with mode 0600.
    let saved = user.home.path().join("config/bulk-import/credentials.json");
    let mode = std::fs::metadata(&saved).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let file = user.file("customers.csv", WITH_BAD_ROWS);
    let out = user
        .run(&["import", &file, "--wait", "--report", "report.csv"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains(" done "), "{text}");
    assert!(
        text.contains("5 rows, 3 inserted, 0 updated, 2 bad"),
        "{text}"
    );
    assert!(text.contains("report.csv"), "{text}");
    assert_plain(&out);

    // The report written is the API's errors.csv, byte for byte.
    let written = std::fs::read(user.home.path().join("report.csv")).unwrap();
    let token: Value = app.login(&user.email, PASSWORD).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let list: Value = app.get(token, "/imports").await.json().await.unwrap();
    let id = list["items"][0]["id"].as_str().unwrap();
    let link: Value = app
        .get(token, &format!("/imports/{id}/errors"))
        .await
        .json()
        .await
        .unwrap();
    let expected = app
        .client
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(written, expected.to_vec());
    let report = String::from_utf8(written).unwrap();
    assert!(report.contains("invalid_email"), "{report}");
    assert!(report.contains("duplicate_in_file"), "{report}");
    assert!(text.contains(id), "{text}");

    // `errors ID -o FILE` writes the same report.
    let out = user.run(&["errors", id, "-o", "again.csv"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        std::fs::read(user.home.path().join("again.csv")).unwrap(),
        expected.to_vec()
    );
}

#[tokio::test]
async fn the_same_command_twice_makes_one_job_and_json_is_parsable() {
    let app = TestApp::spawn(Backend::S3).await;
    let user = User::new(&app);
    user.register().await;
    let file = user.file("people.csv", &good_rows(50));

    let first = user.run(&["import", &file, "--json"]).await;
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let second = user.run(&["import", &file, "--json", "--wait"]).await;
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
    let a: Value = serde_json::from_str(stdout(&first).trim()).unwrap();
    let b: Value = serde_json::from_str(stdout(&second).trim()).unwrap();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["status"], "done");
    assert_eq!(b["inserted_rows"], 50);
    assert_plain(&first);
    assert_plain(&second);

    // Another option is another job.
    let third = user.run(&["import", &file, "--json", "--dry-run"]).await;
    assert_eq!(third.status.code(), Some(0), "{}", show(&third));
    let c: Value = serde_json::from_str(stdout(&third).trim()).unwrap();
    assert_ne!(c["id"], a["id"]);
    assert_eq!(c["dry_run"], true);

    let list = user.run(&["list", "--json"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", show(&list));
    let list: Value = serde_json::from_str(stdout(&list).trim()).unwrap();
    assert_eq!(list["total"], 2, "{list}");

    let status = user
        .run(&["status", a["id"].as_str().unwrap(), "--json"])
        .await;
    let status: Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    assert_eq!(status["id"], a["id"]);
    assert_eq!(status["processed_rows"], 50);
}

#[tokio::test]
async fn a_wrong_password_and_an_unreachable_api_are_one_line_errors_with_exit_2() {
    let app = TestApp::spawn(Backend::S3).await;
    let user = User::new(&app);
    user.register().await;

    let out = user
        .command(&["login", "--email", &user.email])
        .env("BULK_IMPORT_PASSWORD", "wrong-password")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: wrong email or password"), "{err}");
    assert!(stdout(&out).is_empty());

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["login", "--url", &gone, "--email", &user.email],
        vec!["list", "--url", &gone],
    ] {
        let out = user
            .command(&args)
            .env("BULK_IMPORT_TOKEN", "t")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("error: cannot reach the API at {gone}")),
            "{err}"
        );
    }

    // Not logged in; a usage error.
    let stranger = User::new(&app);
    let out = stranger.run(&["list"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).starts_with("error: not logged in"),
        "{}",
        show(&out)
    );
    let out = user.run(&["import"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

/// The organization's customers and members through the CLI: list, get, export (to a file
/// and to standard output), and an invitation that another CLI user registers with.
#[tokio::test]
async fn customers_and_the_organization_from_the_command_line() {
    let app = TestApp::spawn(Backend::Fs).await;
    let owner = User::new(&app);
    owner.register().await;
    let file = owner.file(
        "c.csv",
        b"email,first_name,last_name,phone,city\nann@example.com,Ann,Lee,,Oslo\nbob@example.com,Bob,,,\n",
    );
    let out = owner.run(&["import", &file, "--wait"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let out = owner
        .run(&["--json", "customers", "list", "--q", "AN", "--limit", "10"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let page: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["email"], "ann@example.com");

    let out = owner.run(&["customers", "get", "Ann@Example.com"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("Oslo"), "{}", show(&out));
    let out = owner.run(&["customers", "get", "nobody@example.com"]).await;
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));

    let out = owner
        .run(&["customers", "export", "-o", "export.csv"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let saved = std::fs::read_to_string(owner.home.path().join("export.csv")).unwrap();
    assert!(
        saved.starts_with("email,first_name,last_name,phone,city\n"),
        "{saved}"
    );
    assert_eq!(saved.lines().count(), 3);
    let out = owner.run(&["customers", "export", "-o", "-"]).await;
    assert_eq!(stdout(&out), saved, "{}", show(&out));

    // An invitation, used by a second CLI user, who then sees the same customers.
    let out = owner.run(&["--json", "org", "invite"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let invitation: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let member = User::new(&app);
    let out = member
        .run(&[
            "register",
            "--email",
            &member.email,
            "--invitation",
            invitation["token"].as_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = member.run(&["--json", "customers", "list"]).await;
    let page: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{}", show(&out));
    let out = owner.run(&["--json", "org", "show"]).await;
    let org: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        org["members"].as_array().unwrap().len(),
        2,
        "{}",
        show(&out)
    );
}

#[tokio::test]
async fn a_cancelled_import_exits_1() {
    let app = TestApp::spawn_with(Backend::S3, &[("IMPORT_SLOW_MS", "20")]).await;
    let user = User::new(&app);
    user.register().await;
    let file = user.file("slow.csv", &common::csv_rows(2000));

    let out = user.run(&["import", &file, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let job: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let id = job["id"].as_str().unwrap().to_string();

    let mut watch = user.command(&["watch", &id]);
    watch.stdout(std::process::Stdio::piped());
    let watcher = watch.spawn().unwrap();

    let out = user.run(&["cancel", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let watched = watcher.wait_with_output().await.unwrap();
    assert_eq!(watched.status.code(), Some(1), "{}", show(&watched));
    assert!(stdout(&watched).contains("cancelled"), "{}", show(&watched));
    assert_plain(&watched);
}

/// On a terminal (a pseudo-terminal from `script`), the upload and import bars are drawn.
#[tokio::test]
async fn on_a_terminal_the_bars_are_drawn() {
    let app = TestApp::spawn_with(Backend::S3, &[("IMPORT_SLOW_MS", "2")]).await;
    let user = User::new(&app);
    user.register().await;
    let file = user.file("tty.csv", &common::csv_rows(1500));
    let cli = env!("CARGO_BIN_EXE_bulk-import");
    let inner = format!("{cli} import {file} --wait");
    let out = tokio::process::Command::new("script")
        .args(["-qefc", &inner, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", user.home.path())
        .env("XDG_CONFIG_HOME", user.home.path().join("config"))
        .env("BULK_IMPORT_URL", &user.url)
        .env("TERM", "xterm")
        .output()
        .await
        .unwrap();
    // csv_rows has bad rows: exit 3 through the terminal too.
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("uploading ["), "{text}");
    assert!(text.contains("importing ["), "{text}");
    assert!(text.contains("rows/s"), "{text}");
    assert!(text.contains(" done "), "{text}");
}

/// In a real terminal (tmux), mid-import: the import bar with rows/s and ETA, then the
/// summary. `CLI_RECORDING=path` saves the captured screens (docs/cli-recording.txt was made
/// so).
#[tokio::test]
async fn in_tmux_the_import_bar_moves_then_the_summary_shows() {
    let app = TestApp::spawn_with(Backend::S3, &[("IMPORT_SLOW_MS", "3")]).await;
    let user = User::new(&app);
    user.register().await;
    user.file("customers.csv", &common::csv_rows(3000));
    let socket = format!("bi-test-{}", Uuid::new_v4().simple());
    let cli = env!("CARGO_BIN_EXE_bulk-import");
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let home = user.home.path().display().to_string();
    // `bulk-import` on the PATH, as a user would have it.
    let bin = user.home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(cli, bin.join("bulk-import")).unwrap();
    let path = format!(
        "PATH={}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "110",
        "-y",
        "14",
        "-c",
        &home,
        "-e",
        &format!("HOME={home}"),
        "-e",
        &format!("XDG_CONFIG_HOME={home}/config"),
        "-e",
        &format!("BULK_IMPORT_URL={}", user.url),
        "env",
        &path,
        "PS1=$ ",
        "sh",
    ]);
    assert!(started.status.success(), "{}", show(&started));
    struct Server<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Server<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    let _server = Server(&tmux);
    tmux(&[
        "send-keys",
        "bulk-import import customers.csv --wait --report errors.csv",
        "Enter",
    ]);
    let capture = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let middle = loop {
        let screen = capture();
        let moving = screen.lines().any(|l| {
            l.contains("importing [")
                && l.contains("processing: ")
                && !l.contains("processing: 0 rows")
        });
        if moving && screen.contains("rows/s") && screen.contains("ETA") {
            break screen;
        }
        assert!(
            std::time::Instant::now() < deadline && !screen.contains(" done "),
            "no moving bar seen:\n{screen}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let end = loop {
        let screen = capture();
        if screen.contains("error report: errors.csv") {
            break screen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no summary:\n{screen}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        end.contains("3000 rows, 2700 inserted, 0 updated, 300 bad"),
        "{end}"
    );
    if let Ok(path) = std::env::var("CLI_RECORDING") {
        let trim = |s: &str| s.trim_end().to_string();
        std::fs::write(
            path,
            format!(
                "# `tmux capture-pane -p` of `bulk-import import customers.csv --wait --report errors.csv`\n\
                 # (3000 rows, IMPORT_SLOW_MS=3), made by cli/tests/cli.rs\n\n\
                 ## mid-import\n\n{}\n\n## at the end\n\n{}\n",
                trim(&middle),
                trim(&end)
            ),
        )
        .unwrap();
    }
}

#[test]
fn help_lists_the_commands_and_variables_and_version_works() {
    let run = |arg: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulk-import"))
            .arg(arg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        stdout(&out)
    };
    let help = run("--help");
    for word in [
        "register",
        "login",
        "import",
        "status",
        "list",
        "watch",
        "errors",
        "cancel",
        "--json",
        "BULK_IMPORT_URL",
        "BULK_IMPORT_TOKEN",
        "BULK_IMPORT_PASSWORD",
        "Exit codes",
    ] {
        assert!(help.contains(word), "{word} missing:\n{help}");
    }
    let import = std::process::Command::new(env!("CARGO_BIN_EXE_bulk-import"))
        .args(["import", "--help"])
        .output()
        .unwrap();
    let import = stdout(&import);
    for word in ["--mode", "--dry-run", "--key", "--wait", "--report"] {
        assert!(import.contains(word), "{word} missing:\n{import}");
    }
    assert_eq!(
        run("--version").trim(),
        format!("bulk-import {}", env!("CARGO_PKG_VERSION"))
    );
}
