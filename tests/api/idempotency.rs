//! Idempotency keys on mutations. A retry with the same key returns the first response and
//! changes nothing. A key reused with another request, an invalid key and a batch with a key
//! are rejected. Keys belong to one token and expire.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use entity::idempotency_key::{self, IdempotencyKeyStatus};
use mobility::auth::{Role, Tokens};
use mobility::idempotency::{Claim, IdempotencyStore, request_hash};
use reqwest::StatusCode;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, client, client_with_token, eventually};
use crate::on_both_backends;

const REQUEST_TRIP: &str =
    "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id status } }";

/// A server and a second connection to its database, to create tokens and age keys.
struct Setup {
    app: TestApp,
    db: DatabaseConnection,
}

impl Setup {
    async fn start(backend: Backend) -> Setup {
        let mut database_url = String::new();
        let app = TestApp::spawn_with(backend, |config| {
            database_url = config.database_url.clone();
        })
        .await;
        let db = mobility::db::connect(&database_url, 2)
            .await
            .expect("second connection to the test database");
        Setup { app, db }
    }

    async fn stop(self) {
        self.db.close().await.ok();
        self.app.stop().await;
    }

    /// Creates a bridge token on the database; returns its secret.
    async fn bridge_token(&self) -> String {
        Tokens::new(self.db.clone())
            .create("second bridge", Role::Bridge, None)
            .await
            .expect("token created")
            .secret
    }

    /// Id of the admin token's row.
    async fn admin_token_id(&self) -> i64 {
        Tokens::new(self.db.clone())
            .authenticate(ADMIN_TOKEN)
            .await
            .expect("token look-up")
            .expect("admin token exists")
            .token_id
    }

    /// Moves the first use of `key` back by `age`.
    async fn age_key(&self, key: &str, age: TimeDelta) {
        let updated = idempotency_key::Entity::update_many()
            .col_expr(
                idempotency_key::Column::CreatedAt,
                Expr::value(Utc::now() - age),
            )
            .filter(idempotency_key::Column::Key.eq(key))
            .exec(&self.db)
            .await
            .expect("key aged");
        assert_eq!(updated.rows_affected, 1, "no row for key {key}");
    }

    async fn stored_keys(&self) -> u64 {
        idempotency_key::Entity::find()
            .count(&self.db)
            .await
            .expect("keys counted")
    }

    /// Ids of the trips of `rider`.
    async fn trips_of(&self, rider: &str) -> Vec<String> {
        let data = self
            .app
            .ok(
                "query($r: ID) { trips(filter: { riderId: $r }) { id } }",
                json!({ "r": rider }),
            )
            .await;
        data["trips"]
            .as_array()
            .expect("trips list")
            .iter()
            .map(|trip| trip["id"].as_str().expect("trip id").to_owned())
            .collect()
    }
}

/// Builds the GraphQL request body of `requestTrip` for `rider` with a pickup at latitude `lat`.
fn request_trip(rider: &str, lat: f64) -> Value {
    json!({
        "query": REQUEST_TRIP,
        "variables": { "input": {
            "riderId": rider,
            "vehicleType": "MOTO",
            "pickup": { "lat": lat, "lng": 30.0620 },
        } },
    })
}

/// Server response to one POST.
#[derive(Debug, Clone)]
struct Reply {
    status: StatusCode,
    replayed: bool,
    /// The body as sent, to compare replays byte for byte.
    text: String,
    json: Value,
}

impl Reply {
    fn trip_id(&self) -> String {
        self.json["data"]["requestTrip"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no trip id in {}", self.text))
            .to_owned()
    }

    fn code(&self) -> &str {
        self.json["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text))
    }
}

/// POSTs `body` to `/graphql` with `http`, with `key` in the `Idempotency-Key` header if given.
async fn post(app: &TestApp, http: &reqwest::Client, key: Option<&str>, body: &Value) -> Reply {
    let mut request = http.post(app.url("/graphql")).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("POST /graphql");
    let status = response.status();
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(value) => {
            assert_eq!(value, "true", "Idempotent-Replayed header value");
            true
        }
    };
    let text = response.text().await.expect("response body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e} in body {text}"));
    Reply {
        status,
        replayed,
        text,
        json,
    }
}

async fn retry_replays_first_trip(backend: Backend) {
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let http = client();
    let rider = app.rider().await;
    let body = request_trip(&rider, -1.9450);

    let first = post(app, &http, Some("wamid.first"), &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(!first.replayed, "first response marked as replayed");
    let trip = first.trip_id();

    let again = post(app, &http, Some("wamid.first"), &body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert!(again.replayed, "retry not marked as replayed");
    assert_eq!(again.text, first.text, "replay differs from the first body");

    // The same key in extensions is the same key, and extensions are not part of the request.
    let mut in_extensions = body.clone();
    in_extensions["extensions"] = json!({ "idempotencyKey": "wamid.first" });
    let third = post(app, &http, None, &in_extensions).await;
    assert!(
        third.replayed,
        "key in extensions not replayed: {}",
        third.text
    );
    assert_eq!(third.text, first.text);

    // A structured-field string header carries the same key.
    let quoted = post(app, &http, Some("\"wamid.first\""), &body).await;
    assert!(
        quoted.replayed,
        "quoted header not replayed: {}",
        quoted.text
    );

    assert_eq!(setup.trips_of(&rider).await, vec![trip]);
    setup.stop().await;
}

async fn reused_key_rejected(backend: Backend) {
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let http = client();
    let rider = app.rider().await;
    let first = post(app, &http, Some("k-reuse"), &request_trip(&rider, -1.9450)).await;
    let trip = first.trip_id();

    let other = post(app, &http, Some("k-reuse"), &request_trip(&rider, -1.9460)).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert_eq!(other.code(), "IDEMPOTENCY_KEY_REUSED");
    assert!(other.json.get("data").is_none(), "data with the rejection");
    assert_eq!(setup.trips_of(&rider).await, vec![trip.clone()]);

    // The first request still replays.
    let again = post(app, &http, Some("k-reuse"), &request_trip(&rider, -1.9450)).await;
    assert!(again.replayed);
    assert_eq!(again.trip_id(), trip);
    setup.stop().await;
}

async fn keys_scoped_per_token(backend: Backend) {
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let admin = client();
    let bridge = client_with_token(&setup.bridge_token().await);
    let rider = app.rider().await;
    let body = request_trip(&rider, -1.9450);

    let by_admin = post(app, &admin, Some("shared-key"), &body).await;
    let by_bridge = post(app, &bridge, Some("shared-key"), &body).await;
    assert_eq!(by_bridge.status, StatusCode::OK, "{}", by_bridge.text);
    assert!(!by_bridge.replayed, "bridge got the admin's response");
    assert_ne!(by_admin.trip_id(), by_bridge.trip_id());

    // A different request under the same key is still fine for another token.
    let other_rider = app.rider().await;
    let other_body = request_trip(&other_rider, -1.9470);
    let bridge_again = post(app, &bridge, Some("shared-key"), &body).await;
    assert!(bridge_again.replayed);
    assert_eq!(bridge_again.trip_id(), by_bridge.trip_id());
    let admin_other = post(app, &admin, Some("shared-key"), &other_body).await;
    assert_eq!(admin_other.code(), "IDEMPOTENCY_KEY_REUSED");

    assert_eq!(setup.trips_of(&rider).await.len(), 2);
    assert!(setup.trips_of(&other_rider).await.is_empty());
    setup.stop().await;
}

async fn concurrent_duplicates_run_once(backend: Backend) {
    const CALLERS: usize = 8;
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let rider = app.rider().await;
    let body = request_trip(&rider, -1.9450);
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let url = app.url("/graphql");
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (barrier, body, url) = (barrier.clone(), body.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            barrier.wait().await;
            let response = http
                .post(url)
                .header("Idempotency-Key", "k-race")
                .json(&body)
                .send()
                .await
                .expect("POST /graphql");
            let status = response.status();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let text = response.text().await.expect("body");
            (status, replayed, text)
        }));
    }
    let mut executed = Vec::new();
    let mut replayed = Vec::new();
    for task in tasks {
        let (status, was_replayed, text) = task.await.expect("caller task");
        let json: Value = serde_json::from_str(&text).expect("JSON body");
        match status {
            StatusCode::OK if was_replayed => replayed.push(text),
            StatusCode::OK => executed.push(text),
            StatusCode::CONFLICT => {
                assert_eq!(
                    json["errors"][0]["extensions"]["code"], "CONFLICT",
                    "{text}"
                );
            }
            other => panic!("unexpected HTTP {other}: {text}"),
        }
    }
    assert_eq!(executed.len(), 1, "executed: {executed:?}");
    for text in &replayed {
        assert_eq!(
            text, &executed[0],
            "a replay differs from the executed response"
        );
    }
    let trips = setup.trips_of(&rider).await;
    assert_eq!(trips.len(), 1, "trips: {trips:?}");

    let after = post(app, &client(), Some("k-race"), &body).await;
    assert!(after.replayed);
    assert_eq!(after.text, executed[0]);
    setup.stop().await;
}

async fn invalid_keys_rejected(backend: Backend) {
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let http = client();
    let rider = app.rider().await;
    let body = request_trip(&rider, -1.9450);

    let long = "k".repeat(256);
    for key in ["", long.as_str(), "\"unterminated", "\"a\"b\"", "tab\there"] {
        let reply = post(app, &http, Some(key), &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "key {key:?}: {}",
            reply.text
        );
        assert_eq!(reply.code(), "BAD_USER_INPUT", "key {key:?}");
        assert_eq!(
            reply.json["errors"][0]["extensions"]["field"], "Idempotency-Key",
            "key {key:?}"
        );
    }
    for key in [json!("clé"), json!(""), json!(42)] {
        let mut keyed = body.clone();
        keyed["extensions"] = json!({ "idempotencyKey": key });
        let reply = post(app, &http, None, &keyed).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "key {key}: {}",
            reply.text
        );
        assert_eq!(
            reply.json["errors"][0]["extensions"]["field"], "Idempotency-Key",
            "key {key}"
        );
    }

    let mut disagreeing = body.clone();
    disagreeing["extensions"] = json!({ "idempotencyKey": "k-one" });
    let reply = post(app, &http, Some("k-two"), &disagreeing).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.code(), "BAD_USER_INPUT");

    let batch = json!([body.clone(), request_trip(&rider, -1.9460)]);
    let reply = post(app, &http, Some("k-batch"), &batch).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.code(), "BAD_USER_INPUT");
    assert_eq!(
        reply.json["errors"][0]["extensions"]["field"],
        "Idempotency-Key"
    );

    assert!(setup.trips_of(&rider).await.is_empty());
    assert_eq!(setup.stored_keys().await, 0);
    setup.stop().await;
}

async fn client_error_replayed(backend: Backend) {
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let http = client();
    let rider = app.rider().await;
    let body = request_trip(&rider, 95.0);

    let first = post(app, &http, Some("k-bad-lat"), &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.code(), "BAD_USER_INPUT");
    assert!(!first.replayed);

    let again = post(app, &http, Some("k-bad-lat"), &body).await;
    assert!(again.replayed, "client error not stored: {}", again.text);
    assert_eq!(again.text, first.text);
    assert!(setup.trips_of(&rider).await.is_empty());
    setup.stop().await;
}

async fn queries_ignore_key(backend: Backend) {
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let http = client();
    let rider = app.rider().await;
    let query = json!({ "query": "{ trips { id } }" });
    let read = post(app, &http, Some("k-query"), &query).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert!(!read.replayed);
    assert_eq!(setup.stored_keys().await, 0, "a query stored its key");

    let write = post(app, &http, Some("k-query"), &request_trip(&rider, -1.9450)).await;
    assert_eq!(write.status, StatusCode::OK, "{}", write.text);
    assert!(!write.replayed);
    write.trip_id();

    // GET never runs mutations, with or without a key.
    let get_url = url::Url::parse_with_params(
        &app.url("/graphql"),
        [("query", "mutation { goOffline(driverId: \"1\") { id } }")],
    )
    .expect("GET URL");
    let response = http
        .get(get_url)
        .header("Idempotency-Key", "k-get")
        .send()
        .await
        .expect("GET /graphql");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    setup.stop().await;
}

async fn expired_key_runs_again(backend: Backend) {
    let mut setup = Setup::start(backend).await;
    let http = client();
    let rider = setup.app.rider().await;
    let first = post(
        &setup.app,
        &http,
        Some("k-old"),
        &request_trip(&rider, -1.9450),
    )
    .await;
    let fresh = post(
        &setup.app,
        &http,
        Some("k-new"),
        &request_trip(&rider, -1.9460),
    )
    .await;
    setup.age_key("k-old", TimeDelta::hours(25)).await;

    // Past 24 hours the key is free, even for a different request.
    let later = post(
        &setup.app,
        &http,
        Some("k-old"),
        &request_trip(&rider, -1.9470),
    )
    .await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.text);
    assert!(!later.replayed, "expired key replayed");
    assert_ne!(later.trip_id(), first.trip_id());
    assert_eq!(setup.trips_of(&rider).await.len(), 3);

    // The sweep at start deletes expired keys and keeps the others.
    setup.age_key("k-old", TimeDelta::hours(25)).await;
    setup.app.restart(|_| {}).await;
    let side = &setup;
    eventually("expired key deleted", || async move {
        (side.stored_keys().await == 1).then_some(())
    })
    .await;
    let still = post(
        &setup.app,
        &http,
        Some("k-new"),
        &request_trip(&rider, -1.9460),
    )
    .await;
    assert!(still.replayed);
    assert_eq!(still.text, fresh.text);

    // The store deletes only keys older than 24 hours.
    let store = IdempotencyStore::new(setup.db.clone());
    assert_eq!(store.delete_expired(Utc::now()).await.expect("sweep"), 0);
    setup.age_key("k-new", TimeDelta::hours(23)).await;
    assert_eq!(store.delete_expired(Utc::now()).await.expect("sweep"), 0);
    setup.age_key("k-new", TimeDelta::hours(25)).await;
    assert_eq!(store.delete_expired(Utc::now()).await.expect("sweep"), 1);

    setup.stop().await;
}

async fn pending_key_blocks_until_lease_ends(backend: Backend) {
    let setup = Setup::start(backend).await;
    let app = &setup.app;
    let http = client();
    let rider = app.rider().await;
    let body = request_trip(&rider, -1.9450);
    let hash = request_hash(&serde_json::from_value(body.clone()).expect("GraphQL request"));
    let token_id = setup.admin_token_id().await;
    let pending = |key: &str, age: TimeDelta| idempotency_key::ActiveModel {
        token_id: Set(token_id),
        key: Set(key.to_owned()),
        request_hash: Set(hash.clone()),
        status: Set(IdempotencyKeyStatus::Pending),
        response: Set(None),
        created_at: Set(Utc::now() - age),
        ..Default::default()
    };

    // A request with this key is running.
    pending("k-running", TimeDelta::seconds(5))
        .insert(&setup.db)
        .await
        .expect("pending row");
    let blocked = post(app, &http, Some("k-running"), &body).await;
    assert_eq!(blocked.status, StatusCode::CONFLICT, "{}", blocked.text);
    assert_eq!(blocked.code(), "CONFLICT");
    assert!(setup.trips_of(&rider).await.is_empty());

    // Its instance stopped ten minutes ago without finishing: a repeat runs.
    pending("k-abandoned", TimeDelta::minutes(10))
        .insert(&setup.db)
        .await
        .expect("pending row");
    let taken_over = post(app, &http, Some("k-abandoned"), &body).await;
    assert_eq!(taken_over.status, StatusCode::OK, "{}", taken_over.text);
    assert!(!taken_over.replayed);
    let trip = taken_over.trip_id();
    let again = post(app, &http, Some("k-abandoned"), &body).await;
    assert!(again.replayed);
    assert_eq!(setup.trips_of(&rider).await, vec![trip]);
    setup.stop().await;
}

async fn store_release_frees_key(backend: Backend) {
    let setup = Setup::start(backend).await;
    let store = IdempotencyStore::new(setup.db.clone());
    let token_id = setup.admin_token_id().await;
    let now = Utc::now();
    let claim = |hash: &'static str| store.claim(token_id, "k-store", hash, now);

    // A transient error releases the key, so the retry claims it again.
    let Claim::Claimed(first) = claim("h1").await.expect("claim") else {
        panic!("first claim not granted");
    };
    assert_eq!(claim("h1").await.expect("claim"), Claim::InProgress);
    store.release(first).await.expect("release");
    let Claim::Claimed(second) = claim("h1").await.expect("claim") else {
        panic!("released key not claimable");
    };

    // A stored response is replayed to the same request only.
    assert!(
        store
            .complete(second, "{\"data\":1}")
            .await
            .expect("complete")
    );
    assert_eq!(
        claim("h1").await.expect("claim"),
        Claim::Replay("{\"data\":1}".into())
    );
    assert_eq!(claim("h2").await.expect("claim"), Claim::Reused);
    // Releasing a finished key changes nothing.
    store.release(second).await.expect("release");
    assert_eq!(setup.stored_keys().await, 1);
    setup.stop().await;
}

on_both_backends!(
    retry_replays_first_trip,
    reused_key_rejected,
    keys_scoped_per_token,
    concurrent_duplicates_run_once,
    invalid_keys_rejected,
    client_error_replayed,
    queries_ignore_key,
    expired_key_runs_again,
    pending_key_blocks_until_lease_ends,
    store_release_frees_key,
);
