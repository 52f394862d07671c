//! Redis as a target: the drivers in one GEO sorted set, searched with `GEOSEARCH` and moved
//! with `GEOADD`. Members are driver ids as decimal strings, the ids the server uses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use super::points::{self, Stream};
use super::runner::{self, Done, Limits, RunResult, Worker};
use super::{
    DriverCursor, NearbyQuery, RedisConnection, RunArgs, RunMeta, TargetArgs,
    check_workers_have_drivers,
};

/// Members per `GEOADD` command of `load`.
const LOAD_MEMBERS_PER_COMMAND: u64 = 1_000;

/// `GEOADD` commands per pipeline of `load`: 10,000 members per round trip.
const LOAD_COMMANDS_PER_PIPELINE: u64 = 10;

/// Opens `count` connections: separate ones for `PerWorker`, clones of one for `Multiplexed`.
///
/// # Errors
/// A message naming the URL when Redis cannot be reached.
pub async fn connect(
    url: &str,
    mode: RedisConnection,
    count: usize,
) -> anyhow::Result<Vec<MultiplexedConnection>> {
    let client = Client::open(url).with_context(|| format!("invalid --redis-url {url:?}"))?;
    // The default response timeout of 500 ms would fail large pipelines of `load`.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    let open = || async {
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| {
                format!("cannot reach Redis at {url}; start redis-server or pass --redis-url")
            })
    };
    let mut connections = Vec::with_capacity(count);
    match mode {
        RedisConnection::PerWorker => {
            for _ in 0..count {
                connections.push(open().await?);
            }
        }
        RedisConnection::Multiplexed => {
            let shared = open().await?;
            connections.resize(count, shared);
        }
    }
    Ok(connections)
}

fn connection_name(mode: RedisConnection) -> String {
    match mode {
        RedisConnection::PerWorker => "one per worker".to_owned(),
        RedisConnection::Multiplexed => "one multiplexed connection".to_owned(),
    }
}

/// Members in the key, by `ZCARD`.
async fn member_count(connection: &mut MultiplexedConnection, key: &str) -> anyhow::Result<u64> {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(connection)
        .await
        .with_context(|| format!("ZCARD {key} failed"))
}

/// Replaces `key` with drivers `1..=drivers` at their seeded positions.
///
/// # Errors
/// Redis is unreachable or a command fails.
pub async fn load(target: &TargetArgs, drivers: u64, seed: u64) -> anyhow::Result<()> {
    let mut connection = connect(&target.redis_url, RedisConnection::PerWorker, 1)
        .await?
        .remove(0);
    let key = &target.key;
    let started = Instant::now();
    redis::cmd("DEL")
        .arg(key)
        .exec_async(&mut connection)
        .await
        .with_context(|| format!("DEL {key} failed"))?;

    let progress = indicatif::ProgressBar::new(drivers);
    let per_pipeline = LOAD_MEMBERS_PER_COMMAND * LOAD_COMMANDS_PER_PIPELINE;
    let mut first = 1;
    while first <= drivers {
        let last = (first + per_pipeline - 1).min(drivers);
        let mut pipeline = redis::pipe();
        let mut id = first;
        while id <= last {
            let command_last = (id + LOAD_MEMBERS_PER_COMMAND - 1).min(last);
            let command = pipeline.cmd("GEOADD").arg(key);
            for member in id..=command_last {
                let p = points::driver_position(seed, member as i64);
                command.arg(p.lng).arg(p.lat).arg(member);
            }
            pipeline.ignore();
            id = command_last + 1;
        }
        pipeline
            .exec_async(&mut connection)
            .await
            .with_context(|| format!("GEOADD of drivers {first}..={last} failed"))?;
        progress.set_position(last);
        first = last + 1;
    }
    progress.finish_and_clear();

    let count = member_count(&mut connection, key).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "load redis: {count} drivers in {key} at {} in {seconds:.1} s ({:.0} drivers/s)",
        target.redis_url,
        count as f64 / seconds.max(1e-9)
    );
    if count != drivers {
        anyhow::bail!("{key} has {count} members after loading {drivers} drivers");
    }
    Ok(())
}

async fn drivers_in(
    connections: &mut [MultiplexedConnection],
    key: &str,
    from_args: Option<u64>,
) -> anyhow::Result<u64> {
    let count = member_count(&mut connections[0], key).await?;
    if count == 0 {
        anyhow::bail!(
            "{key} is empty or missing; run `mobility loadgen load --target redis` first"
        );
    }
    Ok(from_args.unwrap_or(count))
}

struct NearbyWorker {
    connection: MultiplexedConnection,
    command: NearbyCommand,
    results: u64,
    empty: u64,
}

#[derive(Debug, Clone)]
struct NearbyCommand {
    key: String,
    query: NearbyQuery,
}

impl Worker for NearbyWorker {
    async fn call(&mut self, index: u64) -> anyhow::Result<Done> {
        let query = self.command.query;
        let p = points::point(query.seed, Stream::Queries, index);
        let found: Vec<(String, f64)> = redis::cmd("GEOSEARCH")
            .arg(&self.command.key)
            .arg("FROMLONLAT")
            .arg(p.lng)
            .arg(p.lat)
            .arg("BYRADIUS")
            .arg(query.radius_m)
            .arg("m")
            .arg("ASC")
            .arg("COUNT")
            .arg(query.limit)
            .arg("WITHDIST")
            .query_async(&mut self.connection)
            .await
            .context("GEOSEARCH failed")?;
        self.results += found.len() as u64;
        self.empty += u64::from(found.is_empty());
        Ok(Done::ONE)
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("results".to_owned(), self.results),
            ("empty".to_owned(), self.empty),
        ])
    }
}

/// Runs `nearby` against Redis.
///
/// # Errors
/// Redis is unreachable or the key is empty.
pub async fn nearby(
    target: &TargetArgs,
    args: &RunArgs,
    query: NearbyQuery,
    concurrency: usize,
    limits: Limits,
) -> anyhow::Result<(RunResult, RunMeta)> {
    let mut connections = connect(&target.redis_url, target.redis_connection, concurrency).await?;
    let drivers = drivers_in(&mut connections, &target.key, args.drivers).await?;
    let command = NearbyCommand {
        key: target.key.clone(),
        query,
    };
    let workers = connections
        .into_iter()
        .map(|connection| NearbyWorker {
            connection,
            command: command.clone(),
            results: 0,
            empty: 0,
        })
        .collect();
    let run = runner::run("nearby redis", workers, limits).await;
    let meta = RunMeta {
        drivers,
        connection: connection_name(target.redis_connection),
        operation: format!(
            "GEOSEARCH key FROMLONLAT lng lat BYRADIUS {} m ASC COUNT {} WITHDIST",
            query.radius_m, query.limit
        ),
    };
    Ok((run, meta))
}

struct IngestWorker {
    connection: MultiplexedConnection,
    key: String,
    cursor: DriverCursor,
    seed: u64,
    batch: u32,
}

impl Worker for IngestWorker {
    async fn call(&mut self, _index: u64) -> anyhow::Result<Done> {
        // GEOADD returns the members added; moving an existing member adds none, so the
        // reply says nothing about success and is ignored.
        if self.batch == 1 {
            let (id, p) = self.cursor.next_move(self.seed);
            redis::cmd("GEOADD")
                .arg(&self.key)
                .arg(p.lng)
                .arg(p.lat)
                .arg(id)
                .exec_async(&mut self.connection)
                .await
                .context("GEOADD failed")?;
            return Ok(Done::ONE);
        }
        let mut pipeline = redis::pipe();
        for _ in 0..self.batch {
            let (id, p) = self.cursor.next_move(self.seed);
            pipeline
                .cmd("GEOADD")
                .arg(&self.key)
                .arg(p.lng)
                .arg(p.lat)
                .arg(id)
                .ignore();
        }
        pipeline
            .exec_async(&mut self.connection)
            .await
            .context("pipelined GEOADD failed")?;
        Ok(Done {
            items: u64::from(self.batch),
            rejected: 0,
        })
    }
}

/// Runs `ingest` against Redis.
///
/// # Errors
/// Redis is unreachable, the key is empty, or it has fewer drivers than workers.
pub async fn ingest(
    target: &TargetArgs,
    args: &RunArgs,
    batch: u32,
    concurrency: usize,
    limits: Limits,
) -> anyhow::Result<(RunResult, RunMeta)> {
    let mut connections = connect(&target.redis_url, target.redis_connection, concurrency).await?;
    let drivers = drivers_in(&mut connections, &target.key, args.drivers).await?;
    check_workers_have_drivers(concurrency, drivers)?;
    let workers = connections
        .into_iter()
        .enumerate()
        .map(|(worker, connection)| IngestWorker {
            connection,
            key: target.key.clone(),
            cursor: DriverCursor::new(worker, concurrency, drivers),
            seed: args.seed,
            batch,
        })
        .collect();
    let run = runner::run("ingest redis", workers, limits).await;
    let operation = if batch == 1 {
        "GEOADD key lng lat id".to_owned()
    } else {
        format!("pipeline of {batch} GEOADD key lng lat id")
    };
    let meta = RunMeta {
        drivers,
        connection: connection_name(target.redis_connection),
        operation,
    };
    Ok((run, meta))
}

/// Bytes the key uses by `MEMORY USAGE key SAMPLES 0` (every element counted), and the
/// server's `used_memory_rss` from `INFO memory`.
///
/// # Errors
/// Redis is unreachable or the key is missing.
pub async fn memory(url: &str, key: &str) -> anyhow::Result<(u64, u64, u64)> {
    let mut connection = connect(url, RedisConnection::PerWorker, 1).await?.remove(0);
    let members = member_count(&mut connection, key).await?;
    let usage: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut connection)
        .await
        .with_context(|| format!("MEMORY USAGE {key} failed"))?;
    let usage = usage.with_context(|| format!("{key} does not exist in Redis at {url}"))?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .context("INFO memory failed")?;
    let rss = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory_rss:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    Ok((members, usage, rss))
}
