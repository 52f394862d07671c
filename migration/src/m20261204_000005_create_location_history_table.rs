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
                    .table(LocationHistory::Table)
                    .if_not_exists()
                    .col(big_pk_auto(LocationHistory::Id))
                    .col(big_integer(LocationHistory::DriverId))
                    .col(double(LocationHistory::Lat))
                    .col(double(LocationHistory::Lng))
                    .col(double_null(LocationHistory::HeadingDeg))
                    .col(double_null(LocationHistory::SpeedMps))
                    .col(double_null(LocationHistory::AccuracyM))
                    .col(timestamp_with_time_zone(LocationHistory::RecordedAt))
                    .col(timestamp_with_time_zone(LocationHistory::ReceivedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_location_history_driver")
                            .from(LocationHistory::Table, LocationHistory::DriverId)
                            .to(Drivers::Table, Drivers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_location_history_driver_time")
                    .table(LocationHistory::Table)
                    .col(LocationHistory::DriverId)
                    .col(LocationHistory::RecordedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LocationHistory::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum LocationHistory {
    Table,
    Id,
    DriverId,
    Lat,
    Lng,
    HeadingDeg,
    SpeedMps,
    AccuracyM,
    RecordedAt,
    ReceivedAt,
}
