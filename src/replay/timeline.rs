//! The main loop of a replay. It sends GPS fixes in `updateDriverLocations` batches as their
//! data time comes due and starts a trip flow at each trip's start, after the fixes of that
//! second (before them with `--request-before-fixes`). It also re-sends the position of idle
//! taxis so the server keeps them fresh, and takes silent taxis offline.
//!
//! Fixes of one taxi always go out in data-time order, one request after another, and a batch
//! contains at most one fix per taxi. A taxi that is offline goes online with `goOnline` and
//! the fix as its location. The loop waits for the first search of each new request, so the
//! search uses exactly the fixes that come before it in data-time order.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use indicatif::ProgressBar;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Replay;
use super::clock::Speed;
use super::data::{Dataset, Point};
use super::flow;
use super::stats::FixSource;

/// Maximum sleep of the paced loop, so heartbeats, offline checks and the progress bar keep
/// running while no event is due.
const TICK: Duration = Duration::from_millis(50);

const UPDATE_DRIVER_LOCATIONS: &str =
    "mutation updateDriverLocations($updates: [DriverLocationUpdateInput!]!) {
  updateDriverLocations(updates: $updates) { status errorCode message }
}";
const GO_ONLINE: &str = "mutation goOnline($driverId: ID!, $location: LocationInput) {
  goOnline(driverId: $driverId, location: $location) { presence { location { lat lng } } }
}";
const GO_OFFLINE: &str =
    "mutation goOffline($driverId: ID!) { goOffline(driverId: $driverId) { id } }";

/// Kind of an event of the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// A GPS fix, by index of the dataset's pings.
    Ping(usize),
    /// A trip request, by index of the dataset's trips.
    TripStart(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    /// Unix seconds.
    pub ts: i64,
    pub kind: EventKind,
}

/// Lists every ping and every trip start with a pickup, by time. Within a second the pings
/// come first, so the search of a request uses the positions of that second, unless
/// `requests_first`.
pub fn build_events(data: &Dataset, requests_first: bool) -> Vec<Event> {
    let pings = data.pings.iter().enumerate().map(|(i, ping)| Event {
        ts: ping.ts,
        kind: EventKind::Ping(i),
    });
    let starts = data
        .trips
        .iter()
        .enumerate()
        .filter(|(_, trip)| trip.pickup.is_some())
        .map(|(i, trip)| Event {
            ts: trip.start_ts,
            kind: EventKind::TripStart(i),
        });
    let mut events: Vec<Event> = pings.chain(starts).collect();
    let order_in_second = |kind: &EventKind| match kind {
        EventKind::TripStart(_) if requests_first => 0,
        EventKind::Ping(_) => 1,
        EventKind::TripStart(_) => 2,
    };
    events.sort_unstable_by_key(|e| (e.ts, order_in_second(&e.kind), e.kind));
    events
}

/// Returns the end (exclusive) of the batch of pings that starts at `start`: it stops before
/// a trip start, a ping after `horizon`, a second fix of a taxi already in the batch, or at
/// `max_rows`. `ping_taxi` maps each ping to its taxi.
pub fn batch_end(
    events: &[Event],
    ping_taxi: &[usize],
    start: usize,
    horizon: i64,
    max_rows: usize,
) -> usize {
    let mut taxis = std::collections::HashSet::new();
    let mut end = start;
    while end < events.len() && end - start < max_rows {
        let event = events[end];
        let EventKind::Ping(ping) = event.kind else {
            break;
        };
        if event.ts > horizon || !taxis.insert(ping_taxi[ping]) {
            break;
        }
        end += 1;
    }
    end
}

/// Returns the data time an unpaced loop runs to next: the next trip start, or the last
/// event.
fn next_stop(events: &[Event], cursor: usize) -> Option<i64> {
    let rest = events.get(cursor..)?;
    rest.iter()
        .find(|e| matches!(e.kind, EventKind::TripStart(_)))
        .or(rest.last())
        .map(|e| e.ts)
}

/// Runs the replay to the end of the data and until every trip flow has finished, then
/// takes every taxi offline.
///
/// # Errors
/// The server stopped responding or rejected the token.
pub async fn run(replay: Arc<Replay>, progress: &ProgressBar) -> anyhow::Result<()> {
    let events = build_events(&replay.data, replay.settings.requests_first);
    let unpaced = replay.time.speed == Speed::Unlimited;
    let mut flows = JoinSet::new();
    let mut cursor = 0;
    loop {
        if let Some(reason) = replay.api.stop_reason() {
            flows.abort_all();
            anyhow::bail!("stopping the replay: {reason}");
        }
        let horizon = match replay.time.data_time_at(Instant::now()) {
            Some(ts) => ts,
            None => next_stop(&events, cursor).unwrap_or_else(|| replay.clock.now()),
        };
        while cursor < events.len() && events[cursor].ts <= horizon {
            cursor = match events[cursor].kind {
                EventKind::Ping(_) => send_due_pings(&replay, &events, cursor, horizon).await,
                EventKind::TripStart(_) => start_trips(&replay, &events, cursor, &mut flows).await,
            };
        }
        if !unpaced {
            replay.clock.advance(horizon);
        }
        // Offline first, so no heartbeat goes to a taxi that is about to leave.
        take_silent_taxis_offline(&replay, replay.clock.now()).await;
        send_heartbeats(&replay, replay.clock.now()).await;
        reap_finished(&mut flows);
        show_progress(&replay, progress);

        if cursor == events.len() {
            if unpaced {
                // Nothing paces an unpaced run any more, so every wait in data time is over.
                replay.clock.advance(i64::MAX / 2);
                while let Some(result) = flows.join_next().await {
                    log_flow_panic(result);
                }
                break;
            }
            if flows.is_empty() {
                break;
            }
        }
        if !unpaced {
            let tick = Instant::now() + TICK;
            let next_due = events.get(cursor).map(|e| replay.time.due_at(e.ts));
            tokio::time::sleep_until(next_due.map_or(tick, |due| due.min(tick))).await;
        }
    }
    show_progress(&replay, progress);
    take_all_offline(&replay).await;
    Ok(())
}

/// Sends the batch of pings that starts at `cursor` and returns the index after it.
async fn send_due_pings(replay: &Replay, events: &[Event], cursor: usize, horizon: i64) -> usize {
    let end = batch_end(
        events,
        &replay.ping_taxi,
        cursor,
        horizon,
        replay.settings.batch_size,
    );
    let batch = &events[cursor..end];
    if replay.time.speed != Speed::Unlimited {
        let lag = Instant::now().saturating_duration_since(replay.time.due_at(batch[0].ts));
        replay.stats.record_lag(lag.as_secs_f64() * 1_000.0);
    }

    let mut fixes = Vec::with_capacity(batch.len());
    let mut going_online = Vec::new();
    {
        let mut fleet = replay.fleet_lock();
        for event in batch {
            let EventKind::Ping(ping) = event.kind else {
                continue;
            };
            let taxi = replay.ping_taxi[ping];
            let fix = OutgoingFix {
                taxi,
                ts: event.ts,
                position: replay.data.pings[ping].position,
            };
            fleet.taxis[taxi].last_ping_ts = Some(event.ts);
            if fleet.taxis[taxi].online {
                fixes.push(fix);
            } else {
                going_online.push(fix);
            }
        }
    }
    join_all(going_online.into_iter().map(|fix| go_online(replay, fix))).await;
    if !fixes.is_empty() {
        send_fixes(replay, FixSource::Ping, fixes).await;
    }
    replay.clock.advance(batch[batch.len() - 1].ts);
    end
}

/// Starts a flow for each trip that starts at the second of `events[cursor]` and returns the
/// index after them. It waits for each flow's first search and offers, so no later fix can
/// reach the server before that search.
async fn start_trips(
    replay: &Arc<Replay>,
    events: &[Event],
    cursor: usize,
    flows: &mut JoinSet<()>,
) -> usize {
    let ts = events[cursor].ts;
    let mut end = cursor;
    let mut searches = Vec::new();
    while let Some(Event {
        ts: event_ts,
        kind: EventKind::TripStart(trip),
    }) = events.get(end).copied()
    {
        if event_ts != ts {
            break;
        }
        let (sender, receiver) = oneshot::channel();
        flows.spawn(flow::run(replay.clone(), trip, sender));
        searches.push(receiver);
        end += 1;
    }
    replay.clock.advance(ts);
    // An error only means the flow ended before searching, which is also done.
    join_all(searches).await;
    end
}

/// A position to send for one taxi at data time `ts`.
#[derive(Debug, Clone, Copy)]
struct OutgoingFix {
    taxi: usize,
    ts: i64,
    position: Point,
}

#[derive(Debug, Deserialize)]
struct OnlineDriver {
    presence: OnlinePresence,
}

#[derive(Debug, Deserialize)]
struct OnlinePresence {
    location: Option<Location>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct Location {
    lat: f64,
    lng: f64,
}

/// Degrees within which a returned coordinate equals the one sent (about 0.1 mm), to absorb
/// rounding in the JSON round trip.
const COORDINATE_EPSILON: f64 = 1e-9;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateResult {
    status: String,
    error_code: Option<String>,
    message: Option<String>,
}

fn location_json(replay: &Replay, fix: &OutgoingFix) -> serde_json::Value {
    let recorded_at = replay
        .time
        .recorded_at(fix.ts)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({ "lat": fix.position.lat, "lng": fix.position.lon, "recordedAt": recorded_at })
}

/// Sends one `updateDriverLocations` batch and counts each row's outcome.
async fn send_fixes(replay: &Replay, source: FixSource, fixes: Vec<OutgoingFix>) {
    let updates: Vec<serde_json::Value> = {
        let fleet = replay.fleet_lock();
        fixes
            .iter()
            .map(|fix| {
                json!({
                    "driverId": fleet.taxis[fix.taxi].driver_id,
                    "location": location_json(replay, fix),
                })
            })
            .collect()
    };
    let sent = fixes.len() as u64;
    replay.stats.count(|c| c.location_batches += 1);
    replay.stats.count_fixes(source, |c| c.sent += sent);
    let results = replay
        .api
        .call::<Vec<UpdateResult>>(
            "updateDriverLocations",
            UPDATE_DRIVER_LOCATIONS,
            json!({ "updates": updates }),
        )
        .await;
    let Ok(results) = results else {
        replay.stats.count_fixes(source, |c| c.lost += sent);
        return;
    };

    let now = Instant::now();
    let mut fleet = replay.fleet_lock();
    for (fix, result) in fixes.iter().zip(&results) {
        match result.status.as_str() {
            "ACCEPTED" => {
                let taxi = &mut fleet.taxis[fix.taxi];
                taxi.last_position = Some(fix.position);
                taxi.last_fix_at = Some(now);
                replay.stats.count_fixes(source, |c| c.accepted += 1);
            }
            "STALE" => replay.stats.count_fixes(source, |c| c.stale += 1),
            "IMPOSSIBLE_JUMP" => replay.stats.count_fixes(source, |c| c.impossible_jump += 1),
            other => {
                let code = result
                    .error_code
                    .clone()
                    .unwrap_or_else(|| other.to_owned());
                if replay
                    .stats
                    .record_error("updateDriverLocations row", &code)
                {
                    tracing::warn!(
                        driver.id = %fleet.taxis[fix.taxi].driver_id,
                        code,
                        message = result.message.as_deref().unwrap_or(""),
                        "first rejected location row with this code; later ones are only counted"
                    );
                }
                replay
                    .stats
                    .count_fixes(source, |c| *c.rejected.entry(code).or_default() += 1);
            }
        }
    }
    let missing = sent.saturating_sub(results.len() as u64);
    replay.stats.count_fixes(source, |c| c.lost += missing);
}

/// Puts an offline taxi online with `fix` as its first position.
async fn go_online(replay: &Replay, fix: OutgoingFix) {
    let driver_id = replay.fleet_lock().taxis[fix.taxi].driver_id.clone();
    let variables = json!({ "driverId": driver_id, "location": location_json(replay, &fix) });
    let result = replay
        .api
        .call::<OnlineDriver>("goOnline", GO_ONLINE, variables)
        .await;
    let Ok(driver) = result else {
        // The next fix of this taxi tries again.
        return;
    };

    // goOnline returns no status for its fix and silently keeps the previous one when the
    // new fix is stale or a jump, so the returned position shows which one the server kept.
    let kept = driver.presence.location;
    let applied = kept.is_some_and(|at| {
        (at.lat - fix.position.lat).abs() < COORDINATE_EPSILON
            && (at.lng - fix.position.lon).abs() < COORDINATE_EPSILON
    });

    let mut fleet = replay.fleet_lock();
    let taxi = &mut fleet.taxis[fix.taxi];
    taxi.online = true;
    if applied {
        taxi.last_position = Some(fix.position);
        taxi.last_fix_at = Some(Instant::now());
    } else {
        taxi.last_position = kept.map(|at| Point {
            lat: at.lat,
            lon: at.lng,
        });
    }
    replay.stats.count(|c| {
        c.went_online += 1;
        c.online_fixes_ignored += u64::from(!applied);
    });
}

/// Sends the last position again, stamped with data time `ts`, for every online taxi whose
/// last accepted fix is older than the heartbeat interval in wall-clock time.
async fn send_heartbeats(replay: &Replay, ts: i64) {
    let Some(interval) = replay.settings.heartbeat else {
        return;
    };
    let due: Vec<OutgoingFix> = {
        let fleet = replay.fleet_lock();
        fleet
            .taxis
            .iter()
            .enumerate()
            .filter(|(_, taxi)| {
                taxi.online && taxi.last_fix_at.is_some_and(|at| at.elapsed() >= interval)
            })
            .filter_map(|(index, taxi)| {
                Some(OutgoingFix {
                    taxi: index,
                    ts,
                    position: taxi.last_position?,
                })
            })
            .collect()
    };
    for chunk in due.chunks(replay.settings.batch_size) {
        send_fixes(replay, FixSource::Heartbeat, chunk.to_vec()).await;
    }
}

/// Takes offline every free taxi whose last GPS fix is at least `offline_after` data seconds
/// before `ts`.
async fn take_silent_taxis_offline(replay: &Replay, ts: i64) {
    let Some(after_s) = replay.settings.offline_after_s else {
        return;
    };
    let silent: Vec<usize> = {
        let mut fleet = replay.fleet_lock();
        let mut silent = Vec::new();
        for (index, taxi) in fleet.taxis.iter_mut().enumerate() {
            let quiet = taxi.last_ping_ts.is_some_and(|last| ts - last >= after_s);
            if taxi.online && taxi.assigned_trip.is_none() && quiet {
                // Marked before the call so no flow claims the taxi meanwhile.
                taxi.online = false;
                silent.push(index);
            }
        }
        silent
    };
    join_all(silent.into_iter().map(|taxi| go_offline(replay, taxi))).await;
}

async fn take_all_offline(replay: &Replay) {
    let online: Vec<usize> = {
        let mut fleet = replay.fleet_lock();
        let mut online = Vec::new();
        for (index, taxi) in fleet.taxis.iter_mut().enumerate() {
            if taxi.online {
                taxi.online = false;
                online.push(index);
            }
        }
        online
    };
    join_all(online.into_iter().map(|taxi| go_offline(replay, taxi))).await;
}

/// Sends `goOffline` for a taxi already marked offline, and marks it online again when the
/// call fails.
async fn go_offline(replay: &Replay, taxi: usize) {
    let driver_id = replay.fleet_lock().taxis[taxi].driver_id.clone();
    let result = replay
        .api
        .call::<IgnoredAny>("goOffline", GO_OFFLINE, json!({ "driverId": driver_id }))
        .await;
    if result.is_ok() {
        replay.stats.count(|c| c.went_offline += 1);
    } else {
        replay.fleet_lock().taxis[taxi].online = true;
    }
}

fn reap_finished(flows: &mut JoinSet<()>) {
    while let Some(result) = flows.try_join_next() {
        log_flow_panic(result);
    }
}

fn log_flow_panic(result: Result<(), tokio::task::JoinError>) {
    if let Err(error) = result {
        tracing::error!(%error, "a trip flow failed");
    }
}

fn show_progress(replay: &Replay, progress: &ProgressBar) {
    let position =
        (replay.clock.now() - replay.time.t0).clamp(0, progress.length().unwrap_or(0) as i64);
    progress.set_position(position as u64);
    let counters = replay.stats.counters();
    progress.set_message(format!(
        "requests {} matched {} cancelled {}",
        counters.requests, counters.matched, counters.cancelled_unmatched
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::data::{CallType, Ping, Trip};

    fn ping(taxi_id: &str, ts: i64) -> Ping {
        Ping {
            ts,
            taxi_id: taxi_id.into(),
            trip_id: "t".into(),
            position: Point {
                lat: 41.1,
                lon: -8.6,
            },
        }
    }

    fn trip(start_ts: i64, pickup: Option<Point>) -> Trip {
        Trip {
            trip_id: format!("trip{start_ts}"),
            taxi_id: "20000001".into(),
            call_type: CallType::Street,
            origin_call: None,
            start_ts,
            end_ts: start_ts + 30,
            pickup,
            dropoff: pickup,
        }
    }

    #[test]
    fn events_order_within_second() {
        let point = Some(Point {
            lat: 41.1,
            lon: -8.6,
        });
        let data = Dataset {
            trips: vec![trip(100, point), trip(105, None)],
            pings: vec![ping("a", 100), ping("b", 100), ping("a", 115)],
        };
        let kinds = |events: Vec<Event>| events.iter().map(|e| e.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(build_events(&data, false)),
            [
                EventKind::Ping(0),
                EventKind::Ping(1),
                EventKind::TripStart(0),
                EventKind::Ping(2),
            ]
        );
        assert_eq!(
            kinds(build_events(&data, true)),
            [
                EventKind::TripStart(0),
                EventKind::Ping(0),
                EventKind::Ping(1),
                EventKind::Ping(2),
            ]
        );
    }

    fn pings_at(times: &[i64]) -> Vec<Event> {
        times
            .iter()
            .enumerate()
            .map(|(i, &ts)| Event {
                ts,
                kind: EventKind::Ping(i),
            })
            .collect()
    }

    #[test]
    fn batch_stops_at_trip_start() {
        let mut events = pings_at(&[10, 10, 11]);
        events.insert(
            2,
            Event {
                ts: 10,
                kind: EventKind::TripStart(0),
            },
        );
        assert_eq!(batch_end(&events, &[0, 1, 2], 0, 100, 500), 2);
        assert_eq!(batch_end(&events, &[0, 1, 2], 2, 100, 500), 2);
    }

    #[test]
    fn batch_stops_at_horizon_and_size() {
        let events = pings_at(&[10, 11, 12, 13]);
        let taxis = [0, 1, 2, 3];
        assert_eq!(batch_end(&events, &taxis, 0, 11, 500), 2);
        assert_eq!(batch_end(&events, &taxis, 0, 100, 3), 3);
        assert_eq!(batch_end(&events, &taxis, 1, 100, 500), 4);
    }

    #[test]
    fn batch_holds_one_fix_per_taxi() {
        let events = pings_at(&[10, 11, 25, 26]);
        // Pings 0 and 2 belong to taxi 7.
        assert_eq!(batch_end(&events, &[7, 8, 7, 9], 0, 100, 500), 2);
        assert_eq!(batch_end(&events, &[7, 8, 7, 9], 2, 100, 500), 4);
    }

    #[test]
    fn next_stop_is_next_trip_start() {
        let mut events = pings_at(&[10, 20, 30]);
        events.insert(
            2,
            Event {
                ts: 20,
                kind: EventKind::TripStart(0),
            },
        );
        assert_eq!(next_stop(&events, 0), Some(20));
        assert_eq!(next_stop(&events, 3), Some(30));
        assert_eq!(next_stop(&events, 4), None);
    }
}
