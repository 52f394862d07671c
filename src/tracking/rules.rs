//! Rules that decide whether a new location fix replaces a driver's last one: pure functions,
//! no clock and no storage.

use chrono::{DateTime, Utc};

use crate::geometry::LatLng;

/// A location fix as the device reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub position: LatLng,
    /// Degrees clockwise from true north, 0 to 360.
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    /// Radius of the device's 68% confidence circle, in meters.
    pub accuracy_m: Option<f64>,
    /// Device time of the fix.
    pub recorded_at: DateTime<Utc>,
}

/// Thresholds for [`judge_fix`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixRules {
    /// Highest believable speed between two fixes, in meters per second.
    pub max_speed_mps: f64,
    /// Meters of movement forgiven before the speed test, for GPS noise.
    pub jump_tolerance_m: f64,
}

/// What to do with a new fix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FixVerdict {
    /// Newer than the last fix and physically possible: store it.
    Accept,
    /// Not newer than the last accepted fix, which is kept.
    Stale { latest: DateTime<Utc> },
    /// Reaching it from the last fix would need `implied_speed_mps`, above the maximum.
    ImpossibleJump {
        implied_speed_mps: f64,
        distance_m: f64,
    },
}

/// Judges `new` against the driver's last accepted fix, if any.
pub fn judge_fix(last: Option<&Fix>, new: &Fix, rules: &FixRules) -> FixVerdict {
    let Some(last) = last else {
        return FixVerdict::Accept;
    };
    if new.recorded_at <= last.recorded_at {
        return FixVerdict::Stale {
            latest: last.recorded_at,
        };
    }
    let elapsed_s = (new.recorded_at - last.recorded_at).as_seconds_f64();
    let distance_m = last.position.distance_m(&new.position);
    let implied_speed_mps = (distance_m - rules.jump_tolerance_m).max(0.0) / elapsed_s;
    if implied_speed_mps > rules.max_speed_mps {
        return FixVerdict::ImpossibleJump {
            implied_speed_mps,
            distance_m,
        };
    }
    FixVerdict::Accept
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const RULES: FixRules = FixRules {
        max_speed_mps: 55.0,
        jump_tolerance_m: 100.0,
    };

    fn fix(lat: f64, seconds: i64) -> Fix {
        Fix {
            position: LatLng { lat, lng: -8.61 },
            heading_deg: None,
            speed_mps: None,
            accuracy_m: None,
            recorded_at: DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds),
        }
    }

    #[test]
    fn first_fix_accepted() {
        assert_eq!(judge_fix(None, &fix(41.0, 0), &RULES), FixVerdict::Accept);
    }

    #[test]
    fn older_or_equal_fix_is_stale() {
        let last = fix(41.0, 100);
        for seconds in [99, 100] {
            let verdict = judge_fix(Some(&last), &fix(41.0, seconds), &RULES);
            assert!(
                matches!(verdict, FixVerdict::Stale { .. }),
                "{seconds}: {verdict:?}"
            );
        }
    }

    #[test]
    fn fast_jump_rejected_slow_move_accepted() {
        let last = fix(41.0, 0);
        // 0.01 degree of latitude is about 1.11 km: in 15 s that is 67 m/s after tolerance.
        let jump = judge_fix(Some(&last), &fix(41.01, 15), &RULES);
        assert!(
            matches!(jump, FixVerdict::ImpossibleJump { .. }),
            "{jump:?}"
        );
        // The same distance in 60 s is about 17 m/s, a car on a main road.
        assert_eq!(
            judge_fix(Some(&last), &fix(41.01, 60), &RULES),
            FixVerdict::Accept
        );
    }

    #[test]
    fn noise_within_tolerance_accepted() {
        // About 89 m in one second: GPS noise, not a 89 m/s car.
        let verdict = judge_fix(Some(&fix(41.0, 0)), &fix(41.0008, 1), &RULES);
        assert_eq!(verdict, FixVerdict::Accept);
    }
}
