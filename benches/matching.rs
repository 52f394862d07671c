//! Micro-benchmarks of the matching hot path: the spatial index at 10k, 100k and 1M drivers,
//! moving a driver, ranking a candidate list, and a whole `nearbyDrivers` executed through the
//! GraphQL schema in process.
//!
//! Run with `cargo bench --bench matching`; BENCHMARKS.md records the results. Drivers are
//! spread uniformly over the bounding box of the Porto taxi data (lat 41.008 to 41.320,
//! lng -8.718 to -8.468, about 26 km by 35 km), from a fixed seed.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use entity::enums::VehicleType;
use mobility::auth::{Principal, Role};
use mobility::geometry::LatLng;
use mobility::matching::{EtaModel, MatchConfig, Matcher, NearbyQuery, OpenRequests};
use mobility::ranking::{CandidateFeatures, RankingConfig, score};
use mobility::spatial::SpatialIndex;
use mobility::tracking::{Fix, LiveDriver, LiveDrivers};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const MIN: LatLng = LatLng {
    lat: 41.008,
    lng: -8.718,
};
const MAX: LatLng = LatLng {
    lat: 41.320,
    lng: -8.468,
};

/// xorshift64*: deterministic points without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn point(&mut self) -> LatLng {
        LatLng {
            lat: MIN.lat + (MAX.lat - MIN.lat) * self.next_f64(),
            lng: MIN.lng + (MAX.lng - MIN.lng) * self.next_f64(),
        }
    }
}

/// An index of `n` drivers and the position of each, by id.
fn index_of(n: usize) -> (SpatialIndex<i64>, Vec<LatLng>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let positions: Vec<LatLng> = (0..n).map(|_| rng.point()).collect();
    let index =
        SpatialIndex::bulk_load(positions.iter().enumerate().map(|(id, p)| (id as i64, *p)));
    (index, positions)
}

fn spatial(c: &mut Criterion) {
    let mut group = c.benchmark_group("spatial");
    for n in SIZES {
        let (mut index, mut positions) = index_of(n);
        let mut rng = Rng(42);
        group.bench_with_input(BenchmarkId::new("knn10_within_1km", n), &n, |b, _| {
            b.iter(|| {
                let center = rng.point();
                let found: Vec<_> = index.nearest_within(center, 1_000.0).take(10).collect();
                black_box(found)
            })
        });
        group.bench_with_input(BenchmarkId::new("all_within_1km", n), &n, |b, _| {
            b.iter(|| black_box(index.nearest_within(rng.point(), 1_000.0).count()))
        });
        group.bench_with_input(BenchmarkId::new("move_driver", n), &n, |b, _| {
            let mut id = 0_usize;
            b.iter(|| {
                id = (id + 7_919) % n;
                let to = rng.point();
                index.relocate(id as i64, positions[id], to);
                positions[id] = to;
            })
        });
    }
    group.finish();
}

fn ranking(c: &mut Criterion) {
    let config = RankingConfig::default();
    let mut rng = Rng(7);
    let candidates: Vec<CandidateFeatures> = (0..50)
        .map(|_| CandidateFeatures {
            distance_m: 5_000.0 * rng.next_f64(),
            eta_s: 900.0 * rng.next_f64(),
            location_age_s: 120.0 * rng.next_f64(),
            max_location_age_s: 120.0,
            rating_sum: (rng.next_f64() * 500.0) as i64,
            rating_count: 100,
            offers_accepted: (rng.next_f64() * 50.0) as i64,
            offers_rejected: (rng.next_f64() * 50.0) as i64,
            idle_s: 3_600.0 * rng.next_f64(),
        })
        .collect();
    c.bench_function("ranking/score_50_candidates", |b| {
        b.iter(|| {
            let mut totals: Vec<f64> = candidates.iter().map(|f| score(f, &config).total).collect();
            totals.sort_by(|a, b| b.total_cmp(a));
            black_box(totals)
        })
    });
}

fn live_drivers(n: usize) -> LiveDrivers {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let now = Utc::now();
    LiveDrivers::from_drivers((0..n as i64).map(|id| {
        let mut driver = LiveDriver::new(id + 1, VehicleType::Cab);
        driver.online = true;
        driver.available_since = Some(now - TimeDelta::minutes(10));
        driver.fix = Some(Fix {
            position: rng.point(),
            heading_deg: None,
            speed_mps: None,
            accuracy_m: None,
            // Far enough in the future that no fix goes stale during the run.
            recorded_at: now + TimeDelta::seconds(20),
        });
        driver
    }))
}

fn match_config() -> MatchConfig {
    MatchConfig {
        ladder_m: vec![5_000.0, 15_000.0],
        max_radius_m: 50_000.0,
        default_limit: 10,
        max_limit: 25,
        candidate_pool: 50,
        stale_after_s: 120,
        scheduled_lead_s: 1_800,
        service_area: None,
        eta: EtaModel {
            detour_factor: 1.3,
            moto_speed_mps: 8.3,
            cab_speed_mps: 6.9,
        },
        ranking: RankingConfig::default(),
    }
}

fn nearby(c: &mut Criterion) {
    let mut group = c.benchmark_group("nearby_drivers");
    for n in SIZES {
        let matcher = Matcher::new(
            Arc::new(live_drivers(n)),
            Arc::new(OpenRequests::default()),
            match_config(),
        );
        let mut rng = Rng(99);
        group.bench_with_input(BenchmarkId::new("matcher_1km_limit10", n), &n, |b, _| {
            b.iter(|| {
                let p = rng.point();
                let query = NearbyQuery {
                    lat: p.lat,
                    lng: p.lng,
                    radius_m: Some(1_000.0),
                    vehicle_types: None,
                    limit: Some(10),
                    max_location_age_s: None,
                    widen: false,
                };
                black_box(matcher.nearby_drivers(&query, Utc::now()).unwrap())
            })
        });
    }
    group.finish();
}

/// `nearbyDrivers` through the real schema and services on a SQLite file, with the live
/// registry filled in memory; the query selects no field that reads the database.
fn nearby_schema(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let services = runtime
        .block_on(mobility::app::Services::build(
            &mobility::config::ServeConfig::with_database(url),
        ))
        .unwrap();
    let mut group = c.benchmark_group("schema");
    for n in [100_000_usize] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let now = Utc::now();
        for id in 0..n as i64 {
            let mut driver = LiveDriver::new(id + 1, VehicleType::Cab);
            driver.online = true;
            driver.fix = Some(Fix {
                position: rng.point(),
                heading_deg: None,
                speed_mps: None,
                accuracy_m: None,
                recorded_at: now + TimeDelta::seconds(20),
            });
            services.tracking.live().insert(driver);
        }
        let schema = mobility::schema::build(services.clone());
        let mut rng = Rng(5);
        group.bench_with_input(
            BenchmarkId::new("nearbyDrivers_1km_limit10", n),
            &n,
            |b, _| {
                b.to_async(&runtime).iter(|| {
                let p = rng.point();
                let query = format!(
                    "{{ nearbyDrivers(near: {{lat: {}, lng: {}}}, radiusMeters: 1000, limit: 10, \
                     widen: false) {{ drivers {{ driverId distanceMeters etaSeconds score }} }} }}",
                    p.lat, p.lng
                );
                let schema = schema.clone();
                // The caller the HTTP layer would have authenticated from a bearer token.
                let request = async_graphql::Request::new(query).data(Principal {
                    token_id: 1,
                    name: "bench".into(),
                    role: Role::Admin,
                    subject_id: None,
                });
                async move {
                    let response = schema.execute(request).await;
                    assert!(response.errors.is_empty(), "{:?}", response.errors);
                    black_box(response)
                }
            })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, spatial, ranking, nearby, nearby_schema);
criterion_main!(benches);
