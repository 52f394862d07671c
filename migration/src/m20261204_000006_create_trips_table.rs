use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261204_000001_create_riders_table::Riders;
use crate::m20261204_000003_create_drivers_table::Drivers;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A driver holds at most one trip in an active state. Enforced here, not only in memory,
/// so two concurrent accepts by one driver on different trips cannot both commit.
const ONE_ACTIVE_TRIP_PER_DRIVER: &str = "CREATE UNIQUE INDEX IF NOT EXISTS \
     uq_trips_active_driver ON trips (driver_id) \
     WHERE status IN ('ACCEPTED', 'ARRIVED', 'STARTED')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Trips::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Trips::Id))
                    .col(big_integer(Trips::RiderId))
                    .col(big_integer_null(Trips::DriverId))
                    .col(string_len(Trips::VehicleType, 16))
                    .col(string_len(Trips::Status, 16))
                    .col(double(Trips::PickupLat))
                    .col(double(Trips::PickupLng))
                    .col(double_null(Trips::DropoffLat))
                    .col(double_null(Trips::DropoffLng))
                    .col(timestamp_with_time_zone_null(Trips::ScheduledAt))
                    .col(timestamp_with_time_zone(Trips::RequestedAt))
                    .col(timestamp_with_time_zone_null(Trips::AcceptedAt))
                    .col(timestamp_with_time_zone_null(Trips::ArrivedAt))
                    .col(timestamp_with_time_zone_null(Trips::StartedAt))
                    .col(timestamp_with_time_zone_null(Trips::CompletedAt))
                    .col(timestamp_with_time_zone_null(Trips::CancelledAt))
                    .col(string_len_null(Trips::CancelledBy, 16))
                    .col(string_len_null(Trips::CancelReason, 500))
                    .col(timestamp_with_time_zone(Trips::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_trips_rider")
                            .from(Trips::Table, Trips::RiderId)
                            .to(Riders::Table, Riders::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_trips_driver")
                            .from(Trips::Table, Trips::DriverId)
                            .to(Drivers::Table, Drivers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_trips_status")
                    .table(Trips::Table)
                    .col(Trips::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_trips_rider")
                    .table(Trips::Table)
                    .col(Trips::RiderId)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(ONE_ACTIVE_TRIP_PER_DRIVER)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Trips::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Trips {
    Table,
    Id,
    RiderId,
    DriverId,
    VehicleType,
    Status,
    PickupLat,
    PickupLng,
    DropoffLat,
    DropoffLng,
    ScheduledAt,
    RequestedAt,
    AcceptedAt,
    ArrivedAt,
    StartedAt,
    CompletedAt,
    CancelledAt,
    CancelledBy,
    CancelReason,
    UpdatedAt,
}
