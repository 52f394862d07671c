//! Matching: which online drivers can take a pickup, and which open requests a driver can
//! take. The spatial search is here, the ordering is in [`crate::ranking`].
//!
//! `nearby_drivers` walks the live index nearest first and keeps drivers that are online,
//! free, fresh and of a requested vehicle type, up to the candidate pool size. The pool is
//! scored and the best `limit` returned. When the first radius finds nobody, the search widens
//! along the configured ladder.

pub mod eta;
pub mod requests;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use entity::enums::VehicleType;

pub use eta::EtaModel;
pub use requests::{OpenRequest, OpenRequests};

use crate::error::{ServiceError, ServiceResult};
use crate::geometry::{BoundingBox, LatLng, validate_lat_lng};
use crate::ranking::{CandidateFeatures, RankingConfig, ScoreBreakdown, score};
use crate::tracking::LiveDrivers;

/// Limits and models of the search.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchConfig {
    /// Radii in meters tried in order when the client does not fix one.
    pub ladder_m: Vec<f64>,
    pub max_radius_m: f64,
    pub default_limit: u32,
    pub max_limit: u32,
    /// Eligible drivers scored per query, nearest first.
    pub candidate_pool: u32,
    /// Seconds after which a driver's fix is too old to match.
    pub stale_after_s: u32,
    pub scheduled_lead_s: u32,
    pub service_area: Option<BoundingBox>,
    pub eta: EtaModel,
    pub ranking: RankingConfig,
}

/// Arguments of a driver search, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyQuery {
    pub lat: f64,
    pub lng: f64,
    /// Search only this radius (and wider ladder steps if `widen`); the ladder when absent.
    pub radius_m: Option<f64>,
    /// Allowed vehicle types; all when absent.
    pub vehicle_types: Option<Vec<VehicleType>>,
    pub limit: Option<i32>,
    /// Narrows the staleness window for this query, in seconds.
    pub max_location_age_s: Option<i32>,
    /// Whether an empty radius may widen to the next ladder step.
    pub widen: bool,
}

/// One ranked driver.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedDriver {
    pub driver_id: i64,
    pub vehicle_type: VehicleType,
    pub position: LatLng,
    pub distance_m: f64,
    pub eta_s: f64,
    pub location_age_s: f64,
    pub score: ScoreBreakdown,
}

/// Result of a driver search.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyDrivers {
    pub drivers: Vec<RankedDriver>,
    /// Radius of the last search step, in meters.
    pub radius_m: f64,
    /// Every radius tried, in order.
    pub radii_tried_m: Vec<f64>,
    /// Eligible drivers the ranking scored in the last step.
    pub candidates_scored: usize,
}

/// One open request near a driver.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyRequest {
    pub request: OpenRequest,
    pub distance_m: f64,
    pub eta_s: f64,
}

/// The matching service.
#[derive(Debug, Clone)]
pub struct Matcher {
    live: Arc<LiveDrivers>,
    requests: Arc<OpenRequests>,
    config: Arc<MatchConfig>,
}

impl Matcher {
    pub fn new(live: Arc<LiveDrivers>, requests: Arc<OpenRequests>, config: MatchConfig) -> Self {
        Self {
            live,
            requests,
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    /// Trips waiting for a driver.
    pub fn open_request_count(&self) -> usize {
        self.requests.len()
    }

    /// Ranks the drivers who can pick up at a point.
    ///
    /// # Errors
    /// `InvalidInput` for a bad point, a radius outside 1..=max, a limit outside 1..=max, a
    /// location age outside 1..=staleness window, or an empty vehicle type list.
    pub fn nearby_drivers(
        &self,
        query: &NearbyQuery,
        now: DateTime<Utc>,
    ) -> ServiceResult<NearbyDrivers> {
        let config = &self.config;
        let center = validate_lat_lng(query.lat, query.lng, config.service_area.as_ref())
            .map_err(|e| ServiceError::coordinate("near", e))?;
        let limit = self.check_limit(query.limit)?;
        let max_age_s = match query.max_location_age_s {
            None => config.stale_after_s,
            Some(age) if age >= 1 && age as u32 <= config.stale_after_s => age as u32,
            Some(age) => {
                return Err(ServiceError::invalid(
                    "maxLocationAgeSeconds",
                    format!(
                        "{age} is outside 1..={} (the staleness window)",
                        config.stale_after_s
                    ),
                ));
            }
        };
        let vehicle_types = match &query.vehicle_types {
            Some(types) if types.is_empty() => {
                return Err(ServiceError::invalid(
                    "vehicleTypes",
                    "list is empty; give at least one type or omit the argument",
                ));
            }
            Some(types) => types.clone(),
            None => vec![VehicleType::Moto, VehicleType::Cab],
        };
        let radii = self.radii(query.radius_m, query.widen)?;

        let mut tried = Vec::with_capacity(radii.len());
        let mut last = (Vec::new(), 0);
        for radius_m in radii {
            tried.push(radius_m);
            last = self.rank_within(center, radius_m, &vehicle_types, max_age_s, limit, now);
            if !last.0.is_empty() {
                break;
            }
        }
        let (drivers, candidates_scored) = last;
        Ok(NearbyDrivers {
            drivers,
            radius_m: *tried.last().unwrap_or(&0.0),
            radii_tried_m: tried,
            candidates_scored,
        })
    }

    fn check_limit(&self, limit: Option<i32>) -> ServiceResult<usize> {
        let max = self.config.max_limit;
        match limit {
            None => Ok(self.config.default_limit as usize),
            Some(n) if n >= 1 && n as u32 <= max => Ok(n as usize),
            Some(n) => Err(ServiceError::invalid(
                "limit",
                format!("{n} is outside 1..={max}"),
            )),
        }
    }

    fn check_radius(&self, radius_m: f64, field: &str) -> ServiceResult<f64> {
        let max = self.config.max_radius_m;
        if radius_m.is_finite() && (1.0..=max).contains(&radius_m) {
            Ok(radius_m)
        } else {
            Err(ServiceError::invalid(
                field,
                format!("{radius_m} m is outside 1..={max} m"),
            ))
        }
    }

    /// The radii to try: the ladder, or the client's radius followed by wider ladder steps.
    fn radii(&self, radius_m: Option<f64>, widen: bool) -> ServiceResult<Vec<f64>> {
        let Some(radius_m) = radius_m else {
            return Ok(self.config.ladder_m.clone());
        };
        let radius_m = self.check_radius(radius_m, "radiusMeters")?;
        let mut radii = vec![radius_m];
        if widen {
            radii.extend(
                self.config
                    .ladder_m
                    .iter()
                    .copied()
                    .filter(|r| *r > radius_m),
            );
        }
        Ok(radii)
    }

    /// Collects up to `candidate_pool` eligible drivers within `radius_m`, scores them and
    /// keeps the best `limit`. Returns them with the number scored.
    fn rank_within(
        &self,
        center: LatLng,
        radius_m: f64,
        vehicle_types: &[VehicleType],
        max_age_s: u32,
        limit: usize,
        now: DateTime<Utc>,
    ) -> (Vec<RankedDriver>, usize) {
        let config = &self.config;
        let pool = config.candidate_pool as usize;
        let mut candidates = Vec::with_capacity(pool.min(64));
        self.live
            .walk_nearby(center, radius_m, |driver, distance_m| {
                let Some(fix) = driver.fix else {
                    return true;
                };
                let age_s = (now - fix.recorded_at).as_seconds_f64().max(0.0);
                let eligible = driver.online
                    && driver.active_trip_id.is_none()
                    && vehicle_types.contains(&driver.vehicle_type)
                    && age_s <= f64::from(max_age_s);
                if eligible {
                    let eta_s = config.eta.eta_s(distance_m, driver.vehicle_type);
                    let idle_s = driver
                        .available_since
                        .map_or(0.0, |since| (now - since).as_seconds_f64().max(0.0));
                    let features = CandidateFeatures {
                        distance_m,
                        eta_s,
                        location_age_s: age_s,
                        max_location_age_s: f64::from(max_age_s),
                        rating_sum: i64::from(driver.rating_sum),
                        rating_count: i64::from(driver.rating_count),
                        offers_accepted: i64::from(driver.offers_accepted),
                        offers_rejected: i64::from(driver.offers_rejected),
                        idle_s,
                    };
                    candidates.push(RankedDriver {
                        driver_id: driver.driver_id,
                        vehicle_type: driver.vehicle_type,
                        position: fix.position,
                        distance_m,
                        eta_s,
                        location_age_s: age_s,
                        score: score(&features, &config.ranking),
                    });
                }
                candidates.len() < pool
            });
        let scored = candidates.len();
        candidates.sort_by(|a, b| {
            b.score
                .total
                .total_cmp(&a.score.total)
                .then(a.distance_m.total_cmp(&b.distance_m))
                .then(a.driver_id.cmp(&b.driver_id))
        });
        candidates.truncate(limit);
        (candidates, scored)
    }

    /// Lists open requests near a driver that the driver's vehicle can serve, nearest first.
    ///
    /// # Errors
    /// `NotFound` for an unknown driver, `Conflict` when the driver is offline or has no
    /// position, `InvalidInput` for a bad radius or limit.
    pub fn nearby_requests(
        &self,
        driver_id: i64,
        radius_m: Option<f64>,
        limit: Option<i32>,
        now: DateTime<Utc>,
    ) -> ServiceResult<Vec<NearbyRequest>> {
        let radius_m = match radius_m {
            Some(r) => self.check_radius(r, "radiusMeters")?,
            None => *self.config.ladder_m.first().unwrap_or(&5_000.0),
        };
        let limit = self.check_limit(limit)?;
        let driver = self.live.get(driver_id).ok_or(ServiceError::NotFound {
            entity: "driver",
            id: driver_id,
        })?;
        let (true, Some(fix)) = (driver.online, driver.fix) else {
            return Err(ServiceError::Conflict(format!(
                "driver {driver_id} must be online with a known position to see requests"
            )));
        };
        let due_by = now + TimeDelta::seconds(i64::from(self.config.scheduled_lead_s));
        let found =
            self.requests
                .nearby(fix.position, radius_m, driver.vehicle_type, due_by, limit);
        Ok(found
            .into_iter()
            .map(|(request, distance_m)| NearbyRequest {
                request,
                distance_m,
                eta_s: self.config.eta.eta_s(distance_m, driver.vehicle_type),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
