//! Offer expiry: a background task that moves overdue PENDING offers to EXPIRED.
//!
//! Each offer moves with a conditional update, so when several server instances sweep the
//! same database an offer expires once. Expiry is read from `offers.expires_at`, so offers that
//! fell due while the server was down expire on the first sweep after start.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::enums::{OfferStatus, TripEventKind};
use entity::{offer, trip_event};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use tokio::sync::watch;
use tracing::{error, info};

use super::Trips;
use super::store::{
    Actor, NewEvent, count_offer_answer, find_trip, insert_event, set_offer_status,
};
use crate::cluster::cache::{ProfileKey, invalidate_in_background};
use crate::error::ServiceResult;

/// Offers expired per sweep at most, so one sweep never holds the database for long.
const SWEEP_BATCH: u64 = 500;

/// An offer expired inside a transaction, to apply in memory once it commits.
pub(super) struct ExpiredOffer {
    pub driver_id: i64,
    pub event: trip_event::Model,
}

impl Trips {
    /// Expires every overdue pending offer, at most 500 per call; returns how many it expired.
    ///
    /// # Errors
    /// Any database error; offers expired before it stay expired.
    pub async fn expire_offers(&self, now: DateTime<Utc>) -> ServiceResult<usize> {
        let due = offer::Entity::find()
            .filter(offer::Column::Status.eq(OfferStatus::Pending))
            .filter(offer::Column::ExpiresAt.lte(now))
            .order_by_asc(offer::Column::ExpiresAt)
            .limit(SWEEP_BATCH)
            .all(&self.db)
            .await?;
        let mut count = 0;
        for offer in due {
            let txn = self.db.begin().await?;
            let Some(expired) = expire_one(&txn, &offer, now).await? else {
                continue;
            };
            let trip = find_trip(&txn, offer.trip_id).await?;
            txn.commit().await?;
            count += 1;
            self.after_expiry(trip, vec![expired]);
        }
        Ok(count)
    }

    /// Expires the overdue pending offers of one trip inside the caller's transaction. The
    /// caller passes the result to [`Trips::after_expiry`] once it commits.
    pub(super) async fn expire_overdue_offers(
        &self,
        txn: &DatabaseTransaction,
        trip_id: i64,
        now: DateTime<Utc>,
    ) -> ServiceResult<Vec<ExpiredOffer>> {
        let due = offer::Entity::find()
            .filter(offer::Column::TripId.eq(trip_id))
            .filter(offer::Column::Status.eq(OfferStatus::Pending))
            .filter(offer::Column::ExpiresAt.lte(now))
            .all(txn)
            .await?;
        let mut expired = Vec::with_capacity(due.len());
        for offer in due {
            if let Some(one) = expire_one(txn, &offer, now).await? {
                expired.push(one);
            }
        }
        Ok(expired)
    }

    /// Counts the expiries against the drivers in memory and publishes their events.
    pub(super) fn after_expiry(&self, trip: entity::trip::Model, expired: Vec<ExpiredOffer>) {
        for one in expired {
            self.live.update(one.driver_id, |d| {
                d.offers_rejected = d.offers_rejected.saturating_add(1)
            });
            self.bus.publish_driver_changed(one.driver_id);
            invalidate_in_background(&self.profiles, vec![ProfileKey::driver(one.driver_id)]);
            info!(
                offer.id = one.event.offer_id,
                trip.id = trip.id,
                driver.id = one.driver_id,
                "offer expired"
            );
            self.after_commit(trip.clone(), one.event);
        }
    }
}

async fn expire_one(
    txn: &DatabaseTransaction,
    offer: &offer::Model,
    now: DateTime<Utc>,
) -> ServiceResult<Option<ExpiredOffer>> {
    if !set_offer_status(txn, offer.id, OfferStatus::Expired, now, None).await? {
        return Ok(None);
    }
    count_offer_answer(txn, offer.driver_id, false).await?;
    let trip = find_trip(txn, offer.trip_id).await?;
    let event = NewEvent {
        kind: TripEventKind::OfferExpired,
        actor: Actor::SYSTEM,
        from: Some(trip.status),
        to: trip.status,
        offer_id: Some(offer.id),
        detail: Some(format!("driver {} did not answer in time", offer.driver_id)),
    };
    let event = insert_event(txn, offer.trip_id, event, now).await?;
    Ok(Some(ExpiredOffer {
        driver_id: offer.driver_id,
        event,
    }))
}

/// Sweeps for expired offers every `interval` until `shutdown` turns `true`. A failed sweep
/// is logged and retried at the next tick.
pub async fn run_offer_expiry(
    trips: Trips,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = trips.expire_offers(Utc::now()).await {
                    crate::metrics::count_database_error();
                    error!(error = %e, cause = ?e, "offer expiry sweep failed; retrying next tick");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}
