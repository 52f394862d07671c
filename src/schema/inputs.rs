//! GraphQL input objects.

use async_graphql::{ID, InputObject};
use chrono::{DateTime, Utc};

use super::enums::{PartyRole, TripStatus, VehicleType};
use crate::tracking::LocationInput as DomainLocation;

/// A point in decimal degrees (WGS84).
#[derive(InputObject, Debug, Clone, Copy)]
pub struct LatLngInput {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lng: f64,
}

/// A location fix from a driver's device.
#[derive(InputObject, Debug, Clone)]
pub struct LocationInput {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lng: f64,
    /// Degrees clockwise from true north, 0 to 360.
    pub heading_deg: Option<f64>,
    /// Meters per second, 0 to 100.
    pub speed_mps: Option<f64>,
    /// Radius of the 68% confidence circle in meters, 0 to 10000.
    pub accuracy_meters: Option<f64>,
    /// Device time of the fix; the server's time when omitted.
    pub recorded_at: Option<DateTime<Utc>>,
}

impl From<&LocationInput> for DomainLocation {
    fn from(input: &LocationInput) -> Self {
        DomainLocation {
            lat: input.lat,
            lng: input.lng,
            heading_deg: input.heading_deg,
            speed_mps: input.speed_mps,
            accuracy_m: input.accuracy_meters,
            recorded_at: input.recorded_at,
        }
    }
}

/// One update of a batch.
#[derive(InputObject, Debug, Clone)]
pub struct DriverLocationUpdateInput {
    pub driver_id: ID,
    pub location: LocationInput,
}

/// A new rider.
#[derive(InputObject, Debug, Clone)]
pub struct RegisterRiderInput {
    /// 1 to 100 characters.
    pub name: String,
    /// E.164, such as +250788123456; unique.
    pub phone: String,
}

/// A driver's vehicle.
#[derive(InputObject, Debug, Clone)]
pub struct VehicleInput {
    #[graphql(name = "type")]
    pub vehicle_type: VehicleType,
    /// Registration plate; stored upper case without spaces or dashes; unique.
    pub plate: String,
    /// Make, model and colour shown to riders, up to 100 characters.
    pub description: Option<String>,
}

/// A new driver with a vehicle.
#[derive(InputObject, Debug, Clone)]
pub struct RegisterDriverInput {
    /// 1 to 100 characters.
    pub name: String,
    /// E.164, such as +250788123456; unique.
    pub phone: String,
    pub vehicle: VehicleInput,
}

/// A ride request.
#[derive(InputObject, Debug, Clone)]
pub struct RequestTripInput {
    pub rider_id: ID,
    pub pickup: LatLngInput,
    pub dropoff: Option<LatLngInput>,
    pub vehicle_type: VehicleType,
    /// Pickup time for a trip booked ahead, up to 7 days by default; now when omitted.
    pub scheduled_at: Option<DateTime<Utc>>,
}

/// The rider or driver acting on a trip.
#[derive(InputObject, Debug, Clone)]
pub struct ActorInput {
    pub role: PartyRole,
    pub id: ID,
}

/// Filter of the trip list; every field narrows it.
#[derive(InputObject, Debug, Clone, Default)]
pub struct TripFilterInput {
    pub status: Option<Vec<TripStatus>>,
    pub rider_id: Option<ID>,
    pub driver_id: Option<ID>,
}
