//! The GraphQL schema: types, inputs, enums, loaders, error mapping and the builder.

pub mod access_types;
pub mod enums;
pub mod error;
pub mod inputs;
pub mod loaders;
pub mod nesting;
pub mod parse_cache;
pub mod timing;
pub mod types;

use async_graphql::Schema;
use async_graphql::dataloader::DataLoader;

use crate::app::Services;
use crate::limits::{Limits, RequestLimits};
use crate::resolvers::{MutationRoot, QueryRoot, SubscriptionRoot};
use loaders::{DriverLoader, RiderLoader, VehicleLoader};

/// The schema type served at `/graphql`.
pub type MobilitySchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Deepest query accepted. The deepest useful query (a trip's offer's driver's vehicle inside
/// a subscription payload) is 6 levels.
pub const MAX_DEPTH: usize = 12;

/// Highest query complexity accepted (each field counts 1).
pub const MAX_COMPLEXITY: usize = 2_000;

/// Builds the schema around the services with the default [`Limits`].
pub fn build(services: Services) -> MobilitySchema {
    build_with_limits(services, &Limits::default())
}

/// Builds the schema around the services, with the alias limit, the mutation rate and the
/// introspection setting of `limits`.
pub fn build_with_limits(services: Services, limits: &Limits) -> MobilitySchema {
    let db = services.db.clone();
    let profiles = services.profiles.clone();
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .data(DataLoader::new(
        DriverLoader::new(db.clone(), profiles.clone()),
        tokio::spawn,
    ))
    .data(DataLoader::new(
        RiderLoader::new(db.clone(), profiles.clone()),
        tokio::spawn,
    ))
    .data(DataLoader::new(
        VehicleLoader::new(db, profiles),
        tokio::spawn,
    ))
    .data(services)
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    // Timing runs outermost so it measures the other extensions too.
    .extension(timing::RequestTimingFactory)
    .extension(error::ErrorCodes)
    // Before the parse cache, which skips the extensions after it for cached documents.
    .extension(RequestLimits::new(limits))
    .extension(parse_cache::ParseCache::default());
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The schema in SDL, as written to `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .finish()
    .sdl()
}
