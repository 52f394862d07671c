//! Integration tests: the real server on 127.0.0.1, driven over HTTP and WebSocket, on SQLite
//! and on PostgreSQL. One binary, one module per area.

mod helpers;

mod auth;
mod cache;
mod cluster;
mod concurrency;
mod durability;
mod faults;
mod fuzz;
mod idempotency;
mod inputs;
mod limits;
mod matching;
mod observability;
mod offers;
mod ops_files;
mod schema_file;
mod smoke;
mod subscriptions;
mod tracking;
mod trips;
