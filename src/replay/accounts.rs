//! Synthetic identities of the Porto taxis and riders, and their registration through the API.
//!
//! The data has no names or phone numbers, so the replay makes them up from the ids in the
//! data. Only positions and times are real. Every number is `+351` followed by nine digits,
//! the length of a Portuguese number, and the first digit gives the kind of account:
//!
//! - driver: `+351 9` and the 8-digit taxi id (`20000380` gives `+351920000380`);
//! - rider who called the dispatch central: `+351 2` and the `origin_call` id padded to
//!   8 digits (`2002` gives `+351200002002`);
//! - any other rider, one per trip: `+351 3`, the trip's start in seconds after
//!   2013-07-01T00:00:00Z padded to 5 digits, and the last 3 digits of the taxi id.
//!
//! Accounts are looked up by phone first, so a second run against the same database reuses
//! them instead of failing with CONFLICT.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::json;

use super::client::Api;
use super::data::{Dataset, Trip};
use super::stats::Stats;

/// 2013-07-01T00:00:00Z in Unix seconds, the origin of per-trip rider numbers.
const RIDER_EPOCH_TS: i64 = 1_372_636_800;

/// Driver phone number of a taxi.
///
/// # Errors
/// The taxi id is not 8 digits.
pub fn driver_phone(taxi_id: &str) -> anyhow::Result<String> {
    if taxi_id.len() != 8 || !taxi_id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("taxi id {taxi_id:?} is not 8 digits, so it has no synthetic phone number");
    }
    Ok(format!("+3519{taxi_id}"))
}

/// Registration plate of a taxi: `PT` and the taxi id.
pub fn driver_plate(taxi_id: &str) -> String {
    format!("PT{taxi_id}")
}

pub fn driver_name(taxi_id: &str) -> String {
    format!("Porto taxi {taxi_id}")
}

/// Identity of the rider behind a trip: the caller of a dispatch call, or a passenger of
/// that trip alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RiderKey {
    /// Anonymised `origin_call` id; one rider may request many trips.
    Caller(String),
    /// A street or stand passenger, who appears in one trip only.
    Passenger {
        trip_id: String,
        start_ts: i64,
        taxi_id: String,
    },
}

impl RiderKey {
    pub fn of_trip(trip: &Trip) -> Self {
        match &trip.origin_call {
            Some(call) => RiderKey::Caller(call.clone()),
            None => RiderKey::Passenger {
                trip_id: trip.trip_id.clone(),
                start_ts: trip.start_ts,
                taxi_id: trip.taxi_id.clone(),
            },
        }
    }

    /// Phone number by the scheme in the module documentation.
    ///
    /// # Errors
    /// An id outside the ranges the scheme can encode uniquely.
    pub fn phone(&self) -> anyhow::Result<String> {
        match self {
            RiderKey::Caller(call) => {
                if call.is_empty() || call.len() > 8 || !call.bytes().all(|b| b.is_ascii_digit()) {
                    bail!("origin_call {call:?} is not 1 to 8 digits");
                }
                Ok(format!("+3512{call:0>8}"))
            }
            RiderKey::Passenger {
                trip_id,
                start_ts,
                taxi_id,
            } => {
                let offset_s = start_ts - RIDER_EPOCH_TS;
                let suffix = taxi_id
                    .strip_prefix("20000")
                    .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()));
                let (true, Some(suffix)) = ((0..100_000).contains(&offset_s), suffix) else {
                    bail!(
                        "trip {trip_id} (taxi {taxi_id}, start {start_ts}) is outside the \
                         synthetic phone scheme, which needs a taxi id 20000xxx and a start \
                         within 100000 s of 2013-07-01T00:00:00Z"
                    );
                };
                Ok(format!("+3513{offset_s:05}{suffix}"))
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            RiderKey::Caller(call) => format!("Porto caller {call}"),
            RiderKey::Passenger { trip_id, .. } => format!("Porto rider of trip {trip_id}"),
        }
    }
}

/// Server ids of the replay's accounts.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// Driver id by taxi id.
    pub drivers: HashMap<String, String>,
    /// Rider id by trip index of the dataset.
    pub riders: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Account {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExistingDriver {
    id: String,
    presence: Presence,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Presence {
    online: bool,
    active_trip_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TripStatus {
    status: String,
}

const DRIVER_BY_PHONE: &str = "query driverByPhone($phone: String!) {
  driverByPhone(phone: $phone) { id presence { online activeTripId } }
}";
const REGISTER_DRIVER: &str = "mutation registerDriver($input: RegisterDriverInput!) {
  registerDriver(input: $input) { id }
}";
const RIDER_BY_PHONE: &str = "query riderByPhone($phone: String!) {
  riderByPhone(phone: $phone) { id }
}";
const REGISTER_RIDER: &str = "mutation registerRider($input: RegisterRiderInput!) {
  registerRider(input: $input) { id }
}";
const TRIP_STATUS: &str = "query trip($id: ID!) { trip(id: $id) { status } }";
const CANCEL_TRIP: &str =
    "mutation cancelTrip($tripId: ID!, $actor: ActorInput!, $reason: String!) {
  cancelTrip(tripId: $tripId, actor: $actor, reason: $reason) { id }
}";
const COMPLETE_TRIP: &str = "mutation completeTrip($tripId: ID!, $driverId: ID!) {
  completeTrip(tripId: $tripId, driverId: $driverId) { id }
}";
const GO_OFFLINE: &str =
    "mutation goOffline($driverId: ID!) { goOffline(driverId: $driverId) { id } }";

/// Registers or reuses a driver for every taxi and a rider for every trip of `data`.
/// Reused drivers are reset to offline without an active trip.
///
/// # Errors
/// Any failed call: without its accounts the replay cannot run.
pub async fn prepare(
    api: &Api,
    data: &Dataset,
    stats: &Stats,
    concurrency: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Accounts> {
    let taxi_ids: std::collections::BTreeSet<&str> =
        data.trips.iter().map(|t| t.taxi_id.as_str()).collect();
    let rider_keys: Vec<RiderKey> = data.trips.iter().map(RiderKey::of_trip).collect();
    let unique_riders: std::collections::BTreeSet<&RiderKey> = rider_keys.iter().collect();
    progress.set_length((taxi_ids.len() + unique_riders.len()) as u64);

    let drivers: HashMap<String, String> = stream::iter(taxi_ids)
        .map(|taxi_id| async move {
            let id = ensure_driver(api, taxi_id, stats).await?;
            progress.inc(1);
            anyhow::Ok((taxi_id.to_owned(), id))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;

    let rider_ids: BTreeMap<&RiderKey, String> = stream::iter(unique_riders)
        .map(|key| async move {
            let id = ensure_rider(api, key, stats).await?;
            progress.inc(1);
            anyhow::Ok((key, id))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let riders = rider_keys
        .iter()
        .map(|key| rider_ids[key].clone())
        .collect();
    Ok(Accounts { drivers, riders })
}

async fn ensure_driver(api: &Api, taxi_id: &str, stats: &Stats) -> anyhow::Result<String> {
    let phone = driver_phone(taxi_id)?;
    let context = || format!("cannot set up the driver of taxi {taxi_id} ({phone})");
    let existing: Option<ExistingDriver> = api
        .call("driverByPhone", DRIVER_BY_PHONE, json!({ "phone": phone }))
        .await
        .with_context(context)?;
    let Some(existing) = existing else {
        let input = json!({
            "name": driver_name(taxi_id),
            "phone": phone,
            "vehicle": {
                "type": "CAB",
                "plate": driver_plate(taxi_id),
                "description": "Synthetic Porto taxi of the data replay",
            },
        });
        let created: Account = api
            .call("registerDriver", REGISTER_DRIVER, json!({ "input": input }))
            .await
            .with_context(context)?;
        stats.count(|c| c.drivers_registered += 1);
        return Ok(created.id);
    };
    stats.count(|c| c.drivers_reused += 1);
    reset_driver(api, &existing, stats)
        .await
        .with_context(context)?;
    Ok(existing.id)
}

/// Closes the active trip a driver kept from an interrupted run and takes the driver offline,
/// so every taxi starts the replay free and offline.
async fn reset_driver(api: &Api, driver: &ExistingDriver, stats: &Stats) -> anyhow::Result<()> {
    if let Some(trip_id) = &driver.presence.active_trip_id {
        let trip: TripStatus = api
            .call("trip", TRIP_STATUS, json!({ "id": trip_id }))
            .await?;
        // A STARTED trip cannot be cancelled, so it is completed instead.
        if trip.status == "STARTED" {
            let variables = json!({ "tripId": trip_id, "driverId": driver.id });
            let _: Account = api.call("completeTrip", COMPLETE_TRIP, variables).await?;
        } else {
            let variables = json!({
                "tripId": trip_id,
                "actor": { "role": "DRIVER", "id": driver.id },
                "reason": "left over from an interrupted replay",
            });
            let _: Account = api.call("cancelTrip", CANCEL_TRIP, variables).await?;
        }
        stats.count(|c| c.leftover_trips_closed += 1);
    }
    if driver.presence.online {
        let _: Account = api
            .call("goOffline", GO_OFFLINE, json!({ "driverId": driver.id }))
            .await?;
    }
    Ok(())
}

async fn ensure_rider(api: &Api, key: &RiderKey, stats: &Stats) -> anyhow::Result<String> {
    let phone = key.phone()?;
    let context = || format!("cannot set up rider {} ({phone})", key.name());
    let existing: Option<Account> = api
        .call("riderByPhone", RIDER_BY_PHONE, json!({ "phone": phone }))
        .await
        .with_context(context)?;
    if let Some(existing) = existing {
        stats.count(|c| c.riders_reused += 1);
        return Ok(existing.id);
    }
    let input = json!({ "name": key.name(), "phone": phone });
    let created: Account = api
        .call("registerRider", REGISTER_RIDER, json!({ "input": input }))
        .await
        .with_context(context)?;
    stats.count(|c| c.riders_registered += 1);
    Ok(created.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::data::CallType;

    fn trip(trip_id: &str, taxi_id: &str, start_ts: i64, origin_call: Option<&str>) -> Trip {
        Trip {
            trip_id: trip_id.into(),
            taxi_id: taxi_id.into(),
            call_type: if origin_call.is_some() {
                CallType::Dispatch
            } else {
                CallType::Street
            },
            origin_call: origin_call.map(Into::into),
            start_ts,
            end_ts: start_ts,
            pickup: None,
            dropoff: None,
        }
    }

    #[test]
    fn driver_identity_from_taxi_id() {
        assert_eq!(driver_phone("20000380").unwrap(), "+351920000380");
        assert_eq!(driver_plate("20000380"), "PT20000380");
        assert!(driver_phone("2000038").is_err());
        assert!(driver_phone("2000038x").is_err());
    }

    #[test]
    fn caller_phone_padded() {
        let key = RiderKey::of_trip(&trip("1", "20000353", 1_372_665_673, Some("2002")));
        assert_eq!(key, RiderKey::Caller("2002".into()));
        assert_eq!(key.phone().unwrap(), "+351200002002");
        assert!(RiderKey::Caller("123456789".into()).phone().is_err());
        assert!(RiderKey::Caller("12a".into()).phone().is_err());
    }

    #[test]
    fn passenger_phone_from_start_and_taxi() {
        let key = RiderKey::of_trip(&trip(
            "1372636853620000380",
            "20000380",
            1_372_636_853,
            None,
        ));
        assert_eq!(key.phone().unwrap(), "+351300053380");
        let late = RiderKey::of_trip(&trip("x", "20000380", 1_372_636_800 + 36_337, None));
        assert_eq!(late.phone().unwrap(), "+351336337380");
    }

    #[test]
    fn passenger_phone_rejects_unencodable() {
        let before_epoch = RiderKey::of_trip(&trip("x", "20000380", 1_372_636_799, None));
        assert!(before_epoch.phone().is_err());
        let too_late = RiderKey::of_trip(&trip("x", "20000380", 1_372_636_800 + 100_000, None));
        assert!(too_late.phone().is_err());
        let other_fleet = RiderKey::of_trip(&trip("x", "30000380", 1_372_636_853, None));
        assert!(other_fleet.phone().is_err());
    }

    #[test]
    fn phones_are_valid_e164() {
        let phones = [
            driver_phone("20000380").unwrap(),
            RiderKey::Caller("63882".into()).phone().unwrap(),
            RiderKey::of_trip(&trip("x", "20000001", 1_372_636_853, None))
                .phone()
                .unwrap(),
        ];
        for phone in phones {
            assert_eq!(crate::accounts::parse_e164(&phone, "phone").unwrap(), phone);
        }
    }
}
