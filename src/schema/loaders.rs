//! DataLoaders that batch the driver, rider and vehicle look-ups of list fields into one
//! `WHERE id IN (...)` query per type. A missing id is absent from the map, and the field
//! resolves to null or to a `NOT_FOUND` error as its type requires.
//!
//! With a profile cache, each batch reads the cache first and queries the database only for
//! the ids the cache does not have; see [`crate::cluster::cache`].

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use entity::{driver, rider, vehicle};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

use crate::cluster::cache::{Profile, SharedProfileCache, read_through};

/// Loads drivers by id.
pub struct DriverLoader {
    db: DatabaseConnection,
    cache: SharedProfileCache,
}

/// Loads riders by id.
pub struct RiderLoader {
    db: DatabaseConnection,
    cache: SharedProfileCache,
}

/// Loads vehicles by id.
pub struct VehicleLoader {
    db: DatabaseConnection,
    cache: SharedProfileCache,
}

impl DriverLoader {
    pub fn new(db: DatabaseConnection, cache: SharedProfileCache) -> Self {
        Self { db, cache }
    }
}

impl RiderLoader {
    pub fn new(db: DatabaseConnection, cache: SharedProfileCache) -> Self {
        Self { db, cache }
    }
}

impl VehicleLoader {
    pub fn new(db: DatabaseConnection, cache: SharedProfileCache) -> Self {
        Self { db, cache }
    }
}

impl Loader<i64> for DriverLoader {
    type Value = driver::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        read_through(
            &*self.cache,
            Profile::Driver,
            keys,
            |row: &driver::Model| row.id,
            |ids| {
                driver::Entity::find()
                    .filter(driver::Column::Id.is_in(ids))
                    .all(&self.db)
            },
        )
        .await
        .map_err(Arc::new)
    }
}

impl Loader<i64> for RiderLoader {
    type Value = rider::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        read_through(
            &*self.cache,
            Profile::Rider,
            keys,
            |row: &rider::Model| row.id,
            |ids| {
                rider::Entity::find()
                    .filter(rider::Column::Id.is_in(ids))
                    .all(&self.db)
            },
        )
        .await
        .map_err(Arc::new)
    }
}

impl Loader<i64> for VehicleLoader {
    type Value = vehicle::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        read_through(
            &*self.cache,
            Profile::Vehicle,
            keys,
            |row: &vehicle::Model| row.id,
            |ids| {
                vehicle::Entity::find()
                    .filter(vehicle::Column::Id.is_in(ids))
                    .all(&self.db)
            },
        )
        .await
        .map_err(Arc::new)
    }
}
