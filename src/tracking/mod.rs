//! Driver presence and live positions: going online and offline, location updates with their
//! validation, and the rebuild of the live registry from storage at start.
//!
//! A location update is judged in memory first (stale or impossible jump), then written to
//! storage with a condition on the stored fix time, then applied in memory. Two concurrent
//! updates of one driver therefore end with the newer fix everywhere.

pub mod live;
pub mod rules;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use entity::{driver, driver_presence, location_history, trip, vehicle};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, TransactionTrait,
};
use tracing::{debug, instrument};

pub use live::{LiveDriver, LiveDrivers};
pub use rules::{Fix, FixRules, FixVerdict};

use crate::error::{ServiceError, ServiceResult};
use crate::events::{DriverLocationEvent, EventBus};
use crate::geometry::{BoundingBox, validate_lat_lng};
use crate::trips::state::ACTIVE_STATES;

/// A location fix as a client sends it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationInput {
    pub lat: f64,
    pub lng: f64,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
    /// Device time of the fix; the server time when absent.
    pub recorded_at: Option<DateTime<Utc>>,
}

/// What happened to one location update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateStatus {
    /// Stored, indexed and published.
    Accepted,
    /// Ignored because the driver already has a fix at least as recent.
    Stale,
    /// Ignored because reaching it from the last fix would be faster than possible.
    ImpossibleJump,
}

/// Result of one location update.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateOutcome {
    pub driver_id: i64,
    pub status: UpdateStatus,
    /// Why the update was ignored, for `Stale` and `ImpossibleJump`.
    pub message: Option<String>,
    /// Device time of the fix the driver now has.
    pub latest_recorded_at: Option<DateTime<Utc>>,
}

/// Limits and rules of location input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackingConfig {
    pub rules: FixRules,
    pub service_area: Option<BoundingBox>,
    /// Seconds a device time may run ahead of the server clock.
    pub max_clock_skew_s: i64,
    /// Oldest accepted device time, in seconds before now.
    pub max_fix_age_s: i64,
    /// Largest batch of updates in one call.
    pub max_batch: usize,
}

/// Presence and location service.
#[derive(Debug, Clone)]
pub struct Tracking {
    db: DatabaseConnection,
    live: Arc<LiveDrivers>,
    bus: EventBus,
    config: TrackingConfig,
}

impl Tracking {
    pub fn new(
        db: DatabaseConnection,
        live: Arc<LiveDrivers>,
        bus: EventBus,
        config: TrackingConfig,
    ) -> Self {
        Self {
            db,
            live,
            bus,
            config,
        }
    }

    pub fn live(&self) -> &Arc<LiveDrivers> {
        &self.live
    }

    pub fn config(&self) -> &TrackingConfig {
        &self.config
    }

    /// Validates a client fix. `field` prefixes the names in errors, such as `location`.
    ///
    /// # Errors
    /// `InvalidInput` for bad coordinates, a heading outside 0..360, a negative or absurd
    /// speed or accuracy, or a device time too far in the future or past.
    pub fn validate_fix(
        &self,
        input: &LocationInput,
        field: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<Fix> {
        let position = validate_lat_lng(input.lat, input.lng, self.config.service_area.as_ref())
            .map_err(|e| ServiceError::coordinate(field, e))?;
        check_optional(
            input.heading_deg,
            0.0,
            360.0,
            &format!("{field}.headingDeg"),
        )?;
        // 100 m/s (360 km/h) bounds any road vehicle, 10 km any usable accuracy.
        check_optional(input.speed_mps, 0.0, 100.0, &format!("{field}.speedMps"))?;
        check_optional(
            input.accuracy_m,
            0.0,
            10_000.0,
            &format!("{field}.accuracyMeters"),
        )?;
        let recorded_at = input.recorded_at.unwrap_or(now);
        if recorded_at > now + TimeDelta::seconds(self.config.max_clock_skew_s) {
            return Err(ServiceError::invalid(
                format!("{field}.recordedAt"),
                format!(
                    "{recorded_at} is more than {} s ahead of the server clock ({now}); \
                     check the device clock",
                    self.config.max_clock_skew_s
                ),
            ));
        }
        if recorded_at < now - TimeDelta::seconds(self.config.max_fix_age_s) {
            return Err(ServiceError::invalid(
                format!("{field}.recordedAt"),
                format!(
                    "{recorded_at} is more than {} s in the past; send current fixes only",
                    self.config.max_fix_age_s
                ),
            ));
        }
        Ok(Fix {
            position,
            heading_deg: input.heading_deg,
            speed_mps: input.speed_mps,
            accuracy_m: input.accuracy_m,
            recorded_at,
        })
    }

    /// Marks a driver online, with an optional first position.
    ///
    /// # Errors
    /// `NotFound` for an unknown driver, `InvalidInput` for a bad location.
    #[instrument(skip(self, location), fields(driver.id = driver_id))]
    pub async fn go_online(
        &self,
        driver_id: i64,
        location: Option<LocationInput>,
    ) -> ServiceResult<LiveDriver> {
        let now = Utc::now();
        let fix = location
            .map(|input| self.validate_fix(&input, "location", now))
            .transpose()?;
        let before = self.known_driver(driver_id)?;
        let available_since = match before.available_since {
            Some(since) if before.online => Some(since),
            _ if before.active_trip_id.is_some() => None,
            _ => Some(now),
        };
        let presence = driver_presence::ActiveModel {
            driver_id: Set(driver_id),
            online: Set(true),
            lat: Set(None),
            lng: Set(None),
            heading_deg: Set(None),
            speed_mps: Set(None),
            accuracy_m: Set(None),
            recorded_at: Set(None),
            available_since: Set(available_since),
            updated_at: Set(now),
        };
        driver_presence::Entity::insert(presence)
            .on_conflict(
                OnConflict::column(driver_presence::Column::DriverId)
                    .update_columns([
                        driver_presence::Column::Online,
                        driver_presence::Column::AvailableSince,
                        driver_presence::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        self.live.update(driver_id, |d| {
            d.online = true;
            d.available_since = available_since;
        });
        if let Some(fix) = fix {
            self.store_fix(driver_id, fix, now).await?;
        }
        debug!("driver online");
        self.known_driver(driver_id)
    }

    /// Marks a driver offline; it stops being matched at once.
    ///
    /// # Errors
    /// `NotFound` for an unknown driver, `Conflict` while the driver holds an active trip.
    #[instrument(skip(self), fields(driver.id = driver_id))]
    pub async fn go_offline(&self, driver_id: i64) -> ServiceResult<LiveDriver> {
        let before = self.known_driver(driver_id)?;
        if let Some(trip_id) = before.active_trip_id {
            return Err(ServiceError::Conflict(format!(
                "driver {driver_id} holds active trip {trip_id}; complete or cancel it before \
                 going offline"
            )));
        }
        driver_presence::Entity::update_many()
            .col_expr(driver_presence::Column::Online, Expr::value(false))
            .col_expr(
                driver_presence::Column::AvailableSince,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(driver_presence::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(driver_presence::Column::DriverId.eq(driver_id))
            .exec(&self.db)
            .await?;
        let after = self.live.update(driver_id, |d| {
            d.online = false;
            d.available_since = None;
        });
        debug!("driver offline");
        after.ok_or(ServiceError::NotFound {
            entity: "driver",
            id: driver_id,
        })
    }

    /// Applies one location update of an online driver.
    ///
    /// # Errors
    /// `InvalidInput` for a bad fix, `NotFound` for an unknown driver, `Conflict` for an
    /// offline driver. A stale fix or an impossible jump is not an error: the outcome says so.
    #[instrument(skip(self, input), fields(driver.id = driver_id))]
    pub async fn update_location(
        &self,
        driver_id: i64,
        input: &LocationInput,
        field: &str,
    ) -> ServiceResult<UpdateOutcome> {
        let now = Utc::now();
        let fix = self.validate_fix(input, field, now)?;
        let driver = self.known_driver(driver_id)?;
        if !driver.online {
            return Err(ServiceError::Conflict(format!(
                "driver {driver_id} is offline; call goOnline before sending locations"
            )));
        }
        self.store_fix(driver_id, fix, now).await
    }

    /// Applies many updates; each gets its own outcome or error, in input order.
    ///
    /// # Errors
    /// `InvalidInput` when the batch is empty or larger than the configured maximum.
    pub async fn update_locations(
        &self,
        updates: &[(i64, LocationInput)],
    ) -> ServiceResult<Vec<ServiceResult<UpdateOutcome>>> {
        if updates.is_empty() || updates.len() > self.config.max_batch {
            return Err(ServiceError::invalid(
                "updates",
                format!(
                    "batch has {} updates; send 1 to {}",
                    updates.len(),
                    self.config.max_batch
                ),
            ));
        }
        let mut outcomes = Vec::with_capacity(updates.len());
        for (i, (driver_id, input)) in updates.iter().enumerate() {
            let field = format!("updates[{i}].location");
            outcomes.push(self.update_location(*driver_id, input, &field).await);
        }
        Ok(outcomes)
    }

    fn known_driver(&self, driver_id: i64) -> ServiceResult<LiveDriver> {
        self.live.get(driver_id).ok_or(ServiceError::NotFound {
            entity: "driver",
            id: driver_id,
        })
    }

    async fn store_fix(
        &self,
        driver_id: i64,
        fix: Fix,
        now: DateTime<Utc>,
    ) -> ServiceResult<UpdateOutcome> {
        let verdict =
            self.live
                .judge(driver_id, &fix, &self.config.rules)
                .ok_or(ServiceError::NotFound {
                    entity: "driver",
                    id: driver_id,
                })?;
        match verdict {
            FixVerdict::Accept => {}
            FixVerdict::Stale { latest } => {
                return Ok(UpdateOutcome {
                    driver_id,
                    status: UpdateStatus::Stale,
                    message: Some(format!(
                        "fix recorded at {} is not newer than the last fix ({latest}); ignored",
                        fix.recorded_at
                    )),
                    latest_recorded_at: Some(latest),
                });
            }
            FixVerdict::ImpossibleJump {
                implied_speed_mps,
                distance_m,
            } => {
                let latest = self
                    .live
                    .get(driver_id)
                    .and_then(|d| d.fix)
                    .map(|f| f.recorded_at);
                return Ok(UpdateOutcome {
                    driver_id,
                    status: UpdateStatus::ImpossibleJump,
                    message: Some(format!(
                        "fix is {distance_m:.0} m from the last one, which needs \
                         {implied_speed_mps:.1} m/s (max {} m/s); ignored as a GPS jump",
                        self.config.rules.max_speed_mps
                    )),
                    latest_recorded_at: latest,
                });
            }
        }

        let stored = self.persist_fix(driver_id, &fix, now).await?;
        if !stored || !self.live.apply_fix(driver_id, fix) {
            let latest = self
                .live
                .get(driver_id)
                .and_then(|d| d.fix)
                .map(|f| f.recorded_at);
            return Ok(UpdateOutcome {
                driver_id,
                status: UpdateStatus::Stale,
                message: Some("a newer fix arrived concurrently; ignored".into()),
                latest_recorded_at: latest,
            });
        }
        self.bus.publish_location(DriverLocationEvent {
            driver_id,
            position: fix.position,
            heading_deg: fix.heading_deg,
            speed_mps: fix.speed_mps,
            accuracy_m: fix.accuracy_m,
            recorded_at: fix.recorded_at,
        });
        Ok(UpdateOutcome {
            driver_id,
            status: UpdateStatus::Accepted,
            message: None,
            latest_recorded_at: Some(fix.recorded_at),
        })
    }

    /// Writes the fix to the presence row, only if newer than the stored one, and appends it
    /// to the history. Returns whether it was newer.
    async fn persist_fix(
        &self,
        driver_id: i64,
        fix: &Fix,
        now: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        use driver_presence::Column as P;

        let txn = self.db.begin().await?;
        let updated = driver_presence::Entity::update_many()
            .col_expr(P::Lat, Expr::value(fix.position.lat))
            .col_expr(P::Lng, Expr::value(fix.position.lng))
            .col_expr(P::HeadingDeg, Expr::value(fix.heading_deg))
            .col_expr(P::SpeedMps, Expr::value(fix.speed_mps))
            .col_expr(P::AccuracyM, Expr::value(fix.accuracy_m))
            .col_expr(P::RecordedAt, Expr::value(fix.recorded_at))
            .col_expr(P::UpdatedAt, Expr::value(now))
            .filter(P::DriverId.eq(driver_id))
            .filter(
                Condition::any()
                    .add(P::RecordedAt.is_null())
                    .add(P::RecordedAt.lt(fix.recorded_at)),
            )
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        location_history::ActiveModel {
            driver_id: Set(driver_id),
            lat: Set(fix.position.lat),
            lng: Set(fix.position.lng),
            heading_deg: Set(fix.heading_deg),
            speed_mps: Set(fix.speed_mps),
            accuracy_m: Set(fix.accuracy_m),
            recorded_at: Set(fix.recorded_at),
            received_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }
}

fn check_optional(value: Option<f64>, min: f64, max: f64, field: &str) -> ServiceResult<()> {
    match value {
        Some(v) if !(v.is_finite() && v >= min && v <= max) => Err(ServiceError::invalid(
            field,
            format!("{v} is outside {min}..={max}"),
        )),
        _ => Ok(()),
    }
}

/// Reads every driver with its vehicle, presence row and active trip from storage.
///
/// # Errors
/// Any database error.
pub async fn load_live_drivers(db: &DatabaseConnection) -> Result<LiveDrivers, DbErr> {
    let drivers = driver::Entity::find()
        .find_also_related(vehicle::Entity)
        .all(db)
        .await?;
    let presence: std::collections::HashMap<i64, driver_presence::Model> =
        driver_presence::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|p| (p.driver_id, p))
            .collect();
    let active: std::collections::HashMap<i64, i64> = trip::Entity::find()
        .filter(trip::Column::Status.is_in(ACTIVE_STATES))
        .filter(trip::Column::DriverId.is_not_null())
        .all(db)
        .await?
        .into_iter()
        .filter_map(|t| t.driver_id.map(|d| (d, t.id)))
        .collect();

    let live = drivers.into_iter().filter_map(|(d, v)| {
        let vehicle = v?;
        let mut live = LiveDriver::new(d.id, vehicle.vehicle_type);
        live.rating_sum = d.rating_sum;
        live.rating_count = d.rating_count;
        live.offers_accepted = d.offers_accepted;
        live.offers_rejected = d.offers_rejected;
        live.active_trip_id = active.get(&d.id).copied();
        if let Some(p) = presence.get(&d.id) {
            live.online = p.online;
            live.available_since = p.available_since;
            if let (Some(lat), Some(lng), Some(recorded_at)) = (p.lat, p.lng, p.recorded_at) {
                live.fix = Some(Fix {
                    position: crate::geometry::LatLng { lat, lng },
                    heading_deg: p.heading_deg,
                    speed_mps: p.speed_mps,
                    accuracy_m: p.accuracy_m,
                    recorded_at,
                });
            }
        }
        Some(live)
    });
    Ok(LiveDrivers::from_drivers(live))
}
