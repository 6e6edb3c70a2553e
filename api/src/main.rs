use clap::Parser;
use tracing_subscriber::EnvFilter;

use capture_api::config::{Cli, Command, LogFormat};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Openapi => {
            print!("{}", capture_api::openapi::document_json());
            Ok(())
        }
        Command::Migrate(db) => migrate(db).await,
        Command::Serve(args) => capture_api::server::serve(*args).await,
        Command::StorageAccounts(cmd) => capture_api::admin::storage_accounts(cmd).await,
        Command::ServicePrincipals(cmd) => capture_api::admin::service_principals(cmd).await,
        Command::RoleAssignments(cmd) => capture_api::admin::role_assignments(cmd).await,
        Command::Token(args) => capture_api::admin::token(args).await,
        Command::AgentTokens(cmd) => capture_api::admin::agent_tokens(cmd).await,
        Command::Agents(cmd) => capture_api::admin::agents(cmd).await,
        Command::SigningKeys(cmd) => capture_api::admin::signing_keys(cmd).await,
        Command::Users(cmd) => capture_api::admin::users(cmd).await,
        Command::SignInLink(args) => capture_api::admin::sign_in_link(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture-api: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs on standard error, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().with_ansi(false).init(),
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            logs.with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init()
        }
    }
}

async fn migrate(
    db: capture_api::config::DatabaseArgs,
) -> Result<(), capture_api::error::StartupError> {
    let embedded = match db.external_url() {
        Some(_) => None,
        None => Some(capture_api::embedded_pg::EmbeddedPostgres::start(&db.data_dir).await?),
    };
    let url = db
        .external_url()
        .or_else(|| embedded.as_ref().map(|pg| pg.database_url()))
        .unwrap_or_default();
    let result = capture_api::db::migrate(&url).await;
    if let Some(pg) = embedded.filter(|pg| pg.started_here) {
        pg.stop().await;
    }
    for m in result? {
        println!("applied {m}");
    }
    Ok(())
}
