//! `nearbyDrivers` and `nearbyTripRequests`.

use async_graphql::{Context, ID, Object, Result};
use chrono::Utc;

use super::access::{allowed, caller};
use crate::app::Services;
use crate::matching::NearbyQuery;
use crate::schema::enums::{EtaMethod, VehicleType};
use crate::schema::error::{api_error, parse_id};
use crate::schema::inputs::LatLngInput;
use crate::schema::types::{
    EtaModelInfo, NearbyDriver, NearbyDriversResult, NearbyTripRequest, ScoreComponent,
};

#[derive(Default)]
pub struct MatchingQuery;

#[Object]
impl MatchingQuery {
    // The GraphQL arguments map one to one onto the Rust parameters.
    #[allow(clippy::too_many_arguments)]
    /// Ranks the free, fresh, online drivers who can pick up at `near`, best first.
    ///
    /// Without `radiusMeters` the search tries the configured ladder (default 5000 m, then
    /// 15000 m) until a radius finds a driver. With it, that radius is tried first and, when
    /// `widen` is true, wider ladder steps after it.
    async fn nearby_drivers(
        &self,
        ctx: &Context<'_>,
        near: LatLngInput,
        #[graphql(desc = "Search radius in meters, 1 to 50000 by default.")] radius_meters: Option<
            f64,
        >,
        #[graphql(desc = "Allowed vehicle types; all when omitted.")] vehicle_types: Option<
            Vec<VehicleType>,
        >,
        #[graphql(desc = "Rows to return, 1 to 25 by default; 10 when omitted.")] limit: Option<
            i32,
        >,
        #[graphql(
            desc = "Ignore drivers whose last fix is older, in seconds; at most the \
                          server's staleness window (120 s by default)."
        )]
        max_location_age_seconds: Option<i32>,
        #[graphql(
            default = true,
            desc = "Whether an empty radius widens along the ladder."
        )]
        widen: bool,
    ) -> Result<NearbyDriversResult> {
        allowed(caller(ctx)?.search_drivers())?;
        let matcher = &ctx.data::<Services>()?.matcher;
        let query = NearbyQuery {
            lat: near.lat,
            lng: near.lng,
            radius_m: radius_meters,
            vehicle_types: vehicle_types.map(|v| v.into_iter().map(Into::into).collect()),
            limit,
            max_location_age_s: max_location_age_seconds,
            widen,
        };
        let found = matcher
            .nearby_drivers(&query, Utc::now())
            .map_err(api_error)?;
        let config = matcher.config();
        let drivers = found
            .drivers
            .into_iter()
            .enumerate()
            .map(|(i, d)| NearbyDriver {
                rank: i as i32 + 1,
                driver_id_field: ID(d.driver_id.to_string()),
                driver_id: d.driver_id,
                vehicle_type: d.vehicle_type.into(),
                location: d.position.into(),
                distance_meters: d.distance_m,
                eta_seconds: d.eta_s,
                location_age_seconds: d.location_age_s,
                score: d.score.total,
                score_components: d
                    .score
                    .components
                    .into_iter()
                    .map(|c| ScoreComponent {
                        kind: c.kind.into(),
                        raw: c.raw,
                        normalized: c.normalized,
                        weight: c.weight,
                        contribution: c.contribution,
                    })
                    .collect(),
            })
            .collect();
        Ok(NearbyDriversResult {
            drivers,
            radius_meters: found.radius_m,
            radii_tried_meters: found.radii_tried_m,
            candidates_scored: found.candidates_scored as i32,
            proximity: config.ranking.proximity.into(),
            eta: EtaModelInfo {
                method: EtaMethod::StraightLine,
                detour_factor: config.eta.detour_factor,
                moto_speed_mps: config.eta.moto_speed_mps,
                cab_speed_mps: config.eta.cab_speed_mps,
            },
        })
    }

    /// Open requests near an online driver that the driver's vehicle type can serve, nearest
    /// first. Scheduled trips appear 30 minutes (by default) before their pickup time.
    async fn nearby_trip_requests(
        &self,
        ctx: &Context<'_>,
        driver_id: ID,
        #[graphql(desc = "Search radius in meters; the first ladder step when omitted.")]
        radius_meters: Option<f64>,
        #[graphql(desc = "Rows to return, 1 to 25 by default; 10 when omitted.")] limit: Option<
            i32,
        >,
    ) -> Result<Vec<NearbyTripRequest>> {
        let driver_id = parse_id(&driver_id, "driverId")?;
        allowed(caller(ctx)?.act_for_driver(driver_id))?;
        let matcher = &ctx.data::<Services>()?.matcher;
        let found = matcher
            .nearby_requests(driver_id, radius_meters, limit, Utc::now())
            .map_err(api_error)?;
        Ok(found
            .into_iter()
            .map(|r| NearbyTripRequest {
                trip_id: r.request.trip_id,
                pickup: r.request.pickup.into(),
                vehicle_type: r.request.vehicle_type.into(),
                scheduled_at: r.request.scheduled_at,
                requested_at: r.request.requested_at,
                distance_meters: r.distance_m,
                eta_seconds: r.eta_s,
            })
            .collect())
    }
}
