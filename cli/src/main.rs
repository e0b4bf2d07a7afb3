//! `bulk-import`, the command line client of the bulk-import API. It speaks only HTTP to the
//! API; docs/cli.md describes it.
//!
//! Decisions where the issue is silent:
//! - Exit codes: 0 done, 3 done with bad rows, 1 failed or cancelled, 2 anything that is not
//!   a job's outcome (usage, configuration, connection, an error answer of the API, a wrong
//!   password). `status` and `list` exit 0 whenever they could answer.
//! - The saved token is used only for the URL it was obtained from, so pointing the CLI at
//!   another server (`--url`, `BULK_IMPORT_URL`) never sends it there.
//! - The default Idempotency-Key is `cli-` and the first 40 hex digits of SHA-256 over a
//!   version tag, the mode, the options and the file's bytes.
//! - An upload refused with 409 `upload_in_progress` (a first attempt still being received),
//!   429 or 503 is retried after `Retry-After` (at most 60 s of waiting in all).
//! - Bars are drawn on stderr, and only when both stdout and stderr are terminals and
//!   `--json` is not given; colours likewise, and never with `NO_COLOR` set.

mod api;
mod config;
mod output;

use api::{Api, Failure};
use clap::{Parser, Subcommand, ValueEnum};
use output::Out;
use serde_json::Value;
use std::{path::PathBuf, process::ExitCode};

const ENVIRONMENT: &str = "\
Environment variables:
  BULK_IMPORT_URL       API base URL (instead of --url or the saved one) [default: http://127.0.0.1:8000]
  BULK_IMPORT_TOKEN     access token (instead of the one saved by `login`)
  BULK_IMPORT_PASSWORD  password for `login` and `register` (instead of a prompt)
  NO_COLOR              no colours even on a terminal

Exit codes: 0 done, 3 done with bad rows, 1 failed or cancelled, 2 usage or connection error.";

#[derive(Parser)]
#[command(
    name = "bulk-import",
    version,
    about = "Import customer CSV files through the bulk-import API",
    after_help = ENVIRONMENT
)]
struct Cli {
    /// API base URL, e.g. http://127.0.0.1:8000 (saved by `login`)
    #[arg(long, global = true)]
    url: Option<String>,
    /// Machine-readable JSON on stdout (no bars)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account, then log in (a new organization you own, or the organization of
    /// an invitation)
    Register {
        #[arg(long)]
        email: String,
        /// Join the organization of this invitation token (from `org invite`)
        #[arg(long, value_name = "TOKEN")]
        invitation: Option<String>,
        /// Name of the new organization [default: your email]
        #[arg(long, value_name = "NAME", conflicts_with = "invitation")]
        organization: Option<String>,
    },
    /// Log in and save the token (mode 0600) in the user's config directory
    Login {
        #[arg(long)]
        email: String,
    },
    /// Forget the saved token
    Logout,
    /// Upload a CSV file as a new import
    Import {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Mode::InsertOnly)]
        mode: Mode,
        /// Check every row, write no customer row
        #[arg(long)]
        dry_run: bool,
        /// Stop the job as failed after more than N bad rows
        #[arg(long, value_name = "N")]
        max_errors: Option<u64>,
        /// Idempotency-Key [default: a hash of the file and the options]
        #[arg(long, value_name = "K")]
        key: Option<String>,
        /// Follow the import until it ends, then print a summary
        #[arg(long)]
        wait: bool,
        /// With --wait: download the error report here if there are bad rows
        #[arg(long, value_name = "FILE", requires = "wait")]
        report: Option<PathBuf>,
    },
    /// Show one job
    Status { id: String },
    /// List your organization's jobs, newest first
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Only the jobs you started
        #[arg(long)]
        mine: bool,
    },
    /// Follow a job until it ends
    Watch { id: String },
    /// Download a job's error report (errors.csv)
    Errors {
        id: String,
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Only the bad rows, in the five standard columns (re-importable)
        #[arg(long)]
        rows: bool,
    },
    /// Cancel a job (committed batches stay)
    Cancel { id: String },
    /// Your organization's customers
    Customers {
        #[command(subcommand)]
        command: CustomersCommand,
    },
    /// Your organization: members and invitations
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
}

#[derive(Subcommand)]
enum CustomersCommand {
    /// List customers by email, a page at a time
    List {
        /// Only emails starting with this
        #[arg(long, value_name = "PREFIX")]
        q: Option<String>,
        /// Customers per page (1–1000)
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this email (the previous page's last)
        #[arg(long, value_name = "EMAIL")]
        after: Option<String>,
    },
    /// Show one customer, with the import and line that last wrote it
    Get {
        /// The customer's email
        email: String,
    },
    /// Export every customer as CSV (re-importable)
    Export {
        /// Where to write it (`-` for standard output)
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Show the organization and its members
    Show,
    /// Invite someone (owners and admins): prints a single-use token
    Invite {
        /// Only this email may use the invitation
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
        /// Role of the new member
        #[arg(long, value_enum, default_value_t = InviteRole::Member)]
        role: InviteRole,
    },
    /// List pending invitations (owners and admins)
    Invitations,
    /// Revoke a pending invitation (owners and admins)
    Revoke {
        /// The invitation's id
        id: String,
    },
    /// Remove a member (owners and admins): the account is closed at once
    Remove {
        /// The member's user id (see `org show`)
        user_id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum InviteRole {
    Member,
    Admin,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    InsertOnly,
    Upsert,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::InsertOnly => "insert_only",
            Mode::Upsert => "upsert",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            out.error(&format!("cannot start: {e}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli, &out)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            out.error(&f.message);
            ExitCode::from(f.exit)
        }
    }
}

async fn run(cli: Cli, out: &Out) -> Result<u8, Failure> {
    let url = config::resolve_url(cli.url.as_deref())?;
    let api = Api::new(&url)?;
    match cli.command {
        Command::Register {
            email,
            invitation,
            organization,
        } => {
            let password = config::password(true)?;
            api.register(
                &email,
                &password,
                invitation.as_deref(),
                organization.as_deref(),
            )
            .await?;
            let token = api.login(&email, &password).await?;
            config::save(&url, &email, &token)?;
            out.result(
                &format!("registered and logged in to {url} as {email}"),
                &serde_json::json!({"url": url, "email": email}),
            );
            Ok(0)
        }
        Command::Login { email } => {
            let password = config::password(false)?;
            let token = api.login(&email, &password).await?;
            let path = config::save(&url, &email, &token)?;
            out.result(
                &format!(
                    "logged in to {url} as {email} (token in {})",
                    path.display()
                ),
                &serde_json::json!({"url": url, "email": email}),
            );
            Ok(0)
        }
        Command::Logout => {
            config::forget()?;
            out.result("logged out", &serde_json::json!({}));
            Ok(0)
        }
        Command::Import {
            file,
            mode,
            dry_run,
            max_errors,
            key,
            wait,
            report,
        } => {
            let api = api.authenticated(&url)?;
            let opts = api::ImportOptions {
                mode: mode.as_str(),
                dry_run,
                max_errors,
            };
            let key = match key {
                Some(k) => k,
                None => api::default_key(&file, &opts).await?,
            };
            let (job, created) = api.upload(&file, &opts, &key, out).await?;
            let id = job["id"].as_str().unwrap_or_default().to_string();
            if !wait {
                let verb = if created { "created" } else { "already exists" };
                out.result(&format!("job {id} {verb} ({})", job_line(&job)), &job);
                return Ok(0);
            }
            if !created {
                out.note(&format!("job {id} already exists (same file and options)"));
            }
            let job = api.follow(&id, out).await?;
            finish(&api, &job, report.as_deref(), out).await
        }
        Command::Status { id } => {
            let api = api.authenticated(&url)?;
            let job = api.get_json(&format!("/imports/{id}")).await?;
            out.result(&describe(&job), &job);
            Ok(0)
        }
        Command::List {
            limit,
            offset,
            mine,
        } => {
            let api = api.authenticated(&url)?;
            let page = api
                .get_json(&format!(
                    "/imports?limit={limit}&offset={offset}&mine={mine}"
                ))
                .await?;
            let mut text = String::new();
            if let Some(items) = page["items"].as_array() {
                if items.is_empty() {
                    text.push_str("no jobs");
                }
                for job in items {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "{}  {:<10}  {}  {}",
                        job["id"].as_str().unwrap_or("?"),
                        job["status"].as_str().unwrap_or("?"),
                        job["created_at"].as_str().unwrap_or("?"),
                        job_line(job)
                    ));
                }
                let total = page["total"].as_u64().unwrap_or(0);
                if total > items.len() as u64 + offset as u64 {
                    text.push_str(&format!(
                        "\n… {total} in all (--offset {})",
                        offset as u64 + items.len() as u64
                    ));
                }
            }
            out.result(&text, &page);
            Ok(0)
        }
        Command::Watch { id } => {
            let api = api.authenticated(&url)?;
            let job = api.follow(&id, out).await?;
            finish(&api, &job, None, out).await
        }
        Command::Errors { id, output, rows } => {
            let api = api.authenticated(&url)?;
            let bytes = api.download_report(&id, rows, &output).await?;
            out.result(
                &format!("{bytes} bytes written to {}", output.display()),
                &serde_json::json!({"id": id, "path": output, "bytes": bytes}),
            );
            Ok(0)
        }
        Command::Cancel { id } => {
            let api = api.authenticated(&url)?;
            let job = api.post_json(&format!("/imports/{id}/cancel")).await?;
            out.result(&format!("job {id} cancelled ({})", job_line(&job)), &job);
            Ok(0)
        }
        Command::Customers { command } => {
            let api = api.authenticated(&url)?;
            customers(&api, command, out).await
        }
        Command::Org { command } => {
            let api = api.authenticated(&url)?;
            org(&api, command, out).await
        }
    }
}

/// A path segment or query value, percent-encoded.
fn encoded(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn customers(api: &Api, command: CustomersCommand, out: &Out) -> Result<u8, Failure> {
    match command {
        CustomersCommand::List { q, limit, after } => {
            let mut path = format!("/customers?limit={limit}");
            if let Some(q) = q {
                path.push_str(&format!("&q={}", encoded(&q)));
            }
            if let Some(after) = after {
                path.push_str(&format!("&after={}", encoded(&after)));
            }
            let page = api.get_json(&path).await?;
            let mut text = String::new();
            for c in page["items"].as_array().into_iter().flatten() {
                if !text.is_empty() {
                    text.push('\n');
                }
                let field = |name: &str| c[name].as_str().unwrap_or("").to_string();
                text.push_str(&format!(
                    "{}  {} {}  {}  {}",
                    field("email"),
                    field("first_name"),
                    field("last_name"),
                    field("phone"),
                    field("city")
                ));
            }
            if text.is_empty() {
                text.push_str("no customers");
            }
            if let Some(next) = page["next_after"].as_str() {
                text.push_str(&format!("\n… more: --after {next}"));
            }
            out.result(&text, &page);
            Ok(0)
        }
        CustomersCommand::Get { email } => {
            let c = api
                .get_json(&format!("/customers/{}", encoded(&email)))
                .await?;
            let field = |name: &str| c[name].as_str().unwrap_or("").to_string();
            let text = format!(
                "{}\n  name: {} {}\n  phone: {}\n  city: {}\n  last written by import {} (line {})",
                field("email"),
                field("first_name"),
                field("last_name"),
                field("phone"),
                field("city"),
                c["last_import_id"].as_str().unwrap_or("?"),
                c["last_import_line"].as_i64().unwrap_or(0)
            );
            out.result(&text, &c);
            Ok(0)
        }
        CustomersCommand::Export { output } => {
            let bytes = api.download("/customers/export", &output).await?;
            let to_stdout = output.as_os_str() == "-";
            if !to_stdout {
                out.result(
                    &format!("{bytes} bytes written to {}", output.display()),
                    &serde_json::json!({"path": output, "bytes": bytes}),
                );
            }
            Ok(0)
        }
    }
}

async fn org(api: &Api, command: OrgCommand, out: &Out) -> Result<u8, Failure> {
    match command {
        OrgCommand::Show => {
            let org = api.get_json("/orgs/current").await?;
            let mut text = format!(
                "{} (organization {}), you are {}",
                org["name"].as_str().unwrap_or("?"),
                org["id"],
                org["role"].as_str().unwrap_or("?")
            );
            for m in org["members"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "\n  {}  {}{}",
                    m["id"].as_str().unwrap_or("?"),
                    m["email"].as_str().unwrap_or("?"),
                    m["role"]
                        .as_str()
                        .map(|r| format!("  ({r})"))
                        .unwrap_or_default()
                ));
            }
            out.result(&text, &org);
            Ok(0)
        }
        OrgCommand::Invite { email, role } => {
            let role = match role {
                InviteRole::Member => "member",
                InviteRole::Admin => "admin",
            };
            let inv = api
                .post_body(
                    "/orgs/invitations",
                    &serde_json::json!({"email": email, "role": role}),
                )
                .await?;
            out.result(
                &format!(
                    "invitation {} ({role}, expires {}):\n  bulk-import register --email <EMAIL> --invitation {}",
                    inv["id"].as_str().unwrap_or("?"),
                    inv["expires_at"].as_str().unwrap_or("?"),
                    inv["token"].as_str().unwrap_or("?")
                ),
                &inv,
            );
            Ok(0)
        }
        OrgCommand::Invitations => {
            let list = api.get_json("/orgs/invitations").await?;
            let mut text = String::new();
            for i in list["items"].as_array().into_iter().flatten() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!(
                    "{}  {}  {}  expires {}",
                    i["id"].as_str().unwrap_or("?"),
                    i["role"].as_str().unwrap_or("?"),
                    i["email"].as_str().unwrap_or("(any email)"),
                    i["expires_at"].as_str().unwrap_or("?")
                ));
            }
            if text.is_empty() {
                text.push_str("no pending invitations");
            }
            out.result(&text, &list);
            Ok(0)
        }
        OrgCommand::Revoke { id } => {
            api.delete(&format!("/orgs/invitations/{}", encoded(&id)))
                .await?;
            out.result(
                &format!("invitation {id} revoked"),
                &serde_json::json!({"id": id}),
            );
            Ok(0)
        }
        OrgCommand::Remove { user_id } => {
            api.delete(&format!("/orgs/members/{}", encoded(&user_id)))
                .await?;
            out.result(
                &format!("member {user_id} removed"),
                &serde_json::json!({"id": user_id}),
            );
            Ok(0)
        }
    }
}

/// The summary of a finished job, the report download, and the exit code.
async fn finish(
    api: &Api,
    job: &Value,
    report: Option<&std::path::Path>,
    out: &Out,
) -> Result<u8, Failure> {
    let status = job["status"].as_str().unwrap_or("?");
    let bad = job["error_rows"].as_i64().unwrap_or(0);
    let id = job["id"].as_str().unwrap_or("?");
    let mut text = describe(job);
    let mut json = job.clone();
    if status == "done" && bad > 0 {
        match report {
            Some(path) => {
                let bytes = api.download_report(id, false, path).await?;
                text.push_str(&format!(
                    "\nerror report: {} ({bytes} bytes)",
                    path.display()
                ));
                json["report_path"] = serde_json::json!(path);
            }
            None => text.push_str(&format!(
                "\nerror report: bulk-import errors {id} -o errors.csv"
            )),
        }
    }
    out.result(&text, &json);
    Ok(match status {
        "done" if bad > 0 => 3,
        "done" => 0,
        _ => 1,
    })
}

fn job_line(job: &Value) -> String {
    let mut s = format!(
        "{}: {} rows, {} inserted, {} updated, {} bad",
        job["file_name"].as_str().unwrap_or("?"),
        job["processed_rows"].as_i64().unwrap_or(0),
        job["inserted_rows"].as_i64().unwrap_or(0),
        job["updated_rows"].as_i64().unwrap_or(0),
        job["error_rows"].as_i64().unwrap_or(0),
    );
    if job["dry_run"].as_bool() == Some(true) {
        s.push_str(", dry run");
    }
    s
}

fn describe(job: &Value) -> String {
    let status = job["status"].as_str().unwrap_or("?");
    let mut s = format!(
        "job {} {status} ({:.0} %)\n  {}",
        job["id"].as_str().unwrap_or("?"),
        job["progress_percent"].as_f64().unwrap_or(0.0),
        job_line(job)
    );
    if let Some(e) = job["error"].as_str() {
        s.push_str(&format!("\n  error: {e}"));
    }
    // The server's own clock at both ends: no skew with this machine's.
    let at = |field: &str| {
        job[field]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    if let (Some(start), Some(end)) = (at("started_at"), at("finished_at")) {
        let secs = ((end - start).num_milliseconds().max(1) as f64) / 1000.0;
        let rows = job["processed_rows"].as_i64().unwrap_or(0) as f64;
        s.push_str(&format!("\n  took {secs:.1} s ({:.0} rows/s)", rows / secs));
    }
    s
}
