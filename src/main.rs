//! The `mobility` command: `serve`, `migrate`, `schema`, `replay`, `seed`, `loadgen` and
//! `token`.

use clap::{Parser, Subcommand};
use mobility::config::{DEFAULT_DATABASE_URL, LogFormat, ServeConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "mobility",
    version,
    about = "Ride-matching server with one GraphQL API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphiQL, GraphQL over HTTP and WebSocket, and /healthz.
    Serve(Box<ServeConfig>),
    /// Apply pending database migrations and exit.
    Migrate {
        /// Database URL: `sqlite://PATH?mode=rwc` or `postgres://...`.
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// Print the GraphQL schema (SDL) to standard output.
    Schema,
    /// Replay the Porto taxi data against a running server through its public API.
    Replay(mobility::replay::ReplayArgs),
    /// Fill an empty database with N online drivers at seeded positions, for benchmarks.
    Seed(mobility::loadgen::seed::SeedArgs),
    /// Measure the server, Redis or PostGIS under load; appends one JSON line per run.
    Loadgen(mobility::loadgen::LoadgenArgs),
    /// Create, list and revoke API tokens in the database.
    Token {
        /// Database URL: `sqlite://PATH?mode=rwc` or `postgres://...`.
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
        database_url: String,
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print its secret, which is shown only once.
    Create {
        /// admin, bridge, dashboard, driver or rider.
        #[arg(long)]
        role: mobility::auth::Role,
        /// Driver id of a driver token, rider id of a rider token.
        #[arg(long)]
        subject_id: Option<i64>,
        /// Holder of the token, such as a bridge or a driver's phone.
        #[arg(long)]
        name: String,
    },
    /// List every token, revoked ones included; secrets are never stored.
    List,
    /// Revoke a token by id.
    Revoke { id: i64 },
    /// Print a new random secret without storing it, for MOBILITY_ADMIN_TOKEN.
    Generate,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("mobility=info,tower_http=info"));
    // Colour codes only on a terminal, so log files and pipelines get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves when the process receives Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn token_command(database_url: &str, action: TokenAction) -> anyhow::Result<()> {
    if let TokenAction::Generate = action {
        println!("{}", mobility::auth::tokens::generate_secret());
        return Ok(());
    }
    // No log output: standard output carries the secret, for `TOKEN=$(mobility token ...)`.
    let db = mobility::db::connect_and_migrate(database_url, 1).await?;
    let tokens = mobility::auth::Tokens::new(db);
    match action {
        TokenAction::Create {
            role,
            subject_id,
            name,
        } => {
            let created = tokens
                .create(&name, role, subject_id)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the token: {e}"))?;
            println!("{}", created.secret);
            eprintln!(
                "token {} ({role}) created; its secret, on standard output, is shown only now",
                created.token.id
            );
        }
        TokenAction::List => {
            for token in tokens.list().await? {
                let subject = token
                    .subject_id
                    .map(|id| format!(" {id}"))
                    .unwrap_or_default();
                let state = token
                    .revoked_at
                    .map_or_else(|| "active".to_owned(), |at| format!("revoked {at}"));
                println!(
                    "{}\t{}{subject}\t{}\t{state}",
                    token.id, token.role, token.name
                );
            }
        }
        TokenAction::Revoke { id } => {
            let token = tokens
                .revoke(id)
                .await
                .map_err(|e| anyhow::anyhow!("cannot revoke token {id}: {e}"))?;
            println!("token {} revoked", token.id);
        }
        TokenAction::Generate => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            init_tracing(config.log_format);
            if let Err(message) = config.validate() {
                anyhow::bail!("invalid configuration: {message}");
            }
            let listener = TcpListener::bind(config.listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {} (MOBILITY_LISTEN): {e}", config.listen)
            })?;
            let (sender, receiver) = watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutdown requested; draining in-flight requests");
                let _ = sender.send(true);
            });
            mobility::app::serve(*config, listener, receiver).await
        }
        Command::Migrate { database_url } => {
            init_tracing(LogFormat::Text);
            mobility::db::connect_and_migrate(&database_url, 1).await?;
            println!(
                "migrations applied to {}",
                mobility::db::redact(&database_url)
            );
            Ok(())
        }
        Command::Schema => {
            print!("{}", mobility::schema::sdl());
            Ok(())
        }
        Command::Replay(args) => {
            init_tracing(LogFormat::Text);
            mobility::replay::run(args).await
        }
        Command::Seed(args) => {
            init_tracing(LogFormat::Text);
            mobility::loadgen::seed::run(args).await
        }
        Command::Loadgen(args) => {
            init_tracing(LogFormat::Text);
            mobility::loadgen::run(args).await
        }
        Command::Token {
            database_url,
            action,
        } => token_command(&database_url, action).await,
    }
}
