//! Errors of the domain services, shared by tracking, matching, trips and accounts.
//!
//! Each variant is either a client error, which the GraphQL layer returns with a stable
//! `extensions.code`, or an internal one, which it logs once with its cause and hides behind a
//! generic message.

use entity::enums::OfferStatus;
use sea_orm::DbErr;

use crate::geometry::CoordinateError;
use crate::trips::state::IllegalTransition;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An argument failed validation. `field` is the argument path, such as `pickup.lat`.
    #[error("invalid {field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: i64 },
    /// The trip's state does not allow the action.
    #[error("trip {trip_id}: {source}")]
    InvalidTransition {
        trip_id: i64,
        #[source]
        source: IllegalTransition,
    },
    /// The driver never received an offer of the trip.
    #[error("driver {driver_id} has no offer of trip {trip_id}")]
    OfferNotFound { trip_id: i64, driver_id: i64 },
    /// The driver's latest offer of the trip was already accepted, declined or expired.
    #[error("offer {offer_id} is {status:?}, not pending")]
    OfferNotPending { offer_id: i64, status: OfferStatus },
    /// The request is valid but clashes with the current state of another object, such as a
    /// driver who already holds a trip.
    #[error("{0}")]
    Conflict(String),
    /// The caller is not a party to the object it acts on, or its role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request has no token, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("database error")]
    Database(#[from] DbErr),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An invalid coordinate pair under `field`, naming `field.lat` or `field.lng` when the
    /// error concerns one axis.
    pub fn coordinate(field: &str, error: CoordinateError) -> Self {
        let axis = match &error {
            CoordinateError::NotFinite { axis, .. } => Some(*axis),
            CoordinateError::LatitudeOutOfRange { .. } => Some("lat"),
            CoordinateError::LongitudeOutOfRange { .. } => Some("lng"),
            CoordinateError::NullIsland { .. } | CoordinateError::OutsideServiceArea { .. } => None,
        };
        let path = axis.map_or_else(|| field.to_owned(), |axis| format!("{field}.{axis}"));
        ServiceError::invalid(path, error.to_string())
    }

    pub fn transition(trip_id: i64, source: IllegalTransition) -> Self {
        ServiceError::InvalidTransition { trip_id, source }
    }

    /// Returns whether this is a database that cannot be reached, rather than a statement that
    /// failed: the client may retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ServiceError::Database(e) if database_unreachable(e))
    }
}

/// Returns whether `e` reports that the database could not be reached (no connection, a dropped one, a pool
/// timeout), rather than that a statement failed.
pub fn database_unreachable(e: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;

    match e {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            e.as_ref(),
            Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Tls(_)
        ),
        _ => false,
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
