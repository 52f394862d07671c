//! Riders, drivers and vehicles: registration with input validation, and look-ups.

use std::sync::Arc;

use chrono::Utc;
use entity::enums::VehicleType;
use entity::{driver, rider, vehicle};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionTrait,
};
use tracing::{info, instrument};

use crate::cluster::cache::{NoProfileCache, ProfileKey, SharedProfileCache};
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventBus;
use crate::tracking::{LiveDriver, LiveDrivers};

/// Maximum length of a name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Maximum length of a plate, in characters, after removing spaces and dashes.
const MAX_PLATE_CHARS: usize = 20;
/// Largest page of `drivers` and `riders`.
pub const MAX_PAGE: u64 = 100;

/// A new driver and vehicle, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverRegistration {
    pub name: String,
    pub phone: String,
    pub vehicle_type: VehicleType,
    pub plate: String,
    pub vehicle_description: Option<String>,
}

/// The accounts service.
#[derive(Debug, Clone)]
pub struct Accounts {
    db: DatabaseConnection,
    live: Arc<LiveDrivers>,
    bus: EventBus,
    profiles: SharedProfileCache,
}

impl Accounts {
    pub fn new(db: DatabaseConnection, live: Arc<LiveDrivers>, bus: EventBus) -> Self {
        Self {
            db,
            live,
            bus,
            profiles: Arc::new(NoProfileCache),
        }
    }

    /// Uses `profiles` for the rows this service writes, so it can invalidate them.
    pub fn with_profile_cache(mut self, profiles: SharedProfileCache) -> Self {
        self.profiles = profiles;
        self
    }

    /// Registers a rider.
    ///
    /// # Errors
    /// `InvalidInput` for a blank or long name or a phone not in E.164 form, `Conflict` when
    /// the phone is already registered.
    #[instrument(skip_all, fields(rider.id))]
    pub async fn register_rider(&self, name: &str, phone: &str) -> ServiceResult<rider::Model> {
        let name = clean_name(name, "input.name")?;
        let phone = parse_e164(phone, "input.phone")?;
        let rider = rider::ActiveModel {
            name: Set(name),
            phone: Set(phone),
            rating_sum: Set(0),
            rating_count: Set(0),
            created_at: Set(Utc::now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(|e| unique_to_conflict(e, "a rider with this phone is already registered"))?;
        // A key under a new id exists only if the database was reset while Redis kept it.
        self.profiles
            .invalidate(&[ProfileKey::rider(rider.id)])
            .await;
        tracing::Span::current().record("rider.id", rider.id);
        info!("rider registered");
        Ok(rider)
    }

    /// Registers a driver with a vehicle. The driver starts offline.
    ///
    /// # Errors
    /// `InvalidInput` for a bad name, phone, plate or description, `Conflict` when the phone
    /// or plate is already registered.
    #[instrument(skip_all, fields(driver.id))]
    pub async fn register_driver(&self, input: DriverRegistration) -> ServiceResult<driver::Model> {
        let name = clean_name(&input.name, "input.name")?;
        let phone = parse_e164(&input.phone, "input.phone")?;
        let plate = clean_plate(&input.plate)?;
        let description = match input.vehicle_description.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) if d.chars().count() > MAX_NAME_CHARS => {
                return Err(ServiceError::invalid(
                    "input.vehicle.description",
                    format!("is longer than {MAX_NAME_CHARS} characters"),
                ));
            }
            Some(d) => Some(d.to_owned()),
        };
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let vehicle = vehicle::ActiveModel {
            vehicle_type: Set(input.vehicle_type),
            plate: Set(plate),
            description: Set(description),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(|e| unique_to_conflict(e, "a vehicle with this plate is already registered"))?;
        let driver = driver::ActiveModel {
            name: Set(name),
            phone: Set(phone),
            vehicle_id: Set(vehicle.id),
            rating_sum: Set(0),
            rating_count: Set(0),
            offers_accepted: Set(0),
            offers_rejected: Set(0),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(|e| unique_to_conflict(e, "a driver with this phone is already registered"))?;
        txn.commit().await?;
        self.live
            .insert(LiveDriver::new(driver.id, vehicle.vehicle_type));
        self.bus.publish_driver_changed(driver.id);
        self.profiles
            .invalidate(&[
                ProfileKey::driver(driver.id),
                ProfileKey::vehicle(vehicle.id),
            ])
            .await;
        tracing::Span::current().record("driver.id", driver.id);
        info!(vehicle_type = ?vehicle.vehicle_type, "driver registered");
        Ok(driver)
    }

    pub async fn driver(&self, id: i64) -> ServiceResult<Option<driver::Model>> {
        Ok(driver::Entity::find_by_id(id).one(&self.db).await?)
    }

    pub async fn rider(&self, id: i64) -> ServiceResult<Option<rider::Model>> {
        Ok(rider::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Finds a driver by phone; the phone must be in E.164 form.
    pub async fn driver_by_phone(&self, phone: &str) -> ServiceResult<Option<driver::Model>> {
        let phone = parse_e164(phone, "phone")?;
        Ok(driver::Entity::find()
            .filter(driver::Column::Phone.eq(phone))
            .one(&self.db)
            .await?)
    }

    /// Finds a rider by phone; the phone must be in E.164 form.
    pub async fn rider_by_phone(&self, phone: &str) -> ServiceResult<Option<rider::Model>> {
        let phone = parse_e164(phone, "phone")?;
        Ok(rider::Entity::find()
            .filter(rider::Column::Phone.eq(phone))
            .one(&self.db)
            .await?)
    }

    /// Drivers by id, `limit` at most after `after_id`.
    pub async fn drivers(
        &self,
        after_id: Option<i64>,
        limit: Option<i32>,
    ) -> ServiceResult<Vec<driver::Model>> {
        let limit = page_limit(limit)?;
        let mut query = driver::Entity::find()
            .order_by_asc(driver::Column::Id)
            .limit(limit);
        if let Some(after) = after_id {
            query = query.filter(driver::Column::Id.gt(after));
        }
        Ok(query.all(&self.db).await?)
    }
}

fn page_limit(limit: Option<i32>) -> ServiceResult<u64> {
    match limit {
        None => Ok(20),
        Some(n) if n >= 1 && n as u64 <= MAX_PAGE => Ok(n as u64),
        Some(n) => Err(ServiceError::invalid(
            "limit",
            format!("{n} is outside 1..={MAX_PAGE}"),
        )),
    }
}

fn unique_to_conflict(e: DbErr, message: &str) -> ServiceError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => ServiceError::Conflict(message.into()),
        _ => ServiceError::Database(e),
    }
}

fn clean_name(name: &str, field: &str) -> ServiceResult<String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ServiceError::invalid(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters, got {chars}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Normalizes a plate to upper case without spaces or dashes.
fn clean_plate(plate: &str) -> ServiceResult<String> {
    let plate: String = plate
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect();
    let valid = !plate.is_empty()
        && plate.chars().count() <= MAX_PLATE_CHARS
        && plate.chars().all(char::is_alphanumeric);
    if !valid {
        return Err(ServiceError::invalid(
            "input.vehicle.plate",
            format!(
                "must be 1 to {MAX_PLATE_CHARS} letters or digits (spaces and dashes are ignored)"
            ),
        ));
    }
    Ok(plate)
}

/// Parses a phone number in E.164 form: `+`, a country code not starting with 0, and 7 to 15
/// digits in all. Spaces, dashes, dots and brackets are removed first.
pub fn parse_e164(phone: &str, field: &str) -> ServiceResult<String> {
    let compact: String = phone
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    let valid = (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    if !valid {
        // A long value is described, not echoed, so an error stays small whatever the input.
        let shown = match phone.chars().count() {
            0..=32 => format!("{phone:?}"),
            n => format!("a value of {n} characters"),
        };
        return Err(ServiceError::invalid(
            field,
            format!("{shown} is not an E.164 number such as +250788123456"),
        ));
    }
    Ok(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_error_does_not_echo_long_input() {
        let long = "9".repeat(10_000);
        let err = parse_e164(&long, "phone").unwrap_err().to_string();
        assert!(err.contains("a value of 10000 characters"), "{err}");
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn e164_accepts_and_normalizes() {
        assert_eq!(
            parse_e164("+250 788 123-456", "phone").unwrap(),
            "+250788123456"
        );
        assert_eq!(
            parse_e164("+351912345678", "phone").unwrap(),
            "+351912345678"
        );
    }

    #[test]
    fn e164_rejects_bad_numbers() {
        for bad in [
            "250788123456",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+2507881x3456",
            "",
        ] {
            assert!(parse_e164(bad, "phone").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn plate_normalized() {
        assert_eq!(clean_plate(" rad 123-b ").unwrap(), "RAD123B");
        assert!(clean_plate("   ").is_err());
        assert!(clean_plate("AB#12").is_err());
    }

    #[test]
    fn name_bounds() {
        assert!(clean_name("  ", "name").is_err());
        assert!(clean_name(&"x".repeat(101), "name").is_err());
        assert!(clean_name("a\u{7}b", "name").is_err());
        assert_eq!(clean_name(" Aline ", "name").unwrap(), "Aline");
    }
}
