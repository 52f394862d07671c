//! The Redis connection shared by every Redis-backed part: one reconnecting connection
//! manager for commands, the key prefix, and the up/down state that `/readyz` and
//! `mobility_redis_up` report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::{REDIS_ERRORS, REDIS_UP};

/// A command without a reply within this time fails, so a request never waits long on a
/// Redis that stopped responding.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Time allowed to open a TCP connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Maximum pause between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Reconnection attempts within one command before it fails; the next command tries again.
const RECONNECT_ATTEMPTS: usize = 2;
/// Maximum time a readiness probe waits for PING.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Values of [`RedisLink::state`].
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Handle to Redis; clone freely.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: Arc<str>,
    /// `UNKNOWN` until the first command, then `UP` or `DOWN` after each.
    state: Arc<AtomicU8>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Prepares a connection to `url`. The connection opens lazily and reopens by itself, so a
    /// Redis that is down at start only makes the instance unready until it responds.
    ///
    /// # Errors
    /// A URL that does not parse.
    pub fn open(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_max_delay(MAX_RECONNECT_DELAY)
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        metrics::gauge!(REDIS_UP).set(0.0);
        Ok(Self {
            client,
            manager,
            prefix: prefix.into(),
            state: Arc::new(AtomicU8::new(UNKNOWN)),
        })
    }

    /// `prefix:name`, the full name of a key or channel.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Returns a clone of the command connection. Clones are cheap and share one socket.
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Returns the client, for connections the manager does not cover, such as pub/sub.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Returns whether the last command or probe succeeded.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// Records a successful command; logs the first success and each recovery once.
    pub fn record_ok(&self) {
        if self.state.swap(UP, Ordering::Relaxed) != UP {
            tracing::info!("redis reachable");
            metrics::gauge!(REDIS_UP).set(1.0);
        }
    }

    /// Counts a failed command and logs the first failure of an outage at warn level, the
    /// rest at debug, so an outage does not flood the log.
    pub fn record_error(&self, operation: &'static str, error: &redis::RedisError) {
        metrics::counter!(REDIS_ERRORS, "operation" => operation).increment(1);
        if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            tracing::warn!(operation, error = %error, "redis unreachable");
            metrics::gauge!(REDIS_UP).set(0.0);
        } else {
            tracing::debug!(operation, error = %error, "redis command failed");
        }
    }

    /// Sends PING and records the result; returns whether the reply came in time.
    pub async fn probe(&self) -> bool {
        let mut connection = self.connection();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        let result = match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        };
        match result {
            Ok(_) => {
                self.record_ok();
                true
            }
            Err(e) => {
                self.record_error("ping", &e);
                false
            }
        }
    }
}
