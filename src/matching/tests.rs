use chrono::TimeDelta;

use super::*;
use crate::tracking::{Fix, LiveDriver};

const CENTER: LatLng = LatLng {
    lat: 41.15,
    lng: -8.61,
};

fn config() -> MatchConfig {
    MatchConfig {
        ladder_m: vec![5_000.0, 15_000.0],
        max_radius_m: 50_000.0,
        default_limit: 10,
        max_limit: 25,
        candidate_pool: 50,
        stale_after_s: 120,
        scheduled_lead_s: 1_800,
        service_area: None,
        eta: EtaModel {
            detour_factor: 1.3,
            moto_speed_mps: 8.3,
            cab_speed_mps: 6.9,
        },
        ranking: RankingConfig::default(),
    }
}

/// A free online driver `north_m` meters north of the center, last seen `age_s` ago.
fn driver(id: i64, north_m: f64, age_s: i64, now: DateTime<Utc>) -> LiveDriver {
    let mut d = LiveDriver::new(id, VehicleType::Moto);
    d.online = true;
    d.available_since = Some(now);
    d.fix = Some(Fix {
        position: LatLng {
            lat: CENTER.lat + north_m / 111_195.0,
            lng: CENTER.lng,
        },
        heading_deg: None,
        speed_mps: None,
        accuracy_m: None,
        recorded_at: now - TimeDelta::seconds(age_s),
    });
    d
}

fn query() -> NearbyQuery {
    NearbyQuery {
        lat: CENTER.lat,
        lng: CENTER.lng,
        radius_m: None,
        vehicle_types: None,
        limit: None,
        max_location_age_s: None,
        widen: true,
    }
}

fn matcher(drivers: Vec<LiveDriver>) -> Matcher {
    Matcher::new(
        Arc::new(LiveDrivers::from_drivers(drivers)),
        Arc::new(OpenRequests::default()),
        config(),
    )
}

#[test]
fn filters_ineligible_drivers() {
    let now = Utc::now();
    let mut offline = driver(2, 200.0, 5, now);
    offline.online = false;
    let mut busy = driver(3, 300.0, 5, now);
    busy.active_trip_id = Some(99);
    let stale = driver(4, 400.0, 500, now);
    let mut cab = driver(5, 500.0, 5, now);
    cab.vehicle_type = VehicleType::Cab;
    let m = matcher(vec![driver(1, 100.0, 5, now), offline, busy, stale, cab]);

    let q = NearbyQuery {
        vehicle_types: Some(vec![VehicleType::Moto]),
        ..query()
    };
    let ids: Vec<i64> = m
        .nearby_drivers(&q, now)
        .unwrap()
        .drivers
        .iter()
        .map(|d| d.driver_id)
        .collect();
    assert_eq!(ids, vec![1]);
}

#[test]
fn ladder_widens_when_empty() {
    let now = Utc::now();
    let m = matcher(vec![driver(1, 10_000.0, 5, now)]);
    let result = m.nearby_drivers(&query(), now).unwrap();
    assert_eq!(result.radii_tried_m, vec![5_000.0, 15_000.0]);
    assert_eq!(result.drivers.len(), 1);

    let fixed = NearbyQuery {
        radius_m: Some(2_000.0),
        widen: false,
        ..query()
    };
    let result = m.nearby_drivers(&fixed, now).unwrap();
    assert_eq!(result.radii_tried_m, vec![2_000.0]);
    assert!(result.drivers.is_empty());
}

#[test]
fn ranks_by_score_not_only_distance() {
    let now = Utc::now();
    let near_new = driver(1, 300.0, 5, now);
    // 100 m further but with a long, excellent record: 200 ratings averaging 5 stars and
    // every offer accepted, idle for an hour.
    let mut seasoned = driver(2, 400.0, 5, now);
    seasoned.rating_sum = 1_000;
    seasoned.rating_count = 200;
    seasoned.offers_accepted = 100;
    seasoned.available_since = Some(now - TimeDelta::hours(1));
    let result = matcher(vec![near_new, seasoned])
        .nearby_drivers(&query(), now)
        .unwrap();
    let ids: Vec<i64> = result.drivers.iter().map(|d| d.driver_id).collect();
    assert_eq!(ids, vec![2, 1]);
}

#[test]
fn rejects_bad_arguments() {
    let now = Utc::now();
    let m = matcher(vec![]);
    let cases = [
        (
            "limit",
            NearbyQuery {
                limit: Some(0),
                ..query()
            },
        ),
        (
            "limit",
            NearbyQuery {
                limit: Some(26),
                ..query()
            },
        ),
        (
            "radiusMeters",
            NearbyQuery {
                radius_m: Some(60_000.0),
                ..query()
            },
        ),
        (
            "radiusMeters",
            NearbyQuery {
                radius_m: Some(f64::NAN),
                ..query()
            },
        ),
        (
            "maxLocationAgeSeconds",
            NearbyQuery {
                max_location_age_s: Some(121),
                ..query()
            },
        ),
        (
            "vehicleTypes",
            NearbyQuery {
                vehicle_types: Some(vec![]),
                ..query()
            },
        ),
        (
            "near.lat",
            NearbyQuery {
                lat: 95.0,
                ..query()
            },
        ),
    ];
    for (field, q) in cases {
        match m.nearby_drivers(&q, now) {
            Err(ServiceError::InvalidInput { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected InvalidInput, got {other:?}"),
        }
    }
}

#[test]
fn limit_truncates_pool() {
    let now = Utc::now();
    let drivers = (1..=20)
        .map(|i| driver(i, 50.0 * i as f64, 5, now))
        .collect();
    let result = matcher(drivers).nearby_drivers(
        &NearbyQuery {
            limit: Some(3),
            ..query()
        },
        now,
    );
    let result = result.unwrap();
    assert_eq!(result.drivers.len(), 3);
    assert_eq!(result.candidates_scored, 20);
}
