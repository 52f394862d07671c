//! DataLoaders that batch the driver, rider and vehicle look-ups of list fields into one
//! `WHERE id IN (...)` query per type. A missing id is absent from the map, and the field
//! resolves to null or to a `NOT_FOUND` error as its type requires.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use entity::{driver, rider, vehicle};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

/// Loads drivers by id.
pub struct DriverLoader(pub DatabaseConnection);

/// Loads riders by id.
pub struct RiderLoader(pub DatabaseConnection);

/// Loads vehicles by id.
pub struct VehicleLoader(pub DatabaseConnection);

impl Loader<i64> for DriverLoader {
    type Value = driver::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let rows = driver::Entity::find()
            .filter(driver::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}

impl Loader<i64> for RiderLoader {
    type Value = rider::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let rows = rider::Entity::find()
            .filter(rider::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}

impl Loader<i64> for VehicleLoader {
    type Value = vehicle::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let rows = vehicle::Entity::find()
            .filter(vehicle::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}
