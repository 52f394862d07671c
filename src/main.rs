//! The `mobility` command: `serve`, `migrate`, `schema`, `replay`, `seed` and `loadgen`.

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
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("mobility=info,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    }
}
