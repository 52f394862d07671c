//! Look-ups of riders, drivers and trips.

use async_graphql::{Context, ID, Object, Result};

use super::access::{allowed, caller, check_trip_read};
use crate::app::Services;
use crate::auth::Role;
use crate::schema::error::{api_error, parse_id};
use crate::schema::inputs::TripFilterInput;
use crate::schema::types::{Driver, Rider, Trip};
use crate::trips::TripFilter;

#[derive(Default)]
pub struct Query;

#[Object]
impl Query {
    /// Returns a driver by id, or null when there is none.
    async fn driver(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Driver>> {
        let id = parse_id(&id, "id")?;
        allowed(caller(ctx)?.read_driver(id))?;
        let accounts = &ctx.data::<Services>()?.accounts;
        Ok(accounts.driver(id).await.map_err(api_error)?.map(Driver))
    }

    /// Returns a driver by E.164 phone number, or null when there is none.
    async fn driver_by_phone(&self, ctx: &Context<'_>, phone: String) -> Result<Option<Driver>> {
        allowed(caller(ctx)?.read_all("look drivers up by phone"))?;
        let accounts = &ctx.data::<Services>()?.accounts;
        Ok(accounts
            .driver_by_phone(&phone)
            .await
            .map_err(api_error)?
            .map(Driver))
    }

    /// Drivers in id order: `limit` (1 to 100, default 20) after the id `after`.
    async fn drivers(
        &self,
        ctx: &Context<'_>,
        after: Option<ID>,
        limit: Option<i32>,
    ) -> Result<Vec<Driver>> {
        allowed(caller(ctx)?.read_all("list drivers"))?;
        let after = after.map(|id| parse_id(&id, "after")).transpose()?;
        let accounts = &ctx.data::<Services>()?.accounts;
        let drivers = accounts.drivers(after, limit).await.map_err(api_error)?;
        Ok(drivers.into_iter().map(Driver).collect())
    }

    /// Returns a rider by id, or null when there is none.
    async fn rider(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Rider>> {
        let id = parse_id(&id, "id")?;
        allowed(caller(ctx)?.read_rider(id))?;
        let accounts = &ctx.data::<Services>()?.accounts;
        Ok(accounts.rider(id).await.map_err(api_error)?.map(Rider))
    }

    /// Returns a rider by E.164 phone number, or null when there is none.
    async fn rider_by_phone(&self, ctx: &Context<'_>, phone: String) -> Result<Option<Rider>> {
        allowed(caller(ctx)?.read_all("look riders up by phone"))?;
        let accounts = &ctx.data::<Services>()?.accounts;
        Ok(accounts
            .rider_by_phone(&phone)
            .await
            .map_err(api_error)?
            .map(Rider))
    }

    /// Returns a trip by id, or null when there is none.
    async fn trip(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Trip>> {
        let id = parse_id(&id, "id")?;
        check_trip_read(ctx, id).await?;
        let trips = &ctx.data::<Services>()?.trips;
        Ok(trips.trip(id).await.map_err(api_error)?.map(Trip))
    }

    /// Trips newest first: `limit` (1 to 100, default 20) with ids below `before`. Driver and
    /// rider tokens see only their own trips.
    async fn trips(
        &self,
        ctx: &Context<'_>,
        filter: Option<TripFilterInput>,
        before: Option<ID>,
        limit: Option<i32>,
    ) -> Result<Vec<Trip>> {
        let filter = filter.unwrap_or_default();
        let mut filter = TripFilter {
            status: filter
                .status
                .map(|s| s.into_iter().map(Into::into).collect()),
            rider_id: filter
                .rider_id
                .map(|id| parse_id(&id, "filter.riderId"))
                .transpose()?,
            driver_id: filter
                .driver_id
                .map(|id| parse_id(&id, "filter.driverId"))
                .transpose()?,
            before_id: before.map(|id| parse_id(&id, "before")).transpose()?,
            limit,
        };
        let principal = caller(ctx)?;
        // A driver or rider token lists its own trips: the filter is narrowed, and asking for
        // someone else's is rejected rather than silently served with one's own.
        let own = match principal.role {
            Role::Driver => Some((&mut filter.driver_id, "filter.driverId")),
            Role::Rider => Some((&mut filter.rider_id, "filter.riderId")),
            _ => None,
        };
        if let Some((id, field)) = own {
            let subject = principal.subject_id;
            if id.is_some() && *id != subject {
                allowed(Err(crate::error::ServiceError::Forbidden(format!(
                    "a {} token lists only its own trips; {field} must be {} or omitted",
                    principal.role,
                    subject.unwrap_or_default()
                ))))?;
            }
            *id = subject;
        }
        let trips = &ctx.data::<Services>()?.trips;
        Ok(trips
            .trips(&filter)
            .await
            .map_err(api_error)?
            .into_iter()
            .map(Trip)
            .collect())
    }
}
