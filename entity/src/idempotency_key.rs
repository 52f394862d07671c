//! Idempotency keys: the first response to a mutation sent with an `Idempotency-Key`, kept so
//! that a retry with the same key gets that response instead of running the mutation again.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Progress of the request that first used a key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum IdempotencyKeyStatus {
    /// The request is running; `response` is null.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// The request finished and `response` contains its body.
    #[sea_orm(string_value = "DONE")]
    Done,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// API token that sent the key; keys of different tokens are independent.
    pub token_id: i64,
    /// The key as the client sent it, 1 to 255 printable ASCII characters. Unique per token.
    pub key: String,
    /// Lower-case hex SHA-256 of the canonical JSON of the request's query, operation name and
    /// variables.
    pub request_hash: String,
    pub status: IdempotencyKeyStatus,
    /// HTTP response body of the first request, byte for byte; `None` while pending.
    #[sea_orm(column_type = "Text", nullable)]
    pub response: Option<String>,
    /// When the first request arrived; the key expires a fixed time after this.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
