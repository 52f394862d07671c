//! PostGIS as a target: the drivers in table `drivers_geo (id bigint, geog geography)` with a
//! GiST index on `geog`, one PostgreSQL connection per worker through sqlx (the copy that
//! sea-orm re-exports).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::sqlx::{self, Connection, Executor, Row};

use super::points::{self, Stream};
use super::runner::{self, Done, Limits, RunResult, Worker};
use super::{DriverCursor, NearbyQuery, RunArgs, RunMeta, TargetArgs, check_workers_have_drivers};

/// Time limit of opening one connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows per `COPY` data message of `load`.
const COPY_ROWS_PER_MESSAGE: u64 = 10_000;

/// The query of `nearby`: the brief's form, nearest first by the index-assisted `<->`.
const NEARBY: &str = "SELECT id, ST_Distance(geog, ST_MakePoint($1, $2)::geography) AS d \
     FROM drivers_geo \
     WHERE ST_DWithin(geog, ST_MakePoint($1, $2)::geography, $3) \
     ORDER BY geog <-> ST_MakePoint($1, $2)::geography \
     LIMIT $4";

const UPDATE_ONE: &str =
    "UPDATE drivers_geo SET geog = ST_MakePoint($1, $2)::geography WHERE id = $3";

/// One statement, so one transaction, for a whole batch.
const UPDATE_MANY: &str = "UPDATE drivers_geo AS d \
     SET geog = ST_MakePoint(v.lng, v.lat)::geography \
     FROM unnest($1::bigint[], $2::float8[], $3::float8[]) AS v(id, lng, lat) \
     WHERE d.id = v.id";

/// Opens one connection.
///
/// # Errors
/// A message naming the URL when PostgreSQL cannot be reached.
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let redacted = crate::db::redact(url);
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url))
        .await
        .with_context(|| format!("connecting to PostgreSQL at {redacted} timed out"))?
        .with_context(|| {
            let database = url::Url::parse(url)
                .map(|parsed| parsed.path().trim_start_matches('/').to_owned())
                .unwrap_or_default();
            format!(
                "cannot connect to PostgreSQL at {redacted}; start it, create the database \
                 (createdb -U postgres {database}) or pass --postgres-url"
            )
        })
}

async fn connect_all(url: &str, count: usize) -> anyhow::Result<Vec<PgConnection>> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(connect(url).await?);
    }
    Ok(connections)
}

async fn row_count(connection: &mut PgConnection) -> anyhow::Result<u64> {
    let row = sqlx::query("SELECT count(*) FROM drivers_geo")
        .fetch_one(&mut *connection)
        .await
        .context("cannot count drivers_geo; run `mobility loadgen load --target postgis` first")?;
    Ok(row.try_get::<i64, _>(0)? as u64)
}

async fn drivers_in(connection: &mut PgConnection, from_args: Option<u64>) -> anyhow::Result<u64> {
    let count = row_count(connection).await?;
    if count == 0 {
        anyhow::bail!("drivers_geo is empty; run `mobility loadgen load --target postgis` first");
    }
    Ok(from_args.unwrap_or(count))
}

/// Creates the PostGIS extension, replaces `drivers_geo` with drivers `1..=drivers` at their
/// seeded positions by `COPY`, then builds the GiST index and analyzes the table.
///
/// # Errors
/// PostgreSQL is unreachable, PostGIS is not installed, or a statement fails.
pub async fn load(target: &TargetArgs, drivers: u64, seed: u64) -> anyhow::Result<()> {
    let mut connection = connect(&target.postgres_url).await?;
    let started = Instant::now();
    connection
        .execute("CREATE EXTENSION IF NOT EXISTS postgis")
        .await
        .context(
            "CREATE EXTENSION postgis failed; install PostGIS (Debian: postgresql-15-postgis-3)",
        )?;
    connection
        .execute(
            "DROP TABLE IF EXISTS drivers_geo; \
             CREATE TABLE drivers_geo \
             (id bigint PRIMARY KEY, geog geography(Point, 4326) NOT NULL)",
        )
        .await
        .context("cannot create table drivers_geo")?;

    let progress = indicatif::ProgressBar::new(drivers);
    let mut copy = connection
        .copy_in_raw("COPY drivers_geo (id, geog) FROM STDIN")
        .await
        .context("COPY drivers_geo failed to start")?;
    let mut first = 1;
    while first <= drivers {
        let last = (first + COPY_ROWS_PER_MESSAGE - 1).min(drivers);
        let mut data = String::with_capacity(64 * (last - first + 1) as usize);
        for id in first..=last {
            let p = points::driver_position(seed, id as i64);
            // Text format: tab-separated columns; geography reads extended WKT.
            data.push_str(&format!("{id}\tSRID=4326;POINT({} {})\n", p.lng, p.lat));
        }
        copy.send(data.into_bytes())
            .await
            .with_context(|| format!("COPY of drivers {first}..={last} failed"))?;
        progress.set_position(last);
        first = last + 1;
    }
    let copied = copy.finish().await.context("COPY drivers_geo failed")?;
    progress.finish_and_clear();
    let copy_seconds = started.elapsed().as_secs_f64();

    connection
        .execute(
            "CREATE INDEX drivers_geo_geog_gist ON drivers_geo USING gist (geog); \
             ANALYZE drivers_geo",
        )
        .await
        .context("cannot build the GiST index on drivers_geo")?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "load postgis: {copied} drivers in drivers_geo at {} in {seconds:.1} s \
         (COPY {copy_seconds:.1} s, index and ANALYZE {:.1} s)",
        crate::db::redact(&target.postgres_url),
        seconds - copy_seconds
    );
    if copied != drivers {
        anyhow::bail!("COPY wrote {copied} rows for {drivers} drivers");
    }
    Ok(())
}

struct NearbyWorker {
    connection: PgConnection,
    query: NearbyQuery,
    results: u64,
    empty: u64,
}

impl Worker for NearbyWorker {
    async fn call(&mut self, index: u64) -> anyhow::Result<Done> {
        let p = points::point(self.query.seed, Stream::Queries, index);
        let rows = sqlx::query(NEARBY)
            .bind(p.lng)
            .bind(p.lat)
            .bind(self.query.radius_m)
            .bind(i64::from(self.query.limit))
            .fetch_all(&mut self.connection)
            .await
            .context("nearby query failed")?;
        self.results += rows.len() as u64;
        self.empty += u64::from(rows.is_empty());
        Ok(Done::ONE)
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("results".to_owned(), self.results),
            ("empty".to_owned(), self.empty),
        ])
    }
}

/// Runs `nearby` against PostGIS.
///
/// # Errors
/// PostgreSQL is unreachable or `drivers_geo` is missing or empty.
pub async fn nearby(
    target: &TargetArgs,
    args: &RunArgs,
    query: NearbyQuery,
    concurrency: usize,
    limits: Limits,
) -> anyhow::Result<(RunResult, RunMeta)> {
    let mut connections = connect_all(&target.postgres_url, concurrency).await?;
    let drivers = drivers_in(&mut connections[0], args.drivers).await?;
    let workers = connections
        .into_iter()
        .map(|connection| NearbyWorker {
            connection,
            query,
            results: 0,
            empty: 0,
        })
        .collect();
    let run = runner::run("nearby postgis", workers, limits).await;
    let meta = RunMeta {
        drivers,
        connection: "one per worker".to_owned(),
        operation: format!(
            "prepared SELECT id, ST_Distance(...) FROM drivers_geo WHERE ST_DWithin(geog, p, {}) \
             ORDER BY geog <-> p LIMIT {}",
            query.radius_m, query.limit
        ),
    };
    Ok((run, meta))
}

struct IngestWorker {
    connection: PgConnection,
    cursor: DriverCursor,
    seed: u64,
    batch: u32,
}

impl Worker for IngestWorker {
    async fn call(&mut self, _index: u64) -> anyhow::Result<Done> {
        if self.batch == 1 {
            let (id, p) = self.cursor.next_move(self.seed);
            let result = sqlx::query(UPDATE_ONE)
                .bind(p.lng)
                .bind(p.lat)
                .bind(id)
                .execute(&mut self.connection)
                .await
                .context("UPDATE drivers_geo failed")?;
            return Ok(Done {
                items: 1,
                rejected: 1 - result.rows_affected().min(1),
            });
        }
        let mut ids = Vec::with_capacity(self.batch as usize);
        let mut lngs = Vec::with_capacity(self.batch as usize);
        let mut lats = Vec::with_capacity(self.batch as usize);
        for _ in 0..self.batch {
            let (id, p) = self.cursor.next_move(self.seed);
            ids.push(id);
            lngs.push(p.lng);
            lats.push(p.lat);
        }
        let result = sqlx::query(UPDATE_MANY)
            .bind(&ids)
            .bind(&lngs)
            .bind(&lats)
            .execute(&mut self.connection)
            .await
            .context("batched UPDATE drivers_geo failed")?;
        let items = u64::from(self.batch);
        // A driver that appears twice in one batch is updated once, so the rows affected
        // count distinct drivers.
        let distinct = {
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            sorted.len() as u64
        };
        Ok(Done {
            items,
            rejected: distinct.saturating_sub(result.rows_affected()),
        })
    }
}

/// Runs `ingest` against PostGIS.
///
/// # Errors
/// PostgreSQL is unreachable, `drivers_geo` is missing or empty, or it has fewer drivers
/// than workers.
pub async fn ingest(
    target: &TargetArgs,
    args: &RunArgs,
    batch: u32,
    concurrency: usize,
    limits: Limits,
) -> anyhow::Result<(RunResult, RunMeta)> {
    let mut connections = connect_all(&target.postgres_url, concurrency).await?;
    let drivers = drivers_in(&mut connections[0], args.drivers).await?;
    check_workers_have_drivers(concurrency, drivers)?;
    let workers = connections
        .into_iter()
        .enumerate()
        .map(|(worker, connection)| IngestWorker {
            connection,
            cursor: DriverCursor::new(worker, concurrency, drivers),
            seed: args.seed,
            batch,
        })
        .collect();
    let run = runner::run("ingest postgis", workers, limits).await;
    let operation = if batch == 1 {
        "prepared UPDATE drivers_geo SET geog = ... WHERE id = $3".to_owned()
    } else {
        format!(
            "one prepared UPDATE drivers_geo ... FROM unnest(ids, lngs, lats) of {batch} rows \
             (one transaction)"
        )
    };
    let meta = RunMeta {
        drivers,
        connection: "one per worker".to_owned(),
        operation,
    };
    Ok((run, meta))
}

/// Rows of `drivers_geo` and its size in bytes with indexes and TOAST
/// (`pg_total_relation_size`).
///
/// # Errors
/// PostgreSQL is unreachable or the table is missing.
pub async fn memory(url: &str) -> anyhow::Result<(u64, u64)> {
    let mut connection = connect(url).await?;
    let rows = row_count(&mut connection).await?;
    let row = sqlx::query("SELECT pg_total_relation_size('drivers_geo')")
        .fetch_one(&mut connection)
        .await
        .context("pg_total_relation_size(drivers_geo) failed")?;
    Ok((rows, row.try_get::<i64, _>(0)? as u64))
}
