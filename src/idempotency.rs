//! Idempotency keys for mutations over HTTP, after the IETF httpapi draft "The
//! Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-idempotency-key-header-06), whose
//! status codes it uses: 422 for a key reused with another request, 409 while one runs.
//!
//! A client sends a key with a mutation, in the `Idempotency-Key` header or in the request's
//! `extensions.idempotencyKey`. The first request with a key runs, and its response body is
//! stored in the `idempotency_keys` table. A repeat within [`KEY_TTL`] gets that body back, byte
//! for byte, with `Idempotent-Replayed: true`. Keys are scoped to the API token, so two callers
//! never share one. Storage is the database, so every instance on the same PostgreSQL reads the
//! same keys. Redis plays no part.
//!
//! A row is `PENDING` while its request runs and `DONE` once the body is stored. The unique
//! index on `(token_id, key)` decides between concurrent first uses: one insert commits, and the
//! others get `CONFLICT` while it runs. Responses with a transient error ([`TRANSIENT_CODES`])
//! are not stored, so a retry runs the mutation again. A request whose instance stopped, or
//! whose response could not be stored, blocks its key for [`PENDING_LEASE`], and then a repeat
//! runs the mutation again.

use std::time::Duration;

use async_graphql::{BatchRequest, Request, Value as ConstValue};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use entity::idempotency_key::{self, IdempotencyKeyStatus};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::auth::Principal;
use crate::schema::MobilitySchema;

/// Request header that carries the key.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Response header set on a replayed response.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Key in the GraphQL request's `extensions` that carries the key, for clients that cannot set
/// headers.
pub const EXTENSION: &str = "idempotencyKey";
/// Maximum key length, in characters.
pub const MAX_KEY_CHARS: usize = 255;
/// How long a key is remembered after its first request. An older row counts as absent.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a `PENDING` row blocks repeats. A mutation waits at most 30 s for each pooled
/// database connection it takes, so a row pending for longer most likely belongs to a request
/// whose instance stopped or whose response could not be stored. A repeat then runs.
/// NOTE: a mutation still running past this lease would run twice.
pub const PENDING_LEASE: Duration = Duration::from_secs(120);
/// Interval of the sweep that deletes expired keys.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Error codes that mark a response as transient: it is not stored, so a retry with the same
/// key runs again. `RATE_LIMITED` is here because a replay would keep rejecting the caller
/// after the `retryAfterSeconds` it was given.
pub const TRANSIENT_CODES: [&str; 3] = [
    "SERVICE_UNAVAILABLE",
    "INTERNAL_SERVER_ERROR",
    "RATE_LIMITED",
];

/// `extensions.field` of every error about the key itself.
const FIELD: &str = "Idempotency-Key";

/// Reason a request with a key is rejected without running it.
#[derive(Debug)]
pub enum Rejection {
    /// The key is malformed, or given twice with different values: 400 `BAD_USER_INPUT`.
    InvalidKey(String),
    /// The key came with a batch: 400 `BAD_USER_INPUT`.
    Batch,
    /// The key was used before with another request: 422 `IDEMPOTENCY_KEY_REUSED`.
    KeyReused,
    /// The first request with the key is still running: 409 `CONFLICT`.
    InProgress,
    /// The key could not be read or written: 503 `SERVICE_UNAVAILABLE` when the database is
    /// unreachable, 500 `INTERNAL_SERVER_ERROR` otherwise.
    Database(DbErr),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::InvalidKey(message) => {
                error_response(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message, true)
            }
            Rejection::Batch => error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "an Idempotency-Key applies to one operation; send the operations of a batch \
                 as separate requests, each with its own key",
                true,
            ),
            Rejection::KeyReused => error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was already used with a different request (query, \
                 operationName or variables); use a new key for a new request",
                false,
            ),
            Rejection::InProgress => {
                let mut response = error_response(
                    StatusCode::CONFLICT,
                    "CONFLICT",
                    "a request with this Idempotency-Key is in progress; retry later",
                    false,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Rejection::Database(e) => {
                crate::metrics::count_database_error();
                if crate::error::database_unreachable(&e) {
                    error!(error = %e, "idempotency key check failed: database unreachable");
                    error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "SERVICE_UNAVAILABLE",
                        "database unreachable; retry later",
                        false,
                    )
                } else {
                    error!(error = %e, cause = ?e, "idempotency key check failed");
                    error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "INTERNAL_SERVER_ERROR",
                        "internal server error; the cause is in the server log",
                        false,
                    )
                }
            }
        }
    }
}

/// Builds a response with one GraphQL error, in the shape of `app::error_response`, with
/// `extensions.field = "Idempotency-Key"` when `on_key` is true.
fn error_response(status: StatusCode, code: &str, message: &str, on_key: bool) -> Response {
    let mut extensions = serde_json::json!({ "code": code });
    if on_key {
        extensions["field"] = FIELD.into();
    }
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": extensions }],
    });
    (status, axum::Json(body)).into_response()
}

/// Checks a key: 1 to [`MAX_KEY_CHARS`] printable ASCII characters (space to `~`).
fn validate_key(key: &str, source: &str) -> Result<(), Rejection> {
    if key.is_empty() || key.len() > MAX_KEY_CHARS {
        return Err(Rejection::InvalidKey(format!(
            "{source} must be 1 to {MAX_KEY_CHARS} characters, got {}",
            key.len()
        )));
    }
    if let Some(c) = key.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(Rejection::InvalidKey(format!(
            "{source} must be printable ASCII (space to '~'), got {c:?}"
        )));
    }
    Ok(())
}

/// Parses the `Idempotency-Key` header value. The draft defines it as a Structured Field
/// string (RFC 8941): a quoted string where `\"` and `\\` escape a quote and a backslash. A
/// value without quotes is taken as the key itself, as many clients send it.
fn parse_header_value(value: &HeaderValue) -> Result<String, Rejection> {
    let Ok(text) = value.to_str() else {
        return Err(Rejection::InvalidKey(
            "the Idempotency-Key header must be printable ASCII".into(),
        ));
    };
    let Some(quoted) = text.strip_prefix('"') else {
        validate_key(text, "the Idempotency-Key header")?;
        return Ok(text.to_owned());
    };
    let malformed = || {
        Rejection::InvalidKey(format!(
            "the Idempotency-Key header {text:?} starts with a quote but is not a valid \
             quoted string: end it with a quote and escape inner quotes and backslashes with \
             a backslash"
        ))
    };
    let mut key = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    loop {
        match chars.next() {
            None => return Err(malformed()),
            Some('"') => break,
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => key.push(c),
                _ => return Err(malformed()),
            },
            Some(c) => key.push(c),
        }
    }
    if chars.next().is_some() {
        return Err(malformed());
    }
    validate_key(&key, "the Idempotency-Key header")?;
    Ok(key)
}

/// Reads the key of one request from `extensions.idempotencyKey`, if present.
fn extension_key(request: &Request) -> Result<Option<String>, Rejection> {
    match request.extensions.0.get(EXTENSION) {
        None | Some(ConstValue::Null) => Ok(None),
        Some(ConstValue::String(key)) => {
            validate_key(key, "extensions.idempotencyKey")?;
            Ok(Some(key.clone()))
        }
        Some(other) => Err(Rejection::InvalidKey(format!(
            "extensions.idempotencyKey must be a string, got {other}"
        ))),
    }
}

/// Returns the idempotency key of a POST request, from the `Idempotency-Key` header or
/// `extensions.idempotencyKey`.
///
/// # Errors
/// `InvalidKey` for a malformed key, several headers, or a header and an extension that
/// differ; `Batch` for a batch that carries a key anywhere.
pub fn key_of(headers: &HeaderMap, batch: &BatchRequest) -> Result<Option<String>, Rejection> {
    let mut values = headers.get_all(&HEADER).iter();
    let header_key = values.next().map(parse_header_value).transpose()?;
    if values.next().is_some() {
        return Err(Rejection::InvalidKey(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
    let request = match batch {
        BatchRequest::Single(request) => request,
        BatchRequest::Batch(requests) => {
            for request in requests {
                if extension_key(request)?.is_some() {
                    return Err(Rejection::Batch);
                }
            }
            return match header_key {
                Some(_) => Err(Rejection::Batch),
                None => Ok(None),
            };
        }
    };
    match (header_key, extension_key(request)?) {
        (Some(from_header), Some(from_extension)) if from_header != from_extension => {
            Err(Rejection::InvalidKey(format!(
                "the Idempotency-Key header ({from_header:?}) and extensions.idempotencyKey \
                 ({from_extension:?}) differ; send one of them"
            )))
        }
        (from_header, from_extension) => Ok(from_header.or(from_extension)),
    }
}

/// Returns the lower-case hex SHA-256 of the canonical JSON of the request's query,
/// operation name and variables: the fingerprint that distinguishes a repeat from a different
/// request under the same key. Extensions, and so the key itself, are left out.
pub fn request_hash(request: &Request) -> String {
    let variables = request
        .variables
        .clone()
        .into_value()
        .into_json()
        // Variables come from JSON, and every GraphQL value read from JSON converts back.
        .expect("GraphQL variables convert to JSON");
    let fingerprint = serde_json::json!({
        "query": request.query,
        "operationName": request.operation_name,
        "variables": variables,
    });
    hex::encode(Sha256::digest(canonical_json(&fingerprint).as_bytes()))
}

/// Serializes `value` with object keys sorted by code point at every level and no
/// whitespace, so that two JSON texts with the same content give the same string. Strings and
/// numbers use serde_json's formatting, so `1` and `1.0` stay different.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Outcome of claiming a key for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or expired): the caller runs the request and then calls
    /// [`IdempotencyStore::complete`] or [`IdempotencyStore::release`] with this row id.
    Claimed(i64),
    /// The same request finished before; this is its response body.
    Replay(String),
    /// The key was used with a different request.
    Reused,
    /// The same request is still running.
    InProgress,
}

/// Storage of idempotency keys; clone freely.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    db: DatabaseConnection,
}

impl IdempotencyStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Claims `key` of token `token_id` for a request with fingerprint `request_hash`, by
    /// inserting a `PENDING` row. When a row exists, returns its stored response, or the
    /// reason the request may not run. A row older than [`KEY_TTL`], or `PENDING` for longer
    /// than [`PENDING_LEASE`], is deleted and the insert tried again.
    ///
    /// # Errors
    /// A database error, or a `DONE` row without a response.
    pub async fn claim(
        &self,
        token_id: i64,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, DbErr> {
        let expired_before = now - KEY_TTL;
        let lease_expired_before = now - PENDING_LEASE;
        // Two rounds: one to clear a stale row, one to insert after it. A request that loses
        // the insert twice met a concurrent first use, which is still running.
        for _ in 0..2 {
            let row = idempotency_key::ActiveModel {
                token_id: Set(token_id),
                key: Set(key.to_owned()),
                request_hash: Set(request_hash.to_owned()),
                status: Set(IdempotencyKeyStatus::Pending),
                response: Set(None),
                created_at: Set(now),
                ..Default::default()
            };
            let inserted = idempotency_key::Entity::insert(row)
                .on_conflict(
                    OnConflict::columns([
                        idempotency_key::Column::TokenId,
                        idempotency_key::Column::Key,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec(&self.db)
                .await;
            match inserted {
                Ok(result) => return Ok(Claim::Claimed(result.last_insert_id)),
                Err(DbErr::RecordNotInserted) => {}
                Err(e) => return Err(e),
            }
            let existing = idempotency_key::Entity::find()
                .filter(idempotency_key::Column::TokenId.eq(token_id))
                .filter(idempotency_key::Column::Key.eq(key))
                .one(&self.db)
                .await?;
            // Deleted since the insert failed: insert again.
            let Some(existing) = existing else { continue };
            let pending = existing.status == IdempotencyKeyStatus::Pending;
            if existing.created_at < expired_before
                || (pending && existing.created_at < lease_expired_before)
            {
                self.delete_stale(existing.id, expired_before, lease_expired_before)
                    .await?;
                continue;
            }
            if existing.request_hash != request_hash {
                return Ok(Claim::Reused);
            }
            return match (existing.status, existing.response) {
                (IdempotencyKeyStatus::Pending, _) => Ok(Claim::InProgress),
                (IdempotencyKeyStatus::Done, Some(body)) => Ok(Claim::Replay(body)),
                (IdempotencyKeyStatus::Done, None) => Err(DbErr::Custom(format!(
                    "idempotency key row {} is DONE without a response",
                    existing.id
                ))),
            };
        }
        Ok(Claim::InProgress)
    }

    /// Deletes row `id` if it is still stale; the conditions make a concurrent claim that
    /// already replaced it safe.
    async fn delete_stale(
        &self,
        id: i64,
        expired_before: DateTime<Utc>,
        lease_expired_before: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let deleted = idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(idempotency_key::Column::CreatedAt.lt(expired_before))
                    .add(
                        Condition::all()
                            .add(idempotency_key::Column::Status.eq(IdempotencyKeyStatus::Pending))
                            .add(idempotency_key::Column::CreatedAt.lt(lease_expired_before)),
                    ),
            )
            .exec(&self.db)
            .await?;
        if deleted.rows_affected > 0 {
            info!(row = id, "stale idempotency key replaced");
        }
        Ok(())
    }

    /// Stores `body` as the response of claimed row `id` and marks it `DONE`. Returns false
    /// when the row is no longer this request's, because its lease ran out and a repeat took
    /// the key over.
    ///
    /// # Errors
    /// A database error.
    pub async fn complete(&self, id: i64, body: &str) -> Result<bool, DbErr> {
        let updated = idempotency_key::Entity::update_many()
            .col_expr(
                idempotency_key::Column::Status,
                Expr::value(IdempotencyKeyStatus::Done),
            )
            .col_expr(idempotency_key::Column::Response, Expr::value(body))
            .filter(idempotency_key::Column::Id.eq(id))
            .filter(idempotency_key::Column::Status.eq(IdempotencyKeyStatus::Pending))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Deletes claimed row `id` without storing a response, so that the next request with
    /// the key runs.
    ///
    /// # Errors
    /// A database error.
    pub async fn release(&self, id: i64) -> Result<(), DbErr> {
        idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Id.eq(id))
            .filter(idempotency_key::Column::Status.eq(IdempotencyKeyStatus::Pending))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Deletes every key first used more than [`KEY_TTL`] before `now`; returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64, DbErr> {
        let deleted = idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::CreatedAt.lt(now - KEY_TTL))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }
}

/// Deletes expired keys at start and every `interval` until `shutdown` turns `true`. A failed
/// sweep is logged and retried at the next tick. Every instance sweeps, and deleting a row
/// twice is harmless.
pub async fn run_key_expiry(
    store: IdempotencyStore,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                match store.delete_expired(Utc::now()).await {
                    Ok(0) => {}
                    Ok(deleted) => debug!(deleted, "expired idempotency keys deleted"),
                    Err(e) => {
                        crate::metrics::count_database_error();
                        error!(error = %e, cause = ?e, "idempotency key sweep failed; retrying next tick");
                    }
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

/// Returns the first transient error code in `response`, if any.
fn transient_code(response: &async_graphql::Response) -> Option<&'static str> {
    response.errors.iter().find_map(|error| {
        let code = error.extensions.as_ref()?.get("code")?;
        TRANSIENT_CODES
            .into_iter()
            .find(|transient| matches!(code, ConstValue::String(c) if c == transient))
    })
}

/// Builds the HTTP response for a GraphQL response body, as async-graphql-axum does.
fn body_response(body: String) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql-response+json"),
    );
    response
}

/// Runs a mutation `request` of `principal` under `key`. The first request runs
/// and its response is stored. A repeat gets the stored response or a rejection (see
/// [`Claim`]).
pub async fn execute_once(
    schema: MobilitySchema,
    store: IdempotencyStore,
    principal: Principal,
    key: String,
    request: Request,
) -> Response {
    let token_id = principal.token_id;
    let hash = request_hash(&request);
    let row_id = match store.claim(token_id, &key, &hash, Utc::now()).await {
        Ok(Claim::Claimed(id)) => id,
        Ok(Claim::Replay(body)) => {
            debug!(token.id = token_id, key, "idempotent request replayed");
            let mut response = body_response(body);
            response
                .headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            return response;
        }
        Ok(Claim::Reused) => {
            debug!(
                token.id = token_id,
                key, "idempotency key reused with another request"
            );
            return Rejection::KeyReused.into_response();
        }
        Ok(Claim::InProgress) => return Rejection::InProgress.into_response(),
        Err(e) => return Rejection::Database(e).into_response(),
    };
    // The mutation runs in its own task, so a client that disconnects does not cancel it
    // halfway: it finishes, and the retry gets its stored response.
    let task = tokio::spawn(run_and_store(
        schema,
        store.clone(),
        row_id,
        request.data(principal),
    ));
    match task.await {
        Ok(response) => response,
        Err(e) => {
            error!(error = %e, token.id = token_id, key, "idempotent request task failed");
            if let Err(e) = store.release(row_id).await {
                error!(error = %e, row = row_id, "cannot release idempotency key; it blocks repeats until its lease ends");
            }
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "internal server error; the cause is in the server log",
                false,
            )
        }
    }
}

/// Executes `request`, then stores its response under claimed row `row_id`, or releases the
/// row when the response has a transient error.
async fn run_and_store(
    schema: MobilitySchema,
    store: IdempotencyStore,
    row_id: i64,
    request: Request,
) -> Response {
    let response = schema.execute(request).await;
    let body = serde_json::to_string(&response)
        // A response holds only GraphQL values, which always serialize to JSON.
        .expect("GraphQL response serializes to JSON");
    if let Some(code) = transient_code(&response) {
        // NOTE: in a document with several mutation fields, the fields that succeeded before
        // the transient error run again on the retry.
        debug!(
            row = row_id,
            code, "transient error; idempotency key released"
        );
        if let Err(e) = store.release(row_id).await {
            crate::metrics::count_database_error();
            error!(error = %e, row = row_id, "cannot release idempotency key; it blocks repeats until its lease ends");
        }
    } else {
        match store.complete(row_id, &body).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(
                    row = row_id,
                    "idempotency key taken over after its lease; response not stored"
                );
            }
            Err(e) => {
                crate::metrics::count_database_error();
                // NOTE: the mutation has run, so a repeat after the lease runs it again.
                error!(error = %e, row = row_id, "cannot store idempotent response; a repeat after the lease runs the mutation again");
            }
        }
    }
    let mut http = body_response(body);
    http.headers_mut().extend(response.http_headers);
    http
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Request {
        serde_json::from_str(body).expect("GraphQL request JSON")
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value: Value = serde_json::from_str(
            r#"{ "b": 1, "a": { "z": [ {"y": 2, "x": null} ], "c": "é\"" } }"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"é\"","z":[{"x":null,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn hash_ignores_key_order_and_whitespace() {
        let first = request(
            r#"{"query": "mutation($i: In!) { f(i: $i) { id } }",
                "variables": {"i": {"a": 1, "b": [true, "x"]}}}"#,
        );
        let second = request(
            r#"{"variables":{"i":{"b":[true,"x"],"a":1}},"query":"mutation($i: In!) { f(i: $i) { id } }"}"#,
        );
        assert_eq!(request_hash(&first), request_hash(&second));
    }

    #[test]
    fn hash_ignores_extensions() {
        let plain = request(r#"{"query": "mutation { f }"}"#);
        let keyed =
            request(r#"{"query": "mutation { f }", "extensions": {"idempotencyKey": "k1"}}"#);
        assert_eq!(request_hash(&plain), request_hash(&keyed));
    }

    #[test]
    fn hash_changes_with_each_part() {
        let base = request(r#"{"query": "mutation { f }", "variables": {"a": 1}}"#);
        let other_variables = request(r#"{"query": "mutation { f }", "variables": {"a": 2}}"#);
        let other_query = request(r#"{"query": "mutation { g }", "variables": {"a": 1}}"#);
        let named =
            request(r#"{"query": "mutation { f }", "variables": {"a": 1}, "operationName": "F"}"#);
        let base_hash = request_hash(&base);
        assert_ne!(base_hash, request_hash(&other_variables));
        assert_ne!(base_hash, request_hash(&other_query));
        assert_ne!(base_hash, request_hash(&named));
    }

    #[test]
    fn hash_is_sha256_of_canonical_fingerprint() {
        let hash = request_hash(&request(
            r#"{"query": "mutation { f }", "variables": {"b": 2, "a": 1}}"#,
        ));
        // printf '%s' '{"operationName":null,"query":"mutation { f }","variables":{"a":1,"b":2}}' | sha256sum
        assert_eq!(
            hash,
            "3e083ee816471eb1d4caddb1016e26f80890a3fd6ab8c1b64ead39e250e1a154"
        );
    }

    #[test]
    fn header_key_plain_or_structured_string() {
        let parse = |raw: &'static str| parse_header_value(&HeaderValue::from_static(raw));
        assert_eq!(parse("wamid.HBgM1234==").unwrap(), "wamid.HBgM1234==");
        assert_eq!(parse(r#""abc""#).unwrap(), "abc");
        assert_eq!(parse(r#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        for bad in [r#""abc"#, r#""a"b""#, r#""a\b""#, r#""""#] {
            assert!(
                matches!(parse(bad), Err(Rejection::InvalidKey(_))),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn key_length_and_characters_checked() {
        assert!(validate_key("k", "key").is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_CHARS), "key").is_ok());
        assert!(validate_key("", "key").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_CHARS + 1), "key").is_err());
        assert!(validate_key("tab\there", "key").is_err());
        assert!(validate_key("clé", "key").is_err());
    }

    #[test]
    fn batch_with_key_rejected() {
        let batch: BatchRequest =
            serde_json::from_str(r#"[{"query": "mutation { f }"}, {"query": "mutation { g }"}]"#)
                .unwrap();
        let mut headers = HeaderMap::new();
        assert!(matches!(key_of(&headers, &batch), Ok(None)));
        headers.insert(HEADER, HeaderValue::from_static("k1"));
        assert!(matches!(key_of(&headers, &batch), Err(Rejection::Batch)));
        let keyed: BatchRequest = serde_json::from_str(
            r#"[{"query": "mutation { f }", "extensions": {"idempotencyKey": "k1"}}]"#,
        )
        .unwrap();
        assert!(matches!(
            key_of(&HeaderMap::new(), &keyed),
            Err(Rejection::Batch)
        ));
    }

    #[test]
    fn header_and_extension_must_agree() {
        let single: BatchRequest = serde_json::from_str(
            r#"{"query": "mutation { f }", "extensions": {"idempotencyKey": "k1"}}"#,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(key_of(&headers, &single).unwrap().as_deref(), Some("k1"));
        headers.insert(HEADER, HeaderValue::from_static("k1"));
        assert_eq!(key_of(&headers, &single).unwrap().as_deref(), Some("k1"));
        headers.insert(HEADER, HeaderValue::from_static("k2"));
        assert!(matches!(
            key_of(&headers, &single),
            Err(Rejection::InvalidKey(_))
        ));
    }

    #[test]
    fn transient_codes_detected() {
        let with_code = |code: &str| {
            let error = async_graphql::ServerError::new("failed", None);
            let mut error = error;
            let mut extensions = async_graphql::ErrorExtensionValues::default();
            extensions.set("code", code);
            error.extensions = Some(extensions);
            async_graphql::Response::from_errors(vec![error])
        };
        assert_eq!(
            transient_code(&with_code("SERVICE_UNAVAILABLE")),
            Some("SERVICE_UNAVAILABLE")
        );
        assert_eq!(transient_code(&with_code("BAD_USER_INPUT")), None);
        assert_eq!(transient_code(&async_graphql::Response::default()), None);
    }
}
