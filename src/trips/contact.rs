//! Contact handoff: a party to a trip gets the other party's phone number, once both are bound
//! by the trip or by a pending offer of it. Every handoff is an audit event of the trip; the
//! resolver limits how often each token may ask.

use chrono::Utc;
use entity::enums::{ActorRole, OfferStatus, TripEventKind};
use entity::{driver, offer, rider};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, TransactionTrait};
use tracing::{info, instrument};

use super::Trips;
use super::state::ACTIVE_STATES;
use super::store::{Actor, NewEvent, find_trip, insert_event};
use crate::error::{ServiceError, ServiceResult};

/// The other party of a trip, revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactHandoff {
    pub trip_id: i64,
    /// Role of the party whose contact this is.
    pub role: ActorRole,
    pub id: i64,
    pub name: String,
    /// Full E.164 number.
    pub phone: String,
}

/// Returns the refusal reason for a trip its driver no longer holds.
fn ended(status: entity::enums::TripStatus) -> String {
    let status = sea_orm::ActiveEnum::to_value(&status);
    format!("the trip is {status}; contacts are shared only while it is under way")
}

impl Trips {
    /// Returns the other party's contact to `actor`, a party to the trip: the rider gets the
    /// driver's, the driver the rider's. Both sides must be bound: the trip is accepted,
    /// arrived or started with that driver, or the driver has a pending offer of it.
    ///
    /// # Errors
    /// `NotFound` for an unknown trip; `Forbidden` when the actor is not a party or the
    /// other side is not bound yet.
    #[instrument(skip(self), fields(trip.id = trip_id, actor.role = ?actor.role, actor.id = actor.id))]
    pub async fn request_contact(
        &self,
        trip_id: i64,
        actor: Actor,
    ) -> ServiceResult<ContactHandoff> {
        let txn = self.db.begin().await?;
        let trip = find_trip(&txn, trip_id).await?;

        let actor_id = actor.id.unwrap_or_default();
        let active = ACTIVE_STATES.contains(&trip.status);
        let refuse = |why: &str| {
            ServiceError::Forbidden(format!(
                "{} {actor_id} may not get a contact for trip {trip_id}: {why}",
                match actor.role {
                    ActorRole::Rider => "rider",
                    _ => "driver",
                }
            ))
        };
        let (role, id) = match actor.role {
            ActorRole::Rider => {
                if trip.rider_id != actor_id {
                    return Err(refuse("not its rider"));
                }
                match trip.driver_id {
                    Some(driver_id) if active => (ActorRole::Driver, driver_id),
                    Some(_) => return Err(refuse(&ended(trip.status))),
                    None => return Err(refuse("no driver has accepted it")),
                }
            }
            ActorRole::Driver => {
                let bound = active && trip.driver_id == Some(actor_id);
                let offered = offer::Entity::find()
                    .filter(offer::Column::TripId.eq(trip_id))
                    .filter(offer::Column::DriverId.eq(actor_id))
                    .filter(offer::Column::Status.eq(OfferStatus::Pending))
                    .count(&txn)
                    .await?
                    > 0;
                if !(bound || offered) {
                    if trip.driver_id == Some(actor_id) {
                        return Err(refuse(&ended(trip.status)));
                    }
                    return Err(refuse("neither its active driver nor offered it"));
                }
                (ActorRole::Rider, trip.rider_id)
            }
            ActorRole::System => return Err(refuse("the system has no contact")),
        };

        let (name, phone) = match role {
            ActorRole::Driver => driver::Entity::find_by_id(id)
                .one(&txn)
                .await?
                .map(|d| (d.name, d.phone)),
            _ => rider::Entity::find_by_id(id)
                .one(&txn)
                .await?
                .map(|r| (r.name, r.phone)),
        }
        .ok_or(ServiceError::NotFound {
            entity: if role == ActorRole::Driver {
                "driver"
            } else {
                "rider"
            },
            id,
        })?;

        let event = NewEvent {
            kind: TripEventKind::ContactShared,
            actor,
            from: Some(trip.status),
            to: trip.status,
            offer_id: None,
            detail: Some(format!(
                "contact of {} {id} shared",
                if role == ActorRole::Driver {
                    "driver"
                } else {
                    "rider"
                }
            )),
        };
        let event = insert_event(&txn, trip_id, event, Utc::now()).await?;
        txn.commit().await?;

        info!(event.id = event.id, "contact shared");
        self.after_commit(trip, event);
        Ok(ContactHandoff {
            trip_id,
            role,
            id,
            name,
            phone,
        })
    }
}
