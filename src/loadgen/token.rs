//! The bearer token that `mobility loadgen` and `mobility replay` send to the server: the
//! default `Authorization` header of their HTTP client, and the `connection_init` payload of
//! their WebSockets.
//!
//! The server rejects a missing, unknown or revoked token with HTTP 401, or closes the
//! WebSocket with code 4403. No later request can succeed then, so both are a
//! [`TokenRejected`] error that stops the run instead of being counted as a failed request.

use std::fmt;
use std::str::FromStr;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Environment variable read when `--token` is absent.
pub const TOKEN_ENV: &str = "MOBILITY_TOKEN";

/// Close code of a WebSocket whose `connection_init` the server rejected.
pub const CLOSE_FORBIDDEN: u16 = 4403;

/// Prefix of every token secret.
const PREFIX: &str = "mob_";

/// Advice appended to every rejection message: which token to pass, and how.
const HINT: &str = "pass a token of this server with --token or the MOBILITY_TOKEN environment \
                    variable: its MOBILITY_ADMIN_TOKEN, or an admin token from `mobility token \
                    create --role admin` on its database";

/// A token secret: `mob_` and 64 hex digits. `Debug` prints only the prefix, so logging the
/// parsed arguments cannot leak the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let well_formed = text
            .strip_prefix(PREFIX)
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            // The value itself is not echoed, because it may be a secret with a typo.
            return Err(format!(
                "a token is {PREFIX} followed by 64 hex digits, without `Bearer `; \
                 `mobility token generate` prints the format"
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

/// Parses `--token` without echoing a rejected value, because clap's own error for an
/// invalid value would print it, and a mistyped secret is still a secret.
#[derive(Debug, Clone, Copy)]
struct TokenParser;

impl clap::builder::TypedValueParser for TokenParser {
    type Value = Token;

    fn parse_ref(
        &self,
        command: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Token, clap::Error> {
        let parsed = value
            .to_str()
            .ok_or_else(|| "a token is ASCII".to_owned())
            .and_then(Token::from_str);
        parsed.map_err(|message| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid --token or {TOKEN_ENV}: {message}\n"),
            )
            .with_cmd(command)
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({PREFIX}...)")
    }
}

impl Token {
    /// Returns the `Authorization` header value, marked sensitive so that the HTTP stack
    /// leaves it out of its debug output.
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("mob_ and hex digits are valid header characters");
        value.set_sensitive(true);
        value
    }
}

/// The `--token` option of `mobility loadgen` scenarios and `mobility replay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// Bearer token of the mobility server (`mob_` and 64 hex digits), sent on every request.
    ///
    /// It goes in the `Authorization` header and in the WebSocket `connection_init` payload.
    /// Use an admin token, such as the server's MOBILITY_ADMIN_TOKEN, because the runs act for
    /// every driver and rider, and admin tokens are exempt from the mutation rate limit.
    #[arg(
        long,
        env = TOKEN_ENV,
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = TokenParser
    )]
    pub token: Option<Token>,
}

impl TokenArgs {
    /// Returns the default headers of an HTTP client: `Authorization` when a token is given.
    pub fn default_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            headers.insert(AUTHORIZATION, token.header_value());
        }
        headers
    }

    /// Returns the `graphql-transport-ws` `connection_init` message, whose payload carries
    /// `{"authorization": "Bearer mob_..."}` when a token is given.
    pub fn connection_init(&self) -> Value {
        let payload = match &self.token {
            Some(token) => json!({ "authorization": format!("Bearer {}", token.0) }),
            None => json!({}),
        };
        json!({ "type": "connection_init", "payload": payload })
    }

    /// Returns the error for an HTTP 401 from `url`, whose GraphQL error message was
    /// `server_message`.
    pub fn http_rejected(&self, url: &str, server_message: &str) -> TokenRejected {
        self.rejected(format!("{url} returned HTTP 401 ({server_message})"))
    }

    /// Returns the error for a WebSocket that `url` closed with [`CLOSE_FORBIDDEN`] and
    /// `reason`.
    pub fn websocket_rejected(&self, url: &str, reason: &str) -> TokenRejected {
        self.rejected(format!(
            "{url} closed the WebSocket with code {CLOSE_FORBIDDEN} ({reason})"
        ))
    }

    /// Returns the error for a WebSocket that `url` closed with `frame` before
    /// `connection_ack`: [`TokenRejected`] for code [`CLOSE_FORBIDDEN`], else a plain error
    /// with the code and reason.
    pub fn closed_before_ack(&self, url: &str, frame: Option<&CloseFrame>) -> anyhow::Error {
        match frame {
            Some(frame) if u16::from(frame.code) == CLOSE_FORBIDDEN => {
                self.websocket_rejected(url, frame.reason.as_str()).into()
            }
            Some(frame) => anyhow::anyhow!(
                "{url} closed the WebSocket before connection_ack with code {} ({})",
                u16::from(frame.code),
                frame.reason.as_str()
            ),
            None => anyhow::anyhow!("{url} closed the WebSocket before connection_ack"),
        }
    }

    fn rejected(&self, failure: String) -> TokenRejected {
        let cause = if self.token.is_some() {
            "the token given with --token or MOBILITY_TOKEN was rejected"
        } else {
            "no token was given"
        };
        TokenRejected(format!("{failure}: {cause}; {HINT}"))
    }
}

/// The server rejected the token, or no token was given. No later request can succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRejected(String);

/// Sends `{ __typename }` to a server's GraphQL `endpoint`, so that an unreachable server or
/// a missing or rejected token stops a tool before its work starts. `flag` names the option
/// that sets the server's URL, for the messages.
///
/// # Errors
/// [`TokenRejected`] on HTTP 401, or a message naming the URL when the server cannot be
/// reached or returns no data.
pub async fn check_server(
    http: &reqwest::Client,
    endpoint: &reqwest::Url,
    token: &TokenArgs,
    flag: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let response = http
        .post(endpoint.clone())
        .timeout(std::time::Duration::from_secs(5))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the mobility server at {endpoint}; start it with `mobility serve` \
                 or pass {flag}"
            )
        })?;
    let status = response.status();
    let body: Value = response.json().await.with_context(|| {
        format!("{endpoint} returned HTTP {status} without JSON; is {flag} a mobility server?")
    })?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let rejected = token.http_rejected(endpoint.as_str(), first_error_message(&body));
        return Err(rejected.into());
    }
    if body.pointer("/data/__typename").is_none() {
        anyhow::bail!(
            "{endpoint} returned HTTP {status} without data: {body}; is {flag} a mobility server?"
        );
    }
    Ok(())
}

/// Returns the `message` of the first GraphQL error of a response body, or `""`.
pub fn first_error_message(body: &Value) -> &str {
    body.pointer("/errors/0/message")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Starts a WebSocket server on 127.0.0.1 for tests. It accepts one connection, reads its
/// first message and closes it with [`CLOSE_FORBIDDEN`], as the mobility server does for a
/// rejected token. Returns the `ws://` URL and a task that yields the first message as JSON.
#[cfg(test)]
pub(crate) async fn rejecting_server() -> (url::Url, tokio::task::JoinHandle<Value>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The clients require the server to choose their subprotocol. The callback's error
        // type is tungstenite's HTTP response, which clippy finds large.
        #[allow(clippy::result_large_err)]
        let choose_protocol = |_: &Request, mut response: Response| {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("graphql-transport-ws"),
            );
            Ok(response)
        };
        let mut socket = tokio_tungstenite::accept_hdr_async(stream, choose_protocol)
            .await
            .unwrap();
        let first = loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    break serde_json::from_str(text.as_str()).unwrap();
                }
                Some(Ok(_)) => {}
                other => panic!("no first message: {other:?}"),
            }
        };
        let frame = CloseFrame {
            code: CloseCode::from(CLOSE_FORBIDDEN),
            reason: "token is unknown or revoked".into(),
        };
        socket.send(Message::Close(Some(frame))).await.unwrap();
        // Reads the client's close reply, so the close handshake completes.
        while let Some(Ok(_)) = socket.next().await {}
        first
    });
    let url = url::Url::parse(&format!("ws://{address}/graphql/ws")).unwrap();
    (url, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "mob_0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789abcdef";

    #[test]
    fn token_parses_only_well_formed_secrets() {
        assert!(SECRET.parse::<Token>().is_ok());
        assert_eq!(
            format!(" {SECRET}\n").parse::<Token>(),
            SECRET.parse::<Token>()
        );
        for bad in [
            "",
            "mob_",
            &format!("Bearer {SECRET}"),
            &SECRET[..SECRET.len() - 1],
            &format!("{SECRET}0"),
            &SECRET.replace("mob_", "tok_"),
            &SECRET.replace('f', "g"),
        ] {
            let error = bad.parse::<Token>().unwrap_err();
            assert!(!error.contains(&SECRET[4..20]), "{error}");
        }
    }

    #[test]
    fn invalid_token_is_not_echoed() {
        use clap::Parser;

        #[derive(Debug, Parser)]
        struct Command {
            #[command(flatten)]
            token: TokenArgs,
        }

        let parsed = Command::try_parse_from(["test", "--token", SECRET]).unwrap();
        assert_eq!(parsed.token.token, Some(SECRET.parse().unwrap()));
        let typo = format!("Bearer {SECRET}");
        let error = Command::try_parse_from(["test", "--token", &typo]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("--token"), "{text}");
        assert!(!text.contains(&SECRET[4..20]), "{text}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let args = TokenArgs {
            token: Some(SECRET.parse().unwrap()),
        };
        let printed = format!("{args:?}");
        assert!(!printed.contains(&SECRET[4..]), "{printed}");
    }

    #[test]
    fn header_and_init_carry_the_token() {
        let args = TokenArgs {
            token: Some(SECRET.parse().unwrap()),
        };
        let headers = args.default_headers();
        let value = &headers[AUTHORIZATION];
        assert_eq!(value.to_str().unwrap(), format!("Bearer {SECRET}"));
        assert!(value.is_sensitive());
        let init = args.connection_init();
        assert_eq!(init["type"], "connection_init");
        assert_eq!(init["payload"]["authorization"], format!("Bearer {SECRET}"));
    }

    #[test]
    fn without_token_nothing_is_sent() {
        let args = TokenArgs::default();
        assert!(args.default_headers().is_empty());
        assert_eq!(args.connection_init()["payload"], json!({}));
    }

    #[test]
    fn rejection_names_the_option_and_the_variable() {
        let missing = TokenArgs::default().http_rejected("http://127.0.0.1:1/graphql", "missing");
        let text = missing.to_string();
        assert!(text.contains("HTTP 401"), "{text}");
        assert!(text.contains("no token was given"), "{text}");
        assert!(text.contains("--token"), "{text}");
        assert!(text.contains("MOBILITY_TOKEN"), "{text}");

        let given = TokenArgs {
            token: Some(SECRET.parse().unwrap()),
        };
        let text = given
            .websocket_rejected("ws://127.0.0.1:1/graphql/ws", "token is unknown or revoked")
            .to_string();
        assert!(text.contains("4403"), "{text}");
        assert!(text.contains("was rejected"), "{text}");
        assert!(!text.contains(&SECRET[4..]), "{text}");
    }

    #[test]
    fn close_4403_is_a_rejected_token() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

        let args = TokenArgs::default();
        let forbidden = CloseFrame {
            code: CloseCode::from(CLOSE_FORBIDDEN),
            reason: "token is unknown or revoked".into(),
        };
        let error = args.closed_before_ack("ws://127.0.0.1:1/graphql/ws", Some(&forbidden));
        assert!(error.is::<TokenRejected>(), "{error}");
        let going_away = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        let error = args.closed_before_ack("ws://127.0.0.1:1/graphql/ws", Some(&going_away));
        assert!(!error.is::<TokenRejected>(), "{error}");
        assert!(error.to_string().contains("1001"), "{error}");
        assert!(!args.closed_before_ack("ws://x", None).is::<TokenRejected>());
    }

    #[test]
    fn first_error_message_of_body() {
        let body = json!({ "errors": [{ "message": "token is unknown or revoked" }] });
        assert_eq!(first_error_message(&body), "token is unknown or revoked");
        assert_eq!(first_error_message(&json!({ "data": null })), "");
    }
}
