use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Vehicles::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Vehicles::Id))
                    .col(string_len(Vehicles::VehicleType, 16))
                    .col(string_len_uniq(Vehicles::Plate, 20))
                    .col(string_len_null(Vehicles::Description, 100))
                    .col(timestamp_with_time_zone(Vehicles::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Vehicles::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Vehicles {
    Table,
    Id,
    VehicleType,
    Plate,
    Description,
    CreatedAt,
}
