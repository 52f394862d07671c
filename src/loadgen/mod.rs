//! `mobility loadgen`: measures a running server over real HTTP and WebSocket, and the peers
//! people would otherwise use, Redis `GEOSEARCH` and PostGIS, with the same points, the same
//! query and the same client concurrency.
//!
//! Scenarios, one subcommand each:
//!
//! - `load`: writes the seeded drivers into Redis (`GEOADD`) or PostGIS (`COPY`); the server
//!   gets them from `mobility seed` instead.
//! - `nearby`: the 10 nearest drivers within 1,000 m of random points over the extent.
//! - `ingest`: moves seeded drivers a few meters each, one update per request or in batches.
//! - `fanout`: many `driverLocation` WebSocket subscribers and the delay from a location
//!   update to its event.
//! - `memory`: the server's resident memory, or the size of the Redis key or PostGIS table.
//!
//! Every run appends one JSON line to `--output` ([`report::ResultRow`]) and prints a summary.
//! Modules: [`points`] (the shared point generator), [`seed`] (`mobility seed`), [`runner`]
//! (closed-loop workers), [`report`] (the result row), [`server`], [`redis_target`] and
//! [`postgis`] (one per target), [`fanout`] and [`memory`], and [`token`] (the server's bearer
//! token, `--token` or `MOBILITY_TOKEN`, which `mobility replay` uses too).

pub mod fanout;
pub mod memory;
pub mod points;
pub mod postgis;
pub mod redis_target;
pub mod report;
pub mod runner;
pub mod seed;
pub mod server;
pub mod token;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use self::report::ResultRow;
use self::runner::{Limits, RunResult};

/// `mobility loadgen` and its scenarios.
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Write the seeded driver positions into Redis or PostGIS, replacing what the key or
    /// table held.
    Load(LoadArgs),
    /// Query the 10 nearest drivers within 1,000 m of seeded random points.
    Nearby(NearbyArgs),
    /// Move seeded drivers a few meters each, one update per request or in batches.
    Ingest(IngestArgs),
    /// Subscribe many WebSocket clients to `driverLocation` and time update delivery.
    Fanout(fanout::FanoutArgs),
    /// Record the server's resident memory, or the size of the Redis key or PostGIS table.
    Memory(memory::MemoryArgs),
}

/// Target of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The mobility server, over GraphQL on HTTP.
    Server,
    /// A sorted set of Redis GEO commands.
    Redis,
    /// A PostgreSQL table with a PostGIS geography column and a GiST index.
    Postgis,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Server => "server",
            Target::Redis => "redis",
            Target::Postgis => "postgis",
        }
    }
}

/// Connection sharing of the Redis workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisConnection {
    /// One TCP connection per worker, like the HTTP keep-alive pool and PostgreSQL.
    PerWorker,
    /// One multiplexed TCP connection that pipelines every worker's commands.
    Multiplexed,
}

/// Addresses of the targets.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Target to measure.
    #[arg(long, value_enum)]
    pub target: Target,

    /// Base URL of the mobility server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    #[command(flatten)]
    pub token: token::TokenArgs,

    /// Redis server URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Redis key of the GEO sorted set.
    #[arg(long, default_value = "mobility-bench:drivers")]
    pub key: String,

    /// Connection sharing of the Redis workers.
    #[arg(long, value_enum, default_value_t = RedisConnection::PerWorker)]
    pub redis_connection: RedisConnection,

    /// PostgreSQL URL of the database that contains `drivers_geo`.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/mobility_bench"
    )]
    pub postgres_url: String,
}

/// Options shared by the closed-loop scenarios.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Workers, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,

    /// Seconds to run; 10 without --requests, else a cap of 600.
    #[arg(long)]
    pub duration: Option<f64>,

    /// Requests after which the run stops.
    #[arg(long)]
    pub requests: Option<u64>,

    /// File that gets one JSON line per run appended.
    #[arg(long)]
    pub output: Option<PathBuf>,

    /// Seed of the driver positions and query points; use the seed given to `seed` or `load`.
    #[arg(long, default_value_t = points::DEFAULT_SEED)]
    pub seed: u64,

    /// Drivers in the target, with ids 1..=N; read from the target when absent.
    #[arg(long)]
    pub drivers: Option<u64>,
}

impl RunArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
        if self.concurrency == 0 {
            anyhow::bail!("invalid --concurrency 0: give at least 1");
        }
        Limits::from_args(self.duration, self.requests)
    }
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Drivers to write, with ids 1..=N.
    #[arg(long)]
    pub drivers: u64,

    /// Seed of the driver positions; the same as given to `mobility seed`.
    #[arg(long, default_value_t = points::DEFAULT_SEED)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct NearbyArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub run: RunArgs,

    /// Search radius in meters.
    #[arg(long, default_value_t = 1_000.0)]
    pub radius_m: f64,

    /// Drivers returned per query.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub run: RunArgs,

    /// Updates per request: 1 sends them one by one (`ingest_single`), more sends batches
    /// (`ingest_batch`).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
}

/// Runs one scenario.
///
/// # Errors
/// An invalid argument, an unreachable target or a failed output file.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Load(args) => load(args).await,
        Scenario::Nearby(args) => nearby(args).await,
        Scenario::Ingest(args) => ingest(args).await,
        Scenario::Fanout(args) => fanout::run(args).await,
        Scenario::Memory(args) => memory::run(args).await,
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    if args.drivers == 0 {
        anyhow::bail!("invalid --drivers 0: give at least 1");
    }
    match args.target.target {
        Target::Server => anyhow::bail!(
            "`load --target server` is not a thing: seed the server's database with \
             `mobility seed`, then start the server on it"
        ),
        Target::Redis => redis_target::load(&args.target, args.drivers, args.seed).await,
        Target::Postgis => postgis::load(&args.target, args.drivers, args.seed).await,
    }
}

async fn nearby(args: NearbyArgs) -> anyhow::Result<()> {
    let limits = args.run.limits()?;
    if !(args.radius_m.is_finite() && args.radius_m > 0.0) {
        anyhow::bail!("invalid --radius-m {}: give meters above 0", args.radius_m);
    }
    if args.limit == 0 {
        anyhow::bail!("invalid --limit 0: give at least 1");
    }
    let query = NearbyQuery {
        seed: args.run.seed,
        radius_m: args.radius_m,
        limit: args.limit,
    };
    let concurrency = args.run.concurrency as usize;
    let started_at = report::now_rfc3339();

    let (run, meta) = match args.target.target {
        Target::Server => {
            server::nearby(&args.target, &args.run, query, concurrency, limits).await?
        }
        Target::Redis => {
            redis_target::nearby(&args.target, &args.run, query, concurrency, limits).await?
        }
        Target::Postgis => {
            postgis::nearby(&args.target, &args.run, query, concurrency, limits).await?
        }
    };
    check_token_accepted(&run)?;

    let mut details = run_details(&run, &meta.operation);
    let succeeded = run.requests.saturating_sub(run.failed);
    let queries = succeeded.max(1) as f64;
    let results = run.counters.get("results").copied().unwrap_or(0);
    details["results_mean"] = json!(results as f64 / queries);
    details["empty_results"] = json!(run.counters.get("empty").copied().unwrap_or(0));
    let row = closed_loop_row(
        "nearby",
        &args.target,
        &args.run,
        meta,
        &run,
        succeeded,
        None,
        started_at,
        details,
    );
    report::emit(args.run.output.as_deref(), &row)
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let limits = args.run.limits()?;
    if args.batch == 0 {
        anyhow::bail!("invalid --batch 0: give 1 for single updates or more for batches");
    }
    let concurrency = args.run.concurrency as usize;
    let started_at = report::now_rfc3339();

    let (run, meta) = match args.target.target {
        Target::Server => {
            server::ingest(&args.target, &args.run, args.batch, concurrency, limits).await?
        }
        Target::Redis => {
            redis_target::ingest(&args.target, &args.run, args.batch, concurrency, limits).await?
        }
        Target::Postgis => {
            postgis::ingest(&args.target, &args.run, args.batch, concurrency, limits).await?
        }
    };
    check_token_accepted(&run)?;

    let mut details = run_details(&run, &meta.operation);
    details["updates"] = json!(run.items);
    details["updates_not_accepted"] = json!(run.rejected_items);
    let statuses: BTreeMap<&str, u64> = run
        .counters
        .iter()
        .filter_map(|(name, count)| name.strip_prefix("status:").map(|s| (s, *count)))
        .collect();
    if !statuses.is_empty() {
        details["status_counts"] = json!(statuses);
    }
    let (scenario, batch) = if args.batch == 1 {
        ("ingest_single", None)
    } else {
        ("ingest_batch", Some(u64::from(args.batch)))
    };
    let accepted = run.items.saturating_sub(run.rejected_items);
    let row = closed_loop_row(
        scenario,
        &args.target,
        &args.run,
        meta,
        &run,
        accepted,
        batch,
        started_at,
        details,
    );
    report::emit(args.run.output.as_deref(), &row)
}

/// The query every target runs in `nearby`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearbyQuery {
    pub seed: u64,
    pub radius_m: f64,
    pub limit: u32,
}

/// Facts a target reports about a run besides the measurements.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// Drivers the target held.
    pub drivers: u64,
    /// Connection setup of the workers.
    pub connection: String,
    /// The request sent, as text for the report.
    pub operation: String,
}

/// Fails when the server rejected the token during the run, which then measured nothing.
fn check_token_accepted(run: &RunResult) -> anyhow::Result<()> {
    match &run.token_rejected {
        Some(message) => anyhow::bail!("stopped after {} requests: {message}", run.requests),
        None => Ok(()),
    }
}

fn run_details(run: &RunResult, operation: &str) -> Value {
    let mut details = json!({
        "operation": operation,
        "failed_requests": run.failed,
    });
    if let Some(error) = &run.first_error {
        details["first_error"] = json!(error);
    }
    if let Some(aborted) = &run.aborted {
        details["aborted"] = json!(aborted);
    }
    details
}

/// Builds the row of a closed-loop run, whose throughput counts `throughput_items`.
#[allow(clippy::too_many_arguments)]
fn closed_loop_row(
    scenario: &str,
    target: &TargetArgs,
    args: &RunArgs,
    meta: RunMeta,
    run: &RunResult,
    throughput_items: u64,
    batch: Option<u64>,
    started_at: String,
    details: Value,
) -> ResultRow {
    let seconds = run.elapsed.as_secs_f64();
    ResultRow {
        scenario: scenario.to_owned(),
        target: target.target.name().to_owned(),
        drivers: meta.drivers,
        concurrency: u64::from(args.concurrency),
        batch,
        subscribers: None,
        requests: run.requests,
        errors: run.failed + run.rejected_items,
        duration_s: seconds,
        throughput_per_s: throughput_items as f64 / seconds.max(1e-9),
        latency_ms: report::percentiles(&run.histogram),
        rss_bytes: None,
        bytes_per_driver: None,
        connection: meta.connection,
        started_at,
        git_rev: report::git_rev(),
        details,
    }
}

/// The drivers a worker of `concurrency` moves in `ingest`: ids `worker + 1`, then every
/// `concurrency`-th id up to `drivers`. Workers never share a driver, so each driver's fixes
/// come from one worker in time order.
#[derive(Debug, Clone)]
pub struct DriverCursor {
    first: u64,
    step: u64,
    drivers: u64,
    next: u64,
    /// Times the worker went through all its drivers; its parity picks the position.
    round: u64,
}

impl DriverCursor {
    /// # Panics
    /// When the worker owns no driver; callers check `concurrency <= drivers` first.
    pub fn new(worker: usize, concurrency: usize, drivers: u64) -> Self {
        let first = worker as u64 + 1;
        assert!(first <= drivers, "worker {worker} has no driver");
        Self {
            first,
            step: concurrency as u64,
            drivers,
            next: first,
            round: 0,
        }
    }

    /// Returns the next driver and its new position: the seeded one, or 5.6 m north of it on
    /// odd rounds. Either move is far below the server's jump limit.
    pub fn next_move(&mut self, seed: u64) -> (i64, crate::geometry::LatLng) {
        let id = self.next;
        self.next += self.step;
        if self.next > self.drivers {
            self.next = self.first;
            self.round += 1;
        }
        let mut position = points::driver_position(seed, id as i64);
        if self.round % 2 == 1 {
            // 0.00005 degrees of latitude is 5.6 m everywhere.
            position.lat += 0.000_05;
        }
        (id as i64, position)
    }
}

/// Checks that every worker of `ingest` owns at least one driver.
fn check_workers_have_drivers(concurrency: usize, drivers: u64) -> anyhow::Result<()> {
    if drivers == 0 {
        anyhow::bail!("the target has no driver; seed or load it first");
    }
    if concurrency as u64 > drivers {
        anyhow::bail!(
            "--concurrency {concurrency} is above the {drivers} drivers: each worker moves its \
             own drivers, so give at most {drivers}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_partitions_drivers() {
        let mut seen = Vec::new();
        for worker in 0..3 {
            let mut cursor = DriverCursor::new(worker, 3, 10);
            for _ in 0..4 {
                seen.push(cursor.next_move(1).0);
            }
        }
        // Worker 0 owns 1, 4, 7, 10; worker 1 owns 2, 5, 8; worker 2 owns 3, 6, 9.
        assert_eq!(seen, vec![1, 4, 7, 10, 2, 5, 8, 2, 3, 6, 9, 3]);
    }

    #[test]
    fn cursor_alternates_position_by_round() {
        let mut cursor = DriverCursor::new(0, 1, 2);
        let (id, first) = cursor.next_move(5);
        assert_eq!(id, 1);
        assert_eq!(first, points::driver_position(5, 1));
        cursor.next_move(5);
        let (id, moved) = cursor.next_move(5);
        assert_eq!(id, 1);
        let distance = first.distance_m(&moved);
        assert!((5.0..6.0).contains(&distance), "{distance} m");
    }

    #[test]
    fn workers_need_drivers() {
        assert!(check_workers_have_drivers(4, 4).is_ok());
        assert!(check_workers_have_drivers(5, 4).is_err());
        assert!(check_workers_have_drivers(1, 0).is_err());
    }
}
