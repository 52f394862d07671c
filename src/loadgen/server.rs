//! The mobility server as a target: `nearbyDrivers` and location updates over GraphQL on HTTP,
//! through one `reqwest` client whose keep-alive pool keeps at most one idle connection per
//! worker. Every request carries the `--token` bearer token; an HTTP 401 stops the run (see
//! [`super::token`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::points::{self, Stream};
use super::runner::{self, Done, Limits, RunResult, Worker};
use super::token::{TokenArgs, check_server, first_error_message};
use super::{DriverCursor, NearbyQuery, RunArgs, RunMeta, TargetArgs};

/// Time limit of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Time limit of the reachability check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

const NEARBY: &str = "query Nearby($lat: Float!, $lng: Float!, $radius: Float!, $limit: Int!) { \
     nearbyDrivers(near: {lat: $lat, lng: $lng}, radiusMeters: $radius, limit: $limit, \
     widen: false) { drivers { driverId distanceMeters } } }";

const UPDATE_ONE: &str = "mutation Update($driverId: ID!, $location: LocationInput!) { \
     updateDriverLocation(driverId: $driverId, location: $location) { status } }";

const UPDATE_MANY: &str = "mutation UpdateMany($updates: [DriverLocationUpdateInput!]!) { \
     updateDriverLocations(updates: $updates) { status } }";

/// HTTP access to one server.
#[derive(Debug, Clone)]
pub struct ServerClient {
    pub http: reqwest::Client,
    pub endpoint: Url,
    pub base: Url,
    pub token: TokenArgs,
}

impl ServerClient {
    /// Creates a client of the server at `base`, such as `http://127.0.0.1:8080`, for `concurrency`
    /// workers, that sends `token` with every request.
    ///
    /// # Errors
    /// `base` is not an `http` URL.
    pub fn new(base: &str, concurrency: usize, token: &TokenArgs) -> anyhow::Result<Self> {
        let base = Url::parse(&format!("{}/", base.trim_end_matches('/')))
            .with_context(|| format!("invalid --url {base:?}"))?;
        if base.scheme() != "http" {
            anyhow::bail!(
                "invalid --url {base}: only http is supported, as the load generator has no TLS"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(concurrency.max(1))
            .tcp_nodelay(true)
            .default_headers(token.default_headers())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            endpoint: base.join("graphql")?,
            base,
            http,
            token: token.clone(),
        })
    }

    /// Returns the subscription endpoint, `/graphql/ws` on the same host.
    pub fn websocket_url(&self) -> Url {
        let mut url = self.base.join("graphql/ws").expect("static path joins");
        url.set_scheme("ws").expect("http URLs take the ws scheme");
        url
    }

    /// Reads `/healthz` and returns the online drivers in the index.
    ///
    /// # Errors
    /// A message naming the URL when the server cannot be reached or is not a mobility server.
    pub async fn online_drivers(&self) -> anyhow::Result<u64> {
        let url = self.base.join("healthz")?;
        let response = self
            .http
            .get(url.clone())
            .timeout(CHECK_TIMEOUT)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the mobility server at {url}; start it with `mobility serve` \
                     or pass --url"
                )
            })?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| {
            format!("{url} returned HTTP {status} without JSON; is --url a mobility server?")
        })?;
        body.get("onlineDriversIndexed")
            .and_then(Value::as_u64)
            .with_context(|| {
                format!(
                    "{url} returned {body} without onlineDriversIndexed; \
                     is --url a mobility server?"
                )
            })
    }

    /// Sends `{ __typename }` once, so that a missing or rejected token stops the run before
    /// it starts.
    ///
    /// # Errors
    /// [`super::token::TokenRejected`] on HTTP 401, or a message naming the URL when the
    /// server cannot be reached or returns no data.
    pub async fn check_token(&self) -> anyhow::Result<()> {
        check_server(&self.http, &self.endpoint, &self.token, "--url").await
    }

    /// Sends one GraphQL request and returns `data`.
    ///
    /// # Errors
    /// [`super::token::TokenRejected`] on HTTP 401, a transport failure, a response that is
    /// not GraphQL JSON, or a GraphQL error, with its `extensions.code`.
    pub async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        document: &str,
        variables: Value,
    ) -> anyhow::Result<T> {
        let response = self
            .http
            .post(self.endpoint.clone())
            .json(&json!({ "query": document, "variables": variables }))
            .send()
            .await
            .with_context(|| format!("POST {} failed", self.endpoint))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let body: Value = response.json().await.unwrap_or_default();
            let rejected = self
                .token
                .http_rejected(self.endpoint.as_str(), first_error_message(&body));
            return Err(rejected.into());
        }
        let body: GraphQlResponse<T> = response
            .json()
            .await
            .with_context(|| format!("HTTP {status} without GraphQL JSON"))?;
        if let Some(error) = body.errors.first() {
            let code = error
                .pointer("/extensions/code")
                .and_then(Value::as_str)
                .unwrap_or("NO_CODE");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            anyhow::bail!("GraphQL error {code}: {message}");
        }
        body.data
            .with_context(|| format!("HTTP {status} with neither data nor errors"))
    }
}

#[derive(Debug, Deserialize)]
struct GraphQlResponse<T> {
    data: Option<T>,
    #[serde(default)]
    errors: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NearbyData {
    nearby_drivers: NearbyResult,
}

#[derive(Debug, Deserialize)]
struct NearbyResult {
    drivers: Vec<Value>,
}

struct NearbyWorker {
    client: ServerClient,
    query: NearbyQuery,
    results: u64,
    empty: u64,
}

impl Worker for NearbyWorker {
    async fn call(&mut self, index: u64) -> anyhow::Result<Done> {
        let p = points::point(self.query.seed, Stream::Queries, index);
        let variables = json!({
            "lat": p.lat,
            "lng": p.lng,
            "radius": self.query.radius_m,
            "limit": self.query.limit,
        });
        let data: NearbyData = self.client.post(NEARBY, variables).await?;
        let found = data.nearby_drivers.drivers.len() as u64;
        self.results += found;
        self.empty += u64::from(found == 0);
        Ok(Done::ONE)
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("results".to_owned(), self.results),
            ("empty".to_owned(), self.empty),
        ])
    }
}

fn connection(concurrency: usize) -> String {
    format!("one reqwest client, keep-alive pool of up to {concurrency} connections")
}

/// Runs `nearby` against the server.
///
/// # Errors
/// The server is unreachable.
pub async fn nearby(
    target: &TargetArgs,
    args: &RunArgs,
    query: NearbyQuery,
    concurrency: usize,
    limits: Limits,
) -> anyhow::Result<(RunResult, RunMeta)> {
    let client = ServerClient::new(&target.url, concurrency, &target.token)?;
    let online = client.online_drivers().await?;
    client.check_token().await?;
    let workers = (0..concurrency)
        .map(|_| NearbyWorker {
            client: client.clone(),
            query,
            results: 0,
            empty: 0,
        })
        .collect();
    let run = runner::run("nearby server", workers, limits).await;
    let meta = RunMeta {
        drivers: args.drivers.unwrap_or(online),
        connection: connection(concurrency),
        operation: format!(
            "POST /graphql nearbyDrivers(radiusMeters: {}, limit: {}, widen: false) \
             {{ drivers {{ driverId distanceMeters }} }}",
            query.radius_m, query.limit
        ),
    };
    Ok((run, meta))
}

/// Device times that increase strictly, by at least 1 µs per call, even within one clock
/// tick, because the server drops a fix that is not newer than the driver's last one.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    last: DateTime<Utc>,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self {
            last: DateTime::UNIX_EPOCH,
        }
    }
}

impl MonotonicClock {
    pub fn next_time(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let floor = self.last + TimeDelta::microseconds(1);
        self.last = if now > floor { now } else { floor };
        self.last
    }
}

/// Formats a device time as GraphQL `DateTime` in microseconds, the precision of PostgreSQL
/// `timestamptz`.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateOneData {
    update_driver_location: StatusOnly,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateManyData {
    update_driver_locations: Vec<StatusOnly>,
}

#[derive(Debug, Deserialize)]
struct StatusOnly {
    status: String,
}

struct IngestWorker {
    client: ServerClient,
    cursor: DriverCursor,
    clock: MonotonicClock,
    seed: u64,
    batch: u32,
    statuses: BTreeMap<String, u64>,
}

impl IngestWorker {
    fn next_update(&mut self) -> Value {
        let (driver_id, position) = self.cursor.next_move(self.seed);
        json!({
            "driverId": driver_id.to_string(),
            "location": {
                "lat": position.lat,
                "lng": position.lng,
                "recordedAt": format_time(self.clock.next_time()),
            },
        })
    }

    fn count(&mut self, statuses: impl IntoIterator<Item = StatusOnly>) -> Done {
        let mut done = Done {
            items: 0,
            rejected: 0,
        };
        for status in statuses {
            done.items += 1;
            done.rejected += u64::from(status.status != "ACCEPTED");
            *self
                .statuses
                .entry(format!("status:{}", status.status))
                .or_default() += 1;
        }
        done
    }
}

impl Worker for IngestWorker {
    async fn call(&mut self, _index: u64) -> anyhow::Result<Done> {
        if self.batch == 1 {
            let update = self.next_update();
            let data: UpdateOneData = self.client.post(UPDATE_ONE, update).await?;
            return Ok(self.count([data.update_driver_location]));
        }
        let updates: Vec<Value> = (0..self.batch).map(|_| self.next_update()).collect();
        let sent = updates.len();
        let data: UpdateManyData = self
            .client
            .post(UPDATE_MANY, json!({ "updates": updates }))
            .await?;
        if data.update_driver_locations.len() != sent {
            anyhow::bail!(
                "updateDriverLocations returned {} results for {sent} updates",
                data.update_driver_locations.len()
            );
        }
        Ok(self.count(data.update_driver_locations))
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        self.statuses.clone()
    }
}

/// Runs `ingest` against the server.
///
/// # Errors
/// The server is unreachable, or has fewer drivers than workers.
pub async fn ingest(
    target: &TargetArgs,
    args: &RunArgs,
    batch: u32,
    concurrency: usize,
    limits: Limits,
) -> anyhow::Result<(RunResult, RunMeta)> {
    let client = ServerClient::new(&target.url, concurrency, &target.token)?;
    let online = client.online_drivers().await?;
    client.check_token().await?;
    let drivers = args.drivers.unwrap_or(online);
    super::check_workers_have_drivers(concurrency, drivers)?;
    let workers = (0..concurrency)
        .map(|worker| IngestWorker {
            client: client.clone(),
            cursor: DriverCursor::new(worker, concurrency, drivers),
            clock: MonotonicClock::default(),
            seed: args.seed,
            batch,
            statuses: BTreeMap::new(),
        })
        .collect();
    let label = if batch == 1 {
        "ingest server".to_owned()
    } else {
        format!("ingest server x{batch}")
    };
    let run = runner::run(&label, workers, limits).await;
    let operation = if batch == 1 {
        "POST /graphql updateDriverLocation { status }".to_owned()
    } else {
        format!("POST /graphql updateDriverLocations with {batch} updates {{ status }}")
    };
    let meta = RunMeta {
        drivers,
        connection: connection(concurrency),
        operation,
    };
    Ok((run, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_increases_strictly() {
        let mut clock = MonotonicClock::default();
        let mut last = clock.next_time();
        for _ in 0..10_000 {
            let next = clock.next_time();
            assert!(next > last, "{next} after {last}");
            last = next;
        }
    }

    #[test]
    fn time_format_keeps_microseconds() {
        let time = DateTime::UNIX_EPOCH + TimeDelta::microseconds(1_500_001);
        assert_eq!(format_time(time), "1970-01-01T00:00:01.500001Z");
    }

    #[test]
    fn websocket_url_from_base() {
        let token = TokenArgs::default();
        let client = ServerClient::new("http://127.0.0.1:8080/", 1, &token).unwrap();
        assert_eq!(client.endpoint.as_str(), "http://127.0.0.1:8080/graphql");
        assert_eq!(
            client.websocket_url().as_str(),
            "ws://127.0.0.1:8080/graphql/ws"
        );
        assert!(ServerClient::new("https://127.0.0.1:8080", 1, &token).is_err());
    }
}
