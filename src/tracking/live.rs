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
use crate::tracking::rules::{Fix, FixRules, FixVerdict, judge_fix};

/// What the server keeps in memory about one driver.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDriver {
    pub driver_id: i64,
    pub vehicle_type: VehicleType,
    pub online: bool,
    pub fix: Option<Fix>,
    /// Trip the driver holds in an active state, if any.
    pub active_trip_id: Option<i64>,
    /// Since when the driver has been online without a trip.
    pub available_since: Option<DateTime<Utc>>,
    pub rating_sum: i64,
    pub rating_count: i64,
    pub offers_accepted: i64,
    pub offers_rejected: i64,
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

#[derive(Debug, Default)]
struct Registry {
    drivers: HashMap<i64, LiveDriver>,
    /// Online drivers with a position.
    index: SpatialIndex<i64>,
}

impl Registry {
    fn reindex(&mut self, driver_id: i64) {
        let Some(driver) = self.drivers.get(&driver_id) else {
            self.index.remove(driver_id);
            return;
        };
        match (driver.online, driver.fix) {
            (true, Some(fix)) => self.index.upsert(driver_id, fix.position),
            _ => {
                self.index.remove(driver_id);
            }
        }
    }
}

/// Thread-safe registry of live drivers.
#[derive(Debug, Default)]
pub struct LiveDrivers {
    registry: RwLock<Registry>,
}

impl LiveDrivers {
    /// Builds the registry from stored drivers in one pass.
    pub fn from_drivers(drivers: impl IntoIterator<Item = LiveDriver>) -> Self {
        let drivers: HashMap<i64, LiveDriver> =
            drivers.into_iter().map(|d| (d.driver_id, d)).collect();
        let indexed = drivers
            .values()
            .filter(|d| d.online)
            .filter_map(|d| d.fix.map(|fix| (d.driver_id, fix.position)));
        let index = SpatialIndex::bulk_load(indexed);
        Self {
            registry: RwLock::new(Registry { drivers, index }),
        }
    }

    pub fn get(&self, driver_id: i64) -> Option<LiveDriver> {
        self.registry.read().drivers.get(&driver_id).cloned()
    }

    /// Adds or replaces a driver.
    pub fn insert(&self, driver: LiveDriver) {
        let mut registry = self.registry.write();
        let id = driver.driver_id;
        registry.drivers.insert(id, driver);
        registry.reindex(id);
    }

    /// Applies `change` to a driver and keeps the index in step. Returns the driver after the
    /// change, or `None` for an unknown driver.
    pub fn update(
        &self,
        driver_id: i64,
        change: impl FnOnce(&mut LiveDriver),
    ) -> Option<LiveDriver> {
        let mut registry = self.registry.write();
        let driver = registry.drivers.get_mut(&driver_id)?;
        change(driver);
        let after = driver.clone();
        registry.reindex(driver_id);
        Some(after)
    }

    /// Judges `fix` against the driver's last one without changing anything.
    pub fn judge(&self, driver_id: i64, fix: &Fix, rules: &FixRules) -> Option<FixVerdict> {
        let registry = self.registry.read();
        let driver = registry.drivers.get(&driver_id)?;
        Some(judge_fix(driver.fix.as_ref(), fix, rules))
    }

    /// Stores `fix` if it is still newer than the driver's last one; returns whether it did.
    /// A concurrent newer fix may have landed since [`LiveDrivers::judge`].
    pub fn apply_fix(&self, driver_id: i64, fix: Fix) -> bool {
        let mut registry = self.registry.write();
        let Some(driver) = registry.drivers.get_mut(&driver_id) else {
            return false;
        };
        if driver
            .fix
            .is_some_and(|last| last.recorded_at >= fix.recorded_at)
        {
            return false;
        }
        driver.fix = Some(fix);
        registry.reindex(driver_id);
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
        for (driver_id, distance_m) in registry.index.nearest_within(center, radius_m) {
            let Some(driver) = registry.drivers.get(&driver_id) else {
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
