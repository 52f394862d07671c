//! Latest known state of each driver: online flag and last accepted position.
//!
//! One row per driver that ever went online. The in-memory spatial index is rebuilt from these
//! rows at start.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "driver_presence")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub driver_id: i64,
    pub online: bool,
    /// Latitude in decimal degrees (WGS84); `None` until the first position arrives.
    pub lat: Option<f64>,
    /// Longitude in decimal degrees (WGS84).
    pub lng: Option<f64>,
    /// Degrees clockwise from true north, 0 to 360.
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
    /// Device time of the last accepted fix.
    pub recorded_at: Option<DateTimeUtc>,
    /// Since when the driver has been online without a trip; drives the idle-time score.
    pub available_since: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::driver::Entity",
        from = "Column::DriverId",
        to = "super::driver::Column::Id"
    )]
    Driver,
}

impl Related<super::driver::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Driver.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
