//! GraphQL object types. Each wraps a storage model or a domain result and converts on the
//! way out, so storage names never leak into the schema.

use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{driver, offer, rating, rider, trip, trip_event, vehicle};

use super::enums::{
    ActorRole, EtaMethod, LocationUpdateStatus, OfferStatus, ProximityMode, ScoreComponentKind,
    TripEventKind, TripStatus, VehicleType,
};
use super::error::{api_error, internal, load_error};
use super::loaders::{DriverLoader, RiderLoader, VehicleLoader};
use crate::app::Services;
use crate::auth::policy::mask_phone;
use crate::auth::{Principal, Role};
use crate::geometry::LatLng;
use crate::ranking::{smoothed_acceptance, smoothed_rating};

/// A point in decimal degrees (WGS84).
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct Location {
    pub lat: f64,
    pub lng: f64,
}

impl From<LatLng> for Location {
    fn from(p: LatLng) -> Self {
        Location {
            lat: p.lat,
            lng: p.lng,
        }
    }
}

/// Returns `phone` in full to a caller who may see it, masked to anyone else.
fn shown_phone(ctx: &Context<'_>, role: Role, id: i64, phone: &str) -> String {
    match ctx.data_opt::<Principal>() {
        Some(principal) if principal.sees_phone_of(role, id) => phone.to_owned(),
        _ => mask_phone(phone),
    }
}

async fn load_driver(ctx: &Context<'_>, id: i64) -> Result<Option<driver::Model>> {
    ctx.data::<DataLoader<DriverLoader>>()?
        .load_one(id)
        .await
        .map_err(|e| load_error(&e, format_args!("driver {id}")))
}

async fn load_rider(ctx: &Context<'_>, id: i64) -> Result<Option<rider::Model>> {
    ctx.data::<DataLoader<RiderLoader>>()?
        .load_one(id)
        .await
        .map_err(|e| load_error(&e, format_args!("rider {id}")))
}

/// Average stars and how many ratings make it.
#[derive(SimpleObject, Debug, Clone)]
pub struct RatingSummary {
    /// Plain mean of the stars, 1 to 5; null without ratings.
    pub average: Option<f64>,
    pub count: i64,
    /// Mean smoothed toward the prior, as the ranking uses it.
    pub smoothed: f64,
}

/// A rider.
pub struct Rider(pub rider::Model);

#[Object]
impl Rider {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// E.164 phone number, masked as `+250*******56` unless the caller is an admin or this
    /// rider. A trip's driver gets the full number from `requestContact`.
    async fn phone(&self, ctx: &Context<'_>) -> String {
        shown_phone(ctx, Role::Rider, self.0.id, &self.0.phone)
    }

    /// Ratings drivers gave this rider.
    async fn rating(&self, ctx: &Context<'_>) -> Result<RatingSummary> {
        let services = ctx.data::<Services>()?;
        Ok(summary(self.0.rating_sum, self.0.rating_count, services))
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

fn summary(sum: i64, count: i64, services: &Services) -> RatingSummary {
    RatingSummary {
        average: (count > 0).then(|| sum as f64 / count as f64),
        count,
        smoothed: smoothed_rating(sum, count, &services.matcher.config().ranking),
    }
}

/// A vehicle.
pub struct Vehicle(pub vehicle::Model);

#[Object]
impl Vehicle {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    #[graphql(name = "type")]
    async fn vehicle_type(&self) -> VehicleType {
        self.0.vehicle_type.into()
    }

    async fn plate(&self) -> &str {
        &self.0.plate
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
}

/// Live state of a driver as the server has it now.
#[derive(SimpleObject, Debug, Clone)]
pub struct DriverPresence {
    pub online: bool,
    /// Last accepted position; null before the first fix.
    pub location: Option<Location>,
    /// Device time of the last accepted fix.
    pub recorded_at: Option<DateTime<Utc>>,
    /// Seconds since the last accepted fix.
    pub location_age_seconds: Option<f64>,
    /// Whether the fix is fresh enough to be matched.
    pub fresh: bool,
    pub active_trip_id: Option<ID>,
    /// Since when the driver has been online without a trip.
    pub available_since: Option<DateTime<Utc>>,
}

/// A driver.
pub struct Driver(pub driver::Model);

#[Object]
impl Driver {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// E.164 phone number, masked as `+250*******56` unless the caller is an admin or this
    /// driver. A trip's rider gets the full number from `requestContact`.
    async fn phone(&self, ctx: &Context<'_>) -> String {
        shown_phone(ctx, Role::Driver, self.0.id, &self.0.phone)
    }

    async fn vehicle(&self, ctx: &Context<'_>) -> Result<Vehicle> {
        let loader = ctx.data::<DataLoader<VehicleLoader>>()?;
        let vehicle = loader
            .load_one(self.0.vehicle_id)
            .await
            .map_err(|e| load_error(&e, format_args!("vehicle {}", self.0.vehicle_id)))?;
        vehicle.map(Vehicle).ok_or_else(internal)
    }

    /// Ratings riders gave this driver.
    async fn rating(&self, ctx: &Context<'_>) -> Result<RatingSummary> {
        let services = ctx.data::<Services>()?;
        let live = services.tracking.live().get(self.0.id);
        let (sum, count) = live.map_or((self.0.rating_sum, self.0.rating_count), |d| {
            (i64::from(d.rating_sum), i64::from(d.rating_count))
        });
        Ok(summary(sum, count, services))
    }

    /// Offers accepted.
    async fn offers_accepted(&self, ctx: &Context<'_>) -> Result<i64> {
        let live = ctx.data::<Services>()?.tracking.live().get(self.0.id);
        Ok(live.map_or(self.0.offers_accepted, |d| i64::from(d.offers_accepted)))
    }

    /// Offers declined or left to expire.
    async fn offers_rejected(&self, ctx: &Context<'_>) -> Result<i64> {
        let live = ctx.data::<Services>()?.tracking.live().get(self.0.id);
        Ok(live.map_or(self.0.offers_rejected, |d| i64::from(d.offers_rejected)))
    }

    /// Accepted over answered offers, smoothed toward the prior so a new driver is not at 0
    /// or 1; 0 to 1.
    async fn acceptance_rate(&self, ctx: &Context<'_>) -> Result<f64> {
        let services = ctx.data::<Services>()?;
        let (accepted, rejected) = services
            .tracking
            .live()
            .get(self.0.id)
            .map_or((self.0.offers_accepted, self.0.offers_rejected), |d| {
                (i64::from(d.offers_accepted), i64::from(d.offers_rejected))
            });
        Ok(smoothed_acceptance(
            accepted,
            rejected,
            &services.matcher.config().ranking,
        ))
    }

    async fn presence(&self, ctx: &Context<'_>) -> Result<DriverPresence> {
        let services = ctx.data::<Services>()?;
        let now = Utc::now();
        let stale_after = f64::from(services.matcher.config().stale_after_s);
        let live = services.tracking.live().get(self.0.id);
        Ok(match live {
            Some(d) => {
                let age = d.location_age_s(now);
                DriverPresence {
                    online: d.online,
                    location: d.fix.map(|f| f.position.into()),
                    recorded_at: d.fix.map(|f| f.recorded_at),
                    location_age_seconds: age,
                    fresh: d.online && age.is_some_and(|a| a <= stale_after),
                    active_trip_id: d.active_trip_id.map(|id| ID(id.to_string())),
                    available_since: d.available_since,
                }
            }
            None => DriverPresence {
                online: false,
                location: None,
                recorded_at: None,
                location_age_seconds: None,
                fresh: false,
                active_trip_id: None,
                available_since: None,
            },
        })
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A trip.
pub struct Trip(pub trip::Model);

#[Object]
impl Trip {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn status(&self) -> TripStatus {
        self.0.status.into()
    }

    async fn vehicle_type(&self) -> VehicleType {
        self.0.vehicle_type.into()
    }

    async fn rider(&self, ctx: &Context<'_>) -> Result<Rider> {
        load_rider(ctx, self.0.rider_id)
            .await?
            .map(Rider)
            .ok_or_else(internal)
    }

    /// The assigned driver; null until accepted.
    async fn driver(&self, ctx: &Context<'_>) -> Result<Option<Driver>> {
        match self.0.driver_id {
            Some(id) => Ok(load_driver(ctx, id).await?.map(Driver)),
            None => Ok(None),
        }
    }

    async fn pickup(&self) -> Location {
        Location {
            lat: self.0.pickup_lat,
            lng: self.0.pickup_lng,
        }
    }

    async fn dropoff(&self) -> Option<Location> {
        match (self.0.dropoff_lat, self.0.dropoff_lng) {
            (Some(lat), Some(lng)) => Some(Location { lat, lng }),
            _ => None,
        }
    }

    /// Straight-line distance from pickup to dropoff in meters; null without a dropoff.
    async fn straight_line_meters(&self) -> Option<f64> {
        let pickup = LatLng {
            lat: self.0.pickup_lat,
            lng: self.0.pickup_lng,
        };
        match (self.0.dropoff_lat, self.0.dropoff_lng) {
            (Some(lat), Some(lng)) => Some(pickup.distance_m(&LatLng { lat, lng })),
            _ => None,
        }
    }

    async fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.0.scheduled_at
    }

    async fn requested_at(&self) -> DateTime<Utc> {
        self.0.requested_at
    }

    async fn accepted_at(&self) -> Option<DateTime<Utc>> {
        self.0.accepted_at
    }

    async fn arrived_at(&self) -> Option<DateTime<Utc>> {
        self.0.arrived_at
    }

    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }

    async fn cancelled_at(&self) -> Option<DateTime<Utc>> {
        self.0.cancelled_at
    }

    async fn cancelled_by(&self) -> Option<ActorRole> {
        self.0.cancelled_by.map(Into::into)
    }

    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }

    /// Offers of this trip, oldest first.
    async fn offers(&self, ctx: &Context<'_>) -> Result<Vec<Offer>> {
        let trips = &ctx.data::<Services>()?.trips;
        let offers = trips.offers(self.0.id).await.map_err(api_error)?;
        Ok(offers.into_iter().map(Offer).collect())
    }

    /// Audit log of this trip, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<TripEvent>> {
        let trips = &ctx.data::<Services>()?.trips;
        let events = trips.events(self.0.id).await.map_err(api_error)?;
        Ok(events.into_iter().map(TripEvent).collect())
    }

    /// Ratings of this trip, at most one per side.
    async fn ratings(&self, ctx: &Context<'_>) -> Result<Vec<Rating>> {
        let trips = &ctx.data::<Services>()?.trips;
        let ratings = trips.ratings(self.0.id).await.map_err(api_error)?;
        Ok(ratings.into_iter().map(Rating).collect())
    }
}

/// An offer of a trip to a driver.
pub struct Offer(pub offer::Model);

#[Object]
impl Offer {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn trip_id(&self) -> ID {
        ID(self.0.trip_id.to_string())
    }

    async fn trip(&self, ctx: &Context<'_>) -> Result<Trip> {
        let trips = &ctx.data::<Services>()?.trips;
        let trip = trips.trip(self.0.trip_id).await.map_err(api_error)?;
        trip.map(Trip).ok_or_else(internal)
    }

    async fn driver(&self, ctx: &Context<'_>) -> Result<Driver> {
        load_driver(ctx, self.0.driver_id)
            .await?
            .map(Driver)
            .ok_or_else(internal)
    }

    async fn status(&self) -> OfferStatus {
        self.0.status.into()
    }

    /// Driver's distance to the pickup when offered, in meters.
    async fn distance_meters(&self) -> Option<f64> {
        self.0.distance_m
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }

    async fn responded_at(&self) -> Option<DateTime<Utc>> {
        self.0.responded_at
    }

    async fn decline_reason(&self) -> Option<&str> {
        self.0.decline_reason.as_deref()
    }
}

/// One entry of a trip's audit log.
pub struct TripEvent(pub trip_event::Model);

#[Object]
impl TripEvent {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn trip_id(&self) -> ID {
        ID(self.0.trip_id.to_string())
    }

    async fn kind(&self) -> TripEventKind {
        self.0.kind.into()
    }

    async fn actor_role(&self) -> ActorRole {
        self.0.actor_role.into()
    }

    /// Rider or driver id by `actorRole`; null for the system.
    async fn actor_id(&self) -> Option<ID> {
        self.0.actor_id.map(|id| ID(id.to_string()))
    }

    async fn from_status(&self) -> Option<TripStatus> {
        self.0.from_status.map(Into::into)
    }

    async fn to_status(&self) -> TripStatus {
        self.0.to_status.into()
    }

    async fn offer_id(&self) -> Option<ID> {
        self.0.offer_id.map(|id| ID(id.to_string()))
    }

    async fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A rating of one side of a trip by the other.
pub struct Rating(pub rating::Model);

#[Object]
impl Rating {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn trip_id(&self) -> ID {
        ID(self.0.trip_id.to_string())
    }

    /// Side that gave the rating.
    async fn rater_role(&self) -> ActorRole {
        self.0.rater_role.into()
    }

    /// 1 to 5.
    async fn stars(&self) -> i32 {
        i32::from(self.0.stars)
    }

    async fn comment(&self) -> Option<&str> {
        self.0.comment.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// One term of a ranking score.
#[derive(SimpleObject, Debug, Clone)]
pub struct ScoreComponent {
    pub kind: ScoreComponentKind,
    /// Input in its own unit: seconds for ETA, age and idle time, meters for distance, stars
    /// for rating, a 0 to 1 ratio for acceptance.
    pub raw: f64,
    /// Input mapped to 0 to 1, higher is better.
    pub normalized: f64,
    pub weight: f64,
    /// Share of the total score: weight times normalized over the sum of weights.
    pub contribution: f64,
}

/// One ranked driver.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct NearbyDriver {
    /// 1 for the best match.
    pub rank: i32,
    /// The driver's id; select `driver` for the profile, which costs a database read.
    #[graphql(name = "driverId")]
    pub driver_id_field: ID,
    #[graphql(skip)]
    pub driver_id: i64,
    pub vehicle_type: VehicleType,
    pub location: Location,
    /// Great-circle distance to the point, in meters.
    pub distance_meters: f64,
    /// Estimated seconds to reach the point; see `NearbyDriversResult.eta`.
    pub eta_seconds: f64,
    /// Seconds since the driver's last fix.
    pub location_age_seconds: f64,
    /// Ranking score, 0 to 1; the sum of the components' contributions.
    pub score: f64,
    pub score_components: Vec<ScoreComponent>,
}

#[ComplexObject]
impl NearbyDriver {
    async fn driver(&self, ctx: &Context<'_>) -> Result<Driver> {
        load_driver(ctx, self.driver_id)
            .await?
            .map(Driver)
            .ok_or_else(internal)
    }
}

/// Model behind the ETAs.
#[derive(SimpleObject, Debug, Clone)]
pub struct EtaModelInfo {
    pub method: EtaMethod,
    /// Road distance over straight-line distance.
    pub detour_factor: f64,
    /// Average speeds in meters per second.
    pub moto_speed_mps: f64,
    pub cab_speed_mps: f64,
}

/// Result of `nearbyDrivers`.
#[derive(SimpleObject, Debug, Clone)]
pub struct NearbyDriversResult {
    /// Best first.
    pub drivers: Vec<NearbyDriver>,
    /// Radius of the search that produced `drivers`, in meters.
    pub radius_meters: f64,
    /// Every radius tried, in order, in meters.
    pub radii_tried_meters: Vec<f64>,
    /// Eligible drivers scored before keeping the best `limit`.
    pub candidates_scored: i32,
    /// Input that the proximity term of the score measured.
    pub proximity: ProximityMode,
    pub eta: EtaModelInfo,
}

/// An open request near a driver.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct NearbyTripRequest {
    #[graphql(skip)]
    pub trip_id: i64,
    pub pickup: Location,
    pub vehicle_type: VehicleType,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub requested_at: DateTime<Utc>,
    /// Great-circle distance from the driver to the pickup, in meters.
    pub distance_meters: f64,
    /// Straight-line ETA to the pickup, in seconds.
    pub eta_seconds: f64,
}

#[ComplexObject]
impl NearbyTripRequest {
    async fn trip(&self, ctx: &Context<'_>) -> Result<Option<Trip>> {
        let trips = &ctx.data::<Services>()?.trips;
        Ok(trips.trip(self.trip_id).await.map_err(api_error)?.map(Trip))
    }
}

/// Result of one location update.
#[derive(SimpleObject, Debug, Clone)]
pub struct LocationUpdateResult {
    pub driver_id: ID,
    pub status: LocationUpdateStatus,
    /// Reason the update was ignored or rejected; null when accepted.
    pub message: Option<String>,
    /// Error code when `status` is REJECTED, as in `extensions.code` of errors.
    pub error_code: Option<String>,
    /// Device time of the fix the driver now has.
    pub latest_recorded_at: Option<DateTime<Utc>>,
}

/// A driver's accepted location fix, as pushed to subscribers.
#[derive(SimpleObject, Debug, Clone)]
pub struct DriverLocation {
    pub driver_id: ID,
    pub location: Location,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_meters: Option<f64>,
    pub recorded_at: DateTime<Utc>,
}

/// A trip change: the trip after it and the event that caused it.
pub struct TripUpdate {
    pub trip: trip::Model,
    pub event: trip_event::Model,
}

#[Object]
impl TripUpdate {
    async fn trip(&self) -> Trip {
        Trip(self.trip.clone())
    }

    async fn event(&self) -> TripEvent {
        TripEvent(self.event.clone())
    }
}
