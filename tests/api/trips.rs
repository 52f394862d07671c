//! Trip lifecycle over the API. Covers each operation and the fields it sets (timestamps,
//! events, cancellation, ratings, driver presence) and every illegal transition in every
//! state. Also covers wrong parties, unknown and malformed ids, input limits, drivers bound to
//! an active trip, and the state rebuilt after a restart.

use chrono::{TimeDelta, Timelike, Utc};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_code, time};

crate::on_both_backends!(
    request_without_dropoff,
    request_with_dropoff_and_schedule,
    lifecycle_to_ratings,
    cancel_by_rider,
    cancel_by_driver,
    illegal_transitions_rejected,
    wrong_party_forbidden,
    unknown_ids_not_found,
    malformed_ids_bad_input,
    wrong_vehicle_rejected,
    text_and_stars_validated,
    rating_twice_conflict,
    active_driver_blocked,
    restart_keeps_state,
);

/// Driver start position in Kigali, about 100 m from [`PICKUP`].
const DRIVER_AT: (f64, f64) = (-1.9441, 30.0619);
const PICKUP: (f64, f64) = (-1.9450, 30.0620);
const DROPOFF: (f64, f64) = (-1.9550, 30.0720);

/// Every field of a trip that the lifecycle sets.
const TRIP_FIELDS: &str = "id status vehicleType rider { id } driver { id } \
     pickup { lat lng } dropoff { lat lng } straightLineMeters scheduledAt requestedAt \
     acceptedAt arrivedAt startedAt completedAt cancelledAt cancelledBy cancelReason \
     events { kind actorRole actorId fromStatus toStatus offerId detail } \
     offers { id status } ratings { raterRole stars comment }";

async fn full_trip(app: &TestApp, trip: &str) -> Value {
    let query = format!("query($id: ID!) {{ trip(id: $id) {{ {TRIP_FIELDS} }} }}");
    let data = app.ok(&query, json!({ "id": trip })).await;
    data["trip"].clone()
}

/// Checks `events` against `(kind, actorRole, actorId, fromStatus, toStatus)` rows, in order.
fn assert_events(events: &Value, expected: &[(&str, &str, Value, Value, &str)]) {
    let list = events.as_array().expect("events is a list");
    assert_eq!(list.len(), expected.len(), "event count: {events}");
    for (i, (event, (kind, role, actor, from, to))) in list.iter().zip(expected).enumerate() {
        assert_eq!(event["kind"], *kind, "event {i} kind: {events}");
        assert_eq!(event["actorRole"], *role, "event {i} actorRole: {events}");
        assert_eq!(event["actorId"], *actor, "event {i} actorId: {events}");
        assert_eq!(event["fromStatus"], *from, "event {i} fromStatus: {events}");
        assert_eq!(event["toStatus"], *to, "event {i} toStatus: {events}");
    }
}

/// Checks that a rejected call left the trip as `before` shows it.
fn assert_unchanged(before: &Value, after: &Value, what: &str) {
    assert_eq!(after["status"], before["status"], "{what}: status changed");
    assert_eq!(after["driver"], before["driver"], "{what}: driver changed");
    let count = |v: &Value, key: &str| v[key].as_array().map_or(0, Vec::len);
    assert_eq!(
        count(after, "events"),
        count(before, "events"),
        "{what}: event count changed: {after}"
    );
    assert_eq!(after["events"], before["events"], "{what}: events changed");
    assert_eq!(after["offers"], before["offers"], "{what}: offers changed");
    assert_eq!(
        after["ratings"], before["ratings"],
        "{what}: ratings changed"
    );
}

fn step_status(body: &Value, step: &str) -> Value {
    body["data"][step]["status"].clone()
}

/// Runs the driver steps that bring a fresh trip to `state`, asserting each one.
async fn advance(app: &TestApp, trip: &str, driver: &str, state: &str) {
    let steps = [
        ("acceptTrip", "ACCEPTED"),
        ("arriveAtPickup", "ARRIVED"),
        ("startTrip", "STARTED"),
        ("completeTrip", "COMPLETED"),
    ];
    if state == "REQUESTED" {
        return;
    }
    for (step, status) in steps {
        let body = app.driver_step(step, trip, driver).await;
        assert_eq!(step_status(&body, step), status, "{step}: {body}");
        if status == state {
            return;
        }
    }
    panic!("no driver step leads to {state}");
}

async fn rate(
    app: &TestApp,
    trip: &str,
    role: &str,
    id: &str,
    stars: i64,
    comment: Value,
) -> Value {
    app.gql(
        "mutation($t: ID!, $by: ActorInput!, $s: Int!, $c: String) { rateTrip(tripId: $t, \
         by: $by, stars: $s, comment: $c) { tripId raterRole stars comment createdAt } }",
        json!({ "t": trip, "by": { "role": role, "id": id }, "s": stars, "c": comment }),
    )
    .await
}

async fn decline(app: &TestApp, trip: &str, driver: &str) -> Value {
    app.gql(
        "mutation($t: ID!, $d: ID!) { declineTrip(tripId: $t, driverId: $d) { id status } }",
        json!({ "t": trip, "d": driver }),
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

/// Trip ids in a driver's `nearbyTripRequests`.
async fn nearby_trip_ids(app: &TestApp, driver: &str) -> Vec<String> {
    let data = app
        .ok(
            "query($d: ID!) { nearbyTripRequests(driverId: $d) { trip { id } } }",
            json!({ "d": driver }),
        )
        .await;
    data["nearbyTripRequests"]
        .as_array()
        .expect("nearbyTripRequests is a list")
        .iter()
        .map(|r| r["trip"]["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Great-circle distance in meters on a sphere of radius 6 371 km.
fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlng = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * h.sqrt().asin()
}

async fn request_without_dropoff(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let before = Utc::now();
    let data = app
        .ok(
            &format!(
                "mutation($input: RequestTripInput!) {{ requestTrip(input: $input) {{ {TRIP_FIELDS} }} }}"
            ),
            json!({ "input": {
                "riderId": rider,
                "pickup": { "lat": PICKUP.0, "lng": PICKUP.1 },
                "vehicleType": "MOTO",
            } }),
        )
        .await;
    let trip = &data["requestTrip"];
    let id = trip["id"].as_str().expect("trip id").to_owned();
    assert_eq!(trip["status"], "REQUESTED", "{trip}");
    assert_eq!(trip["vehicleType"], "MOTO", "{trip}");
    assert_eq!(trip["rider"]["id"], rider.as_str(), "{trip}");
    assert!(trip["driver"].is_null(), "driver before accept: {trip}");
    assert_eq!(trip["pickup"]["lat"], PICKUP.0, "{trip}");
    assert_eq!(trip["pickup"]["lng"], PICKUP.1, "{trip}");
    assert!(trip["dropoff"].is_null(), "{trip}");
    assert!(trip["straightLineMeters"].is_null(), "{trip}");
    assert!(trip["scheduledAt"].is_null(), "{trip}");
    let requested_at = time(&trip["requestedAt"], "requestedAt");
    assert!(
        requested_at >= before - TimeDelta::seconds(1),
        "requestedAt {requested_at} is before the call ({before})"
    );
    for field in [
        "acceptedAt",
        "arrivedAt",
        "startedAt",
        "completedAt",
        "cancelledAt",
        "cancelledBy",
        "cancelReason",
    ] {
        assert!(trip[field].is_null(), "{field} set on a new trip: {trip}");
    }
    assert_events(
        &trip["events"],
        &[("REQUESTED", "RIDER", json!(rider), Value::Null, "REQUESTED")],
    );
    assert_eq!(trip["offers"], json!([]), "{trip}");
    assert_eq!(trip["ratings"], json!([]), "{trip}");

    let nearby = nearby_trip_ids(&app, &driver).await;
    assert!(
        nearby.contains(&id),
        "trip {id} missing from nearbyTripRequests: {nearby:?}"
    );
    let stored = full_trip(&app, &id).await;
    assert_eq!(
        &stored, trip,
        "trip read back differs from the mutation result"
    );
    app.stop().await;
}

async fn request_with_dropoff_and_schedule(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    // Whole seconds, so the value survives any storage precision unchanged.
    let scheduled = (Utc::now() + TimeDelta::hours(2))
        .with_nanosecond(0)
        .expect("0 ns is valid")
        .to_rfc3339();
    let data = app
        .ok(
            &format!(
                "mutation($input: RequestTripInput!) {{ requestTrip(input: $input) {{ {TRIP_FIELDS} }} }}"
            ),
            json!({ "input": {
                "riderId": rider,
                "pickup": { "lat": PICKUP.0, "lng": PICKUP.1 },
                "dropoff": { "lat": DROPOFF.0, "lng": DROPOFF.1 },
                "vehicleType": "CAB",
                "scheduledAt": scheduled,
            } }),
        )
        .await;
    let trip = &data["requestTrip"];
    assert_eq!(trip["status"], "REQUESTED", "{trip}");
    assert_eq!(trip["vehicleType"], "CAB", "{trip}");
    assert_eq!(trip["dropoff"]["lat"], DROPOFF.0, "{trip}");
    assert_eq!(trip["dropoff"]["lng"], DROPOFF.1, "{trip}");
    let meters = trip["straightLineMeters"]
        .as_f64()
        .unwrap_or_else(|| panic!("straightLineMeters missing: {trip}"));
    let expected = haversine_m(PICKUP, DROPOFF);
    assert!(
        (meters - expected).abs() < expected * 0.005,
        "straightLineMeters {meters}, expected about {expected}"
    );
    assert_eq!(
        time(&trip["scheduledAt"], "scheduledAt"),
        time(&json!(scheduled), "sent scheduledAt"),
        "{trip}"
    );

    let id = trip["id"].as_str().unwrap();
    let stored = full_trip(&app, id).await;
    assert_eq!(
        &stored, trip,
        "trip read back differs from the mutation result"
    );
    app.stop().await;
}

async fn lifecycle_to_ratings(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let fresh = app.driver_state(&driver).await;
    assert!(fresh["presence"]["activeTripId"].is_null(), "{fresh}");
    assert!(!fresh["presence"]["availableSince"].is_null(), "{fresh}");

    let steps = [
        ("acceptTrip", "ACCEPTED", "acceptedAt"),
        ("arriveAtPickup", "ARRIVED", "arrivedAt"),
        ("startTrip", "STARTED", "startedAt"),
    ];
    let mut previous = time(&full_trip(&app, &trip).await["requestedAt"], "requestedAt");
    for (step, status, stamp) in steps {
        let body = app.driver_step(step, &trip, &driver).await;
        assert_eq!(step_status(&body, step), status, "{step}: {body}");
        let record = full_trip(&app, &trip).await;
        assert_eq!(record["status"], status, "after {step}: {record}");
        assert_eq!(
            record["driver"]["id"],
            driver.as_str(),
            "after {step}: {record}"
        );
        let at = time(&record[stamp], stamp);
        assert!(
            at >= previous,
            "{stamp} {at} is before the previous step {previous}"
        );
        previous = at;
        let state = app.driver_state(&driver).await;
        assert_eq!(
            state["presence"]["activeTripId"],
            trip.as_str(),
            "activeTripId after {step}: {state}"
        );
        assert!(
            state["presence"]["availableSince"].is_null(),
            "availableSince while {status}: {state}"
        );
    }

    let body = app.driver_step("completeTrip", &trip, &driver).await;
    assert_eq!(step_status(&body, "completeTrip"), "COMPLETED", "{body}");
    let done = full_trip(&app, &trip).await;
    let completed_at = time(&done["completedAt"], "completedAt");
    assert!(
        completed_at >= previous,
        "completedAt {completed_at} before {previous}"
    );
    assert!(done["cancelledAt"].is_null(), "{done}");
    assert!(done["cancelledBy"].is_null(), "{done}");
    let state = app.driver_state(&driver).await;
    assert!(
        state["presence"]["activeTripId"].is_null(),
        "activeTripId after completion: {state}"
    );
    assert!(
        !state["presence"]["availableSince"].is_null(),
        "availableSince after completion: {state}"
    );

    let body = rate(&app, &trip, "RIDER", &rider, 4, json!("smooth ride")).await;
    let rating = &body["data"]["rateTrip"];
    assert_eq!(rating["stars"], 4, "{body}");
    assert_eq!(rating["raterRole"], "RIDER", "{body}");
    assert_eq!(rating["comment"], "smooth ride", "{body}");
    assert_eq!(rating["tripId"], trip.as_str(), "{body}");
    let state = app.driver_state(&driver).await;
    assert_eq!(state["rating"]["count"], 1, "{state}");
    assert_eq!(state["rating"]["average"], 4.0, "{state}");
    // Default prior: 4.5 stars weighted as 5 ratings.
    let smoothed = state["rating"]["smoothed"].as_f64().unwrap();
    let expected = (4.5 * 5.0 + 4.0) / 6.0;
    assert!(
        (smoothed - expected).abs() < 1e-9,
        "smoothed {smoothed}, expected {expected}"
    );

    let body = rate(&app, &trip, "DRIVER", &driver, 5, Value::Null).await;
    assert_eq!(body["data"]["rateTrip"]["raterRole"], "DRIVER", "{body}");
    assert!(body["data"]["rateTrip"]["comment"].is_null(), "{body}");
    let data = app
        .ok(
            "query($id: ID!) { rider(id: $id) { rating { average count } } }",
            json!({ "id": rider }),
        )
        .await;
    assert_eq!(data["rider"]["rating"]["count"], 1, "{data}");
    assert_eq!(data["rider"]["rating"]["average"], 5.0, "{data}");

    let done = full_trip(&app, &trip).await;
    assert_eq!(
        done["status"], "COMPLETED",
        "ratings moved the trip: {done}"
    );
    assert_eq!(
        done["ratings"],
        json!([
            { "raterRole": "RIDER", "stars": 4, "comment": "smooth ride" },
            { "raterRole": "DRIVER", "stars": 5, "comment": null },
        ]),
        "{done}"
    );
    let (r, d) = (json!(rider), json!(driver));
    assert_events(
        &done["events"],
        &[
            ("REQUESTED", "RIDER", r.clone(), Value::Null, "REQUESTED"),
            (
                "ACCEPTED",
                "DRIVER",
                d.clone(),
                json!("REQUESTED"),
                "ACCEPTED",
            ),
            ("ARRIVED", "DRIVER", d.clone(), json!("ACCEPTED"), "ARRIVED"),
            ("STARTED", "DRIVER", d.clone(), json!("ARRIVED"), "STARTED"),
            (
                "COMPLETED",
                "DRIVER",
                d.clone(),
                json!("STARTED"),
                "COMPLETED",
            ),
            ("RATED", "RIDER", r, json!("COMPLETED"), "COMPLETED"),
            ("RATED", "DRIVER", d, json!("COMPLETED"), "COMPLETED"),
        ],
    );

    let body = go_offline(&app, &driver).await;
    assert_eq!(
        body["data"]["goOffline"]["presence"]["online"], false,
        "driver with a completed trip cannot go offline: {body}"
    );
    app.stop().await;
}

async fn cancel_by_rider(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;

    // From REQUESTED: no driver is involved.
    let open = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let body = app
        .cancel_trip(&open, "RIDER", &rider, "changed my mind")
        .await;
    let cancelled = &body["data"]["cancelTrip"];
    assert_eq!(cancelled["status"], "CANCELLED", "{body}");
    assert_eq!(cancelled["cancelledBy"], "RIDER", "{body}");
    assert_eq!(cancelled["cancelReason"], "changed my mind", "{body}");
    let record = full_trip(&app, &open).await;
    let cancelled_at = time(&record["cancelledAt"], "cancelledAt");
    assert!(
        cancelled_at >= time(&record["requestedAt"], "requestedAt"),
        "{record}"
    );
    assert!(record["driver"].is_null(), "{record}");
    assert!(record["acceptedAt"].is_null(), "{record}");
    assert_events(
        &record["events"],
        &[
            ("REQUESTED", "RIDER", json!(rider), Value::Null, "REQUESTED"),
            (
                "CANCELLED",
                "RIDER",
                json!(rider),
                json!("REQUESTED"),
                "CANCELLED",
            ),
        ],
    );
    assert_eq!(record["events"][1]["detail"], "changed my mind", "{record}");
    let nearby = nearby_trip_ids(&app, &driver).await;
    assert!(
        !nearby.contains(&open),
        "cancelled trip {open} still in nearbyTripRequests: {nearby:?}"
    );

    // From ARRIVED: the driver is released.
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    advance(&app, &trip, &driver, "ARRIVED").await;
    let body = app
        .cancel_trip(&trip, "RIDER", &rider, "driver too late")
        .await;
    assert_eq!(body["data"]["cancelTrip"]["status"], "CANCELLED", "{body}");
    assert_eq!(body["data"]["cancelTrip"]["cancelledBy"], "RIDER", "{body}");
    let record = full_trip(&app, &trip).await;
    assert!(!record["cancelledAt"].is_null(), "{record}");
    assert!(
        !record["arrivedAt"].is_null(),
        "arrivedAt lost on cancel: {record}"
    );
    assert!(record["startedAt"].is_null(), "{record}");
    assert_eq!(record["driver"]["id"], driver.as_str(), "{record}");
    let last = &record["events"][3];
    assert_eq!(last["kind"], "CANCELLED", "{record}");
    assert_eq!(last["fromStatus"], "ARRIVED", "{record}");
    assert_eq!(last["actorRole"], "RIDER", "{record}");
    let state = app.driver_state(&driver).await;
    assert!(
        state["presence"]["activeTripId"].is_null(),
        "activeTripId after the rider cancelled: {state}"
    );
    assert!(
        !state["presence"]["availableSince"].is_null(),
        "availableSince after the rider cancelled: {state}"
    );
    app.stop().await;
}

async fn cancel_by_driver(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await;
    let other = app.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "CAB", PICKUP.0, PICKUP.1).await;
    advance(&app, &trip, &driver, "ACCEPTED").await;

    let body = app
        .cancel_trip(&trip, "DRIVER", &driver, "  flat tyre \n")
        .await;
    let cancelled = &body["data"]["cancelTrip"];
    assert_eq!(cancelled["status"], "CANCELLED", "{body}");
    assert_eq!(cancelled["cancelledBy"], "DRIVER", "{body}");
    assert_eq!(
        cancelled["cancelReason"], "flat tyre",
        "reason not trimmed: {body}"
    );
    assert!(!cancelled["cancelledAt"].is_null(), "{body}");

    let record = full_trip(&app, &trip).await;
    assert_events(
        &record["events"],
        &[
            ("REQUESTED", "RIDER", json!(rider), Value::Null, "REQUESTED"),
            (
                "ACCEPTED",
                "DRIVER",
                json!(driver),
                json!("REQUESTED"),
                "ACCEPTED",
            ),
            (
                "CANCELLED",
                "DRIVER",
                json!(driver),
                json!("ACCEPTED"),
                "CANCELLED",
            ),
        ],
    );
    assert_eq!(record["events"][2]["detail"], "flat tyre", "{record}");
    let state = app.driver_state(&driver).await;
    assert!(
        state["presence"]["activeTripId"].is_null(),
        "activeTripId after the driver cancelled: {state}"
    );
    assert!(
        !state["presence"]["availableSince"].is_null(),
        "availableSince after the driver cancelled: {state}"
    );
    // A cancelled trip is closed and does not return to the open requests.
    let nearby = nearby_trip_ids(&app, &other).await;
    assert!(
        !nearby.contains(&trip),
        "cancelled trip {trip} back in nearbyTripRequests: {nearby:?}"
    );
    app.stop().await;
}

/// Every action. The tests call each one as a party that may act on the trip, so only the
/// trip's state can make it illegal.
const ACTIONS: [&str; 8] = [
    "offerTrip",
    "declineTrip",
    "acceptTrip",
    "arriveAtPickup",
    "startTrip",
    "completeTrip",
    "cancelTrip",
    "rateTrip",
];

/// Actions that the state machine allows in `state`.
fn legal_actions(state: &str) -> &'static [&'static str] {
    match state {
        "REQUESTED" => &["offerTrip", "declineTrip", "acceptTrip", "cancelTrip"],
        "ACCEPTED" => &["arriveAtPickup", "cancelTrip"],
        "ARRIVED" => &["startTrip", "cancelTrip"],
        "STARTED" => &["completeTrip"],
        "COMPLETED" => &["rateTrip"],
        "CANCELLED" => &[],
        _ => panic!("unknown state {state}"),
    }
}

async fn illegal_transitions_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    // A free driver of the right type, online near the pickup, for offers and accepts.
    let free = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let states = [
        "REQUESTED",
        "ACCEPTED",
        "ARRIVED",
        "STARTED",
        "COMPLETED",
        "CANCELLED",
    ];
    for state in states {
        let assigned = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
        let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
        if state == "CANCELLED" {
            // Cancelled after acceptance, so the trip has a driver whose steps must fail.
            advance(&app, &trip, &assigned, "ACCEPTED").await;
            let body = app
                .cancel_trip(&trip, "RIDER", &rider, "no longer needed")
                .await;
            assert_eq!(body["data"]["cancelTrip"]["status"], "CANCELLED", "{body}");
        } else {
            advance(&app, &trip, &assigned, state).await;
        }
        let before = app.trip_record(&trip).await;
        assert_eq!(before["status"], state, "setup: {before}");
        let step_driver = if state == "REQUESTED" {
            &free
        } else {
            &assigned
        };

        for action in ACTIONS {
            if legal_actions(state).contains(&action) {
                continue;
            }
            let body = match action {
                "offerTrip" => app.offer_trip(&trip, &free).await,
                "declineTrip" => decline(&app, &trip, step_driver).await,
                "acceptTrip" => app.driver_step(action, &trip, &free).await,
                "cancelTrip" => app.cancel_trip(&trip, "RIDER", &rider, "too late").await,
                "rateTrip" => rate(&app, &trip, "RIDER", &rider, 5, Value::Null).await,
                step => app.driver_step(step, &trip, step_driver).await,
            };
            let what = format!("{action} on a {state} trip");
            assert_code(&body, "INVALID_TRANSITION", &what);
            assert_eq!(
                body["errors"][0]["extensions"]["tripStatus"], state,
                "{what}: {body}"
            );
            assert!(
                body["data"].is_null() || body["data"][action].is_null(),
                "{what} returned data: {body}"
            );
            let after = app.trip_record(&trip).await;
            assert_unchanged(&before, &after, &what);
        }
    }
    let state = app.driver_state(&free).await;
    assert!(
        state["presence"]["activeTripId"].is_null(),
        "a rejected accept bound the driver: {state}"
    );
    assert_eq!(state["offersAccepted"], 0, "{state}");
    assert_eq!(state["offersRejected"], 0, "{state}");
    app.stop().await;
}

async fn wrong_party_forbidden(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let stranger = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let other = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;

    // Another driver tries each step at the state where the step is legal.
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    advance(&app, &trip, &driver, "ACCEPTED").await;
    for (step, next) in [
        ("arriveAtPickup", "ARRIVED"),
        ("startTrip", "STARTED"),
        ("completeTrip", "COMPLETED"),
    ] {
        let before = app.trip_record(&trip).await;
        let body = app.driver_step(step, &trip, &other).await;
        assert_code(&body, "FORBIDDEN", &format!("{step} by another driver"));
        assert_unchanged(&before, &app.trip_record(&trip).await, step);
        let body = app.driver_step(step, &trip, &driver).await;
        assert_eq!(
            step_status(&body, step),
            next,
            "{step} by the driver: {body}"
        );
    }

    // Ratings of the completed trip by people who were not on it.
    let before = app.trip_record(&trip).await;
    let body = rate(&app, &trip, "RIDER", &stranger, 5, Value::Null).await;
    assert_code(&body, "FORBIDDEN", "rating by another rider");
    let body = rate(&app, &trip, "DRIVER", &other, 5, Value::Null).await;
    assert_code(&body, "FORBIDDEN", "rating by another driver");
    assert_unchanged(&before, &app.trip_record(&trip).await, "foreign ratings");

    // Cancellations by someone who is not a party.
    let open = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let before = app.trip_record(&open).await;
    let body = app.cancel_trip(&open, "RIDER", &stranger, "not mine").await;
    assert_code(&body, "FORBIDDEN", "cancel by another rider");
    let body = app
        .cancel_trip(&open, "DRIVER", &other, "not assigned")
        .await;
    assert_code(&body, "FORBIDDEN", "cancel of a REQUESTED trip by a driver");
    assert_unchanged(&before, &app.trip_record(&open).await, "foreign cancels");

    advance(&app, &open, &driver, "ACCEPTED").await;
    let before = app.trip_record(&open).await;
    let body = app
        .cancel_trip(&open, "DRIVER", &other, "not assigned")
        .await;
    assert_code(&body, "FORBIDDEN", "cancel by a driver who is not assigned");
    let body = app.cancel_trip(&open, "RIDER", &stranger, "not mine").await;
    assert_code(
        &body,
        "FORBIDDEN",
        "cancel of an ACCEPTED trip by another rider",
    );
    assert_unchanged(&before, &app.trip_record(&open).await, "foreign cancels");
    app.stop().await;
}

async fn unknown_ids_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let missing = "999999";

    let body = app
        .gql(
            "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id } }",
            json!({ "input": {
                "riderId": missing,
                "pickup": { "lat": PICKUP.0, "lng": PICKUP.1 },
                "vehicleType": "MOTO",
            } }),
        )
        .await;
    assert_code(&body, "NOT_FOUND", "requestTrip by an unknown rider");

    for step in ["acceptTrip", "arriveAtPickup", "startTrip", "completeTrip"] {
        let body = app.driver_step(step, missing, &driver).await;
        assert_code(&body, "NOT_FOUND", &format!("{step} of an unknown trip"));
    }
    let body = app.offer_trip(missing, &driver).await;
    assert_code(&body, "NOT_FOUND", "offerTrip of an unknown trip");
    let body = decline(&app, missing, &driver).await;
    assert_code(&body, "NOT_FOUND", "declineTrip of an unknown trip");
    let body = app.cancel_trip(missing, "RIDER", &rider, "gone").await;
    assert_code(&body, "NOT_FOUND", "cancelTrip of an unknown trip");
    let body = rate(&app, missing, "RIDER", &rider, 5, Value::Null).await;
    assert_code(&body, "NOT_FOUND", "rateTrip of an unknown trip");
    let data = app
        .ok(
            "query($id: ID!) { trip(id: $id) { id } }",
            json!({ "id": missing }),
        )
        .await;
    assert!(data["trip"].is_null(), "unknown trip is not null: {data}");

    let before = app.trip_record(&trip).await;
    let body = app.driver_step("acceptTrip", &trip, missing).await;
    assert_code(&body, "NOT_FOUND", "acceptTrip by an unknown driver");
    let body = app.offer_trip(&trip, missing).await;
    assert_code(&body, "NOT_FOUND", "offerTrip to an unknown driver");
    let body = decline(&app, &trip, missing).await;
    assert_code(&body, "NOT_FOUND", "declineTrip by an unknown driver");
    assert_unchanged(&before, &app.trip_record(&trip).await, "unknown driver");

    // The driver steps name an unknown driver as such, like acceptTrip does.
    advance(&app, &trip, &driver, "ACCEPTED").await;
    let before = app.trip_record(&trip).await;
    for step in ["arriveAtPickup", "startTrip", "completeTrip"] {
        let body = app.driver_step(step, &trip, missing).await;
        assert_code(&body, "NOT_FOUND", &format!("{step} by an unknown driver"));
    }
    assert_unchanged(
        &before,
        &app.trip_record(&trip).await,
        "unknown driver steps",
    );
    let body = go_offline(&app, missing).await;
    assert_code(&body, "NOT_FOUND", "goOffline of an unknown driver");
    app.stop().await;
}

async fn malformed_ids_bad_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let before = app.trip_record(&trip).await;

    for bad in ["abc", "-1", "0", "1.5", ""] {
        let checks: Vec<(String, Value, &str)> = vec![
            (
                "acceptTrip tripId".into(),
                app.driver_step("acceptTrip", bad, &driver).await,
                "tripId",
            ),
            (
                "acceptTrip driverId".into(),
                app.driver_step("acceptTrip", &trip, bad).await,
                "driverId",
            ),
            (
                "arriveAtPickup driverId".into(),
                app.driver_step("arriveAtPickup", &trip, bad).await,
                "driverId",
            ),
            (
                "offerTrip driverId".into(),
                app.offer_trip(&trip, bad).await,
                "driverId",
            ),
            (
                "declineTrip tripId".into(),
                decline(&app, bad, &driver).await,
                "tripId",
            ),
            (
                "cancelTrip tripId".into(),
                app.cancel_trip(bad, "RIDER", &rider, "x").await,
                "tripId",
            ),
            (
                "cancelTrip actor.id".into(),
                app.cancel_trip(&trip, "RIDER", bad, "x").await,
                "actor.id",
            ),
            (
                "rateTrip by.id".into(),
                rate(&app, &trip, "RIDER", bad, 5, Value::Null).await,
                "by.id",
            ),
            (
                "requestTrip riderId".into(),
                app.gql(
                    "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id } }",
                    json!({ "input": {
                        "riderId": bad,
                        "pickup": { "lat": PICKUP.0, "lng": PICKUP.1 },
                        "vehicleType": "MOTO",
                    } }),
                )
                .await,
                "input.riderId",
            ),
            (
                "trip id".into(),
                app.gql(
                    "query($id: ID!) { trip(id: $id) { id } }",
                    json!({ "id": bad }),
                )
                .await,
                "id",
            ),
        ];
        for (what, body, field) in checks {
            let what = format!("{what} = {bad:?}");
            assert_code(&body, "BAD_USER_INPUT", &what);
            assert_eq!(
                body["errors"][0]["extensions"]["field"], field,
                "{what}: {body}"
            );
        }
    }
    assert_unchanged(&before, &app.trip_record(&trip).await, "malformed ids");
    app.stop().await;
}

async fn wrong_vehicle_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let moto = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "CAB", PICKUP.0, PICKUP.1).await;
    let before = app.trip_record(&trip).await;

    let body = app.driver_step("acceptTrip", &trip, &moto).await;
    assert_code(&body, "BAD_USER_INPUT", "MOTO driver accepting a CAB trip");
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "driverId",
        "{body}"
    );
    assert_unchanged(&before, &app.trip_record(&trip).await, "wrong vehicle");
    let state = app.driver_state(&moto).await;
    assert!(state["presence"]["activeTripId"].is_null(), "{state}");
    let nearby = nearby_trip_ids(&app, &moto).await;
    assert!(
        !nearby.contains(&trip),
        "CAB trip offered to a MOTO driver in nearbyTripRequests: {nearby:?}"
    );
    app.stop().await;
}

async fn text_and_stars_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;

    let before = app.trip_record(&trip).await;
    let long = "x".repeat(501);
    for (reason, what) in [
        ("", "empty reason"),
        ("   \t", "blank reason"),
        (long.as_str(), "501-character reason"),
    ] {
        let body = app.cancel_trip(&trip, "RIDER", &rider, reason).await;
        assert_code(&body, "BAD_USER_INPUT", what);
        assert_eq!(
            body["errors"][0]["extensions"]["field"], "reason",
            "{what}: {body}"
        );
        assert_unchanged(&before, &app.trip_record(&trip).await, what);
    }

    advance(&app, &trip, &driver, "COMPLETED").await;
    let before = app.trip_record(&trip).await;
    for (stars, comment, field, what) in [
        (0, Value::Null, "stars", "0 stars"),
        (6, Value::Null, "stars", "6 stars"),
        (-1, Value::Null, "stars", "-1 stars"),
        (
            5,
            json!("y".repeat(501)),
            "comment",
            "501-character comment",
        ),
    ] {
        let body = rate(&app, &trip, "RIDER", &rider, stars, comment).await;
        assert_code(&body, "BAD_USER_INPUT", what);
        assert_eq!(
            body["errors"][0]["extensions"]["field"], field,
            "{what}: {body}"
        );
        assert_unchanged(&before, &app.trip_record(&trip).await, what);
    }
    let state = app.driver_state(&driver).await;
    assert_eq!(
        state["rating"]["count"], 0,
        "rejected rating counted: {state}"
    );

    // The limits are inclusive: 1 and 5 stars, 500 characters.
    let body = rate(&app, &trip, "RIDER", &rider, 1, json!("z".repeat(500))).await;
    assert_eq!(body["data"]["rateTrip"]["stars"], 1, "{body}");
    let body = rate(&app, &trip, "DRIVER", &driver, 5, json!("fine")).await;
    assert_eq!(body["data"]["rateTrip"]["stars"], 5, "{body}");

    let open = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let body = app
        .cancel_trip(&open, "RIDER", &rider, &"w".repeat(500))
        .await;
    assert_eq!(
        body["data"]["cancelTrip"]["status"], "CANCELLED",
        "500 characters: {body}"
    );
    app.stop().await;
}

async fn rating_twice_conflict(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    advance(&app, &trip, &driver, "COMPLETED").await;

    for (role, id) in [("RIDER", &rider), ("DRIVER", &driver)] {
        let body = rate(&app, &trip, role, id, 4, Value::Null).await;
        assert_eq!(
            body["data"]["rateTrip"]["stars"], 4,
            "first {role} rating: {body}"
        );
        let before = app.trip_record(&trip).await;
        let body = rate(&app, &trip, role, id, 1, json!("again")).await;
        assert_code(&body, "CONFLICT", &format!("second {role} rating"));
        assert_unchanged(&before, &app.trip_record(&trip).await, "second rating");
    }
    let state = app.driver_state(&driver).await;
    assert_eq!(state["rating"]["count"], 1, "{state}");
    assert_eq!(state["rating"]["average"], 4.0, "{state}");
    let data = app
        .ok(
            "query($id: ID!) { rider(id: $id) { rating { average count } } }",
            json!({ "id": rider }),
        )
        .await;
    assert_eq!(data["rider"]["rating"]["count"], 1, "{data}");
    assert_eq!(data["rider"]["rating"]["average"], 4.0, "{data}");
    app.stop().await;
}

async fn active_driver_blocked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let first = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let second = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    advance(&app, &first, &driver, "ACCEPTED").await;

    for state in ["ACCEPTED", "ARRIVED", "STARTED"] {
        if state != "ACCEPTED" {
            let step = if state == "ARRIVED" {
                "arriveAtPickup"
            } else {
                "startTrip"
            };
            let body = app.driver_step(step, &first, &driver).await;
            assert_eq!(step_status(&body, step), state, "{body}");
        }
        let before = app.trip_record(&second).await;
        let body = app.driver_step("acceptTrip", &second, &driver).await;
        assert_code(&body, "CONFLICT", &format!("second accept while {state}"));
        assert_unchanged(&before, &app.trip_record(&second).await, "second accept");
        let body = go_offline(&app, &driver).await;
        assert_code(&body, "CONFLICT", &format!("goOffline while {state}"));
        let presence = app.driver_state(&driver).await["presence"].clone();
        assert_eq!(presence["online"], true, "{presence}");
        assert_eq!(presence["activeTripId"], first.as_str(), "{presence}");
    }
    let data = app
        .ok(
            "query($d: ID!) { trips(filter: {driverId: $d}) { id status } }",
            json!({ "d": driver }),
        )
        .await;
    assert_eq!(
        data["trips"],
        json!([{ "id": first, "status": "STARTED" }]),
        "driver's trips: {data}"
    );

    let body = app.driver_step("completeTrip", &first, &driver).await;
    assert_eq!(step_status(&body, "completeTrip"), "COMPLETED", "{body}");
    let body = app.driver_step("acceptTrip", &second, &driver).await;
    assert_eq!(
        step_status(&body, "acceptTrip"),
        "ACCEPTED",
        "accept after completing the first trip: {body}"
    );
    app.stop().await;
}

async fn restart_keeps_state(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let busy = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let watcher = app.online_driver("MOTO", -1.9445, 30.0625).await;
    let offline = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let body = go_offline(&app, &offline).await;
    assert_eq!(
        body["data"]["goOffline"]["presence"]["online"], false,
        "{body}"
    );
    let open = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let active = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    advance(&app, &active, &busy, "ARRIVED").await;
    let watcher_before = app.driver_state(&watcher).await;

    app.restart(|_| {}).await;

    let nearby = nearby_trip_ids(&app, &watcher).await;
    assert!(
        nearby.contains(&open),
        "open trip {open} missing from nearbyTripRequests after restart: {nearby:?}"
    );
    assert!(
        !nearby.contains(&active),
        "active trip {active} listed as open after restart: {nearby:?}"
    );

    let state = app.driver_state(&busy).await;
    assert_eq!(
        state["presence"]["activeTripId"],
        active.as_str(),
        "active trip lost on restart: {state}"
    );
    let before = app.trip_record(&open).await;
    let body = app.driver_step("acceptTrip", &open, &busy).await;
    assert_code(&body, "CONFLICT", "accept by a busy driver after restart");
    assert_unchanged(&before, &app.trip_record(&open).await, "busy accept");
    let body = go_offline(&app, &busy).await;
    assert_code(
        &body,
        "CONFLICT",
        "goOffline of a busy driver after restart",
    );

    let watcher_after = app.driver_state(&watcher).await;
    assert_eq!(
        watcher_after["presence"]["online"], true,
        "online state lost: {watcher_after}"
    );
    assert_eq!(
        watcher_after["presence"]["location"], watcher_before["presence"]["location"],
        "position lost on restart"
    );
    // PostgreSQL keeps microseconds, so compare the instants at that precision.
    let since_before = time(
        &watcher_before["presence"]["availableSince"],
        "availableSince",
    );
    let since_after = time(
        &watcher_after["presence"]["availableSince"],
        "availableSince",
    );
    assert!(
        (since_after - since_before).abs() < TimeDelta::microseconds(1),
        "availableSince changed on restart: {since_before} -> {since_after}"
    );
    let state = app.driver_state(&offline).await;
    assert_eq!(
        state["presence"]["online"], false,
        "offline driver came back online: {state}"
    );
    let body = app
        .gql(
            "query($d: ID!) { nearbyTripRequests(driverId: $d) { trip { id } } }",
            json!({ "d": offline }),
        )
        .await;
    assert_code(&body, "CONFLICT", "nearbyTripRequests of an offline driver");

    // The rebuilt state keeps working: the busy driver finishes, the open trip is taken.
    for (step, status) in [("startTrip", "STARTED"), ("completeTrip", "COMPLETED")] {
        let body = app.driver_step(step, &active, &busy).await;
        assert_eq!(
            step_status(&body, step),
            status,
            "{step} after restart: {body}"
        );
    }
    let body = go_offline(&app, &busy).await;
    assert_eq!(
        body["data"]["goOffline"]["presence"]["online"], false,
        "{body}"
    );
    let body = app.driver_step("acceptTrip", &open, &watcher).await;
    assert_eq!(step_status(&body, "acceptTrip"), "ACCEPTED", "{body}");
    app.stop().await;
}
