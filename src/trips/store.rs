//! Storage steps shared by the trip operations. Each takes the open transaction, so an
//! operation's reads and writes commit or roll back together.

use chrono::{DateTime, Utc};
use entity::enums::{ActorRole, OfferStatus, TripEventKind, TripStatus};
use entity::{driver, offer, trip, trip_event};
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter, QuerySelect, SqlErr,
};

use crate::error::{ServiceError, ServiceResult};

/// Who acts on a trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub role: ActorRole,
    /// Rider or driver id; `None` for the system.
    pub id: Option<i64>,
}

impl Actor {
    pub fn rider(id: i64) -> Self {
        Self {
            role: ActorRole::Rider,
            id: Some(id),
        }
    }

    pub fn driver(id: i64) -> Self {
        Self {
            role: ActorRole::Driver,
            id: Some(id),
        }
    }

    pub const SYSTEM: Actor = Actor {
        role: ActorRole::System,
        id: None,
    };
}

/// An audit event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: TripEventKind,
    pub actor: Actor,
    pub from: Option<TripStatus>,
    pub to: TripStatus,
    pub offer_id: Option<i64>,
    pub detail: Option<String>,
}

pub async fn find_trip(txn: &DatabaseTransaction, trip_id: i64) -> ServiceResult<trip::Model> {
    trip::Entity::find_by_id(trip_id)
        .one(txn)
        .await?
        .ok_or(ServiceError::NotFound {
            entity: "trip",
            id: trip_id,
        })
}

/// Reads a trip and locks its row until the transaction ends (`SELECT ... FOR UPDATE`).
///
/// Offer, accept and cancel start with it, so on PostgreSQL they run one after another on
/// the same trip. An offer therefore cannot commit unseen beside an accept or cancel and
/// stay PENDING on a closed trip. A cancel waits for a concurrent accept and then cancels
/// the ACCEPTED trip, instead of failing on the REQUESTED state it read before. SQLite has
/// no row locks and needs none, because its single connection runs transactions one at a
/// time.
pub async fn lock_trip(txn: &DatabaseTransaction, trip_id: i64) -> ServiceResult<trip::Model> {
    trip::Entity::find_by_id(trip_id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(ServiceError::NotFound {
            entity: "trip",
            id: trip_id,
        })
}

pub async fn insert_event(
    txn: &DatabaseTransaction,
    trip_id: i64,
    event: NewEvent,
    now: DateTime<Utc>,
) -> Result<trip_event::Model, DbErr> {
    trip_event::ActiveModel {
        trip_id: Set(trip_id),
        kind: Set(event.kind),
        actor_role: Set(event.actor.role),
        actor_id: Set(event.actor.id),
        from_status: Set(event.from),
        to_status: Set(event.to),
        offer_id: Set(event.offer_id),
        detail: Set(event.detail),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(txn)
    .await
}

/// Moves a trip from `from` to `to`, setting `extra` columns too, only if it is still in
/// `from`. Returns whether it moved: `false` means a concurrent call changed it first.
///
/// # Errors
/// `Conflict` when the move would give a driver a second active trip (the partial unique
/// index `uq_trips_active_driver`), else the database error.
pub async fn move_trip(
    txn: &DatabaseTransaction,
    trip_id: i64,
    from: TripStatus,
    to: TripStatus,
    now: DateTime<Utc>,
    extra: Vec<(trip::Column, SimpleExpr)>,
) -> ServiceResult<bool> {
    let mut update = trip::Entity::update_many()
        .col_expr(trip::Column::Status, Expr::value(to))
        .col_expr(trip::Column::UpdatedAt, Expr::value(now));
    for (column, value) in extra {
        update = update.col_expr(column, value);
    }
    let result = update
        .filter(trip::Column::Id.eq(trip_id))
        .filter(trip::Column::Status.eq(from))
        .exec(txn)
        .await
        .map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => ServiceError::Conflict(
                "the driver already holds an active trip; complete or cancel it first".into(),
            ),
            _ => ServiceError::Database(e),
        })?;
    Ok(result.rows_affected == 1)
}

/// Sets every pending offer of a trip to `status`; returns the offers it changed.
pub async fn close_pending_offers(
    txn: &DatabaseTransaction,
    trip_id: i64,
    status: OfferStatus,
    now: DateTime<Utc>,
) -> Result<Vec<offer::Model>, DbErr> {
    let pending = offer::Entity::find()
        .filter(offer::Column::TripId.eq(trip_id))
        .filter(offer::Column::Status.eq(OfferStatus::Pending))
        .all(txn)
        .await?;
    let mut closed = Vec::with_capacity(pending.len());
    for offer in pending {
        if set_offer_status(txn, offer.id, status, now, None).await? {
            closed.push(offer);
        }
    }
    Ok(closed)
}

/// Moves one offer out of PENDING; returns whether it was still pending.
pub async fn set_offer_status(
    txn: &DatabaseTransaction,
    offer_id: i64,
    status: OfferStatus,
    now: DateTime<Utc>,
    decline_reason: Option<String>,
) -> Result<bool, DbErr> {
    let result = offer::Entity::update_many()
        .col_expr(offer::Column::Status, Expr::value(status))
        .col_expr(offer::Column::RespondedAt, Expr::value(now))
        .col_expr(offer::Column::DeclineReason, Expr::value(decline_reason))
        .filter(offer::Column::Id.eq(offer_id))
        .filter(offer::Column::Status.eq(OfferStatus::Pending))
        .exec(txn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Adds one to a driver's accepted or rejected offer counter.
pub async fn count_offer_answer(
    txn: &DatabaseTransaction,
    driver_id: i64,
    accepted: bool,
) -> Result<(), DbErr> {
    let column = if accepted {
        driver::Column::OffersAccepted
    } else {
        driver::Column::OffersRejected
    };
    driver::Entity::update_many()
        .col_expr(column, Expr::col(column).add(1))
        .filter(driver::Column::Id.eq(driver_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Trims free text and checks its length: 1..=`max` characters when required, 0..=`max`
/// otherwise (an empty optional text becomes `None`).
pub fn clean_text(
    text: Option<&str>,
    field: &str,
    max: usize,
    required: bool,
) -> ServiceResult<Option<String>> {
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    match text {
        None if required => Err(ServiceError::invalid(
            field,
            "is required and must not be blank",
        )),
        None => Ok(None),
        Some(t) if t.chars().count() > max => Err(ServiceError::invalid(
            field,
            format!(
                "is {} characters long; the maximum is {max}",
                t.chars().count()
            ),
        )),
        Some(t) => Ok(Some(t.to_owned())),
    }
}
