use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261204_000003_create_drivers_table::Drivers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DriverPresence::Table)
                    .if_not_exists()
                    .col(big_integer(DriverPresence::DriverId).primary_key())
                    .col(boolean(DriverPresence::Online))
                    .col(double_null(DriverPresence::Lat))
                    .col(double_null(DriverPresence::Lng))
                    .col(double_null(DriverPresence::HeadingDeg))
                    .col(double_null(DriverPresence::SpeedMps))
                    .col(double_null(DriverPresence::AccuracyM))
                    .col(timestamp_with_time_zone_null(DriverPresence::RecordedAt))
                    .col(timestamp_with_time_zone_null(
                        DriverPresence::AvailableSince,
                    ))
                    .col(timestamp_with_time_zone(DriverPresence::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_driver_presence_driver")
                            .from(DriverPresence::Table, DriverPresence::DriverId)
                            .to(Drivers::Table, Drivers::Id),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DriverPresence::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum DriverPresence {
    Table,
    DriverId,
    Online,
    Lat,
    Lng,
    HeadingDeg,
    SpeedMps,
    AccuracyM,
    RecordedAt,
    AvailableSince,
    UpdatedAt,
}
