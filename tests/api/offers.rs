//! Offers over the API. Covers creation with its expiry time, the hold a pending offer puts
//! on the trip, declines, acceptance through an offer and withdrawal on cancel. Also covers
//! drivers who cannot be offered a trip, expiry by the background sweep (also across a
//! restart), and the smoothed acceptance rate.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::helpers::{Backend, Protocol, TestApp, assert_code, eventually, time};

crate::on_both_backends!(
    offer_creates_pending,
    pending_offer_blocks_others,
    decline_keeps_trip_open,
    decline_without_offer,
    accept_through_offer,
    cancel_withdraws_offer,
    offer_to_unavailable_driver,
    offer_expires,
    late_accept_expires_offer,
    expiry_after_restart,
    pending_offer_survives_restart,
    acceptance_rate_smoothed,
);

const DRIVER_AT: (f64, f64) = (-1.9441, 30.0619);
const PICKUP: (f64, f64) = (-1.9450, 30.0620);

/// Default `acceptance_prior` and `acceptance_prior_weight` of the ranking.
const PRIOR: f64 = 0.8;
const PRIOR_WEIGHT: f64 = 10.0;

/// Sweep interval that keeps the sweep from running again during a test: the first sweep
/// runs at start, the next one an hour later.
const NO_SWEEP_MS: u64 = 3_600_000;

fn assert_unchanged(before: &Value, after: &Value, what: &str) {
    assert_eq!(after["status"], before["status"], "{what}: status changed");
    assert_eq!(after["driver"], before["driver"], "{what}: driver changed");
    assert_eq!(after["events"], before["events"], "{what}: events changed");
    assert_eq!(after["offers"], before["offers"], "{what}: offers changed");
}

fn expected_rate(accepted: f64, rejected: f64) -> f64 {
    (PRIOR * PRIOR_WEIGHT + accepted) / (PRIOR_WEIGHT + accepted + rejected)
}

fn assert_rate(state: &Value, expected: f64) {
    let rate = state["acceptanceRate"]
        .as_f64()
        .unwrap_or_else(|| panic!("acceptanceRate missing: {state}"));
    assert!(
        (rate - expected).abs() < 1e-9,
        "acceptanceRate {rate}, expected {expected}: {state}"
    );
}

async fn decline(app: &TestApp, trip: &str, driver: &str, reason: Value) -> Value {
    app.gql(
        "mutation($t: ID!, $d: ID!, $r: String) { declineTrip(tripId: $t, driverId: $d, \
         reason: $r) { id status respondedAt declineReason } }",
        json!({ "t": trip, "d": driver, "r": reason }),
    )
    .await
}

/// Offers of a trip with the fields the tests check.
async fn offers(app: &TestApp, trip: &str) -> Vec<Value> {
    let data = app
        .ok(
            "query($id: ID!) { trip(id: $id) { offers { id status respondedAt expiresAt \
             declineReason driver { id } } } }",
            json!({ "id": trip }),
        )
        .await;
    data["trip"]["offers"]
        .as_array()
        .expect("offers is a list")
        .clone()
}

/// Offers `trip` to `driver`, failing the test unless the offer is PENDING, and returns it.
async fn offer_ok(app: &TestApp, trip: &str, driver: &str) -> Value {
    let body = app.offer_trip(trip, driver).await;
    assert_eq!(body["data"]["offerTrip"]["status"], "PENDING", "{body}");
    body["data"]["offerTrip"].clone()
}

/// Sleeps until the server's clock, which is this machine's, has passed `expires_at`.
async fn sleep_past(expires_at: DateTime<Utc>) {
    let left = expires_at - Utc::now() + TimeDelta::milliseconds(200);
    if let Ok(left) = left.to_std() {
        tokio::time::sleep(left).await;
    }
}

async fn offer_status(app: &TestApp, trip: &str, offer: &str) -> Value {
    offers(app, trip)
        .await
        .into_iter()
        .find(|o| o["id"] == offer)
        .unwrap_or_else(|| panic!("offer {offer} missing from trip {trip}"))["status"]
        .clone()
}

async fn offer_creates_pending(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;

    let offer = offer_ok(&app, &trip, &driver).await;
    assert_eq!(offer["tripId"], trip.as_str(), "{offer}");
    assert_eq!(offer["driver"]["id"], driver.as_str(), "{offer}");
    assert!(offer["respondedAt"].is_null(), "{offer}");
    assert!(offer["declineReason"].is_null(), "{offer}");
    let created = time(&offer["createdAt"], "createdAt");
    let expires = time(&offer["expiresAt"], "expiresAt");
    // Default offer_ttl_seconds is 30.
    assert_eq!(
        expires - created,
        TimeDelta::seconds(30),
        "expiresAt is not createdAt + 30 s: {offer}"
    );
    let distance = offer["distanceMeters"]
        .as_f64()
        .unwrap_or_else(|| panic!("distanceMeters missing: {offer}"));
    assert!(
        (90.0..115.0).contains(&distance),
        "driver is about 100 m from the pickup, distanceMeters is {distance}"
    );

    let record = app.trip_record(&trip).await;
    assert_eq!(
        record["status"], "REQUESTED",
        "an offer moved the trip: {record}"
    );
    assert!(record["driver"].is_null(), "{record}");
    assert_eq!(
        record["offers"],
        json!([{ "id": offer["id"], "status": "PENDING", "declineReason": null }]),
        "{record}"
    );
    let events = record["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{record}");
    let offered = &events[1];
    assert_eq!(offered["kind"], "OFFERED", "{record}");
    assert_eq!(offered["offerId"], offer["id"], "{record}");
    assert_eq!(offered["fromStatus"], "REQUESTED", "{record}");
    assert_eq!(offered["toStatus"], "REQUESTED", "{record}");
    assert_eq!(
        offered["actorRole"], "RIDER",
        "the rider picks the driver: {record}"
    );
    assert_eq!(offered["actorId"], rider.as_str(), "{record}");

    let state = app.driver_state(&driver).await;
    assert!(
        state["presence"]["activeTripId"].is_null(),
        "an offer bound the driver: {state}"
    );
    app.stop().await;
}

async fn pending_offer_blocks_others(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let offered = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let other = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let offer = offer_ok(&app, &trip, &offered).await;
    let before = app.trip_record(&trip).await;

    let body = app.driver_step("acceptTrip", &trip, &other).await;
    assert_code(&body, "CONFLICT", "accept by another driver while offered");
    assert_unchanged(&before, &app.trip_record(&trip).await, "accept by another");
    let body = app.offer_trip(&trip, &other).await;
    assert_code(&body, "CONFLICT", "second offer to another driver");
    assert_unchanged(&before, &app.trip_record(&trip).await, "second offer");
    let body = app.offer_trip(&trip, &offered).await;
    assert_code(&body, "CONFLICT", "second offer to the same driver");
    assert_unchanged(&before, &app.trip_record(&trip).await, "repeated offer");
    let state = app.driver_state(&other).await;
    assert!(state["presence"]["activeTripId"].is_null(), "{state}");

    let body = app.driver_step("acceptTrip", &trip, &offered).await;
    assert_eq!(
        body["data"]["acceptTrip"]["status"], "ACCEPTED",
        "offered driver accepts: {body}"
    );
    assert_eq!(
        offer_status(&app, &trip, offer["id"].as_str().unwrap()).await,
        "ACCEPTED"
    );
    app.stop().await;
}

async fn decline_keeps_trip_open(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await;
    let next = app.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "CAB", PICKUP.0, PICKUP.1).await;
    let offer = offer_ok(&app, &trip, &driver).await;
    let offer_id = offer["id"].as_str().unwrap().to_owned();

    let before = app.trip_record(&trip).await;
    let body = decline(&app, &trip, &driver, json!("x".repeat(501))).await;
    assert_code(&body, "BAD_USER_INPUT", "501-character decline reason");
    assert_eq!(body["errors"][0]["extensions"]["field"], "reason", "{body}");
    assert_unchanged(&before, &app.trip_record(&trip).await, "long reason");

    let body = decline(&app, &trip, &driver, json!(" too far ")).await;
    let declined = &body["data"]["declineTrip"];
    assert_eq!(declined["id"], offer_id.as_str(), "{body}");
    assert_eq!(declined["status"], "DECLINED", "{body}");
    assert_eq!(declined["declineReason"], "too far", "{body}");
    let responded = time(&declined["respondedAt"], "respondedAt");
    assert!(
        responded >= time(&offer["createdAt"], "createdAt"),
        "{body}"
    );

    let record = app.trip_record(&trip).await;
    assert_eq!(
        record["status"], "REQUESTED",
        "a decline moved the trip: {record}"
    );
    let events = record["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{record}");
    let event = &events[2];
    assert_eq!(event["kind"], "OFFER_DECLINED", "{record}");
    assert_eq!(event["actorRole"], "DRIVER", "{record}");
    assert_eq!(event["actorId"], driver.as_str(), "{record}");
    assert_eq!(event["offerId"], offer_id.as_str(), "{record}");
    assert_eq!(event["detail"], "too far", "{record}");
    assert_eq!(event["fromStatus"], "REQUESTED", "{record}");
    assert_eq!(event["toStatus"], "REQUESTED", "{record}");

    let state = app.driver_state(&driver).await;
    assert_eq!(state["offersRejected"], 1, "{state}");
    assert_eq!(state["offersAccepted"], 0, "{state}");
    assert_rate(&state, expected_rate(0.0, 1.0));

    let before = app.trip_record(&trip).await;
    let body = decline(&app, &trip, &driver, Value::Null).await;
    assert_code(&body, "INVALID_TRANSITION", "declining a declined offer");
    assert_unchanged(&before, &app.trip_record(&trip).await, "second decline");
    let state = app.driver_state(&driver).await;
    assert_eq!(
        state["offersRejected"], 1,
        "second decline counted: {state}"
    );

    // The trip is free again: visible to other drivers and open to a new offer.
    let data = app
        .ok(
            "query($d: ID!) { nearbyTripRequests(driverId: $d) { trip { id } } }",
            json!({ "d": next }),
        )
        .await;
    let listed = data["nearbyTripRequests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["trip"]["id"] == trip.as_str());
    assert!(listed, "declined trip not listed for other drivers: {data}");
    offer_ok(&app, &trip, &next).await;
    app.stop().await;
}

async fn decline_without_offer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let offered = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let other = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;

    let before = app.trip_record(&trip).await;
    let body = decline(&app, &trip, &other, Value::Null).await;
    assert_code(&body, "NOT_FOUND", "decline without any offer");
    assert_unchanged(
        &before,
        &app.trip_record(&trip).await,
        "decline without offer",
    );

    offer_ok(&app, &trip, &offered).await;
    let before = app.trip_record(&trip).await;
    let body = decline(&app, &trip, &other, Value::Null).await;
    assert_code(
        &body,
        "NOT_FOUND",
        "decline of an offer made to someone else",
    );
    assert_unchanged(&before, &app.trip_record(&trip).await, "decline by another");
    let state = app.driver_state(&other).await;
    assert_eq!(state["offersRejected"], 0, "{state}");
    app.stop().await;
}

async fn accept_through_offer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let first = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let second = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let declined = offer_ok(&app, &trip, &first).await;
    let body = decline(&app, &trip, &first, Value::Null).await;
    assert_eq!(body["data"]["declineTrip"]["status"], "DECLINED", "{body}");
    let offer = offer_ok(&app, &trip, &second).await;

    let body = app.driver_step("acceptTrip", &trip, &second).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let list = offers(&app, &trip).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["id"], declined["id"], "{list:?}");
    assert_eq!(
        list[0]["status"], "DECLINED",
        "accept rewrote an answered offer: {list:?}"
    );
    assert_eq!(list[1]["id"], offer["id"], "{list:?}");
    assert_eq!(list[1]["status"], "ACCEPTED", "{list:?}");
    assert!(!list[1]["respondedAt"].is_null(), "{list:?}");

    let record = app.trip_record(&trip).await;
    assert_eq!(record["driver"]["id"], second.as_str(), "{record}");
    let accepted = record["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(accepted["kind"], "ACCEPTED", "{record}");
    assert_eq!(accepted["offerId"], offer["id"], "{record}");
    assert_eq!(accepted["actorId"], second.as_str(), "{record}");

    let state = app.driver_state(&second).await;
    assert_eq!(state["offersAccepted"], 1, "{state}");
    assert_eq!(state["offersRejected"], 0, "{state}");
    assert_eq!(state["presence"]["activeTripId"], trip.as_str(), "{state}");
    let state = app.driver_state(&first).await;
    assert_eq!(state["offersAccepted"], 0, "{state}");
    assert_eq!(state["offersRejected"], 1, "{state}");
    assert!(state["presence"]["activeTripId"].is_null(), "{state}");
    app.stop().await;
}

async fn cancel_withdraws_offer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let offer = offer_ok(&app, &trip, &driver).await;

    let body = app
        .cancel_trip(&trip, "RIDER", &rider, "found another ride")
        .await;
    assert_eq!(body["data"]["cancelTrip"]["status"], "CANCELLED", "{body}");
    let list = offers(&app, &trip).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], offer["id"], "{list:?}");
    assert_eq!(list[0]["status"], "WITHDRAWN", "{list:?}");
    assert!(!list[0]["respondedAt"].is_null(), "{list:?}");

    // The driver did not decide on a withdrawn offer, so neither counter moves.
    let state = app.driver_state(&driver).await;
    assert_eq!(state["offersAccepted"], 0, "{state}");
    assert_eq!(state["offersRejected"], 0, "{state}");
    assert_rate(&state, PRIOR);

    let before = app.trip_record(&trip).await;
    let body = decline(&app, &trip, &driver, Value::Null).await;
    assert_code(&body, "INVALID_TRANSITION", "decline of a withdrawn offer");
    let body = app.driver_step("acceptTrip", &trip, &driver).await;
    assert_code(&body, "INVALID_TRANSITION", "accept of a cancelled trip");
    assert_unchanged(
        &before,
        &app.trip_record(&trip).await,
        "answers after cancel",
    );
    app.stop().await;
}

async fn offer_to_unavailable_driver(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;

    let never_online = app.driver("MOTO").await;
    let went_offline = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    app.ok(
        "mutation($d: ID!) { goOffline(driverId: $d) { id } }",
        json!({ "d": went_offline }),
    )
    .await;
    let busy = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let busy_trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let body = app.driver_step("acceptTrip", &busy_trip, &busy).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let cab = app.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await;

    let before = app.trip_record(&trip).await;
    let cases = [
        (&never_online, "CONFLICT", "driver who never went online"),
        (&went_offline, "CONFLICT", "offline driver"),
        (&busy, "CONFLICT", "driver holding an active trip"),
        (&cab, "BAD_USER_INPUT", "CAB driver for a MOTO trip"),
    ];
    for (driver, code, what) in cases {
        let body = app.offer_trip(&trip, driver).await;
        assert_code(&body, code, &format!("offer to a {what}"));
        assert_unchanged(&before, &app.trip_record(&trip).await, what);
    }
    let body = app.offer_trip(&trip, &cab).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "driverId",
        "{body}"
    );
    let body = app.offer_trip(&trip, "999999").await;
    assert_code(&body, "NOT_FOUND", "offer to an unknown driver");
    assert_unchanged(&before, &app.trip_record(&trip).await, "unknown driver");
    app.stop().await;
}

async fn offer_expires(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.offer_ttl_seconds = 1;
        c.offer_sweep_ms = 100;
    })
    .await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let other = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let mut sub = app
        .subscribe(
            Protocol::TransportWs,
            "subscription($t: ID!) { tripUpdated(tripId: $t) { trip { status } \
             event { kind actorRole actorId offerId } } }",
            json!({ "t": trip }),
        )
        .await;

    let offer = offer_ok(&app, &trip, &driver).await;
    let offer_id = offer["id"].as_str().unwrap().to_owned();
    let created = time(&offer["createdAt"], "createdAt");
    assert_eq!(
        time(&offer["expiresAt"], "expiresAt") - created,
        TimeDelta::seconds(1),
        "offer_ttl_seconds = 1: {offer}"
    );
    let (app_ref, trip_ref, offer_ref) = (&app, trip.as_str(), offer_id.as_str());
    eventually("the offer to expire", || async move {
        let status = offer_status(app_ref, trip_ref, offer_ref).await;
        (status == "EXPIRED").then_some(())
    })
    .await;

    let list = offers(&app, &trip).await;
    assert!(!list[0]["respondedAt"].is_null(), "{list:?}");
    let record = app.trip_record(&trip).await;
    assert_eq!(
        record["status"], "REQUESTED",
        "expiry moved the trip: {record}"
    );
    let events = record["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{record}");
    let expired = &events[2];
    assert_eq!(expired["kind"], "OFFER_EXPIRED", "{record}");
    assert_eq!(expired["actorRole"], "SYSTEM", "{record}");
    assert!(expired["actorId"].is_null(), "{record}");
    assert_eq!(expired["offerId"], offer_id.as_str(), "{record}");
    assert_eq!(expired["fromStatus"], "REQUESTED", "{record}");
    assert_eq!(expired["toStatus"], "REQUESTED", "{record}");

    let state = app.driver_state(&driver).await;
    assert_eq!(state["offersRejected"], 1, "{state}");
    assert_eq!(state["offersAccepted"], 0, "{state}");
    assert_rate(&state, expected_rate(0.0, 1.0));

    let update = sub.next_data().await;
    assert_eq!(
        update["tripUpdated"]["event"]["kind"], "OFFERED",
        "{update}"
    );
    let update = sub.next_data().await;
    let event = &update["tripUpdated"]["event"];
    assert_eq!(event["kind"], "OFFER_EXPIRED", "{update}");
    assert_eq!(event["actorRole"], "SYSTEM", "{update}");
    assert_eq!(event["offerId"], offer_id.as_str(), "{update}");
    assert_eq!(
        update["tripUpdated"]["trip"]["status"], "REQUESTED",
        "{update}"
    );

    let before = app.trip_record(&trip).await;
    let body = decline(&app, &trip, &driver, Value::Null).await;
    assert_code(&body, "INVALID_TRANSITION", "declining an expired offer");
    assert_unchanged(&before, &app.trip_record(&trip).await, "late decline");
    let state = app.driver_state(&driver).await;
    assert_eq!(state["offersRejected"], 1, "late decline counted: {state}");

    // The trip is no longer reserved for the driver.
    let body = app.driver_step("acceptTrip", &trip, &other).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    app.stop().await;
}

async fn late_accept_expires_offer(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.offer_ttl_seconds = 1;
        c.offer_sweep_ms = NO_SWEEP_MS;
    })
    .await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let offer = offer_ok(&app, &trip, &driver).await;
    sleep_past(time(&offer["expiresAt"], "expiresAt")).await;

    // Overdue but not swept: the accept expires the offer first, then takes the open trip.
    let body = app.driver_step("acceptTrip", &trip, &driver).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let list = offers(&app, &trip).await;
    assert_eq!(
        list[0]["status"], "EXPIRED",
        "a late answer counted as accepted: {list:?}"
    );
    let record = app.trip_record(&trip).await;
    let kinds: Vec<&str> = record["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["REQUESTED", "OFFERED", "OFFER_EXPIRED", "ACCEPTED"],
        "{record}"
    );
    assert!(
        record["events"][3]["offerId"].is_null(),
        "accept linked to the expired offer: {record}"
    );
    let state = app.driver_state(&driver).await;
    assert_eq!(state["offersAccepted"], 0, "{state}");
    assert_eq!(state["offersRejected"], 1, "{state}");
    app.stop().await;
}

async fn expiry_after_restart(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, |c| {
        c.offer_ttl_seconds = 1;
        c.offer_sweep_ms = NO_SWEEP_MS;
    })
    .await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let offer = offer_ok(&app, &trip, &driver).await;
    let offer_id = offer["id"].as_str().unwrap().to_owned();
    sleep_past(time(&offer["expiresAt"], "expiresAt")).await;
    assert_eq!(
        offer_status(&app, &trip, &offer_id).await,
        "PENDING",
        "the sweep ran although its interval is an hour"
    );

    // The server goes down with the offer overdue and starts again with a working sweep.
    app.restart(|c| {
        c.offer_ttl_seconds = 1;
        c.offer_sweep_ms = 100;
    })
    .await;
    let (app_ref, trip_ref, offer_ref) = (&app, trip.as_str(), offer_id.as_str());
    eventually("the overdue offer to expire after restart", || async move {
        let status = offer_status(app_ref, trip_ref, offer_ref).await;
        (status == "EXPIRED").then_some(())
    })
    .await;
    let record = app.trip_record(&trip).await;
    let expired: Vec<&Value> = record["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "OFFER_EXPIRED")
        .collect();
    assert_eq!(expired.len(), 1, "one expiry event: {record}");
    assert_eq!(expired[0]["actorRole"], "SYSTEM", "{record}");
    let state = app.driver_state(&driver).await;
    assert_eq!(state["offersRejected"], 1, "expiry counted once: {state}");
    assert_rate(&state, expected_rate(0.0, 1.0));

    // The rebuilt counter is stored too, so another restart reads the same value.
    app.restart(|_| {}).await;
    let state = app.driver_state(&driver).await;
    assert_eq!(
        state["offersRejected"], 1,
        "after a second restart: {state}"
    );
    app.stop().await;
}

async fn pending_offer_survives_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let offered = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let other = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let offer = offer_ok(&app, &trip, &offered).await;

    app.restart(|_| {}).await;

    let list = offers(&app, &trip).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "PENDING", "{list:?}");
    assert_eq!(
        time(&list[0]["expiresAt"], "expiresAt"),
        time(&offer["expiresAt"], "expiresAt"),
        "expiresAt changed on restart"
    );
    let before = app.trip_record(&trip).await;
    let body = app.driver_step("acceptTrip", &trip, &other).await;
    assert_code(&body, "CONFLICT", "accept by another driver after restart");
    assert_unchanged(&before, &app.trip_record(&trip).await, "accept by another");

    let body = app.driver_step("acceptTrip", &trip, &offered).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    assert_eq!(offers(&app, &trip).await[0]["status"], "ACCEPTED");
    let state = app.driver_state(&offered).await;
    assert_eq!(state["offersAccepted"], 1, "{state}");
    app.stop().await;
}

async fn acceptance_rate_smoothed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let accepting = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let declining = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;

    for driver in [&accepting, &declining] {
        let state = app.driver_state(driver).await;
        assert_eq!(state["offersAccepted"], 0, "{state}");
        assert_eq!(state["offersRejected"], 0, "{state}");
        assert_rate(&state, PRIOR);
    }

    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    offer_ok(&app, &trip, &declining).await;
    let body = decline(&app, &trip, &declining, Value::Null).await;
    assert_eq!(body["data"]["declineTrip"]["status"], "DECLINED", "{body}");
    offer_ok(&app, &trip, &accepting).await;
    let body = app.driver_step("acceptTrip", &trip, &accepting).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");

    let state = app.driver_state(&accepting).await;
    assert_rate(&state, expected_rate(1.0, 0.0));
    assert_ne!(
        state["acceptanceRate"], 1.0,
        "one accept gave a perfect rate: {state}"
    );
    let state = app.driver_state(&declining).await;
    assert_rate(&state, expected_rate(0.0, 1.0));
    assert_ne!(
        state["acceptanceRate"], 0.0,
        "one decline gave a zero rate: {state}"
    );

    // A direct accept, without an offer, moves neither counter.
    let direct = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let body = app.driver_step("acceptTrip", &direct, &declining).await;
    assert_eq!(body["data"]["acceptTrip"]["status"], "ACCEPTED", "{body}");
    let state = app.driver_state(&declining).await;
    assert_eq!(state["offersAccepted"], 0, "{state}");
    assert_rate(&state, expected_rate(0.0, 1.0));
    app.stop().await;
}
