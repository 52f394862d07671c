//! Prometheus metrics: their names, the process-wide recorder, and the text exposition served
//! at `/metrics`.
//!
//! Services record through the `metrics` facade with the names below. Gauges that mirror
//! in-memory state (online drivers, open requests, subscribers) are set when `/metrics` is
//! scraped, so they cost nothing between scrapes.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram of GraphQL request time in seconds, labelled `operation` (the root field, such as
/// `nearbyDrivers`, or `invalid` for documents that fail to parse or validate) and `outcome`
/// (`ok` or the first error's code).
pub const GRAPHQL_REQUEST_SECONDS: &str = "mobility_graphql_request_duration_seconds";
/// Counter of location updates, labelled `status`: accepted, stale, impossible_jump, rejected.
pub const LOCATION_UPDATES: &str = "mobility_location_updates_total";
/// Counter of trip events, labelled `kind` (the audit event kind, such as `OFFERED`).
pub const TRIP_EVENTS: &str = "mobility_trip_events_total";
/// Gauge of online drivers with a position in the live index.
pub const ONLINE_DRIVERS: &str = "mobility_online_drivers";
/// Gauge of drivers known to the live registry.
pub const REGISTERED_DRIVERS: &str = "mobility_registered_drivers";
/// Gauge of trips waiting for a driver.
pub const OPEN_REQUESTS: &str = "mobility_open_trip_requests";
/// Gauge of open GraphQL subscriptions.
pub const SUBSCRIBERS: &str = "mobility_subscribers";
/// Gauge: 1 while the database answers, 0 while it does not; set at every scrape and probe.
pub const DATABASE_UP: &str = "mobility_database_up";
/// Counter of database failures seen by request handlers and background tasks.
pub const DATABASE_ERRORS: &str = "mobility_database_errors_total";
/// Gauge: 1 while the Redis connection works, 0 while it does not. Absent without Redis.
pub const REDIS_UP: &str = "mobility_redis_up";
/// Counter of failed Redis commands, labelled `operation` (ping, publish, subscribe, cache).
pub const REDIS_ERRORS: &str = "mobility_redis_errors_total";
/// Counter of cache lookups, labelled `cache` (such as `driver`) and `result` (hit or miss).
pub const CACHE_REQUESTS: &str = "mobility_cache_requests_total";
/// Counter of messages between instances, labelled `direction` (sent or received) and
/// `kind` (location, trip, driver).
pub const CLUSTER_MESSAGES: &str = "mobility_cluster_messages_total";
/// Counter of full reloads of the live state from the database after a gap in the messages
/// between instances.
pub const CLUSTER_RESYNCS: &str = "mobility_cluster_resyncs_total";

/// Bucket bounds of the request histogram, in seconds: 50 µs to 5 s.
const REQUEST_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first call and returns its handle. Later calls, such
/// as from a second server in the same test process, share it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(GRAPHQL_REQUEST_SECONDS.into()),
                    &REQUEST_BUCKETS,
                )
                .unwrap_or_else(|e| unreachable!("the bucket list is not empty: {e}"))
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours records nothing
            // and the handle renders an empty page, which the log makes visible.
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::error!(error = %e, "metrics recorder not installed");
            }
            handle
        })
        .clone()
}

/// Counts one database failure.
pub fn count_database_error() {
    metrics::counter!(DATABASE_ERRORS).increment(1);
}
