//! Registration of riders and drivers.

use async_graphql::{Context, Object, Result};

use super::access::{allowed, caller};
use crate::accounts::DriverRegistration;
use crate::app::Services;
use crate::schema::error::api_error;
use crate::schema::inputs::{RegisterDriverInput, RegisterRiderInput};
use crate::schema::types::{Driver, Rider};

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Registers a rider. Fails with CONFLICT when the phone is taken.
    async fn register_rider(&self, ctx: &Context<'_>, input: RegisterRiderInput) -> Result<Rider> {
        allowed(caller(ctx)?.dispatch("register riders"))?;
        let accounts = &ctx.data::<Services>()?.accounts;
        let rider = accounts
            .register_rider(&input.name, &input.phone)
            .await
            .map_err(api_error)?;
        Ok(Rider(rider))
    }

    /// Registers a driver and vehicle; the driver starts offline. Fails with CONFLICT when the
    /// phone or plate is taken.
    async fn register_driver(
        &self,
        ctx: &Context<'_>,
        input: RegisterDriverInput,
    ) -> Result<Driver> {
        allowed(caller(ctx)?.dispatch("register drivers"))?;
        let accounts = &ctx.data::<Services>()?.accounts;
        let registration = DriverRegistration {
            name: input.name,
            phone: input.phone,
            vehicle_type: input.vehicle.vehicle_type.into(),
            plate: input.vehicle.plate,
            vehicle_description: input.vehicle.description,
        };
        let driver = accounts
            .register_driver(registration)
            .await
            .map_err(api_error)?;
        Ok(Driver(driver))
    }
}
