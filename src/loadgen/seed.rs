//! `mobility seed`: fills an empty database with N online drivers for benchmarks, each with a
//! vehicle and a `driver_presence` row holding a position and a fresh `recorded_at`.
//!
//! Seeding writes the tables directly through SeaORM and bypasses the API on purpose: one
//! million registrations, each followed by `goOnline`, would take far longer through GraphQL
//! than multi-row inserts do, and benchmarks of matching do not measure registration. The
//! server rebuilds its in-memory index from these rows when it starts, as after any restart.
//!
//! Driver `id` gets id `id` for its vehicle too, and sits at point `id - 1` of the seeded
//! driver stream ([`super::points::driver_position`]), so `loadgen load` puts the same drivers
//! into Redis and PostGIS. Seeded fixes age like real ones: start the server with a large
//! `--location-stale-seconds` (such as 86400) so they stay matchable during a benchmark.

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use entity::enums::VehicleType;
use entity::{driver, driver_presence, vehicle};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait, TransactionTrait,
};

use super::points;
use crate::config::DEFAULT_DATABASE_URL;

/// Bind parameters per statement: below SQLite's default limit of 32,766 and PostgreSQL's
/// 65,535.
const MAX_BINDS: usize = 30_000;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Database URL: `sqlite://PATH?mode=rwc` or `postgres://...`; it must hold no drivers.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Drivers to create, with ids 1..=N.
    #[arg(long)]
    pub drivers: u64,

    /// Seed of the driver positions; give the same one to `loadgen`.
    #[arg(long, default_value_t = points::DEFAULT_SEED)]
    pub seed: u64,

    /// Drivers written per transaction.
    #[arg(long, default_value_t = 50_000)]
    pub transaction_size: u64,
}

/// Runs `mobility seed`.
///
/// # Errors
/// Invalid arguments, a database that already contains drivers, or a database failure.
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    if args.drivers == 0 || args.transaction_size == 0 {
        anyhow::bail!("--drivers and --transaction-size must be at least 1");
    }
    let redacted = crate::db::redact(&args.database_url);
    let db = crate::db::connect_and_migrate(&args.database_url, 2)
        .await
        .with_context(|| format!("cannot open database {redacted}"))?;
    check_empty(&db).await?;

    let started = Instant::now();
    let now = Utc::now();
    let progress = indicatif::ProgressBar::new(args.drivers);
    let mut first = 1;
    while first <= args.drivers {
        let last = (first + args.transaction_size - 1).min(args.drivers);
        let txn = db.begin().await?;
        insert_range(&txn, first as i64, last as i64, args.seed, now)
            .await
            .with_context(|| format!("cannot insert drivers {first}..={last}"))?;
        txn.commit().await?;
        progress.set_position(last);
        first = last + 1;
    }
    progress.finish_and_clear();
    if db.get_database_backend() == DbBackend::Postgres {
        // Explicit ids leave the serial sequences at 1; move them past the seeded rows so
        // that later registrations get free ids.
        for table in ["vehicles", "drivers"] {
            db.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 (SELECT max(id) FROM {table}))"
            ))
            .await?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "seeded {} online drivers into {redacted} in {seconds:.1} s ({:.0} drivers/s), seed {}",
        args.drivers,
        args.drivers as f64 / seconds.max(1e-9),
        args.seed
    );
    Ok(())
}

/// Fails unless the driver and vehicle tables are empty, because seeded ids must be 1..=N for
/// the loaders and scenarios to find each driver's position.
async fn check_empty(db: &DatabaseConnection) -> anyhow::Result<()> {
    let drivers = driver::Entity::find().count(db).await?;
    let vehicles = vehicle::Entity::find().count(db).await?;
    if drivers > 0 || vehicles > 0 {
        anyhow::bail!(
            "the database already contains {drivers} drivers and {vehicles} vehicles; seed a new \
             database (another --database-url), since seeded ids must run from 1"
        );
    }
    Ok(())
}

/// Rows per multi-row insert of a table with `columns` columns.
fn rows_per_statement(columns: usize) -> usize {
    MAX_BINDS / columns
}

/// Inserts vehicles, drivers and presence rows for ids `first..=last`.
async fn insert_range<C: ConnectionTrait>(
    db: &C,
    first: i64,
    last: i64,
    seed: u64,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let ids: Vec<i64> = (first..=last).collect();
    for chunk in ids.chunks(rows_per_statement(5)) {
        let rows = chunk.iter().map(|&id| vehicle::ActiveModel {
            id: Set(id),
            vehicle_type: Set(vehicle_type(id)),
            plate: Set(format!("SEED-{id}")),
            description: Set(None),
            created_at: Set(now),
        });
        vehicle::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    for chunk in ids.chunks(rows_per_statement(9)) {
        let rows = chunk.iter().map(|&id| driver::ActiveModel {
            id: Set(id),
            name: Set(format!("Seeded driver {id}")),
            phone: Set(seed_phone(id)),
            vehicle_id: Set(id),
            rating_sum: Set(0),
            rating_count: Set(0),
            offers_accepted: Set(0),
            offers_rejected: Set(0),
            created_at: Set(now),
        });
        driver::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    for chunk in ids.chunks(rows_per_statement(10)) {
        let rows = chunk.iter().map(|&id| {
            let position = points::driver_position(seed, id);
            driver_presence::ActiveModel {
                driver_id: Set(id),
                online: Set(true),
                lat: Set(Some(position.lat)),
                lng: Set(Some(position.lng)),
                heading_deg: Set(None),
                speed_mps: Set(None),
                accuracy_m: Set(None),
                recorded_at: Set(Some(now)),
                available_since: Set(Some(now)),
                updated_at: Set(now),
            }
        });
        driver_presence::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Moto-taxis on odd ids and cabs on even ids, so `vehicleTypes` filters see both.
fn vehicle_type(id: i64) -> VehicleType {
    if id % 2 == 1 {
        VehicleType::Moto
    } else {
        VehicleType::Cab
    }
}

/// Builds a unique E.164 number with country code 999, which ITU has not assigned, so it cannot
/// clash with a real driver's phone.
fn seed_phone(id: i64) -> String {
    format!("+999{id:010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_e164_and_unique() {
        assert_eq!(seed_phone(1), "+9990000000001");
        assert_eq!(seed_phone(1_000_000), "+9990001000000");
        assert!(seed_phone(9_999_999_999).len() <= 16);
    }

    #[test]
    fn statements_stay_under_bind_limit() {
        for columns in [5, 9, 10] {
            assert!(rows_per_statement(columns) * columns <= 32_766);
        }
    }

    #[tokio::test]
    async fn seed_fills_sqlite_and_server_indexes_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("seed.db").display());
        run(SeedArgs {
            database_url: url.clone(),
            drivers: 7_001,
            seed: 3,
            transaction_size: 2_000,
        })
        .await
        .unwrap();

        let db = crate::db::connect(&url, 1).await.unwrap();
        assert_eq!(driver::Entity::find().count(&db).await.unwrap(), 7_001);
        let presence = driver_presence::Entity::find_by_id(7_001_i64)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let expected = points::driver_position(3, 7_001);
        assert!(presence.online);
        assert_eq!(presence.lat, Some(expected.lat));
        assert_eq!(presence.lng, Some(expected.lng));

        let live = crate::tracking::load_live_drivers(&db).await.unwrap();
        assert_eq!(live.indexed_count(), 7_001);

        let again = run(SeedArgs {
            database_url: url,
            drivers: 1,
            seed: 3,
            transaction_size: 1,
        })
        .await
        .unwrap_err();
        assert!(
            format!("{again:#}").contains("already contains 7001 drivers"),
            "{again:#}"
        );
    }
}
