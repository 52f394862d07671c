//! Database connection and migrations.
//!
//! SQLite runs with one connection: SQLite allows one writer at a time, and a single
//! connection turns write contention into queueing instead of `SQLITE_BUSY` errors. The
//! conditional updates and unique indexes that keep trips consistent work the same on
//! PostgreSQL, where the pool has many connections.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use tracing::info;

/// Opens the database at `url` and applies pending migrations.
///
/// # Errors
/// A connection or migration failure, with the URL's scheme in the message.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    let db = connect(url, max_connections).await?;
    Migrator::up(&db, None).await?;
    info!(backend = ?db.get_database_backend(), "database ready");
    Ok(db)
}

/// Opens the database at `url` without migrating.
///
/// # Errors
/// An unsupported scheme or a failed connection.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let sqlite = url.starts_with("sqlite:");
    if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(DbErr::Custom(format!(
            "unsupported DATABASE_URL scheme in {:?}; use sqlite://PATH?mode=rwc or postgres://...",
            redact(url)
        )));
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if sqlite { 1 } else { max_connections })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        // Set on every connection the pool opens, since the pool replaces its connection
        // after `max_lifetime` and per-connection pragmas would otherwise fall back.
        .map_sqlx_sqlite_opts(|opts| {
            // WAL lets readers in other processes (backups, sqlite3 shells) work during
            // writes. NORMAL syncs at checkpoints only: a power cut may lose the last
            // transactions but does not corrupt the file, and a killed process loses nothing.
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
        });
    Database::connect(options).await
}

/// The URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
