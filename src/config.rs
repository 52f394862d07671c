//! Server configuration from command-line flags and environment variables.
//!
//! Every setting has a flag and a variable; the flag wins. `ServeConfig::validate` runs at
//! start and names the variable and the accepted range when a value is wrong.

use std::net::SocketAddr;

use clap::Args;

use crate::geometry::BoundingBox;
use crate::ranking::{Proximity, RankingConfig, RankingWeights};

/// Embedded default: a SQLite file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://mobility.db?mode=rwc";

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of `mobility serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address and port to listen on.
    #[arg(long, env = "MOBILITY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://PATH?mode=rwc` (created if missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Maximum open database connections (PostgreSQL only; SQLite uses one writer).
    #[arg(long, env = "MOBILITY_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Seconds after a driver's last location fix at which the driver stops being matched.
    #[arg(long, env = "MOBILITY_LOCATION_STALE_SECONDS", default_value_t = 120)]
    pub location_stale_seconds: u32,

    /// Highest believable speed in meters per second between two fixes; faster jumps are
    /// dropped as GPS errors (55 m/s is about 200 km/h).
    #[arg(long, env = "MOBILITY_MAX_SPEED_MPS", default_value_t = 55.0)]
    pub max_speed_mps: f64,

    /// Distance in meters a fix may move beyond `max-speed-mps` without being called a jump,
    /// to absorb GPS noise between fixes seconds apart.
    #[arg(long, env = "MOBILITY_JUMP_TOLERANCE_M", default_value_t = 100.0)]
    pub jump_tolerance_m: f64,

    /// Seconds a device timestamp may be ahead of the server clock.
    #[arg(long, env = "MOBILITY_MAX_CLOCK_SKEW_SECONDS", default_value_t = 30)]
    pub max_clock_skew_seconds: u32,

    /// Oldest device timestamp accepted in a location update, in seconds before now.
    #[arg(long, env = "MOBILITY_MAX_FIX_AGE_SECONDS", default_value_t = 3_600)]
    pub max_fix_age_seconds: u32,

    /// Optional service area `min_lat,min_lng,max_lat,max_lng`; positions outside it are
    /// rejected, which also catches swapped latitude and longitude.
    #[arg(long, env = "MOBILITY_SERVICE_AREA")]
    pub service_area: Option<BoundingBox>,

    /// Search radii in meters tried in order by `nearbyDrivers` until one finds a driver.
    #[arg(
        long,
        env = "MOBILITY_SEARCH_LADDER_M",
        value_delimiter = ',',
        default_value = "5000,15000"
    )]
    pub search_ladder_m: Vec<f64>,

    /// Largest radius in meters a client may ask for.
    #[arg(long, env = "MOBILITY_MAX_RADIUS_M", default_value_t = 50_000.0)]
    pub max_radius_m: f64,

    /// Rows `nearbyDrivers` returns when the client gives no limit.
    #[arg(long, env = "MOBILITY_DEFAULT_LIMIT", default_value_t = 10)]
    pub default_limit: u32,

    /// Largest `limit` a client may ask for.
    #[arg(long, env = "MOBILITY_MAX_LIMIT", default_value_t = 25)]
    pub max_limit: u32,

    /// Eligible drivers, nearest first, that the ranking scores before keeping the best
    /// `limit`. Bounds the work per query in dense areas.
    #[arg(long, env = "MOBILITY_CANDIDATE_POOL", default_value_t = 50)]
    pub candidate_pool: u32,

    /// Seconds a driver has to accept or decline an offer before it expires.
    #[arg(long, env = "MOBILITY_OFFER_TTL_SECONDS", default_value_t = 30)]
    pub offer_ttl_seconds: u32,

    /// Milliseconds between scans for expired offers.
    #[arg(long, env = "MOBILITY_OFFER_SWEEP_MS", default_value_t = 1_000)]
    pub offer_sweep_ms: u64,

    /// How far ahead a trip may be scheduled, in seconds.
    #[arg(long, env = "MOBILITY_MAX_SCHEDULE_AHEAD_SECONDS", default_value_t = 7 * 24 * 3_600)]
    pub max_schedule_ahead_seconds: u32,

    /// Scheduled trips appear in `nearbyTripRequests` this many seconds before pickup time.
    #[arg(long, env = "MOBILITY_SCHEDULED_LEAD_SECONDS", default_value_t = 1_800)]
    pub scheduled_lead_seconds: u32,

    /// Ranking weights as `name=value` pairs: proximity, freshness, rating, acceptance, idle.
    #[arg(long, env = "MOBILITY_RANKING_WEIGHTS", default_value = "")]
    pub ranking_weights: RankingWeightsArg,

    /// What the proximity score measures.
    #[arg(long, env = "MOBILITY_RANKING_PROXIMITY", value_enum, default_value_t = Proximity::Eta)]
    pub ranking_proximity: Proximity,

    /// Average speed of a motorcycle taxi in meters per second, for straight-line ETAs.
    #[arg(long, env = "MOBILITY_MOTO_SPEED_MPS", default_value_t = 8.3)]
    pub moto_speed_mps: f64,

    /// Average speed of a car taxi in meters per second, for straight-line ETAs.
    #[arg(long, env = "MOBILITY_CAB_SPEED_MPS", default_value_t = 6.9)]
    pub cab_speed_mps: f64,

    /// Road distance over straight-line distance, for ETAs (1.3 is typical of city grids).
    #[arg(long, env = "MOBILITY_DETOUR_FACTOR", default_value_t = 1.3)]
    pub detour_factor: f64,

    /// Largest number of updates in one `updateDriverLocations` call.
    #[arg(long, env = "MOBILITY_MAX_BATCH", default_value_t = 500)]
    pub max_batch: u32,

    /// Events a slow subscriber may fall behind before it skips ahead.
    #[arg(long, env = "MOBILITY_EVENT_BUFFER", default_value_t = 1_024)]
    pub event_buffer: usize,

    /// Log format.
    #[arg(long, env = "MOBILITY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Redis URL (`redis://host:port/db`). When set, instances share live state and events
    /// through it, so several can run behind one load balancer; when absent, everything live
    /// stays in this process.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel, so several deployments (or test runs) can share
    /// one Redis.
    #[arg(long, env = "MOBILITY_REDIS_PREFIX", default_value = "mobility")]
    pub redis_prefix: String,

    /// An admin token (`mob_` and 64 hex digits) stored at start if missing, for automated
    /// deployments; `mobility token generate` prints a new one. Without it, the first start
    /// creates an admin token and prints it once.
    #[arg(long, env = "MOBILITY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// `requestContact` calls one token may make per hour on one instance.
    #[arg(long, env = "MOBILITY_CONTACT_REQUESTS_PER_HOUR", default_value_t = 10)]
    pub contact_requests_per_hour: u32,

    /// Subscriptions one WebSocket connection may hold at once; one more closes it with code
    /// 4429.
    #[arg(
        long,
        env = "MOBILITY_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value_t = 20
    )]
    pub max_subscriptions_per_connection: u32,

    /// Aliased fields one GraphQL operation may contain, counted through fragments; more is
    /// rejected with GRAPHQL_VALIDATION_FAILED. Bounds alias amplification, where one request
    /// repeats an expensive field under many names. Admin tokens are exempt.
    #[arg(long, env = "MOBILITY_MAX_ALIASES", default_value_t = crate::limits::DEFAULT_MAX_ALIASES)]
    pub max_aliases: u32,

    /// Operations one batched POST (a JSON array of requests) may contain; more gets HTTP 400.
    #[arg(
        long,
        env = "MOBILITY_MAX_BATCH_OPERATIONS",
        default_value_t = crate::limits::DEFAULT_MAX_BATCH_OPERATIONS
    )]
    pub max_batch_operations: u32,

    /// Largest request body in bytes; a larger one gets HTTP 413. A batch of 500 location
    /// updates is about 100 KiB.
    #[arg(long, env = "MOBILITY_MAX_BODY_BYTES", default_value_t = crate::limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u32,

    /// Mutations per second one token may sustain, counting each root field of a mutation
    /// operation; 0 turns the limit off. Admin tokens are exempt. Each instance counts alone.
    #[arg(
        long,
        env = "MOBILITY_MUTATION_RATE_PER_SECOND",
        default_value_t = crate::limits::DEFAULT_MUTATION_RATE_PER_SECOND
    )]
    pub mutation_rate_per_second: u32,

    /// Mutations one token may send at once before `mutation-rate-per-second` applies.
    #[arg(
        long,
        env = "MOBILITY_MUTATION_BURST",
        default_value_t = crate::limits::DEFAULT_MUTATION_BURST
    )]
    pub mutation_burst: u32,

    /// Whether introspection queries (`__schema`, `__type`) run. When false they are rejected
    /// with GRAPHQL_VALIDATION_FAILED. GraphiQL and code generators need them.
    #[arg(
        long,
        env = "MOBILITY_INTROSPECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub introspection: bool,

    /// Whether `/` serves GraphiQL; when false, `/` returns 404 with a pointer to `/graphql`.
    #[arg(
        long,
        env = "MOBILITY_GRAPHIQL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub graphiql: bool,

    /// Browser origins allowed to call the API, comma-separated (`https://ops.example.com`),
    /// or `*` for any. Empty sends no CORS headers, so browsers block cross-origin calls.
    #[arg(long, env = "MOBILITY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// WebSocket connections one instance serves at once; one more gets HTTP 503.
    #[arg(
        long,
        env = "MOBILITY_MAX_WEBSOCKET_CONNECTIONS",
        default_value_t = crate::limits::DEFAULT_MAX_WEBSOCKET_CONNECTIONS
    )]
    pub max_websocket_connections: u32,

    /// Seconds a cached driver profile lives in Redis before it is read again from the
    /// database. Writes invalidate it sooner.
    #[arg(long, env = "MOBILITY_CACHE_TTL_SECONDS", default_value_t = 300)]
    pub cache_ttl_seconds: u32,

    /// Whether the GraphQL loaders cache driver, rider and vehicle rows in Redis. It takes
    /// effect only with `REDIS_URL`, and `false` reads every row from the database.
    #[arg(
        long,
        env = "MOBILITY_PROFILE_CACHE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub profile_cache: bool,
}

/// Clap wrapper so an empty string means "all defaults".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankingWeightsArg(pub RankingWeights);

impl std::str::FromStr for RankingWeightsArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(RankingWeightsArg)
    }
}

impl ServeConfig {
    /// A configuration with every default and the given database, for tests and tools.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        use clap::Parser;

        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        // Parsing an empty argument list applies the declared defaults. Environment variables
        // are read too, which is what a tool that embeds the server expects.
        let mut config = Wrapper::parse_from(["mobility"]).config;
        config.database_url = database_url.into();
        config
    }

    /// Checks ranges that clap cannot express.
    ///
    /// # Errors
    /// A message naming the variable, the value and the accepted range.
    pub fn validate(&self) -> Result<(), String> {
        fn positive(name: &str, value: f64) -> Result<(), String> {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a finite number above 0, got {value}"
                ))
            }
        }
        positive("MOBILITY_MAX_SPEED_MPS", self.max_speed_mps)?;
        positive("MOBILITY_MOTO_SPEED_MPS", self.moto_speed_mps)?;
        positive("MOBILITY_CAB_SPEED_MPS", self.cab_speed_mps)?;
        positive("MOBILITY_MAX_RADIUS_M", self.max_radius_m)?;
        if !(self.jump_tolerance_m.is_finite() && self.jump_tolerance_m >= 0.0) {
            return Err(format!(
                "MOBILITY_JUMP_TOLERANCE_M must be >= 0, got {}",
                self.jump_tolerance_m
            ));
        }
        if !(1.0..=3.0).contains(&self.detour_factor) {
            return Err(format!(
                "MOBILITY_DETOUR_FACTOR must be in 1..=3, got {}",
                self.detour_factor
            ));
        }
        if self.location_stale_seconds == 0 {
            return Err("MOBILITY_LOCATION_STALE_SECONDS must be at least 1".into());
        }
        if self.offer_ttl_seconds == 0 || self.offer_sweep_ms == 0 {
            return Err(
                "MOBILITY_OFFER_TTL_SECONDS and MOBILITY_OFFER_SWEEP_MS must be at least 1".into(),
            );
        }
        if self.search_ladder_m.is_empty() {
            return Err("MOBILITY_SEARCH_LADDER_M needs at least one radius".into());
        }
        let mut previous = 0.0;
        for &radius in &self.search_ladder_m {
            if !(radius.is_finite() && radius > previous && radius <= self.max_radius_m) {
                return Err(format!(
                    "MOBILITY_SEARCH_LADDER_M must increase strictly and stay within \
                     0..={} (MOBILITY_MAX_RADIUS_M), got {:?}",
                    self.max_radius_m, self.search_ladder_m
                ));
            }
            previous = radius;
        }
        if self.max_limit == 0 || self.default_limit == 0 || self.default_limit > self.max_limit {
            return Err(format!(
                "need 1 <= MOBILITY_DEFAULT_LIMIT ({}) <= MOBILITY_MAX_LIMIT ({})",
                self.default_limit, self.max_limit
            ));
        }
        if self.candidate_pool < self.max_limit {
            return Err(format!(
                "MOBILITY_CANDIDATE_POOL ({}) must be at least MOBILITY_MAX_LIMIT ({})",
                self.candidate_pool, self.max_limit
            ));
        }
        if self.max_batch == 0 || self.event_buffer == 0 {
            return Err("MOBILITY_MAX_BATCH and MOBILITY_EVENT_BUFFER must be at least 1".into());
        }
        // The redis crate is built without TLS, so rediss:// would fail at the first command.
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
        {
            return Err(format!(
                "REDIS_URL must start with redis:// (TLS is not supported), got {}",
                crate::db::redact(url)
            ));
        }
        if self.redis_prefix.is_empty()
            || !self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(format!(
                "MOBILITY_REDIS_PREFIX must be non-empty letters, digits, '-', '_', '.' or ':', \
                 got {:?}",
                self.redis_prefix
            ));
        }
        if let Some(token) = &self.admin_token {
            let well_formed = token
                .strip_prefix("mob_")
                .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            if !well_formed {
                // The value is a secret, so the message does not repeat it.
                return Err(
                    "MOBILITY_ADMIN_TOKEN must be mob_ followed by 64 hex digits; \
                            `mobility token generate` prints one"
                        .into(),
                );
            }
        }
        if self.contact_requests_per_hour == 0 {
            return Err("MOBILITY_CONTACT_REQUESTS_PER_HOUR must be at least 1".into());
        }
        if self.max_subscriptions_per_connection == 0 {
            return Err("MOBILITY_MAX_SUBSCRIPTIONS_PER_CONNECTION must be at least 1".into());
        }
        self.validate_request_limits()?;
        if self.cache_ttl_seconds == 0 {
            return Err("MOBILITY_CACHE_TTL_SECONDS must be at least 1".into());
        }
        Ok(())
    }

    /// Checks the settings of [`crate::limits`].
    fn validate_request_limits(&self) -> Result<(), String> {
        /// Largest accepted `MOBILITY_MAX_BODY_BYTES`: each request body is held in memory
        /// while it is parsed.
        const MAX_BODY_BYTES_CEILING: u32 = 64 * 1024 * 1024;
        if self.max_aliases == 0 {
            return Err("MOBILITY_MAX_ALIASES must be at least 1".into());
        }
        if self.max_batch_operations == 0 {
            return Err("MOBILITY_MAX_BATCH_OPERATIONS must be at least 1".into());
        }
        if !(1_024..=MAX_BODY_BYTES_CEILING).contains(&self.max_body_bytes) {
            return Err(format!(
                "MOBILITY_MAX_BODY_BYTES must be in 1024..={MAX_BODY_BYTES_CEILING}, got {}",
                self.max_body_bytes
            ));
        }
        if self.mutation_rate_per_second > 0 && self.mutation_burst == 0 {
            return Err("MOBILITY_MUTATION_BURST must be at least 1 while \
                 MOBILITY_MUTATION_RATE_PER_SECOND is above 0"
                .into());
        }
        let origins = crate::limits::cors_origins(&self.cors_origins);
        if origins.len() > 1 && origins.iter().any(|origin| origin == "*") {
            return Err(format!(
                "MOBILITY_CORS_ORIGINS: \"*\" allows every origin and cannot be combined with \
                 others, got {origins:?}"
            ));
        }
        for origin in &origins {
            crate::limits::check_cors_origin(origin)?;
        }
        if self.max_websocket_connections == 0 {
            return Err("MOBILITY_MAX_WEBSOCKET_CONNECTIONS must be at least 1".into());
        }
        Ok(())
    }

    pub fn ranking(&self) -> RankingConfig {
        RankingConfig {
            weights: self.ranking_weights.0,
            proximity: self.ranking_proximity,
            ..RankingConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let config = ServeConfig::with_database(DEFAULT_DATABASE_URL);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.search_ladder_m, vec![5_000.0, 15_000.0]);
    }

    #[test]
    fn request_limits_accept_their_edge_values() {
        let base = ServeConfig::with_database(DEFAULT_DATABASE_URL);
        let rate_off = ServeConfig {
            mutation_rate_per_second: 0,
            mutation_burst: 0,
            ..base.clone()
        };
        assert_eq!(rate_off.validate(), Ok(()));
        let any_origin = ServeConfig {
            cors_origins: vec!["*".into()],
            ..base.clone()
        };
        assert_eq!(any_origin.validate(), Ok(()));
        let blank_origins = ServeConfig {
            cors_origins: vec![String::new()],
            ..base
        };
        assert_eq!(blank_origins.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_bad_values() {
        let base = ServeConfig::with_database(DEFAULT_DATABASE_URL);
        let cases: Vec<(&str, ServeConfig)> = vec![
            (
                "MOBILITY_SEARCH_LADDER_M",
                ServeConfig {
                    search_ladder_m: vec![15_000.0, 5_000.0],
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_SEARCH_LADDER_M",
                ServeConfig {
                    search_ladder_m: vec![],
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_MAX_SPEED_MPS",
                ServeConfig {
                    max_speed_mps: f64::NAN,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_DEFAULT_LIMIT",
                ServeConfig {
                    default_limit: 40,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_DETOUR_FACTOR",
                ServeConfig {
                    detour_factor: 0.5,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_LOCATION_STALE_SECONDS",
                ServeConfig {
                    location_stale_seconds: 0,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_ADMIN_TOKEN",
                ServeConfig {
                    admin_token: Some("letmein".into()),
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_MAX_ALIASES",
                ServeConfig {
                    max_aliases: 0,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_MAX_BATCH_OPERATIONS",
                ServeConfig {
                    max_batch_operations: 0,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_MAX_BODY_BYTES",
                ServeConfig {
                    max_body_bytes: 100,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_MUTATION_BURST",
                ServeConfig {
                    mutation_burst: 0,
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_CORS_ORIGINS",
                ServeConfig {
                    cors_origins: vec!["https://ops.example.com/".into()],
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_CORS_ORIGINS",
                ServeConfig {
                    cors_origins: vec!["*".into(), "https://ops.example.com".into()],
                    ..base.clone()
                },
            ),
            (
                "MOBILITY_MAX_WEBSOCKET_CONNECTIONS",
                ServeConfig {
                    max_websocket_connections: 0,
                    ..base.clone()
                },
            ),
        ];
        for (variable, config) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.contains(variable), "{err}");
        }
    }
}
