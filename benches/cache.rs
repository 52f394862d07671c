//! The profile cache: loading the 25 drivers of a `nearbyDrivers` response through the
//! `DriverLoader`, from PostgreSQL alone and through the Redis cache with every row cached,
//! one row missing or all rows missing. Before the timed runs it prints the hit ratio of a
//! stream of such batches that starts with an empty cache.
//!
//! Run with `cargo bench --bench cache`; BENCHMARKS.md records the results. Needs PostgreSQL
//! at `MOBILITY_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! where it drops and recreates the database `mobility_bench_cache` with 10,000 seeded
//! drivers, and Redis at `MOBILITY_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! where it deletes and rewrites the keys under `mobility-bench-cache:`. A batch is the 25
//! seeded drivers nearest to a query point of `mobility loadgen`, so batches overlap as the
//! responses to nearby riders do.

use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_graphql::dataloader::Loader;
use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::future::join_all;
use mobility::cluster::RedisLink;
use mobility::cluster::cache::{
    Lookup, NoProfileCache, Profile, ProfileCache, ProfileKey, RedisProfileCache,
    SharedProfileCache,
};
use mobility::loadgen::points::{self, Stream};
use mobility::loadgen::seed::{self, SeedArgs};
use mobility::schema::loaders::DriverLoader;
use mobility::spatial::SpatialIndex;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

const DRIVERS: i64 = 10_000;
const BATCH: usize = 25;
/// Distinct query points; the timed runs cycle through them.
const BATCHES: u64 = 10_000;
/// Batches loaded at once in the concurrent runs.
const CONCURRENCY: usize = 16;
const DATABASE: &str = "mobility_bench_cache";
const PREFIX: &str = "mobility-bench-cache";
const TTL_SECONDS: u32 = 300;

struct Setup {
    runtime: tokio::runtime::Runtime,
    db: DatabaseConnection,
    link: RedisLink,
    batches: Vec<Vec<i64>>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Recreates the database with the seeded drivers, empties the cache keys and computes the
/// batches.
fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin_url = env_or(
        "MOBILITY_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let redis_url = env_or("MOBILITY_BENCH_REDIS_URL", "redis://127.0.0.1:6379");
    let mut url = url::Url::parse(&admin_url).expect("MOBILITY_BENCH_POSTGRES_URL is a URL");
    url.set_path(DATABASE);
    let database_url = url.to_string();

    let db = runtime.block_on(async {
        let admin = Database::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin_url}: {e}"));
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE {DATABASE}"))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let db = mobility::db::connect_and_migrate(&database_url, 10)
            .await
            .unwrap();
        seed::run(SeedArgs {
            database_url: database_url.clone(),
            drivers: DRIVERS as u64,
            seed: points::DEFAULT_SEED,
            transaction_size: 50_000,
        })
        .await
        .unwrap();
        db
    });

    let link = runtime.block_on(async {
        // The connection manager spawns its reconnection task on the current runtime.
        let link = RedisLink::open(&redis_url, PREFIX).unwrap();
        assert!(link.probe().await, "Redis is not reachable at {redis_url}");
        delete_prefix(&link).await;
        link
    });

    let index = SpatialIndex::bulk_load(
        (1..=DRIVERS).map(|id| (id, points::driver_position(points::DEFAULT_SEED, id))),
    );
    let batches = (0..BATCHES)
        .map(|i| {
            let center = points::point(points::DEFAULT_SEED, Stream::Queries, i);
            index
                .nearest_within(center, f64::INFINITY)
                .take(BATCH)
                .map(|(id, _)| id)
                .collect()
        })
        .collect();
    Setup {
        runtime,
        db,
        link,
        batches,
    }
}

/// Deletes every key under [`PREFIX`], left by an earlier run.
async fn delete_prefix(link: &RedisLink) {
    let mut connection = link.connection();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{PREFIX}:*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

/// Counts the hits and misses of the cache it wraps.
#[derive(Debug)]
struct CountingCache {
    inner: RedisProfileCache,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[async_trait]
impl ProfileCache for CountingCache {
    fn is_enabled(&self) -> bool {
        true
    }

    async fn get(&self, profile: Profile, ids: &[i64]) -> Lookup {
        let lookup = self.inner.get(profile, ids).await;
        let Lookup::Values(values) = &lookup else {
            panic!("Redis failed during the benchmark: {lookup:?}");
        };
        let hits = values.iter().filter(|value| value.is_some()).count() as u64;
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses
            .fetch_add(values.len() as u64 - hits, Ordering::Relaxed);
        lookup
    }

    async fn put(&self, profile: Profile, entries: &[(i64, String)]) {
        self.inner.put(profile, entries).await;
    }

    async fn invalidate(&self, keys: &[ProfileKey]) {
        self.inner.invalidate(keys).await;
    }
}

async fn load(loader: &DriverLoader, ids: &[i64]) -> HashMap<i64, entity::driver::Model> {
    let rows = loader.load(ids).await.expect("drivers load");
    assert_eq!(rows.len(), ids.len(), "a seeded driver is missing");
    rows
}

/// Prints the hit ratio of the first 10,000 batches after the cache starts empty, over
/// windows of batches. The run is shorter than the TTL, so no row expires during it.
fn hit_ratio(setup: &Setup) {
    let cache = Arc::new(CountingCache {
        inner: RedisProfileCache::new(setup.link.clone(), TTL_SECONDS),
        hits: AtomicU64::new(0),
        misses: AtomicU64::new(0),
    });
    let loader = DriverLoader::new(setup.db.clone(), cache.clone());
    setup.runtime.block_on(async {
        delete_prefix(&setup.link).await;
        let mut start = 0;
        println!("profile_cache/hit_ratio: batches of {BATCH} of {DRIVERS} drivers, cache empty at batch 0");
        for end in [100, 1_000, 10_000] {
            let (hits_before, misses_before) = (
                cache.hits.load(Ordering::Relaxed),
                cache.misses.load(Ordering::Relaxed),
            );
            let mut full_hit_batches = 0;
            for batch in &setup.batches[start..end] {
                let misses = cache.misses.load(Ordering::Relaxed);
                load(&loader, batch).await;
                if cache.misses.load(Ordering::Relaxed) == misses {
                    full_hit_batches += 1;
                }
            }
            let hits = cache.hits.load(Ordering::Relaxed) - hits_before;
            let misses = cache.misses.load(Ordering::Relaxed) - misses_before;
            println!(
                "  batches {start}..{end}: {:.1} % of rows hit, {:.1} % of batches all hit",
                100.0 * hits as f64 / (hits + misses) as f64,
                100.0 * f64::from(full_hit_batches) / (end - start) as f64,
            );
            start = end;
        }
    });
}

/// Rows of a batch that the cache lacks when the batch is loaded.
#[derive(Clone, Copy)]
enum Missing {
    None,
    One,
    All,
}

/// Times `iters` sequential batch loads, deleting the `missing` keys of each batch before
/// its timed load.
async fn time_sequential(
    loader: &DriverLoader,
    cache: &SharedProfileCache,
    batches: &[Vec<i64>],
    next: &Cell<usize>,
    missing: Missing,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let i = next.get();
        next.set(i + 1);
        let batch = &batches[i % batches.len()];
        let keys: Vec<ProfileKey> = match missing {
            Missing::None => Vec::new(),
            Missing::One => vec![ProfileKey::driver(batch[i % BATCH])],
            Missing::All => batch.iter().map(|&id| ProfileKey::driver(id)).collect(),
        };
        cache.invalidate(&keys).await;
        let started = Instant::now();
        black_box(load(loader, batch).await);
        total += started.elapsed();
    }
    total
}

fn sequential(c: &mut Criterion, setup: &Setup) {
    let redis: SharedProfileCache =
        Arc::new(RedisProfileCache::new(setup.link.clone(), TTL_SECONDS));
    let none: SharedProfileCache = Arc::new(NoProfileCache);
    let uncached = DriverLoader::new(setup.db.clone(), none.clone());
    let cached = DriverLoader::new(setup.db.clone(), redis.clone());
    // Every row cached, for the runs that start warm.
    setup.runtime.block_on(async {
        for chunk in (1..=DRIVERS).collect::<Vec<_>>().chunks(500) {
            load(&cached, chunk).await;
        }
    });

    let mut group = c.benchmark_group("profile_cache/load_25_drivers");
    let cases: [(&str, &DriverLoader, &SharedProfileCache, Missing); 4] = [
        ("postgres", &uncached, &none, Missing::None),
        ("redis_all_hit", &cached, &redis, Missing::None),
        ("redis_one_miss", &cached, &redis, Missing::One),
        ("redis_all_miss", &cached, &redis, Missing::All),
    ];
    for (name, loader, cache, missing) in cases {
        let next = Cell::new(0);
        group.bench_function(name, |b| {
            b.to_async(&setup.runtime).iter_custom(|iters| {
                let batches = &setup.batches;
                let next = &next;
                async move { time_sequential(loader, cache, batches, next, missing, iters).await }
            })
        });
    }
    group.finish();
}

/// Times loads of [`CONCURRENCY`] batches at once, as under load. Each iteration is one
/// round of them, so the time per iteration divided by 16 is the cost per batch.
fn concurrent(c: &mut Criterion, setup: &Setup) {
    let redis: SharedProfileCache =
        Arc::new(RedisProfileCache::new(setup.link.clone(), TTL_SECONDS));
    let uncached = DriverLoader::new(setup.db.clone(), Arc::new(NoProfileCache));
    let cached = DriverLoader::new(setup.db.clone(), redis);
    let mut group = c.benchmark_group("profile_cache/load_25_drivers_x16");
    for (name, loader) in [("postgres", &uncached), ("redis_all_hit", &cached)] {
        let mut next = 0_usize;
        group.bench_function(name, |b| {
            b.to_async(&setup.runtime).iter(|| {
                let first = next;
                next += CONCURRENCY;
                let batches = &setup.batches;
                async move {
                    let loads = (first..first + CONCURRENCY)
                        .map(|i| load(loader, &batches[i % batches.len()]));
                    black_box(join_all(loads).await)
                }
            })
        });
    }
    group.finish();
}

fn profile_cache(c: &mut Criterion) {
    let setup = setup();
    hit_ratio(&setup);
    sequential(c, &setup);
    concurrent(c, &setup);
}

criterion_group!(benches, profile_cache);
criterion_main!(benches);
