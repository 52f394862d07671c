//! Replay of the Porto taxi data against a running server (being written).

/// Arguments of `mobility replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
}

/// Runs the replay.
///
/// # Errors
/// Always, until the replay lands.
pub async fn run(_args: ReplayArgs) -> anyhow::Result<()> {
    anyhow::bail!("replay is not built yet")
}
