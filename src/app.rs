//! Wiring: builds the services from a configuration, serves them over HTTP and WebSocket,
//! and shuts down cleanly. `main` and the integration tests start the server the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use async_graphql_axum::{GraphQL, GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::extract::State;
use axum::extract::WebSocketUpgrade;
use axum::http::{StatusCode, Uri, header};
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
use crate::config::ServeConfig;
use crate::events::EventBus;
use crate::matching::{EtaModel, MatchConfig, Matcher};
use crate::schema::{self, MobilitySchema};
use crate::tracking::{FixRules, Tracking, TrackingConfig, load_live_drivers};
use crate::trips::{TripConfig, Trips, load_open_requests, run_offer_expiry};

/// Largest request body, in bytes. A batch of 500 location updates is about 100 KiB.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every service, shared by the resolvers through the schema data.
#[derive(Debug, Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    pub accounts: Accounts,
    pub tracking: Tracking,
    pub matcher: Matcher,
    pub trips: Trips,
    pub bus: EventBus,
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
        let bus = EventBus::new(config.event_buffer);
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
        let accounts = Accounts::new(db.clone(), live);
        Ok(Self {
            db,
            accounts,
            tracking,
            matcher,
            trips,
            bus,
        })
    }
}

/// The HTTP routes: GraphiQL at `/`, GraphQL at `/graphql` (POST and GET), subscriptions at
/// `/graphql/ws` (`graphql-transport-ws` and `graphql-ws`), and `/healthz`.
pub fn router(schema: MobilitySchema, services: Services) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route(
            "/graphql",
            get({
                let schema = schema.clone();
                move |uri: Uri| graphql_get(schema, uri)
            })
            .post_service(GraphQL::new(schema.clone())),
        )
        .route(
            "/graphql/ws",
            get(
                move |protocol: GraphQLProtocol, upgrade: WebSocketUpgrade| {
                    graphql_ws(schema, protocol, upgrade)
                },
            ),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page))
        .with_state(services)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
}

/// Read buffer of one WebSocket, in bytes. Clients send small messages (`subscribe`, `ping`),
/// and tungstenite keeps the whole buffer resident per connection, so the 128 KiB default
/// would cost about 2.5 GiB at 20,000 subscribers.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Largest message a WebSocket client may send, in bytes.
const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Upgrades to a GraphQL WebSocket, speaking `graphql-transport-ws` or `graphql-ws` as the
/// client requests.
async fn graphql_ws(
    schema: MobilitySchema,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_message_size(WS_MAX_MESSAGE_BYTES)
        .max_frame_size(WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |stream| GraphQLWebSocket::new(stream, schema, protocol).serve())
}

/// Serves GraphQL over GET. A mutation gets 405 Method Not Allowed, as the GraphQL over HTTP
/// specification requires, so that links, prefetchers and caches cannot change state.
async fn graphql_get(schema: MobilitySchema, uri: Uri) -> Response {
    let query_string = uri.query().unwrap_or_default();
    let mut request = match async_graphql::http::parse_query_string(query_string) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("invalid GraphQL GET request: {e}");
            return (StatusCode::BAD_REQUEST, message).into_response();
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
        let message = "mutations must be sent with POST";
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            message,
        )
            .into_response();
    }
    GraphQLResponse::from(schema.execute(request).await).into_response()
}

/// Returns whether the operation that `request` selects is a mutation. A document that does not
/// parse selects none, so executing it returns the parse error.
fn selects_mutation(request: &async_graphql::Request) -> bool {
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

async fn healthz(State(services): State<Services>) -> impl IntoResponse {
    let database = services.db.ping().await;
    let body = serde_json::json!({
        "status": if database.is_ok() { "ok" } else { "degraded" },
        "database": if database.is_ok() { "ok" } else { "unreachable" },
        "onlineDriversIndexed": services.tracking.live().indexed_count(),
        "subscribers": services.bus.subscriber_count(),
    });
    if let Err(e) = database {
        tracing::warn!(error = %e, "health check: database unreachable");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    (StatusCode::OK, Json(body))
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
    info!(
        %addr,
        database = %crate::db::redact(&config.database_url),
        "serving GraphiQL at http://{addr}/ and GraphQL at http://{addr}/graphql"
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
    let schema = schema::build(services.clone());
    let expiry = tokio::spawn(run_offer_expiry(
        services.trips.clone(),
        Duration::from_millis(config.offer_sweep_ms),
        shutdown.clone(),
    ));
    axum::serve(listener, router(schema, services))
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await?;
    expiry.await?;
    Ok(())
}
