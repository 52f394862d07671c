//! Races over real HTTP: many drivers accepting one trip, one driver accepting many trips,
//! a cancel racing an accept, and an offer racing an accept. Each request goes out on its own
//! connection, and a barrier releases them together. Each round then checks the stored
//! state, the audit events and the drivers' presence against the responses.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::helpers::{Backend, TestApp};

crate::on_both_backends!(
    accept_race_one_winner,
    same_driver_race_one_trip,
    cancel_accept_race,
    offer_accept_race,
);

const DRIVER_AT: (f64, f64) = (41.1496, -8.6110);
const PICKUP: (f64, f64) = (41.1500, -8.6100);

/// Rounds per race. Each round starts from fresh trips.
const ROUNDS: usize = 6;

const ACCEPT: &str = "mutation($t: ID!, $d: ID!) { acceptTrip(tripId: $t, driverId: $d) { id status driver { id } } }";
const CANCEL: &str = "mutation($t: ID!, $a: ActorInput!) { cancelTrip(tripId: $t, actor: $a, \
     reason: \"changed plans\") { id status } }";
const OFFER: &str =
    "mutation($t: ID!, $d: ID!) { offerTrip(tripId: $t, driverId: $d) { id status } }";

/// Sends every `(query, variables)` at once, each on its own warmed-up connection, and
/// returns the response bodies in input order.
async fn race(app: &TestApp, requests: Vec<(&'static str, Value)>) -> Vec<Value> {
    let url = app.url("/graphql");
    let barrier = Arc::new(Barrier::new(requests.len()));
    let mut tasks = Vec::with_capacity(requests.len());
    for (query, variables) in requests {
        let url = url.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let client = crate::helpers::client();
            // Open the connection first, so the barrier releases requests, not handshakes.
            post(&client, &url, "{ __typename }", json!({})).await;
            barrier.wait().await;
            post(&client, &url, query, variables).await
        }));
    }
    let mut bodies = Vec::with_capacity(tasks.len());
    for task in tasks {
        bodies.push(task.await.expect("request task panicked"));
    }
    bodies
}

async fn post(client: &reqwest::Client, url: &str, query: &str, variables: Value) -> Value {
    let response = client
        .post(url)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("POST /graphql");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert!(status.is_success(), "HTTP {status}: {body}");
    body
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// Checks that each event starts where the previous one ended and the last one ends in the
/// trip's status.
fn assert_event_chain(record: &Value) {
    let events = record["events"].as_array().expect("events is a list");
    assert_eq!(events[0]["kind"], "REQUESTED", "{record}");
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["fromStatus"], pair[0]["toStatus"],
            "event chain broken: {record}"
        );
    }
    assert_eq!(
        events.last().unwrap()["toStatus"],
        record["status"],
        "last event does not end in the trip's status: {record}"
    );
}

fn kinds(record: &Value) -> Vec<String> {
    record["events"]
        .as_array()
        .expect("events is a list")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Active trips of a driver, as stored in the database.
async fn active_trips(app: &TestApp, driver: &str) -> Vec<String> {
    let data = app
        .ok(
            "query($d: ID!) { trips(filter: {driverId: $d, status: [ACCEPTED, ARRIVED, STARTED]}) \
             { id } }",
            json!({ "d": driver }),
        )
        .await;
    data["trips"]
        .as_array()
        .expect("trips is a list")
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn nearby_trip_ids(app: &TestApp, driver: &str) -> Vec<String> {
    let data = app
        .ok(
            "query($d: ID!) { nearbyTripRequests(driverId: $d, limit: 25) { trip { id } } }",
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

async fn cancel_as_rider(app: &TestApp, trip: &str, rider: &str) {
    let body = app.cancel_trip(trip, "RIDER", rider, "clean up").await;
    assert_eq!(body["data"]["cancelTrip"]["status"], "CANCELLED", "{body}");
}

async fn accept_race_one_winner(backend: Backend) {
    const DRIVERS: usize = 8;
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let mut drivers = Vec::with_capacity(DRIVERS);
    for _ in 0..DRIVERS {
        drivers.push(app.online_driver("CAB", DRIVER_AT.0, DRIVER_AT.1).await);
    }

    for round in 0..ROUNDS {
        let trip = app.request_trip(&rider, "CAB", PICKUP.0, PICKUP.1).await;
        let requests = drivers
            .iter()
            .map(|d| (ACCEPT, json!({ "t": trip, "d": d })))
            .collect();
        let bodies = race(&app, requests).await;

        let winners: Vec<&String> = drivers
            .iter()
            .zip(&bodies)
            .filter(|(_, body)| body["data"]["acceptTrip"]["status"] == "ACCEPTED")
            .map(|(d, _)| d)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: winners {winners:?}: {bodies:?}"
        );
        let winner = winners[0].clone();
        for (driver, body) in drivers.iter().zip(&bodies) {
            if *driver == winner {
                assert_eq!(body["data"]["acceptTrip"]["driver"]["id"], winner.as_str());
                continue;
            }
            let loser_code = code(body);
            assert!(
                loser_code == "INVALID_TRANSITION" || loser_code == "CONFLICT",
                "round {round}: loser {driver} got {body}"
            );
            if loser_code == "INVALID_TRANSITION" {
                assert_eq!(
                    body["errors"][0]["extensions"]["tripStatus"], "ACCEPTED",
                    "round {round}: {body}"
                );
            }
        }

        let record = app.trip_record(&trip).await;
        assert_eq!(record["status"], "ACCEPTED", "round {round}: {record}");
        assert_eq!(
            record["driver"]["id"],
            winner.as_str(),
            "round {round}: {record}"
        );
        let accepted: Vec<&Value> = record["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "ACCEPTED")
            .collect();
        assert_eq!(accepted.len(), 1, "round {round}: {record}");
        assert_eq!(
            accepted[0]["actorId"],
            winner.as_str(),
            "round {round}: {record}"
        );
        assert_eq!(kinds(&record), ["REQUESTED", "ACCEPTED"], "round {round}");
        assert_event_chain(&record);

        for driver in &drivers {
            let state = app.driver_state(driver).await;
            let active = &state["presence"]["activeTripId"];
            if *driver == winner {
                assert_eq!(active, trip.as_str(), "round {round}: winner {state}");
            } else {
                assert!(
                    active.is_null(),
                    "round {round}: loser {driver} bound: {state}"
                );
            }
            let stored = active_trips(&app, driver).await;
            let expected = if *driver == winner {
                vec![trip.clone()]
            } else {
                vec![]
            };
            assert_eq!(
                stored, expected,
                "round {round}: stored active trips of {driver}"
            );
        }

        cancel_as_rider(&app, &trip, &rider).await;
    }
    app.stop().await;
}

async fn same_driver_race_one_trip(backend: Backend) {
    const TRIPS: usize = 6;
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let watcher = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;

    for round in 0..ROUNDS {
        let mut trips = Vec::with_capacity(TRIPS);
        for _ in 0..TRIPS {
            trips.push(app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await);
        }
        let requests = trips
            .iter()
            .map(|t| (ACCEPT, json!({ "t": t, "d": driver })))
            .collect();
        let bodies = race(&app, requests).await;

        let won: Vec<&String> = trips
            .iter()
            .zip(&bodies)
            .filter(|(_, body)| body["data"]["acceptTrip"]["status"] == "ACCEPTED")
            .map(|(t, _)| t)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: accepted {won:?}: {bodies:?}");
        let won = won[0].clone();
        for (trip, body) in trips.iter().zip(&bodies) {
            if *trip != won {
                assert_eq!(code(body), "CONFLICT", "round {round}: trip {trip}: {body}");
            }
        }

        assert_eq!(
            active_trips(&app, &driver).await,
            vec![won.clone()],
            "round {round}: stored active trips"
        );
        let state = app.driver_state(&driver).await;
        assert_eq!(
            state["presence"]["activeTripId"],
            won.as_str(),
            "round {round}: {state}"
        );
        let nearby = nearby_trip_ids(&app, &watcher).await;
        for trip in &trips {
            let record = app.trip_record(trip).await;
            assert_event_chain(&record);
            if *trip == won {
                assert_eq!(record["status"], "ACCEPTED", "round {round}: {record}");
                assert!(
                    !nearby.contains(trip),
                    "round {round}: accepted trip listed"
                );
                continue;
            }
            // A loser's transaction left no trace.
            assert_eq!(record["status"], "REQUESTED", "round {round}: {record}");
            assert!(record["driver"].is_null(), "round {round}: {record}");
            assert_eq!(kinds(&record), ["REQUESTED"], "round {round}: {record}");
            assert!(
                nearby.contains(trip),
                "round {round}: open trip {trip} missing from nearbyTripRequests: {nearby:?}"
            );
        }

        let body = app
            .cancel_trip(&won, "DRIVER", &driver, "vehicle problem")
            .await;
        assert_eq!(body["data"]["cancelTrip"]["status"], "CANCELLED", "{body}");
        for trip in trips.iter().filter(|t| **t != won) {
            cancel_as_rider(&app, trip, &rider).await;
        }
    }
    app.stop().await;
}

async fn cancel_accept_race(backend: Backend) {
    // Trips raced at once per round, each by its own driver and its own cancel; more requests
    // in flight make it likelier that a cancel finishes while its accept has yet to update
    // the in-memory state.
    const PAIRS: usize = 8;
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let watcher = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let mut drivers = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        drivers.push(app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await);
    }

    for round in 0..ROUNDS {
        let mut trips = Vec::with_capacity(PAIRS);
        let mut requests = Vec::with_capacity(2 * PAIRS);
        for driver in &drivers {
            let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
            requests.push((ACCEPT, json!({ "t": trip, "d": driver })));
            requests.push((
                CANCEL,
                json!({ "t": trip, "a": { "role": "RIDER", "id": rider } }),
            ));
            trips.push(trip);
        }
        let bodies = race(&app, requests).await;
        let nearby = nearby_trip_ids(&app, &watcher).await;

        for (i, (trip, driver)) in trips.iter().zip(&drivers).enumerate() {
            let (accept, cancel) = (&bodies[2 * i], &bodies[2 * i + 1]);
            let what = format!("round {round}, trip {trip}");
            let accepted = accept["data"]["acceptTrip"]["status"] == "ACCEPTED";
            // Cancelling is legal before and after an accept, so the rider's cancel succeeds
            // in either order, and the accept either came first or finds the trip CANCELLED.
            assert_eq!(
                cancel["data"]["cancelTrip"]["status"], "CANCELLED",
                "{what}: cancel lost to the accept: {cancel} {accept}"
            );
            if !accepted {
                assert_eq!(code(accept), "INVALID_TRANSITION", "{what}: {accept}");
                assert_eq!(
                    accept["errors"][0]["extensions"]["tripStatus"], "CANCELLED",
                    "{what}: {accept}"
                );
            }

            let record = app.trip_record(trip).await;
            assert_event_chain(&record);
            assert_eq!(record["status"], "CANCELLED", "{what}: {record}");
            if accepted {
                assert_eq!(
                    kinds(&record),
                    ["REQUESTED", "ACCEPTED", "CANCELLED"],
                    "{what}"
                );
                assert_eq!(record["driver"]["id"], driver.as_str(), "{what}");
            } else {
                assert_eq!(kinds(&record), ["REQUESTED", "CANCELLED"], "{what}");
                assert!(record["driver"].is_null(), "{what}: {record}");
            }
            let state = app.driver_state(driver).await;
            assert!(
                state["presence"]["activeTripId"].is_null(),
                "{what}: driver {driver} bound to a cancelled trip: {state}"
            );
            assert_eq!(
                active_trips(&app, driver).await,
                Vec::<String>::new(),
                "{what}: stored active trips of driver {driver}"
            );
            assert!(
                !nearby.contains(trip),
                "{what}: cancelled trip listed: {nearby:?}"
            );
        }
    }
    app.stop().await;
}

async fn offer_accept_race(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let offered = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let taker = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;
    let watcher = app.online_driver("MOTO", DRIVER_AT.0, DRIVER_AT.1).await;

    for round in 0..ROUNDS * 2 {
        let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
        let bodies = race(
            &app,
            vec![
                (OFFER, json!({ "t": trip, "d": offered })),
                (ACCEPT, json!({ "t": trip, "d": taker })),
            ],
        )
        .await;
        let (offer, accept) = (&bodies[0], &bodies[1]);
        let was_offered = offer["data"]["offerTrip"]["status"] == "PENDING";
        let accepted = accept["data"]["acceptTrip"]["status"] == "ACCEPTED";
        // Both lock the trip first, so one sees the other's result: a pending offer blocks
        // the accept, an accepted trip cannot be offered.
        assert!(
            was_offered != accepted,
            "round {round}: exactly one must succeed: {bodies:?}"
        );
        if !was_offered {
            assert_eq!(code(offer), "INVALID_TRANSITION", "round {round}: {offer}");
            assert_eq!(
                offer["errors"][0]["extensions"]["tripStatus"], "ACCEPTED",
                "round {round}: {offer}"
            );
        }
        if !accepted {
            assert_eq!(code(accept), "CONFLICT", "round {round}: {accept}");
        }

        let record = app.trip_record(&trip).await;
        assert_event_chain(&record);
        let offer_states: Vec<&str> = record["offers"]
            .as_array()
            .expect("offers is a list")
            .iter()
            .map(|o| o["status"].as_str().unwrap_or_default())
            .collect();
        let nearby = nearby_trip_ids(&app, &watcher).await;
        if accepted {
            assert_eq!(record["status"], "ACCEPTED", "round {round}: {record}");
            assert_eq!(record["driver"]["id"], taker.as_str(), "round {round}");
            assert_eq!(
                offer_states,
                Vec::<&str>::new(),
                "round {round}: offers of {record}"
            );
            assert!(
                !nearby.contains(&trip),
                "round {round}: taken trip listed: {nearby:?}"
            );
        } else {
            assert_eq!(record["status"], "REQUESTED", "round {round}: {record}");
            assert_eq!(offer_states, ["PENDING"], "round {round}: {record}");
            assert!(
                nearby.contains(&trip),
                "round {round}: open trip missing: {nearby:?}"
            );
        }
        cancel_as_rider(&app, &trip, &rider).await;
    }
    let state = app.driver_state(&offered).await;
    assert_eq!(
        state["offersRejected"], 0,
        "withdrawn offers counted: {state}"
    );
    app.stop().await;
}
