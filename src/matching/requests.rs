//! Open trip requests, indexed by pickup point so drivers can see the requests near them.
//!
//! Holds trips in state REQUESTED only; the trip service adds and removes them as they change.
//! Rebuilt from storage at start.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::enums::VehicleType;
use parking_lot::RwLock;

use crate::geometry::LatLng;
use crate::spatial::SpatialIndex;

/// What the index keeps of an open request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenRequest {
    pub trip_id: i64,
    pub pickup: LatLng,
    pub vehicle_type: VehicleType,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub requested_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: HashMap<i64, OpenRequest>,
    index: SpatialIndex<i64>,
}

/// Thread-safe set of open requests.
#[derive(Debug, Default)]
pub struct OpenRequests {
    inner: RwLock<Inner>,
}

impl OpenRequests {
    pub fn from_requests(requests: impl IntoIterator<Item = OpenRequest>) -> Self {
        let requests: HashMap<i64, OpenRequest> =
            requests.into_iter().map(|r| (r.trip_id, r)).collect();
        let index = SpatialIndex::bulk_load(requests.values().map(|r| (r.trip_id, r.pickup)));
        Self {
            inner: RwLock::new(Inner { requests, index }),
        }
    }

    pub fn insert(&self, request: OpenRequest) {
        let mut inner = self.inner.write();
        if let Some(old) = inner.requests.insert(request.trip_id, request) {
            inner.index.remove(old.trip_id, old.pickup);
        }
        inner.index.insert(request.trip_id, request.pickup);
    }

    pub fn remove(&self, trip_id: i64) {
        let mut inner = self.inner.write();
        if let Some(old) = inner.requests.remove(&trip_id) {
            inner.index.remove(trip_id, old.pickup);
        }
    }

    /// Takes the contents of `other`, such as a fresh read from storage.
    pub fn replace_with(&self, other: OpenRequests) {
        *self.inner.write() = other.inner.into_inner();
    }

    pub fn len(&self) -> usize {
        self.inner.read().requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open requests within `radius_m` of `center` for `vehicle_type` that are due by
    /// `due_by` (unscheduled ones always are), nearest first, at most `limit`.
    pub fn nearby(
        &self,
        center: LatLng,
        radius_m: f64,
        vehicle_type: VehicleType,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> Vec<(OpenRequest, f64)> {
        let inner = self.inner.read();
        inner
            .index
            .nearest_within(center, radius_m)
            .filter_map(|(trip_id, distance_m)| {
                inner
                    .requests
                    .get(&trip_id)
                    .map(|request| (*request, distance_m))
            })
            .filter(|(request, _)| request.vehicle_type == vehicle_type)
            .filter(|(request, _)| request.scheduled_at.is_none_or(|at| at <= due_by))
            .take(limit)
            .collect()
    }
}
