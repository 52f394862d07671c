//! Durability under faults, with the real `mobility` binary as a child process.
//!
//! `kill -9` in the middle of trips, offers and location updates must lose nothing the server
//! acknowledged, and offers that fall due while the server is down must expire on the first
//! sweep after the restart. SIGTERM must let a request in flight finish and close every
//! WebSocket with code 1001 (going away).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::helpers::{ADMIN_TOKEN, Backend, FreshDatabase, eventually, time};

crate::on_both_backends!(kill_in_flight);

/// Offer lifetime of the child servers, short so that offers fall due while the server is
/// down.
const OFFER_TTL_SECONDS: u32 = 2;

/// Maximum wait for a child server to respond to `/healthz` after start, because a debug build
/// migrates a fresh database first.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Maximum wait for one response or state change before the test fails. Generous because CI
/// machines are shared; a passing test never waits this long.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Maximum time the client streams of the kill test may take to make enough progress.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A pickup and driver position near which every trip of these tests happens (Kigali).
const CENTER: (f64, f64) = (-1.9441, 30.0619);

/// The `mobility serve` binary running as a child process on a free loopback port.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// Starts `mobility serve` on `database_url` and waits until `/healthz` responds. Its
    /// output goes to `<logs>/<name>.log`, which failure messages include.
    async fn start(database_url: &str, logs: &Path, name: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_mobility"));
        command.arg("serve");
        // Settings of the test environment must not reach the child, Redis least of all.
        for (key, _) in std::env::vars() {
            if key.starts_with("MOBILITY_") || key == "REDIS_URL" || key == "DATABASE_URL" {
                command.env_remove(key);
            }
        }
        command
            .env("DATABASE_URL", database_url)
            .env("MOBILITY_LISTEN", addr.to_string())
            .env("MOBILITY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("MOBILITY_OFFER_TTL_SECONDS", OFFER_TTL_SECONDS.to_string())
            .env("MOBILITY_OFFER_SWEEP_MS", "500")
            .env("RUST_LOG", "mobility=info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("server log file"))
            .stderr(file);
        let child = command.spawn().expect("mobility serve starts");
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("HTTP client");
        let mut server = Server {
            child,
            addr,
            log,
            http,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!(
                    "mobility serve exited with {status} before it responded; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(response) = self.http.get(self.url("/healthz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mobility serve did not respond to /healthz within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Sends a GraphQL POST; returns the JSON body, or the transport failure as an error.
    async fn gql(&self, query: &str, variables: Value) -> Result<Value, String> {
        post(&self.http, &self.url("/graphql"), query, variables).await
    }

    /// Sends a GraphQL POST and returns `data`, failing the test on any error.
    async fn ok(&self, query: &str, variables: Value) -> Value {
        let body = self
            .gql(query, variables)
            .await
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log_text()));
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Sends SIGKILL, as `kill -9` does, and reaps the process.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Sends SIGTERM, as a service manager does to stop the server.
    fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit on its own.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running {TIMEOUT:?} after SIGTERM; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends a GraphQL POST with the admin token to `url`; returns the JSON body, or the
/// transport failure or non-JSON response as an error.
async fn post(
    http: &reqwest::Client,
    url: &str,
    query: &str,
    variables: Value,
) -> Result<Value, String> {
    let response = http
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .map_err(|e| format!("POST {url} failed: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("POST {url}: HTTP {status}, body cut short: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST {url}: HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("POST {url}: body is not JSON ({e}): {text}"))
}

// ---- what the server acknowledged ---------------------------------------------------------

/// A trip step sent to the server without a response before the kill. It may or may not have
/// committed.
#[derive(Debug, Clone)]
struct Step {
    event: &'static str,
    to: &'static str,
}

/// What the clients know about one trip.
#[derive(Debug, Clone, Default)]
struct TripLedger {
    /// Status after the last acknowledged step.
    status: String,
    /// Kinds of the events of acknowledged steps, in order. OFFER_EXPIRED events come from
    /// the server, not from a client step, so they are not listed.
    events: Vec<&'static str>,
    /// Offers by id, with the statuses each may end in.
    offers: BTreeMap<String, Vec<&'static str>>,
    ratings: usize,
    in_flight: Option<Step>,
}

/// A location fix as sent.
#[derive(Debug, Clone)]
struct Fix {
    recorded_at: DateTime<Utc>,
    lat: f64,
    lng: f64,
}

#[derive(Debug, Default)]
struct FixLedger {
    acknowledged: Option<Fix>,
    in_flight: Option<Fix>,
}

#[derive(Default)]
struct Ledger {
    trips: BTreeMap<String, TripLedger>,
    fixes: HashMap<String, FixLedger>,
    /// Acknowledged trip steps and fixes, to decide when enough has happened.
    trip_steps: usize,
    offers_made: usize,
    /// When the newest acknowledged offer that no decline follows falls due.
    newest_pending_expiry: Option<DateTime<Utc>>,
    /// Responses that no client should get, such as a GraphQL error for a valid step.
    problems: Vec<String>,
}

/// The clients' shared state: the ledger, a stop flag, and the number of requests sent and
/// still without a response.
#[derive(Clone)]
struct Clients {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    http: reqwest::Client,
    url: String,
}

/// The outcome of one request of a client stream.
enum Outcome {
    Data(Value),
    /// A GraphQL error: the request reached the server and was rejected.
    Rejected(Value),
    /// No response, because the server died or the connection broke.
    Lost,
}

impl Clients {
    async fn call(&self, query: &str, variables: Value) -> Outcome {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = post(&self.http, &self.url, query, variables).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match result {
            Err(_) => Outcome::Lost,
            Ok(body) if body.get("errors").is_some() => Outcome::Rejected(body),
            Ok(body) => Outcome::Data(body["data"].clone()),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn problem(&self, problem: String) {
        self.ledger.lock().problems.push(problem);
    }

    /// Requests a trip for `rider`; returns its id once acknowledged.
    async fn request_trip(&self, rider: &str) -> Option<String> {
        let outcome = self
            .call(
                "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id status } }",
                json!({ "input": {
                    "riderId": rider,
                    "vehicleType": "MOTO",
                    "pickup": { "lat": CENTER.0, "lng": CENTER.1 },
                } }),
            )
            .await;
        let data = match outcome {
            Outcome::Data(data) => data,
            Outcome::Rejected(body) => {
                self.problem(format!("requestTrip for rider {rider} rejected: {body}"));
                return None;
            }
            Outcome::Lost => return None,
        };
        let trip = data["requestTrip"]["id"].as_str()?.to_owned();
        let mut ledger = self.ledger.lock();
        ledger.trips.insert(
            trip.clone(),
            TripLedger {
                status: "REQUESTED".into(),
                events: vec!["REQUESTED"],
                ..TripLedger::default()
            },
        );
        ledger.trip_steps += 1;
        Some(trip)
    }

    /// Marks `step` of `trip` as sent without a response yet.
    fn begin(&self, trip: &str, step: &Step) {
        let mut ledger = self.ledger.lock();
        let entry = ledger.trips.get_mut(trip).expect("trip in the ledger");
        entry.in_flight = Some(step.clone());
    }

    /// Records `step` of `trip` as acknowledged.
    fn acknowledge(&self, trip: &str, step: &Step) {
        let mut ledger = self.ledger.lock();
        ledger.trip_steps += 1;
        let entry = ledger.trips.get_mut(trip).expect("trip in the ledger");
        entry.in_flight = None;
        entry.status = step.to.into();
        entry.events.push(step.event);
        if step.event == "RATED" {
            entry.ratings += 1;
        }
    }

    /// Runs one trip step and records it; returns the data once acknowledged.
    async fn step(&self, trip: &str, step: Step, query: &str, variables: Value) -> Option<Value> {
        self.begin(trip, &step);
        match self.call(query, variables).await {
            Outcome::Data(data) => {
                self.acknowledge(trip, &step);
                Some(data)
            }
            Outcome::Rejected(body) => {
                self.problem(format!("{} of trip {trip} rejected: {body}", step.event));
                None
            }
            Outcome::Lost => None,
        }
    }

    async fn driver_step(&self, mutation: &str, trip: &str, driver: &str, step: Step) -> bool {
        let query = format!(
            "mutation($t: ID!, $d: ID!) {{ {mutation}(tripId: $t, driverId: $d) {{ id status }} }}"
        );
        let variables = json!({ "t": trip, "d": driver });
        self.step(trip, step, &query, variables).await.is_some()
    }
}

/// Drives trips of `rider` with `driver` from request to rating, one step at a time, until
/// stopped or the server dies. Every third trip is cancelled by the rider after the accept.
async fn trip_stream(clients: Clients, rider: String, driver: String) {
    let mut round = 0;
    while !clients.stopped() {
        round += 1;
        let Some(trip) = clients.request_trip(&rider).await else {
            return;
        };
        let accept = Step {
            event: "ACCEPTED",
            to: "ACCEPTED",
        };
        if !clients
            .driver_step("acceptTrip", &trip, &driver, accept)
            .await
        {
            return;
        }
        if round % 3 == 0 {
            let step = Step {
                event: "CANCELLED",
                to: "CANCELLED",
            };
            let query = "mutation($t: ID!, $a: ActorInput!) { cancelTrip(tripId: $t, actor: $a, \
                         reason: \"changed plans\") { id status } }";
            let variables = json!({ "t": trip, "a": { "role": "RIDER", "id": rider } });
            if clients.step(&trip, step, query, variables).await.is_none() {
                return;
            }
            continue;
        }
        for (mutation, event) in [
            ("arriveAtPickup", "ARRIVED"),
            ("startTrip", "STARTED"),
            ("completeTrip", "COMPLETED"),
        ] {
            let step = Step { event, to: event };
            if !clients.driver_step(mutation, &trip, &driver, step).await {
                return;
            }
        }
        let step = Step {
            event: "RATED",
            to: "COMPLETED",
        };
        let query = "mutation($t: ID!, $by: ActorInput!) { rateTrip(tripId: $t, by: $by, \
                     stars: 5) { id } }";
        let variables = json!({ "t": trip, "by": { "role": "RIDER", "id": rider } });
        if clients.step(&trip, step, query, variables).await.is_none() {
            return;
        }
    }
}

/// Requests trips of `rider` and offers each to `driver`, declining every other offer and
/// leaving the rest pending, until stopped or the server dies.
async fn offer_stream(clients: Clients, rider: String, driver: String) {
    let mut round = 0;
    while !clients.stopped() {
        round += 1;
        let Some(trip) = clients.request_trip(&rider).await else {
            return;
        };
        let step = Step {
            event: "OFFERED",
            to: "REQUESTED",
        };
        let query = "mutation($t: ID!, $d: ID!) { offerTrip(tripId: $t, driverId: $d) \
                     { id status expiresAt } }";
        let variables = json!({ "t": trip, "d": driver });
        let Some(data) = clients.step(&trip, step, query, variables).await else {
            return;
        };
        let offer = data["offerTrip"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let expires_at = time(&data["offerTrip"]["expiresAt"], "offer expiresAt");
        {
            let mut ledger = clients.ledger.lock();
            ledger.offers_made += 1;
            if round % 2 == 1 {
                ledger.newest_pending_expiry = Some(expires_at);
            }
            // A pending offer falls due within the test, so it must end EXPIRED.
            let entry = ledger.trips.get_mut(&trip).expect("trip in the ledger");
            entry.offers.insert(offer.clone(), vec!["EXPIRED"]);
        }
        if round % 2 == 1 {
            continue;
        }
        // The decline races the offer's expiry after OFFER_TTL_SECONDS, so from the moment it
        // is sent the offer may end DECLINED or EXPIRED.
        let step = Step {
            event: "OFFER_DECLINED",
            to: "REQUESTED",
        };
        clients.begin(&trip, &step);
        let allowed = |statuses: Vec<&'static str>| {
            let mut ledger = clients.ledger.lock();
            let entry = ledger.trips.get_mut(&trip).expect("trip in the ledger");
            entry.offers.insert(offer.clone(), statuses);
        };
        allowed(vec!["DECLINED", "EXPIRED"]);
        let query = "mutation($t: ID!, $d: ID!) { declineTrip(tripId: $t, driverId: $d, \
                     reason: \"too far\") { id status } }";
        let variables = json!({ "t": trip, "d": driver });
        match clients.call(query, variables).await {
            Outcome::Data(_) => {
                clients.acknowledge(&trip, &step);
                allowed(vec!["DECLINED"]);
            }
            // The offer expired first: the decline changed nothing.
            Outcome::Rejected(body)
                if body["errors"][0]["extensions"]["code"] == "INVALID_TRANSITION" =>
            {
                clients
                    .ledger
                    .lock()
                    .trips
                    .get_mut(&trip)
                    .expect("trip in the ledger")
                    .in_flight = None;
                allowed(vec!["EXPIRED"]);
            }
            Outcome::Rejected(body) => {
                clients.problem(format!("declineTrip of trip {trip} rejected: {body}"));
                return;
            }
            Outcome::Lost => return,
        }
    }
}

/// Sends fixes of `driver`, each about a meter from the last and a millisecond or more
/// newer, until stopped or the server dies.
async fn location_stream(clients: Clients, driver: String) {
    let mut last: Option<DateTime<Utc>> = None;
    let mut step = 0.0;
    while !clients.stopped() {
        step += 1.0;
        let mut recorded_at = Utc::now();
        if let Some(last) = last
            && recorded_at <= last
        {
            recorded_at = last + chrono::TimeDelta::milliseconds(1);
        }
        // Whole milliseconds, so the stored time compares equal to the one sent.
        let recorded_at =
            DateTime::from_timestamp_millis(recorded_at.timestamp_millis()).expect("time in range");
        last = Some(recorded_at);
        let fix = Fix {
            recorded_at,
            lat: CENTER.0 + step * 1e-5,
            lng: CENTER.1,
        };
        clients
            .ledger
            .lock()
            .fixes
            .entry(driver.clone())
            .or_default()
            .in_flight = Some(fix.clone());
        let outcome = clients
            .call(
                "mutation($d: ID!, $l: LocationInput!) { updateDriverLocation(driverId: $d, \
                 location: $l) { status message } }",
                json!({ "d": driver, "l": {
                    "lat": fix.lat,
                    "lng": fix.lng,
                    "recordedAt": fix
                        .recorded_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                } }),
            )
            .await;
        let data = match outcome {
            Outcome::Data(data) => data,
            Outcome::Rejected(body) => {
                clients.problem(format!("fix of driver {driver} rejected: {body}"));
                return;
            }
            Outcome::Lost => return,
        };
        let result = &data["updateDriverLocation"];
        if result["status"] != "ACCEPTED" {
            clients.problem(format!("fix of driver {driver} not accepted: {result}"));
            return;
        }
        let mut ledger = clients.ledger.lock();
        let entry = ledger.fixes.entry(driver.clone()).or_default();
        entry.acknowledged = Some(fix);
        entry.in_flight = None;
    }
}

// ---- the kill test ------------------------------------------------------------------------

async fn register_rider(server: &Server, n: usize) -> String {
    let data = server
        .ok(
            "mutation($input: RegisterRiderInput!) { registerRider(input: $input) { id } }",
            json!({ "input": { "name": format!("Rider {n}"), "phone": format!("+25078{n:07}") } }),
        )
        .await;
    data["registerRider"]["id"].as_str().unwrap().to_owned()
}

async fn online_driver(server: &Server, n: usize) -> String {
    let input = json!({
        "name": format!("Driver {n}"),
        "phone": format!("+25079{n:07}"),
        "vehicle": { "type": "MOTO", "plate": format!("RAD{n:04}") },
    });
    let data = server
        .ok(
            "mutation($input: RegisterDriverInput!) { registerDriver(input: $input) { id } }",
            json!({ "input": input }),
        )
        .await;
    let id = data["registerDriver"]["id"].as_str().unwrap().to_owned();
    server
        .ok(
            "mutation($id: ID!, $loc: LocationInput) { goOnline(driverId: $id, location: $loc) { id } }",
            json!({ "id": id, "loc": { "lat": CENTER.0, "lng": CENTER.1 } }),
        )
        .await;
    id
}

/// Returns the pending offers in the database, by id with their trip and expiry, read
/// directly while no server runs.
async fn pending_offers(database_url: &str) -> Vec<(i64, i64, DateTime<Utc>)> {
    let db = sea_orm::Database::connect(database_url)
        .await
        .expect("open the database");
    let rows = entity::offer::Entity::find()
        .filter(entity::offer::Column::Status.eq(entity::enums::OfferStatus::Pending))
        .all(&db)
        .await
        .expect("read pending offers");
    db.close().await.expect("close the database");
    rows.into_iter()
        .map(|offer| (offer.id, offer.trip_id, offer.expires_at))
        .collect()
}

async fn kill_in_flight(backend: Backend) {
    let database = FreshDatabase::create(backend).await;
    let logs = tempfile::tempdir().expect("log directory");
    let mut server = Server::start(&database.url, logs.path(), "before-kill").await;

    let riders: Vec<String> = {
        let mut riders = Vec::new();
        for n in 0..4 {
            riders.push(register_rider(&server, n).await);
        }
        riders
    };
    let mut drivers = Vec::new();
    for n in 0..6 {
        drivers.push(online_driver(&server, n).await);
    }
    let clients = Clients {
        ledger: Arc::new(Mutex::new(Ledger::default())),
        stop: Arc::new(AtomicBool::new(false)),
        in_flight: Arc::new(AtomicUsize::new(0)),
        http: server.http.clone(),
        url: server.url("/graphql"),
    };
    let streams = vec![
        tokio::spawn(trip_stream(
            clients.clone(),
            riders[0].clone(),
            drivers[0].clone(),
        )),
        tokio::spawn(trip_stream(
            clients.clone(),
            riders[1].clone(),
            drivers[1].clone(),
        )),
        tokio::spawn(offer_stream(
            clients.clone(),
            riders[2].clone(),
            drivers[2].clone(),
        )),
        tokio::spawn(offer_stream(
            clients.clone(),
            riders[3].clone(),
            drivers[3].clone(),
        )),
        tokio::spawn(location_stream(clients.clone(), drivers[4].clone())),
        tokio::spawn(location_stream(clients.clone(), drivers[5].clone())),
    ];

    // Kill once every stream made progress, requests are in flight, and an offer left
    // pending is young enough to be still pending in the database when the server dies.
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    loop {
        let ready = {
            let ledger = clients.ledger.lock();
            assert!(ledger.problems.is_empty(), "{:#?}", ledger.problems);
            let fixes = ledger
                .fixes
                .values()
                .filter(|f| f.acknowledged.is_some())
                .count();
            let young_offer = ledger
                .newest_pending_expiry
                .is_some_and(|at| at - Utc::now() > chrono::TimeDelta::milliseconds(1_000));
            ledger.trip_steps >= 60 && ledger.offers_made >= 4 && fixes == 2 && young_offer
        };
        if ready && clients.in_flight.load(Ordering::SeqCst) >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client streams made too little progress in {PROGRESS_TIMEOUT:?}; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    clients.stop.store(true, Ordering::SeqCst);
    for stream in streams {
        stream.await.expect("client stream ends");
    }
    let ledger = std::mem::take(&mut *clients.ledger.lock());
    assert!(ledger.problems.is_empty(), "{:#?}", ledger.problems);
    let interrupted = ledger
        .trips
        .values()
        .filter(|t| t.in_flight.is_some())
        .count()
        + ledger
            .fixes
            .values()
            .filter(|f| f.in_flight.is_some())
            .count();
    println!(
        "killed the server with {} trips and {} offers acknowledged and {interrupted} steps \
         in flight",
        ledger.trips.len(),
        ledger.offers_made
    );

    // Offers pending at the kill fall due while the server is down.
    let pending = pending_offers(&database.url).await;
    assert!(
        !pending.is_empty(),
        "no offer was pending when the server died, so expiry after restart goes untested"
    );
    let due = pending.iter().map(|(_, _, at)| *at).max().unwrap();
    if let Ok(wait) = (due - Utc::now()).to_std() {
        tokio::time::sleep(wait + Duration::from_millis(100)).await;
    }

    let server = Server::start(&database.url, logs.path(), "after-restart").await;

    // The first sweeps expire them, each with an OFFER_EXPIRED event.
    for (offer, trip, _) in &pending {
        let (offer, trip) = (offer.to_string(), trip.to_string());
        eventually(&format!("offer {offer} of trip {trip} to expire"), || {
            let (server, offer, trip) = (&server, offer.clone(), trip.clone());
            async move {
                let data = server
                    .ok(
                        "query($id: ID!) { trip(id: $id) { offers { id status } \
                         events { kind offerId } } }",
                        json!({ "id": trip }),
                    )
                    .await;
                let trip = &data["trip"];
                let status = trip["offers"]
                    .as_array()?
                    .iter()
                    .find(|o| o["id"] == offer.as_str())?["status"]
                    .clone();
                let event = trip["events"]
                    .as_array()?
                    .iter()
                    .any(|e| e["kind"] == "OFFER_EXPIRED" && e["offerId"] == offer.as_str());
                (status == "EXPIRED" && event).then_some(())
            }
        })
        .await;
    }

    let mut problems = Vec::new();
    for (trip, expected) in &ledger.trips {
        let data = server
            .ok(
                "query($id: ID!) { trip(id: $id) { status events { kind toStatus offerId } \
                 offers { id status } ratings { raterRole } } }",
                json!({ "id": trip }),
            )
            .await;
        problems.extend(trip_problems(trip, expected, &data["trip"]));
    }
    for (driver, fixes) in &ledger.fixes {
        let data = server
            .ok(
                "query($id: ID!) { driver(id: $id) { presence { online recordedAt \
                 location { lat lng } } } }",
                json!({ "id": driver }),
            )
            .await;
        problems.extend(fix_problems(driver, fixes, &data["driver"]["presence"]));
    }
    problems.extend(
        crate::fuzz::consistency_problems(&server.http, &server.url("/graphql"), ADMIN_TOKEN).await,
    );
    assert!(
        problems.is_empty(),
        "after kill -9 and restart on {backend:?}:\n{}\nlog after restart:\n{}",
        problems.join("\n"),
        server.log_text()
    );
    drop(server);
    database.drop_database().await;
}

/// Compares a trip read after the restart with the acknowledged steps.
fn trip_problems(id: &str, expected: &TripLedger, actual: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if actual.is_null() {
        return vec![format!("acknowledged trip {id} is missing")];
    }
    let status = actual["status"].as_str().unwrap_or_default();
    let mut allowed = vec![expected.status.as_str()];
    if let Some(step) = &expected.in_flight {
        allowed.push(step.to);
    }
    if !allowed.contains(&status) {
        problems.push(format!(
            "trip {id} is {status}; acknowledged {}, in flight {:?}",
            expected.status, expected.in_flight
        ));
    }
    let events = actual["events"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|kind| *kind != "OFFER_EXPIRED")
        .collect();
    let acknowledged = expected.events.len();
    if kinds.len() < acknowledged || kinds[..acknowledged] != expected.events[..] {
        problems.push(format!(
            "trip {id} lost acknowledged events: expected {:?} first, found {kinds:?}",
            expected.events
        ));
    } else {
        let extra = &kinds[acknowledged..];
        let in_flight = expected.in_flight.as_ref().map(|s| s.event);
        if !(extra.is_empty() || (extra.len() == 1 && Some(extra[0]) == in_flight)) {
            problems.push(format!(
                "trip {id} has events {extra:?} after the acknowledged ones; in flight {in_flight:?}"
            ));
        }
    }
    match events.last() {
        Some(last) if last["toStatus"] == status => {}
        last => problems.push(format!(
            "trip {id} is {status} but its last event is {last:?}"
        )),
    }
    let offers = actual["offers"].as_array().cloned().unwrap_or_default();
    for (offer, statuses) in &expected.offers {
        match offers.iter().find(|o| o["id"] == offer.as_str()) {
            None => problems.push(format!(
                "acknowledged offer {offer} of trip {id} is missing"
            )),
            Some(found) => {
                let status = found["status"].as_str().unwrap_or_default();
                if !statuses.contains(&status) {
                    problems.push(format!(
                        "offer {offer} of trip {id} is {status}, expected one of {statuses:?}"
                    ));
                }
            }
        }
    }
    let ratings = actual["ratings"].as_array().map_or(0, Vec::len);
    if ratings < expected.ratings {
        problems.push(format!(
            "trip {id} has {ratings} ratings, {} acknowledged",
            expected.ratings
        ));
    }
    problems
}

/// Compares a driver's position after the restart with the fixes the clients sent.
fn fix_problems(driver: &str, fixes: &FixLedger, presence: &Value) -> Vec<String> {
    let Some(acknowledged) = &fixes.acknowledged else {
        return Vec::new();
    };
    let recorded_at = time(&presence["recordedAt"], "presence recordedAt");
    let matches = |fix: &Fix| {
        fix.recorded_at == recorded_at
            && (presence["location"]["lat"].as_f64() == Some(fix.lat))
            && (presence["location"]["lng"].as_f64() == Some(fix.lng))
    };
    if matches(acknowledged) || fixes.in_flight.as_ref().is_some_and(matches) {
        return Vec::new();
    }
    vec![format!(
        "driver {driver} is at {presence} after the restart; acknowledged {acknowledged:?}, in \
         flight {:?}",
        fixes.in_flight
    )]
}

// ---- graceful shutdown --------------------------------------------------------------------

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A subscription over one WebSocket.
struct Ws {
    socket: Socket,
    protocol: &'static str,
}

impl Ws {
    /// Connects with `protocol`, authenticates, waits for the ack and starts `query`.
    async fn subscribe(
        addr: SocketAddr,
        protocol: &'static str,
        query: &str,
        variables: Value,
    ) -> Ws {
        let mut request = format!("ws://{addr}/graphql/ws")
            .into_client_request()
            .expect("WebSocket request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connects");
        let mut ws = Ws { socket, protocol };
        ws.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {ADMIN_TOKEN}") } }))
            .await;
        let ack = ws
            .next_message(TIMEOUT)
            .await
            .expect("connection_ack in time");
        assert_eq!(ack["type"], "connection_ack", "{protocol}: {ack}");
        let start = if protocol == "graphql-ws" {
            "start"
        } else {
            "subscribe"
        };
        ws.send(json!({ "id": "1", "type": start, "payload": { "query": query, "variables": variables } }))
            .await;
        ws
    }

    async fn send(&mut self, value: Value) {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("WebSocket send");
    }

    /// Next protocol message within `wait`, skipping keep-alives; `None` when none came.
    async fn next_message(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            let protocol = self.protocol;
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    match value["type"].as_str() {
                        Some("ka" | "pong") => continue,
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        _ => return Some(value),
                    }
                }
                Some(Ok(Message::Close(frame))) => panic!("{protocol}: closed early: {frame:?}"),
                Some(Ok(_)) => continue,
                other => panic!("{protocol}: WebSocket ended: {other:?}"),
            }
        }
    }

    /// Triggers events with `trigger` until the subscription delivers one, which shows the
    /// server registered it.
    async fn confirm<F, Fut>(&mut self, mut trigger: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            trigger().await;
            if let Some(message) = self.next_message(Duration::from_millis(250)).await {
                assert!(
                    matches!(message["type"].as_str(), Some("next" | "data")),
                    "{}: expected an event, got {message}",
                    self.protocol
                );
                assert!(
                    message["payload"].get("errors").is_none(),
                    "{}: event with errors: {message}",
                    self.protocol
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no event within {TIMEOUT:?}",
                self.protocol
            );
        }
    }

    /// Reads until the close frame and returns its code; fails the test when the connection
    /// ends without one.
    async fn close_code(&mut self) -> u16 {
        let deadline = Instant::now() + TIMEOUT;
        let protocol = self.protocol;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{protocol}: no close frame within {TIMEOUT:?}"));
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(Message::Close(None))) => panic!("{protocol}: close frame without a code"),
                Some(Ok(_)) => continue,
                other => panic!("{protocol}: connection ended without a close frame: {other:?}"),
            }
        }
    }
}

/// A GraphQL POST whose headers reached the server while its body is held back. The server is
/// serving it, so it stays in flight until [`InFlightRequest::finish`] sends the body.
struct InFlightRequest {
    stream: TcpStream,
    body: Vec<u8>,
}

impl InFlightRequest {
    /// Sends the headers with `Expect: 100-continue` and waits for `100 Continue`, which the
    /// server sends once the handler starts reading the body.
    async fn start(addr: SocketAddr, body: Value) -> InFlightRequest {
        let body = body.to_string().into_bytes();
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send headers");
        let interim = read_until_blank_line(&mut stream).await;
        assert!(
            interim.starts_with("HTTP/1.1 100"),
            "expected 100 Continue, got {interim:?}"
        );
        InFlightRequest { stream, body }
    }

    /// Sends the body and returns the status code and JSON body of the response.
    async fn finish(mut self) -> (u16, Value) {
        self.stream.write_all(&self.body).await.expect("send body");
        let mut raw = Vec::new();
        tokio::time::timeout(TIMEOUT, self.stream.read_to_end(&mut raw))
            .await
            .expect("response within the timeout")
            .expect("read response");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("incomplete response: {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {head:?}"));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {body:?}"));
        (status, json)
    }
}

async fn read_until_blank_line(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
            .await
            .expect("interim response within the timeout")
            .expect("read interim response");
        assert!(
            read == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Opens a `liveTrips` subscription over `graphql-transport-ws` and a `driverLocation` one over
/// legacy `graphql-ws`, and waits until each has delivered an event.
async fn open_subscriptions(server: &Server) -> (Ws, Ws) {
    let rider = register_rider(server, 1).await;
    let driver = online_driver(server, 1).await;
    let mut live = Ws::subscribe(
        server.addr,
        "graphql-transport-ws",
        "subscription { liveTrips { trip { id status } } }",
        json!({}),
    )
    .await;
    let mut fixes = Ws::subscribe(
        server.addr,
        "graphql-ws",
        "subscription($d: ID!) { driverLocation(driverId: $d) { recordedAt } }",
        json!({ "d": driver }),
    )
    .await;
    live.confirm(|| async {
        server
            .ok(
                "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id } }",
                json!({ "input": {
                    "riderId": rider,
                    "vehicleType": "MOTO",
                    "pickup": { "lat": CENTER.0, "lng": CENTER.1 },
                } }),
            )
            .await;
    })
    .await;
    fixes
        .confirm(|| async {
            let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            server
                .ok(
                    "mutation($d: ID!, $l: LocationInput!) { updateDriverLocation(driverId: $d, \
                     location: $l) { status } }",
                    json!({ "d": driver, "l": { "lat": CENTER.0, "lng": CENTER.1, "recordedAt": now } }),
                )
                .await;
        })
        .await;
    (live, fixes)
}

/// SIGTERM while a request is in flight: WebSockets get close code 1001 at once, the request
/// still completes, and then the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_request_in_flight() {
    let database = FreshDatabase::create(Backend::Sqlite).await;
    let logs = tempfile::tempdir().expect("log directory");
    let mut server = Server::start(&database.url, logs.path(), "sigterm-in-flight").await;
    let (mut live, mut fixes) = open_subscriptions(&server).await;

    let request = json!({
        "query": "mutation { registerRider(input: { name: \"Late\", phone: \"+250788000999\" }) { id } }",
    });
    let in_flight = InFlightRequest::start(server.addr, request).await;
    server.terminate();

    assert_eq!(
        live.close_code().await,
        1001,
        "graphql-transport-ws close code"
    );
    assert_eq!(fixes.close_code().await, 1001, "graphql-ws close code");
    let (status, body) = in_flight.finish().await;
    assert_eq!(status, 200, "request in flight at SIGTERM: {body}");
    assert!(
        body.get("errors").is_none(),
        "request in flight at SIGTERM: {body}"
    );
    assert!(body["data"]["registerRider"]["id"].is_string(), "{body}");

    let exit = server.wait_exit().await;
    assert!(
        exit.success(),
        "exit after SIGTERM: {exit}; log:\n{}",
        server.log_text()
    );
    database.drop_database().await;
}

/// SIGTERM with only WebSockets open: each gets close code 1001 before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_closes_websockets() {
    let database = FreshDatabase::create(Backend::Sqlite).await;
    let logs = tempfile::tempdir().expect("log directory");
    let mut server = Server::start(&database.url, logs.path(), "sigterm-websockets").await;
    let (mut live, mut fixes) = open_subscriptions(&server).await;

    server.terminate();
    assert_eq!(
        live.close_code().await,
        1001,
        "graphql-transport-ws close code"
    );
    assert_eq!(fixes.close_code().await, 1001, "graphql-ws close code");
    let exit = server.wait_exit().await;
    assert!(
        exit.success(),
        "exit after SIGTERM: {exit}; log:\n{}",
        server.log_text()
    );
    database.drop_database().await;
}
