//! The caller of a request, for the role checks every resolver makes before it acts.

use async_graphql::{Context, Result};

use crate::app::Services;
use crate::auth::Principal;
use crate::error::ServiceError;
use crate::schema::error::api_error;

/// Returns the principal the transport authenticated. The HTTP and WebSocket layers reject
/// requests without a valid token, so a missing principal means a caller that skipped them,
/// such as an in-process execution without credentials.
pub fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data_opt::<Principal>().ok_or_else(|| {
        api_error(ServiceError::Unauthenticated(
            "missing token: send `Authorization: Bearer <token>`".into(),
        ))
    })
}

/// Checks that the caller may read trip `trip_id`; a missing trip is left to the caller, who
/// reports it as absent.
pub async fn check_trip_read(ctx: &Context<'_>, trip_id: i64) -> Result<()> {
    let principal = caller(ctx)?;
    if principal.reads_all() {
        return Ok(());
    }
    let trips = &ctx.data::<Services>()?.trips;
    let Some(trip) = trips.trip(trip_id).await.map_err(api_error)? else {
        return Ok(());
    };
    let offered_to: Vec<i64> = if principal.role == crate::auth::Role::Driver {
        trips
            .offers(trip_id)
            .await
            .map_err(api_error)?
            .iter()
            .map(|offer| offer.driver_id)
            .collect()
    } else {
        Vec::new()
    };
    principal
        .read_trip(trip_id, trip.rider_id, trip.driver_id, &offered_to)
        .map_err(api_error)
}

/// Converts a policy result for the client.
pub fn allowed(result: crate::error::ServiceResult<()>) -> Result<()> {
    result.map_err(api_error)
}
