//! One `liveTrips` subscriber over WebSocket with the `graphql-transport-ws` subprotocol,
//! which counts the trip events it receives during the replay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use url::Url;

use crate::loadgen::token::TokenArgs;

/// Time limit of the connection and of the server's `connection_ack`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Id of the one subscription on the connection.
const SUBSCRIPTION_ID: &str = "1";

const LIVE_TRIPS: &str =
    "subscription liveTrips { liveTrips { event { kind } trip { id status } } }";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Counts of the messages the subscriber received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriptionReport {
    /// `next` messages with data.
    pub received: u64,
    /// Received events by `TripEventKind`.
    pub by_kind: BTreeMap<String, u64>,
    /// `next` messages with errors, and `error` messages.
    pub errors: u64,
    /// Reason the stream ended before the replay stopped it, if it did.
    pub ended_early: Option<String>,
}

/// A running subscriber.
#[derive(Debug)]
pub struct Subscriber {
    stop: oneshot::Sender<()>,
    task: JoinHandle<SubscriptionReport>,
    received: Arc<AtomicU64>,
}

/// Connects to `url`, completes the `graphql-transport-ws` handshake with `token` in the
/// `connection_init` payload and subscribes to `liveTrips`.
///
/// # Errors
/// The connection, the handshake or the subscribe message failed or timed out, or the server
/// rejected the token ([`crate::loadgen::token::TokenRejected`]).
pub async fn start(url: &Url, token: &TokenArgs) -> anyhow::Result<Subscriber> {
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("invalid WebSocket URL {url}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = timeout(HANDSHAKE_TIMEOUT, connect_async(request))
        .await
        .with_context(|| format!("WebSocket connection to {url} timed out"))?
        .with_context(|| format!("WebSocket connection to {url} failed"))?;

    send_json(&mut socket, token.connection_init()).await?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .with_context(|| format!("no connection_ack from {url} within 5 s"))?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(token.closed_before_ack(url.as_str(), frame.as_ref()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("WebSocket handshake with {url} failed: {e}"),
            None => return Err(token.closed_before_ack(url.as_str(), None)),
        };
        let message: Value = serde_json::from_str(text.as_str())
            .with_context(|| format!("{url} sent a message that is not JSON: {text}"))?;
        match message["type"].as_str() {
            Some("connection_ack") => break,
            Some("ping") => send_json(&mut socket, json!({ "type": "pong" })).await?,
            _ => bail!("{url} sent {message} instead of connection_ack"),
        }
    }
    let subscribe = json!({
        "id": SUBSCRIPTION_ID,
        "type": "subscribe",
        "payload": { "query": LIVE_TRIPS },
    });
    send_json(&mut socket, subscribe).await?;

    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(read_events(socket, stopped, received.clone()));
    Ok(Subscriber {
        stop,
        task,
        received,
    })
}

async fn send_json(socket: &mut Socket, message: Value) -> anyhow::Result<()> {
    socket
        .send(Message::text(message.to_string()))
        .await
        .context("cannot send on the WebSocket")
}

async fn read_events(
    mut socket: Socket,
    mut stop: oneshot::Receiver<()>,
    received: Arc<AtomicU64>,
) -> SubscriptionReport {
    let mut report = SubscriptionReport::default();
    loop {
        let message = tokio::select! {
            _ = &mut stop => {
                let complete = json!({ "id": SUBSCRIPTION_ID, "type": "complete" });
                // The replay is over, so a failure to say goodbye changes nothing.
                let _ = send_json(&mut socket, complete).await;
                let _ = socket.close(None).await;
                break;
            }
            message = socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                report.ended_early = Some(format!("server closed the WebSocket: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                report.ended_early = Some(format!("WebSocket failed: {e}"));
                break;
            }
            None => {
                report.ended_early = Some("server closed the WebSocket".into());
                break;
            }
        };
        let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
            report.errors += 1;
            continue;
        };
        match message["type"].as_str() {
            Some("next") => {
                let payload = &message["payload"];
                if payload.get("errors").is_some_and(|e| !e.is_null()) {
                    report.errors += 1;
                    continue;
                }
                let kind = payload
                    .pointer("/data/liveTrips/event/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN");
                *report.by_kind.entry(kind.to_owned()).or_default() += 1;
                report.received += 1;
                received.fetch_add(1, Ordering::Relaxed);
            }
            Some("ping") => {
                let _ = send_json(&mut socket, json!({ "type": "pong" })).await;
            }
            Some("error") => {
                report.errors += 1;
                report.ended_early = Some(format!("subscription failed: {}", message["payload"]));
                break;
            }
            Some("complete") => {
                report.ended_early = Some("server completed the subscription".into());
                break;
            }
            _ => {}
        }
    }
    report
}

impl Subscriber {
    /// Waits until `expected` events arrived or `limit` passed, because events of the last
    /// mutations may still be on their way.
    pub async fn wait_for(&self, expected: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the subscription and returns what it received.
    pub async fn stop(self) -> SubscriptionReport {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(report) => report,
            Err(error) => SubscriptionReport {
                ended_early: Some(format!("subscriber task failed: {error}")),
                ..SubscriptionReport::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::token::{TokenRejected, rejecting_server};

    #[tokio::test]
    async fn close_4403_stops_with_rejected_token() {
        let (url, server) = rejecting_server().await;
        let secret = crate::auth::tokens::generate_secret();
        let token = TokenArgs {
            token: Some(secret.parse().unwrap()),
        };
        let error = start(&url, &token).await.unwrap_err();
        assert!(error.is::<TokenRejected>(), "{error:#}");
        let init = server.await.unwrap();
        assert_eq!(init["type"], "connection_init");
        assert_eq!(init["payload"]["authorization"], format!("Bearer {secret}"));
    }
}
