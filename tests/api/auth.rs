//! Tokens and roles over real HTTP and WebSocket: who may do what, with `UNAUTHENTICATED` for
//! a missing or bad token and `FORBIDDEN` for a role or subject that does not fit; the
//! WebSocket close codes; masked phone numbers; and the audited, rate-limited contact handoff.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, InitOutcome, Protocol, TestApp, client_with_token};
use crate::on_both_backends;

const PICKUP: (f64, f64) = (41.1579, -8.6291);

const CREATE_TOKEN: &str = "mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) \
    { secret token { id role subjectId revokedAt } } }";

const CONTACT: &str = "mutation($t: ID!, $a: ActorInput!) { requestContact(tripId: $t, actor: $a) \
    { tripId role id name phone chatLink } }";

const UPDATE_LOCATION: &str = "mutation($d: ID!, $l: LocationInput!) \
    { updateDriverLocation(driverId: $d, location: $l) { status } }";

const NEARBY: &str = "query($n: LatLngInput!) { nearbyDrivers(near: $n) { drivers { driverId } } }";

/// Creates a token of `role` (for `subject` when given) through the admin API; returns the
/// secret and the token id.
async fn token(app: &TestApp, role: &str, subject: Option<&str>) -> (String, String) {
    let data = app
        .ok(
            CREATE_TOKEN,
            json!({ "input": { "name": format!("{role} test"), "role": role, "subjectId": subject } }),
        )
        .await;
    let created = &data["createApiToken"];
    assert_eq!(created["token"]["role"], role);
    (
        created["secret"].as_str().unwrap().to_owned(),
        created["token"]["id"].as_str().unwrap().to_owned(),
    )
}

/// Sends a GraphQL POST with `token` (none when `None`); returns the status and body.
async fn post_as(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    let client = match token {
        Some(token) => client_with_token(token),
        None => reqwest::Client::new(),
    };
    let response = client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("POST /graphql");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Returns the first error's code of a response body, or `None` without errors.
fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// Sends `query` with `token` and asserts it fails with FORBIDDEN.
async fn forbidden(app: &TestApp, token: &str, query: &str, variables: Value, what: &str) {
    let (status, body) = post_as(app, Some(token), query, variables).await;
    assert_eq!(status, 200, "{what}: {body}");
    assert_eq!(code(&body), Some("FORBIDDEN"), "{what}: {body}");
}

/// Sends `query` with `token` and returns `data`, failing on any error.
async fn allowed(app: &TestApp, token: &str, query: &str, variables: Value, what: &str) -> Value {
    let (status, body) = post_as(app, Some(token), query, variables).await;
    assert_eq!(status, 200, "{what}: {body}");
    assert!(body.get("errors").is_none(), "{what}: {body}");
    body["data"].clone()
}

fn fix() -> Value {
    json!({ "lat": PICKUP.0, "lng": PICKUP.1 })
}

async fn missing_bad_and_revoked_tokens_are_unauthenticated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let query = "{ drivers { id } }";
    let malformed = "mob_not-a-token";
    let unknown = format!("mob_{}", "f".repeat(64));
    for token in [None, Some(malformed), Some(unknown.as_str())] {
        let (status, body) = post_as(&app, token, query, json!({})).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert_eq!(
            code(&body),
            Some("UNAUTHENTICATED"),
            "token {token:?}: {body}"
        );
    }
    // The token is checked before the body: a bad body without a token is 401, with one 400.
    for (client, expected, code_expected) in [
        (reqwest::Client::new(), 401, "UNAUTHENTICATED"),
        (crate::helpers::client(), 400, "BAD_REQUEST"),
    ] {
        let response = client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body("{\"query\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        let body: Value = response.json().await.expect("a JSON error body");
        assert_eq!(code(&body), Some(code_expected), "{body}");
    }
    let response = reqwest::Client::new()
        .get(app.url("/graphql?query=%7B__typename%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "GET needs a token too");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    let (secret, id) = token(&app, "DASHBOARD", None).await;
    allowed(
        &app,
        &secret,
        query,
        json!({}),
        "dashboard before revocation",
    )
    .await;
    app.ok(
        "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
        json!({ "id": id }),
    )
    .await;
    let (status, body) = post_as(&app, Some(&secret), query, json!({})).await;
    assert_eq!(status, 401, "revoked: {body}");
    assert_eq!(code(&body), Some("UNAUTHENTICATED"), "revoked: {body}");
    app.stop().await;
}

async fn driver_token_acts_only_for_its_driver(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let me = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let other = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let rider = app.rider().await;
    let (secret, _) = token(&app, "DRIVER", Some(&me)).await;

    let data = allowed(
        &app,
        &secret,
        UPDATE_LOCATION,
        json!({ "d": me, "l": fix() }),
        "own location",
    )
    .await;
    assert!(data["updateDriverLocation"]["status"].is_string());
    forbidden(
        &app,
        &secret,
        UPDATE_LOCATION,
        json!({ "d": other, "l": fix() }),
        "other's location",
    )
    .await;
    forbidden(
        &app,
        &secret,
        "mutation($d: ID!) { goOffline(driverId: $d) { id } }",
        json!({ "d": other }),
        "other goes offline",
    )
    .await;
    forbidden(
        &app,
        &secret,
        NEARBY,
        json!({ "n": fix() }),
        "search competitors",
    )
    .await;
    forbidden(
        &app,
        &secret,
        "{ drivers { id } }",
        json!({}),
        "list drivers",
    )
    .await;
    forbidden(
        &app,
        &secret,
        "mutation($i: RegisterRiderInput!) { registerRider(input: $i) { id } }",
        json!({ "i": { "name": "X", "phone": "+250700000999" } }),
        "register a rider",
    )
    .await;

    // Another driver's trip is not readable; the driver's own, once accepted, is.
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let read = "query($id: ID!) { trip(id: $id) { id status } }";
    forbidden(&app, &secret, read, json!({ "id": trip }), "unrelated trip").await;
    forbidden(
        &app,
        &secret,
        "mutation($t: ID!, $d: ID!) { acceptTrip(tripId: $t, driverId: $d) { id } }",
        json!({ "t": trip, "d": other }),
        "accept for another driver",
    )
    .await;
    allowed(
        &app,
        &secret,
        "mutation($t: ID!, $d: ID!) { acceptTrip(tripId: $t, driverId: $d) { id } }",
        json!({ "t": trip, "d": me }),
        "accept for itself",
    )
    .await;
    let data = allowed(&app, &secret, read, json!({ "id": trip }), "own trip").await;
    assert_eq!(data["trip"]["status"], "ACCEPTED");

    // The trip list is narrowed to the driver's own trips.
    let list = "query($f: TripFilterInput) { trips(filter: $f) { id } }";
    let data = allowed(&app, &secret, list, json!({ "f": null }), "own trip list").await;
    assert_eq!(data["trips"], json!([{ "id": trip }]));
    forbidden(
        &app,
        &secret,
        list,
        json!({ "f": { "driverId": other } }),
        "other's trip list",
    )
    .await;
    app.stop().await;
}

async fn rider_token_acts_only_for_its_rider(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let me = app.rider().await;
    let other = app.rider().await;
    app.online_driver("CAB", PICKUP.0, PICKUP.1).await;
    let (secret, _) = token(&app, "RIDER", Some(&me)).await;
    let request = "mutation($r: ID!) { requestTrip(input: { riderId: $r, \
        pickup: { lat: 41.1579, lng: -8.6291 }, vehicleType: CAB }) { id } }";

    let data = allowed(&app, &secret, request, json!({ "r": me }), "own request").await;
    let mine = data["requestTrip"]["id"].as_str().unwrap().to_owned();
    forbidden(
        &app,
        &secret,
        request,
        json!({ "r": other }),
        "request for another",
    )
    .await;
    let data = allowed(
        &app,
        &secret,
        NEARBY,
        json!({ "n": fix() }),
        "nearby drivers",
    )
    .await;
    assert_eq!(
        data["nearbyDrivers"]["drivers"].as_array().unwrap().len(),
        1
    );

    let theirs = app.request_trip(&other, "CAB", PICKUP.0, PICKUP.1).await;
    let read = "query($id: ID!) { trip(id: $id) { id } }";
    allowed(&app, &secret, read, json!({ "id": mine }), "own trip").await;
    forbidden(
        &app,
        &secret,
        read,
        json!({ "id": theirs }),
        "another rider's trip",
    )
    .await;
    let cancel = "mutation($t: ID!, $r: ID!) { cancelTrip(tripId: $t, \
        actor: { role: RIDER, id: $r }, reason: \"changed plans\") { status } }";
    forbidden(
        &app,
        &secret,
        cancel,
        json!({ "t": theirs, "r": other }),
        "cancel as another",
    )
    .await;
    let data = allowed(
        &app,
        &secret,
        cancel,
        json!({ "t": mine, "r": me }),
        "own cancel",
    )
    .await;
    assert_eq!(data["cancelTrip"]["status"], "CANCELLED");
    app.stop().await;
}

async fn dashboard_reads_but_cannot_mutate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let (secret, _) = token(&app, "DASHBOARD", None).await;
    allowed(
        &app,
        &secret,
        "{ drivers { id } }",
        json!({}),
        "list drivers",
    )
    .await;
    allowed(&app, &secret, NEARBY, json!({ "n": fix() }), "nearby").await;
    forbidden(
        &app,
        &secret,
        UPDATE_LOCATION,
        json!({ "d": driver, "l": fix() }),
        "move a driver",
    )
    .await;
    forbidden(
        &app,
        &secret,
        "{ apiTokens { id } }",
        json!({}),
        "list tokens",
    )
    .await;

    let mut live = app
        .subscribe_as(
            &secret,
            Protocol::TransportWs,
            "subscription { liveTrips { trip { id } } }",
            json!({}),
        )
        .await;
    let rider = app.rider().await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let data = live.next_data().await;
    assert_eq!(data["liveTrips"]["trip"]["id"], trip.as_str());
    app.stop().await;
}

async fn bridge_acts_for_anyone_but_manages_no_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (secret, _) = token(&app, "BRIDGE", None).await;
    let data = allowed(
        &app,
        &secret,
        "mutation($i: RegisterRiderInput!) { registerRider(input: $i) { id phone } }",
        json!({ "i": { "name": "Ana", "phone": "+351912345678" } }),
        "register a rider",
    )
    .await;
    assert_eq!(
        data["registerRider"]["phone"], "+351*******78",
        "masked for the bridge"
    );
    forbidden(
        &app,
        &secret,
        CREATE_TOKEN,
        json!({ "input": { "name": "x", "role": "ADMIN" } }),
        "create a token",
    )
    .await;
    app.stop().await;
}

async fn phones_are_masked_except_for_admin_and_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.driver("CAB").await;
    let full = app
        .ok(
            "query($id: ID!) { driver(id: $id) { phone } }",
            json!({ "id": driver }),
        )
        .await["driver"]["phone"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!full.contains('*'), "admin sees {full}");

    let (dashboard, _) = token(&app, "DASHBOARD", None).await;
    let data = allowed(
        &app,
        &dashboard,
        "{ drivers { id phone } }",
        json!({}),
        "list",
    )
    .await;
    let listed = data["drivers"][0]["phone"].as_str().unwrap();
    assert_ne!(listed, full);
    assert!(
        listed.starts_with(&full[..4]),
        "{listed} keeps the prefix of {full}"
    );
    assert!(
        listed.ends_with(&full[full.len() - 2..]),
        "{listed} keeps the last digits"
    );
    assert_eq!(listed.matches('*').count(), full.len() - 6, "{listed}");

    let (own, _) = token(&app, "DRIVER", Some(&driver)).await;
    let data = allowed(
        &app,
        &own,
        "query($id: ID!) { driver(id: $id) { phone } }",
        json!({ "id": driver }),
        "own profile",
    )
    .await;
    assert_eq!(data["driver"]["phone"], full.as_str());
    app.stop().await;
}

async fn contact_handoff_needs_both_parties_and_is_audited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.contact_requests_per_hour = 2).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let stranger = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let (rider_token, _) = token(&app, "RIDER", Some(&rider)).await;
    let (driver_token, _) = token(&app, "DRIVER", Some(&driver)).await;
    let (stranger_token, _) = token(&app, "DRIVER", Some(&stranger)).await;
    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let as_rider = json!({ "t": trip, "a": { "role": "RIDER", "id": rider } });
    let as_driver = json!({ "t": trip, "a": { "role": "DRIVER", "id": driver } });

    forbidden(
        &app,
        &rider_token,
        CONTACT,
        as_rider.clone(),
        "no driver bound yet",
    )
    .await;
    forbidden(
        &app,
        &driver_token,
        CONTACT,
        as_driver.clone(),
        "no offer yet",
    )
    .await;
    forbidden(
        &app,
        &stranger_token,
        CONTACT,
        json!({ "t": trip, "a": { "role": "DRIVER", "id": stranger } }),
        "unrelated driver",
    )
    .await;
    forbidden(
        &app,
        &stranger_token,
        CONTACT,
        as_driver.clone(),
        "acting as another driver",
    )
    .await;

    // A pending offer binds the driver: it gets the rider's number.
    let offer = app.offer_trip(&trip, &driver).await;
    assert!(offer.get("errors").is_none(), "{offer}");
    let data = allowed(&app, &driver_token, CONTACT, as_driver, "offered driver").await;
    let contact = &data["requestContact"];
    assert_eq!(contact["role"], "RIDER");
    assert_eq!(contact["id"], rider.as_str());
    let phone = contact["phone"].as_str().unwrap();
    assert!(!phone.contains('*'));
    assert_eq!(
        contact["chatLink"],
        format!("https://wa.me/{}", &phone[1..])
    );

    // Once the driver accepts, the rider gets the driver's number.
    let accepted = app.driver_step("acceptTrip", &trip, &driver).await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    let data = allowed(
        &app,
        &rider_token,
        CONTACT,
        as_rider.clone(),
        "rider after accept",
    )
    .await;
    assert_eq!(data["requestContact"]["role"], "DRIVER");
    assert_eq!(data["requestContact"]["id"], driver.as_str());

    let record = app.trip_record(&trip).await;
    let shared: Vec<&Value> = record["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "CONTACT_SHARED")
        .collect();
    assert_eq!(shared.len(), 2, "each handoff is audited: {record}");
    assert_eq!(shared[0]["actorRole"], "DRIVER");
    assert_eq!(shared[1]["actorRole"], "RIDER");

    // The rider token has used both of its 2 calls: the refused first call counts too.
    let (status, body) = post_as(&app, Some(&rider_token), CONTACT, as_rider).await;
    assert_eq!(status, 200);
    assert_eq!(code(&body), Some("RATE_LIMITED"), "{body}");
    assert!(
        body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    app.stop().await;
}

async fn websocket_rejects_missing_and_bad_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bad = format!("Bearer mob_{}", "0".repeat(64));
    for payload in [json!({}), json!({ "authorization": bad })] {
        let outcome = app
            .connection_init(Protocol::TransportWs, None, payload.clone())
            .await;
        match outcome {
            InitOutcome::Closed(code, _) => assert_eq!(code, 4403, "payload {payload}"),
            other => panic!("payload {payload}: expected close 4403, got {other:?}"),
        }
        let outcome = app
            .connection_init(Protocol::LegacyWs, None, payload.clone())
            .await;
        match outcome {
            InitOutcome::Message(message) => {
                assert_eq!(message["type"], "connection_error", "payload {payload}")
            }
            other => panic!("payload {payload}: expected connection_error, got {other:?}"),
        }
    }
    // A token in the upgrade request's header is enough.
    let outcome = app
        .connection_init(Protocol::TransportWs, Some(ADMIN_TOKEN), json!({}))
        .await;
    assert_eq!(outcome, InitOutcome::Ack);

    // An authenticated driver may follow itself but not another driver.
    let me = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let other = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let (secret, _) = token(&app, "DRIVER", Some(&me)).await;
    let follow = "subscription($d: ID!) { driverLocation(driverId: $d) { driverId } }";
    let mut refused = app
        .subscribe_as(
            &secret,
            Protocol::TransportWs,
            follow,
            json!({ "d": other }),
        )
        .await;
    let error = refused.next_error().await;
    assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{error}");
    let mut own = app
        .subscribe_as(&secret, Protocol::LegacyWs, follow, json!({ "d": me }))
        .await;
    app.update_location(&me, json!({ "lat": PICKUP.0 + 0.0001, "lng": PICKUP.1 }))
        .await;
    let data = own.next_data().await;
    assert_eq!(data["driverLocation"]["driverId"], me.as_str());
    app.stop().await;
}

async fn revoked_token_loses_its_subscriptions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (secret, id) = token(&app, "DASHBOARD", None).await;
    let mut live = app
        .subscribe_as(
            &secret,
            Protocol::TransportWs,
            "subscription { liveTrips { trip { id } } }",
            json!({}),
        )
        .await;
    app.ok(
        "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
        json!({ "id": id }),
    )
    .await;
    // The connection checks its token every few seconds and closes once it is revoked.
    let (code, reason) = live.close_frame().await;
    assert_eq!(code, 4403, "{reason}");
    app.stop().await;
}

async fn rider_stops_following_driver_after_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let (secret, _) = token(&app, "RIDER", Some(&rider)).await;
    let follow = "subscription($d: ID!) { driverLocation(driverId: $d) { driverId } }";

    let mut before = app
        .subscribe_as(
            &secret,
            Protocol::TransportWs,
            follow,
            json!({ "d": driver }),
        )
        .await;
    let error = before.next_error().await;
    assert_eq!(
        error["extensions"]["code"], "FORBIDDEN",
        "no trip yet: {error}"
    );

    let trip = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let body = app.driver_step("acceptTrip", &trip, &driver).await;
    assert!(body.get("errors").is_none(), "{body}");
    let mut during = app
        .subscribe_as(
            &secret,
            Protocol::TransportWs,
            follow,
            json!({ "d": driver }),
        )
        .await;
    app.update_location(
        &driver,
        json!({ "lat": PICKUP.0 + 0.0001, "lng": PICKUP.1 }),
    )
    .await;
    let data = during.next_data().await;
    assert_eq!(data["driverLocation"]["driverId"], driver.as_str());

    for step in ["arriveAtPickup", "startTrip", "completeTrip"] {
        let body = app.driver_step(step, &trip, &driver).await;
        assert!(body.get("errors").is_none(), "{step}: {body}");
    }
    // The next fix after the trip ends completes the rider's stream instead of reaching it.
    app.update_location(
        &driver,
        json!({ "lat": PICKUP.0 + 0.0002, "lng": PICKUP.1 }),
    )
    .await;
    let message = during.next_message().await;
    assert_eq!(
        message["type"], "complete",
        "stream ends with the trip: {message}"
    );
    app.stop().await;
}

on_both_backends!(
    revoked_token_loses_its_subscriptions,
    rider_stops_following_driver_after_trip,
    missing_bad_and_revoked_tokens_are_unauthenticated,
    driver_token_acts_only_for_its_driver,
    rider_token_acts_only_for_its_rider,
    dashboard_reads_but_cannot_mutate,
    bridge_acts_for_anyone_but_manages_no_tokens,
    phones_are_masked_except_for_admin_and_owner,
    contact_handoff_needs_both_parties_and_is_audited,
    websocket_rejects_missing_and_bad_tokens,
);

#[tokio::test]
async fn first_start_creates_one_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
    let db = mobility::db::connect_and_migrate(&url, 1).await.unwrap();
    let tokens = mobility::auth::Tokens::new(db);
    let secret = tokens
        .ensure_admin(None)
        .await
        .unwrap()
        .expect("the first start creates a token");
    let principal = tokens.authenticate(&secret).await.unwrap().expect("valid");
    assert_eq!(principal.role, mobility::auth::Role::Admin);
    assert_eq!(tokens.ensure_admin(None).await.unwrap(), None, "only once");
    let err = tokens.ensure_admin(Some("letmein")).await.unwrap_err();
    assert!(err.to_string().contains("MOBILITY_ADMIN_TOKEN"), "{err}");
}
