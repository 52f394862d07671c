//! mobility: a ride-matching server behind one GraphQL API.
//!
//! Modules, from the edge inwards:
//!
//! - [`app`]: builds the services, the HTTP router (GraphiQL, `/graphql`, `/graphql/ws`,
//!   `/healthz`) and runs the server with graceful shutdown.
//! - [`ws`]: the GraphQL WebSocket transport: token check, limits, close codes.
//! - [`limits`]: request limits (aliases, batches, body, mutation rate, WebSockets) and CORS.
//! - [`schema`]: GraphQL types, inputs, enums, DataLoaders, the schema builder and the one
//!   mapping from service errors to `extensions.code`.
//! - [`resolvers`]: query, mutation and subscription roots; thin, they call one service each.
//! - [`auth`]: API tokens, roles and what each role may do.
//! - [`idempotency`]: `Idempotency-Key` on mutations: the first response stored, repeats replayed.
//! - [`accounts`]: riders, drivers and vehicles.
//! - [`tracking`]: presence and live positions, with fix validation and the live registry.
//! - [`matching`]: spatial search for drivers near a pickup and requests near a driver.
//! - [`ranking`]: the pure scoring of candidates.
//! - [`trips`]: the trip state machine and its transactions, offers and their expiry.
//! - [`events`]: in-process fan-out of live events to subscribers.
//! - [`cluster`]: what several instances share through Redis: events, live state, cache.
//! - [`spatial`], [`geometry`]: the R-tree index and coordinate handling.
//! - [`config`], [`db`], [`error`]: settings, database connection, service errors.
//! - [`metrics`]: Prometheus metric names and the `/metrics` exposition.
//! - [`replay`]: drives a running server with the Porto taxi data over its public API.
//! - [`loadgen`]: `mobility seed` and `mobility loadgen`, benchmarks of the server and of
//!   Redis and PostGIS over the network.
//!
//! Domain modules do not use async-graphql; only `schema` and `resolvers` do.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod geometry;
pub mod idempotency;
pub mod limits;
pub mod loadgen;
pub mod matching;
pub mod metrics;
pub mod ranking;
pub mod replay;
pub mod resolvers;
pub mod schema;
pub mod spatial;
pub mod tracking;
pub mod trips;
pub mod ws;
