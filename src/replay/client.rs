//! GraphQL over HTTP for the replay: one `reqwest` client that sends the `--token` bearer
//! token, a cap on requests in flight, and per operation the client-side latency and the
//! `extensions.code` of every error. An HTTP 401 is not counted: it stops the replay.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use url::Url;

use super::stats::Stats;
use crate::loadgen::token::{TokenArgs, TokenRejected, check_server, first_error_message};

/// Code counted for a request that got no GraphQL response: connection refused, timeout,
/// or a body that is not GraphQL JSON.
pub const TRANSPORT_ERROR: &str = "TRANSPORT_ERROR";

/// Code counted for a GraphQL error without `extensions.code`.
const MISSING_CODE: &str = "NO_CODE";

/// Code of [`CallError::TokenRejected`], which the statistics do not count.
const UNAUTHENTICATED: &str = "UNAUTHENTICATED";

/// Transport failures in a row after which the run stops, because the server is gone.
const MAX_CONSECUTIVE_TRANSPORT_FAILURES: u32 = 20;

/// Time limit of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed GraphQL call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The server returned a GraphQL error.
    #[error("{operation} failed with {code}: {message}")]
    GraphQl {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// No GraphQL response arrived.
    #[error("{operation} failed: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    /// The server returned HTTP 401, because the token is missing, unknown or revoked.
    #[error("{operation} failed: {error}")]
    TokenRejected {
        operation: &'static str,
        error: TokenRejected,
    },
}

impl CallError {
    /// Returns the `extensions.code` of a GraphQL error, [`TRANSPORT_ERROR`], or
    /// `UNAUTHENTICATED` for a rejected token.
    pub fn code(&self) -> &str {
        match self {
            CallError::GraphQl { code, .. } => code,
            CallError::Transport { .. } => TRANSPORT_ERROR,
            CallError::TokenRejected { .. } => UNAUTHENTICATED,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Response {
    data: Option<Value>,
    #[serde(default)]
    errors: Vec<ResponseError>,
}

#[derive(Debug, Deserialize)]
struct ResponseError {
    message: String,
    #[serde(default)]
    extensions: Option<Value>,
}

/// A GraphQL client of one server.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    endpoint: Url,
    websocket: Url,
    token: TokenArgs,
    permits: Semaphore,
    stats: Arc<Stats>,
    consecutive_transport_failures: AtomicU32,
    last_transport_error: Mutex<Option<String>>,
    token_rejected: Mutex<Option<TokenRejected>>,
}

impl Api {
    /// Creates a client of the server at `base` (such as `http://127.0.0.1:8080`) that keeps
    /// at most `concurrency` requests in flight and sends `token` with each.
    ///
    /// # Errors
    /// `base` is not an `http` or `https` URL.
    pub fn new(
        base: &str,
        concurrency: usize,
        token: &TokenArgs,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Self> {
        let base = Url::parse(&format!("{}/", base.trim_end_matches('/')))
            .with_context(|| format!("invalid --server URL {base:?}"))?;
        let ws_scheme = match base.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => {
                anyhow::bail!("invalid --server URL {base}: scheme {other:?} is not http or https")
            }
        };
        let endpoint = base.join("graphql")?;
        let mut websocket = base.join("graphql/ws")?;
        websocket
            .set_scheme(ws_scheme)
            .map_err(|()| anyhow::anyhow!("cannot build a WebSocket URL from {base}"))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(concurrency)
            .default_headers(token.default_headers())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            endpoint,
            websocket,
            token: token.clone(),
            permits: Semaphore::new(concurrency.max(1)),
            stats,
            consecutive_transport_failures: AtomicU32::new(0),
            last_transport_error: Mutex::new(None),
            token_rejected: Mutex::new(None),
        })
    }

    /// Returns the token that the HTTP client and the WebSocket subscriber send.
    pub fn token(&self) -> &TokenArgs {
        &self.token
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Returns the subscription endpoint, `/graphql/ws` on the same host.
    pub fn websocket_url(&self) -> &Url {
        &self.websocket
    }

    /// Sends `{ __typename }` once, outside the statistics.
    ///
    /// # Errors
    /// [`TokenRejected`] on HTTP 401, or a message naming the URL when the server cannot be
    /// reached or does not speak GraphQL.
    pub async fn check_reachable(&self) -> anyhow::Result<()> {
        check_server(&self.http, &self.endpoint, &self.token, "--server").await
    }

    /// Runs one operation and returns the value of its root field, which must be named
    /// `operation`. Records the latency and, on failure, the error code; an HTTP 401 is
    /// recorded only for [`Api::stop_reason`].
    ///
    /// # Errors
    /// The first GraphQL error of the response, a transport failure, or a rejected token.
    pub async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        document: &str,
        variables: Value,
    ) -> Result<T, CallError> {
        let result = self.send(operation, document, variables).await;
        match &result {
            Ok(_) | Err(CallError::GraphQl { .. }) => {
                self.consecutive_transport_failures
                    .store(0, Ordering::Relaxed);
            }
            Err(CallError::Transport { message, .. }) => {
                self.consecutive_transport_failures
                    .fetch_add(1, Ordering::Relaxed);
                *self
                    .last_transport_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message.clone());
            }
            Err(CallError::TokenRejected { error, .. }) => {
                let mut rejected = self
                    .token_rejected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if rejected.is_none() {
                    tracing::error!(
                        operation,
                        "the server rejected the token with HTTP 401; stopping the replay"
                    );
                    *rejected = Some(error.clone());
                }
                return result;
            }
        }
        if let Err(error) = &result
            && self.stats.record_error(operation, error.code())
        {
            tracing::warn!(%error, "first {} error of {operation}; later ones are only counted", error.code());
        }
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        document: &str,
        variables: Value,
    ) -> Result<T, CallError> {
        let transport = |message: String| CallError::Transport { operation, message };
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| transport(e.to_string()))?;
        let started = Instant::now();
        let sent = self
            .http
            .post(self.endpoint.clone())
            .json(&json!({ "query": document, "variables": variables }))
            .send()
            .await;
        let body = match sent {
            Ok(response) if response.status() == reqwest::StatusCode::UNAUTHORIZED => {
                let body: Value = response.json().await.unwrap_or_default();
                let error = self
                    .token
                    .http_rejected(self.endpoint.as_str(), first_error_message(&body));
                return Err(CallError::TokenRejected { operation, error });
            }
            Ok(response) => {
                let status = response.status();
                response
                    .json::<Response>()
                    .await
                    .map_err(|e| transport(format!("HTTP {status} without GraphQL JSON: {e}")))
            }
            Err(e) => Err(transport(error_chain(&e))),
        };
        self.stats
            .record_latency(operation, started.elapsed().as_secs_f64() * 1_000.0);
        let body = body?;

        if let Some(first) = body.errors.into_iter().next() {
            let code = first
                .extensions
                .as_ref()
                .and_then(|ext| ext.get("code"))
                .and_then(Value::as_str)
                .unwrap_or(MISSING_CODE)
                .to_owned();
            return Err(CallError::GraphQl {
                operation,
                code,
                message: first.message,
            });
        }
        let field = body
            .data
            .and_then(|mut data| data.get_mut(operation).map(Value::take))
            .ok_or_else(|| transport(format!("response has no data.{operation}")))?;
        serde_json::from_value(field)
            .map_err(|e| transport(format!("unexpected shape of data.{operation}: {e}")))
    }

    /// Returns why the replay must stop: the server rejected the token, or so many requests
    /// in a row got no response that the server is probably gone (with the last transport
    /// error).
    pub fn stop_reason(&self) -> Option<String> {
        if let Some(rejected) = &*self
            .token_rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Some(rejected.to_string());
        }
        let failures = self.consecutive_transport_failures.load(Ordering::Relaxed);
        if failures < MAX_CONSECUTIVE_TRANSPORT_FAILURES {
            return None;
        }
        let last = self
            .last_transport_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Some(format!(
            "the server stopped responding: {failures} requests in a row to {} failed; \
             last error: {last}",
            self.endpoint
        ))
    }
}

/// Formats an error with its sources, because reqwest's own message leaves out the cause,
/// such as "Connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_base() {
        let stats = Arc::new(Stats::default());
        let token = TokenArgs::default();
        let api = Api::new("http://127.0.0.1:8080", 4, &token, stats.clone()).unwrap();
        assert_eq!(api.endpoint().as_str(), "http://127.0.0.1:8080/graphql");
        assert_eq!(
            api.websocket_url().as_str(),
            "ws://127.0.0.1:8080/graphql/ws"
        );
        let prefixed =
            Api::new("https://example.test/mobility/", 4, &token, stats.clone()).unwrap();
        assert_eq!(
            prefixed.websocket_url().as_str(),
            "wss://example.test/mobility/graphql/ws"
        );
        assert!(Api::new("ftp://127.0.0.1", 4, &token, stats.clone()).is_err());
        assert!(Api::new("not a url", 4, &token, stats).is_err());
    }
}
