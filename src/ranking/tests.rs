use super::*;

fn base() -> CandidateFeatures {
    CandidateFeatures {
        distance_m: 1_000.0,
        eta_s: 200.0,
        location_age_s: 10.0,
        max_location_age_s: 120.0,
        rating_sum: 45,
        rating_count: 10,
        offers_accepted: 8,
        offers_rejected: 2,
        idle_s: 600.0,
    }
}

#[test]
fn components_sum_to_total() {
    let breakdown = score(&base(), &RankingConfig::default());
    let sum: f64 = breakdown.components.iter().map(|c| c.contribution).sum();
    assert!((sum - breakdown.total).abs() < 1e-12);
    assert!((0.0..=1.0).contains(&breakdown.total));
    assert_eq!(breakdown.components.len(), 5);
}

#[test]
fn new_driver_gets_priors() {
    let config = RankingConfig::default();
    assert_eq!(smoothed_rating(0, 0, &config), config.rating_prior_mean);
    assert_eq!(smoothed_acceptance(0, 0, &config), config.acceptance_prior);
    // One perfect answer moves the estimate only a little.
    assert!(smoothed_acceptance(1, 0, &config) < 0.85);
    assert!(smoothed_rating(5, 1, &config) < 4.6);
}

#[test]
fn worked_example_default_weights() {
    // ETA 200 s, age 10 s of 120 s, 10 ratings summing to 45 stars, 8 of 10 offers
    // accepted, idle 600 s. Each line is weight * normalized / 1.0 (the weights sum to 1).
    let b = score(&base(), &RankingConfig::default());
    let expected = [
        0.6 * (-200.0_f64 / 300.0).exp(), // proximity: 0.6 * 0.5134 = 0.3080
        0.05 * (1.0 - 10.0 / 120.0),      // freshness: 0.05 * 0.9167 = 0.0458
        0.15 * ((67.5 / 15.0 - 1.0) / 4.0), // rating 4.5 stars: 0.15 * 0.875 = 0.1313
        0.1 * ((0.8 * 10.0 + 8.0) / 20.0), // acceptance 0.8: 0.1 * 0.8 = 0.08
        0.1 * (600.0 / 1_800.0),          // idle: 0.1 * 0.3333 = 0.0333
    ];
    for (component, want) in b.components.iter().zip(expected) {
        assert!(
            (component.contribution - want).abs() < 1e-9,
            "{:?}: got {}, want {want}",
            component.kind,
            component.contribution
        );
    }
    assert!((b.total - 0.5985).abs() < 1e-3, "total {}", b.total);
}

#[test]
fn closer_driver_wins_all_else_equal() {
    let config = RankingConfig::default();
    let near = score(
        &CandidateFeatures {
            eta_s: 60.0,
            ..base()
        },
        &config,
    );
    let far = score(
        &CandidateFeatures {
            eta_s: 600.0,
            ..base()
        },
        &config,
    );
    assert!(near.total > far.total);
}

#[test]
fn distance_mode_uses_meters() {
    let config = RankingConfig {
        proximity: Proximity::Distance,
        ..RankingConfig::default()
    };
    let b = score(&base(), &config);
    let proximity = &b.components[0];
    assert_eq!(proximity.raw, 1_000.0);
    assert!((proximity.normalized - (-0.5_f64).exp()).abs() < 1e-12);
}

#[test]
fn stale_location_clamps_to_zero() {
    let b = score(
        &CandidateFeatures {
            location_age_s: 500.0,
            ..base()
        },
        &RankingConfig::default(),
    );
    assert_eq!(b.components[1].normalized, 0.0);
}

#[test]
fn weights_parse_and_reject() {
    let w: RankingWeights = "proximity=1, idle=0".parse().unwrap();
    assert_eq!(w.proximity, 1.0);
    assert_eq!(w.idle, 0.0);
    assert_eq!(w.rating, RankingWeights::default().rating);
    for bad in [
        "speed=1",
        "proximity",
        "rating=-1",
        "rating=NaN",
        "proximity=0,freshness=0,rating=0,acceptance=0,idle=0",
    ] {
        assert!(bad.parse::<RankingWeights>().is_err(), "{bad} accepted");
    }
}
