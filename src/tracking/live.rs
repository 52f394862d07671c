//! The live registry: every known driver's online state, last fix, active trip and ranking
//! counters, with a spatial index of the online drivers that have a position.
//!
//! Storage is the source of truth and this registry is rebuilt from it at start. One
//! `parking_lot::RwLock` guards the map and the index together so they never disagree; it is
//! never held across an `.await`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::enums::VehicleType;
use parking_lot::RwLock;

use crate::spatial::SpatialIndex;
use crate::tracking::rules::Fix;

/// In-memory state of one driver.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDriver {
    pub driver_id: i64,
    pub vehicle_type: VehicleType,
    pub online: bool,
    pub fix: Option<Fix>,
    /// Trip the driver has in an active state, if any.
    pub active_trip_id: Option<i64>,
    /// Since when the driver has been online without a trip.
    pub available_since: Option<DateTime<Utc>>,
    // The four counters are `u32` rather than the stored `i64`: 16 bytes less per driver in
    // a record kept for every driver, and 4 billion ratings or offers is out of reach.
    /// Sum of the stars of every rating received.
    pub rating_sum: u32,
    pub rating_count: u32,
    pub offers_accepted: u32,
    pub offers_rejected: u32,
    /// Id of the latest trip event that bound this driver to a trip or released it, or 0
    /// before the first. An older event applied late must not undo a newer one.
    pub binding_event_id: i64,
}

impl LiveDriver {
    /// A driver that was just registered: offline, no position, no history.
    pub fn new(driver_id: i64, vehicle_type: VehicleType) -> Self {
        Self {
            driver_id,
            vehicle_type,
            online: false,
            fix: None,
            active_trip_id: None,
            available_since: None,
            rating_sum: 0,
            rating_count: 0,
            offers_accepted: 0,
            offers_rejected: 0,
            binding_event_id: 0,
        }
    }

    /// Seconds since the last fix, or `None` without one. Never negative, even when the
    /// device clock runs ahead of the server's.
    pub fn location_age_s(&self, now: DateTime<Utc>) -> Option<f64> {
        self.fix
            .map(|fix| (now - fix.recorded_at).as_seconds_f64().max(0.0))
    }
}

/// Drivers in a dense vector with a map from id to slot: at a million drivers this costs
/// about a third of a `HashMap<i64, LiveDriver>`, whose power-of-two table leaves up to half of
/// its large entries empty.
#[derive(Debug, Default)]
struct Registry {
    drivers: Vec<LiveDriver>,
    slots: HashMap<i64, u32>,
    /// Online drivers with a position, each at its `fix.position`, keyed by slot in
    /// `drivers` rather than by id, which saves the walk of `nearbyDrivers` a look-up in
    /// `slots` per candidate. A driver keeps its slot until `merge_snapshot` rebuilds the
    /// whole registry, index included.
    index: SpatialIndex<u32>,
    /// Count of `insert` and `update` calls, so a reader of storage can tell whether a local
    /// change landed while it read (see [`LiveDrivers::merge_stored`]).
    generation: u64,
}

/// Returns the later of two fixes by device time.
fn newer_fix(a: Option<Fix>, b: Option<Fix>) -> Option<Fix> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.recorded_at > a.recorded_at { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Returns where a driver belongs in the index: at its fix when online, nowhere otherwise.
fn indexed_position(driver: &LiveDriver) -> Option<crate::geometry::LatLng> {
    driver.fix.filter(|_| driver.online).map(|fix| fix.position)
}

impl Registry {
    fn get(&self, driver_id: i64) -> Option<&LiveDriver> {
        let slot = *self.slots.get(&driver_id)?;
        self.drivers.get(slot as usize)
    }

    /// Moves a driver in the index from where it was indexed before a change to where it
    /// belongs after it.
    fn reindex(
        &mut self,
        slot: u32,
        before: Option<crate::geometry::LatLng>,
        after: Option<crate::geometry::LatLng>,
    ) {
        match (before, after) {
            (Some(from), Some(to)) if from != to => self.index.relocate(slot, from, to),
            (Some(from), None) => {
                self.index.remove(slot, from);
            }
            (None, Some(to)) => self.index.insert(slot, to),
            _ => {}
        }
    }
}

/// Thread-safe registry of live drivers.
#[derive(Debug, Default)]
pub struct LiveDrivers {
    registry: RwLock<Registry>,
}

impl LiveDrivers {
    /// Builds the registry from stored drivers in one pass. A driver id that appears twice
    /// keeps its last entry.
    pub fn from_drivers(drivers: impl IntoIterator<Item = LiveDriver>) -> Self {
        Self::from_vec(drivers.into_iter().collect())
    }

    /// Builds the registry around `drivers` without copying them. A driver id that appears
    /// twice keeps its last entry; the earlier one stays in the vector, unreachable.
    pub fn from_vec(mut drivers: Vec<LiveDriver>) -> Self {
        drivers.shrink_to_fit();
        let mut slots = HashMap::with_capacity(drivers.len());
        for (slot, driver) in drivers.iter().enumerate() {
            slots.insert(driver.driver_id, slot as u32);
        }
        let index = SpatialIndex::bulk_load(drivers.iter().enumerate().filter_map(|(slot, d)| {
            let current = slots.get(&d.driver_id) == Some(&(slot as u32));
            indexed_position(d)
                .filter(|_| current)
                .map(|p| (slot as u32, p))
        }));
        Self {
            registry: RwLock::new(Registry {
                drivers,
                slots,
                index,
                generation: 0,
            }),
        }
    }

    pub fn get(&self, driver_id: i64) -> Option<LiveDriver> {
        self.registry.read().get(driver_id).cloned()
    }

    /// Adds or replaces a driver.
    pub fn insert(&self, driver: LiveDriver) {
        let mut registry = self.registry.write();
        let id = driver.driver_id;
        let after = indexed_position(&driver);
        let (slot, before) = match registry.slots.get(&id) {
            Some(&slot) => {
                let old = std::mem::replace(&mut registry.drivers[slot as usize], driver);
                (slot, indexed_position(&old))
            }
            None => {
                let slot = registry.drivers.len() as u32;
                registry.slots.insert(id, slot);
                registry.drivers.push(driver);
                (slot, None)
            }
        };
        registry.reindex(slot, before, after);
        registry.generation += 1;
    }

    /// Applies `change` to a driver and keeps the index in step. Returns the driver after the
    /// change, or `None` for an unknown driver.
    pub fn update(
        &self,
        driver_id: i64,
        change: impl FnOnce(&mut LiveDriver),
    ) -> Option<LiveDriver> {
        let mut registry = self.registry.write();
        let slot = *registry.slots.get(&driver_id)?;
        let driver = &mut registry.drivers[slot as usize];
        let before = indexed_position(driver);
        change(driver);
        let after_driver = driver.clone();
        registry.reindex(slot, before, indexed_position(&after_driver));
        registry.generation += 1;
        Some(after_driver)
    }

    /// Count of local changes so far; read it before reading a driver from storage and pass
    /// it to [`Self::merge_stored`].
    pub fn generation(&self) -> u64 {
        self.registry.read().generation
    }

    /// Applies a driver as storage has it, read after [`Self::generation`] returned
    /// `seen_generation`: presence, vehicle and counters from storage, the newer of the two
    /// fixes, and the local trip binding, which trip events order. Returns `false`, changing
    /// nothing, if a local change landed since `seen_generation`: the read may predate it, so
    /// the caller reads again.
    pub fn merge_stored(&self, stored: LiveDriver, seen_generation: u64) -> bool {
        let mut registry = self.registry.write();
        if registry.generation != seen_generation {
            return false;
        }
        let id = stored.driver_id;
        let Some(&slot) = registry.slots.get(&id) else {
            drop(registry);
            self.insert(stored);
            return true;
        };
        let driver = &mut registry.drivers[slot as usize];
        let before = indexed_position(driver);
        let mut merged = LiveDriver {
            fix: newer_fix(driver.fix, stored.fix),
            active_trip_id: driver.active_trip_id,
            binding_event_id: driver.binding_event_id,
            ..stored
        };
        if merged.online == driver.online {
            // Storage keeps the time of going online; the local value may be later, set when
            // a trip released the driver.
            merged.available_since = driver.available_since;
        }
        *driver = merged;
        let after = indexed_position(driver);
        registry.reindex(slot, before, after);
        registry.generation += 1;
        true
    }

    /// Replaces the registry with `snapshot`, read from storage after every trip event up to
    /// `last_event_id` was stored. Local state newer than the snapshot stays: a newer fix, a
    /// trip binding from a later event, and drivers the snapshot lacks.
    pub fn merge_snapshot(&self, snapshot: LiveDrivers, last_event_id: i64) {
        let mut drivers = std::mem::take(&mut snapshot.registry.write().drivers);
        let mut registry = self.registry.write();
        let mut seen = std::collections::HashSet::with_capacity(drivers.len());
        for stored in &mut drivers {
            seen.insert(stored.driver_id);
            stored.binding_event_id = stored.binding_event_id.max(last_event_id);
            let Some(local) = registry.get(stored.driver_id) else {
                continue;
            };
            stored.fix = newer_fix(local.fix, stored.fix);
            if local.binding_event_id > last_event_id {
                stored.active_trip_id = local.active_trip_id;
                stored.available_since = local.available_since;
                stored.binding_event_id = local.binding_event_id;
            }
        }
        drivers.extend(
            registry
                .drivers
                .iter()
                .filter(|d| !seen.contains(&d.driver_id))
                .cloned(),
        );
        let generation = registry.generation + 1;
        *registry = Self::from_vec(drivers).registry.into_inner();
        registry.generation = generation;
    }

    /// Stores `fix` if it is still newer than the driver's last one; returns whether it did.
    /// A concurrent newer fix may have landed since the caller judged it.
    pub fn apply_fix(&self, driver_id: i64, fix: Fix) -> bool {
        let mut registry = self.registry.write();
        let Some(&slot) = registry.slots.get(&driver_id) else {
            return false;
        };
        let driver = &mut registry.drivers[slot as usize];
        if driver
            .fix
            .is_some_and(|last| last.recorded_at >= fix.recorded_at)
        {
            return false;
        }
        let before = indexed_position(driver);
        driver.fix = Some(fix);
        let after = indexed_position(driver);
        registry.reindex(slot, before, after);
        true
    }

    /// Calls `visit` with indexed drivers within `radius_m` of `center`, nearest first, until
    /// it returns `false`. The read lock is held during the walk, so `visit` must be quick.
    pub fn walk_nearby(
        &self,
        center: crate::geometry::LatLng,
        radius_m: f64,
        mut visit: impl FnMut(&LiveDriver, f64) -> bool,
    ) {
        let registry = self.registry.read();
        for (slot, distance_m) in registry.index.nearest_within(center, radius_m) {
            let Some(driver) = registry.drivers.get(slot as usize) else {
                continue;
            };
            if !visit(driver, distance_m) {
                break;
            }
        }
    }

    /// Online drivers with a position.
    pub fn indexed_count(&self) -> usize {
        self.registry.read().index.len()
    }

    pub fn driver_count(&self) -> usize {
        self.registry.read().drivers.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::geometry::LatLng;

    fn online_at(id: i64, lat: f64) -> LiveDriver {
        let mut driver = LiveDriver::new(id, VehicleType::Moto);
        driver.online = true;
        driver.fix = Some(Fix {
            position: LatLng { lat, lng: 0.5 },
            heading_deg: None,
            speed_mps: None,
            accuracy_m: None,
            recorded_at: DateTime::UNIX_EPOCH + TimeDelta::seconds(id),
        });
        driver
    }

    fn nearby_ids(live: &LiveDrivers, lat: f64) -> Vec<i64> {
        let mut ids = Vec::new();
        live.walk_nearby(LatLng { lat, lng: 0.5 }, 1_000.0, |d, _| {
            ids.push(d.driver_id);
            true
        });
        ids
    }

    #[test]
    fn index_follows_online_and_fix() {
        let live = LiveDrivers::from_drivers([online_at(1, 10.0), online_at(2, 20.0)]);
        assert_eq!(live.indexed_count(), 2);
        live.update(1, |d| d.online = false);
        assert!(nearby_ids(&live, 10.0).is_empty());
        live.update(1, |d| d.online = true);
        assert_eq!(nearby_ids(&live, 10.0), vec![1]);

        let mut moved = live.get(2).unwrap().fix.unwrap();
        moved.position.lat = 30.0;
        moved.recorded_at += TimeDelta::seconds(10);
        assert!(live.apply_fix(2, moved));
        assert!(nearby_ids(&live, 20.0).is_empty());
        assert_eq!(nearby_ids(&live, 30.0), vec![2]);
        assert!(!live.apply_fix(2, moved), "an equal fix is not newer");
    }

    #[test]
    fn merge_stored_keeps_newer_local_state() {
        let live = LiveDrivers::from_drivers([online_at(1, 10.0)]);
        live.update(1, |d| {
            d.active_trip_id = Some(9);
            d.binding_event_id = 5;
        });
        let seen = live.generation();
        let mut stored = online_at(1, 20.0);
        stored.fix.as_mut().unwrap().recorded_at = DateTime::UNIX_EPOCH;
        stored.online = false;
        stored.offers_accepted = 3;
        assert!(live.merge_stored(stored.clone(), seen));
        let merged = live.get(1).unwrap();
        assert!(!merged.online);
        assert_eq!(merged.offers_accepted, 3);
        assert_eq!(merged.active_trip_id, Some(9));
        assert_eq!(
            merged.fix.unwrap().position.lat,
            10.0,
            "the local fix is newer"
        );
        assert_eq!(live.indexed_count(), 0);

        live.update(1, |d| d.online = true);
        assert!(
            !live.merge_stored(stored, seen),
            "a local change since the read wins"
        );
        assert!(live.get(1).unwrap().online);
    }

    #[test]
    fn merge_snapshot_keeps_later_bindings_and_new_drivers() {
        let live = LiveDrivers::from_drivers([online_at(1, 10.0), online_at(2, 20.0)]);
        live.update(1, |d| {
            d.active_trip_id = Some(7);
            d.binding_event_id = 50;
        });
        live.insert(online_at(3, 30.0));
        let mut one = online_at(1, 11.0);
        one.fix.as_mut().unwrap().recorded_at += TimeDelta::seconds(60);
        let mut two = online_at(2, 20.0);
        two.active_trip_id = Some(8);
        live.merge_snapshot(LiveDrivers::from_drivers([one, two]), 40);

        let one = live.get(1).unwrap();
        assert_eq!(
            one.active_trip_id,
            Some(7),
            "event 50 is after the snapshot"
        );
        assert_eq!(
            one.fix.unwrap().position.lat,
            11.0,
            "the stored fix is newer"
        );
        let two = live.get(2).unwrap();
        assert_eq!((two.active_trip_id, two.binding_event_id), (Some(8), 40));
        assert!(live.get(3).is_some(), "registered after the snapshot");
        assert_eq!(nearby_ids(&live, 11.0), vec![1]);
        assert_eq!(live.driver_count(), 3);
    }

    #[test]
    fn insert_replaces_and_reindexes() {
        let live = LiveDrivers::from_drivers([online_at(1, 10.0)]);
        live.insert(online_at(1, 40.0));
        live.insert(online_at(3, 10.0));
        assert_eq!(live.driver_count(), 2);
        assert_eq!(live.indexed_count(), 2);
        assert_eq!(nearby_ids(&live, 10.0), vec![3]);
        assert_eq!(nearby_ids(&live, 40.0), vec![1]);
        assert!(live.get(2).is_none());
    }
}
