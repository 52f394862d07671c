//! Append-only audit log of trips: who did what, when, and the state change it caused.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{ActorRole, TripEventKind, TripStatus};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "trip_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub trip_id: i64,
    pub kind: TripEventKind,
    pub actor_role: ActorRole,
    /// Rider or driver id, by `actor_role`; `None` for the system.
    pub actor_id: Option<i64>,
    pub from_status: Option<TripStatus>,
    pub to_status: TripStatus,
    pub offer_id: Option<i64>,
    /// Free text such as a cancel or decline reason.
    pub detail: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::trip::Entity",
        from = "Column::TripId",
        to = "super::trip::Column::Id"
    )]
    Trip,
}

impl Related<super::trip::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Trip.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
