//! The `fanout` scenario: K WebSocket clients (`graphql-transport-ws`), each subscribed to
//! `driverLocation` of one of D watched drivers, while location updates of those drivers go
//! out at a fixed rate with `recordedAt` set to the send time.
//!
//! The latency of an event is its arrival time minus its `recordedAt`, both read from this
//! machine's clock, so it includes the update request, the server's fan-out and the client's
//! own scheduling. The client shares the machine's cores with the server: at thousands of
//! events per second its share of the latency is not negligible.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};
use url::Url;

use super::memory::{raise_open_files, read_rss};
use super::points;
use super::report::{self, ResultRow, new_histogram, percentiles, record_micros};
use super::runner::{Limits, progress_bar};
use super::server::{MonotonicClock, ServerClient, format_time};
use super::token::{TokenArgs, TokenRejected};

/// Time limit of one connection with its `connection_ack`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time to wait after the last subscribe message, because the protocol does not acknowledge
/// a subscription and the server registers it asynchronously.
const SETTLE: Duration = Duration::from_secs(1);

/// Maximum wait for events still on their way after the last update.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// File descriptors kept beside the sockets: standard streams, the HTTP pool, the runtime.
const SPARE_FILES: u64 = 1_024;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Base URL of the mobility server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    #[command(flatten)]
    pub token: TokenArgs,

    /// WebSocket connections, one subscription each.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: u64,

    /// Drivers watched: subscriber j watches driver (j mod D) + 1, so each has about K/D
    /// subscribers.
    #[arg(long, default_value_t = 100)]
    pub drivers_watched: u64,

    /// Location updates per second, over all watched drivers in turn.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// Seconds of sending updates.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Update requests in flight at most.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,

    /// Connections opened in parallel while subscribing.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Process id of the server, to read its RSS before and after.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Online drivers on the server; read from `/healthz` when absent.
    #[arg(long)]
    pub drivers: Option<u64>,

    /// Seed of the driver positions, the one given to `mobility seed`.
    #[arg(long, default_value_t = points::DEFAULT_SEED)]
    pub seed: u64,

    /// File that gets one JSON line per run appended.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Events and errors the subscribers received, shared by their tasks.
struct Received {
    histogram: Mutex<Histogram<u64>>,
    events: AtomicU64,
    /// Error messages, `next` payloads with errors and unparsable frames.
    errors: AtomicU64,
    /// Connections that ended before the run stopped them.
    closed_early: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Received {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            tracing::warn!(error = %message, "first subscriber error; later ones are only counted");
            *first = Some(message);
        }
    }
}

#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    data: Option<EventData>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventData {
    driver_location: EventLocation,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventLocation {
    recorded_at: DateTime<Utc>,
}

/// Runs `fanout`.
///
/// # Errors
/// Invalid arguments, an unreachable server, or a token that the server rejects. Other failed
/// subscriptions and updates are counted as errors in the row instead.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let limit = raise_open_files(args.subscribers + SPARE_FILES);
    if limit < args.subscribers + SPARE_FILES {
        tracing::warn!(
            limit,
            subscribers = args.subscribers,
            "the open-files limit is too low for every subscriber; raise it with `ulimit -n`"
        );
    }
    let client = ServerClient::new(&args.url, args.concurrency as usize, &args.token)?;
    let online = client.online_drivers().await?;
    client.check_token().await?;
    let drivers = args.drivers.unwrap_or(online);
    if args.drivers_watched > drivers {
        bail!(
            "--drivers-watched {} is above the {drivers} online drivers; seed more or watch fewer",
            args.drivers_watched
        );
    }
    let started_at = report::now_rfc3339();
    let rss_before = args.server_pid.map(read_rss).transpose()?;

    let received = Arc::new(Received {
        histogram: Mutex::new(new_histogram()),
        events: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        closed_early: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let (stop, stopped) = watch::channel(false);
    let connect_started = Instant::now();
    let (tasks, per_driver, connect_failures) =
        subscribe_all(&args, &client.websocket_url(), &received, &stopped).await?;
    let connected = tasks.len() as u64;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_subscribed = args.server_pid.map(read_rss).transpose()?;

    let sent = send_updates(&args, &client, &per_driver).await;
    if let Some(message) = sent.token_rejected {
        let _ = stop.send(true);
        close_all(tasks).await;
        bail!("stopped after {} updates: {message}", sent.requests);
    }
    let sending_seconds = sent.elapsed.as_secs_f64();

    let drain_started = Instant::now();
    while received.events.load(Ordering::Relaxed) < sent.expected_events
        && drain_started.elapsed() < DRAIN_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_after = args.server_pid.map(read_rss).transpose()?;
    let events = received.events.load(Ordering::Relaxed);
    let _ = stop.send(true);
    close_all(tasks).await;

    let subscriber_errors = received.errors.load(Ordering::Relaxed);
    let closed_early = received.closed_early.load(Ordering::Relaxed);
    let update_latency = percentiles(&sent.histogram);
    let mut details = json!({
        "operation": "graphql-transport-ws subscription driverLocation(driverId) \
                      { driverId recordedAt }; updates by POST updateDriverLocation",
        "drivers_watched": args.drivers_watched,
        "rate_requested_per_s": args.rate,
        "updates_per_s": sent.requests as f64 / sending_seconds.max(1e-9),
        "updates_accepted": sent.accepted,
        "updates_failed": sent.failed,
        "events_expected": sent.expected_events,
        "events_received": events,
        "subscribers_connected": connected,
        "subscribe_failures": connect_failures,
        "subscriber_errors": subscriber_errors,
        "subscribers_closed_early": closed_early,
        "connect_seconds": connect_seconds,
        "update_latency_ms": update_latency,
        "open_files_limit": limit,
        "rss_before_bytes": rss_before,
        "rss_subscribed_bytes": rss_subscribed,
        "rss_after_bytes": rss_after,
        "latency_measure": "event arrival minus recordedAt (the update's send time)",
    });
    if let (Some(before), Some(subscribed)) = (rss_before, rss_subscribed)
        && connected > 0
    {
        details["rss_bytes_per_subscriber"] =
            json!((subscribed as f64 - before as f64) / connected as f64);
    }
    if let Some(error) = received.first_error.lock().clone().or(sent.first_error) {
        details["first_error"] = json!(error);
    }
    let histogram = received.histogram.lock().clone();
    let row = ResultRow {
        scenario: "fanout".into(),
        target: "server".into(),
        drivers,
        concurrency: u64::from(args.concurrency),
        batch: None,
        subscribers: Some(args.subscribers),
        requests: sent.requests,
        errors: connect_failures
            + subscriber_errors
            + closed_early
            + sent.failed
            + (sent.requests - sent.failed - sent.accepted),
        duration_s: sending_seconds,
        throughput_per_s: events as f64 / sending_seconds.max(1e-9),
        latency_ms: percentiles(&histogram),
        rss_bytes: rss_after,
        bytes_per_driver: None,
        connection: format!(
            "{connected} WebSocket connections, one subscription each; updates through one \
             reqwest client with up to {} connections",
            args.concurrency
        ),
        started_at,
        git_rev: report::git_rev(),
        details,
    };
    report::emit(args.output.as_deref(), &row)
}

fn check_args(args: &FanoutArgs) -> anyhow::Result<()> {
    if args.subscribers == 0 || args.drivers_watched == 0 {
        bail!("--subscribers and --drivers-watched must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!(
            "invalid --rate {}: give updates per second in 0..=1000000",
            args.rate
        );
    }
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3_600.0) {
        bail!(
            "invalid --duration {}: give seconds in 0..=3600",
            args.duration
        );
    }
    if args.concurrency == 0 || args.connect_concurrency == 0 {
        bail!("--concurrency and --connect-concurrency must be at least 1");
    }
    Ok(())
}

/// Opens every subscriber, `connect_concurrency` at a time. Returns the reader tasks of the
/// subscribers that connected, their number per watched driver (index 0 is driver 1), and
/// the number that failed.
///
/// # Errors
/// [`TokenRejected`] when the server closes a connection with code 4403; the subscribers
/// already open are aborted then.
async fn subscribe_all(
    args: &FanoutArgs,
    url: &Url,
    received: &Arc<Received>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Vec<u64>, u64)> {
    let progress = progress_bar(
        "subscribe",
        Limits {
            duration: Duration::ZERO,
            requests: Some(args.subscribers),
        },
    );
    let mut opened = futures_util::stream::iter(0..args.subscribers)
        .map(|j| {
            let driver_id = j % args.drivers_watched + 1;
            async move { (driver_id, subscribe(url, &args.token, driver_id).await) }
        })
        .buffer_unordered(args.connect_concurrency);
    let mut tasks = Vec::with_capacity(args.subscribers as usize);
    let mut per_driver = vec![0; args.drivers_watched as usize];
    let mut failures = 0;
    while let Some((driver_id, result)) = opened.next().await {
        progress.inc(1);
        match result {
            Ok(socket) => {
                per_driver[(driver_id - 1) as usize] += 1;
                tasks.push(tokio::spawn(read_events(
                    socket,
                    received.clone(),
                    stopped.clone(),
                )));
            }
            Err(e) if e.is::<TokenRejected>() => {
                progress.finish_and_clear();
                for task in &tasks {
                    task.abort();
                }
                return Err(e);
            }
            Err(e) => {
                failures += 1;
                received.error(format!("subscribe failed: {e:#}"));
            }
        }
    }
    progress.finish_and_clear();
    Ok((tasks, per_driver, failures))
}

/// Connects, completes the `graphql-transport-ws` handshake with `token` and subscribes to
/// one driver.
async fn subscribe(url: &Url, token: &TokenArgs, driver_id: u64) -> anyhow::Result<Socket> {
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // The default 128 KiB read buffer per connection would cost the client 2.5 GiB at 20,000
    // subscribers; events are a few hundred bytes.
    let config = WebSocketConfig::default()
        .read_buffer_size(4_096)
        .write_buffer_size(0);
    let (mut socket, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        connect_async_with_config(request, Some(config), true),
    )
    .await
    .with_context(|| format!("WebSocket connection to {url} timed out"))?
    .with_context(|| format!("WebSocket connection to {url} failed"))?;

    send_json(&mut socket, token.connection_init()).await?;
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .context("no connection_ack within 10 s")?;
        match message {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str())
                    .with_context(|| format!("server sent a message that is not JSON: {text}"))?;
                match frame["type"].as_str() {
                    Some("connection_ack") => break,
                    Some("ping") => send_json(&mut socket, json!({ "type": "pong" })).await?,
                    _ => bail!("server sent {frame} instead of connection_ack"),
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(token.closed_before_ack(url.as_str(), frame.as_ref()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("WebSocket handshake failed: {e}"),
            None => return Err(token.closed_before_ack(url.as_str(), None)),
        }
    }

    let subscribe = json!({
        "id": "1",
        "type": "subscribe",
        "payload": {
            "query": "subscription Watch($driverId: ID!) { driverLocation(driverId: $driverId) \
                      { driverId recordedAt } }",
            "variables": { "driverId": driver_id.to_string() },
        },
    });
    send_json(&mut socket, subscribe).await?;
    Ok(socket)
}

async fn send_json(socket: &mut Socket, message: Value) -> anyhow::Result<()> {
    socket
        .send(Message::text(message.to_string()))
        .await
        .context("cannot send on the WebSocket")
}

async fn read_events(mut socket: Socket, received: Arc<Received>, mut stop: watch::Receiver<bool>) {
    loop {
        let message = tokio::select! {
            () = async {
                // The guard that `wait_for` returns is not `Send`, so drop it at once.
                let _ = stop.wait_for(|stopped| *stopped).await;
            } => {
                let _ = send_json(&mut socket, json!({ "id": "1", "type": "complete" })).await;
                let _ = socket.close(None).await;
                return;
            }
            message = socket.next() => message,
        };
        let arrived = Utc::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                received.closed_early.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                received.closed_early.fetch_add(1, Ordering::Relaxed);
                received.error(format!("WebSocket failed: {e}"));
                return;
            }
        };
        let frame: Frame = match serde_json::from_str(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                received.error(format!("unexpected frame {text}: {e}"));
                continue;
            }
        };
        match frame.kind.as_str() {
            "next" => {
                let payload = frame.payload.unwrap_or(Payload {
                    data: None,
                    errors: None,
                });
                match (payload.data, payload.errors) {
                    (_, Some(errors)) if !errors.is_null() => {
                        received.error(format!("subscription error: {errors}"));
                    }
                    (Some(data), _) => {
                        let delay = arrived - data.driver_location.recorded_at;
                        let micros = delay.num_microseconds().unwrap_or(i64::MAX).max(0) as u64;
                        record_micros(&mut received.histogram.lock(), micros);
                        received.events.fetch_add(1, Ordering::Relaxed);
                    }
                    (None, _) => received.error("next message without data".into()),
                }
            }
            "ping" => {
                let _ = send_json(&mut socket, json!({ "type": "pong" })).await;
            }
            "error" | "complete" => {
                received.error(format!("subscription ended: {text}"));
                received.closed_early.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
    }
}

/// Stops every reader, giving the close handshakes a few seconds before cutting them off.
async fn close_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    let aborts: Vec<_> = tasks.iter().map(|task| task.abort_handle()).collect();
    let joined = futures_util::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .is_err()
    {
        for abort in aborts {
            abort.abort();
        }
    }
}

/// Tally of the update sender.
struct Sent {
    requests: u64,
    accepted: u64,
    failed: u64,
    /// Events the subscribers should receive: subscribers of each accepted update's driver.
    expected_events: u64,
    histogram: Histogram<u64>,
    elapsed: Duration,
    first_error: Option<String>,
    /// The [`TokenRejected`] error that stopped the sender, if one did.
    token_rejected: Option<String>,
}

#[derive(Default)]
struct SendTally {
    requests: u64,
    accepted: u64,
    failed: u64,
    expected_events: u64,
    first_error: Option<String>,
    token_rejected: Option<String>,
}

/// Sends updates of the watched drivers in turn at `args.rate` per second for
/// `args.duration` seconds, with at most `args.concurrency` in flight. When the server falls
/// behind, ticks are skipped, so the achieved rate is lower and reported. A rejected token
/// stops the sending; that update is not counted.
async fn send_updates(args: &FanoutArgs, client: &ServerClient, per_driver: &[u64]) -> Sent {
    const UPDATE: &str = "mutation Update($driverId: ID!, $location: LocationInput!) { \
         updateDriverLocation(driverId: $driverId, location: $location) { status } }";

    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    let tally = Arc::new(Mutex::new(SendTally::default()));
    let histogram = Arc::new(Mutex::new(new_histogram()));
    // One clock for every driver: strictly increasing times are then increasing per driver.
    let clock = Arc::new(Mutex::new(MonotonicClock::default()));
    let per_driver: Arc<Vec<u64>> = Arc::new(per_driver.to_vec());
    let progress = progress_bar(
        "fanout",
        Limits {
            duration: Duration::from_secs_f64(args.duration),
            requests: None,
        },
    );

    let started = Instant::now();
    let stop_at = started + Duration::from_secs_f64(args.duration);
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = Vec::new();
    let mut update = 0_u64;
    while Instant::now() < stop_at && tally.lock().token_rejected.is_none() {
        interval.tick().await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let watched = update % args.drivers_watched;
        let round = update / args.drivers_watched;
        update += 1;
        let driver_id = watched + 1;
        let mut position = points::driver_position(args.seed, driver_id as i64);
        // Every other round 5.6 m north, far below the server's jump limit.
        if round % 2 == 1 {
            position.lat += 0.000_05;
        }
        let (client, tally, histogram, clock, per_driver) = (
            client.clone(),
            tally.clone(),
            histogram.clone(),
            clock.clone(),
            per_driver.clone(),
        );
        in_flight.push(tokio::spawn(async move {
            let _permit = permit;
            let recorded_at = clock.lock().next_time();
            let variables = json!({
                "driverId": driver_id.to_string(),
                "location": {
                    "lat": position.lat,
                    "lng": position.lng,
                    "recordedAt": format_time(recorded_at),
                },
            });
            let sent = Instant::now();
            let result: anyhow::Result<Value> = client.post(UPDATE, variables).await;
            if let Err(e) = &result
                && e.is::<TokenRejected>()
            {
                tally
                    .lock()
                    .token_rejected
                    .get_or_insert_with(|| e.to_string());
                return;
            }
            record_micros(&mut histogram.lock(), sent.elapsed().as_micros() as u64);
            let mut tally = tally.lock();
            tally.requests += 1;
            let status = result.map(|data| {
                data.pointer("/updateDriverLocation/status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            });
            match status {
                Ok(status) if status == "ACCEPTED" => {
                    tally.accepted += 1;
                    tally.expected_events += per_driver[watched as usize];
                }
                Ok(status) => {
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("update returned status {status}"));
                }
                Err(e) => {
                    tally.failed += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("update failed: {e:#}"));
                }
            }
        }));
        in_flight.retain(|task| !task.is_finished());
        progress.set_position(started.elapsed().as_millis() as u64);
    }
    for task in in_flight {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let tally = std::mem::take(&mut *tally.lock());
    let histogram = histogram.lock().clone();
    Sent {
        requests: tally.requests,
        accepted: tally.accepted,
        failed: tally.failed,
        expected_events: tally.expected_events,
        histogram,
        elapsed,
        first_error: tally.first_error,
        token_rejected: tally.token_rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::token::rejecting_server;

    #[tokio::test]
    async fn close_4403_stops_with_rejected_token() {
        let (url, server) = rejecting_server().await;
        let token = TokenArgs::default();
        let error = subscribe(&url, &token, 1).await.unwrap_err();
        assert!(error.is::<TokenRejected>(), "{error:#}");
        assert!(
            error.to_string().contains("no token was given"),
            "{error:#}"
        );
        let init = server.await.unwrap();
        assert_eq!(init["type"], "connection_init");
        assert_eq!(init["payload"], json!({}));
    }
}
