//! Request limits beyond query depth and complexity: aliased fields per document, operations
//! per batched POST, request body size, mutations per token, WebSocket connections per
//! instance, and the production switches for introspection, GraphiQL and CORS.
//!
//! The GraphQL extension [`RequestLimits`] counts aliases during validation and rate-limits
//! mutations before they execute, so it covers HTTP and WebSocket alike. The router in
//! [`crate::app`] applies the HTTP limits: [`batch_rejection`], the body limit with
//! [`describe_payload_too_large`], [`cors_layer`] and [`WebSocketSlots`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{
    BatchRequest, ErrorExtensionValues, ErrorExtensions, Pos, Response, ServerError, ServerResult,
    ValidationResult, Variables,
};
use axum::Json;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Principal, Role};
use crate::config::ServeConfig;

/// `extensions.code` of a request over a configured size limit: too many operations in a
/// batch, too large a body, too many root mutations at once, or no free WebSocket slot.
pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
/// `extensions.code` of a request over a rate limit, with `extensions.retryAfterSeconds`.
pub const RATE_LIMITED: &str = "RATE_LIMITED";

/// Default of `MOBILITY_MAX_ALIASES`.
pub const DEFAULT_MAX_ALIASES: u32 = 30;
/// Default of `MOBILITY_MAX_BATCH_OPERATIONS`.
pub const DEFAULT_MAX_BATCH_OPERATIONS: u32 = 10;
/// Default of `MOBILITY_MAX_BODY_BYTES`. A batch of 500 location updates is about 100 KiB.
pub const DEFAULT_MAX_BODY_BYTES: u32 = 1024 * 1024;
/// Default of `MOBILITY_MUTATION_RATE_PER_SECOND`.
pub const DEFAULT_MUTATION_RATE_PER_SECOND: u32 = 20;
/// Default of `MOBILITY_MUTATION_BURST`.
pub const DEFAULT_MUTATION_BURST: u32 = 100;
/// Default of `MOBILITY_MAX_WEBSOCKET_CONNECTIONS`: the fan-out benchmark in BENCHMARKS.md
/// held 19,900 subscribers on one instance within its latency target.
pub const DEFAULT_MAX_WEBSOCKET_CONNECTIONS: u32 = 20_000;

/// Keys a [`KeyedLimiter`] stores before it drops the keys that are back to a full burst.
const LIMITER_KEYS_BEFORE_CLEANUP: usize = 10_000;

/// The limits of one server, from its configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_aliases: usize,
    pub max_batch_operations: usize,
    pub max_body_bytes: usize,
    /// Mutations per token; `None` disables the limit.
    pub mutation_rate: Option<Quota>,
    pub introspection: bool,
    pub graphiql: bool,
    /// Origins allowed by CORS; empty sends no CORS headers, `["*"]` allows any origin.
    pub cors_origins: Vec<String>,
    pub max_websocket_connections: usize,
    pub websocket: crate::ws::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_aliases: DEFAULT_MAX_ALIASES as usize,
            max_batch_operations: DEFAULT_MAX_BATCH_OPERATIONS as usize,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES as usize,
            mutation_rate: mutation_quota(DEFAULT_MUTATION_RATE_PER_SECOND, DEFAULT_MUTATION_BURST),
            introspection: true,
            graphiql: true,
            cors_origins: Vec::new(),
            max_websocket_connections: DEFAULT_MAX_WEBSOCKET_CONNECTIONS as usize,
            websocket: crate::ws::Limits {
                max_subscriptions: 20,
            },
        }
    }
}

impl Limits {
    /// Reads the limits from a configuration that passed [`ServeConfig::validate`].
    pub fn from_config(config: &ServeConfig) -> Self {
        Self {
            max_aliases: config.max_aliases as usize,
            max_batch_operations: config.max_batch_operations as usize,
            max_body_bytes: config.max_body_bytes as usize,
            mutation_rate: mutation_quota(config.mutation_rate_per_second, config.mutation_burst),
            introspection: config.introspection,
            graphiql: config.graphiql,
            cors_origins: cors_origins(&config.cors_origins),
            max_websocket_connections: config.max_websocket_connections as usize,
            websocket: crate::ws::Limits {
                max_subscriptions: config.max_subscriptions_per_connection as usize,
            },
        }
    }
}

/// Returns the quota of `rate` mutations per second with bursts of `burst`, or `None` when
/// `rate` is 0, which disables the limit. A `burst` of 0 counts as 1.
pub fn mutation_quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// Returns the configured CORS origins without blanks, so that an empty
/// `MOBILITY_CORS_ORIGINS` means none.
pub fn cors_origins(configured: &[String]) -> Vec<String> {
    configured
        .iter()
        .map(|origin| origin.trim())
        .filter(|origin| !origin.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks one CORS origin: `*`, or a scheme, host and optional port exactly as browsers send
/// them in the `Origin` header (`https://ops.example.com`, no path or trailing slash).
///
/// # Errors
/// A message with the value and the expected form.
pub fn check_cors_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let expected = url::Url::parse(origin)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .map(|url| url.origin().ascii_serialization());
    match expected {
        Some(serialized) if serialized == origin => Ok(()),
        Some(serialized) => Err(format!(
            "MOBILITY_CORS_ORIGINS: {origin:?} is not an origin as browsers send it; use \
             {serialized:?}"
        )),
        None => Err(format!(
            "MOBILITY_CORS_ORIGINS: {origin:?} is not an http:// or https:// origin such as \
             \"https://ops.example.com\", nor \"*\""
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Rate limits keyed by token
// ---------------------------------------------------------------------------------------

/// A rate limit per key (such as an API token id), with the GCRA of the `governor` crate: a
/// key may spend its burst at once, and capacity returns at the quota's rate. State is in
/// this process, so behind a load balancer each instance allows the full quota.
#[derive(Clone)]
pub struct KeyedLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<i64>>,
    quota: Quota,
}

impl fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

/// Reason a [`KeyedLimiter`] rejected a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitError {
    /// The key spent its burst; enough capacity returns after `retry_after`.
    RateLimited { retry_after: Duration },
    /// One request asked for more units than the burst, so waiting does not help.
    OverBurst { requested: u32, burst: u32 },
}

impl RateLimitError {
    /// Converts the rejection for the client: `RATE_LIMITED` with `retryAfterSeconds` (whole
    /// seconds, at least 1), or `LIMIT_EXCEEDED` for a request larger than the burst.
    /// `limited_calls` names the limited calls in the message, such as `"contact requests"`.
    pub fn into_error(self, limited_calls: &str) -> async_graphql::Error {
        match self {
            RateLimitError::RateLimited { retry_after } => {
                let seconds = retry_after_seconds(retry_after);
                async_graphql::Error::new(format!(
                    "too many {limited_calls} for this token; retry in {seconds} s"
                ))
                .extend_with(|_, extensions| {
                    extensions.set("code", RATE_LIMITED);
                    extensions.set("retryAfterSeconds", seconds);
                })
            }
            RateLimitError::OverBurst { requested, burst } => async_graphql::Error::new(format!(
                "{requested} {limited_calls} in one request, but a token may send at most {burst} \
                 at once; split the request"
            ))
            .extend_with(|_, extensions| extensions.set("code", LIMIT_EXCEEDED)),
        }
    }
}

/// Rounds a wait up to whole seconds, at least 1, for `retryAfterSeconds` and `Retry-After`.
fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

impl KeyedLimiter {
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
            quota,
        }
    }

    /// Creates a limiter of `max` requests an hour per key, spread evenly: after using all
    /// `max`, a key gets one more every `60 / max` minutes. Contact requests use 10 an hour.
    pub fn per_hour(max: NonZeroU32) -> Self {
        Self::new(Quota::per_hour(max))
    }

    /// Counts one request of `key`.
    ///
    /// # Errors
    /// `RateLimited` when the key has spent its burst.
    pub fn check(&self, key: i64) -> Result<(), RateLimitError> {
        self.check_n(key, 1)
    }

    /// Counts `n` requests of `key` at once; all pass or none does. `n` of 0 counts as 1.
    ///
    /// # Errors
    /// `RateLimited` when the key lacks the capacity now, `OverBurst` when `n` exceeds the
    /// burst.
    pub fn check_n(&self, key: i64, n: u32) -> Result<(), RateLimitError> {
        if self.limiter.len() > LIMITER_KEYS_BEFORE_CLEANUP {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                use governor::clock::Clock;
                let now = self.limiter.clock().now();
                Err(RateLimitError::RateLimited {
                    retry_after: not_until.wait_time_from(now),
                })
            }
            Err(_) => Err(RateLimitError::OverBurst {
                requested: n.get(),
                burst: self.quota.burst_size().get(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The GraphQL extension: aliases, introspection and the mutation rate
// ---------------------------------------------------------------------------------------

/// Extension factory for the alias limit, the introspection switch and the per-token
/// mutation rate. Admin tokens are exempt from the alias limit and the mutation rate.
/// Register it before the parse cache, because it measures every document, cached or not.
pub struct RequestLimits {
    max_aliases: usize,
    introspection: bool,
    mutations: Option<KeyedLimiter>,
}

impl RequestLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_aliases: limits.max_aliases,
            introspection: limits.introspection,
            mutations: limits.mutation_rate.map(KeyedLimiter::new),
        }
    }
}

impl ExtensionFactory for RequestLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestLimitsExtension {
            max_aliases: self.max_aliases,
            introspection: self.introspection,
            mutations: self.mutations.clone(),
            measured: Mutex::new(None),
        })
    }
}

/// Per-request state: the sizes `parse_query` measured, for the later hooks.
struct RequestLimitsExtension {
    max_aliases: usize,
    introspection: bool,
    mutations: Option<KeyedLimiter>,
    measured: Mutex<Option<Measured>>,
}

/// Sizes of a parsed document.
struct Measured {
    /// The maximum number of aliased fields over the operations, and where that operation
    /// starts.
    aliases: usize,
    aliases_at: Pos,
    /// Each operation's name, type and root field count.
    operations: Vec<(Option<String>, OperationType, usize)>,
    /// Position of a root `__schema` or `__type` field, if an operation selects one.
    introspection_at: Option<Pos>,
}

#[async_trait::async_trait]
impl Extension for RequestLimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        *self.measured.lock() = Some(measure(&document));
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let admin = ctx
            .data_opt::<Principal>()
            .is_some_and(|principal| principal.role == Role::Admin);
        let errors = self.check_measured(admin);
        // Rejecting before the other rules run spares the server their work on the document.
        if !errors.is_empty() {
            return Err(errors);
        }
        next.run(ctx).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let Some(limiter) = &self.mutations else {
            return next.run(ctx, operation_name).await;
        };
        let mutations = self.mutation_count(operation_name);
        let principal = ctx.data_opt::<Principal>();
        // Admin tokens belong to operators and their tools (replay, load generator, bulk
        // registration with aliases), which send thousands of updates a second on purpose.
        let limited = principal.filter(|principal| principal.role != Role::Admin);
        let (Some(principal), true) = (limited, mutations > 0) else {
            return next.run(ctx, operation_name).await;
        };
        let count = u32::try_from(mutations).unwrap_or(u32::MAX);
        match limiter.check_n(principal.token_id, count) {
            Ok(()) => next.run(ctx, operation_name).await,
            Err(rejection) => {
                tracing::debug!(
                    token.id = principal.token_id,
                    mutations,
                    ?rejection,
                    "mutation rate limit reached"
                );
                rate_limited_response(rejection)
            }
        }
    }
}

impl RequestLimitsExtension {
    /// Returns the validation errors of the alias limit, which admin tokens are exempt from,
    /// and of the introspection switch.
    fn check_measured(&self, admin: bool) -> Vec<ServerError> {
        let measured = self.measured.lock();
        let Some(measured) = measured.as_ref() else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        if !admin && measured.aliases > self.max_aliases {
            let message = format!(
                "the operation has {} aliased fields (counted through fragments); at most {} \
                 are allowed",
                measured.aliases, self.max_aliases
            );
            errors.push(ServerError::new(message, Some(measured.aliases_at)));
        }
        if let (false, Some(at)) = (self.introspection, measured.introspection_at) {
            let message = "introspection (__schema, __type) is disabled on this server";
            errors.push(ServerError::new(message, Some(at)));
        }
        errors
            .into_iter()
            .map(|error| with_code(error, "GRAPHQL_VALIDATION_FAILED"))
            .collect()
    }

    /// Returns the root fields of the operation that will execute if it is a mutation, else 0.
    fn mutation_count(&self, operation_name: Option<&str>) -> usize {
        let measured = self.measured.lock();
        let Some(measured) = measured.as_ref() else {
            return 0;
        };
        let selected = match operation_name {
            Some(wanted) => measured
                .operations
                .iter()
                .find(|(name, _, _)| name.as_deref() == Some(wanted)),
            None => measured.operations.first(),
        };
        match selected {
            Some((_, OperationType::Mutation, root_fields)) => (*root_fields).max(1),
            _ => 0,
        }
    }
}

/// Builds the response to a rejected mutation: no data, one error, and a `Retry-After` header
/// when waiting helps.
fn rate_limited_response(rejection: RateLimitError) -> Response {
    let retry_after = match &rejection {
        RateLimitError::RateLimited { retry_after } => Some(retry_after_seconds(*retry_after)),
        RateLimitError::OverBurst { .. } => None,
    };
    let error = rejection.into_error("mutations");
    let mut server_error = ServerError::new(error.message, None);
    server_error.extensions = error.extensions;
    let mut response = Response::from_errors(vec![server_error]);
    if let Some(seconds) = retry_after {
        response
            .http_headers
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

// ---------------------------------------------------------------------------------------
// Measuring documents
// ---------------------------------------------------------------------------------------

/// Quantity that a walk over selections counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Fields with an alias, at any depth.
    Aliases,
    /// Fields of the selection set itself, through fragments but not into sub-selections.
    RootFields,
}

/// A count over one selection set, and the fragments it spreads whose counts add to it.
#[derive(Default)]
struct Tally<'a> {
    count: usize,
    spreads: Vec<&'a str>,
}

fn tally<'a>(set: &'a SelectionSet, counted: Count, tally_so_far: &mut Tally<'a>) {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => match counted {
                Count::RootFields => tally_so_far.count += 1,
                Count::Aliases => {
                    tally_so_far.count += usize::from(field.node.alias.is_some());
                    // async-graphql rejects documents nested deeper than 32 levels while
                    // parsing, so this recursion is bounded.
                    tally(&field.node.selection_set.node, counted, tally_so_far);
                }
            },
            Selection::InlineFragment(fragment) => {
                tally(&fragment.node.selection_set.node, counted, tally_so_far);
            }
            Selection::FragmentSpread(spread) => {
                tally_so_far
                    .spreads
                    .push(spread.node.fragment_name.node.as_str());
            }
        }
    }
}

/// Returns the count of each fragment with the fragments it spreads expanded. The walk over
/// the spread graph uses an explicit stack, because a 1 MiB document can chain tens of
/// thousands of fragments. A spread in a cycle or of an unknown fragment counts 0, because
/// validation rejects such documents anyway.
fn fragment_counts(document: &ExecutableDocument, counted: Count) -> HashMap<&str, usize> {
    let tallies: HashMap<&str, Tally<'_>> = document
        .fragments
        .iter()
        .map(|(name, fragment)| {
            let mut fragment_tally = Tally::default();
            tally(
                &fragment.node.selection_set.node,
                counted,
                &mut fragment_tally,
            );
            (name.as_str(), fragment_tally)
        })
        .collect();
    let mut totals: HashMap<&str, usize> = HashMap::with_capacity(tallies.len());
    let mut entered: HashSet<&str> = HashSet::new();
    for &start in tallies.keys() {
        let mut stack = vec![(start, false)];
        while let Some((name, children_done)) = stack.pop() {
            if totals.contains_key(name) {
                continue;
            }
            let fragment_tally = &tallies[name];
            if children_done {
                let total = fragment_tally
                    .spreads
                    .iter()
                    .fold(fragment_tally.count, |sum, spread| {
                        sum.saturating_add(totals.get(spread).copied().unwrap_or(0))
                    });
                totals.insert(name, total);
                continue;
            }
            if !entered.insert(name) {
                continue;
            }
            stack.push((name, true));
            for &spread in &fragment_tally.spreads {
                if tallies.contains_key(spread) && !entered.contains(spread) {
                    stack.push((spread, false));
                }
            }
        }
    }
    totals
}

/// Returns the count of each operation, in document order for a single operation.
fn operation_counts(
    document: &ExecutableDocument,
    counted: Count,
) -> Vec<(Option<&str>, OperationType, Pos, usize)> {
    let fragments = fragment_counts(document, counted);
    document
        .operations
        .iter()
        .map(|(name, operation)| {
            let mut operation_tally = Tally::default();
            tally(
                &operation.node.selection_set.node,
                counted,
                &mut operation_tally,
            );
            let total = operation_tally
                .spreads
                .iter()
                .fold(operation_tally.count, |sum, spread| {
                    sum.saturating_add(fragments.get(spread).copied().unwrap_or(0))
                });
            (
                name.map(|name| name.as_str()),
                operation.node.ty,
                operation.pos,
                total,
            )
        })
        .collect()
}

fn measure(document: &ExecutableDocument) -> Measured {
    let (aliases, aliases_at) = operation_counts(document, Count::Aliases)
        .into_iter()
        .map(|(_, _, at, count)| (count, at))
        .max_by_key(|(count, _)| *count)
        .unwrap_or_default();
    let operations = operation_counts(document, Count::RootFields)
        .into_iter()
        .map(|(name, ty, _, count)| (name.map(str::to_owned), ty, count))
        .collect();
    Measured {
        aliases,
        aliases_at,
        operations,
        introspection_at: introspection_field(document),
    }
}

/// Returns the position of the first root `__schema` or `__type` field of any operation,
/// looking through fragments at the root level. `__typename` is allowed.
fn introspection_field(document: &ExecutableDocument) -> Option<Pos> {
    let mut stack: Vec<&SelectionSet> = document
        .operations
        .iter()
        .map(|(_, operation)| &operation.node.selection_set.node)
        .collect();
    let mut spread: HashSet<&str> = HashSet::new();
    while let Some(set) = stack.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    if matches!(field.node.name.node.as_str(), "__schema" | "__type") {
                        return Some(field.pos);
                    }
                }
                Selection::InlineFragment(fragment) => {
                    stack.push(&fragment.node.selection_set.node);
                }
                Selection::FragmentSpread(fragment_spread) => {
                    let name = fragment_spread.node.fragment_name.node.as_str();
                    if let Some(fragment) = document.fragments.get(name)
                        && spread.insert(name)
                    {
                        stack.push(&fragment.node.selection_set.node);
                    }
                }
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// HTTP limits
// ---------------------------------------------------------------------------------------

/// Builds the JSON error body of a request rejected before GraphQL runs.
pub fn limit_response(status: StatusCode, message: &str) -> axum::response::Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": LIMIT_EXCEEDED } }],
    });
    (status, Json(body)).into_response()
}

/// Returns the 400 response for a batched POST (a JSON array) of more than `max` operations,
/// or `None` when the request may run.
pub fn batch_rejection(batch: &BatchRequest, max: usize) -> Option<axum::response::Response> {
    match batch {
        BatchRequest::Batch(requests) if requests.len() > max => Some(limit_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "the batch has {} operations; at most {max} are allowed in one request",
                requests.len()
            ),
        )),
        _ => None,
    }
}

/// Replaces the empty body of a 413 Payload Too Large from the body limit with a GraphQL error
/// body that names the limit in bytes.
pub async fn describe_payload_too_large(
    max_body_bytes: usize,
    response: axum::response::Response,
) -> axum::response::Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    limit_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body exceeds {max_body_bytes} bytes"),
    )
}

/// Returns the CORS layer for `origins`, or `None` for an empty list, which sends no CORS
/// headers. Browsers may then send `Authorization`, `Content-Type` and `Idempotency-Key`
/// with GET and POST, and read `Retry-After` and `Idempotent-Replayed` in responses.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        // `ServeConfig::validate` checked every origin, so none is dropped here.
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static("idempotent-replayed"),
            ]),
    )
}

/// Returns 404 at `/` with a pointer to `/graphql`, for servers with GraphiQL turned off.
pub async fn graphiql_disabled() -> axum::response::Response {
    (
        StatusCode::NOT_FOUND,
        "GraphiQL is turned off on this server. Send GraphQL requests to /graphql (POST or GET) \
         and subscriptions to /graphql/ws.\n",
    )
        .into_response()
}

/// The bound on concurrent WebSocket connections of one instance.
#[derive(Debug, Clone)]
pub struct WebSocketSlots {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl WebSocketSlots {
    pub fn new(max: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Takes a slot for one connection, or returns `None` when every slot is taken. Dropping
    /// the permit frees the slot.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }

    /// Logs a rejected connection and returns the 503 response for it.
    pub fn full_response(&self) -> axum::response::Response {
        tracing::warn!(
            max = self.max,
            "WebSocket connection rejected: every slot is taken"
        );
        limit_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "this instance serves its maximum of {} WebSocket connections; retry later or \
                 on another instance",
                self.max
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).expect("query parses")
    }

    #[test]
    fn aliases_counted_through_fragments() {
        let document = parse(
            "query { a: __typename ...F ... on Query { b: __typename } } \
             fragment F on Query { c: __typename ...G ...G } \
             fragment G on Query { d: __typename e: __typename }",
        );
        assert_eq!(measure(&document).aliases, 1 + 1 + 1 + 2 * 2);
    }

    #[test]
    fn aliases_of_the_largest_operation() {
        let document = parse("query A { a: __typename } query B { a: __typename b: __typename }");
        assert_eq!(measure(&document).aliases, 2);
    }

    #[test]
    fn fragment_cycles_terminate() {
        let document = parse(
            "query { ...F } fragment F on Query { a: __typename ...G } \
             fragment G on Query { b: __typename ...F }",
        );
        let aliases = measure(&document).aliases;
        assert!(aliases <= 2, "a cycle counts at most once, got {aliases}");
    }

    #[test]
    fn long_fragment_chains_do_not_recurse() {
        let mut query = String::from("query { ...F0 }");
        for i in 0..50_000 {
            query.push_str(&format!(
                " fragment F{i} on Query {{ a{i}: __typename ...F{} }}",
                i + 1
            ));
        }
        query.push_str(" fragment F50000 on Query { __typename }");
        assert_eq!(measure(&parse(&query)).aliases, 50_000);
    }

    #[test]
    fn root_fields_counted_per_operation() {
        let document = parse(
            "mutation M { a: goOffline(driverId: 1) { id } ...F } query Q { x y } \
             fragment F on Mutation { b: goOffline(driverId: 2) { id vehicle { id } } }",
        );
        let operations = measure(&document).operations;
        let m = operations
            .iter()
            .find(|(name, ..)| name.as_deref() == Some("M"));
        assert_eq!(
            m.map(|(_, ty, n)| (*ty, *n)),
            Some((OperationType::Mutation, 2))
        );
        let q = operations
            .iter()
            .find(|(name, ..)| name.as_deref() == Some("Q"));
        assert_eq!(
            q.map(|(_, ty, n)| (*ty, *n)),
            Some((OperationType::Query, 2))
        );
    }

    #[test]
    fn introspection_found_through_fragments() {
        let direct = parse("{ __schema { queryType { name } } }");
        assert!(measure(&direct).introspection_at.is_some());
        let through_fragment = parse(
            "query { ... on Query { ...F } } fragment F on Query { __type(name: \"Trip\") { name } }",
        );
        assert!(measure(&through_fragment).introspection_at.is_some());
        let typename = parse("{ __typename trip(id: 1) { __typename } }");
        assert!(measure(&typename).introspection_at.is_none());
    }

    #[test]
    fn limiter_rejects_after_the_burst() {
        // Three an hour: one unit returns every 20 minutes, far longer than this test runs.
        let limiter = KeyedLimiter::per_hour(NonZeroU32::new(3).unwrap());
        assert_eq!(limiter.check_n(7, 3), Ok(()));
        let Err(RateLimitError::RateLimited { retry_after }) = limiter.check(7) else {
            panic!("a fourth request within 20 minutes passed");
        };
        assert!(retry_after > Duration::ZERO, "{retry_after:?}");
        assert!(
            retry_after <= Duration::from_secs(20 * 60),
            "{retry_after:?}"
        );
        assert_eq!(limiter.check(8), Ok(()), "another key has its own burst");
        assert_eq!(
            limiter.check_n(9, 4),
            Err(RateLimitError::OverBurst {
                requested: 4,
                burst: 3
            })
        );
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        assert!(mutation_quota(0, 100).is_none());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }

    #[test]
    fn cors_origins_checked() {
        assert_eq!(check_cors_origin("*"), Ok(()));
        assert_eq!(check_cors_origin("https://ops.example.com"), Ok(()));
        assert_eq!(check_cors_origin("http://127.0.0.1:3000"), Ok(()));
        let trailing = check_cors_origin("https://ops.example.com/").unwrap_err();
        assert!(
            trailing.contains("\"https://ops.example.com\""),
            "{trailing}"
        );
        assert!(check_cors_origin("ops.example.com").is_err());
        assert!(check_cors_origin("ftp://ops.example.com").is_err());
        assert_eq!(
            cors_origins(&[" https://a.example ".into(), String::new()]),
            vec!["https://a.example".to_owned()]
        );
    }
}
