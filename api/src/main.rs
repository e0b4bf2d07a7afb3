//! `bulk-import-api` serves the REST API; `bulk-import-api migrate` only applies migrations;
//! `bulk-import-api create-organization` creates an organization and its owner (the way in
//! with `SIGNUP=invitation`).

use anyhow::Context;
use bulk_import_api::{shutdown_signal, Application};
use bulk_import_core::{
    db, telemetry,
    vars::{env_help, Component},
    Settings,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bulk-import-api",
    version,
    about = "The bulk-import REST API (and, with EXECUTOR=local, the importers it runs)",
    after_help = env_help(Component::Api)
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default): applies migrations, resumes unfinished imports.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Create an organization and its owner, then exit (with SIGNUP=invitation, the first
    /// account). Reads the owner's password from the first line of standard input; prints
    /// the organization's id.
    CreateOrganization {
        /// The organization's name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The owner's email (must not belong to an open account).
        #[arg(long, value_name = "EMAIL")]
        owner_email: String,
    },
    /// Print the OpenAPI document (the one served at /openapi.json; docs/openapi.json holds
    /// a copy) and exit. Needs no configuration.
    Openapi,
}

/// glibc raises its mmap threshold (up to 32 MiB) each time a mapped block is freed, after
/// which argon2's 19 MiB blocks come from the heap arenas and stay there after a burst of
/// logins. A fixed threshold keeps every block of 1 MiB or more mapped, so it goes back to
/// the system when freed (docs/reliability.md, Abuse: hashing memory is not kept).
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() {
    return_large_blocks_to_the_system();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}

async fn run() {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", bulk_import_api::routes::docs::openapi_json());
        return;
    }
    telemetry::init("info,sqlx=warn,tower_http=info");
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Some(Command::Migrate) => migrate(&settings).await,
        Some(Command::CreateOrganization { name, owner_email }) => {
            create_organization(&settings, &name, &owner_email).await
        }
        None | Some(Command::Serve) => serve(settings).await,
        Some(Command::Openapi) => unreachable!("printed above"),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = settings
        .pool(2)
        .await
        .context("cannot connect to DATABASE_URL")?;
    db::MIGRATOR.run(&pool).await.context("migrations failed")?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn create_organization(settings: &Settings, name: &str, email: &str) -> anyhow::Result<()> {
    use bulk_import_core::accounts::{self, Joining, Registered};
    let email =
        bulk_import_core::Email::parse(email).map_err(|e| anyhow::anyhow!("--owner-email: {e}"))?;
    let name = name.trim();
    anyhow::ensure!(
        (1..=200).contains(&name.chars().count()),
        "--name: 1 to 200 characters"
    );
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the owner's password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    bulk_import_api::auth::check_password_strength(&password)
        .map_err(|m| anyhow::anyhow!("the password read from standard input: {m}"))?;
    let pool = settings
        .pool(2)
        .await
        .context("cannot connect to DATABASE_URL")?;
    db::MIGRATOR.run(&pool).await.context("migrations failed")?;
    let hasher = bulk_import_api::auth::Hasher::new(1, std::time::Duration::from_secs(60));
    let hash = hasher
        .hash_password(password)
        .await
        .map_err(|e| anyhow::anyhow!("hashing the password: {}", e.message))?;
    let id = uuid::Uuid::new_v4();
    match accounts::register(
        &pool,
        id,
        email.as_str(),
        &hash,
        Joining::NewOrganization { name },
    )
    .await?
    {
        Registered::Created { organization, .. } => {
            println!("{}", organization.id);
            tracing::info!(org_id = organization.id, owner = %id, "organization created");
            Ok(())
        }
        Registered::EmailTaken => anyhow::bail!("an account with the email {email} already exists"),
        Registered::InvalidInvitation => unreachable!("no invitation was given"),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!("bulk-import API listening on http://{}", app.local_addr());
    app.run_until(shutdown_signal()).await
}
