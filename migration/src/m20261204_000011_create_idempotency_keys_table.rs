use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261204_000010_create_api_tokens_table::ApiTokens;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(big_pk_auto(IdempotencyKeys::Id))
                    .col(big_integer(IdempotencyKeys::TokenId))
                    .col(string_len(IdempotencyKeys::Key, 255))
                    // Hex SHA-256 of the canonical JSON of query, operation name and variables.
                    .col(string_len(IdempotencyKeys::RequestHash, 64))
                    .col(string_len(IdempotencyKeys::Status, 16))
                    // The HTTP response body, exactly as first sent; null while pending.
                    .col(text_null(IdempotencyKeys::Response))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_idempotency_keys_token")
                            .from(IdempotencyKeys::Table, IdempotencyKeys::TokenId)
                            .to(ApiTokens::Table, ApiTokens::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // One row per key and token: of concurrent first uses, exactly one insert commits.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("uq_idempotency_keys_token_key")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::TokenId)
                    .col(IdempotencyKeys::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // For the sweep that deletes expired keys.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_idempotency_keys_created_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum IdempotencyKeys {
    Table,
    Id,
    TokenId,
    Key,
    RequestHash,
    Status,
    Response,
    CreatedAt,
}
