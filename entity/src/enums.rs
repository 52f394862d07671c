//! Enumerations stored as strings (at most 16 characters).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Kind of vehicle a driver operates and a trip requests.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum VehicleType {
    /// Motorcycle taxi, one passenger.
    #[sea_orm(string_value = "MOTO")]
    Moto,
    /// Car taxi.
    #[sea_orm(string_value = "CAB")]
    Cab,
}

/// Lifecycle state of a trip. `Accepted`, `Arrived` and `Started` are the active states: a
/// driver holds at most one trip in them, which a partial unique index enforces.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum TripStatus {
    #[sea_orm(string_value = "REQUESTED")]
    Requested,
    #[sea_orm(string_value = "ACCEPTED")]
    Accepted,
    #[sea_orm(string_value = "ARRIVED")]
    Arrived,
    #[sea_orm(string_value = "STARTED")]
    Started,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

/// State of an offer of one trip to one driver.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum OfferStatus {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "ACCEPTED")]
    Accepted,
    #[sea_orm(string_value = "DECLINED")]
    Declined,
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
    /// The trip was taken by another driver or cancelled while the offer was pending.
    #[sea_orm(string_value = "WITHDRAWN")]
    Withdrawn,
}

/// Who performed an action recorded in the trip event log.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum ActorRole {
    #[sea_orm(string_value = "RIDER")]
    Rider,
    #[sea_orm(string_value = "DRIVER")]
    Driver,
    /// The server itself, for example when an offer expires.
    #[sea_orm(string_value = "SYSTEM")]
    System,
}

/// What happened to a trip, one row of the append-only audit log per event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum TripEventKind {
    #[sea_orm(string_value = "REQUESTED")]
    Requested,
    #[sea_orm(string_value = "OFFERED")]
    Offered,
    #[sea_orm(string_value = "OFFER_DECLINED")]
    OfferDeclined,
    #[sea_orm(string_value = "OFFER_EXPIRED")]
    OfferExpired,
    #[sea_orm(string_value = "ACCEPTED")]
    Accepted,
    #[sea_orm(string_value = "ARRIVED")]
    Arrived,
    #[sea_orm(string_value = "STARTED")]
    Started,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
    #[sea_orm(string_value = "RATED")]
    Rated,
    /// A party got the other party's phone number through a contact handoff.
    #[sea_orm(string_value = "CONTACT_SHARED")]
    ContactShared,
}
