use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Riders::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Riders::Id))
                    .col(string_len(Riders::Name, 100))
                    .col(string_len_uniq(Riders::Phone, 16))
                    .col(big_integer(Riders::RatingSum).default(0))
                    .col(big_integer(Riders::RatingCount).default(0))
                    .col(timestamp_with_time_zone(Riders::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Riders::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Riders {
    Table,
    Id,
    Name,
    Phone,
    RatingSum,
    RatingCount,
    CreatedAt,
}
