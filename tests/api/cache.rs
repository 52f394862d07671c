//! The profile cache in Redis, seen over HTTP. A second read of a driver comes from Redis. A
//! write that changes a cached row deletes its key, so the change shows at once. With Redis
//! unreachable, every read still succeeds from PostgreSQL.
//!
//! These tests need PostgreSQL and Redis (`MOBILITY_TEST_REDIS_URL`, default 127.0.0.1:6379).
//! Each server uses its own key prefix, so parallel tests do not share keys.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually, test_redis_url, unique_redis_prefix};

/// TTL of the cached rows in these tests, in seconds.
const TTL_SECONDS: u32 = 120;

const PICKUP: (f64, f64) = (-1.9441, 30.0619);

const NEARBY_PROFILES: &str = "query($n: LatLngInput!) { nearbyDrivers(near: $n, \
    radiusMeters: 5000) { drivers { driver { id name vehicle { plate } } } } }";

const TRIP_PROFILES: &str = "query($t: ID!) { trip(id: $t) { \
    rider { id rating { count average } } driver { id name offersAccepted } } }";

const RATE: &str = "mutation($t: ID!, $by: ActorInput!, $s: Int!) { \
    rateTrip(tripId: $t, by: $by, stars: $s) { stars } }";

/// Starts a server with the profile cache on, under a fresh prefix of the Redis at
/// `redis_url`, and returns the app and the prefix.
async fn cached_app(redis_url: &str) -> (TestApp, String) {
    let prefix = unique_redis_prefix();
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        config.redis_url = Some(redis_url.to_owned());
        config.redis_prefix = prefix.clone();
        config.cache_ttl_seconds = TTL_SECONDS;
        config.profile_cache = true;
    })
    .await;
    (app, prefix)
}

async fn redis(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"))
}

/// Reads the cached JSON of `kind` (`driver`, `rider` or `vehicle`) `id`, if any.
async fn cached(
    redis: &mut MultiplexedConnection,
    prefix: &str,
    kind: &str,
    id: &str,
) -> Option<Value> {
    let text: Option<String> = redis
        .get(format!("{prefix}:{kind}:{id}"))
        .await
        .expect("Redis GET");
    text.map(|t| serde_json::from_str(&t).expect("cached value is JSON"))
}

/// Waits until Redis has a cached `kind` `id`, which the loader writes back from a background
/// task, and returns its JSON.
async fn cached_soon(redis: &MultiplexedConnection, prefix: &str, kind: &str, id: &str) -> Value {
    let key = format!("{prefix}:{kind}:{id} in Redis");
    eventually(&key, || {
        let mut redis = redis.clone();
        let (prefix, kind, id) = (prefix.to_owned(), kind.to_owned(), id.to_owned());
        async move { cached(&mut redis, &prefix, &kind, &id).await }
    })
    .await
}

/// Names and plates of the drivers `nearbyDrivers` returns at the pickup, by driver id.
async fn nearby_profiles(app: &TestApp) -> Vec<(String, String, String)> {
    let data = app
        .ok(
            NEARBY_PROFILES,
            json!({ "n": { "lat": PICKUP.0, "lng": PICKUP.1 } }),
        )
        .await;
    data["nearbyDrivers"]["drivers"]
        .as_array()
        .expect("drivers is a list")
        .iter()
        .map(|row| {
            let driver = &row["driver"];
            (
                driver["id"].as_str().unwrap().to_owned(),
                driver["name"].as_str().unwrap().to_owned(),
                driver["vehicle"]["plate"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Value of the first sample of `series` on `/metrics`, such as `name{label="x"}`.
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let page = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_read_hits_cache() {
    let url = test_redis_url().await;
    let mut redis = redis(&url).await;
    let (app, prefix) = cached_app(&url).await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;

    let first = nearby_profiles(&app).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let (id, name, plate) = first[0].clone();
    assert_eq!(id, driver);

    let row = cached_soon(&redis, &prefix, "driver", &driver).await;
    assert_eq!(row["name"], name.as_str());
    let vehicle_id = row["vehicle_id"].to_string();
    let vehicle = cached_soon(&redis, &prefix, "vehicle", &vehicle_id).await;
    assert_eq!(vehicle["plate"], plate.as_str());
    let ttl: i64 = redis
        .ttl(format!("{prefix}:driver:{driver}"))
        .await
        .expect("Redis TTL");
    assert!(
        (1..=i64::from(TTL_SECONDS)).contains(&ttl),
        "TTL of the cached driver is {ttl}"
    );

    // Change the cached copy only: a second read that shows the change came from Redis.
    let mut edited = row.clone();
    edited["name"] = "Name only in the cache".into();
    let _: () = redis
        .set(format!("{prefix}:driver:{driver}"), edited.to_string())
        .await
        .expect("Redis SET");
    let second = nearby_profiles(&app).await;
    assert_eq!(second[0].1, "Name only in the cache");
    assert_eq!(second[0].2, plate);

    let hits = metric(
        &app,
        "mobility_cache_requests_total{cache=\"driver\",result=\"hit\"}",
    )
    .await;
    assert!(hits.unwrap_or(0.0) >= 1.0, "driver hits: {hits:?}");
    let misses = metric(
        &app,
        "mobility_cache_requests_total{cache=\"vehicle\",result=\"miss\"}",
    )
    .await;
    assert!(misses.unwrap_or(0.0) >= 1.0, "vehicle misses: {misses:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_invalidate_cached_rows() {
    let url = test_redis_url().await;
    let mut redis = redis(&url).await;
    let (app, prefix) = cached_app(&url).await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;

    // The offer's driver field loads the driver through the cache.
    let offer = app.offer_trip(&trip, &driver).await;
    assert!(offer.get("errors").is_none(), "{offer}");
    cached_soon(&redis, &prefix, "driver", &driver).await;

    // Accepting the offer adds to the driver's accepted offers.
    let accepted = app.driver_step("acceptTrip", &trip, &driver).await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    assert!(
        cached(&mut redis, &prefix, "driver", &driver)
            .await
            .is_none(),
        "accepting an offer invalidates the driver"
    );
    for step in ["arriveAtPickup", "startTrip", "completeTrip"] {
        let body = app.driver_step(step, &trip, &driver).await;
        assert!(body.get("errors").is_none(), "{step}: {body}");
    }

    let before = app.ok(TRIP_PROFILES, json!({ "t": trip })).await;
    assert_eq!(before["trip"]["rider"]["rating"]["count"], 0);
    assert_eq!(before["trip"]["driver"]["offersAccepted"], 1);
    let cached_rider = cached_soon(&redis, &prefix, "rider", &rider).await;
    assert_eq!(cached_rider["rating_count"], 0);
    cached_soon(&redis, &prefix, "driver", &driver).await;

    // The driver rates the rider: the rider row changes, and the next read shows it.
    app.ok(
        RATE,
        json!({ "t": trip, "by": { "role": "DRIVER", "id": driver }, "s": 4 }),
    )
    .await;
    assert!(
        cached(&mut redis, &prefix, "rider", &rider).await.is_none(),
        "a rating of the rider invalidates the rider"
    );
    let after = app.ok(TRIP_PROFILES, json!({ "t": trip })).await;
    assert_eq!(after["trip"]["rider"]["rating"]["count"], 1);
    assert_eq!(after["trip"]["rider"]["rating"]["average"], 4.0);
    let cached_rider = cached_soon(&redis, &prefix, "rider", &rider).await;
    assert_eq!(cached_rider["rating_count"], 1);

    // The rider rates the driver: the driver row changes.
    app.ok(
        RATE,
        json!({ "t": trip, "by": { "role": "RIDER", "id": rider }, "s": 5 }),
    )
    .await;
    assert!(
        cached(&mut redis, &prefix, "driver", &driver)
            .await
            .is_none(),
        "a rating of the driver invalidates the driver"
    );
    app.ok(TRIP_PROFILES, json!({ "t": trip })).await;
    let cached_driver = cached_soon(&redis, &prefix, "driver", &driver).await;
    assert_eq!(cached_driver["rating_count"], 1);
    assert_eq!(cached_driver["rating_sum"], 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_redis_reads_succeed() {
    // A port that was free a moment ago: connections to it are refused.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{closed_port}");
    let (app, _prefix) = cached_app(&url).await;
    let driver = app.online_driver("CAB", PICKUP.0, PICKUP.1).await;
    let rider = app.rider().await;

    for _ in 0..2 {
        let drivers = nearby_profiles(&app).await;
        assert_eq!(drivers.len(), 1, "{drivers:?}");
        assert_eq!(drivers[0].0, driver);
        assert!(drivers[0].2.starts_with("RAD"), "{drivers:?}");
    }
    let trip = app.request_trip(&rider, "CAB", PICKUP.0, PICKUP.1).await;
    let accepted = app.driver_step("acceptTrip", &trip, &driver).await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    let data = app.ok(TRIP_PROFILES, json!({ "t": trip })).await;
    assert_eq!(data["trip"]["rider"]["id"], rider.as_str());
    assert_eq!(data["trip"]["driver"]["id"], driver.as_str());

    let errors = metric(&app, "mobility_redis_errors_total{operation=\"cache\"}").await;
    assert!(errors.unwrap_or(0.0) >= 1.0, "cache errors: {errors:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_off_writes_no_keys() {
    let url = test_redis_url().await;
    let mut redis = redis(&url).await;
    let prefix = unique_redis_prefix();
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        config.redis_url = Some(url.clone());
        config.redis_prefix = prefix.clone();
        config.profile_cache = false;
    })
    .await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;

    for _ in 0..2 {
        let drivers = nearby_profiles(&app).await;
        assert_eq!(drivers.len(), 1, "{drivers:?}");
        assert_eq!(drivers[0].0, driver);
    }
    // Give a write-back, which would run in a background task, time to land.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        cached(&mut redis, &prefix, "driver", &driver)
            .await
            .is_none(),
        "MOBILITY_PROFILE_CACHE=false cached the driver"
    );
    app.stop().await;
}
