//! Trip lifecycle mutations.

use async_graphql::{Context, ID, Object, Result};

use super::access::{allowed, caller};
use crate::app::Services;
use crate::schema::error::{api_error, parse_id};
use crate::schema::inputs::{ActorInput, RequestTripInput};
use crate::schema::types::{Offer, Rating, Trip};
use crate::trips::{Actor, TripRequest};
use entity::enums::ActorRole;

#[derive(Default)]
pub struct TripMutation;

fn actor(input: &ActorInput, field: &str) -> Result<Actor> {
    Ok(Actor {
        role: input.role.into(),
        id: Some(parse_id(&input.id, field)?),
    })
}

/// Checks that the caller may act as `actor`.
fn check_actor(ctx: &Context<'_>, actor: &Actor) -> Result<()> {
    let principal = caller(ctx)?;
    let id = actor.id.unwrap_or_default();
    allowed(match actor.role {
        ActorRole::Rider => principal.act_for_rider(id),
        ActorRole::Driver => principal.act_for_driver(id),
        ActorRole::System => principal.administer("act as the system"),
    })
}

/// Parses the trip and driver ids of a driver step and checks that the caller may act for
/// that driver.
fn driver_step(ctx: &Context<'_>, trip_id: &ID, driver_id: &ID) -> Result<(i64, i64)> {
    let (trip_id, driver_id) = ids(trip_id, driver_id)?;
    allowed(caller(ctx)?.act_for_driver(driver_id))?;
    Ok((trip_id, driver_id))
}

fn ids(trip_id: &ID, driver_id: &ID) -> Result<(i64, i64)> {
    Ok((
        parse_id(trip_id, "tripId")?,
        parse_id(driver_id, "driverId")?,
    ))
}

#[Object]
impl TripMutation {
    /// Requests a ride. The trip starts REQUESTED and shows in `nearbyTripRequests`.
    async fn request_trip(&self, ctx: &Context<'_>, input: RequestTripInput) -> Result<Trip> {
        let rider_id = parse_id(&input.rider_id, "input.riderId")?;
        allowed(caller(ctx)?.act_for_rider(rider_id))?;
        let trips = &ctx.data::<Services>()?.trips;
        let request = TripRequest {
            rider_id,
            pickup: (input.pickup.lat, input.pickup.lng),
            dropoff: input.dropoff.map(|p| (p.lat, p.lng)),
            vehicle_type: input.vehicle_type.into(),
            scheduled_at: input.scheduled_at,
        };
        Ok(Trip(trips.request_trip(request).await.map_err(api_error)?))
    }

    /// Offers a REQUESTED trip to the driver the rider picked. The driver has 30 seconds by
    /// default to accept or decline; meanwhile no other driver can accept the trip.
    async fn offer_trip(&self, ctx: &Context<'_>, trip_id: ID, driver_id: ID) -> Result<Offer> {
        let (trip_id, driver_id) = ids(&trip_id, &driver_id)?;
        allowed(caller(ctx)?.dispatch("offer trips"))?;
        let trips = &ctx.data::<Services>()?.trips;
        Ok(Offer(
            trips
                .offer_trip(trip_id, driver_id)
                .await
                .map_err(api_error)?,
        ))
    }

    /// Gives a REQUESTED trip to a driver, through an offer or straight from
    /// `nearbyTripRequests`. Of concurrent accepts exactly one wins; the others get
    /// INVALID_TRANSITION.
    async fn accept_trip(&self, ctx: &Context<'_>, trip_id: ID, driver_id: ID) -> Result<Trip> {
        let (trip_id, driver_id) = driver_step(ctx, &trip_id, &driver_id)?;
        let trips = &ctx.data::<Services>()?.trips;
        Ok(Trip(
            trips
                .accept_trip(trip_id, driver_id)
                .await
                .map_err(api_error)?,
        ))
    }

    /// Declines a driver's pending offer. The trip stays REQUESTED for other drivers.
    async fn decline_trip(
        &self,
        ctx: &Context<'_>,
        trip_id: ID,
        driver_id: ID,
        #[graphql(desc = "Up to 500 characters.")] reason: Option<String>,
    ) -> Result<Offer> {
        let (trip_id, driver_id) = driver_step(ctx, &trip_id, &driver_id)?;
        let trips = &ctx.data::<Services>()?.trips;
        let offer = trips
            .decline_trip(trip_id, driver_id, reason.as_deref())
            .await;
        Ok(Offer(offer.map_err(api_error)?))
    }

    /// Moves a trip from ACCEPTED to ARRIVED: the assigned driver is at the pickup.
    async fn arrive_at_pickup(
        &self,
        ctx: &Context<'_>,
        trip_id: ID,
        driver_id: ID,
    ) -> Result<Trip> {
        let (trip_id, driver_id) = driver_step(ctx, &trip_id, &driver_id)?;
        let trips = &ctx.data::<Services>()?.trips;
        Ok(Trip(
            trips
                .arrive_at_pickup(trip_id, driver_id)
                .await
                .map_err(api_error)?,
        ))
    }

    /// Moves a trip from ARRIVED to STARTED: the rider is on board.
    async fn start_trip(&self, ctx: &Context<'_>, trip_id: ID, driver_id: ID) -> Result<Trip> {
        let (trip_id, driver_id) = driver_step(ctx, &trip_id, &driver_id)?;
        let trips = &ctx.data::<Services>()?.trips;
        Ok(Trip(
            trips
                .start_trip(trip_id, driver_id)
                .await
                .map_err(api_error)?,
        ))
    }

    /// Moves a trip from STARTED to COMPLETED: the rider was dropped off, and the driver is
    /// available again.
    async fn complete_trip(&self, ctx: &Context<'_>, trip_id: ID, driver_id: ID) -> Result<Trip> {
        let (trip_id, driver_id) = driver_step(ctx, &trip_id, &driver_id)?;
        let trips = &ctx.data::<Services>()?.trips;
        Ok(Trip(
            trips
                .complete_trip(trip_id, driver_id)
                .await
                .map_err(api_error)?,
        ))
    }

    /// Cancels a trip before it starts. The rider may cancel from REQUESTED, ACCEPTED or
    /// ARRIVED, the assigned driver from ACCEPTED or ARRIVED.
    async fn cancel_trip(
        &self,
        ctx: &Context<'_>,
        trip_id: ID,
        #[graphql(name = "actor")] actor_input: ActorInput,
        #[graphql(desc = "Why, 1 to 500 characters.")] reason: String,
    ) -> Result<Trip> {
        let trip_id = parse_id(&trip_id, "tripId")?;
        let actor = actor(&actor_input, "actor.id")?;
        check_actor(ctx, &actor)?;
        let trips = &ctx.data::<Services>()?.trips;
        Ok(Trip(
            trips
                .cancel_trip(trip_id, actor, &reason)
                .await
                .map_err(api_error)?,
        ))
    }

    /// Rates the other side of a COMPLETED trip, once per side: the rider rates the driver
    /// and the driver rates the rider.
    async fn rate_trip(
        &self,
        ctx: &Context<'_>,
        trip_id: ID,
        by: ActorInput,
        #[graphql(desc = "1 to 5.")] stars: i32,
        #[graphql(desc = "Up to 500 characters.")] comment: Option<String>,
    ) -> Result<Rating> {
        let trip_id = parse_id(&trip_id, "tripId")?;
        let actor = actor(&by, "by.id")?;
        check_actor(ctx, &actor)?;
        let trips = &ctx.data::<Services>()?.trips;
        let rating = trips
            .rate_trip(trip_id, actor, stars, comment.as_deref())
            .await;
        Ok(Rating(rating.map_err(api_error)?))
    }
}
