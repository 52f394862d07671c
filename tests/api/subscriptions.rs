//! Subscriptions over WebSocket, each with both subprotocols (`graphql-transport-ws` and the
//! legacy `graphql-ws`). `driverLocation` streams only the accepted fixes of one driver,
//! `tripUpdated` streams each step of one trip in order, and `liveTrips` streams every trip.
//! Unknown ids and malformed documents end the subscription with a coded error.
//!
//! Each stream is checked by order rather than by waiting: events that must not arrive are
//! caused before the last expected one, so a leak would show up in its place.

use serde_json::{Value, json};

use crate::helpers::{Backend, Protocol, Subscription, TestApp, time_from_now};

crate::on_both_backends!(
    driver_location_stream,
    trip_updated_stream,
    live_trips_stream,
    unknown_targets,
    malformed_documents,
);

const PROTOCOLS: [Protocol; 2] = [Protocol::TransportWs, Protocol::LegacyWs];

/// A point in Porto.
const HOME: (f64, f64) = (41.1579, -8.6291);

const DRIVER_LOCATION: &str = "subscription($d: ID!) { driverLocation(driverId: $d) \
    { driverId location { lat lng } headingDeg speedMps accuracyMeters recordedAt } }";

const TRIP_UPDATED: &str = "subscription($t: ID!) { tripUpdated(tripId: $t) \
    { trip { id status driver { id } } event { tripId kind fromStatus toStatus } } }";

const LIVE_TRIPS: &str =
    "subscription { liveTrips { trip { id status } event { tripId kind toStatus } } }";

/// Opens one subscription per protocol.
async fn subscribe_all(app: &TestApp, query: &str, variables: Value) -> Vec<Subscription> {
    let mut subscriptions = Vec::new();
    for protocol in PROTOCOLS {
        subscriptions.push(app.subscribe(protocol, query, variables.clone()).await);
    }
    subscriptions
}

/// Registers a driver and puts it online without a position, so the test controls every fix.
async fn online_without_fix(app: &TestApp) -> String {
    let driver = app.driver("MOTO").await;
    app.ok(
        "mutation($d: ID!) { goOnline(driverId: $d) { id } }",
        json!({ "d": driver }),
    )
    .await;
    driver
}

async fn send_fix(app: &TestApp, driver: &str, location: Value, status: &str) {
    let body = app.update_location(driver, location).await;
    assert_eq!(
        body["data"]["updateDriverLocation"]["status"], status,
        "{body}"
    );
}

fn same_time(a: &Value, b: &str) -> bool {
    let parse = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
    a.as_str().and_then(parse).is_some() && a.as_str().and_then(parse) == parse(b)
}

async fn driver_location_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = online_without_fix(&app).await;
    let other = online_without_fix(&app).await;
    let mut subscriptions = subscribe_all(&app, DRIVER_LOCATION, json!({ "d": driver })).await;

    let t1 = time_from_now(-50);
    send_fix(
        &app,
        &driver,
        json!({ "lat": HOME.0, "lng": HOME.1, "recordedAt": t1 }),
        "ACCEPTED",
    )
    .await;
    send_fix(
        &app,
        &other,
        json!({ "lat": HOME.0, "lng": HOME.1, "recordedAt": time_from_now(-45) }),
        "ACCEPTED",
    )
    .await;
    send_fix(
        &app,
        &driver,
        json!({ "lat": HOME.0, "lng": HOME.1, "recordedAt": time_from_now(-60) }),
        "STALE",
    )
    .await;
    // About 5 km in 5 s.
    send_fix(
        &app,
        &driver,
        json!({ "lat": HOME.0 + 0.045, "lng": HOME.1, "recordedAt": time_from_now(-45) }),
        "IMPOSSIBLE_JUMP",
    )
    .await;
    let t2 = time_from_now(-40);
    let moved = (HOME.0 + 0.002, HOME.1);
    send_fix(
        &app,
        &driver,
        json!({
            "lat": moved.0, "lng": moved.1, "recordedAt": t2,
            "headingDeg": 90.0, "speedMps": 11.0, "accuracyMeters": 6.0,
        }),
        "ACCEPTED",
    )
    .await;

    for (protocol, subscription) in PROTOCOLS.iter().zip(&mut subscriptions) {
        let data = subscription.next_data().await;
        let event = &data["driverLocation"];
        assert_eq!(event["driverId"], driver.as_str(), "{protocol:?}: {data}");
        assert!(same_time(&event["recordedAt"], &t1), "{protocol:?}: {data}");
        assert!(event["headingDeg"].is_null(), "{protocol:?}: {data}");

        // The other driver's fix, the stale fix and the jump would arrive here.
        let data = subscription.next_data().await;
        let event = &data["driverLocation"];
        assert_eq!(event["driverId"], driver.as_str(), "{protocol:?}: {data}");
        assert!(
            same_time(&event["recordedAt"], &t2),
            "{protocol:?}: expected the second accepted fix, got {data}"
        );
        let lat = event["location"]["lat"].as_f64().unwrap();
        assert!((lat - moved.0).abs() < 1e-9, "{protocol:?}: {data}");
        assert_eq!(event["headingDeg"], 90.0, "{protocol:?}: {data}");
        assert_eq!(event["speedMps"], 11.0, "{protocol:?}: {data}");
        assert_eq!(event["accuracyMeters"], 6.0, "{protocol:?}: {data}");
    }
    app.stop().await;
}

async fn trip_updated_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let decliner = app.online_driver("MOTO", HOME.0, HOME.1).await;
    let taker = app.online_driver("MOTO", HOME.0, HOME.1).await;
    let other_driver = app.online_driver("MOTO", HOME.0, HOME.1).await;
    let trip = app.request_trip(&rider, "MOTO", HOME.0, HOME.1).await;
    let other = app.request_trip(&rider, "MOTO", HOME.0, HOME.1).await;
    let mut subscriptions = subscribe_all(&app, TRIP_UPDATED, json!({ "t": trip })).await;

    let offer = "mutation($t: ID!, $d: ID!) { offerTrip(tripId: $t, driverId: $d) { id } }";
    app.ok(offer, json!({ "t": trip, "d": decliner })).await;
    app.ok(offer, json!({ "t": other, "d": other_driver }))
        .await;
    app.ok(
        "mutation($t: ID!, $d: ID!) { declineTrip(tripId: $t, driverId: $d) { id } }",
        json!({ "t": trip, "d": decliner }),
    )
    .await;
    app.ok(
        "mutation($t: ID!, $r: ID!) { cancelTrip(tripId: $t, actor: {role: RIDER, id: $r}, \
         reason: \"other trip\") { id } }",
        json!({ "t": other, "r": rider }),
    )
    .await;
    for step in ["acceptTrip", "arriveAtPickup", "startTrip", "completeTrip"] {
        let body = app.driver_step(step, &trip, &taker).await;
        assert!(body.get("errors").is_none(), "{step}: {body}");
    }
    app.ok(
        "mutation($t: ID!, $r: ID!) { rateTrip(tripId: $t, by: {role: RIDER, id: $r}, stars: 5) \
         { id } }",
        json!({ "t": trip, "r": rider }),
    )
    .await;

    let expected = [
        ("OFFERED", "REQUESTED", "REQUESTED", false),
        ("OFFER_DECLINED", "REQUESTED", "REQUESTED", false),
        ("ACCEPTED", "REQUESTED", "ACCEPTED", true),
        ("ARRIVED", "ACCEPTED", "ARRIVED", true),
        ("STARTED", "ARRIVED", "STARTED", true),
        ("COMPLETED", "STARTED", "COMPLETED", true),
        ("RATED", "COMPLETED", "COMPLETED", true),
    ];
    for (protocol, subscription) in PROTOCOLS.iter().zip(&mut subscriptions) {
        for (kind, from, to, assigned) in expected {
            let data = subscription.next_data().await;
            let update = &data["tripUpdated"];
            assert_eq!(update["trip"]["id"], trip.as_str(), "{protocol:?}: {data}");
            assert_eq!(
                update["event"]["tripId"],
                trip.as_str(),
                "{protocol:?}: {data}"
            );
            assert_eq!(update["event"]["kind"], kind, "{protocol:?}: {data}");
            assert_eq!(update["event"]["fromStatus"], from, "{protocol:?}: {data}");
            assert_eq!(update["event"]["toStatus"], to, "{protocol:?}: {data}");
            assert_eq!(update["trip"]["status"], to, "{protocol:?}: {data}");
            let driver = if assigned {
                json!({ "id": taker })
            } else {
                Value::Null
            };
            assert_eq!(update["trip"]["driver"], driver, "{protocol:?}: {data}");
        }
    }
    app.stop().await;
}

async fn live_trips_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("CAB", HOME.0, HOME.1).await;
    let mut subscriptions = subscribe_all(&app, LIVE_TRIPS, json!({})).await;

    let first = app.request_trip(&rider, "CAB", HOME.0, HOME.1).await;
    let second = app.request_trip(&rider, "MOTO", HOME.0, HOME.1).await;
    let body = app.driver_step("acceptTrip", &first, &driver).await;
    assert!(body.get("errors").is_none(), "{body}");
    app.ok(
        "mutation($t: ID!, $r: ID!) { cancelTrip(tripId: $t, actor: {role: RIDER, id: $r}, \
         reason: \"too slow\") { id } }",
        json!({ "t": second, "r": rider }),
    )
    .await;

    let expected = [
        (&first, "REQUESTED", "REQUESTED"),
        (&second, "REQUESTED", "REQUESTED"),
        (&first, "ACCEPTED", "ACCEPTED"),
        (&second, "CANCELLED", "CANCELLED"),
    ];
    for (protocol, subscription) in PROTOCOLS.iter().zip(&mut subscriptions) {
        for (trip, kind, status) in expected {
            let data = subscription.next_data().await;
            let update = &data["liveTrips"];
            assert_eq!(update["trip"]["id"], trip.as_str(), "{protocol:?}: {data}");
            assert_eq!(
                update["event"]["tripId"],
                trip.as_str(),
                "{protocol:?}: {data}"
            );
            assert_eq!(update["event"]["kind"], kind, "{protocol:?}: {data}");
            assert_eq!(update["trip"]["status"], status, "{protocol:?}: {data}");
        }
    }
    app.stop().await;
}

async fn unknown_targets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (DRIVER_LOCATION, json!({ "d": "999999" }), "NOT_FOUND", None),
        (TRIP_UPDATED, json!({ "t": "999999" }), "NOT_FOUND", None),
        (
            DRIVER_LOCATION,
            json!({ "d": "abc" }),
            "BAD_USER_INPUT",
            Some("driverId"),
        ),
        (
            TRIP_UPDATED,
            json!({ "t": "0" }),
            "BAD_USER_INPUT",
            Some("tripId"),
        ),
    ];
    for protocol in PROTOCOLS {
        for (query, variables, code, field) in &cases {
            let mut subscription = app.subscribe(protocol, query, variables.clone()).await;
            let error = subscription.next_error().await;
            assert_eq!(
                error["extensions"]["code"], *code,
                "{protocol:?} {variables}: {error}"
            );
            if let Some(field) = field {
                assert_eq!(
                    error["extensions"]["field"], *field,
                    "{protocol:?} {variables}: {error}"
                );
            }
        }
    }
    app.stop().await;
}

async fn malformed_documents(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (
            "subscription { driverLocation(driverId: ",
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            "subscription { driverLocation(driverId: \"1\") { nope } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "subscription { driverLocation { recordedAt } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ("subscription { noSuchStream }", "GRAPHQL_VALIDATION_FAILED"),
    ];
    for protocol in PROTOCOLS {
        for (query, code) in cases {
            let mut subscription = app.subscribe(protocol, query, json!({})).await;
            let error = subscription.next_error().await;
            assert_eq!(
                error["extensions"]["code"], code,
                "{protocol:?} {query}: {error}"
            );
            assert!(error["message"].is_string(), "{protocol:?}: {error}");
        }
    }
    app.stop().await;
}
