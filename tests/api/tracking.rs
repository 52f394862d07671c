//! Presence and location updates over the API. Covers `goOnline` and `goOffline`, the verdicts
//! of `updateDriverLocation` (ACCEPTED, STALE, IMPOSSIBLE_JUMP) and their effect on the stored
//! position, and the per-row results of `updateDriverLocations`. Also checks the range of each
//! fix field and the rebuild of positions and presence after a restart, and that concurrent
//! updates, which the server commits in shared transactions, are each stored.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, time_from_now};

crate::on_both_backends!(
    presence_toggles,
    update_verdicts,
    update_needs_online,
    batch_rows,
    batch_size,
    fix_field_limits,
    restart_rebuilds,
    concurrent_updates_stored,
);

/// A point in Porto.
const HOME: (f64, f64) = (41.1579, -8.6291);

const PRESENCE: &str = "query($d: ID!) { driver(id: $d) { presence { online location { lat lng } \
    recordedAt locationAgeSeconds fresh activeTripId availableSince } } }";

const BATCH: &str = "mutation($u: [DriverLocationUpdateInput!]!) \
    { updateDriverLocations(updates: $u) \
    { driverId status message errorCode latestRecordedAt } }";

async fn presence(app: &TestApp, driver: &str) -> Value {
    app.ok(PRESENCE, json!({ "d": driver })).await["driver"]["presence"].clone()
}

async fn go_online(app: &TestApp, driver: &str, location: Option<Value>) -> Value {
    app.gql(
        "mutation($d: ID!, $l: LocationInput) { goOnline(driverId: $d, location: $l) \
         { presence { online location { lat lng } } } }",
        json!({ "d": driver, "l": location }),
    )
    .await
}

async fn go_offline(app: &TestApp, driver: &str) -> Value {
    app.gql(
        "mutation($d: ID!) { goOffline(driverId: $d) { presence { online } } }",
        json!({ "d": driver }),
    )
    .await
}

fn fix(at: (f64, f64), recorded_at: &str) -> Value {
    json!({ "lat": at.0, "lng": at.1, "recordedAt": recorded_at })
}

fn parse_time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("invalid time {text}: {e}"))
        .to_utc()
}

fn location_of(presence: &Value) -> (f64, f64) {
    (
        presence["location"]["lat"].as_f64().expect("lat"),
        presence["location"]["lng"].as_f64().expect("lng"),
    )
}

/// Largest difference in degrees between a stored coordinate and the one sent. The server's
/// JSON parser (serde_json without `float_roundtrip`) may round a decimal to a neighbouring
/// `f64`, about 1e-14 degrees away; 1e-9 degrees is 0.1 mm.
const SAME_POSITION_DEG: f64 = 1e-9;

/// Checks that the presence's location is `expected`.
fn assert_at(presence: &Value, expected: (f64, f64), context: &str) {
    let (lat, lng) = location_of(presence);
    assert!(
        (lat - expected.0).abs() < SAME_POSITION_DEG
            && (lng - expected.1).abs() < SAME_POSITION_DEG,
        "{context}: expected {expected:?}, got {presence}"
    );
}

async fn nearby_ids(app: &TestApp) -> Vec<String> {
    let data = app
        .ok(
            "query($n: LatLngInput!) { nearbyDrivers(near: $n) { drivers { driver { id } } } }",
            json!({ "n": { "lat": HOME.0, "lng": HOME.1 } }),
        )
        .await;
    data["nearbyDrivers"]["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["driver"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn presence_toggles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.driver("MOTO").await;

    let state = presence(&app, &driver).await;
    assert_eq!(state["online"], false, "new driver starts offline: {state}");
    assert!(state["location"].is_null(), "{state}");
    assert_eq!(state["fresh"], false, "{state}");

    let body = go_online(&app, &driver, None).await;
    assert_eq!(
        body["data"]["goOnline"]["presence"]["online"], true,
        "{body}"
    );
    let state = presence(&app, &driver).await;
    assert_eq!(state["online"], true, "{state}");
    assert!(state["location"].is_null(), "no fix yet: {state}");
    assert_eq!(state["fresh"], false, "no fix is not fresh: {state}");
    assert!(state["availableSince"].is_string(), "{state}");

    let body = go_online(&app, &driver, Some(json!({ "lat": HOME.0, "lng": HOME.1 }))).await;
    assert_eq!(
        body["data"]["goOnline"]["presence"]["location"],
        json!({ "lat": HOME.0, "lng": HOME.1 }),
        "{body}"
    );
    let state = presence(&app, &driver).await;
    assert_eq!(state["fresh"], true, "{state}");
    assert!(state["recordedAt"].is_string(), "{state}");
    assert_eq!(
        nearby_ids(&app).await,
        [driver.as_str()],
        "online is matched"
    );

    let body = go_offline(&app, &driver).await;
    assert_eq!(
        body["data"]["goOffline"]["presence"]["online"], false,
        "{body}"
    );
    let state = presence(&app, &driver).await;
    assert_eq!(state["online"], false, "{state}");
    assert_eq!(state["fresh"], false, "offline is never fresh: {state}");
    assert!(state["availableSince"].is_null(), "{state}");
    assert_at(&state, HOME, "the last position is kept");
    assert!(nearby_ids(&app).await.is_empty(), "offline is not matched");

    let body = go_online(&app, &driver, None).await;
    assert_eq!(
        body["data"]["goOnline"]["presence"]["online"], true,
        "{body}"
    );
    assert_eq!(nearby_ids(&app).await, [driver.as_str()], "back online");

    // A driver with an active trip cannot go offline.
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", HOME.0, HOME.1).await;
    let body = app.driver_step("acceptTrip", &trip, &driver).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let error = app
        .err(
            "mutation($d: ID!) { goOffline(driverId: $d) { id } }",
            json!({ "d": driver }),
            "CONFLICT",
        )
        .await;
    assert!(
        error["message"].as_str().unwrap().contains(&trip),
        "message names the trip: {error}"
    );
    let state = presence(&app, &driver).await;
    assert_eq!(state["online"], true, "still online: {state}");
    assert_eq!(state["activeTripId"], trip.as_str(), "{state}");

    for mutation in [
        "mutation($d: ID!) { goOnline(driverId: $d) { id } }",
        "mutation($d: ID!) { goOffline(driverId: $d) { id } }",
    ] {
        app.err(mutation, json!({ "d": "999999" }), "NOT_FOUND")
            .await;
        let error = app
            .err(mutation, json!({ "d": "abc" }), "BAD_USER_INPUT")
            .await;
        assert_eq!(error["extensions"]["field"], "driverId", "{error}");
    }
    app.stop().await;
}

async fn update_verdicts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.driver("CAB").await;
    go_online(&app, &driver, None).await;

    let t0 = time_from_now(-60);
    let body = app.update_location(&driver, fix(HOME, &t0)).await;
    let result = &body["data"]["updateDriverLocation"];
    assert_eq!(result["status"], "ACCEPTED", "{body}");
    assert!(result["message"].is_null(), "{body}");
    assert_eq!(
        parse_time(&result["latestRecordedAt"]),
        parse_time(&json!(t0)),
        "{body}"
    );
    let state = presence(&app, &driver).await;
    assert_at(&state, HOME, "position");

    // Older and equal device times are ignored.
    let moved = (HOME.0 + 0.001, HOME.1);
    for (case, recorded_at) in [("older", time_from_now(-70)), ("equal", t0.clone())] {
        let body = app.update_location(&driver, fix(moved, &recorded_at)).await;
        let result = &body["data"]["updateDriverLocation"];
        assert_eq!(result["status"], "STALE", "{case}: {body}");
        let message = result["message"].as_str().unwrap_or_default();
        assert!(message.contains("ignored"), "{case}: {body}");
        assert_eq!(
            parse_time(&result["latestRecordedAt"]),
            parse_time(&json!(t0)),
            "{case}: the kept fix time: {body}"
        );
        let state = presence(&app, &driver).await;
        assert_at(&state, HOME, &format!("{case}: unchanged"));
        assert_eq!(
            parse_time(&state["recordedAt"]),
            parse_time(&json!(t0)),
            "{case}: {state}"
        );
    }

    // About 5 km north in 10 s would be 500 m/s.
    let jump = (HOME.0 + 0.045, HOME.1);
    let body = app
        .update_location(&driver, fix(jump, &time_from_now(-50)))
        .await;
    let result = &body["data"]["updateDriverLocation"];
    assert_eq!(result["status"], "IMPOSSIBLE_JUMP", "{body}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(message.contains("ignored"), "{body}");
    let state = presence(&app, &driver).await;
    assert_at(&state, HOME, "jump not applied");
    assert_eq!(
        parse_time(&state["recordedAt"]),
        parse_time(&json!(t0)),
        "{state}"
    );

    // About 220 m in 20 s is 11 m/s, a car in town.
    let near = (HOME.0 + 0.002, HOME.1);
    let t1 = time_from_now(-40);
    let mut location = fix(near, &t1);
    location["headingDeg"] = json!(0.0);
    location["speedMps"] = json!(11.0);
    location["accuracyMeters"] = json!(8.0);
    let body = app.update_location(&driver, location).await;
    let result = &body["data"]["updateDriverLocation"];
    assert_eq!(result["status"], "ACCEPTED", "{body}");
    assert_eq!(
        parse_time(&result["latestRecordedAt"]),
        parse_time(&json!(t1)),
        "{body}"
    );
    let state = presence(&app, &driver).await;
    assert_at(&state, near, "move applied");
    assert_eq!(
        parse_time(&state["recordedAt"]),
        parse_time(&json!(t1)),
        "{state}"
    );
    let age = state["locationAgeSeconds"].as_f64().unwrap();
    assert!(age >= 40.0, "locationAgeSeconds {age} below the fix age");

    // Without recordedAt the server's time is used, which is newer than t1.
    let body = app
        .update_location(&driver, json!({ "lat": near.0, "lng": near.1 }))
        .await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );
    app.stop().await;
}

async fn update_needs_online(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let never_online = app.driver("MOTO").await;
    let body = app
        .update_location(&never_online, json!({ "lat": HOME.0, "lng": HOME.1 }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body}"
    );
    let state = presence(&app, &never_online).await;
    assert!(state["location"].is_null(), "nothing stored: {state}");

    let went_offline = app.online_driver("MOTO", HOME.0, HOME.1).await;
    go_offline(&app, &went_offline).await;
    let moved = (HOME.0 + 0.001, HOME.1);
    let body = app
        .update_location(&went_offline, json!({ "lat": moved.0, "lng": moved.1 }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body}"
    );
    let state = presence(&app, &went_offline).await;
    assert_at(&state, HOME, "nothing stored");

    let body = app
        .update_location("999999", json!({ "lat": HOME.0, "lng": HOME.1 }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body}"
    );
    let body = app
        .update_location("abc", json!({ "lat": HOME.0, "lng": HOME.1 }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "driverId",
        "{body}"
    );
    app.stop().await;
}

async fn batch_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.driver("MOTO").await;
    let second = app.driver("MOTO").await;
    let offline = app.driver("CAB").await;
    go_online(&app, &first, None).await;
    go_online(&app, &second, None).await;
    let t0 = time_from_now(-30);
    let body = app.update_location(&second, fix(HOME, &t0)).await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );

    let first_at = (HOME.0 + 0.001, HOME.1);
    let second_moved = (HOME.0 - 0.001, HOME.1);
    let rows = json!([
        { "driverId": first, "location": fix(first_at, &time_from_now(-10)) },
        { "driverId": second, "location": fix(second_moved, &time_from_now(-40)) },
        { "driverId": "999999", "location": fix(HOME, &time_from_now(-10)) },
        { "driverId": first, "location": { "lat": 95.0, "lng": HOME.1 } },
        { "driverId": "abc", "location": fix(HOME, &time_from_now(-10)) },
        { "driverId": offline, "location": fix(HOME, &time_from_now(-10)) },
        { "driverId": second, "location": fix(second_moved, &time_from_now(-5)) },
    ]);
    let data = app.ok(BATCH, json!({ "u": rows })).await;
    let results = data["updateDriverLocations"].as_array().unwrap();
    assert_eq!(results.len(), 7, "one result per row: {data}");
    let expected = [
        (first.as_str(), "ACCEPTED", None),
        (second.as_str(), "STALE", None),
        ("999999", "REJECTED", Some("NOT_FOUND")),
        (first.as_str(), "REJECTED", Some("BAD_USER_INPUT")),
        ("abc", "REJECTED", Some("BAD_USER_INPUT")),
        (offline.as_str(), "REJECTED", Some("CONFLICT")),
        (second.as_str(), "ACCEPTED", None),
    ];
    for (i, (result, (driver_id, status, code))) in results.iter().zip(expected).enumerate() {
        assert_eq!(result["driverId"], driver_id, "row {i}: {result}");
        assert_eq!(result["status"], status, "row {i}: {result}");
        assert_eq!(result["errorCode"], json!(code), "row {i}: {result}");
    }
    let message = |i: usize| {
        results[i]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(message(1).contains("ignored"), "{data}");
    assert!(
        message(3).contains("updates[3].location.lat"),
        "bad coordinates name the row and field: {data}"
    );
    assert!(
        message(4).contains("updates[4].driverId"),
        "malformed id names the row: {data}"
    );
    assert!(results[0]["message"].is_null(), "{data}");

    let state = presence(&app, &first).await;
    assert_at(&state, first_at, "row 0 applied");
    let state = presence(&app, &second).await;
    assert_at(&state, second_moved, "row 6 applied after the stale row 1");
    let state = presence(&app, &offline).await;
    assert!(state["location"].is_null(), "row 5 not applied: {state}");
    app.stop().await;
}

async fn batch_size(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.online_driver("MOTO", HOME.0, HOME.1).await;
    let before = presence(&app, &driver).await;

    let error = app.err(BATCH, json!({ "u": [] }), "BAD_USER_INPUT").await;
    assert_eq!(error["extensions"]["field"], "updates", "{error}");

    // 501 fixes of one driver, one second apart, starting 600 s ago.
    let moved = (HOME.0 + 0.001, HOME.1);
    let rows = |count: i64| -> Vec<Value> {
        (0..count)
            .map(|i| json!({ "driverId": driver, "location": fix(moved, &time_from_now(i - 600)) }))
            .collect()
    };
    let error = app
        .err(BATCH, json!({ "u": rows(501) }), "BAD_USER_INPUT")
        .await;
    assert_eq!(error["extensions"]["field"], "updates", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("501"),
        "message gives the size: {error}"
    );
    let after = presence(&app, &driver).await;
    assert_eq!(
        after["location"], before["location"],
        "no row of a rejected batch is applied: {after}"
    );
    assert_eq!(after["recordedAt"], before["recordedAt"], "{after}");

    let data = app.ok(BATCH, json!({ "u": rows(500) })).await;
    let results = data["updateDriverLocations"].as_array().unwrap();
    assert_eq!(results.len(), 500);
    // goOnline stored a fix at the server's time, newer than every row.
    assert!(
        results.iter().all(|r| r["status"] == "STALE"),
        "rows older than the goOnline fix are stale: {}",
        results[0]
    );
    app.stop().await;
}

async fn fix_field_limits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.online_driver("MOTO", HOME.0, HOME.1).await;
    let before = presence(&app, &driver).await;
    let moved = json!({ "lat": HOME.0 + 0.001, "lng": HOME.1 });
    let with = |key: &str, value: Value| {
        let mut location = moved.clone();
        location[key] = value;
        location
    };
    let cases = [
        (with("headingDeg", json!(400.0)), "location.headingDeg"),
        (with("headingDeg", json!(-1.0)), "location.headingDeg"),
        (with("speedMps", json!(-1.0)), "location.speedMps"),
        (with("speedMps", json!(101.0)), "location.speedMps"),
        (
            with("accuracyMeters", json!(-5.0)),
            "location.accuracyMeters",
        ),
        (
            with("accuracyMeters", json!(10_001.0)),
            "location.accuracyMeters",
        ),
        (
            with("recordedAt", json!(time_from_now(3_600))),
            "location.recordedAt",
        ),
        (
            with("recordedAt", json!(time_from_now(-7_200))),
            "location.recordedAt",
        ),
        (with("lat", json!(91.0)), "location.lat"),
        (with("lng", json!(-181.0)), "location.lng"),
    ];
    for (location, field) in &cases {
        let body = app.update_location(&driver, location.clone()).await;
        let error = &body["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "BAD_USER_INPUT",
            "{location}: {body}"
        );
        assert_eq!(error["extensions"]["field"], *field, "{location}: {body}");

        let body = go_online(&app, &driver, Some(location.clone())).await;
        let error = &body["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "BAD_USER_INPUT",
            "goOnline {location}: {body}"
        );
        assert_eq!(
            error["extensions"]["field"], *field,
            "goOnline {location}: {body}"
        );
    }
    // A time that does not parse fails when the resolver reads the argument, so the error has
    // no `field`.
    let body = app
        .update_location(&driver, with("recordedAt", json!("yesterday")))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DateTime"),
        "{body}"
    );

    let after = presence(&app, &driver).await;
    assert_at(&after, location_of(&before), "no rejected fix is applied");
    assert_eq!(after["recordedAt"], before["recordedAt"], "{after}");

    // The bounds themselves are accepted, each fix a second newer than the last.
    let bounds = [
        ("headingDeg", json!(0.0)),
        ("headingDeg", json!(360.0)),
        ("speedMps", json!(0.0)),
        ("speedMps", json!(100.0)),
        ("accuracyMeters", json!(0.0)),
        ("accuracyMeters", json!(10_000.0)),
    ];
    for (i, (key, value)) in bounds.into_iter().enumerate() {
        let mut location = with(key, value);
        location["recordedAt"] = json!(time_from_now(i as i64 + 1));
        let body = app.update_location(&driver, location.clone()).await;
        assert_eq!(
            body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
            "{location}: {body}"
        );
    }
    app.stop().await;
}

async fn restart_rebuilds(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let online = app.driver("MOTO").await;
    go_online(&app, &online, None).await;
    let t0 = time_from_now(-5);
    let body = app.update_location(&online, fix(HOME, &t0)).await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );
    let offline_at = (HOME.0 + 0.001, HOME.1);
    let offline = app.online_driver("MOTO", offline_at.0, offline_at.1).await;
    go_offline(&app, &offline).await;
    let busy = app.online_driver("MOTO", HOME.0, HOME.1 + 0.001).await;
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", HOME.0, HOME.1).await;
    let body = app.driver_step("acceptTrip", &trip, &busy).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let before = presence(&app, &online).await;

    app.restart(|_| {}).await;

    assert_eq!(
        nearby_ids(&app).await,
        [online.as_str()],
        "only the free online driver is matched after restart"
    );
    let state = presence(&app, &online).await;
    assert_eq!(state["online"], true, "{state}");
    assert_at(&state, HOME, "position");
    assert_eq!(
        parse_time(&state["recordedAt"]),
        parse_time(&json!(t0)),
        "{state}"
    );
    // PostgreSQL keeps microseconds, so the rebuilt time may lose the nanoseconds.
    let available = parse_time(&state["availableSince"]);
    let available_before = parse_time(&before["availableSince"]);
    assert!(
        (available - available_before).abs() < chrono::TimeDelta::microseconds(1),
        "availableSince {available} was {available_before} before the restart"
    );
    let state = presence(&app, &offline).await;
    assert_eq!(state["online"], false, "{state}");
    assert_at(&state, offline_at, "position");
    let state = presence(&app, &busy).await;
    assert_eq!(state["online"], true, "{state}");
    assert_eq!(state["activeTripId"], trip.as_str(), "{state}");

    // The rebuilt fix time still decides what is stale.
    let body = app
        .update_location(&online, fix(HOME, &time_from_now(-10)))
        .await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "STALE",
        "{body}"
    );
    let body = app
        .update_location(&online, fix(HOME, &time_from_now(0)))
        .await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );
    app.stop().await;
}

/// Many drivers update at once, one request each, with two concurrent requests of one driver
/// carrying an older and a newer fix. After a restart, which reads storage only, every driver
/// is where its last accepted fix put it.
async fn concurrent_updates_stored(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let mut drivers = Vec::new();
    for _ in 0..24 {
        let driver = app.driver("MOTO").await;
        go_online(&app, &driver, None).await;
        drivers.push(driver);
    }
    let spot = |i: usize| (HOME.0 + 0.0001 * i as f64, HOME.1);
    let newer = time_from_now(-5);
    let older = time_from_now(-20);
    let mut requests = Vec::new();
    for (i, driver) in drivers.iter().enumerate() {
        requests.push(app.update_location(driver, fix(spot(i), &newer)));
    }
    // The same driver again with an older fix elsewhere: whichever lands second, the newer
    // fix must stay.
    let moved = (HOME.0 - 0.001, HOME.1);
    requests.push(app.update_location(&drivers[0], fix(moved, &older)));
    let bodies = futures_util::future::join_all(requests).await;
    let accepted = bodies
        .iter()
        .filter(|body| body["data"]["updateDriverLocation"]["status"] == "ACCEPTED")
        .count();
    assert!(
        accepted >= drivers.len(),
        "every driver's newest fix is accepted: {bodies:?}"
    );
    for body in &bodies {
        assert!(body["errors"].is_null(), "{body}");
    }

    app.restart(|_| {}).await;

    for (i, driver) in drivers.iter().enumerate() {
        let state = presence(&app, driver).await;
        assert_at(&state, spot(i), &format!("driver {i} after restart"));
        assert_eq!(
            parse_time(&state["recordedAt"]),
            parse_time(&json!(newer)),
            "driver {i}: {state}"
        );
    }
    app.stop().await;
}
