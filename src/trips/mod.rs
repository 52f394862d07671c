//! The trip lifecycle: requests, offers, acceptance, the driver's steps, cancellation and
//! ratings, each one database transaction on the state machine in [`state`].
//!
//! Concurrency rules live in the database, not in memory: a trip moves only with a
//! conditional `UPDATE ... WHERE status = <expected>`, so of two concurrent accepts exactly
//! one changes a row; the partial unique index `uq_trips_active_driver` keeps a driver to one
//! active trip; `uq_offers_pending_trip` keeps a trip to one pending offer. Offer, accept and
//! cancel also lock the trip row first, so an offer never stays pending beside a concurrent
//! accept or cancel. After commit the in-memory indexes are updated and the change is
//! published to subscribers.

mod contact;
mod expiry;
mod lifecycle;
mod reads;
pub mod state;
mod store;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use entity::enums::{TripEventKind, TripStatus, VehicleType};
use entity::{trip, trip_event};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

pub use contact::ContactHandoff;
pub use expiry::run_offer_expiry;
pub use reads::TripFilter;
pub use store::Actor;

use crate::cluster::cache::{NoProfileCache, SharedProfileCache};
use crate::events::{EventBus, TripUpdateEvent};
use crate::geometry::BoundingBox;
use crate::matching::{OpenRequest, OpenRequests};
use crate::tracking::LiveDrivers;

/// Limits of trip input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TripConfig {
    /// Seconds a driver has to answer an offer.
    pub offer_ttl_s: i64,
    /// How far ahead a trip may be scheduled, in seconds.
    pub max_schedule_ahead_s: i64,
    pub service_area: Option<BoundingBox>,
}

/// A ride request before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct TripRequest {
    pub rider_id: i64,
    pub pickup: (f64, f64),
    pub dropoff: Option<(f64, f64)>,
    pub vehicle_type: VehicleType,
    pub scheduled_at: Option<DateTime<Utc>>,
}

/// The trip service.
#[derive(Debug, Clone)]
pub struct Trips {
    db: DatabaseConnection,
    live: Arc<LiveDrivers>,
    requests: Arc<OpenRequests>,
    bus: EventBus,
    config: TripConfig,
    /// Cached driver and rider rows, invalidated when a rating or an offer counter changes.
    profiles: SharedProfileCache,
}

impl Trips {
    pub fn new(
        db: DatabaseConnection,
        live: Arc<LiveDrivers>,
        requests: Arc<OpenRequests>,
        bus: EventBus,
        config: TripConfig,
    ) -> Self {
        Self {
            db,
            live,
            requests,
            bus,
            config,
            profiles: Arc::new(NoProfileCache),
        }
    }

    /// Uses `profiles` for the driver and rider rows this service writes.
    pub fn with_profile_cache(mut self, profiles: SharedProfileCache) -> Self {
        self.profiles = profiles;
        self
    }

    fn offer_ttl(&self) -> TimeDelta {
        TimeDelta::seconds(self.config.offer_ttl_s)
    }

    /// Updates the in-memory indexes after a committed change and publishes it to
    /// subscribers and the other instances.
    fn after_commit(&self, trip: trip::Model, event: trip_event::Model) {
        self.apply_change(&trip, &event);
        let kind = sea_orm::ActiveEnum::to_value(&event.kind);
        metrics::counter!(crate::metrics::TRIP_EVENTS, "kind" => kind).increment(1);
        self.bus.publish_trip(TripUpdateEvent { trip, event });
    }

    /// Applies a change another instance committed, and publishes it to local subscribers.
    pub fn apply_remote(&self, change: TripUpdateEvent) {
        self.apply_change(&change.trip, &change.event);
        self.bus.deliver_trip(change);
    }

    /// Reloads the open requests from storage, after missing changes of other instances.
    ///
    /// # Errors
    /// Any database error.
    pub async fn reload_open_requests(&self) -> Result<(), DbErr> {
        let fresh = load_open_requests(&self.db).await?;
        self.requests.replace_with(fresh);
        Ok(())
    }

    /// Applies the in-memory side of a committed change: the open request index and the driver's
    /// binding. Applying the same change twice, or an older one after a newer, is harmless.
    fn apply_change(&self, trip: &trip::Model, event: &trip_event::Model) {
        // A trip enters the index once, when requested, and never returns to REQUESTED. A
        // later offer or decline carries a REQUESTED snapshot that may be applied after a
        // concurrent accept removed the trip, so it must not insert it again.
        match trip.status {
            TripStatus::Requested if event.kind == TripEventKind::Requested => {
                self.requests.insert(open_request(trip));
            }
            TripStatus::Requested => {}
            _ => self.requests.remove(trip.id),
        }
        if let Some(driver_id) = trip.driver_id
            && changes_binding(event.kind)
        {
            let now = Utc::now();
            self.live.update(driver_id, |d| {
                // Concurrent operations can reach this point in any order, such as a cancel
                // before the accept it waited for. The trip row lock and
                // `uq_trips_active_driver` serialize one driver's binding changes, so their
                // event ids follow commit order and an older event is skipped.
                if event.id <= d.binding_event_id {
                    return;
                }
                d.binding_event_id = event.id;
                if state::ACTIVE_STATES.contains(&trip.status) {
                    d.active_trip_id = Some(trip.id);
                    d.available_since = None;
                } else if d.active_trip_id == Some(trip.id) {
                    d.active_trip_id = None;
                    d.available_since = d.online.then_some(now);
                }
            });
        }
    }
}

/// Returns whether an event binds a driver to its trip or releases the driver.
fn changes_binding(kind: TripEventKind) -> bool {
    matches!(
        kind,
        TripEventKind::Accepted
            | TripEventKind::Arrived
            | TripEventKind::Started
            | TripEventKind::Completed
            | TripEventKind::Cancelled
    )
}

fn open_request(trip: &trip::Model) -> OpenRequest {
    OpenRequest {
        trip_id: trip.id,
        pickup: crate::geometry::LatLng {
            lat: trip.pickup_lat,
            lng: trip.pickup_lng,
        },
        vehicle_type: trip.vehicle_type,
        scheduled_at: trip.scheduled_at,
        requested_at: trip.requested_at,
    }
}

/// Reads every open request from storage, to rebuild the request index at start.
///
/// # Errors
/// Any database error.
pub async fn load_open_requests(db: &DatabaseConnection) -> Result<OpenRequests, DbErr> {
    let open = trip::Entity::find()
        .filter(trip::Column::Status.eq(TripStatus::Requested))
        .all(db)
        .await?;
    Ok(OpenRequests::from_requests(open.iter().map(open_request)))
}
