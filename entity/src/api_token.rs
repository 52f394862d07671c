//! API tokens: bearer tokens that map a client to a role, stored as their SHA-256 only.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_tokens")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Who or what holds the token, for the operator's lists and logs.
    pub name: String,
    /// `admin`, `bridge`, `dashboard`, `driver` or `rider`.
    pub role: String,
    /// Driver id of a `driver` token, rider id of a `rider` token; `None` for the others.
    pub subject_id: Option<i64>,
    /// Lower-case hex SHA-256 of the token.
    #[sea_orm(unique)]
    pub token_hash: String,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
