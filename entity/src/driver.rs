//! Drivers with their rating and offer-response counters.
//!
//! The counters are aggregates of `ratings` and `offers`, updated in the same transaction as
//! the rows they count, so ranking reads one row instead of scanning history.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "drivers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    /// E.164 phone number, unique.
    #[sea_orm(unique)]
    pub phone: String,
    pub vehicle_id: i64,
    /// Sum of the stars riders gave this driver.
    pub rating_sum: i64,
    pub rating_count: i64,
    /// Offers this driver accepted.
    pub offers_accepted: i64,
    /// Offers this driver declined or let expire.
    pub offers_rejected: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::vehicle::Entity",
        from = "Column::VehicleId",
        to = "super::vehicle::Column::Id"
    )]
    Vehicle,
    #[sea_orm(has_one = "super::driver_presence::Entity")]
    Presence,
}

impl Related<super::vehicle::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Vehicle.def()
    }
}

impl Related<super::driver_presence::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Presence.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
