//! Presence and location updates.

use async_graphql::{Context, ID, Object, Result};

use super::access::{allowed, caller};
use crate::app::Services;
use crate::error::ServiceError;
use crate::schema::enums::LocationUpdateStatus;
use crate::schema::error::{api_error, error_code, parse_id};
use crate::schema::inputs::{DriverLocationUpdateInput, LocationInput};
use crate::schema::types::{Driver, LocationUpdateResult};
use crate::tracking::{LocationInput as DomainLocation, UpdateOutcome, UpdateStatus};

#[derive(Default)]
pub struct TrackingMutation;

fn to_result(outcome: UpdateOutcome) -> LocationUpdateResult {
    LocationUpdateResult {
        driver_id: ID(outcome.driver_id.to_string()),
        status: match outcome.status {
            UpdateStatus::Accepted => LocationUpdateStatus::Accepted,
            UpdateStatus::Stale => LocationUpdateStatus::Stale,
            UpdateStatus::ImpossibleJump => LocationUpdateStatus::ImpossibleJump,
        },
        message: outcome.message,
        error_code: None,
        latest_recorded_at: outcome.latest_recorded_at,
    }
}

#[Object]
impl TrackingMutation {
    /// Puts a driver online, optionally with a position. A position that is not newer than
    /// the driver's last fix, or an impossible jump from it, is ignored like in
    /// `updateDriverLocation`; `presence` in the result shows the position the driver has.
    async fn go_online(
        &self,
        ctx: &Context<'_>,
        driver_id: ID,
        location: Option<LocationInput>,
    ) -> Result<Driver> {
        let driver_id = parse_id(&driver_id, "driverId")?;
        allowed(caller(ctx)?.act_for_driver(driver_id))?;
        let services = ctx.data::<Services>()?;
        let location = location.as_ref().map(DomainLocation::from);
        services
            .tracking
            .go_online(driver_id, location)
            .await
            .map_err(api_error)?;
        driver_model(services, driver_id).await
    }

    /// Takes a driver offline. Fails with CONFLICT while the driver has an active trip.
    async fn go_offline(&self, ctx: &Context<'_>, driver_id: ID) -> Result<Driver> {
        let driver_id = parse_id(&driver_id, "driverId")?;
        allowed(caller(ctx)?.act_for_driver(driver_id))?;
        let services = ctx.data::<Services>()?;
        services
            .tracking
            .go_offline(driver_id)
            .await
            .map_err(api_error)?;
        driver_model(services, driver_id).await
    }

    /// Records an online driver's position. An older fix than the last one is ignored with
    /// status STALE, and a physically impossible jump with IMPOSSIBLE_JUMP.
    async fn update_driver_location(
        &self,
        ctx: &Context<'_>,
        driver_id: ID,
        location: LocationInput,
    ) -> Result<LocationUpdateResult> {
        let driver_id = parse_id(&driver_id, "driverId")?;
        allowed(caller(ctx)?.act_for_driver(driver_id))?;
        let tracking = &ctx.data::<Services>()?.tracking;
        let outcome = tracking
            .update_location(driver_id, &DomainLocation::from(&location), "location")
            .await
            .map_err(api_error)?;
        Ok(to_result(outcome))
    }

    /// Records many positions, 1 to 500 by default, in order. Each row gets its own result;
    /// a bad row is REJECTED with an error code and does not stop the others.
    async fn update_driver_locations(
        &self,
        ctx: &Context<'_>,
        updates: Vec<DriverLocationUpdateInput>,
    ) -> Result<Vec<LocationUpdateResult>> {
        let principal = caller(ctx)?;
        let tracking = &ctx.data::<Services>()?.tracking;
        let mut parsed = Vec::with_capacity(updates.len());
        let mut rejected = Vec::new();
        for (i, update) in updates.iter().enumerate() {
            let id = parse_id(&update.driver_id, &format!("updates[{i}].driverId"));
            // A row for a driver the caller may not move fails the whole call: a batch mixes
            // drivers only for bridges and admins, who may move them all.
            if let Ok(id) = &id {
                allowed(principal.act_for_driver(*id))?;
            }
            match id {
                Ok(id) => parsed.push((id, DomainLocation::from(&update.location))),
                Err(e) => {
                    rejected.push((i, e.message));
                    parsed.push((0, DomainLocation::from(&update.location)));
                }
            }
        }
        let outcomes = tracking
            .update_locations(&parsed)
            .await
            .map_err(api_error)?;
        let mut results: Vec<LocationUpdateResult> = outcomes
            .into_iter()
            .zip(&updates)
            .map(|(outcome, update)| match outcome {
                Ok(outcome) => to_result(outcome),
                Err(e) => {
                    if let ServiceError::Database(cause) = &e {
                        tracing::error!(error = %cause, "location batch row failed");
                    }
                    LocationUpdateResult {
                        driver_id: update.driver_id.clone(),
                        status: LocationUpdateStatus::Rejected,
                        error_code: Some(error_code(&e).into()),
                        message: Some(match e {
                            ServiceError::Database(_) => "internal server error".into(),
                            other => other.to_string(),
                        }),
                        latest_recorded_at: None,
                    }
                }
            })
            .collect();
        for (i, message) in rejected {
            results[i] = LocationUpdateResult {
                driver_id: updates[i].driver_id.clone(),
                status: LocationUpdateStatus::Rejected,
                error_code: Some("BAD_USER_INPUT".into()),
                message: Some(message),
                latest_recorded_at: None,
            };
        }
        Ok(results)
    }
}

async fn driver_model(services: &Services, driver_id: i64) -> Result<Driver> {
    let driver = services
        .accounts
        .driver(driver_id)
        .await
        .map_err(api_error)?;
    driver.map(Driver).ok_or_else(|| {
        api_error(ServiceError::NotFound {
            entity: "driver",
            id: driver_id,
        })
    })
}
