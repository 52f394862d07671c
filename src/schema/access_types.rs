//! GraphQL types of API tokens and contact handoffs.

use async_graphql::{Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use entity::api_token;

use super::enums::PartyRole;
use crate::auth::Role;
use crate::trips::ContactHandoff;

/// Permission level of a token.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRole {
    /// Everything, including token management.
    Admin,
    /// A messaging bridge: registers and acts for any rider or driver, sends offers. Sees
    /// phone numbers masked.
    Bridge,
    /// Read-only queries and subscriptions over every driver and trip.
    Dashboard,
    /// One driver (`subjectId`): moves itself and acts on its own offers and trips.
    Driver,
    /// One rider (`subjectId`): requests, follows, cancels and rates its own trips.
    Rider,
}

impl From<ApiRole> for Role {
    fn from(role: ApiRole) -> Self {
        match role {
            ApiRole::Admin => Role::Admin,
            ApiRole::Bridge => Role::Bridge,
            ApiRole::Dashboard => Role::Dashboard,
            ApiRole::Driver => Role::Driver,
            ApiRole::Rider => Role::Rider,
        }
    }
}

impl From<Role> for ApiRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Admin => ApiRole::Admin,
            Role::Bridge => ApiRole::Bridge,
            Role::Dashboard => ApiRole::Dashboard,
            Role::Driver => ApiRole::Driver,
            Role::Rider => ApiRole::Rider,
        }
    }
}

/// A token as stored: never its secret.
#[derive(SimpleObject, Debug, Clone)]
pub struct ApiToken {
    pub id: ID,
    pub name: String,
    pub role: ApiRole,
    /// Driver or rider id of a driver or rider token.
    pub subject_id: Option<ID>,
    pub created_at: DateTime<Utc>,
    /// Set once revoked; the token stops working within seconds on every instance.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_token::Model> for ApiToken {
    fn from(row: api_token::Model) -> Self {
        ApiToken {
            id: ID(row.id.to_string()),
            // Rows are written by this server with a valid role.
            role: row
                .role
                .parse::<Role>()
                .map_or(ApiRole::Dashboard, ApiRole::from),
            name: row.name,
            subject_id: row.subject_id.map(|id| ID(id.to_string())),
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// A token just created, with its secret.
#[derive(SimpleObject, Debug, Clone)]
pub struct CreatedApiToken {
    pub token: ApiToken,
    /// The bearer token. Shown only in this response; only its hash is stored.
    pub secret: String,
}

/// A new token.
#[derive(InputObject, Debug, Clone)]
pub struct CreateApiTokenInput {
    /// Holder of the token, such as a bridge or a driver's phone, 1 to 100 characters.
    pub name: String,
    pub role: ApiRole,
    /// The driver id of a DRIVER token or the rider id of a RIDER token; omitted otherwise.
    pub subject_id: Option<ID>,
}

/// The other party of a trip, revealed by `requestContact`.
#[derive(SimpleObject, Debug, Clone)]
pub struct Contact {
    pub trip_id: ID,
    /// Whether this is the trip's rider or driver.
    pub role: PartyRole,
    pub id: ID,
    pub name: String,
    /// Full E.164 number.
    pub phone: String,
    /// WhatsApp click-to-chat link to the number.
    pub chat_link: String,
}

impl From<ContactHandoff> for Contact {
    fn from(handoff: ContactHandoff) -> Self {
        let digits: String = handoff.phone.chars().filter(char::is_ascii_digit).collect();
        Contact {
            trip_id: ID(handoff.trip_id.to_string()),
            role: match handoff.role {
                entity::enums::ActorRole::Rider => PartyRole::Rider,
                _ => PartyRole::Driver,
            },
            id: ID(handoff.id.to_string()),
            name: handoff.name,
            chat_link: format!("https://wa.me/{digits}"),
            phone: handoff.phone,
        }
    }
}
