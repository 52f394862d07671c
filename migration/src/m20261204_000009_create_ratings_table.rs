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
                    .table(Ratings::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Ratings::Id))
                    .col(big_integer(Ratings::TripId))
                    .col(string_len(Ratings::RaterRole, 16))
                    .col(big_integer(Ratings::RaterId))
                    .col(big_integer(Ratings::RateeId))
                    .col(small_integer(Ratings::Stars))
                    .col(string_len_null(Ratings::Comment, 500))
                    .col(timestamp_with_time_zone(Ratings::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_ratings_trip")
                            .from(Ratings::Table, Ratings::TripId)
                            .to(Trips::Table, Trips::Id),
                    )
                    .check(Expr::col(Ratings::Stars).between(1, 5))
                    .to_owned(),
            )
            .await?;
        // One rating per side of a trip, enforced by the database so a retried call cannot
        // count twice in the driver's average.
        manager
            .create_index(
                Index::create()
                    .name("uq_ratings_trip_rater")
                    .table(Ratings::Table)
                    .col(Ratings::TripId)
                    .col(Ratings::RaterRole)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Ratings::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Ratings {
    Table,
    Id,
    TripId,
    RaterRole,
    RaterId,
    RateeId,
    Stars,
    Comment,
    CreatedAt,
}
