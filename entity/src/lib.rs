//! SeaORM entities of the mobility server, one module per table.
//!
//! Entities are plain storage models: the GraphQL types in the server crate convert from them,
//! so a column rename never changes the public schema. Enumerations are stored as short
//! upper-case strings, which read the same in SQLite and PostgreSQL.

pub mod api_token;
pub mod driver;
pub mod driver_presence;
pub mod enums;
pub mod idempotency_key;
pub mod location_history;
pub mod offer;
pub mod rating;
pub mod rider;
pub mod trip;
pub mod trip_event;
pub mod vehicle;

pub mod prelude {
    //! Entity types under short names, for `use entity::prelude::*`.
    pub use crate::api_token::Entity as ApiToken;
    pub use crate::driver::Entity as Driver;
    pub use crate::driver_presence::Entity as DriverPresence;
    pub use crate::idempotency_key::Entity as IdempotencyKey;
    pub use crate::location_history::Entity as LocationHistory;
    pub use crate::offer::Entity as Offer;
    pub use crate::rating::Entity as Rating;
    pub use crate::rider::Entity as Rider;
    pub use crate::trip::Entity as Trip;
    pub use crate::trip_event::Entity as TripEvent;
    pub use crate::vehicle::Entity as Vehicle;
}
