use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261204_000003_create_drivers_table::Drivers;
use crate::m20261204_000006_create_trips_table::Trips;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A trip is offered to one driver at a time: a second pending offer cannot commit.
const ONE_PENDING_OFFER_PER_TRIP: &str = "CREATE UNIQUE INDEX IF NOT EXISTS \
     uq_offers_pending_trip ON offers (trip_id) WHERE status = 'PENDING'";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Offers::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Offers::Id))
                    .col(big_integer(Offers::TripId))
                    .col(big_integer(Offers::DriverId))
                    .col(string_len(Offers::Status, 16))
                    .col(double_null(Offers::DistanceM))
                    .col(timestamp_with_time_zone(Offers::CreatedAt))
                    .col(timestamp_with_time_zone(Offers::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Offers::RespondedAt))
                    .col(string_len_null(Offers::DeclineReason, 500))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_offers_trip")
                            .from(Offers::Table, Offers::TripId)
                            .to(Trips::Table, Trips::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_offers_driver")
                            .from(Offers::Table, Offers::DriverId)
                            .to(Drivers::Table, Drivers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_offers_status_expiry")
                    .table(Offers::Table)
                    .col(Offers::Status)
                    .col(Offers::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(ONE_PENDING_OFFER_PER_TRIP)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Offers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Offers {
    Table,
    Id,
    TripId,
    DriverId,
    Status,
    DistanceM,
    CreatedAt,
    ExpiresAt,
    RespondedAt,
    DeclineReason,
}
