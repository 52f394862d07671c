use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261204_000002_create_vehicles_table::Vehicles;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Drivers::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Drivers::Id))
                    .col(string_len(Drivers::Name, 100))
                    .col(string_len_uniq(Drivers::Phone, 16))
                    .col(big_integer(Drivers::VehicleId))
                    .col(big_integer(Drivers::RatingSum).default(0))
                    .col(big_integer(Drivers::RatingCount).default(0))
                    .col(big_integer(Drivers::OffersAccepted).default(0))
                    .col(big_integer(Drivers::OffersRejected).default(0))
                    .col(timestamp_with_time_zone(Drivers::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_drivers_vehicle")
                            .from(Drivers::Table, Drivers::VehicleId)
                            .to(Vehicles::Table, Vehicles::Id),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Drivers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Drivers {
    Table,
    Id,
    Name,
    Phone,
    VehicleId,
    RatingSum,
    RatingCount,
    OffersAccepted,
    OffersRejected,
    CreatedAt,
}
