//! Every accepted location fix, append-only.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "location_history")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub driver_id: i64,
    /// Decimal degrees (WGS84).
    pub lat: f64,
    pub lng: f64,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
    /// Device time of the fix.
    pub recorded_at: DateTimeUtc,
    /// Server time when the fix arrived.
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
