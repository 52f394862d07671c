use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261204_000006_create_trips_table::Trips;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TripEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TripEvents::Id))
                    .col(big_integer(TripEvents::TripId))
                    .col(string_len(TripEvents::Kind, 16))
                    .col(string_len(TripEvents::ActorRole, 16))
                    .col(big_integer_null(TripEvents::ActorId))
                    .col(string_len_null(TripEvents::FromStatus, 16))
                    .col(string_len(TripEvents::ToStatus, 16))
                    .col(big_integer_null(TripEvents::OfferId))
                    .col(string_len_null(TripEvents::Detail, 500))
                    .col(timestamp_with_time_zone(TripEvents::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_trip_events_trip")
                            .from(TripEvents::Table, TripEvents::TripId)
                            .to(Trips::Table, Trips::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_trip_events_trip")
                    .table(TripEvents::Table)
                    .col(TripEvents::TripId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TripEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum TripEvents {
    Table,
    Id,
    TripId,
    Kind,
    ActorRole,
    ActorId,
    FromStatus,
    ToStatus,
    OfferId,
    Detail,
    CreatedAt,
}
