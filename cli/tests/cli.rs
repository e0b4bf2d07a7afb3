//! The `bulk-import` CLI against the real API binary in local mode (real Postgres, Redis,
//! Garage and importer), over real HTTP: the API harness of `api/tests` is reused.

#[path = "../../api/tests/common/mod.rs"]
mod common;
#[path = "cli/from_key.rs"]
mod from_key;
#[path = "cli/preview.rs"]
mod preview;

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

/// A port nothing listens on.
fn unreachable_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// The one JSON error `--json` prints on stderr.
fn json_error(out: &Output) -> Value {
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{}", show(out));
    serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {}", show(out)))
}

/// Exit codes a script can act on: 4 log in again, 75 try again later, 2 fix the command;
/// one line on stderr, or one JSON object with `--json`.
#[tokio::test]
async fn a_wrong_password_exits_4_an_unreachable_api_75_and_usage_2() {
    let app = TestApp::spawn(Backend::Fs).await;
    let user = User::new(&app);
    user.register().await;

    let wrong = |args: &[&str]| {
        let mut cmd = user.command(args);
        cmd.env("BULK_IMPORT_PASSWORD", "wrong-password");
        cmd
    };
    let out = wrong(&["login", "--email", &user.email])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: wrong email or password"), "{err}");
    assert!(stdout(&out).is_empty());
    let out = wrong(&["login", "--email", &user.email, "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = json_error(&out);
    assert_eq!(err["error"]["exit_code"], 4, "{err}");
    assert_eq!(err["error"]["kind"], "authentication", "{err}");
    assert_eq!(err["error"]["http_status"], 401, "{err}");
    assert!(stdout(&out).is_empty());

    let gone = unreachable_url();
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
        assert_eq!(out.status.code(), Some(75), "{}", show(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("error: cannot reach the API at {gone}")),
            "{err}"
        );
    }
    let out = user
        .command(&["status", "x", "--url", &gone, "--json"])
        .env("BULK_IMPORT_TOKEN", "t")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    assert_eq!(json_error(&out)["error"]["kind"], "temporary");

    // Not logged in: authentication. A bad token likewise.
    let stranger = User::new(&app);
    let out = stranger.run(&["list"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(
        stderr(&out).starts_with("error: not logged in"),
        "{}",
        show(&out)
    );
    let out = stranger
        .command(&["list"])
        .env("BULK_IMPORT_TOKEN", "not-a-token")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));

    // Usage: a missing argument (clap), and with --json a JSON error; a request the API
    // refuses as asked (an unknown job).
    let out = user.run(&["import"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = user.run(&["import", "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = json_error(&out);
    assert_eq!(err["error"]["kind"], "usage", "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("<FILE>"),
        "{err}"
    );
    let out = user
        .run(&["status", &Uuid::new_v4().to_string(), "--json"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(json_error(&out)["error"]["http_status"], 404);
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

/// The job id in `--json` output.
fn job_id(out: &Output) -> String {
    let job: Value =
        serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}", show(out)));
    job["id"].as_str().expect("a job id").to_string()
}

/// `import -` reads standard input; `--delimiter` and `--encoding` reach the API; `errors
/// -o -` writes the report on standard output and nothing else; `retry` runs a failed job
/// again (and refuses a done one); `delete` removes a job.
#[tokio::test]
async fn stdin_import_options_errors_to_stdout_retry_and_delete() {
    let app = TestApp::spawn(Backend::Fs).await;
    let user = User::new(&app);
    user.register().await;

    let mut cmd = user.command(&["import", "-", "--name", "piped.csv", "--wait", "--json"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(WITH_BAD_ROWS).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let job: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(job["file_name"], "piped.csv", "{job}");
    assert_eq!(job["file_size"], WITH_BAD_ROWS.len(), "{job}");
    assert_eq!(job["inserted_rows"], 3, "{job}");
    let id = job["id"].as_str().unwrap();

    let out = user.run(&["errors", id, "-o", "-"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = stdout(&out);
    assert!(report.starts_with("line,"), "{report}");
    assert!(report.contains("invalid_email"), "{report}");
    assert!(report.contains("duplicate_in_file"), "{report}");
    assert!(!report.contains("bytes written"), "{report}");
    let out = user.run(&["errors", id, "-o", "-", "--rows"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("email,first_name,last_name,phone,city"),
        "{}",
        show(&out)
    );

    // The options reach the API: the encoding read is the one asked for (detection would
    // say UTF-8 for this ASCII file), and a delimiter it does not take is refused (exit 2).
    let file = user.file("semi.csv", b"email;first_name\nsemi@example.com;Semi\n");
    let out = user
        .run(&[
            "import",
            &file,
            "--delimiter",
            ";",
            "--encoding",
            "windows-1251",
            "--wait",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let job: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(job["dialect"]["encoding"], "windows-1251", "{job}");
    assert_eq!(job["dialect"]["delimiter"], ";", "{job}");
    assert_eq!(job["inserted_rows"], 1, "{job}");
    let out = user
        .run(&["import", &file, "--delimiter", "x", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(json_error(&out)["error"]["code"], "invalid_delimiter");

    // A job that fails (more bad rows than allowed), retried.
    let file = user.file("bad.csv", WITH_BAD_ROWS);
    let out = user
        .run(&["import", &file, "--max-errors", "1", "--wait", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let failed = job_id(&out);
    let out = user.run(&["retry", &failed, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let job: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(
        job["status"] == "pending" || job["status"] == "processing",
        "{job}"
    );
    // It fails again the same way: the retry ran.
    let out = user.run(&["watch", &failed, "--timeout", "120"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out).contains("too_many_errors"), "{}", show(&out));
    // A done job is not retried: the API's 409, a usage error.
    let out = user.run(&["retry", id, "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(json_error(&out)["error"]["code"], "not_failed");

    let out = user.run(&["delete", &failed]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("deleted"), "{}", show(&out));
    let out = user.run(&["status", &failed]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = user.run(&["list", "--json"]).await;
    let list: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(list["total"], 2, "{list}");
}

/// `--timeout` gives up following a job that is still running (exit 75; the job goes on);
/// with the API stopped, commands exit 75 and `watch` retries until the API is back.
#[tokio::test]
async fn timeout_is_honoured_and_watch_rides_out_an_api_restart() {
    let mut app = TestApp::spawn_with(Backend::Fs, &[("IMPORT_SLOW_MS", "20")]).await;
    let user = User::new(&app);
    user.register().await;
    let slow = user.file("slow.csv", &common::csv_rows(2000));
    let out = user.run(&["import", &slow, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let running = job_id(&out);

    // 2000 rows at 20 ms a row take 40 s: the job is still running after 2 s.
    let started = std::time::Instant::now();
    let out = user.run(&["watch", &running, "--timeout", "2s"]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    assert!(
        stderr(&out).contains("after --timeout 2 s"),
        "{}",
        show(&out)
    );
    // At least the timeout; at most a generous bound for a loaded 2-core machine (the
    // process start and one request).
    assert!(took >= std::time::Duration::from_secs(2), "{took:?}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let out = user.run(&["cancel", &running]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let file = user.file("small.csv", &good_rows(3));
    let out = user.run(&["import", &file, "--wait", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let done = job_id(&out);

    app.kill();
    let out = user.run(&["status", &done]).await;
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    let started = std::time::Instant::now();
    let out = user.run(&["watch", &done, "--timeout", "3"]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    assert!(stderr(&out).contains("retrying"), "{}", show(&out));
    assert!(took >= std::time::Duration::from_secs(3), "{took:?}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");

    // A watch that starts while the API is down, and ends once it is back.
    let mut watch = user.command(&["watch", &done, "--timeout", "120"]);
    watch
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut watcher = watch.spawn().unwrap();
    let mut errors = tokio::io::BufReader::new(watcher.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            errors.read_line(&mut line),
        )
        .await
        .expect("a retry note within 30 s")
        .unwrap();
        assert!(n > 0, "watch ended before retrying: {seen}");
        seen.push_str(&line);
        if line.contains("retrying") {
            break;
        }
    }
    app.start().await;
    let out = watcher.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{seen}", show(&out));
    assert!(stdout(&out).contains(" done "), "{}", show(&out));
}

/// `--password-stdin`, and the API's device cookie kept beside the token and sent on the
/// next login: an account locked by wrong passwords from elsewhere still logs in from here.
#[tokio::test]
async fn password_stdin_and_the_device_cookie_survive_a_lock_out() {
    let app = TestApp::spawn(Backend::Fs).await;
    let user = User::new(&app);
    let with_stdin = |args: &[&str], input: &'static [u8]| {
        let mut cmd = user.command(args);
        // The environment's password is wrong: only standard input can be used.
        cmd.env("BULK_IMPORT_PASSWORD", "not-this-one")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input).await.unwrap();
            drop(stdin);
            child.wait_with_output().await.unwrap()
        }
    };
    let out = with_stdin(
        &["register", "--email", &user.email, "--password-stdin"],
        b"pass12345\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let devices = user.home.path().join("config/bulk-import/devices.json");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&devices).unwrap()).unwrap();
    let cookie = saved[format!("{} {}", user.url, user.email)]
        .as_str()
        .expect("the device cookie for this URL and email")
        .to_string();
    assert!(cookie.starts_with("bi_device="), "{cookie}");
    let mode = std::fs::metadata(&devices).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Someone else guesses the password until the account is locked for clients without
    // its device cookie (LOGIN_MAX_PER_EMAIL, 5 by default).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = app.login(&user.email, "a-wrong-guess").await;
        if r.status() == 429 {
            break;
        }
        assert_eq!(r.status(), 401);
        assert!(std::time::Instant::now() < deadline, "never limited");
    }
    assert_eq!(app.login(&user.email, PASSWORD).await.status(), 429);

    // The CLI presents its device cookie: the right password still logs in...
    let out = with_stdin(
        &["login", "--email", &user.email, "--password-stdin"],
        b"pass12345\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = user.run(&["list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // ...and a wrong one read from stdin is a wrong password (exit 4), not the lock-out.
    let out = with_stdin(
        &["login", "--email", &user.email, "--password-stdin"],
        b"nope-nope\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));

    // The same account on another machine (no device cookie): locked out, a temporary
    // failure (429, exit 75).
    let elsewhere = User {
        home: tempfile::tempdir().unwrap(),
        url: user.url.clone(),
        email: user.email.clone(),
    };
    let out = elsewhere.run(&["login", "--email", &user.email]).await;
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    assert!(stderr(&out).contains("HTTP 429"), "{}", show(&out));

    // `logout` forgets the token and keeps the device cookie.
    let out = user.run(&["logout"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(devices.exists());
    assert_eq!(user.run(&["list"]).await.status.code(), Some(4));
}

/// Shell completions and the man page come out of the same command line definition.
#[tokio::test]
async fn completions_and_the_man_page_are_printed() {
    let user = User {
        home: tempfile::tempdir().unwrap(),
        url: "http://127.0.0.1:9".into(),
        email: "nobody@example.com".into(),
    };
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = user.run(&["completions", shell]).await;
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let text = stdout(&out);
        assert!(text.contains("bulk-import"), "{shell}: {text}");
        assert!(
            text.contains("retry") && text.contains("password-stdin"),
            "{shell}"
        );
    }
    let out = user.run(&["man"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let page = stdout(&out);
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("bulk\\-import"), "{page}");
    let out = user.run(&["completions", "tcsh"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}
