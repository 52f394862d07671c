//! Live streams over WebSocket: a driver's positions, one trip's changes, and every trip
//! change for dashboards.

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::access::{allowed, caller, check_trip_read};
use crate::app::Services;
use crate::auth::Role;
use crate::error::ServiceError;
use crate::schema::error::{api_error, parse_id};
use crate::schema::types::{DriverLocation, Location, TripUpdate};
use crate::trips::TripFilter;
use crate::trips::state::ACTIVE_STATES;

#[derive(Default)]
pub struct Subscription;

/// Drops the lag notice of a subscriber that fell behind, after logging how much it missed.
fn skip_lag<T>(item: Result<T, BroadcastStreamRecvError>, stream: &'static str) -> Option<T> {
    match item {
        Ok(value) => Some(value),
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            tracing::warn!(stream, missed, "subscriber fell behind; skipped events");
            None
        }
    }
}

/// Checks that the caller may follow driver `driver_id`: unrestricted readers, the driver, and
/// a rider whose active trip that driver drives. Returns that trip's id for a rider, whose
/// stream must end with the trip.
async fn check_location_read(
    ctx: &Context<'_>,
    services: &Services,
    driver_id: i64,
) -> Result<Option<i64>> {
    let principal = caller(ctx)?;
    if principal.role == Role::Rider
        && let Some(rider_id) = principal.subject_id
    {
        let filter = TripFilter {
            status: Some(ACTIVE_STATES.to_vec()),
            rider_id: Some(rider_id),
            driver_id: Some(driver_id),
            before_id: None,
            limit: Some(1),
        };
        let active = services.trips.trips(&filter).await.map_err(api_error)?;
        if let Some(trip) = active.first() {
            return Ok(Some(trip.id));
        }
    }
    allowed(principal.read_driver(driver_id))?;
    Ok(None)
}

#[Subscription]
impl Subscription {
    /// Streams every accepted location fix of one driver.
    async fn driver_location(
        &self,
        ctx: &Context<'_>,
        driver_id: ID,
    ) -> Result<impl Stream<Item = DriverLocation>> {
        let id = parse_id(&driver_id, "driverId")?;
        let services = ctx.data::<Services>()?;
        let while_on_trip = check_location_read(ctx, services, id).await?;
        if services.tracking.live().get(id).is_none() {
            return Err(api_error(ServiceError::NotFound {
                entity: "driver",
                id,
            }));
        }
        let live = services.tracking.live().clone();
        // A rider follows the driver only while the driver is on the rider's trip, so the
        // first fix after the trip ends closes the stream.
        let stream = BroadcastStream::new(services.bus.subscribe_location(id))
            .take_while(move |_| {
                let still = while_on_trip.is_none_or(|trip_id| {
                    live.get(id).and_then(|d| d.active_trip_id) == Some(trip_id)
                });
                std::future::ready(still)
            })
            .filter_map(move |item| async move {
                let event = skip_lag(item, "driverLocation")?;
                Some(DriverLocation {
                    driver_id: ID(id.to_string()),
                    location: Location::from(event.position),
                    heading_deg: event.heading_deg,
                    speed_mps: event.speed_mps,
                    accuracy_meters: event.accuracy_m,
                    recorded_at: event.recorded_at,
                })
            });
        Ok(stream)
    }

    /// Streams every change of one trip from the moment of subscription.
    async fn trip_updated(
        &self,
        ctx: &Context<'_>,
        trip_id: ID,
    ) -> Result<impl Stream<Item = TripUpdate>> {
        let id = parse_id(&trip_id, "tripId")?;
        check_trip_read(ctx, id).await?;
        let services = ctx.data::<Services>()?;
        // Subscribe before the existence check so no change between the two is missed.
        let receiver = services.bus.subscribe_trip(id);
        let found = services.trips.trip(id).await.map_err(api_error);
        if !matches!(found, Ok(Some(_))) {
            drop(receiver);
            services.bus.prune_trip(id);
            found?;
            return Err(api_error(ServiceError::NotFound { entity: "trip", id }));
        }
        let stream = BroadcastStream::new(receiver).filter_map(move |item| async move {
            let update = skip_lag(item, "tripUpdated")?;
            Some(TripUpdate {
                trip: update.trip,
                event: update.event,
            })
        });
        Ok(stream)
    }

    /// Streams every change of every trip (requests, offers, state changes, cancellations, ratings),
    /// for dashboards.
    async fn live_trips(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = TripUpdate>> {
        allowed(caller(ctx)?.read_all("follow every trip"))?;
        let services = ctx.data::<Services>()?;
        let stream = BroadcastStream::new(services.bus.subscribe_all_trips()).filter_map(
            |item| async move {
                let update = skip_lag(item, "liveTrips")?;
                Some(TripUpdate {
                    trip: update.trip,
                    event: update.event,
                })
            },
        );
        Ok(stream)
    }
}
