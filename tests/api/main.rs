//! Integration tests: the real server on 127.0.0.1, driven over HTTP and WebSocket, on SQLite
//! and on PostgreSQL. One binary, one module per area.

mod helpers;

mod concurrency;
mod inputs;
mod matching;
mod observability;
mod offers;
mod schema_file;
mod smoke;
mod subscriptions;
mod tracking;
mod trips;
