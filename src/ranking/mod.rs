//! Scoring of matching candidates: a pure function of a candidate's features and the
//! configured weights, with every component returned so a client can show why a driver ranks
//! where it does.
//!
//! Each component is normalized to 0..=1 (higher is better) and the score is their weighted
//! mean, so it is also in 0..=1. The components:
//!
//! - **proximity**: `exp(-eta_s / eta_scale_s)` in ETA mode, `exp(-distance_m / distance_scale_m)`
//!   in distance mode;
//! - **freshness**: `1 - location_age_s / max_location_age_s`;
//! - **rating**: the mean rating smoothed toward a prior (a Bayesian average), mapped from
//!   1..=5 to 0..=1, so one five-star trip does not outrank a hundred 4.8 ones;
//! - **acceptance**: accepted offers over answered offers, smoothed toward a prior, so a new
//!   driver gets the prior instead of a perfect score from no data;
//! - **idle**: time online without a trip, capped at `idle_cap_s`, which spreads work fairly.
//!
//! ```
//! use mobility::ranking::{CandidateFeatures, RankingConfig, score};
//!
//! let config = RankingConfig::default();
//! let near = CandidateFeatures { distance_m: 300.0, eta_s: 60.0, ..CandidateFeatures::default() };
//! let far = CandidateFeatures { distance_m: 3_000.0, eta_s: 600.0, ..near.clone() };
//! assert!(score(&near, &config).total > score(&far, &config).total);
//! ```

mod config;

pub use config::{Proximity, RankingConfig, RankingWeights};

/// What the ranking knows of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateFeatures {
    /// Great-circle distance to the pickup, in meters.
    pub distance_m: f64,
    /// Estimated time to reach the pickup, in seconds.
    pub eta_s: f64,
    /// Seconds since the driver's last accepted location fix.
    pub location_age_s: f64,
    /// Age at which a location stops being matched, in seconds; freshness is 0 there.
    pub max_location_age_s: f64,
    /// Sum and count of the stars riders gave this driver.
    pub rating_sum: i64,
    pub rating_count: i64,
    /// Offers this driver accepted, and offers declined or left to expire.
    pub offers_accepted: i64,
    pub offers_rejected: i64,
    /// Seconds online since the last trip ended or the driver came online.
    pub idle_s: f64,
}

impl Default for CandidateFeatures {
    fn default() -> Self {
        Self {
            distance_m: 0.0,
            eta_s: 0.0,
            location_age_s: 0.0,
            max_location_age_s: 120.0,
            rating_sum: 0,
            rating_count: 0,
            offers_accepted: 0,
            offers_rejected: 0,
            idle_s: 0.0,
        }
    }
}

/// Name of a score component, as exposed in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    Proximity,
    Freshness,
    Rating,
    Acceptance,
    Idle,
}

/// One term of the score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreComponent {
    pub kind: ComponentKind,
    /// The input in its own unit: seconds (ETA, age, idle), meters (distance mode), stars
    /// (smoothed rating) or a 0..=1 ratio (smoothed acceptance).
    pub raw: f64,
    /// The input mapped to 0..=1, higher is better.
    pub normalized: f64,
    /// Configured weight, before dividing by the sum of weights.
    pub weight: f64,
    /// `weight * normalized / sum of weights`; the components add up to the total.
    pub contribution: f64,
}

/// A candidate's score with its terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreBreakdown {
    /// Weighted mean of the normalized components, 0..=1.
    pub total: f64,
    pub components: Vec<ScoreComponent>,
}

/// Bayesian average of a rating in stars: `(prior_mean * prior_weight + sum) / (prior_weight + count)`.
pub fn smoothed_rating(sum: i64, count: i64, config: &RankingConfig) -> f64 {
    (config.rating_prior_mean * config.rating_prior_weight + sum as f64)
        / (config.rating_prior_weight + count as f64)
}

/// Acceptance rate smoothed toward `acceptance_prior`, 0..=1.
pub fn smoothed_acceptance(accepted: i64, rejected: i64, config: &RankingConfig) -> f64 {
    let answered = (accepted + rejected) as f64;
    (config.acceptance_prior * config.acceptance_prior_weight + accepted as f64)
        / (config.acceptance_prior_weight + answered)
}

/// Scores one candidate. See the module documentation for each component.
pub fn score(features: &CandidateFeatures, config: &RankingConfig) -> ScoreBreakdown {
    let w = &config.weights;
    let proximity = match config.proximity {
        Proximity::Eta => (features.eta_s, (-features.eta_s / config.eta_scale_s).exp()),
        Proximity::Distance => (
            features.distance_m,
            (-features.distance_m / config.distance_scale_m).exp(),
        ),
    };
    let freshness = if features.max_location_age_s > 0.0 {
        1.0 - features.location_age_s / features.max_location_age_s
    } else {
        0.0
    };
    let rating = smoothed_rating(features.rating_sum, features.rating_count, config);
    let acceptance =
        smoothed_acceptance(features.offers_accepted, features.offers_rejected, config);
    let idle = features.idle_s / config.idle_cap_s;

    let terms = [
        (
            ComponentKind::Proximity,
            proximity.0,
            proximity.1,
            w.proximity,
        ),
        (
            ComponentKind::Freshness,
            features.location_age_s,
            freshness,
            w.freshness,
        ),
        (
            ComponentKind::Rating,
            rating,
            (rating - 1.0) / 4.0,
            w.rating,
        ),
        (
            ComponentKind::Acceptance,
            acceptance,
            acceptance,
            w.acceptance,
        ),
        (ComponentKind::Idle, features.idle_s, idle, w.idle),
    ];
    let weight_sum = w.sum();
    let components: Vec<ScoreComponent> = terms
        .into_iter()
        .map(|(kind, raw, normalized, weight)| {
            let normalized = normalized.clamp(0.0, 1.0);
            ScoreComponent {
                kind,
                raw,
                normalized,
                weight,
                contribution: weight * normalized / weight_sum,
            }
        })
        .collect();
    let total = components.iter().map(|c| c.contribution).sum();
    ScoreBreakdown { total, components }
}

#[cfg(test)]
mod tests;
