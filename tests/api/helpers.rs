//! Test harness: starts the real server on 127.0.0.1 with a fresh database per test, and
//! talks to it over HTTP (reqwest) and WebSocket (tokio-tungstenite), as clients do.
//!
//! SQLite tests use a temporary file. PostgreSQL tests create a database per test on the server
//! at `MOBILITY_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and drop
//! it when the test stops the app. An unreachable PostgreSQL fails the test with the URL and
//! the command that starts it; it never skips.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mobility::app::{RunningServer, spawn};
use mobility::config::ServeConfig;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Default administrative URL of the test PostgreSQL server.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Storage engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines `mod NAME { sqlite, postgres }` test pairs that call `async fn NAME(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Admin token every test server accepts (`MOBILITY_ADMIN_TOKEN`), sent by [`TestApp::gql`],
/// [`client`] and [`TestApp::subscribe`].
pub const ADMIN_TOKEN: &str =
    "mob_00000000000000000000000000000000000000000000000000000000000000ad";

/// Builds an HTTP client that sends `token` as its bearer token.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}");
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&value).expect("token is a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// Builds an HTTP client that sends the admin token.
pub fn client() -> reqwest::Client {
    client_with_token(ADMIN_TOKEN)
}

/// Default URL of the test Redis.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Redis the multi-instance tests use: `MOBILITY_TEST_REDIS_URL` or the machine's.
/// Panics with the command that starts it when it does not respond; never skips.
#[allow(dead_code)]
pub async fn test_redis_url() -> String {
    let url = std::env::var("MOBILITY_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into());
    let answer = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    if let Err(e) = answer.await {
        panic!(
            "Redis is required for the multi-instance tests and does not answer at {url}: {e}. \
             Start it (redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' \
             --appendonly no) or set MOBILITY_TEST_REDIS_URL."
        );
    }
    url
}

/// Returns a Redis key prefix no other test uses.
#[allow(dead_code)]
pub fn unique_redis_prefix() -> String {
    format!("mobility-test-{}-{}", std::process::id(), unique())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number unique within this test process, for phone numbers, plates and database names.
pub fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

enum Store {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// A running server with its own database.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    #[allow(dead_code)]
    pub backend: Backend,
    http: reqwest::Client,
    server: Option<RunningServer>,
    store: Option<Store>,
    database_url: String,
}

fn postgres_admin_url() -> String {
    std::env::var("MOBILITY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

async fn create_postgres_database() -> (String, Store) {
    let admin_url = postgres_admin_url();
    let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required for the postgres tests and is not reachable at {admin_url}: \
             {e}. Start it (on Debian: pg_ctlcluster --skip-systemctl-redirect $(ls \
             /etc/postgresql) main start) or set MOBILITY_TEST_POSTGRES_URL."
        )
    });
    let name = format!("mobility_test_{}_{}", std::process::id(), unique());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} on {admin_url}: {e}"));
    admin.close().await.ok();
    let mut url = url::Url::parse(&admin_url).expect("MOBILITY_TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    (url.to_string(), Store::Postgres { admin_url, name })
}

impl TestApp {
    /// Starts a server with default settings.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a server after `adjust` changes the default settings.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
        let (database_url, store) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                (url, Store::Sqlite(dir))
            }
            Backend::Postgres => create_postgres_database().await,
        };
        let mut app = TestApp {
            addr: "127.0.0.1:0".parse().unwrap(),
            backend,
            http: client(),
            server: None,
            store: Some(store),
            database_url,
        };
        app.start(adjust).await;
        app
    }

    async fn start(&mut self, adjust: impl FnOnce(&mut ServeConfig)) {
        let mut config = ServeConfig::with_database(self.database_url.clone());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_token = Some(ADMIN_TOKEN.into());
        adjust(&mut config);
        let server = spawn(config).await.expect("server starts");
        self.addr = server.addr;
        self.server = Some(server);
    }

    /// Starts another server on this one's database, as a second instance behind a load
    /// balancer. Stopping it leaves the database to this app.
    pub async fn sibling(&self, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
        let mut app = TestApp {
            addr: "127.0.0.1:0".parse().unwrap(),
            backend: self.backend,
            http: client(),
            server: None,
            store: None,
            database_url: self.database_url.clone(),
        };
        app.start(adjust).await;
        app
    }

    /// Stops the server and starts a new one on the same database, as after a crash or deploy.
    pub async fn restart(&mut self, adjust: impl FnOnce(&mut ServeConfig)) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops cleanly");
        }
        self.start(adjust).await;
    }

    /// Stops the server and drops the PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops cleanly");
        }
        if let Some(Store::Postgres { admin_url, name }) = self.store.take()
            && let Ok(admin) = Database::connect(&admin_url).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a GraphQL POST and returns the whole JSON response.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert!(status.is_success(), "HTTP {status}: {body}");
        body
    }

    /// Sends a GraphQL POST and returns `data`, failing the test on any error.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Sends a GraphQL POST that must fail; returns the first error and checks its code.
    pub async fn err(&self, query: &str, variables: Value, code: &str) -> Value {
        let body = self.gql(query, variables).await;
        let error = body["errors"][0].clone();
        assert!(
            !error.is_null(),
            "expected an error with code {code}, got {body}"
        );
        assert_eq!(error["extensions"]["code"], code, "wrong code in {body}");
        error
    }

    /// Registers a rider with a unique phone; returns the id.
    pub async fn rider(&self) -> String {
        let n = unique();
        let data = self
            .ok(
                "mutation($input: RegisterRiderInput!) { registerRider(input: $input) { id } }",
                json!({ "input": { "name": format!("Rider {n}"), "phone": format!("+2507{:08}", n) } }),
            )
            .await;
        data["registerRider"]["id"].as_str().unwrap().to_owned()
    }

    /// Registers a driver of `vehicle_type` (`"MOTO"` or `"CAB"`); returns the id.
    pub async fn driver(&self, vehicle_type: &str) -> String {
        let n = unique();
        let input = json!({
            "name": format!("Driver {n}"),
            "phone": format!("+2507{:08}", 50_000_000 + n),
            "vehicle": { "type": vehicle_type, "plate": format!("RAD{n:05}") },
        });
        let data = self
            .ok(
                "mutation($input: RegisterDriverInput!) { registerDriver(input: $input) { id } }",
                json!({ "input": input }),
            )
            .await;
        data["registerDriver"]["id"].as_str().unwrap().to_owned()
    }

    /// Registers a driver and puts it online at (`lat`, `lng`); returns the id.
    pub async fn online_driver(&self, vehicle_type: &str, lat: f64, lng: f64) -> String {
        let id = self.driver(vehicle_type).await;
        self.ok(
            "mutation($id: ID!, $loc: LocationInput) { goOnline(driverId: $id, location: $loc) { id } }",
            json!({ "id": id, "loc": { "lat": lat, "lng": lng } }),
        )
        .await;
        id
    }

    /// Requests a trip for `rider` at (`lat`, `lng`); returns the trip id.
    pub async fn request_trip(
        &self,
        rider: &str,
        vehicle_type: &str,
        lat: f64,
        lng: f64,
    ) -> String {
        let data = self
            .ok(
                "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id status } }",
                json!({ "input": {
                    "riderId": rider,
                    "pickup": { "lat": lat, "lng": lng },
                    "vehicleType": vehicle_type,
                } }),
            )
            .await;
        assert_eq!(data["requestTrip"]["status"], "REQUESTED");
        data["requestTrip"]["id"].as_str().unwrap().to_owned()
    }

    /// Runs a driver step mutation (`acceptTrip`, `arriveAtPickup`, `startTrip`,
    /// `completeTrip`) and returns the whole response.
    pub async fn driver_step(&self, mutation: &str, trip: &str, driver: &str) -> Value {
        let query = format!(
            "mutation($t: ID!, $d: ID!) {{ {mutation}(tripId: $t, driverId: $d) {{ id status }} }}"
        );
        self.gql(&query, json!({ "t": trip, "d": driver })).await
    }

    /// Current status of a trip.
    pub async fn trip_status(&self, trip: &str) -> String {
        let data = self
            .ok(
                "query($id: ID!) { trip(id: $id) { status } }",
                json!({ "id": trip }),
            )
            .await;
        data["trip"]["status"].as_str().unwrap().to_owned()
    }

    /// Opens a WebSocket subscription with `protocol` and waits for the server's ack.
    pub async fn subscribe(
        &self,
        protocol: Protocol,
        query: &str,
        variables: Value,
    ) -> Subscription {
        self.subscribe_as(ADMIN_TOKEN, protocol, query, variables)
            .await
    }

    /// Builds the upgrade request of `/graphql/ws` offering `protocol`.
    fn ws_request(
        &self,
        protocol: Protocol,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut request = format!("ws://{}/graphql/ws", self.addr)
            .into_client_request()
            .expect("WebSocket request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(protocol.name()),
        );
        request
    }

    /// Opens a WebSocket subscription with `protocol`, authenticated with `token`, and waits
    /// for the server's ack.
    pub async fn subscribe_as(
        &self,
        token: &str,
        protocol: Protocol,
        query: &str,
        variables: Value,
    ) -> Subscription {
        let request = self.ws_request(protocol);
        let (mut socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connects");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap()),
            Some(protocol.name()),
            "server picked another subprotocol"
        );
        send_json(
            &mut socket,
            json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
        )
        .await;
        let mut sub = Subscription { socket, protocol };
        let ack = sub.next_message().await;
        assert_eq!(ack["type"], "connection_ack", "expected ack, got {ack}");
        let start = match protocol {
            Protocol::TransportWs => "subscribe",
            Protocol::LegacyWs => "start",
        };
        send_json(
            &mut sub.socket,
            json!({ "id": "1", "type": start, "payload": { "query": query, "variables": variables } }),
        )
        .await;
        // The protocols have no acknowledgement of a started subscription, so give the server
        // a moment to register it before the test publishes; a slower server only makes the
        // test wait for an event it would have missed, never pass wrongly.
        tokio::time::sleep(SUBSCRIBE_SETTLE).await;
        sub
    }
}

/// Pause after starting a subscription; see [`TestApp::subscribe`].
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(300);

/// WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// Legacy `graphql-ws` (subscriptions-transport-ws).
    LegacyWs,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_json(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .expect("WebSocket send");
}

/// Longest wait for one subscription message before the test fails. Generous because CI
/// machines are shared; a passing test never waits this long.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// An open subscription.
pub struct Subscription {
    socket: Socket,
    protocol: Protocol,
}

impl Subscription {
    /// Next protocol message, answering pings and skipping keep-alives.
    pub async fn next_message(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(MESSAGE_TIMEOUT, self.socket.next())
                .await
                .expect("no WebSocket message within the timeout")
                .expect("WebSocket closed")
                .expect("WebSocket error");
            let text = match message {
                Message::Text(text) => text,
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(frame) => panic!("WebSocket closed by server: {frame:?}"),
                other => panic!("unexpected WebSocket message {other:?}"),
            };
            let value: Value = serde_json::from_str(&text).expect("JSON message");
            match value["type"].as_str() {
                Some("ka") => continue,
                Some("ping") => {
                    send_json(&mut self.socket, json!({ "type": "pong" })).await;
                    continue;
                }
                _ => return value,
            }
        }
    }

    /// The `data` of the next event; fails the test on an error message.
    pub async fn next_data(&mut self) -> Value {
        let message = self.next_message().await;
        let data_type = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::LegacyWs => "data",
        };
        assert_eq!(
            message["type"], data_type,
            "expected an event, got {message}"
        );
        assert!(
            message["payload"].get("errors").is_none(),
            "event with errors: {message}"
        );
        message["payload"]["data"].clone()
    }

    /// The next message, which must carry an error for the subscription; returns the first
    /// error. async-graphql 7.2.1 reports every error, parse and validation errors included,
    /// in the protocol's data message (`next` or `data`) with `data: null` and `errors`, and
    /// then sends `complete`. It never sends the `error` message of graphql-transport-ws. This
    /// also checks that `complete` follows.
    #[allow(dead_code)]
    pub async fn next_error(&mut self) -> Value {
        let message = self.next_message().await;
        let data_type = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::LegacyWs => "data",
        };
        assert_eq!(
            message["type"], data_type,
            "expected an error in a {data_type} message, got {message}"
        );
        assert!(
            message["payload"]["data"].is_null(),
            "expected no data with the error, got {message}"
        );
        let error = message["payload"]["errors"][0].clone();
        assert!(error.is_object(), "expected an error, got {message}");
        let complete = self.next_message().await;
        assert_eq!(
            complete["type"], "complete",
            "expected complete after the error, got {complete}"
        );
        assert_eq!(
            complete["id"], message["id"],
            "complete of another operation"
        );
        error
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing after 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + MESSAGE_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 3339 time `offset_s` seconds from now (negative for the past), for `recordedAt`.
#[allow(dead_code)]
pub fn time_from_now(offset_s: i64) -> String {
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(offset_s);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl TestApp {
    /// Sends `updateDriverLocation` with `location` (a `LocationInput` object) and returns
    /// the whole response.
    #[allow(dead_code)]
    pub async fn update_location(&self, driver: &str, location: Value) -> Value {
        self.gql(
            "mutation($d: ID!, $l: LocationInput!) \
             { updateDriverLocation(driverId: $d, location: $l) \
             { status message errorCode latestRecordedAt } }",
            json!({ "d": driver, "l": location }),
        )
        .await
    }
}

/// Fields of a trip that a rejected call must leave unchanged.
const TRIP_RECORD: &str = "status driver { id } \
     events { kind actorRole actorId fromStatus toStatus offerId detail } \
     offers { id status declineReason } ratings { raterRole stars comment }";

/// Calls shared by the trip, offer and concurrency tests.
impl TestApp {
    /// Offers `trip` to `driver` and returns the whole response.
    pub async fn offer_trip(&self, trip: &str, driver: &str) -> Value {
        self.gql(
            "mutation($t: ID!, $d: ID!) { offerTrip(tripId: $t, driverId: $d) \
             { id tripId status createdAt expiresAt respondedAt declineReason distanceMeters \
               driver { id } } }",
            json!({ "t": trip, "d": driver }),
        )
        .await
    }

    /// Cancels `trip` as `role` (`"RIDER"` or `"DRIVER"`) with id `actor`; returns the whole
    /// response.
    pub async fn cancel_trip(&self, trip: &str, role: &str, actor: &str, reason: &str) -> Value {
        self.gql(
            "mutation($t: ID!, $a: ActorInput!, $r: String!) { cancelTrip(tripId: $t, actor: $a, \
             reason: $r) { id status cancelledAt cancelledBy cancelReason } }",
            json!({ "t": trip, "a": { "role": role, "id": actor }, "r": reason }),
        )
        .await
    }

    /// Reads a trip's status, driver, events, offers and ratings, to compare before and
    /// after a call that must change nothing.
    pub async fn trip_record(&self, trip: &str) -> Value {
        let query = format!("query($id: ID!) {{ trip(id: $id) {{ {TRIP_RECORD} }} }}");
        let data = self.ok(&query, json!({ "id": trip })).await;
        assert!(!data["trip"].is_null(), "trip {trip} not found");
        data["trip"].clone()
    }

    /// Reads a driver's presence, offer counters and rating summary.
    pub async fn driver_state(&self, driver: &str) -> Value {
        let data = self
            .ok(
                "query($id: ID!) { driver(id: $id) { offersAccepted offersRejected acceptanceRate \
                 rating { average count smoothed } presence { online activeTripId \
                 availableSince location { lat lng } } } }",
                json!({ "id": driver }),
            )
            .await;
        assert!(!data["driver"].is_null(), "driver {driver} not found");
        data["driver"].clone()
    }
}

/// Parses an RFC 3339 time from a response field, failing the test with `what` otherwise.
pub fn time(value: &Value, what: &str) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{what} {text:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// Asserts that the first error of a response has `code`.
pub fn assert_code(body: &Value, code: &str, what: &str) {
    assert_eq!(
        body["errors"][0]["extensions"]["code"], code,
        "{what}: {body}"
    );
}

/// Server reply to `connection_init`.
#[derive(Debug, PartialEq)]
#[allow(dead_code)]
pub enum InitOutcome {
    Ack,
    /// A protocol message other than the ack, such as legacy `connection_error`.
    Message(Value),
    /// A close frame with its code and reason.
    Closed(u16, String),
}

impl TestApp {
    /// Opens a WebSocket with `protocol` (and `Authorization: Bearer <header_token>` on the
    /// upgrade request when given), sends `connection_init` with `payload`, and returns the
    /// server's first reply.
    #[allow(dead_code)]
    pub async fn connection_init(
        &self,
        protocol: Protocol,
        header_token: Option<&str>,
        payload: Value,
    ) -> InitOutcome {
        let mut request = self.ws_request(protocol);
        if let Some(token) = header_token {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
            );
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connects");
        send_json(
            &mut socket,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        loop {
            let message = tokio::time::timeout(MESSAGE_TIMEOUT, socket.next())
                .await
                .expect("no WebSocket message within the timeout");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    return match value["type"].as_str() {
                        Some("connection_ack") => InitOutcome::Ack,
                        _ => InitOutcome::Message(value),
                    };
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return InitOutcome::Closed(code, reason);
                }
                Some(Ok(_)) => continue,
                other => panic!("WebSocket ended without an answer: {other:?}"),
            }
        }
    }
}

/// Raw WebSocket access for the limit tests, which open subscriptions one at a time and read
/// how the server closes the connection.
impl TestApp {
    /// Opens a `graphql-transport-ws` connection with the admin token and waits for the ack.
    /// Returns the error of a rejected upgrade, such as an HTTP 503.
    #[allow(dead_code)]
    pub async fn connect_ws(&self) -> Result<Subscription, tokio_tungstenite::tungstenite::Error> {
        let protocol = Protocol::TransportWs;
        let request = self.ws_request(protocol);
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        let mut sub = Subscription { socket, protocol };
        send_json(
            &mut sub.socket,
            json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {ADMIN_TOKEN}") } }),
        )
        .await;
        let ack = sub.next_message().await;
        assert_eq!(ack["type"], "connection_ack", "expected ack, got {ack}");
        Ok(sub)
    }
}

impl Subscription {
    /// Sends `subscribe` for `query` under `id` without waiting for anything.
    #[allow(dead_code)]
    pub async fn start(&mut self, id: &str, query: &str) {
        send_json(
            &mut self.socket,
            json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
        )
        .await;
    }

    /// Sends `complete` for the subscription `id`.
    #[allow(dead_code)]
    pub async fn stop(&mut self, id: &str) {
        send_json(&mut self.socket, json!({ "id": id, "type": "complete" })).await;
    }

    /// Sends a `ping` and waits for the `pong`. The server processes a connection's messages in
    /// order, so the pong shows that it processed every earlier message without closing.
    #[allow(dead_code)]
    pub async fn ping_pong(&mut self) {
        send_json(&mut self.socket, json!({ "type": "ping" })).await;
        loop {
            let message = self.next_message().await;
            if message["type"] == "pong" {
                return;
            }
        }
    }

    /// Reads until the server closes the connection; returns the close code and reason.
    #[allow(dead_code)]
    pub async fn close_frame(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(MESSAGE_TIMEOUT, self.socket.next())
                .await
                .expect("no close frame within the timeout")
                .expect("WebSocket ended without a close frame")
                .expect("WebSocket error");
            if let Message::Close(frame) = message {
                let frame = frame.expect("close frame with a code");
                return (frame.code.into(), frame.reason.to_string());
            }
        }
    }

    /// Closes the connection from the client side and waits for the server's close frame.
    #[allow(dead_code)]
    pub async fn close(mut self) {
        self.socket.close(None).await.expect("WebSocket close");
        while let Ok(Some(Ok(_))) = tokio::time::timeout(MESSAGE_TIMEOUT, self.socket.next()).await
        {
        }
    }
}

/// A fresh database for a server that runs outside this process, such as the `mobility`
/// binary in the durability tests: a SQLite file in a temporary directory, or a new
/// PostgreSQL database that [`FreshDatabase::drop_database`] removes.
#[allow(dead_code)]
pub struct FreshDatabase {
    pub url: String,
    store: Store,
}

#[allow(dead_code)]
impl FreshDatabase {
    pub async fn create(backend: Backend) -> FreshDatabase {
        let (url, store) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                (url, Store::Sqlite(dir))
            }
            Backend::Postgres => create_postgres_database().await,
        };
        FreshDatabase { url, store }
    }

    /// Drops the PostgreSQL database, or deletes the SQLite file with its directory.
    pub async fn drop_database(self) {
        if let Store::Postgres { admin_url, name } = self.store
            && let Ok(admin) = Database::connect(&admin_url).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}
