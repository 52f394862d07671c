//! `mobility replay`: drives a running server with the Porto taxi data through its public API
//! only (GraphQL over HTTP and one WebSocket subscriber), and reports match quality, request
//! latencies and event counts.
//!
//! Every taxi of the data becomes a CAB driver and every trip a rider's request at the trip's
//! real start, with the taxi's real GPS fixes sent as location updates. Data time maps to
//! wall-clock time by `--speed`. `docs/REPLAY.md` describes the model and recorded runs.
//!
//! Modules: [`data`] reads the files, [`clock`] maps time, [`accounts`] sets up drivers and
//! riders, [`fleet`] stores each taxi's state and the availability model, [`timeline`] sends
//! fixes and starts trips, [`flow`] plays one trip, [`subscription`] counts `liveTrips`
//! events, [`client`] sends GraphQL, and [`stats`] and [`report`] measure and summarize.

pub mod accounts;
pub mod client;
pub mod clock;
pub mod data;
pub mod fleet;
pub mod flow;
pub mod report;
pub mod stats;
pub mod subscription;
pub mod timeline;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use client::Api;
use clock::{DataClock, Speed, TimeMap, parse_span_seconds};
use data::{Dataset, Selection};
use fleet::Fleet;
use report::{DataSummary, RunSettings, Summary};
use stats::Stats;

/// Maximum wait at the end for `liveTrips` events of the last mutations.
const SUBSCRIPTION_DRAIN: Duration = Duration::from_secs(3);

/// Arguments of `mobility replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,

    #[command(flatten)]
    pub token: crate::loadgen::token::TokenArgs,

    /// Folder that contains porto_taxi_trips.csv and porto_taxi_pings.csv.gz.
    #[arg(long, default_value = "data/porto")]
    pub data_dir: PathBuf,

    /// Data seconds replayed per wall-clock second, such as 60 or 1000, or `max` to send
    /// events as fast as the server takes them.
    #[arg(long, default_value = "60")]
    pub speed: Speed,

    /// Replay only the first N trips by start time, with their GPS fixes.
    #[arg(long, value_name = "N")]
    pub limit_trips: Option<usize>,

    /// Replay only this span of data time from the first event: seconds, or a number with
    /// the unit s, m or h, such as 90m.
    #[arg(long, value_name = "SPAN", value_parser = parse_span_seconds)]
    pub duration: Option<i64>,

    /// Maximum GraphQL requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,

    /// Drivers requested from nearbyDrivers per search, 1 to the server's maximum limit.
    #[arg(long, default_value_t = 5)]
    pub candidates: u32,

    /// Data seconds a rider waits for a driver before cancelling the request.
    #[arg(long, default_value_t = 120)]
    pub match_timeout: i64,

    /// Data seconds between two searches of a request that no driver accepted.
    #[arg(long, default_value_t = 30)]
    pub retry_interval: i64,

    /// Wall-clock seconds after which an online taxi's last position is sent again so the
    /// server keeps it fresh; 0 turns heartbeats off. Keep it below the server's
    /// MOBILITY_LOCATION_STALE_SECONDS.
    #[arg(long, default_value_t = 60)]
    pub heartbeat_seconds: u64,

    /// Data seconds without a GPS fix after which a free taxi goes offline until its next
    /// fix; 0 keeps taxis online to the end.
    #[arg(long, default_value_t = 3_600)]
    pub offline_after: i64,

    /// Request each trip before sending the GPS fixes of its start second. The taxi that
    /// really served the trip is then not yet at the pickup when the rider searches.
    #[arg(long)]
    pub request_before_fixes: bool,

    /// Largest updateDriverLocations batch, at most the server's MOBILITY_MAX_BATCH.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,

    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl ReplayArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if self.candidates == 0 {
            bail!("--candidates must be at least 1");
        }
        if self.match_timeout < 0 {
            bail!("--match-timeout must be 0 or more seconds");
        }
        if self.retry_interval < 1 {
            bail!("--retry-interval must be at least 1 second");
        }
        if self.offline_after < 0 {
            bail!("--offline-after must be 0 or more seconds");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        Ok(())
    }

    fn settings(&self) -> Settings {
        Settings {
            candidates: self.candidates,
            match_timeout_s: self.match_timeout,
            retry_interval_s: self.retry_interval,
            heartbeat: (self.heartbeat_seconds > 0)
                .then(|| Duration::from_secs(self.heartbeat_seconds)),
            offline_after_s: (self.offline_after > 0).then_some(self.offline_after),
            batch_size: self.batch_size,
            requests_first: self.request_before_fixes,
        }
    }
}

/// Behaviour of the simulated riders and drivers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub candidates: u32,
    pub match_timeout_s: i64,
    pub retry_interval_s: i64,
    pub heartbeat: Option<Duration>,
    pub offline_after_s: Option<i64>,
    pub batch_size: usize,
    /// Trip requests go before the GPS fixes of the same second.
    pub requests_first: bool,
}

/// State shared by the timeline and the trip flows of one run.
#[derive(Debug)]
pub struct Replay {
    pub api: Api,
    pub stats: Arc<Stats>,
    pub data: Dataset,
    /// Rider id per trip index.
    pub riders: Vec<String>,
    /// Taxi index per ping index.
    pub ping_taxi: Vec<usize>,
    fleet: Mutex<Fleet>,
    pub time: TimeMap,
    pub clock: DataClock,
    pub settings: Settings,
}

impl Replay {
    /// Locks the fleet. Callers never hold the guard across an `.await`.
    pub fn fleet_lock(&self) -> MutexGuard<'_, Fleet> {
        // Fleet updates are single assignments, so a panic elsewhere leaves it usable.
        self.fleet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs the replay and prints its summary.
///
/// # Errors
/// Invalid arguments, unreadable data, an unreachable server, a missing or rejected token,
/// failed account set-up or a server that stops responding during the run.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    args.validate()?;
    let all = data::load(&args.data_dir)?;
    let data = all.select(Selection {
        limit_trips: args.limit_trips,
        duration_s: args.duration,
    });
    let (Some(t0), Some(last_ts)) = (data.first_ts(), data.last_ts()) else {
        bail!("the selection contains no trips; raise --limit-trips or --duration");
    };
    let taxi_count = data
        .trips
        .iter()
        .map(|t| t.taxi_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let data_summary = DataSummary {
        first_utc: report::utc(t0),
        last_utc: report::utc(last_ts),
        span_s: last_ts - t0,
        trips: data.trips.len(),
        pings: data.pings.len(),
        taxis: taxi_count,
    };
    info!(
        trips = data_summary.trips,
        pings = data_summary.pings,
        taxis = taxi_count,
        from = %data_summary.first_utc,
        to = %data_summary.last_utc,
        speed = %args.speed,
        "replay data loaded"
    );

    let stats = Arc::new(Stats::default());
    let api = Api::new(&args.server, args.concurrency, &args.token, stats.clone())?;
    api.check_reachable().await?;

    let setup_bar = ProgressBar::new(0).with_style(bar_style("accounts")?);
    let accounts = accounts::prepare(&api, &data, &stats, args.concurrency, &setup_bar).await?;
    setup_bar.finish_and_clear();
    let fleet = Fleet::new(&data, &accounts.drivers)?;
    let ping_taxi = data
        .pings
        .iter()
        .map(|ping| {
            fleet
                .taxi_index(&ping.taxi_id)
                .with_context(|| format!("GPS fix of taxi {} has no trip", ping.taxi_id))
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    let skipped = data.trips.iter().filter(|t| t.pickup.is_none()).count() as u64;
    stats.count(|c| {
        c.trips_selected = data.trips.len() as u64;
        c.trips_skipped_no_coordinates = skipped;
    });

    let subscriber = subscription::start(api.websocket_url(), api.token()).await?;
    // NOTE: graphql-transport-ws does not acknowledge a subscribe message, so this pause
    // only makes it likely that the server registered the subscription before the first
    // trip event.
    tokio::time::sleep(Duration::from_millis(250)).await;

    let replay = Arc::new(Replay {
        api,
        stats: stats.clone(),
        data,
        riders: accounts.riders,
        ping_taxi,
        fleet: Mutex::new(fleet),
        time: TimeMap::start_now(t0, args.speed),
        clock: DataClock::new(t0),
        settings: args.settings(),
    });
    let progress = ProgressBar::new((last_ts - t0) as u64).with_style(bar_style("data s")?);
    let outcome = timeline::run(replay.clone(), &progress).await;
    let wall_time_s = replay.time.elapsed().as_secs_f64();
    progress.finish_and_clear();
    outcome?;

    let expected_events = stats.counters().expected_trip_events;
    subscriber
        .wait_for(expected_events, SUBSCRIPTION_DRAIN)
        .await;
    let subscription = subscriber.stop().await;

    let settings = RunSettings {
        server: args.server.clone(),
        speed: args.speed.to_string(),
        concurrency: args.concurrency,
        candidates: args.candidates,
        match_timeout_s: args.match_timeout,
        retry_interval_s: args.retry_interval,
        heartbeat_s: (args.heartbeat_seconds > 0).then_some(args.heartbeat_seconds),
        offline_after_s: (args.offline_after > 0).then_some(args.offline_after),
        batch_size: args.batch_size,
        request_before_fixes: args.request_before_fixes,
    };
    let summary = Summary::build(
        settings,
        data_summary,
        wall_time_s,
        stats.snapshot(),
        subscription,
    );
    print!("{}", summary.to_text());
    if let Some(path) = &args.output {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
        info!(path = %path.display(), "summary written");
    }
    Ok(())
}

fn bar_style(unit: &str) -> anyhow::Result<ProgressStyle> {
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{msg}}");
    ProgressStyle::with_template(&template)
        .context("invalid progress bar template")
        .map(|style| style.progress_chars("=> "))
}
