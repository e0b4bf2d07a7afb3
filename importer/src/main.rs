//! `bulk-import-importer --job-id <uuid>` runs one import; `submit` creates a job from a
//! local file. Exit codes are in `bulk_import_importer::exit`.

use bulk_import_core::{
    options::{ColumnMap, ImportOptions},
    telemetry,
    vars::{env_help, Component},
    ImportMode, Settings,
};
use bulk_import_importer::{exit, local_file, run_job, Outcome};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "bulk-import-importer",
    version,
    about = "Loads one CSV import job into Postgres",
    after_help = env_help(Component::Importer)
)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    /// The import job to run (a row of `import_jobs`).
    #[arg(long, required = true)]
    job_id: Option<Uuid>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Upload a local CSV file and create a pending job for it; prints the job id.
    Submit {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "insert_only")]
        mode: ImportMode,
        /// Email of the user that owns the job (created without a usable password if new).
        #[arg(long, default_value = local_file::DEFAULT_OWNER)]
        owner: String,
        /// Validate and report only; write no customer row.
        #[arg(long)]
        dry_run: bool,
        /// Stop the job `failed` (too_many_errors) once more than N rows are bad.
        #[arg(long, value_name = "N")]
        max_errors: Option<u64>,
        /// Delimiter instead of detecting it: , ; | tab (or comma, semicolon, pipe).
        #[arg(long, value_parser = parse_delimiter)]
        delimiter: Option<u8>,
        /// Encoding instead of detecting it (a WHATWG label: utf-8, windows-1251, …).
        #[arg(long, value_parser = parse_encoding)]
        encoding: Option<String>,
        /// Which header cell each column is read from, instead of recognising the names:
        /// `email:E-mail Address,phone:Mobile Number` (or a JSON object).
        #[arg(long, value_parser = parse_columns, value_name = "MAPPING")]
        columns: Option<ColumnMap>,
    },
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    bulk_import_core::options::parse_delimiter(s)
}

fn parse_columns(s: &str) -> Result<ColumnMap, String> {
    bulk_import_core::options::parse_columns(s)
}

fn parse_encoding(s: &str) -> Result<String, String> {
    bulk_import_core::options::parse_encoding(s).map(str::to_string)
}

fn main() {
    telemetry::init("info,sqlx=warn");
    let cli = Cli::parse();
    let settings = match Settings::from_env_without_jwt() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(exit::PERMANENT);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async move {
        match (cli.job_id, cli.command) {
            (
                _,
                Some(Command::Submit {
                    file,
                    mode,
                    owner,
                    dry_run,
                    max_errors,
                    delimiter,
                    encoding,
                    columns,
                }),
            ) => {
                let options = ImportOptions {
                    dry_run,
                    max_errors: max_errors.map(|n| n.min(i64::MAX as u64) as i64),
                    delimiter,
                    encoding,
                    columns,
                };
                let result = async {
                    let pool = settings.pool(2).await?;
                    local_file::create_job_with(&settings, &pool, &file, mode, &owner, &options)
                        .await
                }
                .await;
                match result {
                    Ok(id) => {
                        println!("{id}");
                        exit::OK
                    }
                    Err(e) => {
                        eprintln!("submit failed: {e:#}");
                        exit::PERMANENT
                    }
                }
            }
            (Some(job_id), None) => run(&settings, job_id).await,
            (None, None) => unreachable!("clap requires --job-id"),
        }
    });
    std::process::exit(code);
}

async fn run(settings: &Settings, job_id: Uuid) -> i32 {
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    match run_job(settings, job_id, cancel).await {
        Ok(Outcome::Done(_)) => exit::OK,
        // A job that ended before or during this run: a failed one stays failed for whoever
        // runs the importer (a Job re-created after its predecessor was deleted must not end
        // Complete over a failed import).
        Ok(Outcome::AlreadyFinished(status)) | Ok(Outcome::Ended(status)) => {
            exit::already_finished(status)
        }
        Ok(Outcome::Failed(_)) => exit::PERMANENT,
        Ok(Outcome::Interrupted) => exit::INTERRUPTED,
        Err(e) => {
            tracing::error!(%job_id, error = %e, "import could not run");
            if e.is_temporary() {
                exit::TEMPORARY
            } else {
                exit::PERMANENT
            }
        }
    }
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("signal received: finishing the current batch, then stopping");
    cancel.cancel();
}
