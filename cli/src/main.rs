//! `bulk-import`, the command line client of the bulk-import API. It speaks only HTTP to the
//! API; docs/cli.md describes it. The job JSON is read into the API's own types
//! (`bulk_import_types`), which carry no server dependency.
//!
//! Decisions where the issue is silent:
//! - Exit codes (`failure`): 0 done, 3 done with bad rows, 1 failed or cancelled, 2 usage or
//!   a request the API refuses as asked, 4 authentication, 75 temporary. `status` and `list`
//!   exit 0 whenever they could answer. `--timeout` running out is temporary (75): the job
//!   goes on and can be followed again.
//! - Only following a job (`--wait`, `watch`) and the upload retry temporary failures; any
//!   other command fails at once with 75, and its caller decides when to try again.
//! - The saved token is used only for the URL it was obtained from, so pointing the CLI at
//!   another server (`--url`, `BULK_IMPORT_URL`) never sends it there.
//! - The default Idempotency-Key is `cli-` and the first 40 hex digits of SHA-256 over a
//!   version tag, the mode, the options and the file's bytes.
//! - An upload refused with 409 `upload_in_progress` (a first attempt still being received),
//!   429 or 503 is retried after `Retry-After` (at most 60 s of waiting in all).
//! - `import -` spools standard input to a temporary file, then uploads it like a file.
//! - Bars are drawn on stderr, and only when both stdout and stderr are terminals and
//!   `--json` is not given; colours likewise, and never with `NO_COLOR` set.

mod api;
mod args;
mod config;
mod customers;
mod failure;
mod follow;
mod jobs;
mod options;
mod org;
mod output;
mod preview;

use api::Api;
use args::{Cli, Command, PasswordArgs};
use clap::{CommandFactory, Parser};
use failure::Failure;
use output::Out;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let out = Out::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            out.failure(&Failure::usage(format!("cannot start: {e}")));
            return ExitCode::from(failure::Kind::Usage.exit_code());
        }
    };
    match runtime.block_on(run(cli, &out)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            out.failure(&f);
            ExitCode::from(f.kind.exit_code())
        }
    }
}

/// A command line clap refuses: clap's own message (exit 2), or with `--json` anywhere on
/// the line a JSON error on stderr. `--help` and `--version` print as usual (exit 0).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os().any(|a| a == "--json");
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let failure = Failure::usage(e.render().to_string().trim_end());
    Out::new(true).failure(&failure);
    ExitCode::from(failure.kind.exit_code())
}

async fn run(cli: Cli, out: &Out) -> Result<u8, Failure> {
    match cli.command {
        Command::Completions { shell } => return completions(shell),
        Command::Man => return man(),
        _ => {}
    }
    let url = config::resolve_url(cli.url.as_deref())?;
    let api = Api::new(&url)?;
    match cli.command {
        Command::Register {
            email,
            invitation,
            organization,
            password,
        } => {
            let password = config::password(password.password_stdin, true)?;
            api.register(
                &email,
                &password,
                invitation.as_deref(),
                organization.as_deref(),
            )
            .await?;
            login(&api, &url, &email, &password).await?;
            out.result(
                &format!("registered and logged in to {url} as {email}"),
                &serde_json::json!({"url": url, "email": email}),
            );
            Ok(failure::DONE)
        }
        Command::Login { email, password } => {
            let PasswordArgs { password_stdin } = password;
            let password = config::password(password_stdin, false)?;
            let path = login(&api, &url, &email, &password).await?;
            out.result(
                &format!(
                    "logged in to {url} as {email} (token in {})",
                    path.display()
                ),
                &serde_json::json!({"url": url, "email": email}),
            );
            Ok(failure::DONE)
        }
        Command::Logout => {
            config::forget()?;
            out.result("logged out", &serde_json::json!({}));
            Ok(failure::DONE)
        }
        command => {
            let api = api.authenticated(&url)?;
            authenticated(&api, command, out).await
        }
    }
}

/// `completions SHELL`: the script on standard output.
fn completions(shell: clap_complete::Shell) -> Result<u8, Failure> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "bulk-import", &mut std::io::stdout());
    Ok(failure::DONE)
}

/// `man`: bulk-import(1) as roff on standard output.
fn man() -> Result<u8, Failure> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .map_err(|e| Failure::usage(format!("cannot write the man page: {e}")))?;
    Ok(failure::DONE)
}

/// Logs in with the device cookie saved for this URL and email, then saves the token and the
/// device cookie the API answered; the path of the saved token.
async fn login(
    api: &Api,
    url: &str,
    email: &str,
    password: &str,
) -> Result<std::path::PathBuf, Failure> {
    let device = config::device(url, email);
    let login = api.login(email, password, device.as_deref()).await?;
    if let Some(cookie) = &login.device {
        config::save_device(url, email, cookie)?;
    }
    config::save(url, email, &login.token)
}

/// The commands that need a token.
async fn authenticated(api: &Api, command: Command, out: &Out) -> Result<u8, Failure> {
    match command {
        Command::Import(args) => jobs::import(api, args, out).await,
        Command::Status { id } => jobs::status(api, &id, out).await,
        Command::List {
            limit,
            offset,
            mine,
        } => jobs::list(api, limit, offset, mine, out).await,
        Command::Watch { id, follow } => jobs::watch(api, &id, follow, out).await,
        Command::Errors { id, output, rows } => jobs::errors(api, &id, output, rows, out).await,
        Command::Cancel { id } => jobs::cancel(api, &id, out).await,
        Command::Retry { id, wait, follow } => jobs::retry(api, &id, wait, follow, out).await,
        Command::Delete { id } => jobs::delete(api, &id, out).await,
        Command::Customers { command } => customers::run(api, command, out).await,
        Command::Org { command } => org::run(api, command, out).await,
        Command::Register { .. }
        | Command::Login { .. }
        | Command::Logout
        | Command::Completions { .. }
        | Command::Man => unreachable!("handled without a token"),
    }
}
