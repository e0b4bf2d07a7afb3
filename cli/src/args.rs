//! The command line: every command, argument and its help text (also the source of the
//! shell completions and the man page).

use clap::{Parser, Subcommand, ValueEnum};
use std::{path::PathBuf, time::Duration};

const AFTER_HELP: &str = "\
Environment variables:
  BULK_IMPORT_URL       API base URL (instead of --url or the saved one) [default: http://127.0.0.1:8000]
  BULK_IMPORT_TOKEN     access token (instead of the one saved by `login`)
  BULK_IMPORT_PASSWORD  password for `login` and `register` (instead of a prompt)
  NO_COLOR              no colours even on a terminal

Exit codes:
  0   done
  3   done, with bad rows
  1   the job failed or was cancelled
  2   usage: a wrong argument, or a request the API refuses as asked (404, 409, 422 …)
  4   authentication: wrong password, not logged in, token expired or refused (401, 403)
  75  temporary: API unreachable, 5xx or 429 after retries, or --timeout reached";

#[derive(Parser)]
#[command(
    name = "bulk-import",
    version,
    about = "Import customer CSV files through the bulk-import API",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// API base URL, e.g. http://127.0.0.1:8000 (saved by `login`)
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Machine-readable JSON: results on stdout, errors on stderr (no bars)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create an account, then log in (a new organization you own, or the organization of
    /// an invitation)
    Register {
        /// Your email: the account's login
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// Join the organization of this invitation token (from `org invite`)
        #[arg(long, value_name = "TOKEN")]
        invitation: Option<String>,
        /// Name of the new organization [default: your email]
        #[arg(long, value_name = "NAME", conflicts_with = "invitation")]
        organization: Option<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Log in and save the token (mode 0600) in the user's config directory
    Login {
        /// The account's email
        #[arg(long, value_name = "EMAIL")]
        email: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Forget the saved token (the device cookie stays, see docs/cli.md)
    Logout,
    /// Upload a CSV file as a new import
    Import(ImportArgs),
    /// Show one job
    Status {
        /// The job's id (from `import` or `list`)
        id: String,
    },
    /// List your organization's jobs, newest first
    List {
        /// Jobs per page (1–100)
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: u32,
        /// Skip this many jobs (the next page: the previous offset plus the limit)
        #[arg(long, default_value_t = 0, value_name = "N")]
        offset: u32,
        /// Only the jobs you started
        #[arg(long)]
        mine: bool,
    },
    /// Follow a job until it ends, then print a summary (exit code by its outcome)
    Watch {
        /// The job's id
        id: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Download a job's error report (errors.csv)
    Errors {
        /// The job's id
        id: String,
        /// Where to write it (`-` for standard output)
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Only the bad rows, in the five standard columns (re-importable)
        #[arg(long)]
        rows: bool,
    },
    /// Cancel a job (committed batches stay)
    Cancel {
        /// The job's id
        id: String,
    },
    /// Run a failed job again from its checkpoint
    Retry {
        /// The job's id (a `failed` one)
        id: String,
        /// Follow the job until it ends, then print a summary
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Delete a finished job: its upload, reports and error rows (customers stay)
    Delete {
        /// The job's id
        id: String,
    },
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
    /// Print a shell completion script (e.g. `bulk-import completions bash > /etc/bash_completion.d/bulk-import`)
    Completions {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, bulk-import(1), as roff (e.g. `bulk-import man | man -l -`)
    Man,
}

/// Where `login` and `register` take the password from.
#[derive(clap::Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input (instead of
    /// BULK_IMPORT_PASSWORD or a prompt)
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The CSV file (optionally gzip-compressed); `-` reads it from standard input
    #[arg(value_name = "FILE", required_unless_present = "from_key")]
    pub file: Option<PathBuf>,
    /// Import an object already in the service's storage instead of uploading a file: its
    /// key, under your organization's import prefixes (`orgs/<organization id>/inbox/` by
    /// default)
    #[arg(long, value_name = "KEY", conflicts_with_all = ["file", "preview", "name"])]
    pub from_key: Option<String>,
    /// The file name the job records when FILE is `-`
    #[arg(long, value_name = "NAME", default_value = "stdin.csv")]
    pub name: String,
    /// insert-only: an email already present is a bad row; upsert: it is updated
    #[arg(long, value_enum, default_value_t = Mode::InsertOnly)]
    pub mode: Mode,
    /// Check every row, write no customer row
    #[arg(long)]
    pub dry_run: bool,
    /// Stop the job as failed after more than N bad rows
    #[arg(long, value_name = "N")]
    pub max_errors: Option<u64>,
    /// The delimiter instead of detecting it: `,` `;` `|` `\t`, or comma, semicolon, pipe, tab
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,
    /// The encoding instead of detecting it: a WHATWG label such as utf-8, windows-1251,
    /// windows-1252, utf-16le
    #[arg(long, value_name = "LABEL")]
    pub encoding: Option<String>,
    /// Which header each column is read from, instead of recognising the names:
    /// `email:E-mail Address,phone:Mobile Number` (or a JSON object); columns not named are
    /// not imported
    #[arg(long, value_name = "MAPPING")]
    pub columns: Option<String>,
    /// Only show how the file would be read (the dialect, the mapping of its headers, the
    /// first 20 rows and their checks); import nothing
    #[arg(long, conflicts_with_all = ["wait", "key", "dry_run", "max_errors"])]
    pub preview: bool,
    /// Idempotency-Key [default: a hash of the file and the options]
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// Follow the import until it ends, then print a summary (exit code by its outcome)
    #[arg(long)]
    pub wait: bool,
    /// With --wait: download the error report here if there are bad rows
    #[arg(long, value_name = "FILE", requires = "wait")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// How long following a job may take.
#[derive(clap::Args)]
pub struct FollowArgs {
    /// Give up following after this long (exit 75; the job goes on): seconds, or a number
    /// with s, m or h. Transient errors are retried until then [default: no limit, and an
    /// outage of the API is retried for 60 s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// `90`, `90s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 90, 90s, 5m, 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("unknown unit {unit:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Subcommand)]
pub enum CustomersCommand {
    /// List customers by email, a page at a time
    List {
        /// Only emails starting with this
        #[arg(long, value_name = "PREFIX")]
        q: Option<String>,
        /// Customers per page (1–1000)
        #[arg(long, default_value_t = 100, value_name = "N")]
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
pub enum OrgCommand {
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
pub enum InviteRole {
    /// Imports and reads
    Member,
    /// Also invites and removes members
    Admin,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// An email already present is a bad row
    InsertOnly,
    /// An email already present is updated (the file's last occurrence wins)
    Upsert,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::InsertOnly => "insert_only",
            Mode::Upsert => "upsert",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "bulk-import", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
