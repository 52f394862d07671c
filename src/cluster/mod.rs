//! Running as several instances: what instances share through Redis when `REDIS_URL` is set.
//!
//! - [`link`]: the reconnecting Redis connection, its key prefix and its health.
//! - [`cache`]: the read-through cache of driver, rider and vehicle rows.
//! - [`replication`]: the events channel that keeps every instance's live state in step.

pub mod cache;
pub mod link;
pub mod replication;

pub use link::RedisLink;
pub use replication::Cluster;
