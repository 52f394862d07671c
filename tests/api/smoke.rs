//! The main flow end to end, as a first check that the harness and server work.

use serde_json::json;

use crate::helpers::{Backend, Protocol, TestApp};

crate::on_both_backends!(request_to_rating, subscription_sees_trip);

async fn request_to_rating(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", -1.9441, 30.0619).await;
    let trip = app.request_trip(&rider, "MOTO", -1.9450, 30.0620).await;
    for (step, status) in [
        ("acceptTrip", "ACCEPTED"),
        ("arriveAtPickup", "ARRIVED"),
        ("startTrip", "STARTED"),
        ("completeTrip", "COMPLETED"),
    ] {
        let body = app.driver_step(step, &trip, &driver).await;
        assert_eq!(body["data"][step]["status"], status, "{step}: {body}");
    }
    let data = app
        .ok(
            "mutation($t: ID!, $r: ID!) { rateTrip(tripId: $t, by: {role: RIDER, id: $r}, stars: 4) { stars } }",
            json!({ "t": trip, "r": rider }),
        )
        .await;
    assert_eq!(data["rateTrip"]["stars"], 4);
    app.stop().await;
}

async fn subscription_sees_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let mut sub = app
        .subscribe(
            Protocol::TransportWs,
            "subscription { liveTrips { trip { id status } event { kind } } }",
            json!({}),
        )
        .await;
    let trip = app.request_trip(&rider, "CAB", 41.15, -8.61).await;
    let data = sub.next_data().await;
    assert_eq!(data["liveTrips"]["trip"]["id"], trip.as_str());
    assert_eq!(data["liveTrips"]["event"]["kind"], "REQUESTED");
    app.stop().await;
}
