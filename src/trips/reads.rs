//! Read-only trip queries for the API.

use entity::enums::TripStatus;
use entity::{offer, rating, trip, trip_event};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::Trips;
use crate::error::{ServiceError, ServiceResult};

/// Largest page of `trips`.
pub const MAX_TRIPS_PAGE: u64 = 100;

/// Filter of the trip list; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TripFilter {
    pub status: Option<Vec<TripStatus>>,
    pub rider_id: Option<i64>,
    pub driver_id: Option<i64>,
    /// Only trips with an id below this one, for paging newest first.
    pub before_id: Option<i64>,
    pub limit: Option<i32>,
}

impl Trips {
    pub async fn trip(&self, trip_id: i64) -> ServiceResult<Option<trip::Model>> {
        Ok(trip::Entity::find_by_id(trip_id).one(&self.db).await?)
    }

    /// Trips matching `filter`, newest first.
    ///
    /// # Errors
    /// `InvalidInput` for a limit outside 1..=100.
    pub async fn trips(&self, filter: &TripFilter) -> ServiceResult<Vec<trip::Model>> {
        let limit = match filter.limit {
            None => 20,
            Some(n) if n >= 1 && n as u64 <= MAX_TRIPS_PAGE => n as u64,
            Some(n) => {
                return Err(ServiceError::invalid(
                    "limit",
                    format!("{n} is outside 1..={MAX_TRIPS_PAGE}"),
                ));
            }
        };
        let mut query = trip::Entity::find()
            .order_by_desc(trip::Column::Id)
            .limit(limit);
        if let Some(statuses) = &filter.status {
            query = query.filter(trip::Column::Status.is_in(statuses.iter().copied()));
        }
        if let Some(rider_id) = filter.rider_id {
            query = query.filter(trip::Column::RiderId.eq(rider_id));
        }
        if let Some(driver_id) = filter.driver_id {
            query = query.filter(trip::Column::DriverId.eq(driver_id));
        }
        if let Some(before_id) = filter.before_id {
            query = query.filter(trip::Column::Id.lt(before_id));
        }
        Ok(query.all(&self.db).await?)
    }

    /// Offers of a trip, oldest first.
    pub async fn offers(&self, trip_id: i64) -> ServiceResult<Vec<offer::Model>> {
        Ok(offer::Entity::find()
            .filter(offer::Column::TripId.eq(trip_id))
            .order_by_asc(offer::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Audit events of a trip, oldest first.
    pub async fn events(&self, trip_id: i64) -> ServiceResult<Vec<trip_event::Model>> {
        Ok(trip_event::Entity::find()
            .filter(trip_event::Column::TripId.eq(trip_id))
            .order_by_asc(trip_event::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Ratings of a trip: up to one per side.
    pub async fn ratings(&self, trip_id: i64) -> ServiceResult<Vec<rating::Model>> {
        Ok(rating::Entity::find()
            .filter(rating::Column::TripId.eq(trip_id))
            .order_by_asc(rating::Column::Id)
            .all(&self.db)
            .await?)
    }
}
