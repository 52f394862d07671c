//! Weights and constants of the ranking, with their defaults and validation.

use std::str::FromStr;

/// Which input the proximity component scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proximity {
    /// Estimated time of arrival in seconds.
    Eta,
    /// Great-circle distance in meters.
    Distance,
}

/// Relative weights of the score components; only their ratios matter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankingWeights {
    pub proximity: f64,
    pub freshness: f64,
    pub rating: f64,
    pub acceptance: f64,
    pub idle: f64,
}

impl RankingWeights {
    pub fn sum(&self) -> f64 {
        self.proximity + self.freshness + self.rating + self.acceptance + self.idle
    }
}

impl Default for RankingWeights {
    /// Proximity dominates because pickup time is what a rider waits for. The other terms
    /// reorder drivers whose ETAs are close.
    fn default() -> Self {
        Self {
            proximity: 0.6,
            freshness: 0.05,
            rating: 0.15,
            acceptance: 0.1,
            idle: 0.1,
        }
    }
}

impl FromStr for RankingWeights {
    type Err = String;

    /// Parses `name=value` pairs separated by commas, such as `proximity=0.7,idle=0`.
    /// Names left out keep their default weight.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = RankingWeights::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("invalid weight {pair:?}: expected name=value"))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|e| format!("invalid weight {pair:?}: {e}"))?;
            if !value.is_finite() || value < 0.0 {
                return Err(format!(
                    "invalid weight {pair:?}: must be a finite number >= 0"
                ));
            }
            let slot = match name.trim() {
                "proximity" => &mut weights.proximity,
                "freshness" => &mut weights.freshness,
                "rating" => &mut weights.rating,
                "acceptance" => &mut weights.acceptance,
                "idle" => &mut weights.idle,
                other => {
                    return Err(format!(
                        "unknown weight {other:?}: expected proximity, freshness, rating, \
                         acceptance or idle"
                    ));
                }
            };
            *slot = value;
        }
        if weights.sum() <= 0.0 {
            return Err("at least one ranking weight must be above 0".into());
        }
        Ok(weights)
    }
}

/// Everything the score depends on besides the candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct RankingConfig {
    pub weights: RankingWeights,
    pub proximity: Proximity,
    /// ETA in seconds at which proximity falls to 1/e (about 0.37).
    pub eta_scale_s: f64,
    /// Distance in meters at which proximity falls to 1/e, in distance mode.
    pub distance_scale_m: f64,
    /// Stars a driver with no ratings is assumed to have.
    pub rating_prior_mean: f64,
    /// How many ratings the prior counts as.
    pub rating_prior_weight: f64,
    /// Acceptance rate assumed for a driver with no answered offers, 0..=1.
    pub acceptance_prior: f64,
    /// How many answered offers the prior counts as.
    pub acceptance_prior_weight: f64,
    /// Idle time in seconds past which the idle component stays at 1.
    pub idle_cap_s: f64,
}

impl Default for RankingConfig {
    fn default() -> Self {
        Self {
            weights: RankingWeights::default(),
            proximity: Proximity::Eta,
            eta_scale_s: 300.0,
            distance_scale_m: 2_000.0,
            rating_prior_mean: 4.5,
            rating_prior_weight: 5.0,
            acceptance_prior: 0.8,
            acceptance_prior_weight: 10.0,
            idle_cap_s: 1_800.0,
        }
    }
}
