//! Vehicles, one per driver.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::VehicleType;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "vehicles")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub vehicle_type: VehicleType,
    /// Registration plate as printed, unique.
    #[sea_orm(unique)]
    pub plate: String,
    /// Free-text make, model and colour shown to riders, such as "Red Honda CG 125".
    pub description: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::driver::Entity")]
    Driver,
}

impl Related<super::driver::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Driver.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
