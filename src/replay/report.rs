//! The summary of a replay: built from the measurements at the end, printed as text and
//! optionally written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::DateTime;
use serde::Serialize;

use super::stats::{Counters, LocationCounts, Snapshot, percentile, sorted};
use super::subscription::SubscriptionReport;

/// Percentiles of a sample, in the sample's unit; `None` for an empty sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Spread {
    pub fn of(values: Vec<f64>) -> Self {
        let values = sorted(values);
        Self {
            count: values.len(),
            p50: percentile(&values, 50.0),
            p90: percentile(&values, 90.0),
            p95: percentile(&values, 95.0),
            p99: percentile(&values, 99.0),
            max: values.last().copied(),
        }
    }
}

/// The part of the data a run replayed.
#[derive(Debug, Clone, Serialize)]
pub struct DataSummary {
    pub first_utc: String,
    pub last_utc: String,
    /// Seconds from the first event to the last trip end or fix.
    pub span_s: i64,
    pub trips: usize,
    pub pings: usize,
    pub taxis: usize,
}

/// Settings of the run that shape its numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub server: String,
    pub speed: String,
    pub concurrency: usize,
    pub candidates: u32,
    pub match_timeout_s: i64,
    pub retry_interval_s: i64,
    pub heartbeat_s: Option<u64>,
    pub offline_after_s: Option<i64>,
    pub batch_size: usize,
    pub request_before_fixes: bool,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub settings: RunSettings,
    pub data: DataSummary,
    /// Wall-clock seconds from the first event to the end of the last trip flow.
    pub wall_time_s: f64,
    /// Data span over wall time.
    pub effective_speedup: f64,
    /// How late each group of due GPS fixes went out against its due time, in milliseconds;
    /// empty for an unpaced run.
    pub schedule_lag_ms: Spread,
    pub counters: Counters,
    /// Matched requests over requests.
    pub match_rate: Option<f64>,
    /// Matches where the driver is the taxi that really served the trip, over matches.
    pub real_taxi_rate: Option<f64>,
    /// Great-circle distance from the accepted driver to the pickup when searched, meters.
    pub pickup_distance_m: Spread,
    /// Client-side latency per GraphQL operation, milliseconds.
    pub latency_ms: BTreeMap<&'static str, Spread>,
    pub pings: LocationCounts,
    pub heartbeats: LocationCounts,
    pub subscription: SubscriptionReport,
    /// GraphQL errors by `extensions.code`, then by operation.
    pub errors: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Formats Unix seconds as ISO 8601 UTC.
pub fn utc(ts: i64) -> String {
    DateTime::from_timestamp(ts, 0).map_or_else(|| ts.to_string(), |t| t.to_rfc3339())
}

impl Summary {
    pub fn build(
        settings: RunSettings,
        data: DataSummary,
        wall_time_s: f64,
        snapshot: Snapshot,
        subscription: SubscriptionReport,
    ) -> Self {
        let counters = snapshot.counters;
        Self {
            settings,
            effective_speedup: data.span_s as f64 / wall_time_s.max(f64::EPSILON),
            data,
            wall_time_s,
            schedule_lag_ms: Spread::of(snapshot.lag_ms),
            match_rate: ratio(counters.matched, counters.requests),
            real_taxi_rate: ratio(counters.matched_real_taxi, counters.matched),
            pickup_distance_m: Spread::of(snapshot.pickup_distances_m),
            latency_ms: snapshot
                .latencies_ms
                .into_iter()
                .map(|(operation, values)| (operation, Spread::of(values)))
                .collect(),
            counters,
            pings: snapshot.pings,
            heartbeats: snapshot.heartbeats,
            subscription,
            errors: snapshot.errors,
        }
    }

    /// Renders the summary for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // `fmt::Write` for `String` never returns an error.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let c = &self.counters;
        let s = &self.settings;
        let d = &self.data;
        writeln!(out, "Replay summary")?;
        let order = if s.request_before_fixes {
            "before"
        } else {
            "after"
        };
        writeln!(
            out,
            "  server {}, speed {}, concurrency {}, batch {}, requests {order} the fixes of \
             their second",
            s.server, s.speed, s.concurrency, s.batch_size
        )?;
        writeln!(
            out,
            "  data {} to {} ({} s): {} trips, {} GPS fixes, {} taxis",
            d.first_utc, d.last_utc, d.span_s, d.trips, d.pings, d.taxis
        )?;
        writeln!(
            out,
            "  wall time {:.1} s, effective speed-up {:.0}x",
            self.wall_time_s, self.effective_speedup
        )?;
        if self.schedule_lag_ms.count > 0 {
            writeln!(
                out,
                "  schedule lag of GPS fixes: {}",
                spread_text(&self.schedule_lag_ms, "ms", &[50, 99])
            )?;
        }

        writeln!(out, "Accounts")?;
        writeln!(
            out,
            "  drivers {} registered, {} reused; riders {} registered, {} reused; {} left-over \
             trips closed",
            c.drivers_registered,
            c.drivers_reused,
            c.riders_registered,
            c.riders_reused,
            c.leftover_trips_closed
        )?;

        writeln!(out, "Matching")?;
        writeln!(
            out,
            "  requests {} of {} trips ({} without coordinates, {} failed to send)",
            c.requests, c.trips_selected, c.trips_skipped_no_coordinates, c.request_failures
        )?;
        writeln!(
            out,
            "  matched {} ({}), {} at the first search; cancelled unmatched {}; completed {}",
            c.matched,
            percent(self.match_rate),
            c.matched_first_search,
            c.cancelled_unmatched,
            c.completed
        )?;
        writeln!(
            out,
            "  searches {} ({} empty); offers {}; declines {} (carrying a passenger {}, on a \
             replay trip {}, offline {})",
            c.searches,
            c.empty_searches,
            c.offers,
            c.declines_carrying_passenger + c.declines_on_replay_trip + c.declines_offline,
            c.declines_carrying_passenger,
            c.declines_on_replay_trip,
            c.declines_offline
        )?;
        writeln!(
            out,
            "  failed: offers {}, accepts {}, declines {}, lifecycle steps {}, cancels {}",
            c.offer_failures,
            c.accept_failures,
            c.decline_failures,
            c.lifecycle_failures,
            c.cancel_failures
        )?;
        writeln!(
            out,
            "  pickup distance: {}",
            spread_text(&self.pickup_distance_m, "m", &[50, 90, 99])
        )?;
        writeln!(
            out,
            "  matched driver is the real taxi: {} of {} ({}); real taxi among candidates in \
             {} requests",
            c.matched_real_taxi,
            c.matched,
            percent(self.real_taxi_rate),
            c.real_taxi_in_candidates
        )?;

        writeln!(out, "Locations")?;
        writeln!(
            out,
            "  {} batches; {} taxis went online with a fix ({} fixes not applied), {} went \
             offline",
            c.location_batches, c.went_online, c.online_fixes_ignored, c.went_offline
        )?;
        for (name, counts) in [("GPS fixes", &self.pings), ("heartbeats", &self.heartbeats)] {
            writeln!(
                out,
                "  {name}: sent {}, accepted {}, stale {}, impossible jump {}, rejected {}, \
                 lost {}",
                counts.sent,
                counts.accepted,
                counts.stale,
                counts.impossible_jump,
                map_text(&counts.rejected),
                counts.lost
            )?;
        }

        writeln!(out, "Subscription liveTrips")?;
        let sub = &self.subscription;
        writeln!(
            out,
            "  received {} of {} expected events, {} errors{}",
            sub.received,
            c.expected_trip_events,
            sub.errors,
            sub.ended_early
                .as_ref()
                .map_or_else(String::new, |why| format!("; ended early: {why}"))
        )?;
        writeln!(out, "  by kind: {}", map_text(&sub.by_kind))?;

        writeln!(out, "Latency per operation (client side, ms)")?;
        writeln!(
            out,
            "  {:<24} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "operation", "count", "p50", "p95", "p99", "max"
        )?;
        for (operation, spread) in &self.latency_ms {
            writeln!(
                out,
                "  {:<24} {:>8} {:>8} {:>8} {:>8} {:>8}",
                operation,
                spread.count,
                number(spread.p50, 1),
                number(spread.p95, 1),
                number(spread.p99, 1),
                number(spread.max, 1)
            )?;
        }

        writeln!(out, "GraphQL errors by code")?;
        if self.errors.is_empty() {
            writeln!(out, "  none")?;
        }
        for (code, operations) in &self.errors {
            let total: u64 = operations.values().sum();
            let by_operation: BTreeMap<String, u64> = operations
                .iter()
                .map(|(operation, count)| ((*operation).to_owned(), *count))
                .collect();
            writeln!(out, "  {code}: {total} ({})", map_text(&by_operation))?;
        }
        self.write_hints(out)
    }

    /// Writes hints about server settings that distort the numbers.
    fn write_hints(&self, out: &mut String) -> std::fmt::Result {
        let sent = self.pings.sent;
        let jumps = self.pings.impossible_jump;
        // With the limit scaled to 55 m/s of data time, GPS noise made 0.3% of the Porto fixes
        // jumps in the 60x run of docs/REPLAY.md, so a fifth points at an unscaled limit.
        if sent > 0 && jumps * 5 > sent {
            writeln!(
                out,
                "Hint: {jumps} of {sent} GPS fixes were dropped as impossible jumps. The server \
                 measures speed between fixes in wall-clock time, so start it with \
                 --max-speed-mps of about 55 times --speed."
            )?;
        }
        Ok(())
    }
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn spread_text(spread: &Spread, unit: &str, percentiles: &[u8]) -> String {
    if spread.count == 0 {
        return "no samples".into();
    }
    let mut parts = Vec::new();
    for &p in percentiles {
        let value = match p {
            50 => spread.p50,
            90 => spread.p90,
            95 => spread.p95,
            _ => spread.p99,
        };
        parts.push(format!("p{p} {} {unit}", number(value, 0)));
    }
    parts.push(format!("max {} {unit}", number(spread.max, 0)));
    format!("{} (n = {})", parts.join(", "), spread.count)
}

fn map_text(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "0".into();
    }
    map.iter()
        .map(|(key, count)| format!("{key} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_values() {
        let spread = Spread::of((1..=200).rev().map(f64::from).collect());
        assert_eq!(spread.count, 200);
        assert_eq!(spread.p50, Some(100.0));
        assert_eq!(spread.p90, Some(180.0));
        assert_eq!(spread.p99, Some(198.0));
        assert_eq!(spread.max, Some(200.0));
        assert_eq!(Spread::of(Vec::new()).p50, None);
    }

    #[test]
    fn ratio_of_zero_whole() {
        assert_eq!(ratio(3, 4), Some(0.75));
        assert_eq!(ratio(0, 0), None);
    }

    #[test]
    fn utc_formats_epoch_seconds() {
        assert_eq!(utc(1_372_636_853), "2013-07-01T00:00:53+00:00");
    }
}
