//! Driver presence and live positions: going online and offline, location updates with their
//! validation, and the rebuild of the live registry from storage at start.
//!
//! A location update is judged in memory first (stale or impossible jump), then written to
//! storage by the group-commit [`writer`] with a condition on the stored fix time, then
//! applied in memory. Two concurrent updates of one driver therefore end with the newer fix
//! everywhere.

pub mod live;
pub mod rules;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use entity::{driver, driver_presence, trip, vehicle};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, FromQueryResult,
    JoinType, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, RelationTrait,
};
use tracing::{debug, instrument};

pub use live::{LiveDriver, LiveDrivers};
pub use rules::{Fix, FixRules, FixVerdict, judge_fix};
pub use writer::FixWriter;

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

/// Outcome of one location update.
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
    /// Reason the update was ignored, for `Stale` and `ImpossibleJump`.
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
    writer: FixWriter,
}

impl Tracking {
    pub fn new(
        db: DatabaseConnection,
        live: Arc<LiveDrivers>,
        bus: EventBus,
        config: TrackingConfig,
    ) -> Self {
        Self {
            writer: FixWriter::start(db.clone()),
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
        // Validate before any write, so a bad location leaves the driver as it was.
        if let Some(input) = &location {
            self.validate_fix(input, "location", now)?;
        }
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
        self.bus.publish_driver_changed(driver_id);
        if let Some(input) = location {
            let updates = [(driver_id, input)];
            let mut outcomes = self.apply_updates(&updates, |_| "location".into()).await?;
            outcomes
                .pop()
                .unwrap_or_else(|| unreachable!("one outcome per update"))?;
        }
        debug!("driver online");
        self.known_driver(driver_id)
    }

    /// Marks a driver offline; it stops being matched at once.
    ///
    /// # Errors
    /// `NotFound` for an unknown driver, `Conflict` while the driver has an active trip.
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
        self.bus.publish_driver_changed(driver_id);
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
    /// offline driver. A stale fix or an impossible jump is not an error; the outcome reports it.
    #[instrument(skip(self, input), fields(driver.id = driver_id))]
    pub async fn update_location(
        &self,
        driver_id: i64,
        input: &LocationInput,
        field: &str,
    ) -> ServiceResult<UpdateOutcome> {
        let updates = [(driver_id, input.clone())];
        let mut outcomes = self.apply_updates(&updates, |_| field.to_owned()).await?;
        outcomes
            .pop()
            .unwrap_or_else(|| unreachable!("one outcome per update"))
    }

    /// Applies many updates in one database transaction; each gets its own outcome or error,
    /// in input order. Several fixes of one driver are judged in order, each against the one
    /// before.
    ///
    /// # Errors
    /// `InvalidInput` when the batch is empty or larger than the configured maximum; a
    /// database error fails the whole batch.
    #[instrument(skip_all, fields(batch.len = updates.len()))]
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
        self.apply_updates(updates, |i| format!("updates[{i}].location"))
            .await
    }

    /// Applies a fix another instance accepted and stored, and publishes it to local
    /// subscribers. Returns `false` for a driver missing from this instance's registry, which
    /// the caller then reads from storage with [`Self::refresh_driver`], fix included.
    pub fn apply_remote_fix(&self, event: DriverLocationEvent) -> bool {
        let fix = Fix {
            position: event.position,
            heading_deg: event.heading_deg,
            speed_mps: event.speed_mps,
            accuracy_m: event.accuracy_m,
            recorded_at: event.recorded_at,
        };
        if self.live.get(event.driver_id).is_none() {
            return false;
        }
        if self.live.apply_fix(event.driver_id, fix) {
            self.bus.deliver_location(event);
        }
        true
    }

    /// Reads one driver from storage into the live registry: presence, vehicle, counters and
    /// a newer fix, for a change another instance made.
    ///
    /// # Errors
    /// Any database error.
    #[instrument(skip(self), fields(driver.id = driver_id))]
    pub async fn refresh_driver(&self, driver_id: i64) -> Result<(), DbErr> {
        // Local changes landing during the read make it retry; a few tries are plenty, as
        // the window is one primary-key read.
        for _ in 0..5 {
            let seen = self.live.generation();
            let Some(stored) = load_live_driver(&self.db, driver_id).await? else {
                return Ok(());
            };
            if self.live.merge_stored(stored, seen) {
                return Ok(());
            }
        }
        tracing::warn!("driver kept changing locally; its stored state was not merged");
        Ok(())
    }

    fn known_driver(&self, driver_id: i64) -> ServiceResult<LiveDriver> {
        self.live.get(driver_id).ok_or(ServiceError::NotFound {
            entity: "driver",
            id: driver_id,
        })
    }

    /// Judges every update in memory, stores the accepted ones in one transaction, then
    /// applies them in memory and publishes them.
    async fn apply_updates(
        &self,
        updates: &[(i64, LocationInput)],
        field: impl Fn(usize) -> String,
    ) -> ServiceResult<Vec<ServiceResult<UpdateOutcome>>> {
        let now = Utc::now();
        let mut results: Vec<Option<ServiceResult<UpdateOutcome>>> =
            updates.iter().map(|_| None).collect();
        // Latest accepted fix per driver within this batch.
        let mut latest: HashMap<i64, Fix> = HashMap::new();
        let mut accepted: Vec<(usize, i64, Fix)> = Vec::new();
        for (i, (driver_id, input)) in updates.iter().enumerate() {
            match self.judge_update(*driver_id, input, &field(i), now, &latest) {
                Ok(Ok(fix)) => {
                    latest.insert(*driver_id, fix);
                    accepted.push((i, *driver_id, fix));
                }
                Ok(Err(ignored)) => results[i] = Some(Ok(ignored)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !accepted.is_empty() {
            // Storing and applying run in a task of their own. A closed connection drops the
            // request, and a committed fix must still reach memory: otherwise a resent copy
            // would be accepted and stored twice.
            let this = self.clone();
            let applied = tokio::spawn(async move {
                this.persist_fixes(&accepted, now).await?;
                let outcomes: Vec<_> = accepted
                    .into_iter()
                    .map(|(i, driver_id, fix)| (i, this.apply_accepted(driver_id, fix)))
                    .collect();
                Ok::<_, DbErr>(outcomes)
            })
            .await
            .map_err(|e| DbErr::Custom(format!("storing location fixes failed: {e}")))??;
            for (i, outcome) in applied {
                results[i] = Some(Ok(outcome));
            }
        }
        for result in results.iter().flatten() {
            let status = match result {
                Ok(outcome) => match outcome.status {
                    UpdateStatus::Accepted => "accepted",
                    UpdateStatus::Stale => "stale",
                    UpdateStatus::ImpossibleJump => "impossible_jump",
                },
                Err(_) => "rejected",
            };
            metrics::counter!(crate::metrics::LOCATION_UPDATES, "status" => status).increment(1);
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| unreachable!("every update has a result")))
            .collect())
    }

    /// Validates one update and judges it against the driver's last fix: `Ok(Ok(fix))` to
    /// store, `Ok(Err(outcome))` when it is ignored as stale or an impossible jump.
    fn judge_update(
        &self,
        driver_id: i64,
        input: &LocationInput,
        field: &str,
        now: DateTime<Utc>,
        batch_latest: &HashMap<i64, Fix>,
    ) -> ServiceResult<Result<Fix, UpdateOutcome>> {
        let fix = self.validate_fix(input, field, now)?;
        let driver = self.known_driver(driver_id)?;
        if !driver.online {
            return Err(ServiceError::Conflict(format!(
                "driver {driver_id} is offline; call goOnline before sending locations"
            )));
        }
        let last = batch_latest.get(&driver_id).copied().or(driver.fix);
        let ignored = |message: String| UpdateOutcome {
            driver_id,
            status: UpdateStatus::Stale,
            message: Some(message),
            latest_recorded_at: last.map(|f| f.recorded_at),
        };
        match judge_fix(last.as_ref(), &fix, &self.config.rules) {
            FixVerdict::Accept => Ok(Ok(fix)),
            FixVerdict::Stale { latest } => Ok(Err(ignored(format!(
                "fix recorded at {} is not newer than the last fix ({latest}); ignored",
                fix.recorded_at
            )))),
            FixVerdict::ImpossibleJump {
                implied_speed_mps,
                distance_m,
            } => Ok(Err(UpdateOutcome {
                status: UpdateStatus::ImpossibleJump,
                ..ignored(format!(
                    "fix is {distance_m:.0} m from the last one, which needs \
                     {implied_speed_mps:.1} m/s (max {} m/s); ignored as a GPS jump",
                    self.config.rules.max_speed_mps
                ))
            })),
        }
    }

    /// Applies a stored fix in memory and publishes it, unless a newer fix of the same driver
    /// landed concurrently.
    fn apply_accepted(&self, driver_id: i64, fix: Fix) -> UpdateOutcome {
        if !self.live.apply_fix(driver_id, fix) {
            let latest = self
                .live
                .get(driver_id)
                .and_then(|d| d.fix)
                .map(|f| f.recorded_at);
            return UpdateOutcome {
                driver_id,
                status: UpdateStatus::Stale,
                message: Some("a newer fix arrived concurrently; ignored".into()),
                latest_recorded_at: latest,
            };
        }
        self.bus.publish_location(DriverLocationEvent {
            driver_id,
            position: fix.position,
            heading_deg: fix.heading_deg,
            speed_mps: fix.speed_mps,
            accuracy_m: fix.accuracy_m,
            recorded_at: fix.recorded_at,
        });
        UpdateOutcome {
            driver_id,
            status: UpdateStatus::Accepted,
            message: None,
            latest_recorded_at: Some(fix.recorded_at),
        }
    }

    /// Stores the accepted fixes, with other requests' fixes, through the group-commit
    /// writer, and returns once they are committed.
    async fn persist_fixes(
        &self,
        accepted: &[(usize, i64, Fix)],
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let fixes = accepted
            .iter()
            .map(|(_, driver_id, fix)| (*driver_id, *fix))
            .collect();
        self.writer.store(fixes, now).await
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

/// Drivers read per query while rebuilding the registry. Paging keeps the rows in flight
/// small, so a million drivers do not leave hundreds of megabytes of freed rows in the heap.
const LOAD_PAGE: u64 = 50_000;

/// The columns the live registry needs of one driver.
#[derive(Debug, FromQueryResult)]
struct LiveRow {
    id: i64,
    vehicle_type: entity::enums::VehicleType,
    rating_sum: i64,
    rating_count: i64,
    offers_accepted: i64,
    offers_rejected: i64,
    online: Option<bool>,
    lat: Option<f64>,
    lng: Option<f64>,
    heading_deg: Option<f64>,
    speed_mps: Option<f64>,
    accuracy_m: Option<f64>,
    recorded_at: Option<DateTime<Utc>>,
    available_since: Option<DateTime<Utc>>,
}

/// Converts a stored counter to the registry's `u32`, reading a negative value, which no
/// write produces, as 0.
fn saturate(counter: i64) -> u32 {
    u32::try_from(Ord::max(counter, 0)).unwrap_or(u32::MAX)
}

impl LiveRow {
    fn into_live(self, active_trip_id: Option<i64>) -> LiveDriver {
        let mut live = LiveDriver::new(self.id, self.vehicle_type);
        live.rating_sum = saturate(self.rating_sum);
        live.rating_count = saturate(self.rating_count);
        live.offers_accepted = saturate(self.offers_accepted);
        live.offers_rejected = saturate(self.offers_rejected);
        live.active_trip_id = active_trip_id;
        live.online = self.online.unwrap_or(false);
        live.available_since = self.available_since;
        if let (Some(lat), Some(lng), Some(recorded_at)) = (self.lat, self.lng, self.recorded_at) {
            live.fix = Some(Fix {
                position: crate::geometry::LatLng { lat, lng },
                heading_deg: self.heading_deg,
                speed_mps: self.speed_mps,
                accuracy_m: self.accuracy_m,
                recorded_at,
            });
        }
        live
    }
}

/// Builds the select of [`LiveRow`]: a driver with its vehicle type and presence.
fn live_rows() -> sea_orm::Select<driver::Entity> {
    use driver_presence::Column as P;

    driver::Entity::find()
        .select_only()
        .column(driver::Column::Id)
        .column(driver::Column::RatingSum)
        .column(driver::Column::RatingCount)
        .column(driver::Column::OffersAccepted)
        .column(driver::Column::OffersRejected)
        .column_as(vehicle::Column::VehicleType, "vehicle_type")
        .columns([P::Online, P::AvailableSince])
        .columns(writer::FIX_COLUMNS)
        .join(JoinType::InnerJoin, driver::Relation::Vehicle.def())
        .join(JoinType::LeftJoin, driver::Relation::Presence.def())
}

/// Reads one driver as [`load_live_drivers`] would, or `None` for an unknown id.
///
/// # Errors
/// Any database error.
pub async fn load_live_driver(
    db: &DatabaseConnection,
    driver_id: i64,
) -> Result<Option<LiveDriver>, DbErr> {
    let Some(row) = live_rows()
        .filter(driver::Column::Id.eq(driver_id))
        .into_model::<LiveRow>()
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let active_trip_id = trip::Entity::find()
        .select_only()
        .column(trip::Column::Id)
        .filter(trip::Column::Status.is_in(ACTIVE_STATES))
        .filter(trip::Column::DriverId.eq(driver_id))
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(Some(row.into_live(active_trip_id)))
}

/// Reads every driver with its vehicle type, presence and active trip from storage, a page at
/// a time, selecting only the columns the registry keeps.
///
/// # Errors
/// Any database error.
pub async fn load_live_drivers(db: &DatabaseConnection) -> Result<LiveDrivers, DbErr> {
    let active: HashMap<i64, i64> = trip::Entity::find()
        .select_only()
        .column(trip::Column::DriverId)
        .column(trip::Column::Id)
        .filter(trip::Column::Status.is_in(ACTIVE_STATES))
        .filter(trip::Column::DriverId.is_not_null())
        .into_tuple::<(i64, i64)>()
        .all(db)
        .await?
        .into_iter()
        .collect();

    // Sized up front so the vector never doubles: at a million drivers a doubling would
    // leave about 170 MB of freed memory behind.
    let count = driver::Entity::find().count(db).await?;
    let mut drivers = Vec::with_capacity(count as usize);
    let mut after_id = 0_i64;
    loop {
        let page: Vec<LiveRow> = live_rows()
            .filter(driver::Column::Id.gt(after_id))
            .order_by_asc(driver::Column::Id)
            .limit(LOAD_PAGE)
            .into_model::<LiveRow>()
            .all(db)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after_id = last.id;
        let full_page = page.len() as u64 == LOAD_PAGE;
        drivers.extend(page.into_iter().map(|row| {
            let active_trip_id = active.get(&row.id).copied();
            row.into_live(active_trip_id)
        }));
        if !full_page {
            break;
        }
    }
    Ok(LiveDrivers::from_vec(drivers))
}
