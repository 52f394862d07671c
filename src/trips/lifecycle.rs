//! The trip operations that change state, one transaction each.

use chrono::{TimeDelta, Utc};
use entity::enums::{ActorRole, OfferStatus, TripEventKind, TripStatus};
use entity::{driver, offer, rating, rider, trip};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, SqlErr,
    TransactionTrait,
};
use tracing::{info, instrument};

use super::state::{TripAction, next_status};
use super::store::{
    Actor, NewEvent, clean_text, close_pending_offers, count_offer_answer, find_trip, insert_event,
    lock_trip, move_trip, set_offer_status,
};
use super::{TripRequest, Trips};
use crate::cluster::cache::ProfileKey;
use crate::error::{ServiceError, ServiceResult};
use crate::geometry::validate_lat_lng;
use crate::tracking::LiveDriver;

/// Maximum length of a cancel reason, decline reason or rating comment, in characters.
const MAX_TEXT_CHARS: usize = 500;

/// Oldest `scheduledAt` accepted, in seconds before now, to absorb clock differences.
const SCHEDULE_PAST_SLACK_S: i64 = 60;

impl Trips {
    /// Creates a trip in REQUESTED and lists it for nearby drivers.
    ///
    /// # Errors
    /// `InvalidInput` for bad points or schedule, `NotFound` for an unknown rider.
    #[instrument(skip_all, fields(rider.id = request.rider_id, trip.id))]
    pub async fn request_trip(&self, request: TripRequest) -> ServiceResult<trip::Model> {
        let now = Utc::now();
        let area = self.config.service_area.as_ref();
        let (lat, lng) = request.pickup;
        let pickup = validate_lat_lng(lat, lng, area)
            .map_err(|e| ServiceError::coordinate("input.pickup", e))?;
        let dropoff = request
            .dropoff
            .map(|(lat, lng)| validate_lat_lng(lat, lng, area))
            .transpose()
            .map_err(|e| ServiceError::coordinate("input.dropoff", e))?;
        if let Some(at) = request.scheduled_at {
            let latest = now + TimeDelta::seconds(self.config.max_schedule_ahead_s);
            if at < now - TimeDelta::seconds(SCHEDULE_PAST_SLACK_S) || at > latest {
                return Err(ServiceError::invalid(
                    "input.scheduledAt",
                    format!("{at} must be between now ({now}) and {latest}"),
                ));
            }
        }

        let txn = self.db.begin().await?;
        rider::Entity::find_by_id(request.rider_id)
            .one(&txn)
            .await?
            .ok_or(ServiceError::NotFound {
                entity: "rider",
                id: request.rider_id,
            })?;
        let trip = trip::ActiveModel {
            rider_id: Set(request.rider_id),
            driver_id: Set(None),
            vehicle_type: Set(request.vehicle_type),
            status: Set(TripStatus::Requested),
            pickup_lat: Set(pickup.lat),
            pickup_lng: Set(pickup.lng),
            dropoff_lat: Set(dropoff.map(|p| p.lat)),
            dropoff_lng: Set(dropoff.map(|p| p.lng)),
            scheduled_at: Set(request.scheduled_at),
            requested_at: Set(now),
            accepted_at: Set(None),
            arrived_at: Set(None),
            started_at: Set(None),
            completed_at: Set(None),
            cancelled_at: Set(None),
            cancelled_by: Set(None),
            cancel_reason: Set(None),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await?;

        let event = NewEvent {
            kind: TripEventKind::Requested,
            actor: Actor::rider(request.rider_id),
            from: None,
            to: TripStatus::Requested,
            offer_id: None,
            detail: None,
        };
        let event = insert_event(&txn, trip.id, event, now).await?;

        txn.commit().await?;
        tracing::Span::current().record("trip.id", trip.id);
        info!(vehicle_type = ?trip.vehicle_type, "trip requested");
        self.after_commit(trip.clone(), event);
        Ok(trip)
    }

    /// Offers a REQUESTED trip to one driver, who has `offer_ttl_s` to reply. An overdue
    /// pending offer of the same trip is expired first.
    ///
    /// # Errors
    /// `NotFound` for an unknown trip or driver, `InvalidTransition` unless REQUESTED,
    /// `InvalidInput` for the wrong vehicle type, `Conflict` when the driver is offline, busy
    /// or without a position, or another offer of the trip is still pending.
    #[instrument(skip(self), fields(trip.id = trip_id, driver.id = driver_id))]
    pub async fn offer_trip(&self, trip_id: i64, driver_id: i64) -> ServiceResult<offer::Model> {
        let now = Utc::now();
        let driver = self.known_driver(driver_id)?;

        let txn = self.db.begin().await?;
        let trip = lock_trip(&txn, trip_id).await?;
        next_status(trip.status, TripAction::Offer)
            .map_err(|e| ServiceError::transition(trip_id, e))?;
        check_vehicle(&driver, &trip)?;
        let Some(fix) = driver.fix.filter(|_| driver.online) else {
            return Err(ServiceError::Conflict(format!(
                "driver {driver_id} is offline or has no known position"
            )));
        };
        if let Some(active) = driver.active_trip_id {
            return Err(ServiceError::Conflict(format!(
                "driver {driver_id} is busy with trip {active}"
            )));
        }

        let expired = self.expire_overdue_offers(&txn, trip_id, now).await?;
        let pending = offer::Entity::find()
            .filter(offer::Column::TripId.eq(trip_id))
            .filter(offer::Column::Status.eq(OfferStatus::Pending))
            .one(&txn)
            .await?;
        if let Some(pending) = pending {
            return Err(ServiceError::Conflict(format!(
                "trip {trip_id} is offered to driver {} until {}; wait for the reply or the expiry",
                pending.driver_id, pending.expires_at
            )));
        }
        let pickup = crate::geometry::LatLng {
            lat: trip.pickup_lat,
            lng: trip.pickup_lng,
        };
        let offer = offer::ActiveModel {
            trip_id: Set(trip_id),
            driver_id: Set(driver_id),
            status: Set(OfferStatus::Pending),
            distance_m: Set(Some(fix.position.distance_m(&pickup))),
            created_at: Set(now),
            expires_at: Set(now + self.offer_ttl()),
            responded_at: Set(None),
            decline_reason: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => ServiceError::Conflict(format!(
                "trip {trip_id} was offered to another driver concurrently"
            )),
            _ => ServiceError::Database(e),
        })?;

        let event = NewEvent {
            kind: TripEventKind::Offered,
            actor: Actor::rider(trip.rider_id),
            from: Some(trip.status),
            to: trip.status,
            offer_id: Some(offer.id),
            detail: Some(format!("offered to driver {driver_id}")),
        };
        let event = insert_event(&txn, trip_id, event, now).await?;

        txn.commit().await?;
        info!(offer.id = offer.id, "trip offered");
        self.after_expiry(trip.clone(), expired);
        self.after_commit(trip, event);
        Ok(offer)
    }

    /// Gives a REQUESTED trip to a driver. A pending offer to that driver becomes ACCEPTED and
    /// other pending offers WITHDRAWN. Of concurrent accepts, exactly one succeeds.
    ///
    /// # Errors
    /// `NotFound` for an unknown trip or driver, `InvalidTransition` unless REQUESTED (also
    /// for the losers of a race), `InvalidInput` for the wrong vehicle type, `Conflict` when
    /// the trip is offered to another driver or this driver already holds an active trip.
    #[instrument(skip(self), fields(trip.id = trip_id, driver.id = driver_id))]
    pub async fn accept_trip(&self, trip_id: i64, driver_id: i64) -> ServiceResult<trip::Model> {
        let now = Utc::now();
        let driver = self.known_driver(driver_id)?;

        let txn = self.db.begin().await?;
        let trip = lock_trip(&txn, trip_id).await?;
        let to = next_status(trip.status, TripAction::Accept)
            .map_err(|e| ServiceError::transition(trip_id, e))?;
        // NOTE: unlike `offer_trip`, this accepts a driver who is offline or has no position.
        check_vehicle(&driver, &trip)?;
        // An overdue offer, even the driver's own, expires first: the trip is then open to
        // any driver, this one included, but the late reply does not count as accepted.
        let expired = self.expire_overdue_offers(&txn, trip_id, now).await?;
        let reserved = offer::Entity::find()
            .filter(offer::Column::TripId.eq(trip_id))
            .filter(offer::Column::Status.eq(OfferStatus::Pending))
            .filter(offer::Column::DriverId.ne(driver_id))
            .filter(offer::Column::ExpiresAt.gt(now))
            .one(&txn)
            .await?;
        if let Some(other) = reserved {
            return Err(ServiceError::Conflict(format!(
                "trip {trip_id} is offered to driver {} until {}",
                other.driver_id, other.expires_at
            )));
        }

        let extra = vec![
            (trip::Column::DriverId, Expr::value(Some(driver_id))),
            (trip::Column::AcceptedAt, Expr::value(Some(now))),
        ];

        if !move_trip(&txn, trip_id, trip.status, to, now, extra).await? {
            let current = find_trip(&txn, trip_id).await?;
            return Err(ServiceError::transition(
                trip_id,
                super::state::IllegalTransition {
                    from: current.status,
                    action: TripAction::Accept,
                },
            ));
        }
        let own_offer = offer::Entity::find()
            .filter(offer::Column::TripId.eq(trip_id))
            .filter(offer::Column::DriverId.eq(driver_id))
            .filter(offer::Column::Status.eq(OfferStatus::Pending))
            .one(&txn)
            .await?;
        let mut offer_id = None;
        if let Some(own) = own_offer
            && set_offer_status(&txn, own.id, OfferStatus::Accepted, now, None).await?
        {
            count_offer_answer(&txn, driver_id, true).await?;
            offer_id = Some(own.id);
        }
        close_pending_offers(&txn, trip_id, OfferStatus::Withdrawn, now).await?;

        let event = NewEvent {
            kind: TripEventKind::Accepted,
            actor: Actor::driver(driver_id),
            from: Some(trip.status),
            to,
            offer_id,
            detail: None,
        };
        let event = insert_event(&txn, trip_id, event, now).await?;
        let trip = find_trip(&txn, trip_id).await?;

        txn.commit().await?;
        if offer_id.is_some() {
            self.live.update(driver_id, |d| {
                d.offers_accepted = d.offers_accepted.saturating_add(1)
            });
            self.bus.publish_driver_changed(driver_id);
            self.profiles
                .invalidate(&[ProfileKey::driver(driver_id)])
                .await;
        }
        info!("trip accepted");
        self.after_expiry(trip.clone(), expired);
        self.after_commit(trip.clone(), event);
        Ok(trip)
    }

    /// Declines the driver's pending offer of a trip, which stays REQUESTED.
    ///
    /// # Errors
    /// `NotFound` for an unknown trip or when the driver has no offer of it,
    /// `InvalidTransition` unless the trip is REQUESTED or when the offer is no longer pending,
    /// `InvalidInput` for an over-long reason.
    #[instrument(skip(self, reason), fields(trip.id = trip_id, driver.id = driver_id))]
    pub async fn decline_trip(
        &self,
        trip_id: i64,
        driver_id: i64,
        reason: Option<&str>,
    ) -> ServiceResult<offer::Model> {
        let now = Utc::now();
        let reason = clean_text(reason, "reason", MAX_TEXT_CHARS, false)?;
        self.known_driver(driver_id)?;

        let txn = self.db.begin().await?;
        let trip = find_trip(&txn, trip_id).await?;
        next_status(trip.status, TripAction::Decline)
            .map_err(|e| ServiceError::transition(trip_id, e))?;
        let expired = self.expire_overdue_offers(&txn, trip_id, now).await?;
        let Some(latest) = self.latest_offer(&txn, trip_id, driver_id).await? else {
            return Err(ServiceError::OfferNotFound { trip_id, driver_id });
        };
        if !set_offer_status(&txn, latest.id, OfferStatus::Declined, now, reason.clone()).await? {
            // Commit the expiry found above, so the offer reads EXPIRED from now on.
            txn.commit().await?;
            self.after_expiry(trip, expired);
            let status = if latest.status == OfferStatus::Pending {
                OfferStatus::Expired
            } else {
                latest.status
            };
            return Err(ServiceError::OfferNotPending {
                offer_id: latest.id,
                status,
            });
        }
        count_offer_answer(&txn, driver_id, false).await?;

        let event = NewEvent {
            kind: TripEventKind::OfferDeclined,
            actor: Actor::driver(driver_id),
            from: Some(trip.status),
            to: trip.status,
            offer_id: Some(latest.id),
            detail: reason,
        };
        let event = insert_event(&txn, trip_id, event, now).await?;
        let offer = offer::Entity::find_by_id(latest.id)
            .one(&txn)
            .await?
            .ok_or(ServiceError::NotFound {
                entity: "offer",
                id: latest.id,
            })?;

        txn.commit().await?;
        self.live.update(driver_id, |d| {
            d.offers_rejected = d.offers_rejected.saturating_add(1)
        });
        self.bus.publish_driver_changed(driver_id);
        self.profiles
            .invalidate(&[ProfileKey::driver(driver_id)])
            .await;
        info!(offer.id = offer.id, "offer declined");
        self.after_expiry(trip.clone(), expired);
        self.after_commit(trip, event);
        Ok(offer)
    }

    /// Moves the trip to ARRIVED: the assigned driver reached the pickup.
    pub async fn arrive_at_pickup(
        &self,
        trip_id: i64,
        driver_id: i64,
    ) -> ServiceResult<trip::Model> {
        self.driver_step(trip_id, driver_id, TripAction::Arrive)
            .await
    }

    /// Moves the trip to STARTED: the rider is on board.
    pub async fn start_trip(&self, trip_id: i64, driver_id: i64) -> ServiceResult<trip::Model> {
        self.driver_step(trip_id, driver_id, TripAction::Start)
            .await
    }

    /// Moves the trip to COMPLETED: the rider was dropped off and the driver is free again.
    pub async fn complete_trip(&self, trip_id: i64, driver_id: i64) -> ServiceResult<trip::Model> {
        self.driver_step(trip_id, driver_id, TripAction::Complete)
            .await
    }

    /// Runs one of the assigned driver's steps: arrive, start or complete.
    ///
    /// # Errors
    /// `NotFound` for an unknown trip or driver, `InvalidTransition` when the step is illegal
    /// in the trip's state, `Forbidden` when the driver is not the trip's driver.
    #[instrument(skip(self), fields(trip.id = trip_id, driver.id = driver_id))]
    async fn driver_step(
        &self,
        trip_id: i64,
        driver_id: i64,
        action: TripAction,
    ) -> ServiceResult<trip::Model> {
        let now = Utc::now();
        self.known_driver(driver_id)?;

        let txn = self.db.begin().await?;
        let trip = find_trip(&txn, trip_id).await?;
        let to =
            next_status(trip.status, action).map_err(|e| ServiceError::transition(trip_id, e))?;
        if trip.driver_id != Some(driver_id) {
            return Err(ServiceError::Forbidden(format!(
                "driver {driver_id} is not assigned to trip {trip_id}"
            )));
        }
        let (column, kind) = match action {
            TripAction::Arrive => (trip::Column::ArrivedAt, TripEventKind::Arrived),
            TripAction::Start => (trip::Column::StartedAt, TripEventKind::Started),
            _ => (trip::Column::CompletedAt, TripEventKind::Completed),
        };
        let extra = vec![(column, Expr::value(Some(now)))];

        if !move_trip(&txn, trip_id, trip.status, to, now, extra).await? {
            let current = find_trip(&txn, trip_id).await?;
            let source = super::state::IllegalTransition {
                from: current.status,
                action,
            };
            return Err(ServiceError::transition(trip_id, source));
        }

        let event = NewEvent {
            kind,
            actor: Actor::driver(driver_id),
            from: Some(trip.status),
            to,
            offer_id: None,
            detail: None,
        };
        let event = insert_event(&txn, trip_id, event, now).await?;
        let trip = find_trip(&txn, trip_id).await?;
        if to == TripStatus::Completed {
            self.mark_available(&txn, driver_id, now).await?;
        }

        txn.commit().await?;
        info!(status = ?to, "trip moved");
        self.after_commit(trip.clone(), event);
        Ok(trip)
    }

    /// Cancels a trip that has not started. The rider may cancel from REQUESTED, ACCEPTED or
    /// ARRIVED; the assigned driver from ACCEPTED or ARRIVED. Pending offers are withdrawn.
    ///
    /// # Errors
    /// `NotFound` for an unknown trip, `InvalidTransition` from STARTED or a final state,
    /// `Forbidden` when the actor is not a party to the trip, `InvalidInput` for a blank or
    /// over-long reason.
    #[instrument(skip(self, reason), fields(trip.id = trip_id, actor.role = ?actor.role, actor.id = actor.id))]
    pub async fn cancel_trip(
        &self,
        trip_id: i64,
        actor: Actor,
        reason: &str,
    ) -> ServiceResult<trip::Model> {
        let now = Utc::now();
        let reason = clean_text(Some(reason), "reason", MAX_TEXT_CHARS, true)?;

        let txn = self.db.begin().await?;
        let trip = lock_trip(&txn, trip_id).await?;
        let to = next_status(trip.status, TripAction::Cancel)
            .map_err(|e| ServiceError::transition(trip_id, e))?;
        check_party(&trip, actor)?;
        let extra = vec![
            (trip::Column::CancelledAt, Expr::value(Some(now))),
            (trip::Column::CancelledBy, Expr::value(Some(actor.role))),
            (trip::Column::CancelReason, Expr::value(reason.clone())),
        ];

        if !move_trip(&txn, trip_id, trip.status, to, now, extra).await? {
            let current = find_trip(&txn, trip_id).await?;
            let source = super::state::IllegalTransition {
                from: current.status,
                action: TripAction::Cancel,
            };
            return Err(ServiceError::transition(trip_id, source));
        }
        close_pending_offers(&txn, trip_id, OfferStatus::Withdrawn, now).await?;

        let event = NewEvent {
            kind: TripEventKind::Cancelled,
            actor,
            from: Some(trip.status),
            to,
            offer_id: None,
            detail: reason,
        };
        let event = insert_event(&txn, trip_id, event, now).await?;
        if let Some(driver_id) = trip.driver_id {
            self.mark_available(&txn, driver_id, now).await?;
        }
        let trip = find_trip(&txn, trip_id).await?;

        txn.commit().await?;
        info!("trip cancelled");
        self.after_commit(trip.clone(), event);
        Ok(trip)
    }

    /// Records one side's rating of a COMPLETED trip: the rider rates the driver, the driver
    /// rates the rider. Each side rates once.
    ///
    /// # Errors
    /// `NotFound` for an unknown trip, `InvalidTransition` unless COMPLETED, `Forbidden` when
    /// the actor is not a party, `InvalidInput` for stars outside 1..=5 or a long comment,
    /// `Conflict` when this side already rated the trip.
    #[instrument(skip(self, comment), fields(trip.id = trip_id, actor.role = ?actor.role))]
    pub async fn rate_trip(
        &self,
        trip_id: i64,
        actor: Actor,
        stars: i32,
        comment: Option<&str>,
    ) -> ServiceResult<rating::Model> {
        let now = Utc::now();
        if !(1..=5).contains(&stars) {
            return Err(ServiceError::invalid(
                "stars",
                format!("{stars} is outside 1..=5"),
            ));
        }
        let comment = clean_text(comment, "comment", MAX_TEXT_CHARS, false)?;

        let txn = self.db.begin().await?;
        let trip = find_trip(&txn, trip_id).await?;
        next_status(trip.status, TripAction::Rate)
            .map_err(|e| ServiceError::transition(trip_id, e))?;
        check_party(&trip, actor)?;
        let (rater_id, ratee_id) = match actor.role {
            ActorRole::Rider => (trip.rider_id, trip.driver_id.unwrap_or_default()),
            _ => (trip.driver_id.unwrap_or_default(), trip.rider_id),
        };
        let rating = rating::ActiveModel {
            trip_id: Set(trip_id),
            rater_role: Set(actor.role),
            rater_id: Set(rater_id),
            ratee_id: Set(ratee_id),
            stars: Set(stars as i16),
            comment: Set(comment),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => ServiceError::Conflict(format!(
                "trip {trip_id} was already rated by its {}",
                role_name(actor.role)
            )),
            _ => ServiceError::Database(e),
        })?;
        if actor.role == ActorRole::Rider {
            driver::Entity::update_many()
                .col_expr(
                    driver::Column::RatingSum,
                    Expr::col(driver::Column::RatingSum).add(stars),
                )
                .col_expr(
                    driver::Column::RatingCount,
                    Expr::col(driver::Column::RatingCount).add(1),
                )
                .filter(driver::Column::Id.eq(ratee_id))
                .exec(&txn)
                .await?;
        } else {
            rider::Entity::update_many()
                .col_expr(
                    rider::Column::RatingSum,
                    Expr::col(rider::Column::RatingSum).add(stars),
                )
                .col_expr(
                    rider::Column::RatingCount,
                    Expr::col(rider::Column::RatingCount).add(1),
                )
                .filter(rider::Column::Id.eq(ratee_id))
                .exec(&txn)
                .await?;
        }

        let event = NewEvent {
            kind: TripEventKind::Rated,
            actor,
            from: Some(trip.status),
            to: trip.status,
            offer_id: None,
            detail: Some(format!("{stars} stars")),
        };
        let event = insert_event(&txn, trip_id, event, now).await?;

        txn.commit().await?;
        let ratee = match actor.role {
            ActorRole::Rider => ProfileKey::driver(ratee_id),
            _ => ProfileKey::rider(ratee_id),
        };
        self.profiles.invalidate(&[ratee]).await;
        if actor.role == ActorRole::Rider {
            self.live.update(ratee_id, |d| {
                d.rating_sum = d.rating_sum.saturating_add(stars.unsigned_abs());
                d.rating_count = d.rating_count.saturating_add(1);
            });
            self.bus.publish_driver_changed(ratee_id);
        }
        info!(stars, "trip rated");
        self.after_commit(trip, event);
        Ok(rating)
    }

    fn known_driver(&self, driver_id: i64) -> ServiceResult<LiveDriver> {
        self.live.get(driver_id).ok_or(ServiceError::NotFound {
            entity: "driver",
            id: driver_id,
        })
    }

    async fn latest_offer(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        trip_id: i64,
        driver_id: i64,
    ) -> ServiceResult<Option<offer::Model>> {
        use sea_orm::QueryOrder;
        Ok(offer::Entity::find()
            .filter(offer::Column::TripId.eq(trip_id))
            .filter(offer::Column::DriverId.eq(driver_id))
            .order_by_desc(offer::Column::Id)
            .one(txn)
            .await?)
    }

    /// Restarts the idle clock of a driver who just finished or lost a trip.
    async fn mark_available(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        driver_id: i64,
        now: chrono::DateTime<Utc>,
    ) -> ServiceResult<()> {
        use entity::driver_presence::{Column, Entity};
        Entity::update_many()
            .col_expr(Column::AvailableSince, Expr::value(Some(now)))
            .filter(Column::DriverId.eq(driver_id))
            .filter(Column::Online.eq(true))
            .exec(txn)
            .await?;
        Ok(())
    }
}

fn check_vehicle(driver: &LiveDriver, trip: &trip::Model) -> ServiceResult<()> {
    if driver.vehicle_type == trip.vehicle_type {
        return Ok(());
    }
    Err(ServiceError::invalid(
        "driverId",
        format!(
            "driver {} drives a {:?} but trip {} requests a {:?}",
            driver.driver_id, driver.vehicle_type, trip.id, trip.vehicle_type
        ),
    ))
}

fn check_party(trip: &trip::Model, actor: Actor) -> ServiceResult<()> {
    let party = match actor.role {
        ActorRole::Rider => Some(trip.rider_id),
        ActorRole::Driver => trip.driver_id,
        ActorRole::System => return Ok(()),
    };
    if party.is_some() && party == actor.id {
        return Ok(());
    }
    Err(ServiceError::Forbidden(format!(
        "{} {} is not a party to trip {}",
        role_name(actor.role),
        actor.id.map_or_else(|| "?".into(), |id| id.to_string()),
        trip.id
    )))
}

fn role_name(role: ActorRole) -> &'static str {
    match role {
        ActorRole::Rider => "rider",
        ActorRole::Driver => "driver",
        ActorRole::System => "system",
    }
}
