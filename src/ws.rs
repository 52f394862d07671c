//! The GraphQL WebSocket transport: authentication in `connection_init`, the protocol's close
//! codes, a bound on subscriptions per connection, dropping of clients that stop reading, and
//! a close frame when the server shuts down.
//!
//! async-graphql runs the protocol (`graphql-transport-ws` or legacy `graphql-ws`). This module
//! pumps messages between it and the socket, and enforces what the protocol state machine
//! leaves to the server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::auth::Tokens;

/// Maximum time one message may take to reach a client before the connection is closed as a
/// slow consumer. Events wait in bounded channels meanwhile and the oldest are skipped, so a
/// stalled client never makes the server buffer without end.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval at which an open connection's token is checked again. Look-ups are cached for
/// [`crate::auth::CACHE_TTL`], so a revoked token loses its subscriptions within the sum of
/// the two on other instances, and within this interval on the one that revoked it.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Close code of `graphql-transport-ws` for a rejected `connection_init`.
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Close code for a client that opens more subscriptions than allowed. The protocol leaves
/// 4400-4499 to the server; 4429 reads as HTTP's Too Many Requests.
pub const CLOSE_TOO_MANY_SUBSCRIPTIONS: u16 = 4429;
/// Close code for a client that does not read its messages in time (1008: policy violation).
pub const CLOSE_SLOW_CONSUMER: u16 = 1008;
/// Close code when the server shuts down (1001: going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code of `graphql-transport-ws` for a subscription sent before `connection_ack`.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Prefix of the `connection_init` rejection, so the pump can tell it from protocol errors.
const AUTH_REJECTED: &str = "unauthenticated: ";

/// The open WebSocket connections of one server. axum's graceful shutdown waits for HTTP
/// requests but not for upgraded connections, so the server waits here until every connection
/// has sent its close frame before the process exits.
#[derive(Debug, Clone)]
pub struct Connections(Arc<watch::Sender<usize>>);

impl Default for Connections {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl Connections {
    /// Counts a connection as open until the returned guard is dropped.
    pub fn open(&self) -> OpenConnection {
        self.0.send_modify(|open| *open += 1);
        OpenConnection(self.0.clone())
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        let _ = self.0.subscribe().wait_for(|open| *open == 0).await;
    }
}

/// One open connection of [`Connections`].
#[derive(Debug)]
pub struct OpenConnection(Arc<watch::Sender<usize>>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_subscriptions: usize,
}

/// Reads the token from a `connection_init` payload: `{"authorization": "Bearer mob_..."}`,
/// `{"Authorization": ...}`, `{"token": "mob_..."}`, or the same under `headers`, which is
/// where GraphiQL puts its headers.
pub fn token_from_init(payload: &serde_json::Value) -> Option<String> {
    let from = |object: &serde_json::Value| {
        let bearer = object
            .get("authorization")
            .or_else(|| object.get("Authorization"))
            .and_then(serde_json::Value::as_str)
            .map(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .unwrap_or(value)
                    .trim()
                    .to_owned()
            });
        bearer.or_else(|| {
            object
                .get("token")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
    };
    from(payload).or_else(|| payload.get("headers").and_then(from))
}

/// Runs one GraphQL WebSocket connection until the client leaves, breaks a limit, or the
/// server shuts down. `header_token` is a token from the upgrade request's `Authorization`
/// header, used when `connection_init` carries none.
pub async fn serve<E: Executor>(
    socket: WebSocket,
    executor: E,
    protocol: WebSocketProtocols,
    tokens: Tokens,
    header_token: Option<String>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, source) = socket.split();

    // Client messages that open or close subscriptions are counted on the way in.
    let (limit_tx, mut limit_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut active: HashSet<String> = HashSet::new();
    let input = source
        .take_while(|message| std::future::ready(message.is_ok()))
        .filter_map(|message| {
            std::future::ready(match message {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            })
        })
        .map(move |bytes| {
            if count_subscription(&bytes, &mut active) > limits.max_subscriptions {
                let _ = limit_tx.try_send(());
            }
            bytes
        });

    // The token the connection authenticated with, checked again every `RECHECK_INTERVAL` so
    // a revoked token loses its open subscriptions too.
    let authenticated: Arc<Mutex<Option<String>>> = Arc::default();
    let recheck_tokens = tokens.clone();
    let init_token = authenticated.clone();
    let on_init = move |payload: serde_json::Value| async move {
        let Some(token) = token_from_init(&payload).or(header_token) else {
            return Err(async_graphql::Error::new(format!(
                "{AUTH_REJECTED}connection_init carries no token; send \
                 {{\"authorization\": \"Bearer <token>\"}}"
            )));
        };
        match tokens.authenticate(&token).await {
            Ok(Some(principal)) => {
                tracing::debug!(token.id = principal.token_id, role = %principal.role, "websocket authenticated");
                *init_token.lock() = Some(token);
                let mut data = Data::default();
                data.insert(principal);
                Ok(data)
            }
            Ok(None) => Err(async_graphql::Error::new(format!(
                "{AUTH_REJECTED}token is unknown or revoked"
            ))),
            Err(e) => {
                crate::metrics::count_database_error();
                tracing::error!(error = %e, "websocket token check failed");
                Err(async_graphql::Error::new(
                    "database unreachable; retry later",
                ))
            }
        }
    };

    let messages =
        async_graphql::http::WebSocket::new(executor, input, protocol).on_connection_init(on_init);
    futures_util::pin_mut!(messages);

    let mut recheck = tokio::time::interval(RECHECK_INTERVAL);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = recheck.tick() => {
                let token = authenticated.lock().clone();
                if let Some(token) = token
                    && let Ok(None) = recheck_tokens.authenticate(&token).await
                {
                    tracing::info!("websocket token revoked; closing the connection");
                    close(&mut sink, CLOSE_FORBIDDEN, "token is unknown or revoked").await;
                    return;
                }
                continue;
            }
            _ = limit_rx.recv() => {
                close(&mut sink, CLOSE_TOO_MANY_SUBSCRIPTIONS, &format!(
                    "more than {} subscriptions on one connection", limits.max_subscriptions
                )).await;
                return;
            }
            () = wait_stop(&mut shutdown) => {
                close(&mut sink, CLOSE_GOING_AWAY, "server shutting down").await;
                return;
            }
        };
        let Some(message) = next else {
            let _ = sink.close().await;
            return;
        };
        let message = match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(_, reason) if reason.starts_with(AUTH_REJECTED) => {
                let reason = reason.trim_start_matches(AUTH_REJECTED);
                close(&mut sink, CLOSE_FORBIDDEN, reason).await;
                return;
            }
            WsMessage::Close(code, reason) => {
                // async-graphql 7.2.1 closes with 1011 (internal error) only for a subscription
                // sent before `connection_ack`, which is the client's fault.
                let code = if code == 1011 {
                    CLOSE_UNAUTHORIZED
                } else {
                    code
                };
                // async-graphql puts whole error messages in close reasons, which may exceed
                // the 123 bytes a close frame allows; `close` shortens them.
                close(&mut sink, code, &reason).await;
                return;
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("websocket client stopped reading; closing it");
                close(&mut sink, CLOSE_SLOW_CONSUMER, "client too slow").await;
                return;
            }
        }
    }
}

/// Resolves once `shutdown` turns true or its sender is gone.
async fn wait_stop(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Returns the first subprotocol of the upgrade request that async-graphql speaks.
pub fn protocol_of(headers: &axum::http::HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|name| name.trim().parse().ok())
}

/// Tracks the subscription ids a client message opens (`subscribe`, legacy `start`) or closes
/// (`complete`, legacy `stop`); returns how many are open after it.
fn count_subscription(bytes: &[u8], active: &mut HashSet<String>) -> usize {
    #[derive(serde::Deserialize)]
    struct ClientMessage {
        #[serde(rename = "type")]
        kind: String,
        id: Option<String>,
    }
    if let Ok(message) = serde_json::from_slice::<ClientMessage>(bytes)
        && let Some(id) = message.id
    {
        match message.kind.as_str() {
            "subscribe" | "start" => {
                active.insert(id);
            }
            "complete" | "stop" => {
                active.remove(&id);
            }
            _ => {}
        }
    }
    active.len()
}

async fn close<S>(sink: &mut S, code: u16, reason: &str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    // A close reason is at most 123 bytes by RFC 6455.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn token_found_where_clients_put_it() {
        let token = Some("mob_x".to_owned());
        assert_eq!(
            token_from_init(&json!({ "authorization": "Bearer mob_x" })),
            token
        );
        assert_eq!(
            token_from_init(&json!({ "Authorization": "Bearer mob_x" })),
            token
        );
        assert_eq!(token_from_init(&json!({ "token": "mob_x" })), token);
        assert_eq!(
            token_from_init(&json!({ "headers": { "Authorization": "Bearer mob_x" } })),
            token
        );
        assert_eq!(token_from_init(&json!({})), None);
        assert_eq!(token_from_init(&json!(null)), None);
    }

    #[tokio::test]
    async fn all_closed_waits_for_every_connection() {
        let connections = Connections::default();
        connections.all_closed().await;
        let first = connections.open();
        let second = connections.open();
        let waiting = tokio::spawn({
            let connections = connections.clone();
            async move { connections.all_closed().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one connection is still open");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("all_closed resolves once the last connection closes")
            .expect("task completes");
    }

    #[test]
    fn subscriptions_counted_by_id() {
        let mut active = HashSet::new();
        let open = |id: &str| json!({ "type": "subscribe", "id": id, "payload": {} }).to_string();
        assert_eq!(count_subscription(open("1").as_bytes(), &mut active), 1);
        assert_eq!(count_subscription(open("1").as_bytes(), &mut active), 1);
        assert_eq!(count_subscription(open("2").as_bytes(), &mut active), 2);
        let stop = json!({ "type": "complete", "id": "1" }).to_string();
        assert_eq!(count_subscription(stop.as_bytes(), &mut active), 1);
        let legacy = json!({ "type": "start", "id": "3" }).to_string();
        assert_eq!(count_subscription(legacy.as_bytes(), &mut active), 2);
        assert_eq!(count_subscription(b"not json", &mut active), 2);
    }
}
