//! GraphQL enums, mirrored from the storage enums so the public names stay fixed.

use async_graphql::Enum;

/// Kind of vehicle.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "entity::enums::VehicleType")]
pub enum VehicleType {
    /// Motorcycle taxi.
    Moto,
    /// Car taxi.
    Cab,
}

/// Trip state. ACCEPTED, ARRIVED and STARTED are active: the driver is bound to the trip.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "entity::enums::TripStatus")]
pub enum TripStatus {
    Requested,
    Accepted,
    Arrived,
    Started,
    Completed,
    Cancelled,
}

/// Offer state.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "entity::enums::OfferStatus")]
pub enum OfferStatus {
    Pending,
    Accepted,
    Declined,
    Expired,
    /// The trip was taken by another driver or cancelled first.
    Withdrawn,
}

/// Who acted.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "entity::enums::ActorRole")]
pub enum ActorRole {
    Rider,
    Driver,
    /// The server, such as when an offer expires.
    System,
}

/// A party to a trip that can cancel or rate it.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyRole {
    Rider,
    Driver,
}

impl From<PartyRole> for entity::enums::ActorRole {
    fn from(role: PartyRole) -> Self {
        match role {
            PartyRole::Rider => entity::enums::ActorRole::Rider,
            PartyRole::Driver => entity::enums::ActorRole::Driver,
        }
    }
}

/// What happened to a trip.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "entity::enums::TripEventKind")]
pub enum TripEventKind {
    Requested,
    Offered,
    OfferDeclined,
    OfferExpired,
    Accepted,
    Arrived,
    Started,
    Completed,
    Cancelled,
    Rated,
    /// A party got the other party's phone number through `requestContact`.
    ContactShared,
}

/// Result of one location update.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationUpdateStatus {
    /// Stored and used for matching.
    Accepted,
    /// Ignored: not newer than the driver's last fix.
    Stale,
    /// Ignored: reaching it from the last fix would exceed the maximum speed.
    ImpossibleJump,
    /// Rejected with an error; see `errorCode` and `message`. Batch form only.
    Rejected,
}

/// A term of the ranking score.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreComponentKind {
    /// Closeness to the pickup, by ETA or distance.
    Proximity,
    /// Age of the driver's last location fix.
    Freshness,
    /// Rating smoothed toward a prior.
    Rating,
    /// Share of offers accepted, smoothed toward a prior.
    Acceptance,
    /// Time online without a trip.
    Idle,
}

impl From<crate::ranking::ComponentKind> for ScoreComponentKind {
    fn from(kind: crate::ranking::ComponentKind) -> Self {
        use crate::ranking::ComponentKind as K;
        match kind {
            K::Proximity => Self::Proximity,
            K::Freshness => Self::Freshness,
            K::Rating => Self::Rating,
            K::Acceptance => Self::Acceptance,
            K::Idle => Self::Idle,
        }
    }
}

/// How an ETA was computed.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtaMethod {
    /// Great-circle distance times a detour factor over an average speed; no road network.
    StraightLine,
}

/// What the proximity component measures.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::ranking::Proximity")]
pub enum ProximityMode {
    Eta,
    Distance,
}
