//! One trip of the data played through the API. The rider requests it, searches for drivers
//! and offers it to them best first. Each driver accepts or declines by the availability
//! model of [`super::fleet`]. The matched driver arrives, starts and completes the trip
//! after its real duration. A request still unmatched after the timeout is cancelled by the
//! rider.
//!
//! Waits are in data time, on [`super::clock::DataClock`], so a flow keeps pace with the
//! GPS fixes at any speed-up.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::Replay;
use super::fleet::Busy;

const REQUEST_TRIP: &str = "mutation requestTrip($input: RequestTripInput!) {
  requestTrip(input: $input) { id }
}";
const NEARBY_DRIVERS: &str = "query nearbyDrivers($near: LatLngInput!, $limit: Int!) {
  nearbyDrivers(near: $near, vehicleTypes: [CAB], limit: $limit) {
    drivers { rank distanceMeters driver { id } }
  }
}";
const OFFER_TRIP: &str = "mutation offerTrip($tripId: ID!, $driverId: ID!) {
  offerTrip(tripId: $tripId, driverId: $driverId) { id }
}";
const ACCEPT_TRIP: &str = "mutation acceptTrip($tripId: ID!, $driverId: ID!) {
  acceptTrip(tripId: $tripId, driverId: $driverId) { id }
}";
const DECLINE_TRIP: &str = "mutation declineTrip($tripId: ID!, $driverId: ID!, $reason: String) {
  declineTrip(tripId: $tripId, driverId: $driverId, reason: $reason) { id }
}";
const ARRIVE_AT_PICKUP: &str = "mutation arriveAtPickup($tripId: ID!, $driverId: ID!) {
  arriveAtPickup(tripId: $tripId, driverId: $driverId) { id }
}";
const START_TRIP: &str = "mutation startTrip($tripId: ID!, $driverId: ID!) {
  startTrip(tripId: $tripId, driverId: $driverId) { id }
}";
const COMPLETE_TRIP: &str = "mutation completeTrip($tripId: ID!, $driverId: ID!) {
  completeTrip(tripId: $tripId, driverId: $driverId) { id }
}";
const CANCEL_TRIP: &str =
    "mutation cancelTrip($tripId: ID!, $actor: ActorInput!, $reason: String!) {
  cancelTrip(tripId: $tripId, actor: $actor, reason: $reason) { id }
}";

#[derive(Debug, Deserialize)]
struct Identified {
    id: String,
}

#[derive(Debug, Deserialize)]
struct NearbyResult {
    drivers: Vec<NearbyDriver>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NearbyDriver {
    distance_meters: f64,
    driver: Identified,
}

/// A request and what its rider has learnt so far.
struct Request<'a> {
    replay: &'a Replay,
    /// Index of the trip in the dataset.
    trip: usize,
    trip_id: String,
    /// Drivers who declined this request; the rider does not offer it to them again.
    declined: HashSet<String>,
    real_taxi_seen: bool,
}

/// The driver who accepted a request.
struct Match {
    taxi: usize,
    driver_id: String,
    distance_m: f64,
}

/// Plays trip `trip` of the dataset. Sends on `searched` once the first search and its
/// offers are done, so the timeline can wait for it before sending later fixes.
pub async fn run(replay: Arc<Replay>, trip: usize, searched: oneshot::Sender<()>) {
    let mut searched = Some(searched);
    let Some(mut request) = request_trip(&replay, trip).await else {
        return;
    };
    let data_trip = &replay.data.trips[trip];
    let deadline_ts = data_trip.start_ts + replay.settings.match_timeout_s;
    let mut attempt_ts = data_trip.start_ts;
    let mut first_search = true;
    let found = loop {
        let found = request.search_and_offer(attempt_ts).await;
        if let Some(sender) = searched.take() {
            let _ = sender.send(());
        }
        if found.is_some() || attempt_ts >= deadline_ts {
            break found;
        }
        first_search = false;
        attempt_ts = (attempt_ts + replay.settings.retry_interval_s).min(deadline_ts);
        replay.clock.wait_until(attempt_ts).await;
    };
    if request.real_taxi_seen {
        replay.stats.count(|c| c.real_taxi_in_candidates += 1);
    }
    match found {
        Some(matched) => {
            let real_taxi = replay.fleet_lock().taxis[matched.taxi].taxi_id == data_trip.taxi_id;
            replay.stats.count(|c| {
                c.matched += 1;
                c.matched_first_search += u64::from(first_search);
                c.matched_real_taxi += u64::from(real_taxi);
            });
            replay.stats.record_pickup_distance(matched.distance_m);
            request
                .drive(&matched, attempt_ts + data_trip.duration_s())
                .await;
            replay.fleet_lock().release(matched.taxi, trip);
        }
        None => request.cancel_unmatched().await,
    }
}

/// Sends `requestTrip` for trip `trip`; `None` when it fails.
async fn request_trip(replay: &Replay, trip: usize) -> Option<Request<'_>> {
    let data_trip = &replay.data.trips[trip];
    let pickup = data_trip.pickup?;
    let mut input = json!({
        "riderId": replay.riders[trip],
        "pickup": { "lat": pickup.lat, "lng": pickup.lon },
        "vehicleType": "CAB",
    });
    if let Some(dropoff) = data_trip.dropoff {
        input["dropoff"] = json!({ "lat": dropoff.lat, "lng": dropoff.lon });
    }
    let created: Identified = match replay
        .api
        .call("requestTrip", REQUEST_TRIP, json!({ "input": input }))
        .await
    {
        Ok(created) => created,
        Err(_) => {
            replay.stats.count(|c| c.request_failures += 1);
            return None;
        }
    };
    replay.stats.count(|c| {
        c.requests += 1;
        c.expected_trip_events += 1;
    });
    Some(Request {
        replay,
        trip,
        trip_id: created.id,
        declined: HashSet::new(),
        real_taxi_seen: false,
    })
}

impl Request<'_> {
    /// Searches once and offers the request to each new candidate, best first, until one
    /// accepts. `ts` is the data time of the search, which decides whether a driver accepts.
    async fn search_and_offer(&mut self, ts: i64) -> Option<Match> {
        let replay = self.replay;
        let pickup = replay.data.trips[self.trip].pickup?;
        let variables = json!({
            "near": { "lat": pickup.lat, "lng": pickup.lon },
            "limit": replay.settings.candidates,
        });
        let found: NearbyResult = replay
            .api
            .call("nearbyDrivers", NEARBY_DRIVERS, variables)
            .await
            .ok()?;
        replay.stats.count(|c| {
            c.searches += 1;
            c.empty_searches += u64::from(found.drivers.is_empty());
        });
        for candidate in found.drivers {
            let driver_id = candidate.driver.id;
            if self.declined.contains(&driver_id) {
                continue;
            }
            let Some(taxi) = replay.fleet_lock().driver_index(&driver_id) else {
                replay.stats.count(|c| c.foreign_candidates += 1);
                continue;
            };
            if replay.fleet_lock().taxis[taxi].taxi_id == replay.data.trips[self.trip].taxi_id {
                self.real_taxi_seen = true;
            }
            if !self.offer(&driver_id).await {
                continue;
            }
            let answer = replay.fleet_lock().claim(taxi, self.trip, ts);
            match answer {
                Ok(()) => {
                    if self.accept(&driver_id).await {
                        return Some(Match {
                            taxi,
                            driver_id,
                            distance_m: candidate.distance_meters,
                        });
                    }
                    replay.fleet_lock().release(taxi, self.trip);
                }
                Err(busy) => self.decline(&driver_id, busy).await,
            }
        }
        None
    }

    async fn offer(&self, driver_id: &str) -> bool {
        let stats = &self.replay.stats;
        let variables = json!({ "tripId": self.trip_id, "driverId": driver_id });
        let offered = self
            .replay
            .api
            .call::<Identified>("offerTrip", OFFER_TRIP, variables)
            .await;
        match offered {
            Ok(_) => {
                stats.count(|c| {
                    c.offers += 1;
                    c.expected_trip_events += 1;
                });
                true
            }
            Err(_) => {
                stats.count(|c| c.offer_failures += 1);
                false
            }
        }
    }

    async fn accept(&self, driver_id: &str) -> bool {
        let replay = self.replay;
        let variables = json!({ "tripId": self.trip_id, "driverId": driver_id });
        let accepted = replay
            .api
            .call::<Identified>("acceptTrip", ACCEPT_TRIP, variables)
            .await;
        if accepted.is_ok() {
            replay.stats.count(|c| c.expected_trip_events += 1);
            return true;
        }
        replay.stats.count(|c| c.accept_failures += 1);
        // The offer stays pending after a failed accept and would block the next offer until
        // it expires, so the driver declines it.
        let reason = "accept failed on the server";
        if self.send_decline(driver_id, reason).await {
            replay.stats.count(|c| c.expected_trip_events += 1);
        }
        false
    }

    async fn decline(&mut self, driver_id: &str, busy: Busy) {
        let replay = self.replay;
        let reason = busy.reason(&replay.data);
        self.declined.insert(driver_id.to_owned());
        if !self.send_decline(driver_id, &reason).await {
            replay.stats.count(|c| c.decline_failures += 1);
            return;
        }
        replay.stats.count(|c| {
            c.expected_trip_events += 1;
            match busy {
                Busy::CarryingPassenger { .. } => c.declines_carrying_passenger += 1,
                Busy::OnReplayTrip { .. } => c.declines_on_replay_trip += 1,
                Busy::Offline => c.declines_offline += 1,
            }
        });
    }

    async fn send_decline(&self, driver_id: &str, reason: &str) -> bool {
        let variables = json!({ "tripId": self.trip_id, "driverId": driver_id, "reason": reason });
        self.replay
            .api
            .call::<Identified>("declineTrip", DECLINE_TRIP, variables)
            .await
            .is_ok()
    }

    /// Arrives and starts at once, because the data has no approach to the pickup, then
    /// completes at data time `complete_ts`.
    async fn drive(&self, matched: &Match, complete_ts: i64) {
        let replay = self.replay;
        let variables = json!({ "tripId": self.trip_id, "driverId": matched.driver_id });
        let steps = [
            ("arriveAtPickup", ARRIVE_AT_PICKUP),
            ("startTrip", START_TRIP),
        ];
        for (operation, document) in steps {
            let moved = replay
                .api
                .call::<Identified>(operation, document, variables.clone())
                .await;
            if moved.is_err() {
                replay.stats.count(|c| c.lifecycle_failures += 1);
                self.cancel_by_driver(&matched.driver_id).await;
                return;
            }
            replay.stats.count(|c| c.expected_trip_events += 1);
        }
        replay.clock.wait_until(complete_ts).await;
        let completed = replay
            .api
            .call::<Identified>("completeTrip", COMPLETE_TRIP, variables)
            .await;
        replay.stats.count(|c| {
            if completed.is_ok() {
                c.completed += 1;
                c.expected_trip_events += 1;
            } else {
                c.lifecycle_failures += 1;
            }
        });
    }

    /// Frees the driver on the server after a failed step, so later offers can reach it.
    async fn cancel_by_driver(&self, driver_id: &str) {
        let variables = json!({
            "tripId": self.trip_id,
            "actor": { "role": "DRIVER", "id": driver_id },
            "reason": "the replay could not move the trip to its next state",
        });
        let cancelled = self
            .replay
            .api
            .call::<Identified>("cancelTrip", CANCEL_TRIP, variables)
            .await;
        if cancelled.is_ok() {
            self.replay.stats.count(|c| c.expected_trip_events += 1);
        }
    }

    async fn cancel_unmatched(&self) {
        let replay = self.replay;
        let variables = json!({
            "tripId": self.trip_id,
            "actor": { "role": "RIDER", "id": replay.riders[self.trip] },
            "reason": format!(
                "no driver accepted within {} s",
                replay.settings.match_timeout_s
            ),
        });
        let cancelled = replay
            .api
            .call::<Identified>("cancelTrip", CANCEL_TRIP, variables)
            .await;
        replay.stats.count(|c| {
            if cancelled.is_ok() {
                c.cancelled_unmatched += 1;
                c.expected_trip_events += 1;
            } else {
                c.cancel_failures += 1;
            }
        });
    }
}
