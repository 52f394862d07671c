//! Integration tests: the real server on 127.0.0.1, driven over HTTP and WebSocket, on SQLite
//! and on PostgreSQL. One binary, one module per area.

mod helpers;

mod cache;
mod cluster;
mod concurrency;
mod faults;
mod inputs;
mod matching;
mod observability;
mod offers;
mod ops_files;
mod schema_file;
mod smoke;
mod subscriptions;
mod tracking;
mod trips;
