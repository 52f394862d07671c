//! Trips from request to completion or cancellation.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{ActorRole, TripStatus, VehicleType};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "trips")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub rider_id: i64,
    /// Set when a driver accepts; kept after completion or cancellation.
    pub driver_id: Option<i64>,
    pub vehicle_type: VehicleType,
    pub status: TripStatus,
    /// Pickup point in decimal degrees (WGS84).
    pub pickup_lat: f64,
    pub pickup_lng: f64,
    pub dropoff_lat: Option<f64>,
    pub dropoff_lng: Option<f64>,
    /// When the rider wants to be picked up; `None` means now.
    pub scheduled_at: Option<DateTimeUtc>,
    pub requested_at: DateTimeUtc,
    pub accepted_at: Option<DateTimeUtc>,
    pub arrived_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub cancelled_at: Option<DateTimeUtc>,
    pub cancelled_by: Option<ActorRole>,
    pub cancel_reason: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::rider::Entity",
        from = "Column::RiderId",
        to = "super::rider::Column::Id"
    )]
    Rider,
    #[sea_orm(
        belongs_to = "super::driver::Entity",
        from = "Column::DriverId",
        to = "super::driver::Column::Id"
    )]
    Driver,
    #[sea_orm(has_many = "super::offer::Entity")]
    Offer,
    #[sea_orm(has_many = "super::trip_event::Entity")]
    TripEvent,
}

impl Related<super::rider::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Rider.def()
    }
}

impl Related<super::offer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Offer.def()
    }
}

impl Related<super::trip_event::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::TripEvent.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
