//! Ratings after a completed trip, one per side: the rider rates the driver and the driver
//! rates the rider.

use sea_orm::entity::prelude::*;

use crate::enums::ActorRole;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ratings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub trip_id: i64,
    /// Side that gave the rating; unique together with `trip_id`.
    pub rater_role: ActorRole,
    pub rater_id: i64,
    pub ratee_id: i64,
    /// 1 to 5.
    pub stars: i16,
    pub comment: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
