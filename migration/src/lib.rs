//! Schema migrations of the mobility server, applied in order by `mobility migrate` and on
//! every start of `mobility serve`.
//!
//! The same migrations run on SQLite and PostgreSQL. Partial unique indexes, which both engines
//! support with the same syntax, enforce the rules that must hold under concurrent writes.

// `MigrationTrait` declares `&SchemaManager` with an elided lifetime, and naming it in the
// impls makes them no longer match the trait, so the idiom lint is off for this crate.
#![allow(elided_lifetimes_in_paths)]

pub use sea_orm_migration::prelude::*;

mod m20261204_000001_create_riders_table;
mod m20261204_000002_create_vehicles_table;
mod m20261204_000003_create_drivers_table;
mod m20261204_000004_create_driver_presence_table;
mod m20261204_000005_create_location_history_table;
mod m20261204_000006_create_trips_table;
mod m20261204_000007_create_offers_table;
mod m20261204_000008_create_trip_events_table;
mod m20261204_000009_create_ratings_table;
mod m20261204_000010_create_api_tokens_table;
mod m20261204_000011_create_idempotency_keys_table;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261204_000001_create_riders_table::Migration),
            Box::new(m20261204_000002_create_vehicles_table::Migration),
            Box::new(m20261204_000003_create_drivers_table::Migration),
            Box::new(m20261204_000004_create_driver_presence_table::Migration),
            Box::new(m20261204_000005_create_location_history_table::Migration),
            Box::new(m20261204_000006_create_trips_table::Migration),
            Box::new(m20261204_000007_create_offers_table::Migration),
            Box::new(m20261204_000008_create_trip_events_table::Migration),
            Box::new(m20261204_000009_create_ratings_table::Migration),
            Box::new(m20261204_000010_create_api_tokens_table::Migration),
            Box::new(m20261204_000011_create_idempotency_keys_table::Migration),
        ]
    }
}
