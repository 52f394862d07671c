//! Measurements collected during a replay: counters, client-side latencies per GraphQL
//! operation, GraphQL error codes, pickup distances and schedule lag.
//!
//! One mutex guards everything. It is never held across an `.await`, and each update is a
//! few additions, so contention stays low at the request rates of a replay.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

/// Returns the `p`-th percentile (0 to 100) of sorted values by the nearest-rank method:
/// the smallest value with at least `p` percent of the values at or below it. `None` when
/// `sorted` is empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sorts values for [`percentile`] by [`f64::total_cmp`].
pub fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Outcomes of location fixes from one source, as the server reported them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocationCounts {
    pub sent: u64,
    pub accepted: u64,
    pub stale: u64,
    pub impossible_jump: u64,
    /// Rows the server rejected, by `errorCode`.
    pub rejected: BTreeMap<String, u64>,
    /// Rows lost because their whole request failed.
    pub lost: u64,
}

/// Event counters of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub drivers_registered: u64,
    pub drivers_reused: u64,
    pub riders_registered: u64,
    pub riders_reused: u64,
    /// Active trips of reused drivers, left over from an interrupted run and closed at start.
    pub leftover_trips_closed: u64,

    pub trips_selected: u64,
    /// Trips without coordinates (empty polyline in the data), never requested.
    pub trips_skipped_no_coordinates: u64,
    pub requests: u64,
    pub request_failures: u64,
    pub searches: u64,
    pub empty_searches: u64,
    /// Candidates that are not drivers of this replay. The rider skips them, because no
    /// simulated driver would respond to their offers.
    pub foreign_candidates: u64,
    pub offers: u64,
    pub offer_failures: u64,
    pub declines_carrying_passenger: u64,
    pub declines_on_replay_trip: u64,
    pub declines_offline: u64,
    pub decline_failures: u64,
    pub accept_failures: u64,
    pub matched: u64,
    pub matched_first_search: u64,
    pub matched_real_taxi: u64,
    /// Requests whose real taxi was among the candidates of some search.
    pub real_taxi_in_candidates: u64,
    pub cancelled_unmatched: u64,
    pub cancel_failures: u64,
    pub completed: u64,
    pub lifecycle_failures: u64,

    pub went_online: u64,
    /// `goOnline` fixes the server did not apply, being stale or an impossible jump.
    pub online_fixes_ignored: u64,
    pub went_offline: u64,
    pub location_batches: u64,
    /// Trip events the replay caused, which the `liveTrips` subscriber should receive.
    pub expected_trip_events: u64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: Counters,
    pings: LocationCounts,
    heartbeats: LocationCounts,
    latencies_ms: BTreeMap<&'static str, Vec<f64>>,
    /// Error count by code, then by operation.
    errors: BTreeMap<String, BTreeMap<&'static str, u64>>,
    logged_errors: HashSet<(&'static str, String)>,
    pickup_distances_m: Vec<f64>,
    /// How late each location batch went out against its due time, in milliseconds.
    lag_ms: Vec<f64>,
}

/// Origin of a location fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixSource {
    /// A GPS fix from the data.
    Ping,
    /// The last known position sent again to keep an idle taxi fresh.
    Heartbeat,
}

/// The shared measurements of a run.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

/// A copy of every measurement, taken at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub pings: LocationCounts,
    pub heartbeats: LocationCounts,
    pub latencies_ms: BTreeMap<&'static str, Vec<f64>>,
    pub errors: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub pickup_distances_m: Vec<f64>,
    pub lag_ms: Vec<f64>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave these plain counters inconsistent, so a poisoned
        // lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `update` to the counters.
    pub fn count(&self, update: impl FnOnce(&mut Counters)) {
        update(&mut self.lock().counters);
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Applies `update` to the location counts of `source`.
    pub fn count_fixes(&self, source: FixSource, update: impl FnOnce(&mut LocationCounts)) {
        let mut inner = self.lock();
        match source {
            FixSource::Ping => update(&mut inner.pings),
            FixSource::Heartbeat => update(&mut inner.heartbeats),
        }
    }

    pub fn record_latency(&self, operation: &'static str, milliseconds: f64) {
        self.lock()
            .latencies_ms
            .entry(operation)
            .or_default()
            .push(milliseconds);
    }

    /// Counts an error and returns whether it is the first of its operation and code, so
    /// the caller logs each kind once.
    pub fn record_error(&self, operation: &'static str, code: &str) -> bool {
        let mut inner = self.lock();
        *inner
            .errors
            .entry(code.to_owned())
            .or_default()
            .entry(operation)
            .or_default() += 1;
        inner.logged_errors.insert((operation, code.to_owned()))
    }

    pub fn record_pickup_distance(&self, meters: f64) {
        self.lock().pickup_distances_m.push(meters);
    }

    pub fn record_lag(&self, milliseconds: f64) {
        self.lock().lag_ms.push(milliseconds);
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            counters: inner.counters.clone(),
            pings: inner.pings.clone(),
            heartbeats: inner.heartbeats.clone(),
            latencies_ms: inner.latencies_ms.clone(),
            errors: inner.errors.clone(),
            pickup_distances_m: inner.pickup_distances_m.clone(),
            lag_ms: inner.lag_ms.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let values = sorted((1..=100).map(f64::from).collect());
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 90.0), Some(90.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
    }

    #[test]
    fn percentile_small_samples() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let four = [1.0, 2.0, 3.0, 4.0];
        // 50% of 4 values is rank 2; 51% needs rank 3.
        assert_eq!(percentile(&four, 50.0), Some(2.0));
        assert_eq!(percentile(&four, 51.0), Some(3.0));
        assert_eq!(percentile(&four, 99.0), Some(4.0));
    }

    #[test]
    fn percentile_clamps_out_of_range() {
        let values = [1.0, 2.0, 3.0];
        assert_eq!(percentile(&values, -5.0), Some(1.0));
        assert_eq!(percentile(&values, 250.0), Some(3.0));
    }

    #[test]
    fn sorted_orders_unsorted_input() {
        assert_eq!(sorted(vec![3.0, 1.0, 2.0]), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn errors_counted_and_logged_once() {
        let stats = Stats::default();
        assert!(stats.record_error("offerTrip", "CONFLICT"));
        assert!(!stats.record_error("offerTrip", "CONFLICT"));
        assert!(stats.record_error("acceptTrip", "CONFLICT"));
        let errors = stats.snapshot().errors;
        assert_eq!(errors["CONFLICT"]["offerTrip"], 2);
        assert_eq!(errors["CONFLICT"]["acceptTrip"], 1);
    }
}
