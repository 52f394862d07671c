//! Matching over the API. `nearbyDrivers` must return only online, free, fresh drivers of the
//! requested types, with distances and ETAs that match a haversine computed here and a score
//! that its components explain. Also covers a worked ranking example built from real trip and
//! offer history, the radius ladder, argument limits, a 200-driver grid and
//! `nearbyTripRequests`.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, time_from_now, unique};

crate::on_both_backends!(
    eligibility,
    ranking_history,
    radius_ladder,
    argument_limits,
    location_age,
    grid_top_ten,
    grid_nearest_first,
    trip_requests,
    requests_need_online,
);

/// Mean Earth radius in meters (IUGG), the radius the server documents for its distances.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Largest accepted difference between the server's distance and the haversine, in meters.
const DISTANCE_TOLERANCE_M: f64 = 0.05;

/// Pickup point in Porto.
const PICKUP: (f64, f64) = (41.1579, -8.6291);

const NEARBY: &str = "query($near: LatLngInput!, $radius: Float, $types: [VehicleType!], \
    $limit: Int, $age: Int, $widen: Boolean! = true) {
  nearbyDrivers(near: $near, radiusMeters: $radius, vehicleTypes: $types, limit: $limit,
                maxLocationAgeSeconds: $age, widen: $widen) {
    radiusMeters radiiTriedMeters candidatesScored proximity
    eta { method detourFactor motoSpeedMps cabSpeedMps }
    drivers {
      rank vehicleType location { lat lng } distanceMeters etaSeconds locationAgeSeconds score
      scoreComponents { kind raw normalized weight contribution }
      driver { id rating { smoothed count } acceptanceRate offersAccepted offersRejected }
    }
  }
}";

const NEARBY_REQUESTS: &str = "query($d: ID!, $radius: Float, $limit: Int) {
  nearbyTripRequests(driverId: $d, radiusMeters: $radius, limit: $limit) {
    pickup { lat lng } vehicleType scheduledAt distanceMeters etaSeconds trip { id status }
  }
}";

/// Great-circle distance in meters by the haversine formula, independent of the server's code.
fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlng = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

/// Returns the point about `north_m` meters north and `east_m` meters east of `from`. Tests
/// measure the exact distance with [`haversine_m`].
fn offset(from: (f64, f64), north_m: f64, east_m: f64) -> (f64, f64) {
    let meters_per_degree = EARTH_RADIUS_M.to_radians();
    let lat = from.0 + north_m / meters_per_degree;
    let lng = from.1 + east_m / (meters_per_degree * from.0.to_radians().cos());
    (lat, lng)
}

fn point(p: (f64, f64)) -> Value {
    json!({ "lat": p.0, "lng": p.1 })
}

/// Runs `nearbyDrivers` around `near` with extra variables and returns `nearbyDrivers`.
async fn nearby(app: &TestApp, near: (f64, f64), mut variables: Value) -> Value {
    variables["near"] = point(near);
    app.ok(NEARBY, variables).await["nearbyDrivers"].clone()
}

fn driver_ids(result: &Value) -> Vec<String> {
    result["drivers"]
        .as_array()
        .expect("drivers is a list")
        .iter()
        .map(|row| row["driver"]["id"].as_str().expect("driver id").to_owned())
        .collect()
}

/// Checks every row of a `nearbyDrivers` result against values computed here: rank sequence,
/// score order, haversine distance, straight-line ETA, and the score explanation.
fn check_rows(result: &Value, near: (f64, f64)) {
    let eta = &result["eta"];
    assert_eq!(eta["method"], "STRAIGHT_LINE", "{result}");
    let detour = eta["detourFactor"].as_f64().expect("detourFactor");
    let rows = result["drivers"].as_array().expect("drivers is a list");
    let mut previous_score = f64::INFINITY;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["rank"], i + 1, "rank of row {i} in {result}");

        let position = (
            row["location"]["lat"].as_f64().unwrap(),
            row["location"]["lng"].as_f64().unwrap(),
        );
        let distance = row["distanceMeters"].as_f64().unwrap();
        let expected = haversine_m(near, position);
        assert!(
            (distance - expected).abs() < DISTANCE_TOLERANCE_M,
            "row {i}: distance {distance} m, haversine {expected} m: {row}"
        );
        assert!(
            distance <= result["radiusMeters"].as_f64().unwrap(),
            "row {i} lies outside the search radius: {result}"
        );

        let speed = match row["vehicleType"].as_str() {
            Some("MOTO") => eta["motoSpeedMps"].as_f64().unwrap(),
            Some("CAB") => eta["cabSpeedMps"].as_f64().unwrap(),
            other => panic!("unknown vehicle type {other:?}: {row}"),
        };
        let eta_s = row["etaSeconds"].as_f64().unwrap();
        let expected_eta = distance * detour / speed;
        assert!(
            (eta_s - expected_eta).abs() < 1e-9 * expected_eta.max(1.0),
            "row {i}: eta {eta_s} s, distance x detour / speed = {expected_eta} s: {row}"
        );

        let score = row["score"].as_f64().unwrap();
        assert!(
            score <= previous_score,
            "row {i} scores above the row before it: {result}"
        );
        previous_score = score;
        check_components(row);
    }
}

/// Checks that a row's score components are the five documented terms, that each
/// contribution is weight x normalized / sum of weights, and that they add up to the score.
fn check_components(row: &Value) {
    let components = row["scoreComponents"].as_array().expect("components");
    let kinds: Vec<&str> = components
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["PROXIMITY", "FRESHNESS", "RATING", "ACCEPTANCE", "IDLE"],
        "{row}"
    );
    let weight_sum: f64 = components
        .iter()
        .map(|c| c["weight"].as_f64().unwrap())
        .sum();
    let mut total = 0.0;
    for c in components {
        let normalized = c["normalized"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&normalized),
            "normalized outside 0..=1: {c}"
        );
        let contribution = c["contribution"].as_f64().unwrap();
        let expected = c["weight"].as_f64().unwrap() * normalized / weight_sum;
        assert!(
            (contribution - expected).abs() < 1e-12,
            "contribution {contribution}, weight x normalized / sum = {expected}: {c}"
        );
        total += contribution;
    }
    let score = row["score"].as_f64().unwrap();
    assert!(
        (total - score).abs() < 1e-12,
        "contributions add up to {total}, score is {score}: {row}"
    );
}

/// Finds the score component of `kind` in a row.
fn component<'a>(row: &'a Value, kind: &str) -> &'a Value {
    row["scoreComponents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} component in {row}"))
}

fn number(component: &Value, key: &str) -> f64 {
    component[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {component}"))
}

/// Registers a driver, puts it online without a position and sends one fix.
async fn driver_with_fix(app: &TestApp, vehicle_type: &str, at: (f64, f64), age_s: i64) -> String {
    let id = app.driver(vehicle_type).await;
    app.ok(
        "mutation($d: ID!) { goOnline(driverId: $d) { id } }",
        json!({ "d": id }),
    )
    .await;
    let mut location = point(at);
    location["recordedAt"] = json!(time_from_now(-age_s));
    let body = app.update_location(&id, location).await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );
    id
}

async fn eligibility(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let moto_at = offset(PICKUP, 400.0, 0.0);
    let moto = app.online_driver("MOTO", moto_at.0, moto_at.1).await;
    let cab_at = offset(PICKUP, 0.0, 600.0);
    let cab = app.online_driver("CAB", cab_at.0, cab_at.1).await;

    let offline_at = offset(PICKUP, -300.0, 0.0);
    let offline = app.online_driver("MOTO", offline_at.0, offline_at.1).await;
    app.ok(
        "mutation($d: ID!) { goOffline(driverId: $d) { id } }",
        json!({ "d": offline }),
    )
    .await;

    let busy_at = offset(PICKUP, 0.0, -200.0);
    let busy = app.online_driver("MOTO", busy_at.0, busy_at.1).await;
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", busy_at.0, busy_at.1).await;
    let body = app.driver_step("acceptTrip", &trip, &busy).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");

    let stale = driver_with_fix(&app, "MOTO", offset(PICKUP, 100.0, 100.0), 200).await;

    let no_fix = app.driver("MOTO").await;
    app.ok(
        "mutation($d: ID!) { goOnline(driverId: $d) { id } }",
        json!({ "d": no_fix }),
    )
    .await;

    let result = nearby(&app, PICKUP, json!({ "types": ["MOTO"] })).await;
    check_rows(&result, PICKUP);
    assert_eq!(driver_ids(&result), [moto.as_str()], "MOTO only: {result}");
    assert_eq!(result["candidatesScored"], 1, "{result}");
    assert_eq!(result["radiiTriedMeters"], json!([5000.0]), "{result}");

    let result = nearby(&app, PICKUP, json!({})).await;
    check_rows(&result, PICKUP);
    let ids: HashSet<String> = driver_ids(&result).into_iter().collect();
    let expected: HashSet<String> = [moto.clone(), cab.clone()].into_iter().collect();
    assert_eq!(ids, expected, "all types: {result}");
    for excluded in [&offline, &busy, &stale, &no_fix] {
        assert!(
            !ids.contains(excluded),
            "driver {excluded} must not be matched: {result}"
        );
    }

    let result = nearby(&app, PICKUP, json!({ "types": ["CAB"] })).await;
    check_rows(&result, PICKUP);
    assert_eq!(driver_ids(&result), [cab.as_str()], "CAB only: {result}");
    assert_eq!(result["drivers"][0]["vehicleType"], "CAB", "{result}");

    // The busy driver is matched again once the trip is cancelled.
    app.ok(
        "mutation($t: ID!, $r: ID!) { cancelTrip(tripId: $t, actor: {role: RIDER, id: $r}, \
         reason: \"changed plans\") { status } }",
        json!({ "t": trip, "r": rider }),
    )
    .await;
    let result = nearby(&app, PICKUP, json!({ "types": ["MOTO"] })).await;
    assert_eq!(
        driver_ids(&result),
        [busy.clone(), moto.clone()],
        "freed driver, nearest first: {result}"
    );
    app.stop().await;
}

/// Completes a trip of `driver` near its position; the rider rates it `stars`. With
/// `through_offer` the rider offers the trip first, so the accept counts as an accepted offer.
async fn rated_trip(app: &TestApp, driver: &str, at: (f64, f64), stars: i32, through_offer: bool) {
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", at.0, at.1).await;
    if through_offer {
        app.ok(
            "mutation($t: ID!, $d: ID!) { offerTrip(tripId: $t, driverId: $d) { status } }",
            json!({ "t": trip, "d": driver }),
        )
        .await;
    }
    for (step, status) in [
        ("acceptTrip", "ACCEPTED"),
        ("arriveAtPickup", "ARRIVED"),
        ("startTrip", "STARTED"),
        ("completeTrip", "COMPLETED"),
    ] {
        let body = app.driver_step(step, &trip, driver).await;
        assert_eq!(body["data"][step]["status"], status, "{step}: {body}");
    }
    app.ok(
        "mutation($t: ID!, $r: ID!, $s: Int!) { rateTrip(tripId: $t, by: {role: RIDER, id: $r}, \
         stars: $s) { stars } }",
        json!({ "t": trip, "r": rider, "s": stars }),
    )
    .await;
}

/// Offers a new trip to `driver`, who declines it; the rider then cancels the trip.
async fn declined_offer(app: &TestApp, driver: &str, at: (f64, f64)) {
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", at.0, at.1).await;
    app.ok(
        "mutation($t: ID!, $d: ID!) { offerTrip(tripId: $t, driverId: $d) { status } }",
        json!({ "t": trip, "d": driver }),
    )
    .await;
    let data = app
        .ok(
            "mutation($t: ID!, $d: ID!) { declineTrip(tripId: $t, driverId: $d) { status } }",
            json!({ "t": trip, "d": driver }),
        )
        .await;
    assert_eq!(data["declineTrip"]["status"], "DECLINED", "{data}");
    app.ok(
        "mutation($t: ID!, $r: ID!) { cancelTrip(tripId: $t, actor: {role: RIDER, id: $r}, \
         reason: \"test over\") { status } }",
        json!({ "t": trip, "r": rider }),
    )
    .await;
}

/// Worked example: A is 300 m away with three 1-star trips and three declined offers; B is
/// 450 m away with three 5-star trips accepted through offers; C is 2 km away with no history.
/// With the default weights (proximity 0.6, rating 0.15, acceptance 0.1) A's proximity lead of
/// about 0.04 is smaller than B's lead in rating (about 0.056) and acceptance (about 0.023), so
/// the order is B, A, C.
async fn ranking_history(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a_at = offset(PICKUP, 300.0, 0.0);
    let b_at = offset(PICKUP, -450.0, 0.0);
    let c_at = offset(PICKUP, 0.0, 2_000.0);
    let a = app.online_driver("MOTO", a_at.0, a_at.1).await;
    let b = app.online_driver("MOTO", b_at.0, b_at.1).await;
    let c = app.online_driver("MOTO", c_at.0, c_at.1).await;

    for _ in 0..3 {
        rated_trip(&app, &a, a_at, 1, false).await;
        declined_offer(&app, &a, a_at).await;
        rated_trip(&app, &b, b_at, 5, true).await;
    }
    // Fresh fixes at the same places, so freshness is equal for all three.
    for (id, at) in [(&a, a_at), (&b, b_at), (&c, c_at)] {
        let body = app.update_location(id, point(at)).await;
        assert_eq!(
            body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
            "{body}"
        );
    }

    let result = nearby(&app, PICKUP, json!({})).await;
    check_rows(&result, PICKUP);
    assert_eq!(
        driver_ids(&result),
        [b.clone(), a.clone(), c.clone()],
        "B outranks the closer A by history: {result}"
    );
    let rows = result["drivers"].as_array().unwrap();
    let (row_b, row_a) = (&rows[0], &rows[1]);
    assert!(
        row_a["distanceMeters"].as_f64() < row_b["distanceMeters"].as_f64(),
        "A is closer: {result}"
    );

    // The explanation: A leads on proximity, B leads on rating and acceptance.
    let proximity_a = number(component(row_a, "PROXIMITY"), "contribution");
    let proximity_b = number(component(row_b, "PROXIMITY"), "contribution");
    assert!(
        proximity_a > proximity_b,
        "A's proximity contribution {proximity_a} must exceed B's {proximity_b}"
    );
    let rating_a = number(component(row_a, "RATING"), "contribution");
    let rating_b = number(component(row_b, "RATING"), "contribution");
    assert!(
        rating_b > rating_a,
        "B's rating contribution {rating_b} must exceed A's {rating_a}"
    );
    let acceptance_a = number(component(row_a, "ACCEPTANCE"), "contribution");
    let acceptance_b = number(component(row_b, "ACCEPTANCE"), "contribution");
    assert!(
        acceptance_b > acceptance_a,
        "B's acceptance contribution {acceptance_b} must exceed A's {acceptance_a}"
    );
    let history_lead = (rating_b - rating_a) + (acceptance_b - acceptance_a);
    assert!(
        history_lead > proximity_a - proximity_b,
        "B's history lead {history_lead} must outweigh A's proximity lead {}",
        proximity_a - proximity_b
    );

    // Raw inputs: the smoothed rating with the documented prior (4.5 stars counted as 5
    // ratings) and the smoothed acceptance (0.8 counted as 10 answered offers).
    let cases = [
        (row_a, (4.5 * 5.0 + 3.0) / 8.0, 8.0 / 13.0, 0, 3),
        (row_b, (4.5 * 5.0 + 15.0) / 8.0, 11.0 / 13.0, 3, 0),
        (&rows[2], 4.5, 0.8, 0, 0),
    ];
    for (row, rating, acceptance, accepted, rejected) in cases {
        let raw_rating = number(component(row, "RATING"), "raw");
        assert!(
            (raw_rating - rating).abs() < 1e-12,
            "rating raw {raw_rating}, expected {rating}: {row}"
        );
        let smoothed = row["driver"]["rating"]["smoothed"].as_f64().unwrap();
        assert!(
            (raw_rating - smoothed).abs() < 1e-12,
            "rating raw {raw_rating} differs from driver.rating.smoothed {smoothed}: {row}"
        );
        let raw_acceptance = number(component(row, "ACCEPTANCE"), "raw");
        assert!(
            (raw_acceptance - acceptance).abs() < 1e-12,
            "acceptance raw {raw_acceptance}, expected {acceptance}: {row}"
        );
        let rate = row["driver"]["acceptanceRate"].as_f64().unwrap();
        assert!(
            (raw_acceptance - rate).abs() < 1e-12,
            "acceptance raw {raw_acceptance} differs from driver.acceptanceRate {rate}: {row}"
        );
        assert_eq!(row["driver"]["offersAccepted"], accepted, "{row}");
        assert_eq!(row["driver"]["offersRejected"], rejected, "{row}");
    }
    let proximity = component(row_a, "PROXIMITY");
    assert_eq!(
        number(proximity, "raw"),
        row_a["etaSeconds"].as_f64().unwrap(),
        "proximity raw is the ETA in ETA mode: {row_a}"
    );
    assert_eq!(result["proximity"], "ETA", "{result}");
    app.stop().await;
}

async fn radius_ladder(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let result = nearby(&app, PICKUP, json!({})).await;
    assert_eq!(result["drivers"], json!([]), "{result}");
    assert_eq!(
        result["radiiTriedMeters"],
        json!([5000.0, 15000.0]),
        "no driver anywhere: {result}"
    );

    let far_at = offset(PICKUP, 10_000.0, 0.0);
    let far = app.online_driver("CAB", far_at.0, far_at.1).await;

    let result = nearby(&app, PICKUP, json!({})).await;
    check_rows(&result, PICKUP);
    assert_eq!(driver_ids(&result), [far.as_str()], "{result}");
    assert_eq!(
        result["radiiTriedMeters"],
        json!([5000.0, 15000.0]),
        "{result}"
    );
    assert_eq!(result["radiusMeters"], 15000.0, "{result}");
    let distance = result["drivers"][0]["distanceMeters"].as_f64().unwrap();
    assert!(
        (9_900.0..10_100.0).contains(&distance),
        "driver about 10 km away, got {distance} m"
    );

    let result = nearby(&app, PICKUP, json!({ "radius": 5000.0, "widen": false })).await;
    assert_eq!(result["drivers"], json!([]), "widen false: {result}");
    assert_eq!(result["radiiTriedMeters"], json!([5000.0]), "{result}");
    assert_eq!(result["radiusMeters"], 5000.0, "{result}");

    let result = nearby(&app, PICKUP, json!({ "radius": 3000.0 })).await;
    assert_eq!(driver_ids(&result), [far.as_str()], "{result}");
    assert_eq!(
        result["radiiTriedMeters"],
        json!([3000.0, 5000.0, 15000.0]),
        "an explicit radius widens along the wider ladder steps: {result}"
    );

    let result = nearby(&app, PICKUP, json!({ "radius": 12000.0, "widen": false })).await;
    assert_eq!(driver_ids(&result), [far.as_str()], "{result}");
    assert_eq!(result["radiiTriedMeters"], json!([12000.0]), "{result}");

    // A nearer driver stops the ladder at the first step.
    let near_at = offset(PICKUP, 0.0, 1_000.0);
    let near = app.online_driver("CAB", near_at.0, near_at.1).await;
    let result = nearby(&app, PICKUP, json!({})).await;
    assert_eq!(driver_ids(&result), [near], "{result}");
    assert_eq!(result["radiiTriedMeters"], json!([5000.0]), "{result}");
    app.stop().await;
}

async fn argument_limits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (json!({ "limit": 0 }), "limit"),
        (json!({ "limit": 26 }), "limit"),
        (json!({ "limit": -1 }), "limit"),
        (json!({ "radius": 0.0 }), "radiusMeters"),
        (json!({ "radius": -5.0 }), "radiusMeters"),
        (json!({ "radius": 60000.0 }), "radiusMeters"),
        (json!({ "age": 0 }), "maxLocationAgeSeconds"),
        (json!({ "age": 121 }), "maxLocationAgeSeconds"),
        (json!({ "types": [] }), "vehicleTypes"),
    ];
    for (mut variables, field) in cases {
        variables["near"] = point(PICKUP);
        let error = app.err(NEARBY, variables.clone(), "BAD_USER_INPUT").await;
        assert_eq!(
            error["extensions"]["field"], field,
            "variables {variables}: {error}"
        );
    }
    // The bounds themselves are accepted.
    for variables in [
        json!({ "limit": 1 }),
        json!({ "limit": 25 }),
        json!({ "radius": 1.0 }),
        json!({ "radius": 50000.0 }),
        json!({ "age": 1 }),
        json!({ "age": 120 }),
    ] {
        nearby(&app, PICKUP, variables).await;
    }

    let error = app
        .err(
            NEARBY_REQUESTS,
            json!({ "d": "1", "limit": 0 }),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "limit", "{error}");
    let error = app
        .err(
            NEARBY_REQUESTS,
            json!({ "d": "1", "radius": 60000.0 }),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "radiusMeters", "{error}");
    app.stop().await;
}

async fn location_age(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fresh = driver_with_fix(&app, "MOTO", offset(PICKUP, 500.0, 0.0), 0).await;
    let minute_old = driver_with_fix(&app, "MOTO", offset(PICKUP, 200.0, 0.0), 60).await;
    let stale = driver_with_fix(&app, "MOTO", offset(PICKUP, 100.0, 0.0), 200).await;

    let result = nearby(&app, PICKUP, json!({})).await;
    check_rows(&result, PICKUP);
    let ids = driver_ids(&result);
    assert!(ids.contains(&fresh), "fresh driver missing: {result}");
    assert!(
        ids.contains(&minute_old),
        "60 s old fix is within the 120 s window: {result}"
    );
    assert!(
        !ids.contains(&stale),
        "200 s old fix is past the 120 s window: {result}"
    );
    let row = result["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["driver"]["id"] == minute_old.as_str())
        .unwrap();
    let age = row["locationAgeSeconds"].as_f64().unwrap();
    assert!(age >= 60.0, "locationAgeSeconds {age} below the fix age");
    let freshness = component(row, "FRESHNESS");
    assert_eq!(number(freshness, "raw"), age, "{row}");
    let expected = 1.0 - age / 120.0;
    assert!(
        (number(freshness, "normalized") - expected).abs() < 1e-9,
        "freshness normalized, expected 1 - age / 120 = {expected}: {row}"
    );

    let result = nearby(&app, PICKUP, json!({ "age": 30 })).await;
    assert_eq!(
        driver_ids(&result),
        [fresh.as_str()],
        "maxLocationAgeSeconds 30 drops the 60 s old fix: {result}"
    );
    let result = nearby(&app, PICKUP, json!({ "age": 120 })).await;
    let ids = driver_ids(&result);
    assert!(ids.contains(&minute_old), "{result}");
    assert!(!ids.contains(&stale), "{result}");

    // A new fix makes the stale driver eligible again.
    let body = app
        .update_location(&stale, point(offset(PICKUP, 100.0, 0.0)))
        .await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], "ACCEPTED",
        "{body}"
    );
    let result = nearby(&app, PICKUP, json!({})).await;
    assert_eq!(driver_ids(&result)[0], stale, "{result}");
    app.stop().await;
}

/// Grid of 20 x 10 online MOTO drivers about 200 m apart around [`PICKUP`]; returns their ids
/// and positions. Registers and moves them with one aliased mutation each, to keep the test
/// quick.
async fn grid(app: &TestApp) -> Vec<(String, (f64, f64))> {
    let mut positions = Vec::new();
    for row in 0..20 {
        for column in 0..10 {
            let north = (f64::from(row) - 9.5) * 200.0;
            let east = (f64::from(column) - 4.5) * 200.0;
            positions.push(offset(PICKUP, north, east));
        }
    }

    let mut register = String::from("mutation {");
    for i in 0..positions.len() {
        let n = unique();
        register.push_str(&format!(
            " d{i}: registerDriver(input: {{name: \"Grid {i}\", phone: \"+2507{:08}\", \
             vehicle: {{type: MOTO, plate: \"GRID{n}\"}}}}) {{ id }}",
            80_000_000 + n
        ));
    }
    register.push_str(" }");
    let data = app.ok(&register, json!({})).await;
    let ids: Vec<String> = (0..positions.len())
        .map(|i| data[format!("d{i}")]["id"].as_str().unwrap().to_owned())
        .collect();

    let mut online = String::from("mutation {");
    for (i, (id, (lat, lng))) in ids.iter().zip(&positions).enumerate() {
        online.push_str(&format!(
            " o{i}: goOnline(driverId: \"{id}\", location: {{lat: {lat}, lng: {lng}}}) {{ id }}"
        ));
    }
    online.push_str(" }");
    app.ok(&online, json!({})).await;
    ids.into_iter().zip(positions).collect()
}

/// A point between grid nodes, so no two drivers are at the same distance from it.
fn off_grid_center() -> (f64, f64) {
    offset(PICKUP, 37.0, 61.0)
}

async fn grid_top_ten(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let drivers = grid(&app).await;
    let center = off_grid_center();
    let within = |radius: f64| {
        drivers
            .iter()
            .filter(|(_, at)| haversine_m(center, *at) <= radius)
            .count()
    };

    // Default ladder: every driver is within 5 km, so the pool of 50 nearest is scored.
    let result = nearby(&app, center, json!({})).await;
    check_rows(&result, center);
    assert_eq!(within(5_000.0), 200, "grid fits in 5 km");
    assert_eq!(result["candidatesScored"], 50, "candidate pool: {result}");
    assert_eq!(result["drivers"].as_array().unwrap().len(), 10, "{result}");
    let mut by_distance: Vec<(f64, &String)> = drivers
        .iter()
        .map(|(id, at)| (haversine_m(center, *at), id))
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pool: HashSet<&String> = by_distance.iter().take(50).map(|(_, id)| *id).collect();
    for id in driver_ids(&result) {
        assert!(
            pool.contains(&id),
            "driver {id} is not among the 50 nearest: {result}"
        );
    }

    // Within 500 m fewer than 25 drivers are eligible, so limit 25 returns the whole scored
    // pool in the server's order, and limit 10 must be its first ten.
    let radius = 500.0;
    let count = within(radius);
    assert!(
        (11..=25).contains(&count),
        "grid layout: {count} drivers within {radius} m"
    );
    for (_, at) in &drivers {
        let d = haversine_m(center, *at);
        assert!(
            (d - radius).abs() > 1.0,
            "grid layout: a driver is {d} m away, too close to the {radius} m radius"
        );
    }
    let all = nearby(
        &app,
        center,
        json!({ "radius": radius, "widen": false, "limit": 25 }),
    )
    .await;
    check_rows(&all, center);
    assert_eq!(all["candidatesScored"], count, "{all}");
    let expected: HashSet<&String> = drivers
        .iter()
        .filter(|(_, at)| haversine_m(center, *at) <= radius)
        .map(|(id, _)| id)
        .collect();
    let all_ids = driver_ids(&all);
    let returned: HashSet<&String> = all_ids.iter().collect();
    assert_eq!(returned, expected, "every driver within {radius} m: {all}");

    let top = nearby(&app, center, json!({ "radius": radius, "widen": false })).await;
    check_rows(&top, center);
    assert_eq!(top["candidatesScored"], count, "{top}");
    assert_eq!(
        driver_ids(&top),
        all_ids[..10],
        "limit 10 is the best 10 of the scored pool: {top} vs {all}"
    );
    app.stop().await;
}

/// With only the proximity weight the score falls with distance, so the best ten are the ten
/// nearest drivers as the haversine computes them here.
async fn grid_nearest_first(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.ranking_weights = "proximity=1,freshness=0,rating=0,acceptance=0,idle=0"
            .parse()
            .unwrap();
    })
    .await;
    let drivers = grid(&app).await;
    let center = off_grid_center();
    let mut by_distance: Vec<(f64, String)> = drivers
        .iter()
        .map(|(id, at)| (haversine_m(center, *at), id.clone()))
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        by_distance[10].0 - by_distance[9].0 > 1.0,
        "grid layout: 10th and 11th drivers nearly tie: {by_distance:?}"
    );
    let expected: Vec<String> = by_distance
        .iter()
        .take(10)
        .map(|(_, id)| id.clone())
        .collect();

    let result = nearby(&app, center, json!({})).await;
    check_rows(&result, center);
    assert_eq!(driver_ids(&result), expected, "{result}");
    let weight = number(component(&result["drivers"][0], "PROXIMITY"), "weight");
    assert_eq!(weight, 1.0, "{result}");
    app.stop().await;
}

fn request_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list of requests")
        .iter()
        .map(|r| r["trip"]["id"].as_str().expect("trip id").to_owned())
        .collect()
}

async fn request_scheduled(app: &TestApp, rider: &str, at: (f64, f64), ahead_s: i64) -> String {
    let data = app
        .ok(
            "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id } }",
            json!({ "input": {
                "riderId": rider,
                "pickup": point(at),
                "vehicleType": "MOTO",
                "scheduledAt": time_from_now(ahead_s),
            } }),
        )
        .await;
    data["requestTrip"]["id"].as_str().unwrap().to_owned()
}

async fn trip_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let other = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let rider = app.rider().await;

    let far_at = offset(PICKUP, 1_000.0, 0.0);
    let far = app.request_trip(&rider, "MOTO", far_at.0, far_at.1).await;
    let near_at = offset(PICKUP, 0.0, 300.0);
    let near = app.request_trip(&rider, "MOTO", near_at.0, near_at.1).await;
    let soon_at = offset(PICKUP, -400.0, 0.0);
    let soon = request_scheduled(&app, &rider, soon_at, 10 * 60).await;
    let later_at = offset(PICKUP, 150.0, 0.0);
    let later = request_scheduled(&app, &rider, later_at, 2 * 3_600).await;
    let cab_at = offset(PICKUP, 100.0, 0.0);
    let cab = app.request_trip(&rider, "CAB", cab_at.0, cab_at.1).await;
    let accepted_at = offset(PICKUP, 0.0, -200.0);
    let accepted = app
        .request_trip(&rider, "MOTO", accepted_at.0, accepted_at.1)
        .await;
    let body = app.driver_step("acceptTrip", &accepted, &other).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let cancelled_at = offset(PICKUP, -250.0, 0.0);
    let cancelled = app
        .request_trip(&rider, "MOTO", cancelled_at.0, cancelled_at.1)
        .await;
    app.ok(
        "mutation($t: ID!, $r: ID!) { cancelTrip(tripId: $t, actor: {role: RIDER, id: $r}, \
         reason: \"changed plans\") { status } }",
        json!({ "t": cancelled, "r": rider }),
    )
    .await;

    let data = app.ok(NEARBY_REQUESTS, json!({ "d": driver })).await;
    let list = &data["nearbyTripRequests"];
    assert_eq!(
        request_ids(list),
        [near.clone(), soon.clone(), far.clone()],
        "open MOTO requests due within 30 min, nearest first: {list}"
    );
    for hidden in [&later, &cab, &accepted, &cancelled] {
        assert!(
            !request_ids(list).contains(hidden),
            "trip {hidden} must be hidden: {list}"
        );
    }
    let eta_model = app
        .ok(
            "query($n: LatLngInput!) { nearbyDrivers(near: $n) \
             { eta { detourFactor motoSpeedMps } } }",
            json!({ "n": point(PICKUP) }),
        )
        .await;
    let detour = eta_model["nearbyDrivers"]["eta"]["detourFactor"]
        .as_f64()
        .unwrap();
    let speed = eta_model["nearbyDrivers"]["eta"]["motoSpeedMps"]
        .as_f64()
        .unwrap();
    for (row, at) in list
        .as_array()
        .unwrap()
        .iter()
        .zip([near_at, soon_at, far_at])
    {
        assert_eq!(row["trip"]["status"], "REQUESTED", "{row}");
        assert_eq!(row["vehicleType"], "MOTO", "{row}");
        let distance = row["distanceMeters"].as_f64().unwrap();
        let expected = haversine_m(PICKUP, at);
        assert!(
            (distance - expected).abs() < DISTANCE_TOLERANCE_M,
            "distance {distance} m, haversine {expected} m: {row}"
        );
        let eta = row["etaSeconds"].as_f64().unwrap();
        let expected_eta = distance * detour / speed;
        assert!(
            (eta - expected_eta).abs() < 1e-9 * expected_eta,
            "eta {eta} s, expected {expected_eta} s: {row}"
        );
    }
    assert!(list[0]["scheduledAt"].is_null(), "{list}");
    assert!(list[1]["scheduledAt"].is_string(), "{list}");

    let data = app
        .ok(NEARBY_REQUESTS, json!({ "d": driver, "limit": 2 }))
        .await;
    assert_eq!(
        request_ids(&data["nearbyTripRequests"]),
        [near.clone(), soon.clone()],
        "limit 2: {data}"
    );
    let data = app
        .ok(NEARBY_REQUESTS, json!({ "d": driver, "radius": 500.0 }))
        .await;
    assert_eq!(
        request_ids(&data["nearbyTripRequests"]),
        [near.clone(), soon.clone()],
        "radius 500 m: {data}"
    );

    // A CAB driver sees only the CAB request.
    let cab_driver = app.online_driver("CAB", PICKUP.0, PICKUP.1).await;
    let data = app.ok(NEARBY_REQUESTS, json!({ "d": cab_driver })).await;
    assert_eq!(request_ids(&data["nearbyTripRequests"]), [cab], "{data}");

    // An accepted request disappears from the list.
    let body = app.driver_step("acceptTrip", &near, &other).await;
    assert!(body.get("errors").is_some(), "other driver is busy: {body}");
    let body = app.driver_step("acceptTrip", &near, &driver).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let data = app.ok(NEARBY_REQUESTS, json!({ "d": other })).await;
    assert_eq!(
        request_ids(&data["nearbyTripRequests"]),
        [soon, far],
        "{data}"
    );
    app.stop().await;
}

async fn requests_need_online(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    app.ok(
        "mutation($d: ID!) { goOffline(driverId: $d) { id } }",
        json!({ "d": driver }),
    )
    .await;
    let error = app
        .err(NEARBY_REQUESTS, json!({ "d": driver }), "CONFLICT")
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("online"),
        "{error}"
    );

    let no_fix = app.driver("MOTO").await;
    app.ok(
        "mutation($d: ID!) { goOnline(driverId: $d) { id } }",
        json!({ "d": no_fix }),
    )
    .await;
    app.err(NEARBY_REQUESTS, json!({ "d": no_fix }), "CONFLICT")
        .await;

    app.err(NEARBY_REQUESTS, json!({ "d": "999999" }), "NOT_FOUND")
        .await;
    let error = app
        .err(NEARBY_REQUESTS, json!({ "d": "abc" }), "BAD_USER_INPUT")
        .await;
    assert_eq!(error["extensions"]["field"], "driverId", "{error}");
    app.stop().await;
}
