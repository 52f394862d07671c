//! Several instances on one PostgreSQL database and one Redis, as behind a load balancer: a
//! change sent to one instance is matched and pushed by the other, the database picks one
//! winner of competing calls, a restarted instance rebuilds, and a Redis outage loses nothing
//! and heals without a restart.
//!
//! These tests need PostgreSQL and Redis (`MOBILITY_TEST_REDIS_URL`, default
//! 127.0.0.1:6379); the outage test starts its own `redis-server` on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Backend, Protocol, TestApp, eventually, test_redis_url, time_from_now, unique_redis_prefix,
};

/// A pickup point in Porto and a driver position 300 m north of it.
const PICKUP: (f64, f64) = (41.1579, -8.6291);
const DRIVER_AT: (f64, f64) = (41.1606, -8.6291);

const NEARBY: &str = "query($n: LatLngInput!) { nearbyDrivers(near: $n, radiusMeters: 5000) \
    { drivers { driver { id } location { lat lng } } } }";

const NEARBY_REQUESTS: &str =
    "query($d: ID!) { nearbyTripRequests(driverId: $d, radiusMeters: 5000) { trip { id } } }";

const DRIVER_LOCATION: &str = "subscription($d: ID!) { driverLocation(driverId: $d) \
    { driverId location { lat lng } } }";

const TRIP_UPDATED: &str = "subscription($t: ID!) { tripUpdated(tripId: $t) \
    { trip { id status driver { id } } event { kind } } }";

const LIVE_TRIPS: &str = "subscription { liveTrips { trip { id status } event { kind } } }";

const ACCEPT: &str = "mutation($t: ID!, $d: ID!) { acceptTrip(tripId: $t, driverId: $d) { id status driver { id } } }";

/// Starts instance A on a fresh PostgreSQL database and instance B beside it, both on the
/// Redis at `redis_url` under one fresh prefix, and waits until both are ready.
async fn pair(redis_url: &str) -> (TestApp, TestApp) {
    pair_with(redis_url, |_| {}).await
}

/// Like [`pair`], with `adjust` applied to both instances' settings.
async fn pair_with(
    redis_url: &str,
    adjust: impl Fn(&mut mobility::config::ServeConfig),
) -> (TestApp, TestApp) {
    let prefix = unique_redis_prefix();
    let configure = |config: &mut mobility::config::ServeConfig| {
        config.redis_url = Some(redis_url.to_owned());
        config.redis_prefix = prefix.clone();
        adjust(config);
    };
    let a = TestApp::spawn_with(Backend::Postgres, configure).await;
    let b = a.sibling(configure).await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    (a, b)
}

/// `/readyz` of an app: status code and body.
async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = reqwest::get(app.url("/readyz")).await.expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Waits until `/readyz` reports the database, Redis and the events channel all working.
async fn wait_ready(app: &TestApp) {
    eventually("the instance to be ready", || async {
        let (status, body) = readyz(app).await;
        (status == 200 && body["status"] == "ready").then_some(())
    })
    .await;
}

/// Ids of the drivers `nearbyDrivers` returns at the pickup, with their positions.
async fn nearby(app: &TestApp) -> Vec<(String, f64)> {
    let data = app
        .ok(NEARBY, json!({ "n": { "lat": PICKUP.0, "lng": PICKUP.1 } }))
        .await;
    data["nearbyDrivers"]["drivers"]
        .as_array()
        .expect("drivers is a list")
        .iter()
        .map(|row| {
            (
                row["driver"]["id"].as_str().unwrap().to_owned(),
                row["location"]["lat"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Waits until `app` matches `driver` at latitude `lat`.
async fn wait_matched_at(app: &TestApp, driver: &str, lat: f64) {
    eventually(
        &format!("driver {driver} matched at latitude {lat}"),
        || async {
            nearby(app)
                .await
                .iter()
                .any(|(id, at)| id == driver && (at - lat).abs() < 1e-9)
                .then_some(())
        },
    )
    .await;
}

async fn wait_unmatched(app: &TestApp, driver: &str) {
    eventually(&format!("driver {driver} no longer matched"), || async {
        (!nearby(app).await.iter().any(|(id, _)| id == driver)).then_some(())
    })
    .await;
}

/// Trip ids `nearbyTripRequests` shows `driver`.
async fn open_requests(app: &TestApp, driver: &str) -> Vec<String> {
    let data = app.ok(NEARBY_REQUESTS, json!({ "d": driver })).await;
    data["nearbyTripRequests"]
        .as_array()
        .expect("nearbyTripRequests is a list")
        .iter()
        .map(|row| row["trip"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_request_shown(app: &TestApp, driver: &str, trip: &str, shown: bool) {
    let what = format!("trip {trip} shown to driver {driver}: {shown}");
    eventually(&what, || async {
        (open_requests(app, driver).await.iter().any(|id| id == trip) == shown).then_some(())
    })
    .await;
}

/// Builds a fix at `lat` on the driver's meridian, timed now. Tests move drivers by at most 0.0005°
/// (55 m), within the default jump tolerance of 100 m.
fn fix_at(lat: f64) -> Value {
    json!({ "lat": lat, "lng": DRIVER_AT.1, "recordedAt": time_from_now(0) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fix_sent_to_one_instance_is_matched_and_pushed_by_the_other() {
    let redis = test_redis_url().await;
    let (a, b) = pair(&redis).await;

    // Registered and put online through A only.
    let driver = a.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    wait_matched_at(&b, &driver, DRIVER_AT.0).await;

    let mut subscriptions = Vec::new();
    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        subscriptions.push(
            b.subscribe(protocol, DRIVER_LOCATION, json!({ "d": driver }))
                .await,
        );
    }
    let moved = DRIVER_AT.0 + 0.0003;
    let body = a.update_location(&driver, fix_at(moved)).await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );
    for subscription in &mut subscriptions {
        let data = subscription.next_data().await;
        assert_eq!(data["driverLocation"]["driverId"], driver.as_str());
        assert_eq!(data["driverLocation"]["location"]["lat"], moved);
    }
    wait_matched_at(&b, &driver, moved).await;

    a.ok(
        "mutation($d: ID!) { goOffline(driverId: $d) { id } }",
        json!({ "d": driver }),
    )
    .await;
    wait_unmatched(&b, &driver).await;

    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trip_changes_on_one_instance_reach_the_other() {
    let redis = test_redis_url().await;
    let (a, b) = pair(&redis).await;
    let rider = a.rider().await;
    let driver = a.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    wait_matched_at(&b, &driver, DRIVER_AT.0).await;

    let mut dashboard = b
        .subscribe(Protocol::TransportWs, LIVE_TRIPS, json!({}))
        .await;
    let trip = a.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let data = dashboard.next_data().await;
    assert_eq!(data["liveTrips"]["trip"]["id"], trip.as_str());
    assert_eq!(data["liveTrips"]["event"]["kind"], "REQUESTED");
    wait_request_shown(&b, &driver, &trip, true).await;

    // Accepted through B: A's subscriber gets it, and neither instance matches the busy
    // driver or shows the taken request.
    let mut follower = a
        .subscribe(Protocol::LegacyWs, TRIP_UPDATED, json!({ "t": trip }))
        .await;
    let body = b.driver_step("acceptTrip", &trip, &driver).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let data = follower.next_data().await;
    assert_eq!(data["tripUpdated"]["trip"]["status"], "ACCEPTED");
    assert_eq!(data["tripUpdated"]["trip"]["driver"]["id"], driver.as_str());
    wait_unmatched(&a, &driver).await;
    wait_request_shown(&a, &driver, &trip, false).await;

    // Finished through A: B matches the driver again.
    for step in ["arriveAtPickup", "startTrip", "completeTrip"] {
        let body = a.driver_step(step, &trip, &driver).await;
        assert!(body.get("errors").is_none(), "{step}: {body}");
    }
    wait_matched_at(&b, &driver, DRIVER_AT.0).await;
    assert_eq!(b.trip_status(&trip).await, "COMPLETED");

    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_accepts_on_two_instances_have_one_winner() {
    const ROUNDS: usize = 8;
    let redis = test_redis_url().await;
    let (a, b) = pair(&redis).await;
    let rider = a.rider().await;
    let first = a.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await;
    let second = b.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await;

    for round in 0..ROUNDS {
        let trip = a.request_trip(&rider, "CAB", PICKUP.0, PICKUP.1).await;
        let (on_a, on_b) = tokio::join!(
            a.gql(ACCEPT, json!({ "t": trip, "d": first })),
            b.gql(ACCEPT, json!({ "t": trip, "d": second })),
        );
        let won = |body: &Value| body["data"]["acceptTrip"]["status"] == "ACCEPTED";
        assert!(
            won(&on_a) != won(&on_b),
            "round {round}: exactly one accept must win: {on_a} {on_b}"
        );
        let (winner, loser, losing_body) = if won(&on_a) {
            (&first, &second, &on_b)
        } else {
            (&second, &first, &on_a)
        };
        let code = losing_body["errors"][0]["extensions"]["code"].as_str();
        assert!(
            matches!(code, Some("INVALID_TRANSITION" | "CONFLICT")),
            "round {round}: loser got {losing_body}"
        );
        for app in [&a, &b] {
            let record = app.trip_record(&trip).await;
            assert_eq!(record["status"], "ACCEPTED");
            assert_eq!(record["driver"]["id"], winner.as_str());
            let accepted = record["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "ACCEPTED")
                .count();
            assert_eq!(accepted, 1, "round {round}: one ACCEPTED event: {record}");
        }
        // Both instances agree the winner is busy and the loser free.
        for app in [&a, &b] {
            wait_unmatched(app, winner).await;
            wait_matched_at(app, loser, DRIVER_AT.0).await;
        }
        let body = b.cancel_trip(&trip, "RIDER", &rider, "next round").await;
        assert_eq!(body["data"]["cancelTrip"]["status"], "CANCELLED", "{body}");
        for app in [&a, &b] {
            wait_matched_at(app, winner, DRIVER_AT.0).await;
        }
    }

    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offer_expires_once_with_two_sweepers() {
    let redis = test_redis_url().await;
    // Both instances sweep every 50 ms, so both see the offer fall due.
    let (a, b) = pair_with(&redis, |config| {
        config.offer_ttl_seconds = 1;
        config.offer_sweep_ms = 50;
    })
    .await;
    let rider = a.rider().await;
    let driver = a.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = a.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let mut follower = b
        .subscribe(Protocol::TransportWs, TRIP_UPDATED, json!({ "t": trip }))
        .await;
    let offer = a.offer_trip(&trip, &driver).await;
    assert!(offer.get("errors").is_none(), "{offer}");

    let data = follower.next_data().await;
    assert_eq!(data["tripUpdated"]["event"]["kind"], "OFFERED");
    let data = follower.next_data().await;
    assert_eq!(data["tripUpdated"]["event"]["kind"], "OFFER_EXPIRED");
    let record = b.trip_record(&trip).await;
    let expired = record["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "OFFER_EXPIRED")
        .count();
    assert_eq!(expired, 1, "one expiry for two sweepers: {record}");
    assert_eq!(record["offers"][0]["status"], "EXPIRED");
    // The driver's declined-or-expired count went up once, on both instances.
    for app in [&a, &b] {
        let state = eventually("the expiry counted on both instances", || async {
            let state = app.driver_state(&driver).await;
            (state["offersRejected"] == 1).then_some(state)
        })
        .await;
        assert_eq!(state["offersAccepted"], 0);
    }

    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_instance_rebuilds_from_the_database() {
    let redis = test_redis_url().await;
    let (a, mut b) = pair(&redis).await;
    let rider = a.rider().await;
    let driver = a.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = a.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let moved = DRIVER_AT.0 + 0.0005;
    a.update_location(&driver, fix_at(moved)).await;

    // A prefix of its own cuts B off from A's events: its state after the restart comes
    // from the database.
    let prefix = unique_redis_prefix();
    b.restart(|config| {
        config.redis_url = Some(redis);
        config.redis_prefix = prefix;
    })
    .await;
    let matched = nearby(&b).await;
    assert!(
        matched
            .iter()
            .any(|(id, lat)| *id == driver && (lat - moved).abs() < 1e-9),
        "restarted instance matches the driver at its last fix: {matched:?}"
    );
    assert!(open_requests(&b, &driver).await.contains(&trip));

    b.stop().await;
    a.stop().await;
}

/// A `redis-server` of this test's own on a free loopback port, stopped on drop.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut redis = OwnRedis { port, child: None };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server on the same port and waits until it accepts connections.
    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (Debian package redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_loses_nothing_and_heals_without_restart() {
    let mut redis = OwnRedis::start();
    let (a, b) = pair(&redis.url()).await;
    let rider = a.rider().await;
    let driver = a.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    wait_matched_at(&b, &driver, DRIVER_AT.0).await;

    redis.kill();
    for app in [&a, &b] {
        // Degraded, not unready: the instance keeps serving from the database.
        let (status, body) = eventually("readiness to report Redis down", || async {
            let (status, body) = readyz(app).await;
            (body["status"] == "degraded").then_some((status, body))
        })
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["database"], "ok", "{body}");
        assert_eq!(body["redis"], "unreachable", "{body}");
    }

    // Writes keep working on the database while Redis is down.
    let trip = a.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let moved = DRIVER_AT.0 + 0.0003;
    let body = a.update_location(&driver, fix_at(moved)).await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );
    wait_matched_at(&a, &driver, moved).await;

    redis.resume();
    wait_ready(&a).await;
    wait_ready(&b).await;
    // B missed those events and reloaded them from the database.
    wait_request_shown(&b, &driver, &trip, true).await;
    wait_matched_at(&b, &driver, moved).await;
    assert_eq!(b.trip_status(&trip).await, "REQUESTED");

    // And events flow again.
    let mut subscription = b
        .subscribe(
            Protocol::TransportWs,
            DRIVER_LOCATION,
            json!({ "d": driver }),
        )
        .await;
    let again = moved + 0.0003;
    a.update_location(&driver, fix_at(again)).await;
    let data = subscription.next_data().await;
    assert_eq!(data["driverLocation"]["location"]["lat"], again);

    let metrics = reqwest::get(a.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    for name in [
        "mobility_redis_errors_total",
        "mobility_cluster_resyncs_total",
        "mobility_cluster_messages_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    b.stop().await;
    a.stop().await;
}
