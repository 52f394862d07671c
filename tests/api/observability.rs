//! `/metrics`: the Prometheus exposition lists request timings by root field and outcome,
//! location update counts by status, and the live gauges.
//!
//! The recorder is process-wide, so counts include other tests' requests; each check looks
//! for a series that only this test's requests can have created, or for a count of at least
//! what this test caused.

use serde_json::json;

use crate::helpers::{Backend, TestApp};

crate::on_both_backends!(metrics_scrape);

/// Value of the first sample whose line starts with `series`, such as
/// `mobility_online_drivers` or `name{label="x"}`.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn metrics_scrape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.online_driver("MOTO", -1.9441, 30.0619).await;
    app.ok(
        "{ nearbyDrivers(near: {lat: -1.9441, lng: 30.0619}) { drivers { driverId } } }",
        json!({}),
    )
    .await;
    app.err(
        "{ nearbyDrivers(near: {lat: 95, lng: 30.0619}) { radiusMeters } }",
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;

    let response = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let page = response.text().await.unwrap();

    let ok = "mobility_graphql_request_duration_seconds_count{operation=\"nearbyDrivers\",outcome=\"ok\"}";
    assert!(
        sample(&page, ok).unwrap_or(0.0) >= 1.0,
        "{ok} missing in:\n{page}"
    );
    let bad = "mobility_graphql_request_duration_seconds_count{operation=\"nearbyDrivers\",outcome=\"BAD_USER_INPUT\"}";
    assert!(
        sample(&page, bad).unwrap_or(0.0) >= 1.0,
        "{bad} missing in:\n{page}"
    );
    let bucket = "mobility_graphql_request_duration_seconds_bucket{operation=\"nearbyDrivers\",outcome=\"ok\",le=\"0.001\"}";
    assert!(
        sample(&page, bucket).is_some(),
        "{bucket} missing in:\n{page}"
    );
    let accepted = "mobility_location_updates_total{status=\"accepted\"}";
    assert!(
        sample(&page, accepted).unwrap_or(0.0) >= 1.0,
        "{accepted} missing in:\n{page}"
    );
    for gauge in [
        "mobility_online_drivers",
        "mobility_registered_drivers",
        "mobility_open_trip_requests",
        "mobility_subscribers",
    ] {
        assert!(
            sample(&page, gauge).is_some(),
            "{gauge} missing in:\n{page}"
        );
    }
    app.stop().await;
}
