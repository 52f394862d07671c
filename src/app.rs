//! Wiring: builds the services from a configuration, serves them over HTTP and WebSocket,
//! and shuts down cleanly. `main` and the integration tests start the server the same way.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::BatchRequest;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::State;
use axum::extract::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::info;

use crate::accounts::Accounts;
use crate::auth::{Principal, Tokens};
use crate::cluster::cache::{self, SharedProfileCache};
use crate::cluster::replication::{OUTBOX_CAPACITY, run_publisher, run_subscriber};
use crate::cluster::{Cluster, RedisLink};
use crate::config::ServeConfig;
use crate::events::{EventBus, Outbox};
use crate::idempotency::{self, IdempotencyStore};
use crate::matching::{EtaModel, MatchConfig, Matcher};
use crate::schema::{self, MobilitySchema};
use crate::tracking::{FixRules, Tracking, TrackingConfig, load_live_drivers};
use crate::trips::{TripConfig, Trips, load_open_requests, run_offer_expiry};

/// Every service, shared by the resolvers through the schema data.
#[derive(Debug, Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    pub accounts: Accounts,
    pub tracking: Tracking,
    pub matcher: Matcher,
    pub trips: Trips,
    pub bus: EventBus,
    /// Redis, when `REDIS_URL` is set.
    pub redis: Option<RedisLink>,
    /// This instance's link to the others, when `REDIS_URL` is set.
    pub cluster: Option<Cluster>,
    /// Cache of driver, rider and vehicle rows for the GraphQL loaders, which does nothing
    /// unless `REDIS_URL` is set and `MOBILITY_PROFILE_CACHE` is true.
    pub profiles: SharedProfileCache,
    pub tokens: Tokens,
    /// Rate of `requestContact` per token.
    pub contact_limiter: crate::limits::KeyedLimiter,
}

impl Services {
    /// Connects to the database, migrates it and rebuilds the in-memory indexes.
    ///
    /// # Errors
    /// An invalid configuration or a database failure.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let db = crate::db::connect_and_migrate(&config.database_url, config.db_max_connections)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open database {}: {e}",
                    crate::db::redact(&config.database_url)
                )
            })?;
        let live = Arc::new(load_live_drivers(&db).await?);
        let requests = Arc::new(load_open_requests(&db).await?);
        info!(
            drivers = live.driver_count(),
            indexed = live.indexed_count(),
            open_requests = requests.len(),
            "live state rebuilt from storage"
        );
        let redis = match &config.redis_url {
            Some(url) => Some(RedisLink::open(url, &config.redis_prefix).map_err(|e| {
                anyhow::anyhow!("invalid REDIS_URL {}: {e}", crate::db::redact(url))
            })?),
            None => None,
        };
        let cluster = redis.clone().map(Cluster::new);
        let tokens = Tokens::new(db.clone());
        if let Some(secret) = tokens.ensure_admin(config.admin_token.as_deref()).await? {
            announce_first_admin_token(&secret);
        }
        let mut bus = EventBus::new(config.event_buffer);
        if cluster.is_some() {
            bus = bus.with_outbox(Arc::new(Outbox::new(OUTBOX_CAPACITY)));
        }
        let tracking = Tracking::new(
            db.clone(),
            live.clone(),
            bus.clone(),
            TrackingConfig {
                rules: FixRules {
                    max_speed_mps: config.max_speed_mps,
                    jump_tolerance_m: config.jump_tolerance_m,
                },
                service_area: config.service_area,
                max_clock_skew_s: i64::from(config.max_clock_skew_seconds),
                max_fix_age_s: i64::from(config.max_fix_age_seconds),
                max_batch: config.max_batch as usize,
            },
        );
        let matcher = Matcher::new(
            live.clone(),
            requests.clone(),
            MatchConfig {
                ladder_m: config.search_ladder_m.clone(),
                max_radius_m: config.max_radius_m,
                default_limit: config.default_limit,
                max_limit: config.max_limit,
                candidate_pool: config.candidate_pool,
                stale_after_s: config.location_stale_seconds,
                scheduled_lead_s: config.scheduled_lead_seconds,
                service_area: config.service_area,
                eta: EtaModel {
                    detour_factor: config.detour_factor,
                    moto_speed_mps: config.moto_speed_mps,
                    cab_speed_mps: config.cab_speed_mps,
                },
                ranking: config.ranking(),
            },
        );
        let trips = Trips::new(
            db.clone(),
            live.clone(),
            requests,
            bus.clone(),
            TripConfig {
                offer_ttl_s: i64::from(config.offer_ttl_seconds),
                max_schedule_ahead_s: i64::from(config.max_schedule_ahead_seconds),
                service_area: config.service_area,
            },
        );
        let accounts = Accounts::new(db.clone(), live, bus.clone());
        let profiles = cache::select(
            redis.as_ref(),
            config.profile_cache,
            config.cache_ttl_seconds,
        );
        let accounts = accounts.with_profile_cache(profiles.clone());
        let trips = trips.with_profile_cache(profiles.clone());
        Ok(Self {
            db,
            accounts,
            tracking,
            matcher,
            trips,
            bus,
            redis,
            cluster,
            profiles,
            tokens,
            contact_limiter: crate::limits::KeyedLimiter::per_hour(
                NonZeroU32::new(config.contact_requests_per_hour).unwrap_or(NonZeroU32::MIN),
            ),
        })
    }
}

/// Prints the secret of the admin token created at first start, once, on standard output, so
/// a newcomer is never locked out and the server is never open.
fn announce_first_admin_token(secret: &str) {
    println!(
        "\nNo usable admin token existed, so the server created one:\n\n    {secret}\n\n\
         It is shown only now; keep it. Send it as `Authorization: Bearer <token>` (in \
         GraphiQL, under Headers).\nCreate tokens for clients with the createApiToken mutation \
         or `mobility token create`.\n"
    );
    info!("created the first admin token; its secret was printed on standard output");
}

/// Builds the HTTP routes: GraphiQL at `/` (unless `limits.graphiql` is false), GraphQL at
/// `/graphql` (POST and GET), subscriptions at `/graphql/ws` (`graphql-transport-ws` and
/// `graphql-ws`), `/healthz`, `/readyz` and `/metrics`, with the HTTP limits of `limits`.
/// `shutdown` closes WebSockets with a close frame when it turns true, and `websockets` counts
/// them until they are closed.
pub fn router(
    schema: MobilitySchema,
    services: Services,
    limits: &crate::limits::Limits,
    shutdown: watch::Receiver<bool>,
    websockets: crate::ws::Connections,
) -> Router {
    let tokens = services.tokens.clone();
    let root = if limits.graphiql {
        get(graphiql)
    } else {
        get(crate::limits::graphiql_disabled)
    };
    let max_batch = limits.max_batch_operations;
    let max_body_bytes = limits.max_body_bytes;
    let websocket_limits = limits.websocket;
    let websocket_slots = crate::limits::WebSocketSlots::new(limits.max_websocket_connections);
    let router =
        Router::new()
            .route("/", root)
            .route(
                "/graphql",
                get({
                    let schema = schema.clone();
                    let tokens = tokens.clone();
                    move |headers: HeaderMap, uri: Uri| graphql_get(schema, tokens, headers, uri)
                })
                .post({
                    let schema = schema.clone();
                    let tokens = tokens.clone();
                    let keys = IdempotencyStore::new(services.db.clone());
                    move |_: NotMultipart,
                      headers: HeaderMap,
                      request: Result<GraphQLBatchRequest, GraphQLRejection>| async move {
                    let request = match request {
                        Ok(request) => request,
                        Err(rejection) => return body_rejection(&tokens, &headers, rejection).await,
                    };
                    if let Some(response) = crate::limits::batch_rejection(&request.0, max_batch) {
                        return response;
                    }
                    graphql_post(schema, tokens, keys, headers, request).await
                }
                }),
            )
            .route(
                "/graphql/ws",
                get(move |headers: HeaderMap, upgrade: WebSocketUpgrade| {
                    graphql_ws(
                        schema,
                        tokens,
                        headers,
                        upgrade,
                        websocket_limits,
                        websocket_slots,
                        shutdown,
                        websockets.open(),
                    )
                }),
            )
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_page))
            .with_state(services)
            .layer(RequestBodyLimitLayer::new(max_body_bytes))
            .layer(axum::middleware::map_response(move |response| {
                crate::limits::describe_payload_too_large(max_body_bytes, response)
            }));
    // CORS wraps the other layers, so that browsers can read their errors too.
    let router = match crate::limits::cors_layer(&limits.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(TraceLayer::new_for_http())
}

/// Returns the bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// Builds a GraphQL error response outside execution: `status` and one error with `code`.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }],
    });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Resolves the caller of an HTTP request, or returns the 401 (or 503) response to send.
async fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<Principal, Response> {
    let Some(token) = bearer(headers) else {
        return Err(error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "missing token: send `Authorization: Bearer <token>`",
        ));
    };
    match tokens.authenticate(token).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "token is unknown or revoked",
        )),
        Err(e) => {
            crate::metrics::count_database_error();
            tracing::error!(error = %e, "token check failed");
            Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "database unreachable; retry later",
            ))
        }
    }
}

/// Rejects a multipart POST before async-graphql reads its body. The schema has no `Upload`
/// scalar, so multipart has no use here, and async-graphql 7.2.1 panics on a multipart request
/// whose `operations` part has a multipart content type of its own.
struct NotMultipart;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NotMultipart {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Response> {
        let multipart = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim().to_ascii_lowercase().starts_with("multipart/"));
        if multipart {
            return Err(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "BAD_REQUEST",
                "multipart requests are not supported; send application/json",
            ));
        }
        Ok(NotMultipart)
    }
}

/// Builds the response to a POST body that is not a GraphQL request: 401 without a valid token, as for any
/// request, otherwise 400 (413 for a body over the limit) with a coded GraphQL error.
async fn body_rejection(
    tokens: &Tokens,
    headers: &HeaderMap,
    rejection: GraphQLRejection,
) -> Response {
    if let Err(response) = authenticate(tokens, headers).await {
        return response;
    }
    match rejection.0 {
        async_graphql::ParseRequestError::PayloadTooLarge => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "LIMIT_EXCEEDED",
            "request body too large",
        ),
        other => error_response(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("invalid GraphQL request: {other}"),
        ),
    }
}

/// Serves GraphQL over POST. A mutation with an `Idempotency-Key` (header or
/// `extensions.idempotencyKey`) runs once per key and token, and repeats get the stored
/// response; [`crate::idempotency`] lists the exceptions.
/// On queries the key is checked and otherwise ignored, because they change nothing.
async fn graphql_post(
    schema: MobilitySchema,
    tokens: Tokens,
    keys: IdempotencyStore,
    headers: HeaderMap,
    request: GraphQLBatchRequest,
) -> Response {
    let principal = match authenticate(&tokens, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let batch = request.into_inner();
    let key = match idempotency::key_of(&headers, &batch) {
        Ok(key) => key,
        Err(rejection) => return rejection.into_response(),
    };
    match (key, batch) {
        (Some(key), BatchRequest::Single(request)) if selects_mutation(&request) => {
            idempotency::execute_once(schema, keys, principal, key, request).await
        }
        (_, batch) => {
            GraphQLResponse::from(schema.execute_batch(batch.data(principal)).await).into_response()
        }
    }
}

/// Read buffer of one WebSocket, in bytes. Clients send small messages (`subscribe`, `ping`),
/// and tungstenite keeps the whole buffer resident per connection, so the 128 KiB default
/// would cost about 2.5 GiB at 20,000 subscribers.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Largest message a WebSocket client may send, in bytes.
const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Upgrades to a GraphQL WebSocket, speaking `graphql-transport-ws` or `graphql-ws` as the
/// client requests. The token comes in `connection_init`, or in the upgrade request's
/// `Authorization` header for clients that can set one.
#[allow(clippy::too_many_arguments)]
async fn graphql_ws(
    schema: MobilitySchema,
    tokens: Tokens,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
    limits: crate::ws::Limits,
    slots: crate::limits::WebSocketSlots,
    shutdown: watch::Receiver<bool>,
    open: crate::ws::OpenConnection,
) -> Response {
    let header_token = bearer(&headers).map(str::to_owned);
    let Some(protocol) = crate::ws::protocol_of(&headers) else {
        return (StatusCode::BAD_REQUEST, "unknown WebSocket subprotocol").into_response();
    };
    // The permit moves into the connection's task and frees the slot when the connection ends.
    let Some(permit) = slots.try_acquire() else {
        return slots.full_response();
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_message_size(WS_MAX_MESSAGE_BYTES)
        .max_frame_size(WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            crate::ws::serve(
                socket,
                schema,
                protocol,
                tokens,
                header_token,
                limits,
                shutdown,
            )
            .await;
            drop(permit);
            drop(open);
        })
}

/// Serves GraphQL over GET. A mutation gets 405 Method Not Allowed, as the GraphQL over HTTP
/// specification requires, so that links, prefetchers and caches cannot change state.
async fn graphql_get(
    schema: MobilitySchema,
    tokens: Tokens,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let principal = match authenticate(&tokens, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let query_string = uri.query().unwrap_or_default();
    let mut request = match async_graphql::http::parse_query_string(query_string) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("invalid GraphQL GET request: {e}");
            return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", &message);
        }
    };
    // async-graphql 7.2.1 reads only `operation_name`; the GraphQL over HTTP specification
    // names the parameter `operationName`.
    if request.operation_name.is_none() {
        request.operation_name = url::form_urlencoded::parse(query_string.as_bytes())
            .find(|(key, _)| key == "operationName")
            .map(|(_, value)| value.into_owned());
    }
    if selects_mutation(&request) {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "mutations must be sent with POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    GraphQLResponse::from(schema.execute(request.data(principal)).await).into_response()
}

/// Returns whether the operation that `request` selects is a mutation. A document that does not
/// parse selects none, so executing it returns the parse error.
fn selects_mutation(request: &async_graphql::Request) -> bool {
    // A document nested too deeply for the parser is rejected when it executes.
    if crate::schema::nesting::check(&request.query).is_err() {
        return false;
    }
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    document.operations.iter().any(|(name, operation)| {
        let selected = match (&request.operation_name, name) {
            (Some(wanted), Some(name)) => wanted == name.as_str(),
            _ => true,
        };
        selected && operation.node.ty == OperationType::Mutation
    })
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

/// Prometheus text exposition of every metric in [`crate::metrics`].
async fn metrics_page(State(services): State<Services>) -> impl IntoResponse {
    use crate::metrics as m;

    let handle = m::handle();
    let live = services.tracking.live();
    metrics::gauge!(m::ONLINE_DRIVERS).set(live.indexed_count() as f64);
    metrics::gauge!(m::REGISTERED_DRIVERS).set(live.driver_count() as f64);
    metrics::gauge!(m::OPEN_REQUESTS).set(services.matcher.open_request_count() as f64);
    metrics::gauge!(m::SUBSCRIBERS).set(services.bus.subscriber_count() as f64);
    let database_up = services.db.ping().await.is_ok();
    metrics::gauge!(m::DATABASE_UP).set(if database_up { 1.0 } else { 0.0 });
    if let Some(cluster) = &services.cluster {
        cluster.link().probe().await;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

/// Liveness: 200 while the process serves requests, whatever its dependencies do, so an
/// orchestrator does not restart every instance during a database outage. The body reports
/// the database for people; `/readyz` is the check that depends on it.
async fn healthz(State(services): State<Services>) -> impl IntoResponse {
    let database = services.db.ping().await;
    if let Err(e) = &database {
        tracing::warn!(error = %e, "health check: database unreachable");
    }
    let body = serde_json::json!({
        "status": if database.is_ok() { "ok" } else { "degraded" },
        "database": if database.is_ok() { "ok" } else { "unreachable" },
        "onlineDriversIndexed": services.tracking.live().indexed_count(),
        "subscribers": services.bus.subscriber_count(),
    });
    (StatusCode::OK, Json(body))
}

/// Readiness for a load balancer: 503 while the database does not respond, 200 otherwise. The
/// JSON body names each dependency. With Redis configured but unreachable, or its events not
/// received, the status is `degraded` and the code stays 200. Every write still lands in the
/// database and every instance still serves; only other instances' live state arrives late.
/// Routing away from every instance at once would turn a Redis outage into a full one.
async fn readyz(State(services): State<Services>) -> impl IntoResponse {
    use crate::metrics as m;

    let database = services.db.ping().await;
    metrics::gauge!(m::DATABASE_UP).set(if database.is_ok() { 1.0 } else { 0.0 });
    if let Err(e) = &database {
        tracing::warn!(error = %e, "readiness: database unreachable");
    }
    let mut status = if database.is_ok() { "ready" } else { "unready" };
    let mut body = serde_json::json!({
        "database": if database.is_ok() { "ok" } else { "unreachable" },
    });
    if let Some(cluster) = &services.cluster {
        let redis = cluster.link().probe().await;
        let subscribed = cluster.is_subscribed();
        if database.is_ok() && !(redis && subscribed) {
            status = "degraded";
        }
        body["redis"] = if redis { "ok" } else { "unreachable" }.into();
        body["events"] = if subscribed {
            "receiving"
        } else {
            "not receiving"
        }
        .into();
        body["instanceId"] = cluster.instance_id().to_string().into();
    }
    body["status"] = status.into();
    let code = if database.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// A server running in the background, for tests and tools.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish and waits for the end.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await?
    }
}

/// Serves on `listener` until `shutdown` turns true, with the offer expiry sweep alongside.
///
/// # Errors
/// A failure to build the services or to serve.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    crate::metrics::handle();
    let services = Services::build(&config).await?;
    let addr = listener.local_addr()?;
    let graphiql = if config.graphiql {
        format!("GraphiQL at http://{addr}/ and ")
    } else {
        String::new()
    };
    info!(
        %addr,
        database = %crate::db::redact(&config.database_url),
        "serving {graphiql}GraphQL at http://{addr}/graphql"
    );
    serve_services(config, services, listener, shutdown).await?;
    info!("server stopped");
    Ok(())
}

/// Starts a server on `config.listen` (port 0 picks a free port) in the background and
/// returns once it accepts connections.
///
/// # Errors
/// A failure to bind or to build the services.
pub async fn spawn(config: ServeConfig) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, receiver) = watch::channel(false);
    // Build the services here so that start-up errors reach the caller, not a detached task.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let services = match Services::build(&config).await {
            Ok(services) => {
                let _ = ready_tx.send(Ok(()));
                services
            }
            Err(e) => {
                let message = format!("{e:#}");
                let _ = ready_tx.send(Err(e));
                return Err(anyhow::anyhow!(message));
            }
        };
        serve_services(config, services, listener, receiver).await
    });
    ready_rx.await??;
    Ok(RunningServer {
        addr,
        shutdown,
        task,
    })
}

async fn serve_services(
    config: ServeConfig,
    services: Services,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    crate::metrics::handle();
    let limits = crate::limits::Limits::from_config(&config);
    let schema = schema::build_with_limits(services.clone(), &limits);
    let expiry = tokio::spawn(run_offer_expiry(
        services.trips.clone(),
        Duration::from_millis(config.offer_sweep_ms),
        shutdown.clone(),
    ));
    let key_expiry = tokio::spawn(idempotency::run_key_expiry(
        IdempotencyStore::new(services.db.clone()),
        idempotency::SWEEP_INTERVAL,
        shutdown.clone(),
    ));
    let mut cluster_tasks = Vec::new();
    if let (Some(cluster), Some(outbox)) = (&services.cluster, services.bus.outbox()) {
        cluster_tasks.push(tokio::spawn(run_publisher(
            cluster.clone(),
            outbox.clone(),
            shutdown.clone(),
        )));
        cluster_tasks.push(tokio::spawn(run_subscriber(
            services.clone(),
            cluster.clone(),
            shutdown.clone(),
        )));
    }
    let websockets = crate::ws::Connections::default();
    axum::serve(
        listener,
        router(
            schema,
            services,
            &limits,
            shutdown.clone(),
            websockets.clone(),
        ),
    )
    .with_graceful_shutdown(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    })
    .await?;
    // Each WebSocket sends its close frame within `ws::SEND_TIMEOUT` of the shutdown signal,
    // unless a send to a slow client is pending first, which that timeout also bounds.
    websockets.all_closed().await;
    expiry.await?;
    key_expiry.await?;
    for task in cluster_tasks {
        task.await?;
    }
    Ok(())
}
