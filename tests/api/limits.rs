//! Request limits through real HTTP and WebSocket: each limit lets a request at its bound
//! through and rejects one above it with its code. Limits are set low per test with
//! `TestApp::spawn_with`.

use std::time::Instant;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::helpers::{
    ADMIN_TOKEN, Backend, TestApp, assert_code, client, client_with_token, eventually, unique,
};

crate::on_both_backends!(
    aliases_bounded,
    batch_operations_bounded,
    body_size_bounded,
    mutation_rate_per_token,
    mutation_above_burst_rejected,
    introspection_can_be_disabled,
    graphiql_can_be_disabled,
    cors_allows_listed_origins,
    cors_default_and_wildcard,
    subscriptions_per_connection_bounded,
    websocket_connections_bounded,
);

const REGISTER_RIDER: &str =
    "mutation($input: RegisterRiderInput!) { registerRider(input: $input) { id } }";

/// Input of `registerRider` with a phone number no other call uses.
fn rider_input() -> Value {
    let n = unique();
    json!({ "input": { "name": format!("Rider {n}"), "phone": format!("+2507{:08}", 20_000_000 + n) } })
}

/// Sends a GraphQL POST with `token`; returns the status, headers and JSON body.
async fn post_as(app: &TestApp, token: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
    let response = client_with_token(token)
        .post(app.url("/graphql"))
        .json(body)
        .send()
        .await
        .expect("POST /graphql");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.expect("JSON body");
    (status, headers, body)
}

/// Creates a bridge token as admin and returns its secret.
async fn bridge_token(app: &TestApp) -> String {
    let data = app
        .ok(
            "mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) { secret } }",
            json!({ "input": { "name": format!("bridge {}", unique()), "role": "BRIDGE" } }),
        )
        .await;
    data["createApiToken"]["secret"]
        .as_str()
        .expect("token secret")
        .to_owned()
}

/// Returns the message of the first error in `body` after checking its code.
fn error_message(body: &Value, code: &str) -> String {
    assert_code(body, code, "first error");
    body["errors"][0]["message"]
        .as_str()
        .expect("error message")
        .to_owned()
}

async fn aliases_bounded(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.max_aliases = 3).await;
    let token = bridge_token(&app).await;
    let query = |document: &str| json!({ "query": document });

    let (_, _, body) = post_as(
        &app,
        &token,
        &query("{ a: __typename b: __typename c: __typename }"),
    )
    .await;
    assert!(
        body.get("errors").is_none(),
        "3 aliases are allowed: {body}"
    );
    assert_eq!(body["data"]["c"], "QueryRoot", "{body}");

    let four = "{ a: __typename b: __typename c: __typename d: __typename }";
    let (_, _, body) = post_as(&app, &token, &query(four)).await;
    let message = error_message(&body, "GRAPHQL_VALIDATION_FAILED");
    assert!(message.contains("4 aliased fields"), "{body}");
    assert!(message.contains("at most 3"), "{body}");

    // A fragment spread twice counts twice.
    let spread_twice =
        "query { ...F ...F } fragment F on QueryRoot { a: __typename b: __typename }";
    let (_, _, body) = post_as(&app, &token, &query(spread_twice)).await;
    let message = error_message(&body, "GRAPHQL_VALIDATION_FAILED");
    assert!(message.contains("4 aliased fields"), "{body}");

    // Fields without aliases do not count.
    let (_, _, body) = post_as(
        &app,
        &token,
        &query("{ __typename a: __typename b: __typename c: __typename }"),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");

    // Admin tokens are exempt, for bulk registration with aliases.
    let data = app.ok(four, json!({})).await;
    assert_eq!(data["d"], "QueryRoot", "{data}");
    app.stop().await;
}

async fn batch_operations_bounded(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.max_batch_operations = 3).await;
    let operation = json!({ "query": "{ __typename }" });
    let batch = |size: usize| Value::Array(vec![operation.clone(); size]);

    let (status, _, body) = post_as(&app, ADMIN_TOKEN, &batch(3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let responses = body.as_array().expect("a batch gets an array");
    assert_eq!(responses.len(), 3, "{body}");
    for response in responses {
        assert_eq!(response["data"]["__typename"], "QueryRoot", "{body}");
    }

    let (status, _, body) = post_as(&app, ADMIN_TOKEN, &batch(4)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_code(&body, "LIMIT_EXCEEDED", "batch of 4 with a limit of 3");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("4 operations"), "{body}");
    assert!(message.contains("at most 3"), "{body}");
    app.stop().await;
}

async fn body_size_bounded(backend: Backend) {
    const LIMIT: usize = 1_024;
    let app = TestApp::spawn_with(backend, |config| config.max_body_bytes = LIMIT as u32).await;
    let request = r#"{"query":"{ __typename }"}"#;
    // Whitespace after the JSON value is valid JSON, so padding sets the size exactly.
    let padded = |size: usize| format!("{request}{}", " ".repeat(size - request.len()));
    let send = |body: String| {
        client()
            .post(app.url("/graphql"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };

    let response = send(padded(LIMIT)).await.expect("POST /graphql");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a body of exactly the limit"
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["data"]["__typename"], "QueryRoot", "{body}");

    let response = send(padded(LIMIT + 1)).await.expect("POST /graphql");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.expect("JSON error body");
    assert_code(&body, "LIMIT_EXCEEDED", "body one byte over the limit");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1024 bytes"), "{body}");
    app.stop().await;
}

async fn mutation_rate_per_token(backend: Backend) {
    const BURST: usize = 3;
    let app = TestApp::spawn_with(backend, |config| {
        config.mutation_rate_per_second = 1;
        config.mutation_burst = BURST as u32;
    })
    .await;
    // Admin tokens are exempt: two tokens and three riders are five mutations, above the burst.
    let limited = bridge_token(&app).await;
    let other = bridge_token(&app).await;
    for _ in 0..3 {
        app.rider().await;
    }

    // The burst always passes; past it, rejections start once requests outpace 1 per second.
    let started = Instant::now();
    let mut passed = 0;
    let (headers, rejected, rejected_input) = loop {
        assert!(passed < 100, "no rejection after {passed} mutations");
        let input = rider_input();
        let body = json!({ "query": REGISTER_RIDER, "variables": input });
        let (status, headers, body) = post_as(&app, &limited, &body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" {
            break (headers, body, input);
        }
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        passed += 1;
    };
    let elapsed = started.elapsed().as_secs() as usize;
    assert!(passed >= BURST, "rejected within the burst after {passed}");
    assert!(
        passed <= BURST + elapsed + 1,
        "{passed} mutations passed in {elapsed} s with a burst of {BURST} at 1 per second"
    );

    // At 1 per second, the next one is at most a second away.
    assert_eq!(
        rejected["errors"][0]["extensions"]["retryAfterSeconds"], 1,
        "{rejected}"
    );
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1"),
        "Retry-After header"
    );
    assert!(rejected["data"].is_null(), "{rejected}");
    let phone = rejected_input["input"]["phone"].clone();
    let data = app
        .ok(
            "query($p: String!) { riderByPhone(phone: $p) { id } }",
            json!({ "p": phone }),
        )
        .await;
    assert!(
        data["riderByPhone"].is_null(),
        "a rejected mutation ran: {data}"
    );

    // Queries are not limited, and another token has its own burst.
    let (_, _, body) = post_as(&app, &limited, &json!({ "query": "{ __typename }" })).await;
    assert_eq!(body["data"]["__typename"], "QueryRoot", "{body}");
    let body = json!({ "query": REGISTER_RIDER, "variables": rider_input() });
    let (_, _, body) = post_as(&app, &other, &body).await;
    assert!(
        body.get("errors").is_none(),
        "the other token was limited: {body}"
    );

    // The limited token recovers as time passes.
    eventually("the limited token to mutate again", || async {
        let body = json!({ "query": REGISTER_RIDER, "variables": rider_input() });
        let (_, _, body) = post_as(&app, &limited, &body).await;
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => Some(()),
            Some("RATE_LIMITED") => None,
            Some(_) => panic!("unexpected error: {body}"),
        }
    })
    .await;
    app.stop().await;
}

async fn mutation_above_burst_rejected(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.mutation_rate_per_second = 1;
        config.mutation_burst = 3;
    })
    .await;
    let token = bridge_token(&app).await;
    let aliased = |count: usize| {
        let fields: Vec<String> = (0..count)
            .map(|i| format!("r{i}: registerRider(input: $i{i}) {{ id }}"))
            .collect();
        let variables: Vec<String> = (0..count)
            .map(|i| format!("$i{i}: RegisterRiderInput!"))
            .collect();
        let values: serde_json::Map<String, Value> = (0..count)
            .map(|i| (format!("i{i}"), rider_input()["input"].clone()))
            .collect();
        json!({
            "query": format!("mutation({}) {{ {} }}", variables.join(", "), fields.join(" ")),
            "variables": values,
        })
    };

    // Each root field counts, so three in one operation spend the whole burst of a new token.
    let (_, _, body) = post_as(&app, &token, &aliased(3)).await;
    assert!(
        body.get("errors").is_none(),
        "3 mutations at a burst of 3: {body}"
    );
    assert!(body["data"]["r2"]["id"].is_string(), "{body}");

    // Four can never pass at once, whatever the time.
    let request = aliased(4);
    let (_, headers, body) = post_as(&app, &token, &request).await;
    assert_code(&body, "LIMIT_EXCEEDED", "4 mutations at a burst of 3");
    assert!(body["data"].is_null(), "{body}");
    assert!(
        headers.get("retry-after").is_none(),
        "waiting does not help"
    );
    let phone = request["variables"]["i0"]["phone"].clone();
    let data = app
        .ok(
            "query($p: String!) { riderByPhone(phone: $p) { id } }",
            json!({ "p": phone }),
        )
        .await;
    assert!(
        data["riderByPhone"].is_null(),
        "a rejected mutation ran: {data}"
    );
    app.stop().await;
}

async fn introspection_can_be_disabled(backend: Backend) {
    const INTROSPECTION: &str = "{ __schema { queryType { name } } }";
    let app = TestApp::spawn(backend).await;
    let data = app.ok(INTROSPECTION, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "QueryRoot");
    app.stop().await;

    let app = TestApp::spawn_with(backend, |config| config.introspection = false).await;
    let error = app
        .err(INTROSPECTION, json!({}), "GRAPHQL_VALIDATION_FAILED")
        .await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("introspection"), "{error}");
    // A fragment does not hide it.
    let error = app
        .err(
            "query { ...F } fragment F on QueryRoot { __type(name: \"Trip\") { name } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        )
        .await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("introspection"), "{error}");
    let data = app.ok("{ __typename }", json!({})).await;
    assert_eq!(
        data["__typename"], "QueryRoot",
        "__typename is not introspection"
    );
    app.stop().await;
}

async fn graphiql_can_be_disabled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = reqwest::get(app.url("/")).await.expect("GET /");
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.expect("page");
    assert!(page.to_lowercase().contains("graphiql"), "{page}");
    app.stop().await;

    let app = TestApp::spawn_with(backend, |config| config.graphiql = false).await;
    let response = reqwest::get(app.url("/")).await.expect("GET /");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let text = response.text().await.expect("body");
    assert!(
        text.contains("/graphql"),
        "no pointer to the endpoint: {text}"
    );
    assert!(
        !text.to_lowercase().contains("<html"),
        "still a page: {text}"
    );
    let data = app.ok("{ __typename }", json!({})).await;
    assert_eq!(data["__typename"], "QueryRoot");
    app.stop().await;
}

/// Sends a CORS preflight for a POST with `Authorization` and `Content-Type` from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("OPTIONS /graphql")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn cors_allows_listed_origins(backend: Backend) {
    const ALLOWED: &str = "https://ops.example.com";
    let app = TestApp::spawn_with(backend, |config| {
        config.cors_origins = vec![ALLOWED.into(), "http://127.0.0.1:3000".into()];
    })
    .await;

    let response = preflight(&app, ALLOWED).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "allowed methods: {methods:?}");
    let headers = header(&response, "access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        headers.contains("authorization"),
        "allowed headers: {headers:?}"
    );
    assert!(
        headers.contains("content-type"),
        "allowed headers: {headers:?}"
    );

    let response = preflight(&app, "https://evil.example.com").await;
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        None,
        "a disallowed origin got CORS approval"
    );

    // The request itself carries the header too, so the browser lets the page read it.
    let response = client()
        .post(app.url("/graphql"))
        .header("Origin", ALLOWED)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("POST /graphql");
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    app.stop().await;
}

async fn cors_default_and_wildcard(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = preflight(&app, "https://ops.example.com").await;
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        None,
        "CORS headers without configured origins"
    );
    app.stop().await;

    let app = TestApp::spawn_with(backend, |config| config.cors_origins = vec!["*".into()]).await;
    let response = preflight(&app, "https://anywhere.example.org").await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    app.stop().await;
}

const LIVE_TRIPS: &str = "subscription { liveTrips { trip { id } } }";

async fn subscriptions_per_connection_bounded(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.max_subscriptions_per_connection = 2;
    })
    .await;
    let mut socket = app.connect_ws().await.expect("WebSocket connects");

    socket.start("1", LIVE_TRIPS).await;
    socket.start("2", LIVE_TRIPS).await;
    // Two round trips: a close pending after the second subscription would come before the
    // second pong.
    socket.ping_pong().await;
    socket.ping_pong().await;

    // Completing one frees its place.
    socket.stop("1").await;
    socket.start("3", LIVE_TRIPS).await;
    socket.ping_pong().await;
    socket.ping_pong().await;

    socket.start("4", LIVE_TRIPS).await;
    let (code, reason) = socket.close_frame().await;
    assert_eq!(code, 4429, "close reason: {reason}");
    assert!(reason.contains("more than 2 subscriptions"), "{reason}");
    app.stop().await;
}

/// Asserts that a WebSocket upgrade was rejected with 503 and a `LIMIT_EXCEEDED` body.
fn assert_upgrade_rejected(result: Result<crate::helpers::Subscription, tungstenite::Error>) {
    let response = match result {
        Err(tungstenite::Error::Http(response)) => response,
        Err(other) => panic!("expected HTTP 503, got {other}"),
        Ok(_) => panic!("a connection above the limit was accepted"),
    };
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
        .expect("JSON error body");
    assert_code(
        &body,
        "LIMIT_EXCEEDED",
        "WebSocket connection above the limit",
    );
}

async fn websocket_connections_bounded(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.max_websocket_connections = 2).await;
    let first = app.connect_ws().await.expect("first connection");
    let mut second = app.connect_ws().await.expect("second connection");
    assert_upgrade_rejected(app.connect_ws().await);

    // A rejected upgrade leaves the open connections working.
    second.ping_pong().await;

    // Closing one frees its slot once the server has seen the close.
    first.close().await;
    let third = eventually("a free WebSocket slot", || async {
        app.connect_ws().await.ok()
    })
    .await;
    assert_upgrade_rejected(app.connect_ws().await);
    third.close().await;
    second.close().await;
    app.stop().await;
}
