//! The replay's view of each taxi: its driver account, whether it is online, its last
//! accepted position, the trip the matcher gave it, and the times the data shows it carrying
//! a passenger.
//!
//! Availability model: the data only has fixes while a taxi carries a passenger. A taxi is
//! therefore free from the end of one of its real trips until the start of its next one, and
//! waits at its last dropoff in between. An offered driver accepts when the taxi is online,
//! has no trip of this replay, and is not inside another of its real trips at the data time
//! of the offer. The trip being offered does not count, because its own taxi is free to take
//! it.

use std::collections::HashMap;

use tokio::time::Instant;

use super::data::{Dataset, Point};

/// Reason an offered driver declines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The data shows the taxi carrying the passenger of this trip (an index of the dataset).
    CarryingPassenger { trip: usize },
    /// The taxi is assigned another trip of this replay.
    OnReplayTrip { trip: usize },
    /// The taxi went offline after the offer was made.
    Offline,
}

impl Busy {
    /// Decline reason sent to the server.
    pub fn reason(&self, data: &Dataset) -> String {
        match self {
            Busy::CarryingPassenger { trip } => format!(
                "carrying the passenger of Porto trip {}",
                data.trips[*trip].trip_id
            ),
            Busy::OnReplayTrip { trip } => format!(
                "already serving the replayed Porto trip {}",
                data.trips[*trip].trip_id
            ),
            Busy::Offline => "went offline".into(),
        }
    }
}

/// One taxi of the replay.
#[derive(Debug, Clone)]
pub struct Taxi {
    pub taxi_id: String,
    /// Server id of the taxi's driver.
    pub driver_id: String,
    /// The taxi's real trips as (start, end, trip index), in Unix seconds, sorted by start.
    real_trips: Vec<(i64, i64, usize)>,
    pub online: bool,
    /// Last position the server accepted.
    pub last_position: Option<Point>,
    /// When the server last accepted a fix of this taxi, for heartbeats.
    pub last_fix_at: Option<Instant>,
    /// Data time of the last GPS fix sent, for going offline after a silence.
    pub last_ping_ts: Option<i64>,
    /// Trip of this replay assigned to the taxi, from acceptance to completion.
    pub assigned_trip: Option<usize>,
}

impl Taxi {
    pub fn new(taxi_id: String, driver_id: String) -> Self {
        Self {
            taxi_id,
            driver_id,
            real_trips: Vec::new(),
            online: false,
            last_position: None,
            last_fix_at: None,
            last_ping_ts: None,
            assigned_trip: None,
        }
    }

    /// Returns the real trip other than `except` whose passenger the taxi carries at `ts`. A trip
    /// covers its start second and ends before its last second, so a taxi is free at the
    /// second of a dropoff.
    pub fn carrying_passenger_at(&self, ts: i64, except: usize) -> Option<usize> {
        self.real_trips
            .iter()
            .take_while(|(start, _, _)| *start <= ts)
            .find(|(start, end, trip)| *trip != except && *start <= ts && ts < *end)
            .map(|(_, _, trip)| *trip)
    }
}

/// Every taxi of the replay.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub taxis: Vec<Taxi>,
    by_taxi_id: HashMap<String, usize>,
    by_driver_id: HashMap<String, usize>,
}

impl Fleet {
    /// Builds the fleet of the taxis in `data` from their driver ids, keyed by taxi id.
    ///
    /// # Errors
    /// A taxi of the data without a driver id.
    pub fn new(data: &Dataset, driver_ids: &HashMap<String, String>) -> anyhow::Result<Self> {
        let mut fleet = Fleet::default();
        for (index, trip) in data.trips.iter().enumerate() {
            let taxi = match fleet.by_taxi_id.get(&trip.taxi_id) {
                Some(&taxi) => taxi,
                None => {
                    let driver_id = driver_ids.get(&trip.taxi_id).ok_or_else(|| {
                        anyhow::anyhow!("taxi {} has no driver account", trip.taxi_id)
                    })?;
                    fleet.add(Taxi::new(trip.taxi_id.clone(), driver_id.clone()))
                }
            };
            fleet.taxis[taxi]
                .real_trips
                .push((trip.start_ts, trip.end_ts, index));
        }
        for taxi in &mut fleet.taxis {
            taxi.real_trips.sort_unstable();
        }
        Ok(fleet)
    }

    fn add(&mut self, taxi: Taxi) -> usize {
        let index = self.taxis.len();
        self.by_taxi_id.insert(taxi.taxi_id.clone(), index);
        self.by_driver_id.insert(taxi.driver_id.clone(), index);
        self.taxis.push(taxi);
        index
    }

    pub fn taxi_index(&self, taxi_id: &str) -> Option<usize> {
        self.by_taxi_id.get(taxi_id).copied()
    }

    pub fn driver_index(&self, driver_id: &str) -> Option<usize> {
        self.by_driver_id.get(driver_id).copied()
    }

    /// Decides the response to an offer of `trip` to `taxi` at data time `ts`. On success the
    /// taxi is assigned the trip until [`Fleet::release`]. Otherwise the error gives the
    /// reason to decline.
    pub fn claim(&mut self, taxi: usize, trip: usize, ts: i64) -> Result<(), Busy> {
        let taxi = &mut self.taxis[taxi];
        if !taxi.online {
            return Err(Busy::Offline);
        }
        if let Some(held) = taxi.assigned_trip {
            return Err(Busy::OnReplayTrip { trip: held });
        }
        if let Some(carried) = taxi.carrying_passenger_at(ts, trip) {
            return Err(Busy::CarryingPassenger { trip: carried });
        }
        taxi.assigned_trip = Some(trip);
        Ok(())
    }

    /// Frees `taxi` if it is assigned `trip`.
    pub fn release(&mut self, taxi: usize, trip: usize) {
        let taxi = &mut self.taxis[taxi];
        if taxi.assigned_trip == Some(trip) {
            taxi.assigned_trip = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::data::{CallType, Trip};

    fn trip(taxi_id: &str, start_ts: i64, end_ts: i64) -> Trip {
        Trip {
            trip_id: format!("{start_ts}{taxi_id}"),
            taxi_id: taxi_id.into(),
            call_type: CallType::Street,
            origin_call: None,
            start_ts,
            end_ts,
            pickup: None,
            dropoff: None,
        }
    }

    /// Taxi A serves trips 0 (100..200) and 2 (300..400); taxi B serves trip 1 (150..250).
    fn fleet() -> Fleet {
        let data = Dataset {
            trips: vec![
                trip("20000001", 100, 200),
                trip("20000002", 150, 250),
                trip("20000001", 300, 400),
            ],
            pings: Vec::new(),
        };
        let drivers = HashMap::from([
            ("20000001".to_owned(), "11".to_owned()),
            ("20000002".to_owned(), "12".to_owned()),
        ]);
        let mut fleet = Fleet::new(&data, &drivers).unwrap();
        for taxi in &mut fleet.taxis {
            taxi.online = true;
        }
        fleet
    }

    #[test]
    fn fleet_indexes_taxis_and_drivers() {
        let fleet = fleet();
        assert_eq!(fleet.taxis.len(), 2);
        assert_eq!(fleet.taxi_index("20000002"), Some(1));
        assert_eq!(fleet.driver_index("11"), Some(0));
        assert_eq!(fleet.driver_index("99"), None);
    }

    #[test]
    fn carrying_inside_real_trip_only() {
        let fleet = fleet();
        let taxi = &fleet.taxis[0];
        assert_eq!(taxi.carrying_passenger_at(99, 1), None);
        assert_eq!(taxi.carrying_passenger_at(100, 1), Some(0));
        assert_eq!(taxi.carrying_passenger_at(199, 1), Some(0));
        // Free at the dropoff second and between trips.
        assert_eq!(taxi.carrying_passenger_at(200, 1), None);
        assert_eq!(taxi.carrying_passenger_at(250, 1), None);
        assert_eq!(taxi.carrying_passenger_at(350, 1), Some(2));
    }

    #[test]
    fn own_trip_does_not_make_taxi_busy() {
        let fleet = fleet();
        assert_eq!(fleet.taxis[0].carrying_passenger_at(100, 0), None);
        assert_eq!(fleet.taxis[0].carrying_passenger_at(150, 0), None);
    }

    #[test]
    fn claim_accepts_free_taxi_once() {
        let mut fleet = fleet();
        assert_eq!(fleet.claim(0, 1, 250), Ok(()));
        assert_eq!(fleet.taxis[0].assigned_trip, Some(1));
        assert_eq!(fleet.claim(0, 2, 260), Err(Busy::OnReplayTrip { trip: 1 }));
        fleet.release(0, 1);
        assert_eq!(fleet.taxis[0].assigned_trip, None);
        assert_eq!(fleet.claim(0, 2, 300), Ok(()));
    }

    #[test]
    fn claim_declines_busy_or_offline_taxi() {
        let mut fleet = fleet();
        assert_eq!(
            fleet.claim(1, 0, 160),
            Err(Busy::CarryingPassenger { trip: 1 })
        );
        assert_eq!(fleet.taxis[1].assigned_trip, None);
        fleet.taxis[1].online = false;
        assert_eq!(fleet.claim(1, 0, 300), Err(Busy::Offline));
    }

    #[test]
    fn release_ignores_other_trip() {
        let mut fleet = fleet();
        fleet.claim(0, 1, 250).unwrap();
        fleet.release(0, 2);
        assert_eq!(fleet.taxis[0].assigned_trip, Some(1));
    }
}
